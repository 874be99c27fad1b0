#!/usr/bin/env bash
# Measurement: the daemon watching an account whose tokens all have hostile names (control and bidi
# characters, a forged log line, TOKEN_NAME_BYTES long). Prints the daemon's peak RSS, the size of the
# state database and of /metrics after two token cycles, and the log's longest line. Prints figures;
# it is not a test and nothing here runs in CI.
#
# Knobs (environment): TOKENS=10000, TOKEN_NAME_BYTES=10240, BUILD=1 (0: use target/release as is),
# KEEP=1 (keep the temporary folder).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOKENS="${TOKENS:-10000}"
TOKEN_NAME_BYTES="${TOKEN_NAME_BYTES:-10240}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ "${KEEP:-0}" == 1 ]] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

if [[ "${BUILD:-1}" == 1 ]]; then
    cargo build --release --locked --bin npm-watchdog --example fake_registry_server >&2
fi
./target/release/examples/fake_registry_server --packages 0 --latency-ms 0 \
    --hostile-tokens "$TOKENS" --token-name-bytes "$TOKEN_NAME_BYTES" \
    --token-file "$WORK/token" >"$WORK/fake.out" 2>"$WORK/fake.err" &
PIDS+=($!)
for _ in $(seq 300); do [[ -s "$WORK/fake.out" ]] && break; sleep 0.1; done
REG="$(head -1 "$WORK/fake.out")"
[[ -n "$REG" ]] || { echo "the fake registry did not start" >&2; exit 2; }

cat >"$WORK/config.toml" <<EOF
[registry]
url = "$REG"
token_file = "$WORK/token"
[watch]
own_account = false
[schedule]
tokens = "5s"
[server]
listen = "127.0.0.1:0"
[state]
path = "$WORK/state/state.db"
EOF
NPM_CONFIG_USERCONFIG="$WORK/no-npmrc" RUST_LOG=info \
    ./target/release/npm-watchdog --config "$WORK/config.toml" run 2>"$WORK/daemon.log" &
DAEMON=$!
PIDS+=("$DAEMON")
LISTEN=""
for _ in $(seq 600); do
    LISTEN="$(grep -o 'listen=[0-9.:]*' "$WORK/daemon.log" 2>/dev/null | head -1 | cut -d= -f2 || true)"
    [[ -n "$LISTEN" ]] && break
    sleep 0.1
done
[[ -n "$LISTEN" ]] || { echo "the daemon did not log its address: $(tail -5 "$WORK/daemon.log")" >&2; exit 2; }
runs() {
    curl -fsS "http://$LISTEN/metrics" |
        awk '/^npm_watchdog_registry_requests_total\{code="200",endpoint="tokens"\}/ {print $2}'
}
started=$SECONDS
until [[ "$(runs || echo 0)" =~ ^[0-9.]+$ ]] && (($(runs | cut -d. -f1) >= 2 * ((TOKENS + 99) / 100))); do
    ((SECONDS - started < 600)) || { echo "two token cycles did not finish in 10 min" >&2; exit 2; }
    sleep 1
done
sleep 2
METRICS_BYTES="$(curl -fsS "http://$LISTEN/metrics" | wc -c)"
HWM_KB="$(awk '/VmHWM/ {print $2}' "/proc/$DAEMON/status")"
RSS_KB="$(awk '/VmRSS/ {print $2}' "/proc/$DAEMON/status")"
STATE_BYTES="$(du -cb "$WORK"/state/state.db* | tail -1 | cut -f1)"
LONGEST="$(awk '{ if (length($0) > m) m = length($0) } END { print m }' "$WORK/daemon.log")"
echo "tokens:            $TOKENS named with $TOKEN_NAME_BYTES bytes each ($((TOKENS * TOKEN_NAME_BYTES / 1048576)) MiB of names)"
echo "daemon peak RSS:   $((HWM_KB / 1024)) MiB (now $((RSS_KB / 1024)) MiB)"
echo "state database:    $((STATE_BYTES / 1048576)) MiB"
echo "/metrics:          $((METRICS_BYTES / 1024)) KiB"
echo "longest log line:  $LONGEST characters; ESC bytes in the log: $(grep -c $'\e' "$WORK/daemon.log" || true)"
