#!/usr/bin/env bash
# Crash safety, at length: the daemon is killed with SIGKILL 50 times (CRASH_KILLS) in the middle of
# sending, at points spread by a fixed sequence, then left to finish; the test prints how many
# notifications were expected, received, lost and duplicated, and fails if any was lost or if more
# were duplicated than kills. Not part of the CI run (it takes a few minutes); CI kills three times.
set -euo pipefail
cd "$(dirname "$0")/.."
kills="${CRASH_KILLS:-50}"
CRASH_KILLS="$kills" cargo test --locked --test crash_delivery -- --nocapture --test-threads=1
