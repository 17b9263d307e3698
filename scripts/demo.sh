#!/usr/bin/env bash
# One minute of The Goodies: a FunkyGibbon server in-process on a temporary SQLite
# database, two Blowing-Off clients sharing a home, an edit made offline, a conflicting
# edit and how the server decided it, the losing edit kept in history, and both clients
# converged (state digests shown). Everything lives in a temporary directory.
#
# It builds goodies-demo the way `cargo nextest run --workspace --all-features` does
# (same profile, same workspace-wide features), so after the test suite nothing is
# rebuilt.
set -euo pipefail

cd "$(dirname "$0")/.."

cargo build --quiet --workspace --all-features --bin goodies-demo
exec "${CARGO_TARGET_DIR:-target}/debug/goodies-demo"
