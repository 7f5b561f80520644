#!/usr/bin/env bash
# Installs whatever is missing (scripts/setup.sh), builds, and runs `triggers serve`.
# Without DATABASE_URL the server creates and starts its own Postgres cluster in
# ./.triggers (or TRIGGERS_DATA_DIR). Arguments go to `triggers serve`, e.g.
#   bash scripts/serve.sh --listen 0.0.0.0:8080
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh --release
export RUSTUP_TOOLCHAIN
RUSTUP_TOOLCHAIN=$(sed -n '/^\[workspace\.metadata\.triggers\]/,/^\[/ s/^rust *= *"\([^"]*\)".*/\1/p' Cargo.toml)
export PATH="$HOME/.cargo/bin:$PATH"
echo "serve: building triggers (release) ..."
cargo build --release --quiet -p triggers-server

# As root the cluster runs as `postgres`, which must be able to reach the data
# directory. A checkout under /root is not reachable: use /var/lib/triggers instead.
if [ "$(id -u)" -eq 0 ] && [ -z "${DATABASE_URL:-}" ] && [ -z "${TRIGGERS_DATA_DIR:-}" ] &&
    ! runuser -u postgres -- test -x "$root" 2>/dev/null; then
    export TRIGGERS_DATA_DIR=/var/lib/triggers/data
    mkdir -p /var/lib/triggers
    echo "serve: user postgres cannot reach $root; using TRIGGERS_DATA_DIR=$TRIGGERS_DATA_DIR"
fi
exec target/release/triggers serve "$@"
