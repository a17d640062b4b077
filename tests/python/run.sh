#!/usr/bin/env bash
# Runs the third-party client tests (python-quickbooks + intuit-oauth from PyPI) against a fresh
# qbo-emulator on a free 127.0.0.1 port. Usage: tests/python/run.sh [pytest args]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
VENV="${QBO_PY_VENV:-$TARGET/py-venv}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"

(cd "$REPO" && cargo build -q -p qbo-emulator --bin qbo-emulator)
BIN="$TARGET/debug/qbo-emulator"

LOG="$(mktemp)"
# the client pages back to back and does not pace itself: Intuit's 10 requests a second is lifted
"$BIN" --listen 127.0.0.1:0 --records Invoice=2500 --rate-limit-per-second 1000000 >"$LOG" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -f "$LOG"' EXIT

URL=""
for _ in $(seq 1 200); do
  URL="$(sed -n 's/^listening on //p' "$LOG" | head -n1)"
  [ -n "$URL" ] && break
  kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; echo "emulator died" >&2; exit 1; }
  sleep 0.05
done
[ -n "$URL" ] || { cat "$LOG" >&2; echo "emulator did not start" >&2; exit 1; }
echo "emulator at $URL"

cd "$HERE"
QBO_EMULATOR_URL="$URL" "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$HERE" "$@"
