#!/usr/bin/env bash
# Installs whatever is missing to build, run and test triggers on a Debian machine, as
# root: apt packages, cargo-pgrx, `cargo pgrx init`, pgmq's extension files, and the
# built `triggers` extension in the system Postgres; with --with-fuzzer (the test command)
# also the OpenAPI fuzzer, schemathesis, in target/schemathesis; with --with-browser (the
# test command) Debian's chromium and chromium-driver and, from npm, axe-core (the
# dashboard's accessibility check) in target/axe; with --with-promtool (the test command)
# Debian's prometheus, for `promtool check metrics`. Every step checks first and skips
# itself when there is nothing to do, so a second run only pays for `cargo pgrx install`.
#
# Versions come from [workspace.metadata.triggers] in Cargo.toml, nowhere else.
#
# Usage: scripts/setup.sh [--no-install-extension] [--release] [--with-fuzzer] [--with-browser]
#                         [--with-promtool]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

install_extension=1
fuzzer=0
browser=0
promtool=0
profile_flag=()
for arg in "$@"; do
    case "$arg" in
        --no-install-extension) install_extension=0 ;;
        --release) profile_flag=(--release) ;;
        --with-fuzzer) fuzzer=1 ;;
        --with-browser) browser=1 ;;
        --with-promtool) promtool=1 ;;
        *) echo "setup: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done

# pin NAME: the value of NAME in [workspace.metadata.triggers].
pin() {
    local value
    value=$(sed -n '/^\[workspace\.metadata\.triggers\]/,/^\[/ s/^'"$1"' *= *"\([^"]*\)".*/\1/p' Cargo.toml)
    [ -n "$value" ] || { echo "setup: '$1' is not pinned in Cargo.toml [workspace.metadata.triggers]" >&2; exit 1; }
    echo "$value"
}

RUST_VERSION=$(pin rust)
PGRX_VERSION=$(pin cargo-pgrx)
PGMQ_CRATE_VERSION=$(pin pgmq-crate)
PG_MAJOR=$(pin postgres)
SCHEMATHESIS_VERSION=$(pin schemathesis)
AXE_VERSION=$(pin axe-core)
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
export RUSTUP_TOOLCHAIN=$RUST_VERSION
export PATH="$HOME/.cargo/bin:$PATH"

step_start=0
step() { step_start=$(date +%s); printf 'setup: %s ... ' "$1"; }
done_() { echo "$1 ($(($(date +%s) - step_start)) s)"; }

# The pgrx dependency and cargo-pgrx must agree, or pgrx refuses to build.
if ! grep -q "^pgrx = \"=$PGRX_VERSION\"" Cargo.toml; then
    echo "setup: Cargo.toml's pgrx dependency does not match cargo-pgrx $PGRX_VERSION" >&2
    exit 1
fi

step "rust toolchain $RUST_VERSION"
if ! command -v rustup >/dev/null || ! rustup run "$RUST_VERSION" rustc --version >/dev/null 2>&1; then
    echo "missing"
    echo "setup: Rust $RUST_VERSION is not installed (rustup toolchain install $RUST_VERSION)" >&2
    exit 1
fi
done_ ok

step "apt packages"
apt_packages=(
    "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" libclang-dev clang pkg-config
    libssl-dev build-essential sudo
    # PL/Proxy: the proxy database of a sharded layout (extension triggers_proxy).
    "postgresql-$PG_MAJOR-plproxy"
)
# Python with venv, for the OpenAPI fuzzer (machines with a Python of their own keep it).
if [ "$fuzzer" -eq 1 ] && ! python3 -m venv --help >/dev/null 2>&1; then
    apt_packages+=(python3 python3-venv)
fi
# A real headless browser and its WebDriver, for the dashboard's tests; npm for axe-core
# (machines with a Node.js of their own keep it).
if [ "$browser" -eq 1 ]; then
    apt_packages+=(chromium chromium-driver)
    command -v npm >/dev/null || apt_packages+=(nodejs npm)
fi
# promtool, to lint the Prometheus exposition; without the server's recommends (exporters).
lean_packages=()
if [ "$promtool" -eq 1 ]; then
    lean_packages+=(prometheus)
fi
missing=()
lean_missing=()
for p in "${lean_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || lean_missing+=("$p")
done
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
all_missing=("${missing[@]}" "${lean_missing[@]}")
if [ ${#all_missing[@]} -eq 0 ]; then
    done_ "all present"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo
        echo "setup: missing packages ${all_missing[*]}; run this script as root or install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    [ ${#missing[@]} -eq 0 ] || apt-get install -y -qq "${missing[@]}" >/dev/null
    [ ${#lean_missing[@]} -eq 0 ] ||
        apt-get install -y -qq --no-install-recommends "${lean_missing[@]}" >/dev/null
    done_ "installed ${all_missing[*]}"
fi

step "cargo-pgrx $PGRX_VERSION"
if [ "$(cargo pgrx --version 2>/dev/null)" = "cargo-pgrx $PGRX_VERSION" ]; then
    done_ present
else
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
    done_ installed
fi

step "cargo pgrx init (pg$PG_MAJOR)"
pgrx_config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if grep -qs "^pg$PG_MAJOR = \"$PG_CONFIG\"" "$pgrx_config"; then
    done_ present
else
    cargo pgrx init "--pg$PG_MAJOR" "$PG_CONFIG" >/dev/null
    done_ done
fi

step "pgmq extension (crate $PGMQ_CRATE_VERSION)"
extdir="$("$PG_CONFIG" --sharedir)/extension"
stamp="$extdir/pgmq.triggers-setup"
if [ -f "$extdir/pgmq.control" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$PGMQ_CRATE_VERSION" ]; then
    done_ present
else
    # Cargo downloads the pgmq crate (it embeds the extension's SQL) into its registry
    # cache; we copy the files out of it. Nothing of pgmq is committed to this repository.
    fetch_dir="$root/target/pgmq-fetch"
    mkdir -p "$fetch_dir/src"
    : >"$fetch_dir/src/lib.rs"
    cat >"$fetch_dir/Cargo.toml" <<EOF
[package]
name = "pgmq-fetch"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
pgmq = { version = "=$PGMQ_CRATE_VERSION", default-features = false }
[workspace]
EOF
    cargo fetch --quiet --manifest-path "$fetch_dir/Cargo.toml"
    src=$(cargo metadata --quiet --format-version 1 --manifest-path "$fetch_dir/Cargo.toml" |
        python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="pgmq"))')
    embedded="$(dirname "$src")/src/install/embedded"
    [ -f "$embedded/pgmq.control" ] || { echo "setup: no pgmq.control in $embedded" >&2; exit 1; }
    version=$(sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" "$embedded/pgmq.control")
    install -m 644 "$embedded/pgmq.control" "$extdir/pgmq.control"
    install -m 644 "$embedded/sql/pgmq.sql" "$extdir/pgmq--$version.sql"
    for f in "$embedded"/sql/pgmq--*--*.sql; do
        install -m 644 "$f" "$extdir/$(basename "$f")"
    done
    echo "$PGMQ_CRATE_VERSION" >"$stamp"
    done_ "installed pgmq $version"
fi

venv="$root/target/schemathesis"
if [ "$fuzzer" -eq 0 ]; then
    :
elif step "schemathesis $SCHEMATHESIS_VERSION (the OpenAPI fuzz test)" &&
    [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" = "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    done_ present
else
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    done_ installed
fi

axe="$root/target/axe"
if [ "$browser" -eq 0 ]; then
    :
elif step "axe-core $AXE_VERSION (the dashboard's accessibility check)" &&
    [ "$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$axe/node_modules/axe-core/package.json" 2>/dev/null | head -n 1)" = "$AXE_VERSION" ]; then
    done_ present
else
    mkdir -p "$axe"
    npm install --silent --no-audit --no-fund --prefix "$axe" "axe-core@$AXE_VERSION" >/dev/null
    done_ installed
fi

if [ "$install_extension" -eq 1 ]; then
    step "triggers extension into the system Postgres"
    log="$root/target/setup-install.log"
    mkdir -p "$root/target"
    if ! (cd extension && cargo pgrx install "${profile_flag[@]}" --pg-config "$PG_CONFIG") >"$log" 2>&1; then
        echo "failed"
        tail -n 30 "$log" >&2
        exit 1
    fi
    # Earlier releases' install scripts, so an installed database of one can be
    # created (the upgrade test) and `ALTER EXTENSION triggers UPDATE` has a start.
    cp "$root"/extension/releases/triggers--*.sql "$("$PG_CONFIG" --sharedir)/extension/"
    # triggers_proxy (pure SQL): the figures-from-parts a node has too, then the proxy's
    # PL/Proxy functions; the same version as the workspace.
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
    sed "s/@CARGO_VERSION@/$version/" "$root/extension/proxy/triggers_proxy.control" >"$extdir/triggers_proxy.control"
    cat "$root/sql/combine.sql" "$root/extension/proxy/proxy.sql" >"$extdir/triggers_proxy--$version.sql"
    done_ installed
fi
