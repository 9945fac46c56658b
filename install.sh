#!/usr/bin/env bash
# Installs Agent on a fresh Debian/Ubuntu machine: the system packages it needs, a Rust
# toolchain if none is present, and the `agent` binary into /usr/local/bin (or $PREFIX/bin).
set -euo pipefail
cd "$(dirname "$0")"
PREFIX="${PREFIX:-/usr/local}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config git python3 ca-certificates curl >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  elif command -v apt-get >/dev/null 2>&1 && apt-cache show rustup >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq rustup >/dev/null
  else
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

# rust-toolchain.toml pins the toolchain; rustup installs it on first use.
cargo build --release --locked -p agent
$SUDO install -D -m 0755 target/release/agent "$PREFIX/bin/agent"
echo "installed $PREFIX/bin/agent ($("$PREFIX/bin/agent" --version))"
