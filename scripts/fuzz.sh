#!/usr/bin/env bash
# Fuzz the parsers that read what a registry or a config file says, each for a bounded time, with
# cargo-fuzz (libFuzzer, AddressSanitizer, debug assertions and overflow checks on). Not a test and
# not run in CI: a fuzzing run takes minutes and its outcome depends on the time it is given.
#
# Targets (fuzz/fuzz_targets/): token_list (a token-list page, read through the registry client
# from a loopback server), packument (the slim packument parser and its stored copy), provenance
# (the attestations parser), config (a config file through the loading and validation users hit).
#
# Each corpus is seeded from the project's own fixtures (fuzz/seedgen writes them afresh each run:
# src/checks/fixtures, the tests' fake registry, config/npm-watchdog.example.toml, the configuration
# tests' TOML and their table of invalid files) plus the hand-written seeds in fuzz/seeds/; each
# target also gets its dictionary of field names and tricky values from fuzz/dicts/.
# What the fuzzer finds is kept in fuzz/corpus/<target>/ and reused by the next run.
#
# Prints per target: seeds, runs executed, exec/s, corpus size (units), coverage, crashes found.
# Exits 1 if any target crashed (the input is left in fuzz/artifacts/<target>/), 2 if it could not run.
#
# Knobs (environment):
#   FUZZ_SECONDS=60      fuzzing time per target (build time not included)
#   FUZZ_TARGETS="token_list packument provenance config"
#   FUZZ_TIMEOUT=30      seconds one input may take before it counts as a hang (a finding)
#   FUZZ_ARGS=""         further libFuzzer arguments, e.g. "-max_len=65536"
#   FUZZ_TOOLCHAIN=nightly   the toolchain cargo-fuzz builds with (it needs a nightly)
#
# cargo-fuzz is installed into .peers/cargo when it is not on PATH already.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_TARGETS="${FUZZ_TARGETS:-token_list packument provenance config}"
FUZZ_TIMEOUT="${FUZZ_TIMEOUT:-30}"
FUZZ_ARGS="${FUZZ_ARGS:-}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"

log() { printf 'fuzz: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 2
}

[[ "$FUZZ_SECONDS" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a whole number of at least 1, got '$FUZZ_SECONDS'"
[[ "$FUZZ_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_TIMEOUT must be a whole number of at least 1, got '$FUZZ_TIMEOUT'"
for t in $FUZZ_TARGETS; do
    [[ -f "fuzz/fuzz_targets/$t.rs" ]] || die "no fuzz target '$t' (fuzz/fuzz_targets/$t.rs)"
done

# --- tools -----------------------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo is not installed"
cargo "+$TOOLCHAIN" --version >/dev/null 2>&1 ||
    die "the $TOOLCHAIN toolchain is missing (rustup toolchain install $TOOLCHAIN)"
PEERS="$ROOT/.peers/cargo"
export PATH="$PEERS/bin:$PATH"
if ! cargo "+$TOOLCHAIN" fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz into .peers/cargo"
    cargo "+$TOOLCHAIN" install cargo-fuzz --locked --root "$PEERS" >&2 || die "cargo install cargo-fuzz failed"
fi
log "$(cargo "+$TOOLCHAIN" fuzz --version), $(cargo "+$TOOLCHAIN" --version)"

# --- build -----------------------------------------------------------------------------------------
log "building the fuzz targets (the first build takes several minutes)"
for t in $FUZZ_TARGETS; do
    cargo "+$TOOLCHAIN" fuzz build "$t" >&2 || die "building fuzz target $t failed"
done

# --- seeds -----------------------------------------------------------------------------------------
SEEDS="$ROOT/fuzz/target/seeds"
rm -rf "$SEEDS"
log "writing seeds from the project's fixtures"
if ! CARGO_TARGET_DIR="$ROOT/fuzz/target/seedgen" cargo "+$TOOLCHAIN" run --quiet \
    --manifest-path fuzz/seedgen/Cargo.toml -- "$ROOT" "$SEEDS" >&2; then
    log "WARNING: generating seeds failed; fuzzing from fuzz/seeds/ and the kept corpus only"
fi

count_files() { if [[ -d "$1" ]]; then find "$1" -maxdepth 1 -type f | wc -l; else echo 0; fi; }
# The artifacts libFuzzer writes: crash-*, oom-*, timeout-*, leak-*, slow-unit-* (not a failure).
findings() { find "fuzz/artifacts/$1" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) 2>/dev/null | sort; }

# --- run -------------------------------------------------------------------------------------------
LOGS="$ROOT/fuzz/target/logs"
mkdir -p "$LOGS"
summary=()
crashed=0
failed=0
for t in $FUZZ_TARGETS; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    dirs=("$corpus")
    seeds=0
    for d in "$SEEDS/$t" "fuzz/seeds/$t"; do
        if [[ -d "$d" ]]; then
            dirs+=("$d")
            seeds=$((seeds + $(count_files "$d")))
        fi
    done
    dict=()
    [[ -f "fuzz/dicts/$t.dict" ]] && dict=(-dict="fuzz/dicts/$t.dict")
    before="$(findings "$t")"
    logfile="$LOGS/$t.log"
    tmp="$ROOT/fuzz/target/tmp/$t"
    rm -rf "$tmp" && mkdir -p "$tmp"
    log "running $t for ${FUZZ_SECONDS}s ($seeds seeds, $(count_files "$corpus") kept corpus files; log: ${logfile#"$ROOT"/})"
    status=0
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of arguments
    TMPDIR="$tmp" cargo "+$TOOLCHAIN" fuzz run "$t" "${dirs[@]}" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" -print_final_stats=1 "${dict[@]}" $FUZZ_ARGS \
        >"$logfile" 2>&1 || status=$?
    rm -rf "$tmp"

    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$logfile" | tail -n1)"
    execs="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logfile" | tail -n1)"
    last="$(grep -E '^#[0-9]+' "$logfile" | grep 'corp: ' | tail -n1 || true)"
    corp="$(sed -nE 's/.*corp: ([0-9]+\/[0-9A-Za-z]+).*/\1/p' <<<"$last")"
    cov="$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")"
    new="$(comm -13 <(printf '%s\n' "$before") <(findings "$t") | sed '/^$/d')"
    n_new="$(printf '%s' "$new" | grep -c . || true)"
    if [[ -z "$runs" ]]; then
        log "ERROR: $t did not report its figures (exit $status); see ${logfile#"$ROOT"/}"
        tail -n 20 "$logfile" >&2
        failed=1
    fi
    if ((n_new > 0)) || { ((status != 0)) && [[ -n "$runs" ]]; }; then
        crashed=1
        ((n_new > 0)) || n_new="1 (exit $status)"
        log "CRASH in $t:"
        grep -m1 -A2 -E "panicked at|ERROR: (AddressSanitizer|libFuzzer)" "$logfile" >&2 || true
        for f in $new; do
            log "  input kept: $f"
            log "  reproduce:  cargo +$TOOLCHAIN fuzz run $t $f"
            log "  minimize:   cargo +$TOOLCHAIN fuzz tmin $t $f"
        done
    fi
    summary+=("$(printf '%-11s %6s %12s %8s %14s %6s  %s' "$t" "$seeds" "${runs:-?}" "${execs:-?}" "${corp:-?}" "${cov:-?}" "$n_new")")
done

printf '\nfuzz: %ss per target, finished %s\n' "$FUZZ_SECONDS" "$(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-11s %6s %12s %8s %14s %6s  %s\n' target seeds runs exec/s corpus/bytes cov crashes
printf '%s\n' "${summary[@]}"
((failed == 0)) || exit 2
((crashed == 0)) || exit 1
