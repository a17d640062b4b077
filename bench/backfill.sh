#!/usr/bin/env bash
# Benchmark: a 100k-invoice backfill from the emulator (release build), first run and the
# all-skipped re-runs, through CALL qbo.run_backfill. Prints rows/s and the backend's peak private
# (anonymous) memory above idle, sampled every 50 ms from /proc/PID/smaps_rollup. A benchmark, not
# a test: it asserts nothing (the e2e suites check correctness).
#   bash bench/backfill.sh            (INVOICES=100000 CHUNK=30 PAGE=1000 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
INVOICES=${INVOICES:-100000}
CHUNK=${CHUNK:-30}
PAGE=${PAGE:-1000}
DIR=${BENCH_DIR:-/tmp/pg_qbo_bench}
PORT=${BENCH_PORT:-54393}
bash scripts/setup.sh >/dev/null
cargo build --release -q -p qbo-emulator
cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config >/dev/null
bash scripts/cluster.sh stop "$DIR" || true
rm -rf "$DIR"
bash scripts/cluster.sh start "$DIR" "$PORT" "shared_buffers = '512MB'" "max_wal_size = '4GB'"
target/release/qbo-emulator --listen 127.0.0.1:0 --realm 9341452000000001 --records "Invoice=$INVOICES" \
  --rate-limit 100000000 --max-concurrent 1000 > "$DIR/emu.out" 2> "$DIR/emu.err" &
EMU=$!
[ "${KEEP:-0}" = 1 ] || trap 'kill $EMU 2>/dev/null || true; bash scripts/cluster.sh stop "$DIR"' EXIT
for _ in $(seq 1 300); do grep -q '^listening on ' "$DIR/emu.out" && break; sleep 0.1; done
URL=$(sed -n 's/^listening on //p' "$DIR/emu.out")
printf '{"realm_id":"9341452000000001","client_id":"emu-client-id","client_secret":"emu-client-secret","refresh_token":"emu-refresh-token-0","environment":"sandbox"}' > "$DIR/creds.json"
chown postgres "$DIR/creds.json"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres)
"${PSQL[@]}" -c "CREATE EXTENSION pg_qbo" \
  -c "ALTER DATABASE postgres SET qbo.api_base_url = '$URL'" \
  -c "ALTER DATABASE postgres SET qbo.token_url = '$URL/oauth2/v1/tokens/bearer'"
"${PSQL[@]}" -c "SELECT qbo.connect_from_file('$DIR/creds.json')" >/dev/null
# warm the emulator's payload cache so the first run measures pg_qbo, not first rendering
curl -s "$URL/__emulator/truth/9341452000000001/Invoice" > /dev/null

# Private (anonymous) memory of a backend in kB: what the run itself allocates, not the shared
# buffers it touches (RSS would count those).
anon_kb() { awk '/^Anonymous:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

run() {
  local label=$1
  local t0 t1 pid idle peak=0 cur
  t0=$(date +%s.%N)
  PGAPPNAME=pg_qbo_bench "${PSQL[@]}" -c "SET client_min_messages = warning" \
    -c "SELECT pg_sleep(0.3)" \
    -c "CALL qbo.run_backfill('Invoice', '2025-01-01Z', '2025-09-11Z', $CHUNK, $PAGE)" >/dev/null &
  local job=$!
  for _ in $(seq 1 100); do
    pid=$("${PSQL[@]}" -At -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_qbo_bench' LIMIT 1")
    [ -n "$pid" ] && break
    sleep 0.01
  done
  idle=$(anon_kb "$pid")
  while kill -0 "$job" 2>/dev/null; do
    cur=$(anon_kb "$pid"); [ "${cur:-0}" -gt "$peak" ] && peak=$cur
    sleep 0.05
  done
  wait "$job"
  t1=$(date +%s.%N)
  local stats
  stats=$("${PSQL[@]}" -At -F' ' -c "SELECT sum(rows), sum(inserted), sum(updated), sum(skipped), sum(pages) FROM qbo.run_chunks WHERE run_id = (SELECT max(run_id) FROM qbo.runs)")
  read -r rows ins upd skp pages <<<"$stats"
  python3 -c "
secs=$t1-$t0-0.3
print(f'$label: {$rows} rows ({$ins} inserted, {$upd} updated, {$skp} skipped) in {$pages} pages, {secs:.2f} s, {$rows/secs:,.0f} rows/s; backend private memory peak {($peak-${idle:-0})/1024:.1f} MB above idle')"
}
echo "pg_qbo backfill benchmark: $INVOICES invoices, chunk_size $CHUNK, page_size $PAGE ($(nproc) cores)"
run "first run              "
run "re-run at once         "
"${PSQL[@]}" -c "VACUUM (ANALYZE) raw.qb_invoices"
run "re-run after VACUUM    "
echo "raw.qb_invoices: $("${PSQL[@]}" -At -c 'SELECT count(*) FROM raw.qb_invoices') rows, $("${PSQL[@]}" -At -c "SELECT pg_size_pretty(pg_total_relation_size('raw.qb_invoices'))")"
