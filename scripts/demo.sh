#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine, as root: builds and installs pg_qbo, starts a local
# PostgreSQL 15 cluster and the bundled QBO emulator, registers a connection (secrets from a file,
# never in SQL text), backfills Customer, Invoice and Item, and prints the volumetry; then keeps
# them current with qbo.sync after changes in QuickBooks (deletes included).
# KEEP=1 leaves the cluster and the emulator running (see the psql line printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
DEMO_DIR=${DEMO_DIR:-/tmp/pg_qbo_demo}
DEMO_PORT=${DEMO_PORT:-25390}
FROM=${FROM:-2025-01-01T00:00:00Z}
TO=${TO:-2025-09-11T00:00:00Z}

bash scripts/setup.sh
echo "==> building the emulator and the extension (release)"
cargo build --release -q -p qbo-emulator
cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null

echo "==> starting PostgreSQL on 127.0.0.1:$DEMO_PORT ($DEMO_DIR) and the emulator"
bash scripts/cluster.sh stop "$DEMO_DIR" || true
rm -rf "$DEMO_DIR"
bash scripts/cluster.sh start "$DEMO_DIR" "$DEMO_PORT"
"$ROOT/target/release/qbo-emulator" --listen 127.0.0.1:0 --seed 42 > "$DEMO_DIR/emulator.out" 2> "$DEMO_DIR/emulator.log" &
EMU_PID=$!
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    kill "$EMU_PID" 2>/dev/null || true
    bash scripts/cluster.sh stop "$DEMO_DIR"
  fi
}
trap cleanup EXIT
for _ in $(seq 1 100); do grep -q '^listening on ' "$DEMO_DIR/emulator.out" && break; sleep 0.1; done
EMU_URL=$(sed -n 's/^listening on //p' "$DEMO_DIR/emulator.out")
[ -n "$EMU_URL" ] || { echo "the emulator did not start; see $DEMO_DIR/emulator.log" >&2; exit 1; }
echo "    emulator at $EMU_URL"

# Credentials of the emulator's demo company, in a file only the server's OS user can read.
CREDS=$DEMO_DIR/qbo-credentials.json
printf '{"realm_id":"9341452000000001","client_id":"emu-client-id","client_secret":"emu-client-secret","refresh_token":"emu-refresh-token-0","environment":"sandbox"}\n' > "$CREDS"
chown postgres "$CREDS"; chmod 600 "$CREDS"

PSQL=(psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$DEMO_PORT" -U postgres -d postgres)
"${PSQL[@]}" -q <<SQL
CREATE EXTENSION pg_qbo;
ALTER DATABASE postgres SET qbo.api_base_url = '$EMU_URL';
ALTER DATABASE postgres SET qbo.token_url = '$EMU_URL/oauth2/v1/tokens/bearer';
SQL
"${PSQL[@]}" -q -c "SELECT qbo.connect_from_file('$CREDS') AS connection" >/dev/null

for entity in Customer Invoice Item; do
  echo
  echo "==> SELECT * FROM qbo.backfill('$entity', fecha_inicio => '$FROM', fecha_fin => '$TO', chunk_size => 30, page_size => 1000);"
  "${PSQL[@]}" -c "SET client_min_messages = warning" \
    -c "SELECT * FROM qbo.backfill('$entity', fecha_inicio => '$FROM', fecha_fin => '$TO', chunk_size => 30, page_size => 1000)"
done

echo "==> raw tables compared with the emulator's ground truth"
for pair in Customer:qb_customers Invoice:qb_invoices Item:qb_items; do
  entity=${pair%%:*}; table=${pair##*:}
  truth=$(curl -s "$EMU_URL/__emulator/truth/9341452000000001/$entity" | python3 -c "
import json,sys
from datetime import datetime, timezone
rows=json.load(sys.stdin)
lo=datetime.fromisoformat('${FROM%Z}+00:00'); hi=datetime.fromisoformat('${TO%Z}+00:00')
print(sum(1 for r in rows if not r.get('deleted') and lo <= datetime.fromisoformat(r['LastUpdatedTime']) < hi))")
  got=$("${PSQL[@]}" -Atc "SELECT count(*) FROM raw.$table")
  printf '    %-9s raw.%-13s %6s rows, emulator truth %6s: %s\n' "$entity" "$table" "$got" "$truth" "$([ "$got" = "$truth" ] && echo equal || echo DIFFERENT)"
  [ "$got" = "$truth" ]
done

# Keeping raw current: a first sync (each entity's whole history: every record already there is
# skipped), changes in QuickBooks (the emulator's mutator: creates, updates, voids, inactivations,
# hard deletes), then a sync through Change Data Capture.
SYNC="SELECT entity, route, requests, changed, inserted, updated, deleted, skipped, duration FROM qbo.sync(ARRAY['Customer', 'Invoice', 'Item'])"
echo
echo "==> $SYNC;   -- first sync"
"${PSQL[@]}" -c "SET client_min_messages = warning" -c "$SYNC"
curl -sf -X POST -H 'Content-Type: application/json' \
  -d '{"op": "mix", "count": 25, "realm": "9341452000000001", "entities": ["Customer", "Invoice", "Item"]}' \
  "$EMU_URL/__emulator/mutate" > /dev/null
curl -sf -X POST -H 'Content-Type: application/json' \
  -d '{"op": "delete", "count": 2, "realm": "9341452000000001", "entity": "Invoice"}' \
  "$EMU_URL/__emulator/mutate" > /dev/null
echo "==> 25 changes and 2 invoices hard-deleted in QuickBooks, then $SYNC;"
"${PSQL[@]}" -c "SET client_min_messages = warning" -c "$SYNC"
echo "==> live rows (deleted_at_utc IS NULL) compared with the emulator's ground truth"
for pair in Customer:qb_customers Invoice:qb_invoices Item:qb_items; do
  entity=${pair%%:*}; table=${pair##*:}
  truth=$(curl -s "$EMU_URL/__emulator/truth/9341452000000001/$entity" |
    python3 -c "import json,sys; print(sum(1 for r in json.load(sys.stdin) if not r.get('deleted')))")
  got=$("${PSQL[@]}" -Atc "SELECT count(*) FROM raw.$table WHERE deleted_at_utc IS NULL")
  gone=$("${PSQL[@]}" -Atc "SELECT count(*) FROM raw.$table WHERE deleted_at_utc IS NOT NULL")
  printf '    %-9s raw.%-13s %6s live rows (%s marked deleted), emulator truth %6s: %s\n' "$entity" "$table" "$got" "$gone" "$truth" "$([ "$got" = "$truth" ] && echo equal || echo DIFFERENT)"
  [ "$got" = "$truth" ]
done
if [ "${KEEP:-0}" = 1 ]; then
  echo "    cluster kept: psql -h 127.0.0.1 -p $DEMO_PORT -U postgres   (emulator pid $EMU_PID)"
fi
