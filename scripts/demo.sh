#!/usr/bin/env bash
# See npm-watchdog work in about a minute, on loopback only:
#   a real npm registry (Verdaccio) and a real SMTP server (aiosmtpd, writing a Maildir) start in a
#   temporary folder, the daemon watches the registry every 2 s, a token is made with the real npm CLI,
#   and the FIRING email arrives; the token is revoked and the RESOLVED email arrives.
# Needs what scripts/install-peers.sh needs (Node 20 with npm, Python 3) plus cargo and curl.
# Everything it starts is stopped on exit; the temporary folder is removed (DEMO_KEEP=1 keeps it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PEERS="$ROOT/.peers"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/npm-watchdog"
USER_NAME="demo"
PASSWORD="demo-Pa55word-not-a-secret"
POLL=0.2     # seconds between two looks at a condition
DEADLINE=60  # seconds before a wait gives up

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf '\ndemo: ERROR: %s\n' "$*" >&2
    exit 1
}
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

# --- cleanup: stop what we started (by PID), remove the temp folder -------------------------------
WORK=""
PIDS=()
cleanup() {
    local status=$?
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if ((status != 0)); then
            for log in daemon.log verdaccio.log aiosmtpd.log; do
                [[ -s "$WORK/$log" ]] || continue
                printf '\n--- last lines of %s ---\n' "$log" >&2
                tail -n 20 "$WORK/$log" >&2
            done
        fi
        if [[ "${DEMO_KEEP:-}" == 1 ]]; then
            echo "demo: kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for WHAT PID COMMAND...: runs COMMAND every $POLL s until it succeeds; fails after $DEADLINE s,
# or at once if process PID (the one that should make COMMAND succeed) has exited.
wait_for() {
    local what="$1" pid="$2"
    shift 2
    local start=$SECONDS
    until "$@" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || die "the process that should bring $what has exited"
        ((SECONDS - start < DEADLINE)) || die "timed out after ${DEADLINE}s waiting for $what"
        sleep "$POLL"
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

http_ok() { curl --noproxy '*' -fsS -o /dev/null --max-time 2 "$1"; }

# metrics_show REGEX: exit 0 if a line of the daemon's /metrics matches REGEX.
metrics_show() {
    local text
    text="$(curl --noproxy '*' -fsS --max-time 2 "http://127.0.0.1:$MPORT/metrics")" &&
        grep -qE "$1" <<<"$text"
}

smtp_greets() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    IFS= read -r -t 2 line <&3 || line=""
    printf 'QUIT\r\n' >&3 || true
    exec 3>&- 3<&-
    [[ "$line" == 220* ]]
}

# find_mail MODE PREFIX: looks in the Maildir for the first message whose subject starts with PREFIX.
#   find_mail has PREFIX   exit 0 if there is one
#   find_mail show PREFIX  print its subject and text body
find_mail() {
    python3 - "$WORK/maildir" "$@" <<'PY'
import email, email.policy, os, sys
maildir, mode, prefix = sys.argv[1:4]
files = []
for sub in ("new", "cur"):
    d = os.path.join(maildir, sub)
    files += [os.path.join(d, f) for f in os.listdir(d)]
for path in sorted(files, key=lambda p: (os.path.getmtime(p), p)):
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    subject = str(msg["subject"] or "")
    if not subject.startswith(prefix):
        continue
    if mode == "show":
        body = msg.get_body(preferencelist=("plain",))
        print("Subject: " + subject)
        print("To: " + str(msg["to"]))
        print()
        print(body.get_content().rstrip() if body else "")
    sys.exit(0)
sys.exit(1)
PY
}

# first_subject PREFIX: the subject of the first message starting with PREFIX.
first_subject() { find_mail show "$1" | sed -n '1s/^Subject: //p'; }

npm_demo() {
    NPM_CONFIG_USERCONFIG="$WORK/npmrc" npm_config_cache="$WORK/npm-cache" \
        npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false \
        npm --registry "$REGISTRY" "$@"
}

# npm-watchdog with the demo's config and npmrc (and not the caller's systemd or npm settings).
watchdog() { (exec_watchdog "$@"); }
exec_watchdog() {
    exec env -u CREDENTIALS_DIRECTORY -u STATE_DIRECTORY NPM_CONFIG_USERCONFIG="$WORK/npmrc" \
        "$BIN" --config "$WORK/config.toml" "$@"
}

# --- 1. peers and binary ---------------------------------------------------------------------------
step "Installing the peers (Verdaccio, aiosmtpd) into .peers/ if needed"
"$ROOT/scripts/install-peers.sh" 2>&1 | sed 's/^/    /'

step "Building npm-watchdog (cargo build; the very first build takes a few minutes)"
cargo build --quiet --bin npm-watchdog
[[ -x "$BIN" ]] || die "no binary at $BIN after cargo build"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/npm-watchdog-demo.XXXXXX")"
mkdir -p "$WORK/verdaccio/storage" "$WORK/npm-cache" "$WORK/maildir"/{tmp,new,cur}

# --- 2. Verdaccio ----------------------------------------------------------------------------------
VPORT="$(free_port)"
REGISTRY="http://127.0.0.1:$VPORT/"
step "Starting Verdaccio (a real npm registry) at $REGISTRY"
cat >"$WORK/verdaccio/config.yaml" <<YAML
storage: '$WORK/verdaccio/storage'
auth:
  htpasswd:
    file: '$WORK/verdaccio/htpasswd'
    max_users: 10
uplinks: {}
packages:
  '@*/*':
    access: \$all \$authenticated
    publish: \$authenticated
  '**':
    access: \$all \$authenticated
    publish: \$authenticated
userRateLimit:
  windowMs: 1000
  max: 100000
listen: 127.0.0.1:$VPORT
log: { type: stdout, format: pretty-timestamped, level: warn }
YAML
"$PEERS/verdaccio/node_modules/.bin/verdaccio" --config "$WORK/verdaccio/config.yaml" \
    </dev/null >"$WORK/verdaccio.log" 2>&1 &
VPID=$!
PIDS+=("$VPID")
wait_for "Verdaccio to answer /-/ping" "$VPID" http_ok "${REGISTRY}-/ping"

# --- 3. aiosmtpd -----------------------------------------------------------------------------------
SPORT="$(free_port)"
step "Starting aiosmtpd (a real SMTP server) on 127.0.0.1:$SPORT, writing to a Maildir"
PYTHONUNBUFFERED=1 "$PEERS/venv/bin/python" -m aiosmtpd -n -l "127.0.0.1:$SPORT" \
    -c aiosmtpd.handlers.Mailbox "$WORK/maildir" </dev/null >"$WORK/aiosmtpd.log" 2>&1 &
SPID=$!
PIDS+=("$SPID")
wait_for "aiosmtpd to greet" "$SPID" smtp_greets "$SPORT"

# --- 4. an npm account ----------------------------------------------------------------------------
step "Creating the npm user '$USER_NAME' and an npmrc with its session (the daemon's credential here)"
SESSION="$(
    curl --noproxy '*' -fsS -X PUT "${REGISTRY}-/user/org.couchdb.user:$USER_NAME" \
        -H 'content-type: application/json' \
        --data "{\"_id\":\"org.couchdb.user:$USER_NAME\",\"name\":\"$USER_NAME\",\"password\":\"$PASSWORD\",\"type\":\"user\",\"roles\":[]}" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
)"
[[ -n "$SESSION" ]] || die "no session token from Verdaccio"
printf 'registry=%s\n//127.0.0.1:%s/:_authToken=%s\n' "$REGISTRY" "$VPORT" "$SESSION" >"$WORK/npmrc"
chmod 600 "$WORK/npmrc"

# --- 5. the daemon ---------------------------------------------------------------------------------
MPORT="$(free_port)"
step "Writing the config: tokens checked every 2s, alerts by email to aiosmtpd, metrics on 127.0.0.1:$MPORT"
cat >"$WORK/config.toml" <<TOML
[registry]
url = "$REGISTRY"
timeout = "5s"

[watch]
# Verdaccio cannot list a user's packages (no /-/user/<name>/package route): tokens only.
own_account = false

[schedule]
tokens = "2s"

[[alerts.email]]
smtp_url = "smtp://127.0.0.1:$SPORT"
from = "npm-watchdog@example.test"
to = ["security@example.test"]
timeout = "5s"

[server]
listen = "127.0.0.1:$MPORT"

[state]
path = "$WORK/state.db"
TOML
sed 's/^/    /' "$WORK/config.toml"

step "Starting the daemon (its log: daemon.log in the temp folder), waiting for /readyz"
T0=$SECONDS
# exec_watchdog replaces the background subshell, so $! is the daemon itself.
RUST_LOG=info exec_watchdog run </dev/null >/dev/null 2>"$WORK/daemon.log" &
DPID=$!
PIDS+=("$DPID")
wait_for "the daemon's /readyz" "$DPID" http_ok "http://127.0.0.1:$MPORT/readyz"
echo "    ready after $((SECONDS - T0))s: its first cycle is done (it already mailed account-2fa: Verdaccio has no 2FA)"

# --- 6. a token appears ----------------------------------------------------------------------------
step "Creating a token with the real npm CLI: npm token create"
npm_demo token create --password "$PASSWORD" --json >"$WORK/token-create.json" 2>"$WORK/token-create.err" ||
    die "npm token create failed: $(cat "$WORK/token-create.err")"
T1=$SECONDS
# npm prints the new token's secret too: show the rest only.
python3 - "$WORK/token-create.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
access = "read-only" if t.get("readonly") else "read-write"
cidr = ", ".join(t.get("cidr_whitelist") or []) or "any address"
print(f"    created a {access} token usable from {cidr} (npm printed its secret; not shown here)")
PY

step "Waiting for the FIRING email in the Maildir"
# One message for everything the new token trips (grouped by check group).
FIRING="[FIRING:critical] 4 findings on token "
wait_for "a [FIRING:critical] email about the new token" "$DPID" find_mail has "$FIRING"
echo "    arrived $((SECONDS - T1))s after the token was made:"
echo
find_mail show "$FIRING" | sed 's/^/    /'
ID="$(first_subject "$FIRING" | awk '{print $6}' | tr -d ':')"
[[ -n "$ID" ]] || die "cannot read the token id from the subject"

step "What the daemon sees now: npm-watchdog tokens"
watchdog tokens | sed 's/^/    /'

step "A few lines of http://127.0.0.1:$MPORT/metrics"
wait_for "the token-present finding in /metrics" "$DPID" metrics_show \
    '^npm_watchdog_findings\{check="token-present",severity="warning"\} 1$'
curl --noproxy '*' -fsS "http://127.0.0.1:$MPORT/metrics" |
    grep -E '^npm_watchdog_((tokens|findings)\{.*\} [1-9]|token_created_timestamp_seconds|check_success\{check="tokens"|notifications_total\{)' |
    sed 's/^/    /'

# --- 7. the token goes away ------------------------------------------------------------------------
step "Revoking it with the real npm CLI: npm token revoke $ID"
npm_demo token revoke "$ID" >"$WORK/token-revoke.out" 2>&1 ||
    die "npm token revoke failed: $(cat "$WORK/token-revoke.out")"
T2=$SECONDS
sed 's/^/    /' "$WORK/token-revoke.out"

step "Waiting for the RESOLVED email"
wait_for "a [RESOLVED] email about the token" "$DPID" find_mail has "[RESOLVED] 3 findings on token $ID"
echo "    arrived $((SECONDS - T2))s after the token was revoked:"
echo
find_mail show "[RESOLVED] 3 findings on token $ID" | sed 's/^/    /'

step "Every email the SMTP server received"
python3 - "$WORK/maildir" <<'PY'
import email, email.policy, os, sys
d = sys.argv[1]
files = [os.path.join(d, s, f) for s in ("new", "cur") for f in os.listdir(os.path.join(d, s))]
for p in sorted(files, key=lambda p: (os.path.getmtime(p), p)):
    with open(p, "rb") as f:
        print("    " + str(email.message_from_binary_file(f, policy=email.policy.default)["subject"]))
PY

step "Done in ${SECONDS}s. Stopping Verdaccio, aiosmtpd and the daemon."
