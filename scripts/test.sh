#!/usr/bin/env bash
# Runs every test of triggers, installing whatever is missing first (scripts/setup.sh).
# As root (CI is), Postgres test clusters run as the `postgres` user.
#
#   fmt → clippy → unit tests → #[pg_test]s (cargo pgrx test) → install the extension
#   → black-box tests of the real `triggers` binary against real Postgres + pgmq
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
started=$(date +%s)
section() { printf '\n== %s (%s s)\n' "$1" "$(($(date +%s) - started))"; }
# Every test runner's output also goes here, to count the results at the end.
results=$(mktemp)
trap 'rm -f "$results"' EXIT
counted() { "$@" 2>&1 | tee -a "$results"; }

section "setup"
bash scripts/setup.sh --no-install-extension --with-fuzzer --with-browser --with-promtool
export RUSTUP_TOOLCHAIN
RUSTUP_TOOLCHAIN=$(sed -n '/^\[workspace\.metadata\.triggers\]/,/^\[/ s/^rust *= *"\([^"]*\)".*/\1/p' Cargo.toml)
export PATH="$HOME/.cargo/bin:$PATH"

section "cargo fmt --check"
cargo fmt --all --check

section "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

section "unit tests"
counted cargo test --workspace --exclude triggers --exclude triggers-tests

section "cargo pgrx test pg15"
pg_config=/usr/lib/postgresql/15/bin/pg_config
pgrx_args=(pg15)
if [ "$(id -u)" -eq 0 ]; then
    # initdb refuses root: the test cluster runs as postgres, in a directory it owns.
    pgdata="${TMPDIR:-/tmp}/triggers-pgrx-test"
    mkdir -p "$pgdata"
    chown postgres:postgres "$pgdata"
    pgrx_args+=(--runas postgres --pgdata "$pgdata")
fi
(cd extension && counted cargo pgrx test "${pgrx_args[@]}")

section "install the extension (non-test build) into $pg_config"
bash scripts/setup.sh

section "black-box tests"
cargo build -p triggers-server --quiet
cargo build -p triggers-client --examples --quiet   # the client tests run them
counted cargo test -p triggers-tests

section "done"
# `counted` runs under `set -o pipefail`, so any failure has already stopped the script.
awk '/^test result: / { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
