#!/usr/bin/env bash
# Soak: many token cycles over 1,000 tokens against the tests' fake registry, watching for growth in
# memory, open file descriptors and the state database. Prints the figures; it is not a test and nothing
# here runs in CI.
#
# Takes about 45 minutes on 2 cores once built (the release build adds about 5 minutes the first time):
#   a. the real daemon: `npm-watchdog run` with schedule.tokens = "10ms", so that token cycles run back
#      to back (a run longer than the period delays the next tick; runs never overlap), until
#      DAEMON_CYCLES cycles are done (10,000: about 17 minutes at 9-10 cycles a second). Sampled from
#      outside every EVERY cycles: /proc/<pid> (RSS, descriptors, threads), the state files, the row
#      counts (read by a separate process), and /metrics (which counts the cycles).
#   b. the same cycles in-process, INPROC_CYCLES of them (10,000: about 17 minutes):
#      `examples/load_soak.rs soak` builds the `Watchdog` that `run` builds, over a state file, starts
#      the outbox's delivery loop beside it and calls the token group's cycle in a loop. It adds what
#      the outside cannot see: each cycle's duration and the memory SQLite holds.
#   c. in-process with token turnover: CHURN tokens replaced (one revoked, another created) before each
#      of CHURN_CYCLES cycles (5,000: about 9 minutes), to show what grows with the number of distinct
#      tokens ever seen.
#
# Knobs (environment):
#   TOKENS=1000          tokens on the account, in pages of PAGE_SIZE
#   PAGE_SIZE=100
#   EVERY=1000           a row every this many cycles
#   DAEMON_CYCLES=10000  part a (0 skips it)
#   DAEMON_PERIOD=10ms   part a: schedule.tokens
#   INPROC_CYCLES=10000  part b (0 skips it)
#   CHURN=1              part c: tokens replaced before each cycle (0 skips it)
#   CHURN_CYCLES=5000    part c
#   BUILD=0              use the binaries already under target/release (default: build them)
#   KEEP=1               keep the temporary directory (state files, logs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

TOKENS="${TOKENS:-1000}"
PAGE_SIZE="${PAGE_SIZE:-100}"
EVERY="${EVERY:-1000}"
DAEMON_CYCLES="${DAEMON_CYCLES:-10000}"
DAEMON_PERIOD="${DAEMON_PERIOD:-10ms}"
INPROC_CYCLES="${INPROC_CYCLES:-10000}"
CHURN="${CHURN:-1}"
CHURN_CYCLES="${CHURN_CYCLES:-5000}"

say() { printf '%s\n' "$*"; }
log() { printf 'soak: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
for v in TOKENS PAGE_SIZE EVERY CHURN_CYCLES; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a whole number of at least 1, got '${!v}'"
done
for v in DAEMON_CYCLES INPROC_CYCLES CHURN; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
command -v curl >/dev/null 2>&1 || die "curl is missing"
PAGES=$(((TOKENS + PAGE_SIZE - 1) / PAGE_SIZE))


make_work soak

release_binaries load_soak
HARNESS="$EXAMPLE_BIN"

# --- the fake registry -----------------------------------------------------------------------------
# start_registry NAME → a fresh registry; sets REG and CONTROL.
start_registry() {
    stop_pid "$REG_PID"
    : >"$WORK/$1.reg.out"
    "$HARNESS" registry --tokens "$TOKENS" --page-size "$PAGE_SIZE" --token-file "$WORK/token" \
        >"$WORK/$1.reg.out" 2>"$WORK/$1.reg.err" &
    REG_PID=$!
    await_start "$WORK/$1.reg.out" "$WORK/$1.reg.err" 10
    REG="$(sed -n 1p "$WORK/$1.reg.out")"
    CONTROL="$(sed -n 2p "$WORK/$1.reg.out")"
}

say "== machine and setup"
say "date:       $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "machine:    $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || echo unknown)), $(uname -sr), $("$WD" --version)"
say "            $(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo); load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the rates)"
say "registry:   the tests' fake registry (examples/load_soak.rs registry) on 127.0.0.1, $TOKENS tokens in pages of $PAGE_SIZE, no added latency"
say "columns:    rss/hwm = VmRSS/VmHWM (KiB); sqlite = memory SQLite holds (KiB, page cache included);"
say "            fds = open descriptors; thr = threads; db/wal = state.db and state.db-wal (bytes);"
say "            seen/findings/outbox/pending = rows of seen_tokens, findings, outbox, undelivered outbox"
say ""

# --- a. the real daemon ----------------------------------------------------------------------------
if ((DAEMON_CYCLES > 0)); then
    log "a. npm-watchdog run until $DAEMON_CYCLES token cycles are done"
    start_registry a
    cat >"$WORK/a.toml" <<EOF
[registry]
url = "$REG"
token_file = "$WORK/token"

[watch]
own_account = false

[schedule]
tokens = "$DAEMON_PERIOD"

[server]
listen = "127.0.0.1:0"

[state]
path = "$WORK/a/state.db"
EOF
    NPM_CONFIG_USERCONFIG="$WORK/no-npmrc" RUST_LOG=info \
        "$WD" --config "$WORK/a.toml" --log-format json run >"$WORK/a.out" 2>"$WORK/a.log" &
    DAEMON_PID=$!
    LISTEN=""
    for _ in $(seq 300); do
        LISTEN="$(grep -o '"listen":"[^"]*"' "$WORK/a.log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)"
        [[ -n "$LISTEN" ]] && break
        kill -0 "$DAEMON_PID" 2>/dev/null || die "the daemon exited: $(cat "$WORK/a.log")"
        sleep 0.1
    done
    [[ -n "$LISTEN" ]] || die "the daemon did not log its listen address"
    BASE="http://$LISTEN"

    proc() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$DAEMON_PID/status"; }
    fds() { find "/proc/$DAEMON_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
    fd_kinds() {
        local f
        for f in /proc/"$DAEMON_PID"/fd/*; do
            readlink "$f" 2>/dev/null || true
        done | sed -E 's/^(socket|pipe|anon_inode):.*/\1/; s#^/.*/##' | sort | uniq -c |
            awk '{ printf "%s%s %s", sep, $2, $1; sep = ", " } END { print "" }'
    }
    size() { stat -c %s "$1" 2>/dev/null || echo 0; }
    METRICS=""
    scrape() { METRICS="$(curl -fsS "$BASE/metrics")"; }
    # Cycles done: token-list pages answered 200, over the pages of one cycle.
    cycles() {
        awk -v p="$PAGES" '/^npm_watchdog_registry_requests_total\{/ && /endpoint="tokens"/ && /code="200"/ { n = $2 }
            END { print int(n / p) }' <<<"$METRICS"
    }
    errors() { awk '/^npm_watchdog_check_errors_total\{/ { s += $2 } END { print s + 0 }' <<<"$METRICS"; }
    # row CYCLES SECONDS RATE
    row() {
        local rows
        rows="$("$HARNESS" rows --state "$WORK/a/state.db")"
        printf '%6s %8s %8s %9s %9s %4s %4s %10s %10s %6s %8s %7s %7s %6s\n' "$1" "$2" "$3" \
            "$(proc VmRSS)" "$(proc VmHWM)" "$(fds)" "$(proc Threads)" "$(size "$WORK/a/state.db")" \
            "$(size "$WORK/a/state.db-wal")" $rows "$(errors)"
    }
    say "== a. npm-watchdog run, schedule.tokens = \"$DAEMON_PERIOD\" (cycles back to back), until $DAEMON_CYCLES cycles; sampled from outside (pid $DAEMON_PID)"
    say "fds at start: $(fd_kinds)"
    printf '%6s %8s %8s %9s %9s %4s %4s %10s %10s %6s %8s %7s %7s %6s\n' cycle elapsed cycles/s rss_kib hwm_kib \
        fds thr db_bytes wal_bytes seen findings outbox pending errors
    t0="$(date +%s.%N)"
    next="$EVERY"
    last_n=0
    last_t="$t0"
    scrape
    row "$(cycles)" 0.0 -
    while :; do
        sleep 0.5
        kill -0 "$DAEMON_PID" 2>/dev/null || die "the daemon exited: $(tail -20 "$WORK/a.log")"
        scrape
        n="$(cycles)"
        if ((n >= next)); then
            now="$(date +%s.%N)"
            row "$n" "$(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.1f", b - a }')" \
                "$(awk -v a="$last_t" -v b="$now" -v c="$((n - last_n))" 'BEGIN { printf "%.1f", c / (b - a) }')"
            last_n="$n"
            last_t="$now"
            while ((next <= n)); do next=$((next + EVERY)); done
            ((n >= DAEMON_CYCLES)) && break
        fi
    done
    say "fds at the end: $(fd_kinds)"
    say "cycles = token-list pages answered 200 / $PAGES pages (npm_watchdog_registry_requests_total); errors = npm_watchdog_check_errors_total"
    say "rows are taken at the first /metrics poll (every 0.5 s) past each multiple of $EVERY cycles"
    say "token group now: check_success $(awk '/^npm_watchdog_check_success\{/ && /check="tokens"/ { print $2 }' <<<"$METRICS"), last run $(awk '/^npm_watchdog_check_duration_seconds\{/ && /check="tokens"/ { print $2 }' <<<"$METRICS") s"
    say "alerts logged (the log sink, no other sink configured): $(grep -c 'npm_watchdog::alert' "$WORK/a.log" || true)"
    say "other warnings and errors in the daemon's log: $(grep -v 'npm_watchdog::alert' "$WORK/a.log" | grep -c '"level":"\(WARN\|ERROR\)"' || true)"
    stop_pid "$DAEMON_PID"
    DAEMON_PID=""
    say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    say ""
fi

# --- b. in-process, back to back -------------------------------------------------------------------
if ((INPROC_CYCLES > 0)); then
    log "b. $INPROC_CYCLES token cycles in-process"
    start_registry b
    say "== b. $INPROC_CYCLES token cycles in-process, back to back (examples/load_soak.rs soak)"
    "$HARNESS" soak --registry "$REG" --token-file "$WORK/token" --state "$WORK/b/state.db" \
        --cycles "$INPROC_CYCLES" --every "$EVERY" 2>"$WORK/b.err" || die "the soak failed: $(tail -20 "$WORK/b.err")"
    say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    say ""
fi

# --- c. in-process with token turnover -------------------------------------------------------------
if ((CHURN > 0)); then
    log "c. $CHURN_CYCLES token cycles in-process, $CHURN token(s) replaced before each"
    start_registry c
    say "== c. $CHURN_CYCLES token cycles in-process, $CHURN token(s) replaced before each (a token revoked, another created)"
    "$HARNESS" soak --registry "$REG" --token-file "$WORK/token" --state "$WORK/c/state.db" \
        --cycles "$CHURN_CYCLES" --every "$EVERY" --churn "$CHURN" --control "$CONTROL" 2>"$WORK/c.err" ||
        die "the churn soak failed: $(tail -20 "$WORK/c.err")"
    say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
