#!/usr/bin/env bash
# Installs Agent on a fresh Debian/Ubuntu machine: the system packages it needs, a Rust
# toolchain if none is present, the `agent` binary into /usr/local/bin (or $PREFIX/bin), and
# a systemd unit for the daemon (installed, not enabled; set AGENT_NO_SYSTEMD=1 to skip it).
set -euo pipefail
cd "$(dirname "$0")"
PREFIX="${PREFIX:-/usr/local}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config libssl-dev git python3 ca-certificates curl >/dev/null
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

# The daemon's systemd unit: installed, never enabled or started here.
if [ -z "${AGENT_NO_SYSTEMD:-}" ] && [ -d /etc/systemd/system ]; then
  unit="$(mktemp)"
  cat > "$unit" <<UNIT
[Unit]
Description=Agent workflow daemon
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=agent
Group=agent
ExecStart=$PREFIX/bin/agent daemon --config /etc/agent/agent.yaml
# SIGTERM: running steps get limits.shutdown_grace to finish; the rest resume on restart.
KillMode=mixed
TimeoutStopSec=60
Restart=on-failure
RestartSec=2
StateDirectory=agent
Environment=RUST_LOG=info

[Install]
WantedBy=multi-user.target
UNIT
  $SUDO install -D -m 0644 "$unit" /etc/systemd/system/agent.service
  rm -f "$unit"
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl daemon-reload || true
  fi
  echo "installed /etc/systemd/system/agent.service (not enabled: create user \`agent\` and /etc/agent/agent.yaml, see examples/agent.yaml, then \`systemctl enable --now agent\`)"
fi
