#!/usr/bin/env bash
# Installs everything pg_qbo needs on a fresh Debian 12 machine, as root, non-interactively:
# PostgreSQL 15 server + headers, pg_cron, the C toolchain bindgen needs, sudo (cargo pgrx test
# runs initdb as `postgres` through it), Python for the third-party-client tests, and
# cargo-pgrx 0.18.1 registered against Debian's pg_config. Idempotent: a second run is quick.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PG_MAJOR=${PG_MAJOR:-15}
PGRX_VERSION=0.18.1

pkgs=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-$PG_MAJOR-cron
      clang libclang-dev build-essential pkg-config libssl-dev sudo curl python3 python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  echo "setup: installing cargo-pgrx $PGRX_VERSION (takes a few minutes the first time)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi

PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
if ! grep -qs "pg$PG_MAJOR" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  cargo pgrx init --pg$PG_MAJOR="$PG_CONFIG" >/dev/null
fi
echo "setup: ok (PostgreSQL $PG_MAJOR, cargo-pgrx $PGRX_VERSION)"
