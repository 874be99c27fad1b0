# Shared by the figure-printing scripts (bench-audit.sh, load.sh, soak.sh): sourced, not run.

# Loopback only: never through a proxy.
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
unset HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy

# stop_pid PID: SIGTERM, up to 10 s for it to exit, then SIGKILL; reaps it. An empty PID is a no-op.
stop_pid() {
    local pid="$1"
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# make_work NAME: a fresh temporary folder in WORK, removed at exit (kept with KEEP=1) once the
# processes in DAEMON_PID and REG_PID are stopped. Scripts keep those two variables current.
make_work() {
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    REG_PID=""
    DAEMON_PID=""
    trap cleanup_work EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

cleanup_work() {
    stop_pid "$DAEMON_PID"
    stop_pid "$REG_PID"
    if [[ "${KEEP:-}" == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}

# release_binaries EXAMPLE: builds npm-watchdog and the example in release (unless BUILD=0) and sets
# WD and EXAMPLE_BIN to them.
release_binaries() {
    local target="${CARGO_TARGET_DIR:-$ROOT/target}"
    [[ "$target" = /* ]] || target="$ROOT/$target"
    if [[ "${BUILD:-1}" != 0 ]]; then
        log "building release binaries"
        cargo build --release --quiet --bin npm-watchdog --example "$1" >&2
    fi
    WD="$target/release/npm-watchdog"
    EXAMPLE_BIN="$target/release/examples/$1"
    [[ -x "$WD" && -x "$EXAMPLE_BIN" ]] || die "built binaries not found under $target/release"
}

# await_start OUT ERR SECONDS: waits until the server started last (REG_PID) has printed its three
# lines of start-up to OUT; dies with ERR's text if it exits first or takes longer.
await_start() {
    local out="$1" err="$2" tries=$(($3 * 10))
    for _ in $(seq "$tries"); do
        [[ "$(wc -l <"$out")" -ge 3 ]] && return 0
        kill -0 "$REG_PID" 2>/dev/null || die "the fake registry exited: $(cat "$err")"
        sleep 0.1
    done
    die "the fake registry did not start within $3 s"
}
