#!/usr/bin/env bash
# Benchmark: peak memory of `npm-watchdog tokens` when the registry answers the token list with a
# huge body (registry.max_body). A small registry on 127.0.0.1 serves the same account three ways,
# chosen by the path the registry URL ends with:
#   /small/     a normal answer (a few tokens), for the baseline;
#   /declared/  a token list of BODY_MB megabytes sent with Content-Length;
#   /chunked/   the same body sent chunked, without Content-Length (only reading it shows its size).
# Each case runs `npm-watchdog tokens --format json` under GNU time and prints its exit code, peak
# RSS and how many body bytes the server managed to write before the client stopped reading.
# Prints figures; it is not a test and nothing here runs in CI.
#
# Knobs (environment):
#   BODY_MB=50          size of the huge token list, in MB (10^6 bytes)
#   TOKENS=50           tokens on the huge list (the rest of its size is an unknown padding field,
#                       which a tolerant parser must skip)
#   WD_BEFORE=PATH      also measure this npm-watchdog binary (e.g. one built from an older commit)
#   RAISED=64MiB        also run the new binary with registry.max_body raised to this ("" to skip)
#   KEEP=1              keep the temporary directory (configs, logs, outputs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BODY_MB="${BODY_MB:-50}"
TOKENS="${TOKENS:-50}"
WD_BEFORE="${WD_BEFORE:-}"
RAISED="${RAISED-64MiB}"

log() { printf 'bench-body-cap: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
for v in BODY_MB TOKENS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a whole number of at least 1, got '${!v}'"
done
[[ -z "$WD_BEFORE" || -x "$WD_BEFORE" ]] || die "WD_BEFORE=$WD_BEFORE is not an executable"
[[ -x /usr/bin/time ]] || die "GNU time is missing: install the Debian package 'time'"
command -v python3 >/dev/null 2>&1 || die "python3 is missing"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-body-cap.XXXXXX")"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP:-}" == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building the release binary"
cargo build --release --quiet --bin npm-watchdog >&2
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET" = /* ]] || TARGET="$ROOT/$TARGET"
WD="$TARGET/release/npm-watchdog"
[[ -x "$WD" ]] || die "built binary not found at $WD"

# --- the registry ----------------------------------------------------------------------------------
cat >"$WORK/server.py" <<'EOF'
"""A minimal npm registry for one account: whoami, profile and the token list (see the script)."""
import http.server
import json
import sys

body_bytes, n_tokens, stats_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


def token(i, pad=""):
    t = {
        "token": "npm_%02d..." % i,
        "key": "%06x" % (0xA00000 + i) + "0" * 122,
        "name": "token-%d" % i,
        "created": "2026-01-01T00:00:00.000Z",
        "updated": "2026-01-01T00:00:00.000Z",
        "readonly": True,
        "cidr_whitelist": None,
    }
    if pad:
        t["padding"] = pad
    return t


def page(tokens):
    return json.dumps({"objects": tokens, "urls": {"next": None}, "total": len(tokens)}).encode()


SMALL = page([token(i) for i in range(5)])
# Spread the size over the tokens as an unknown field, so the list parses when it is accepted.
skeleton = len(page([token(i, "x") for i in range(n_tokens)]))
pad = max(1, (body_bytes - skeleton) // n_tokens + 1)
HUGE = page([token(i, "x" * pad) for i in range(n_tokens)])
PROFILE = json.dumps({"name": "bench", "tfa": {"mode": "auth-and-writes", "pending": False}}).encode()
WHOAMI = json.dumps({"username": "bench"}).encode()
written = {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, body, chunked=False):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(len(body)))
        self.end_headers()
        sent = 0
        try:
            step = 64 * 1024
            for start in range(0, len(body), step):
                part = body[start : start + step]
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                else:
                    self.wfile.write(part)
                sent += len(part)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        return sent

    def do_GET(self):
        mode, _, rest = self.path.lstrip("/").partition("/")
        rest = "/" + rest
        if rest.startswith("/-/whoami"):
            self.send_json(WHOAMI)
        elif rest.startswith("/-/npm/v1/user"):
            self.send_json(PROFILE)
        elif rest.startswith("/-/npm/v1/tokens") and mode in ("small", "declared", "chunked"):
            body = SMALL if mode == "small" else HUGE
            sent = self.send_json(body, chunked=(mode == "chunked"))
            written[mode] = {"body": len(body), "written": sent}
            with open(stats_path, "w") as f:
                json.dump(written, f)
        else:
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("http://127.0.0.1:%d" % server.server_address[1], flush=True)
print(len(HUGE), flush=True)
server.serve_forever()
EOF

log "starting the registry (a ${BODY_MB} MB token list of $TOKENS tokens)"
python3 "$WORK/server.py" "$((BODY_MB * 1000000))" "$TOKENS" "$WORK/written.json" \
    >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
for _ in $(seq 300); do
    [[ "$(wc -l <"$WORK/server.out")" -ge 2 ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the registry exited: $(cat "$WORK/server.err")"
    sleep 0.1
done
[[ "$(wc -l <"$WORK/server.out")" -ge 2 ]] || die "the registry did not start within 30 s"
BASE="$(sed -n 1p "$WORK/server.out")"
HUGE_BYTES="$(sed -n 2p "$WORK/server.out")"
echo "npm_bench_token" >"$WORK/token"

# measure LABEL BINARY MODE [MAX_BODY]: one `tokens` run; prints a row.
measure() {
    local label="$1" bin="$2" mode="$3" max_body="${4:-}" tag rc kb written
    tag="$(tr -c 'a-zA-Z0-9' '-' <<<"$label-$mode")"
    {
        printf '[registry]\nurl = "%s/%s/"\ntoken_file = "%s"\nretries = 0\n' "$BASE" "$mode" "$WORK/token"
        [[ -n "$max_body" ]] && printf 'max_body = "%s"\n' "$max_body"
        printf '\n[state]\npath = "%s/state-%s/state.db"\n' "$WORK" "$tag"
    } >"$WORK/$tag.toml"
    rm -f "$WORK/written.json"
    set +e
    NPM_CONFIG_USERCONFIG="$WORK/no-npmrc" /usr/bin/time -v -o "$WORK/$tag.time" \
        "$bin" --config "$WORK/$tag.toml" tokens --format json >"$WORK/$tag.out" 2>"$WORK/$tag.err"
    rc=$?
    set -e
    kb="$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/$tag.time")"
    written="-"
    if [[ "$mode" != small && -s "$WORK/written.json" ]]; then
        # The server thread may still be finishing its write; give it a moment.
        sleep 0.3
        written="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]["written"])' \
            "$WORK/written.json" "$mode")"
    fi
    printf '%-32s %-9s %5s %10s %14s   %s\n' "$label" "$mode" "$rc" "$((kb / 1024)) MiB" "$written" \
        "$(tail -1 "$WORK/$tag.err" | cut -c1-160)"
}

printf '== npm-watchdog tokens against a %s-byte token list (%s tokens), %s cores, %s\n' \
    "$HUGE_BYTES" "$TOKENS" "$(nproc)" "$(uname -sr)"
printf '   peak RSS from GNU time; "written" is how many body bytes the registry could send\n'
printf '   before the client closed the connection (the rest was never sent)\n\n'
printf '%-32s %-9s %5s %10s %14s   %s\n' "binary" "answer" "exit" "peak RSS" "body written" "last stderr line"
if [[ -n "$WD_BEFORE" ]]; then
    for mode in small declared chunked; do
        measure "before ($(basename "$WD_BEFORE"))" "$WD_BEFORE" "$mode"
    done
fi
for mode in small declared chunked; do
    measure "after (max_body default)" "$WD" "$mode"
done
if [[ -n "$RAISED" ]]; then
    measure "after (max_body = $RAISED)" "$WD" declared "$RAISED"
fi
