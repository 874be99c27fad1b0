#!/usr/bin/env bash
# Benchmark: `npm-watchdog audit` over N packages on the fake registry with a per-request latency,
# the daemon's second (conditional) package cycle, and the same audit scripted with the real npm CLI
# (`npm view <pkg> --json` per package). Prints figures; it is not a test and nothing here runs in CI.
#
# Knobs (environment):
#   N=1000              packages owned by the watched user
#   LATENCY_MS=20       delay the fake adds to every response
#   VERSIONS=10         versions per package
#   README_BYTES=12288  readme bytes per package (with VERSIONS, sets the document size)
#   CONCURRENCY=16      npm-watchdog's registry.concurrency
#   SWEEP="1 4 64"      further audits at these registry.concurrency values ("" to skip)
#   NPM_SAMPLE=$N       how many packages the npm CLI loop reads (the rest is extrapolated)
#   PACKAGES_EVERY=10s  the daemon's schedule.packages for part b
#   CYCLES=2            package cycles the daemon runs in part b; its RSS is printed after each
#                       (the memory mode: CYCLES=20 NPM=0)
#   CUTOFF=""           policy.trusted_publishing_since for audit and daemon (default: the policy's
#                       default). The fake's versions are dated from 2025-01-01: an earlier cutoff
#                       puts every version in scope (all kept, the latest's provenance read)
#   NPM=1               part c, the npm CLI loop (0 skips it)
#   PACKAGE_SERIES=true the daemon's server.package_series (false: no per-package series in /metrics)
#   CYCLE_TIMEOUT=180   seconds to wait for each daemon cycle
#   BUILD=0             use the binaries already under target/release (default: build them)
#   KEEP=1              keep the temporary directory (configs, logs, outputs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/bench-lib.sh
. "$ROOT/scripts/bench-lib.sh"

N="${N:-1000}"
LATENCY_MS="${LATENCY_MS:-20}"
VERSIONS="${VERSIONS:-10}"
README_BYTES="${README_BYTES:-12288}"
CONCURRENCY="${CONCURRENCY:-16}"
SWEEP="${SWEEP-1 4 64}"
NPM_SAMPLE="${NPM_SAMPLE:-$N}"
PACKAGES_EVERY="${PACKAGES_EVERY:-10s}"
CYCLES="${CYCLES:-2}"
CUTOFF="${CUTOFF:-}"
NPM="${NPM:-1}"
PACKAGE_SERIES="${PACKAGE_SERIES:-true}"
CYCLE_TIMEOUT="${CYCLE_TIMEOUT:-180}"
USER_NAME="bench"

say() { printf '%s\n' "$*"; }
log() { printf 'bench-audit: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

for v in N LATENCY_MS VERSIONS README_BYTES CONCURRENCY NPM_SAMPLE CYCLE_TIMEOUT CYCLES NPM; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
for c in $SWEEP; do
    [[ "$c" =~ ^[1-9][0-9]*$ ]] || die "SWEEP must list whole numbers of at least 1, got '$c'"
done
((N >= 1)) || die "N must be at least 1"
((CYCLES >= 2)) || die "CYCLES must be at least 2"
[[ "$PACKAGE_SERIES" == true || "$PACKAGE_SERIES" == false ]] || die "PACKAGE_SERIES must be true or false"
POLICY=""
if [[ -n "$CUTOFF" ]]; then
    POLICY="$(printf '[policy]\ntrusted_publishing_since = "%s"\n' "$CUTOFF")"
fi
((NPM_SAMPLE >= 1 && NPM_SAMPLE <= N)) || die "NPM_SAMPLE must be between 1 and N ($N)"

# --- tools -----------------------------------------------------------------------------------------
# GNU time (for peak RSS) and jq come from Debian packages; install them when missing and we can.
need_deb() {
    local cmd="$1" pkg="$2"
    if [[ -x "$cmd" ]] || command -v "$cmd" >/dev/null 2>&1; then
        return 0
    fi
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing the Debian package '$pkg' (for $cmd)"
        apt-get update -qq >&2 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2 || die "apt-get install $pkg failed"
    else
        die "$cmd is missing: install the Debian package '$pkg'"
    fi
}
need_deb /usr/bin/time time
need_deb jq jq
need_deb curl curl
if ((NPM)); then
    command -v npm >/dev/null 2>&1 || die "npm is missing (need Node.js with npm)"
fi

# --- processes and cleanup -------------------------------------------------------------------------
make_work bench-audit

now() { date +%s.%N; }
# Arithmetic on decimals: calc '<awk expression>'.
calc() { awk -v OFMT='%.6f' "BEGIN { print $1 }"; }
fmt() { awk -v x="$1" -v f="$2" 'BEGIN { printf f, x }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# --- build -----------------------------------------------------------------------------------------
release_binaries fake_registry_server
FAKE="$EXAMPLE_BIN"

# --- the fake registry -----------------------------------------------------------------------------
log "starting the fake registry with $N packages"
: >"$WORK/fake.out"
"$FAKE" --packages "$N" --versions "$VERSIONS" --readme-bytes "$README_BYTES" \
    --latency-ms "$LATENCY_MS" --user "$USER_NAME" --token-file "$WORK/token" \
    >"$WORK/fake.out" 2>"$WORK/fake.err" &
REG_PID=$!
await_start "$WORK/fake.out" "$WORK/fake.err" 60
REG="$(sed -n 1p "$WORK/fake.out")"
STATS="$(sed -n 2p "$WORK/fake.out")"

stats() { curl -fsS "${STATS}-/bench/stats"; }
reset_stats() { curl -fsS -X POST "${STATS}-/bench/reset" >/dev/null; }
kinds() { jq -r '.by_kind | to_entries | map("\(.key) \(.value)") | join(", ")'; }

DOC="$(stats)"
DOC_MIN="$(jq .doc_bytes_min <<<"$DOC")"
DOC_MAX="$(jq .doc_bytes_max <<<"$DOC")"
DOC_MEAN="$(jq .doc_bytes_mean <<<"$DOC")"

say "== machine and setup"
say "machine:    $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || echo unknown)), $(uname -sr)"
NODE_VERSIONS="skipped (NPM=0)"
((NPM)) && NODE_VERSIONS="node $(node --version), npm $(npm --version)"
say "            $(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo), $NODE_VERSIONS, $("$WD" --version)"
say "cutoff:     policy.trusted_publishing_since = ${CUTOFF:-the default}"
say "            load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)"
say "registry:   the tests' fake registry (examples/fake_registry_server.rs) on 127.0.0.1, ${LATENCY_MS} ms added to every response"
say "packages:   N=$N owned by user '$USER_NAME', $VERSIONS versions each, a ${README_BYTES}-byte readme"
say "documents:  $DOC_MIN-$DOC_MAX bytes (mean $DOC_MEAN), $(mib $((DOC_MEAN * N))) in all"
say "npm-watchdog registry.concurrency = $CONCURRENCY"
say "bytes are response body bytes the fake served (headers not counted)"
say ""

# --- a. npm-watchdog audit -------------------------------------------------------------------------
# run_audit CONCURRENCY TAG: one `npm-watchdog audit --format json` under GNU time, with the server
# counters reset first. Sets AUDIT_S (wall seconds) and AUDIT_RC; leaves $WORK/audit-TAG.*.
run_audit() {
    local conc="$1" tag="$2" t0 t1
    cat >"$WORK/audit-$tag.toml" <<EOF
[registry]
url = "$REG"
token_file = "$WORK/token"
concurrency = $conc

[watch]
# Only the benchmark user's packages, so the request count is the packages plus the listing.
own_account = false
users = ["$USER_NAME"]

[state]
path = "$WORK/audit-state/state.db"

$POLICY
EOF
    reset_stats
    t0="$(now)"
    set +e
    NPM_CONFIG_USERCONFIG="$WORK/no-npmrc" /usr/bin/time -v -o "$WORK/audit-$tag.time" \
        "$WD" --config "$WORK/audit-$tag.toml" audit --format json \
        >"$WORK/audit-$tag.json" 2>"$WORK/audit-$tag.err"
    AUDIT_RC=$?
    set -e
    t1="$(now)"
    # 0 = pass, 1 = findings or a failed DoD box; 2 = could not read everything.
    if ((AUDIT_RC != 0 && AUDIT_RC != 1)); then
        cat "$WORK/audit-$tag.err" >&2
        die "npm-watchdog audit (concurrency $conc) exited with $AUDIT_RC"
    fi
    AUDIT_S="$(calc "$t1 - $t0")"
}
peak_kb() { awk -F': ' '/Maximum resident set size/ { print $2 }' "$1"; }
cpu_s() { awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { print u + s }' "$1"; }

log "a. npm-watchdog audit"
run_audit "$CONCURRENCY" main
A="$(stats)"
AUDIT_REQ="$(jq .requests <<<"$A")"
AUDIT_BYTES="$(jq .bytes <<<"$A")"
AUDIT_KINDS="$(kinds <<<"$A")"
AUDIT_RSS_KB="$(peak_kb "$WORK/audit-main.time")"
AUDIT_CPU_S="$(cpu_s "$WORK/audit-main.time")"
AUDIT_PKGS="$(jq '.packages | length' "$WORK/audit-main.json")"
((AUDIT_PKGS == N)) || die "the audit reported $AUDIT_PKGS packages, expected $N"

# One round trip as this machine serves it: the added latency, the timer's rounding and the serving.
# Median of 9 `curl` requests to an authenticated route (each on a fresh connection, so slightly over).
RTT_S="$(for _ in $(seq 9); do
    curl -fsS -o /dev/null -w '%{time_total}\n' -H "authorization: Bearer $(cat "$WORK/token")" "${REG%/}/-/whoami"
done | sort -n | sed -n 5p)"
ROUNDS=$(((N + CONCURRENCY - 1) / CONCURRENCY))
NOMINAL_S="$(calc "$ROUNDS * $LATENCY_MS / 1000")"
MEASURED_FLOOR_S="$(calc "($ROUNDS + 1) * $RTT_S")"

say "== a. npm-watchdog audit --format json (release build, measured)"
say "wall time:      $(fmt "$AUDIT_S" '%.2f') s   (CPU user+sys $(fmt "$AUDIT_CPU_S" '%.2f') s, exit $AUDIT_RC)"
say "requests:       $AUDIT_REQ   ($AUDIT_KINDS)"
say "bytes served:   $AUDIT_BYTES   ($(mib "$AUDIT_BYTES"))"
say "peak RSS:       $((AUDIT_RSS_KB / 1024)) MiB   ($AUDIT_RSS_KB kB, GNU time)"
say "packages read:  $AUDIT_PKGS"
say "floor:          nominal $(fmt "$NOMINAL_S" '%.2f') s (ceil(N / $CONCURRENCY) = $ROUNDS rounds x ${LATENCY_MS} ms): $(fmt "$(calc "$AUDIT_S / $NOMINAL_S")" '%.2f')x"
say "                measured $(fmt "$MEASURED_FLOOR_S" '%.2f') s ($ROUNDS rounds + the package list, x one round trip of $(fmt "$(calc "$RTT_S * 1000")" '%.1f') ms): $(fmt "$(calc "$AUDIT_S / $MEASURED_FLOOR_S")" '%.2f')x"
say ""

if [[ -n "${SWEEP// /}" ]]; then
    log "a'. npm-watchdog audit at registry.concurrency = $SWEEP"
    say "== a'. the same audit at other registry.concurrency values (measured, one run each)"
    say "   (floor = ceil(N / concurrency) x ${LATENCY_MS} ms: the packument round trips alone)"
    row() { printf '%-12s %10s %10s %10s %10s %10s\n' "$@"; }
    floor() { fmt "$(calc "int(($N + $1 - 1) / $1) * $LATENCY_MS / 1000")" '%.2f s'; }
    row "concurrency" "wall" "floor" "CPU" "peak RSS" "requests"
    row "$CONCURRENCY (a)" "$(fmt "$AUDIT_S" '%.2f s')" "$(floor "$CONCURRENCY")" \
        "$(fmt "$AUDIT_CPU_S" '%.2f s')" "$((AUDIT_RSS_KB / 1024)) MiB" "$AUDIT_REQ"
    MAIN_S="$AUDIT_S"
    for c in $SWEEP; do
        run_audit "$c" "c$c"
        row "$c" "$(fmt "$AUDIT_S" '%.2f s')" "$(floor "$c")" \
            "$(fmt "$(cpu_s "$WORK/audit-c$c.time")" '%.2f s')" \
            "$(($(peak_kb "$WORK/audit-c$c.time") / 1024)) MiB" "$(stats | jq .requests)"
    done
    AUDIT_S="$MAIN_S"
    say ""
fi

# --- b. the daemon's conditional requests ----------------------------------------------------------
cat >"$WORK/daemon.toml" <<EOF
[registry]
url = "$REG"
token_file = "$WORK/token"
concurrency = $CONCURRENCY

[watch]
# Only the benchmark user's packages, so the request count is the packages plus the listing.
own_account = false
users = ["$USER_NAME"]

[schedule]
# Only the package group's traffic should fall into the measured window.
tokens = "1h"
packages = "$PACKAGES_EVERY"

[server]
listen = "127.0.0.1:0"
package_series = $PACKAGE_SERIES

[state]
path = "$WORK/daemon-state/state.db"

$POLICY
EOF

log "b. npm-watchdog run, $CYCLES package cycles (schedule.packages = $PACKAGES_EVERY)"
reset_stats
NPM_CONFIG_USERCONFIG="$WORK/no-npmrc" RUST_LOG=info \
    "$WD" --config "$WORK/daemon.toml" --log-format json run >"$WORK/daemon.out" 2>"$WORK/daemon.log" &
DAEMON_PID=$!
LISTEN=""
for _ in $(seq 300); do
    LISTEN="$(grep -o '"listen":"[^"]*"' "$WORK/daemon.log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)"
    [[ -n "$LISTEN" ]] && break
    kill -0 "$DAEMON_PID" 2>/dev/null || die "the daemon exited: $(cat "$WORK/daemon.log")"
    sleep 0.1
done
[[ -n "$LISTEN" ]] || die "the daemon did not log its listen address"
METRICS="http://$LISTEN/metrics"

# metric NAME LABEL... → the value of the series NAME{…} that has every LABEL (e.g. code="304"), or "".
metric() {
    local name="$1" body
    shift
    # Read the whole page first: awk stopping early would make curl fail on a closed pipe.
    body="$(curl -fsS "$METRICS")"
    awk -v name="$name" -v labels="$*" '
        !found && index($0, name "{") == 1 {
            n = split(labels, want, " ")
            ok = 1
            for (i = 1; i <= n; i++) if (index($1, want[i]) == 0) ok = 0
            if (ok) { print $2; found = 1 }
        }' <<<"$body"
}
LAST='npm_watchdog_check_last_success_timestamp_seconds'
# wait_cycle PREVIOUS → waits until the package group's last-success time differs from PREVIOUS.
wait_cycle() {
    local prev="$1" v deadline
    deadline=$(($(date +%s) + CYCLE_TIMEOUT))
    while (($(date +%s) < deadline)); do
        kill -0 "$DAEMON_PID" 2>/dev/null || die "the daemon exited: $(tail -20 "$WORK/daemon.log")"
        v="$(metric "$LAST" 'check="packages"' 2>/dev/null || true)"
        if [[ -n "$v" && "$v" != "$prev" ]]; then
            # check_duration is set just after last_success; let it land.
            sleep 0.5
            printf '%s\n' "$v"
            return 0
        fi
        sleep 0.2
    done
    die "no successful package cycle within ${CYCLE_TIMEOUT} s; daemon log: $(tail -20 "$WORK/daemon.log")"
}

proc_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$DAEMON_PID/status" 2>/dev/null || echo 0; }
C1_AT="$(wait_cycle "")"
C1_S="$(metric npm_watchdog_check_duration_seconds 'check="packages"')"
B1="$(stats)"
C1_BYTES="$(jq .bytes <<<"$B1")"
C1_REQ="$(jq .requests <<<"$B1")"
# One row per cycle: the daemon's RSS once the cycle is done (VmRSS) and the most it ever held (VmHWM).
ROWS="$(printf '%6s %10s %10s %10s\n' cycle seconds rss_kib hwm_kib)"
ROWS+=$'\n'"$(printf '%6s %10s %10s %10s' 1 "$(fmt "$C1_S" '%.2f')" "$(proc_kb VmRSS)" "$(proc_kb VmHWM)")"
reset_stats
AT="$C1_AT"
for c in $(seq 2 "$CYCLES"); do
    AT="$(wait_cycle "$AT")"
    S="$(metric npm_watchdog_check_duration_seconds 'check="packages"')"
    ROWS+=$'\n'"$(printf '%6s %10s %10s %10s' "$c" "$(fmt "$S" '%.2f')" "$(proc_kb VmRSS)" "$(proc_kb VmHWM)")"
    if ((c == 2)); then
        C2_S="$S"
        B2="$(stats)"
        C2_BYTES="$(jq .bytes <<<"$B2")"
        C2_REQ="$(jq .requests <<<"$B2")"
        C2_KINDS="$(kinds <<<"$B2")"
        C2_RSS_KB="$(proc_kb VmRSS)"
    fi
done
LAST_RSS_KB="$(proc_kb VmRSS)"
# The scrape a Prometheus server makes: its size and how long it takes, 20 times (between cycles).
SCRAPES="$(for _ in $(seq 20); do curl -fsS -o /dev/null -w '%{size_download} %{time_total}\n' "$METRICS"; done)"
SCRAPE_BYTES="$(awk 'NR == 1 { print $1 }' <<<"$SCRAPES")"
SCRAPE_MS="$(sort -k2 -n <<<"$SCRAPES" | awk '{ t[NR] = $2 * 1000 } END { printf "%.1f ms median, %.1f ms max", t[int((NR + 1) / 2)], t[NR] }')"
SCRAPE_SERIES="$(curl -fsS "$METRICS" | grep -c '^npm_watchdog_package_latest_trusted_publish{' || true)"
P304="$(metric npm_watchdog_registry_requests_total 'code="304"' 'endpoint="packument"')"
P200="$(metric npm_watchdog_registry_requests_total 'code="200"' 'endpoint="packument"')"
DAEMON_HWM_KB="$(proc_kb VmHWM)"
stop_pid "$DAEMON_PID"
DAEMON_PID=""

say "== b. npm-watchdog run: $CYCLES package cycles (measured; tokens schedule 1h so only package traffic counts)"
say "cycle 1 (no stored copies): $(fmt "$C1_S" '%.2f') s, $C1_REQ requests (incl. the first token cycle), $(mib "$C1_BYTES") served"
say "cycle 2 (conditional):      $(fmt "$C2_S" '%.2f') s, $C2_REQ requests ($C2_KINDS), $C2_BYTES bytes served"
say "                            $(fmt "$(calc "$C2_S / $NOMINAL_S")" '%.2f')x the nominal floor, $(fmt "$(calc "$C2_S / $MEASURED_FLOOR_S")" '%.2f')x the measured one"
say "packument requests after all cycles: ${P200:-0} x 200, ${P304:-0} x 304 (npm_watchdog_registry_requests_total)"
say "daemon RSS after each cycle (KiB; VmRSS once the cycle is done, VmHWM the peak so far):"
say "$ROWS"
say "/metrics: $SCRAPE_BYTES bytes ($SCRAPE_SERIES package_latest_trusted_publish series), $SCRAPE_MS over 20 scrapes"
say "daemon RSS after cycle 2: $((C2_RSS_KB / 1024)) MiB; after cycle $CYCLES: $((LAST_RSS_KB / 1024)) MiB ($(fmt "$(calc "100 * ($LAST_RSS_KB - $C2_RSS_KB) / $C2_RSS_KB")" '%+.0f')%); peak $((DAEMON_HWM_KB / 1024)) MiB"
say ""

# --- c. the same audit scripted with the npm CLI ---------------------------------------------------
if ((NPM == 0)); then
    say "== c. skipped (NPM=0)"
    say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit 0
fi
HOSTPATH="${REG#http:}"
printf 'registry=%s\n%s:_authToken=%s\n' "$REG" "$HOSTPATH" "$(head -1 "$WORK/token")" >"$WORK/npmrc"
mkdir -p "$WORK/npm-cache" "$WORK/npm-out"
jq -r --argjson n "$NPM_SAMPLE" '.packages[:$n][]' "$WORK/audit-main.json" >"$WORK/names"
cat >"$WORK/npm-loop.sh" <<'EOF'
#!/usr/bin/env bash
# What a user would write: one `npm view` per package, one after the other.
set -u
i=0
failed=0
while IFS= read -r pkg; do
    i=$((i + 1))
    npm view "$pkg" --json --registry "$REG" >"$OUT/$i.json" 2>>"$OUT/errors.log" || failed=$((failed + 1))
    if ((i % 100 == 0)); then printf 'bench-audit:   npm view %d done\n' "$i" >&2; fi
done <"$NAMES"
echo "$failed" >"$OUT/failed"
EOF

log "c. npm view loop over $NPM_SAMPLE of $N packages (sequential; about 0.5 s a package on 2 cores)"
reset_stats
t0="$(now)"
(
    cd "$WORK"
    export REG OUT="$WORK/npm-out" NAMES="$WORK/names"
    export NPM_CONFIG_USERCONFIG="$WORK/npmrc" npm_config_cache="$WORK/npm-cache"
    export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
    export npm_config_noproxy="127.0.0.1,localhost"
    /usr/bin/time -v -o "$WORK/npm.time" bash "$WORK/npm-loop.sh"
)
t1="$(now)"
NPM_S="$(calc "$t1 - $t0")"
C="$(stats)"
NPM_REQ="$(jq .requests <<<"$C")"
NPM_BYTES="$(jq .bytes <<<"$C")"
NPM_KINDS="$(kinds <<<"$C")"
NPM_RSS_KB="$(peak_kb "$WORK/npm.time")"
NPM_CPU_S="$(cpu_s "$WORK/npm.time")"
NPM_FAILED="$(cat "$WORK/npm-out/failed")"
((NPM_FAILED == 0)) || die "$NPM_FAILED npm view calls failed: $(head -20 "$WORK/npm-out/errors.log")"
first="$(head -1 "$WORK/names")"
[[ "$(jq -r .name "$WORK/npm-out/1.json")" == "$first" ]] ||
    die "npm view $first printed something else: $(head -c 300 "$WORK/npm-out/1.json")"
PER_PKG="$(calc "$NPM_S / $NPM_SAMPLE")"

say "== c. npm view <pkg> --json, sequential shell loop (measured over $NPM_SAMPLE of $N packages)"
say "wall time:      $(fmt "$NPM_S" '%.1f') s   ($(fmt "$PER_PKG" '%.3f') s a package; CPU user+sys $(fmt "$NPM_CPU_S" '%.1f') s)"
say "requests:       $NPM_REQ   ($NPM_KINDS)"
say "bytes served:   $NPM_BYTES   ($(mib "$NPM_BYTES"))"
say "peak RSS:       $((NPM_RSS_KB / 1024)) MiB   (largest single npm process, GNU time)"
if ((NPM_SAMPLE < N)); then
    NPM_S_N="$(calc "$PER_PKG * $N")"
    NPM_REQ_N="$(calc "int($NPM_REQ * $N / $NPM_SAMPLE + 0.5)")"
    NPM_BYTES_N="$(calc "int($NPM_BYTES * $N / $NPM_SAMPLE + 0.5)")"
    say "extrapolated to N=$N: $(fmt "$NPM_S_N" '%.1f') s, $NPM_REQ_N requests, $(mib "$NPM_BYTES_N") (linear in packages)"
    NPM_LABEL="npm loop, extrapolated"
else
    NPM_S_N="$NPM_S"
    NPM_REQ_N="$NPM_REQ"
    NPM_BYTES_N="$NPM_BYTES"
    NPM_LABEL="npm loop, measured"
fi
say ""

# --- d. summary ------------------------------------------------------------------------------------
RATIO="$(calc "$NPM_S_N / $AUDIT_S")"
say "== summary: N=$N packages, ${LATENCY_MS} ms latency, documents ~$((DOC_MEAN / 1024)) KiB, $(nproc) cores"
printf '%-24s %22s %26s\n' "" "npm-watchdog audit" "$NPM_LABEL"
printf '%-24s %22s %26s\n' "wall time" "$(fmt "$AUDIT_S" '%.2f s')" "$(fmt "$NPM_S_N" '%.1f s')"
printf '%-24s %22s %26s\n' "requests" "$AUDIT_REQ" "$NPM_REQ_N"
printf '%-24s %22s %26s\n' "bytes served" "$(mib "$AUDIT_BYTES")" "$(mib "$NPM_BYTES_N")"
printf '%-24s %22s %26s\n' "peak RSS" "$((AUDIT_RSS_KB / 1024)) MiB" "$((NPM_RSS_KB / 1024)) MiB per process"
say ""
say "wall-time ratio (npm loop / npm-watchdog audit): $(fmt "$RATIO" '%.0f')x"
if ((NPM_SAMPLE < N)); then
    say "  (npm loop measured over $NPM_SAMPLE packages in $(fmt "$NPM_S" '%.1f') s and extrapolated linearly to $N)"
fi
say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
say "daemon second cycle: ${P304:-0} x 304 of $N packuments, $(fmt "$C2_S" '%.2f') s, $C2_BYTES bytes served (first cycle $(fmt "$C1_S" '%.2f') s)"
