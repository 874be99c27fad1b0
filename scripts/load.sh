#!/usr/bin/env bash
# Load: `/metrics` and `/healthz` of a running `npm-watchdog run` under load from a second process, while
# the token group runs every second against the tests' fake registry. Prints, per endpoint: requests,
# errors, throughput and p50/p99/max latency; how many token cycles ran meanwhile and whether they
# succeeded; the daemon's RSS, open descriptors and threads before and after. It is not a test and
# nothing here runs in CI.
#
# Takes about 1.5 minutes once built (2 x 30 s of load plus start-up); the release build adds about
# 5 minutes on 2 cores the first time.
#
# Processes, all on 127.0.0.1: the fake registry (`examples/load_soak.rs registry`), the daemon
# (`target/release/npm-watchdog run`), the load generator (`examples/load_soak.rs load`: concurrent
# clients, one keep-alive connection each, requests back to back). They share the machine's cores.
#
# Knobs (environment):
#   TOKENS=100        tokens on the account (one page)
#   EVERY=1s          the daemon's schedule.tokens
#   CLIENTS=4         concurrent clients
#   SECONDS_EACH=30   seconds of load per endpoint
#   ENDPOINTS="/metrics /healthz"
#   BUILD=0           use the binaries already under target/release (default: build them)
#   KEEP=1            keep the temporary directory (config, logs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

TOKENS="${TOKENS:-100}"
EVERY="${EVERY:-1s}"
CLIENTS="${CLIENTS:-4}"
SECONDS_EACH="${SECONDS_EACH:-30}"
ENDPOINTS="${ENDPOINTS:-/metrics /healthz}"

say() { printf '%s\n' "$*"; }
log() { printf 'load: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
for v in TOKENS CLIENTS SECONDS_EACH; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a whole number of at least 1, got '${!v}'"
done
command -v curl >/dev/null 2>&1 || die "curl is missing"


make_work load

release_binaries load_soak
HARNESS="$EXAMPLE_BIN"

# --- the fake registry -----------------------------------------------------------------------------
: >"$WORK/reg.out"
"$HARNESS" registry --tokens "$TOKENS" --token-file "$WORK/token" >"$WORK/reg.out" 2>"$WORK/reg.err" &
REG_PID=$!
await_start "$WORK/reg.out" "$WORK/reg.err" 10
REG="$(sed -n 1p "$WORK/reg.out")"

# --- the daemon ------------------------------------------------------------------------------------
cat >"$WORK/config.toml" <<EOF
[registry]
url = "$REG"
token_file = "$WORK/token"

[watch]
# Tokens only: the token group is the one that runs.
own_account = false

[schedule]
tokens = "$EVERY"

[server]
listen = "127.0.0.1:0"

[state]
path = "$WORK/state/state.db"
EOF
NPM_CONFIG_USERCONFIG="$WORK/no-npmrc" RUST_LOG=info \
    "$WD" --config "$WORK/config.toml" --log-format json run >"$WORK/daemon.out" 2>"$WORK/daemon.log" &
DAEMON_PID=$!
LISTEN=""
for _ in $(seq 300); do
    LISTEN="$(grep -o '"listen":"[^"]*"' "$WORK/daemon.log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)"
    [[ -n "$LISTEN" ]] && break
    kill -0 "$DAEMON_PID" 2>/dev/null || die "the daemon exited: $(cat "$WORK/daemon.log")"
    sleep 0.1
done
[[ -n "$LISTEN" ]] || die "the daemon did not log its listen address"
BASE="http://$LISTEN"
for _ in $(seq 300); do
    curl -fsS "$BASE/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$BASE/readyz" >/dev/null || die "the daemon did not become ready: $(tail -5 "$WORK/daemon.log")"

# metric NAME LABEL... → the value of the first series NAME{…} having every LABEL, or 0.
metric() {
    local name="$1" body
    shift
    body="$(curl -fsS "$BASE/metrics")"
    awk -v name="$name" -v labels="$*" '
        !found && index($0, name "{") == 1 {
            n = split(labels, want, " ")
            ok = 1
            for (i = 1; i <= n; i++) if (index($1, want[i]) == 0) ok = 0
            if (ok) { print $2; found = 1 }
        }
        END { if (!found) print 0 }' <<<"$body"
}
cycles() { metric npm_watchdog_registry_requests_total 'endpoint="tokens"' 'code="200"'; }
errors() { curl -fsS "$BASE/metrics" | awk '/^npm_watchdog_check_errors_total\{/ { s += $2 } END { print s + 0 }'; }
proc() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$DAEMON_PID/status"; }
fds() { find "/proc/$DAEMON_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
resources() { printf 'RSS %s KiB, peak RSS %s KiB, %s open fds, %s threads' "$(proc VmRSS)" "$(proc VmHWM)" "$(fds)" "$(proc Threads)"; }

say "== machine and setup"
say "date:       $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "machine:    $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || echo unknown)), $(uname -sr), $("$WD" --version)"
say "            load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)"
say "daemon:     npm-watchdog run, schedule.tokens = \"$EVERY\", $TOKENS tokens on the fake registry (examples/load_soak.rs registry)"
say "load:       $CLIENTS concurrent clients (examples/load_soak.rs load), one keep-alive connection each, back to back, ${SECONDS_EACH} s per endpoint"
say "daemon before the load: $(resources)"
say ""

printf '%-9s %9s %7s %8s %8s %9s %9s %9s %7s %10s %10s\n' endpoint requests errors partial req/s p50_ms p99_ms max_ms cycles cycle_errs body_bytes
for path in $ENDPOINTS; do
    extra=()
    [[ "$path" == /metrics ]] && extra=(--expect-tokens "$TOKENS")
    c0="$(cycles)"
    e0="$(errors)"
    "$HARNESS" load --url "$BASE$path" --clients "$CLIENTS" --seconds "$SECONDS_EACH" "${extra[@]}" \
        >"$WORK/load.out" 2>"$WORK/load.err" || die "the load generator failed: $(cat "$WORK/load.err")"
    line="$(head -1 "$WORK/load.out")"
    grep '^partial ' "$WORK/load.out" | sed "s#^partial #  $path: #" >>"$WORK/partial" || true
    grep '^view ' "$WORK/load.out" | sed "s#^view #  $path #" >>"$WORK/views" || true
    c1="$(cycles)"
    e1="$(errors)"
    get() { tr ' ' '\n' <<<"$line" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
    printf '%-9s %9s %7s %8s %8s %9s %9s %9s %7s %10s %10s\n' "$path" "$(get requests)" "$(get errors)" "$(get partial)" \
        "$(get rps)" "$(get p50_ms)" "$(get p99_ms)" "$(get max_ms)" "$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')" \
        "$(awk -v a="$e0" -v b="$e1" 'BEGIN { print b - a }')" "$(get body_bytes_mean)"
    [[ -s "$WORK/load.err" ]] && log "$path: $(cat "$WORK/load.err")"
done
say ""
say "partial: /metrics bodies that did not show the steady view (the whole list of $TOKENS tokens and the same findings"
say "as the most frequent view). A family is replaced under a lock that scrapes also take, so this should be 0; before"
say "that lock, a scrape inside a cycle could show no tokens at all."
say "what the partial scrapes missed: every token series, part of them, or every findings series:"
cat "$WORK/partial" 2>/dev/null || true
say "views seen, most frequent first (sum of npm_watchdog_tokens, token_created series, findings series,"
say "sum of findings, sum of critical findings):"
cat "$WORK/views" 2>/dev/null || true
say "cycles: token-list reads answered 200 during the window (npm_watchdog_registry_requests_total); cycle_errs: npm_watchdog_check_errors_total growth"
say "token group now: check_success $(metric npm_watchdog_check_success 'check="tokens"'), last run $(metric npm_watchdog_check_duration_seconds 'check="tokens"') s"
say "daemon after the load:  $(resources)"
say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
