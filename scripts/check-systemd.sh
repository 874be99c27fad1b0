#!/usr/bin/env bash
# Checks systemd/npm-watchdog.service:
#   1. `systemd-analyze verify` must print nothing and exit 0;
#   2. `systemd-analyze security --offline=true` is printed, and its overall exposure must be <= 2.0.
# Exits non-zero, saying why, if either fails.
#
# verify checks that ExecStart= names an executable file, and the unit names the installed path
# /usr/local/bin/npm-watchdog, which a build machine does not have. So verify runs on a copy of the unit
# in a temporary directory whose ExecStart= points at the binary built here (NPM_WATCHDOG_BIN, else
# target/release/npm-watchdog, built with `cargo build --release --locked` if missing) and whose
# LoadCredential= source is a throwaway file in that directory. (systemd 252 does not look at credential
# sources during verify, but a later one may; the copy keeps the check about the unit, not this machine.)
# Every other line of the copy is the unit as shipped. The security review reads the shipped unit itself.
#
# Needs systemd-analyze >= 250 (for --offline). If it is missing and this runs as root with apt-get, the
# Debian package "systemd" is installed; otherwise the script fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UNIT="$ROOT/systemd/npm-watchdog.service"
MAX_EXPOSURE="2.0"

say() { printf 'check-systemd: %s\n' "$*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

[[ -f "$UNIT" ]] || die "unit file $UNIT not found"

# --- systemd-analyze -----------------------------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "systemd-analyze missing: installing the Debian package systemd"
        apt-get update -qq >&2 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >&2 ||
            die "apt-get install systemd failed"
    fi
    command -v systemd-analyze >/dev/null 2>&1 ||
        die "systemd-analyze not found (install the systemd package, version 250 or later)"
fi
version="$(systemd-analyze --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')"
[[ -n "$version" ]] || die "cannot read the version of systemd-analyze"
((version >= 250)) || die "systemd-analyze $version is too old: --offline needs systemd 250 or later"
say "systemd-analyze $version"

# --- the binary ExecStart= will name in the copy ----------------------------------------------------
BIN="${NPM_WATCHDOG_BIN:-$ROOT/target/release/npm-watchdog}"
if [[ -z "${NPM_WATCHDOG_BIN:-}" && ! -x "$BIN" ]]; then
    say "building $BIN (cargo build --release --locked)"
    (cd "$ROOT" && cargo build --release --locked >&2) || die "cargo build --release failed"
fi
[[ -x "$BIN" ]] || die "$BIN is not an executable file"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

grep -q '^ExecStart=/usr/local/bin/npm-watchdog ' "$UNIT" ||
    die "the unit's ExecStart= does not start with /usr/local/bin/npm-watchdog"
grep -q '^LoadCredential=npm-token:/etc/npm-watchdog/npm-token$' "$UNIT" ||
    die "the unit does not load the credential npm-token from /etc/npm-watchdog/npm-token"
install -m 0600 /dev/null "$TMP/npm-token"
printf 'placeholder-not-a-token\n' >"$TMP/npm-token"
# The copy keeps the unit's name: verify and security both read the name from the file name.
sed -e "s|^ExecStart=/usr/local/bin/npm-watchdog |ExecStart=$BIN |" \
    -e "s|^LoadCredential=npm-token:/etc/npm-watchdog/npm-token\$|LoadCredential=npm-token:$TMP/npm-token|" \
    "$UNIT" >"$TMP/npm-watchdog.service"

# --- 1. verify -------------------------------------------------------------------------------------------
say "systemd-analyze verify (copy with ExecStart=$BIN)"
status=0
verify_out="$(cd "$TMP" && systemd-analyze verify "$TMP/npm-watchdog.service" 2>&1)" || status=$?
if [[ $status -ne 0 || -n "$verify_out" ]]; then
    printf '%s\n' "$verify_out" >&2
    die "systemd-analyze verify reported problems (exit $status)"
fi
say "verify: clean"

# --- 2. security -----------------------------------------------------------------------------------------
say "systemd-analyze security --offline=true systemd/npm-watchdog.service"
status=0
security_out="$(cd "$ROOT" && systemd-analyze security --no-pager --offline=true systemd/npm-watchdog.service 2>&1)" ||
    status=$?
printf '%s\n' "$security_out"
[[ $status -eq 0 ]] || die "systemd-analyze security failed (exit $status)"
exposure="$(printf '%s\n' "$security_out" |
    sed -n 's/.*Overall exposure level for npm-watchdog\.service: \([0-9][0-9]*\.[0-9]\).*/\1/p' | tail -n 1)"
[[ -n "$exposure" ]] || die "no overall exposure level in the output of systemd-analyze security"
if awk -v e="$exposure" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(e + 0 > max + 0) }'; then
    die "exposure $exposure is above $MAX_EXPOSURE"
fi
say "exposure $exposure (limit $MAX_EXPOSURE): OK"
