#!/usr/bin/env bash
# The project's test command: installs the real peers the end-to-end tests need,
# then runs every test target. Works from any directory; exits with cargo's status.
# Extra arguments are passed to the test binaries (after `--`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/install-peers.sh"

status=0
cargo test --locked --workspace --all-targets -- --test-threads=2 "$@" || status=$?
exit "$status"
