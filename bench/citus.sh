#!/usr/bin/env bash
# pg_qbo on Citus (issue 17): the same four-company backfill on one plain node and on a Citus
# cluster (a coordinator and two workers on this machine), in one invocation. A benchmark, not a
# test: it prints figures and asserts no goal, but fails loudly (non-zero exit) when something did
# not run: a CALL that failed, or a raw table that does not end equal to the emulator's truth.
#
#   PG_QBO_CITUS_BIN=/path/to/postgresql/15/bin bash bench/citus.sh
#
# PG_QBO_CITUS_BIN: the bin directory of a PostgreSQL 15 with Citus 13.2 and pg_qbo installed
# (`cargo pgrx install --release --pg-config $PG_QBO_CITUS_BIN/pg_config`); Debian does not
# package Citus, so there is no default. Both setups run from it (the plain node simply does not
# load Citus).
#
# The company data: CITUS_REALMS (4) realms of CITUS_INVOICES (25000) invoices each, one emulator
# at zero latency with Intuit's limits per realm (--rate-limit 500 --max-concurrent 10), so the
# figures are pg_qbo's and the database's, not QuickBooks' (a realm behind issue 15's latency
# model is capped near 6,700 rows/s whatever the database: BENCHMARKS.md B5). The four
# CALL qbo.run_backfill('Invoice', ...) start at one instant (pg_sleep_until), one per connection.
# Measured: wall time from the common start to the last CALL's end, rows/s, and CPU seconds of
# each cluster's processes (the postmaster, its live children and the children it reaped: fields
# 14-17 of /proc/PID/stat) per 1,000 rows; bytes of raw.qb_invoices per 1,000 records (its total
# relation size: Citus' citus_total_relation_size over every shard).
# Environment: CITUS_REALMS, CITUS_INVOICES, CITUS_DIR (/tmp/pg_qbo_citusbench), CITUS_PORT
# (25810: the plain node; the cluster takes the next three ports), QBO_EMULATOR_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${PG_QBO_CITUS_BIN:?set PG_QBO_CITUS_BIN to the bin directory of a PostgreSQL 15 with Citus 13.2 and pg_qbo installed}
REALMS=${CITUS_REALMS:-4}
INVOICES=${CITUS_INVOICES:-25000}
DIR=${CITUS_DIR:-/tmp/pg_qbo_citusbench}
PORT=${CITUS_PORT:-25810}
EMU_BIN=${QBO_EMULATOR_BIN:-${CARGO_TARGET_DIR:-target}/release/qbo-emulator}
LIB=$("$BIN/pg_config" --pkglibdir)
[ -f "$LIB/citus.so" ] || { echo "citus.sh: no Citus in $LIB (PG_QBO_CITUS_BIN=$BIN)" >&2; exit 1; }
[ -f "$LIB/pg_qbo.so" ] || { echo "citus.sh: no pg_qbo in $LIB (PG_QBO_CITUS_BIN=$BIN)" >&2; exit 1; }
[ -x "$EMU_BIN" ] || { echo "citus.sh: no emulator at $EMU_BIN (cargo build --release -p qbo-emulator)" >&2; exit 1; }
note() { echo "[$(date +%T)] $*" >&2; }
die() { echo "citus.sh: FAILED: $*" >&2; exit 1; }
psql_at() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d postgres "${@:2}"; }
sql() { psql_at "$1" -At -c "$2"; }
NODES=()
EMU_PID=""
cleanup() {
  [ -n "$EMU_PID" ] && { kill "$EMU_PID" 2>/dev/null || true; wait "$EMU_PID" 2>/dev/null || true; }
  for n in "${NODES[@]}"; do PG_BIN=$BIN bash scripts/cluster.sh stop "$DIR/$n" >/dev/null 2>&1 || true; done
  [ "${KEEP:-0}" = 1 ] || rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$DIR"; mkdir -p "$DIR"; chmod 755 "$DIR"

# node NAME PORT [conf...]: a cluster of this benchmark
node() {
  local name=$1 port=$2; shift 2
  NODES+=("$name")
  PG_BIN=$BIN bash scripts/cluster.sh start "$DIR/$name" "$port" "shared_buffers = '512MB'" \
    "max_wal_size = '8GB'" "max_connections = 300" "$@" >/dev/null
}
# cpu PORT: CPU seconds (user + system) of the cluster's postmaster and every process under it,
# the reaped ones included
cpu() {
  local pm ticks=0 f
  pm=$(head -1 "$DIR/$1/data/postmaster.pid")
  read -r -a f < "/proc/$pm/stat"
  ticks=$((f[13] + f[14] + f[15] + f[16]))
  for c in $(ps -o pid= --ppid "$pm"); do
    read -r -a f 2>/dev/null < "/proc/$c/stat" || continue
    ticks=$((ticks + f[13] + f[14]))
  done
  awk "BEGIN { printf \"%.2f\", $ticks / $(getconf CLK_TCK) }"
}

out="$DIR/emu.out"
realm_args=(); REALM_IDS=()
for i in $(seq 1 "$REALMS"); do r=$((9341452000000000 + i)); REALM_IDS+=("$r"); realm_args+=(--realm "$r"); done
"$EMU_BIN" --listen 127.0.0.1:0 "${realm_args[@]}" --records "Invoice=$INVOICES" --rate-limit 500 --max-concurrent 10 \
  > "$out" 2> "$out.err" &
EMU_PID=$!
for _ in $(seq 1 600); do grep -q '^listening on ' "$out" && break; sleep 0.1; done
EMU_URL=$(sed -n 's/^listening on //p' "$out")
[ -n "$EMU_URL" ] || die "emulator did not start: $(cat "$out.err")"

# setup PORT NAME: pg_qbo on the node (the coordinator), one connection per realm
setup() {
  local port=$1 name=$2 i=0
  sql "$port" "CREATE EXTENSION pg_qbo" >/dev/null
  sql "$port" "ALTER DATABASE postgres SET qbo.api_base_url = '$EMU_URL'" >/dev/null
  sql "$port" "ALTER DATABASE postgres SET qbo.token_url = '$EMU_URL/oauth2/v1/tokens/bearer'" >/dev/null
  for r in "${REALM_IDS[@]}"; do
    i=$((i + 1))
    printf '{"realm_id":"%s","client_id":"emu-client-id","client_secret":"emu-client-secret","refresh_token":"emu-refresh-token-0","environment":"sandbox"}' \
      "$r" > "$DIR/creds-$name-$i.json"
    chown postgres "$DIR/creds-$name-$i.json"
    sql "$port" "SELECT qbo.connect_from_file('$DIR/creds-$name-$i.json', 'c$i')" >/dev/null
  done
}

# load PORT NAME CPU_PORTS...: the four backfills at one instant; prints "seconds rows"
load() {
  local port=$1 name=$2 at jobs=() i
  at=$(sql "$port" "SELECT (clock_timestamp() + interval '3 s')::text")
  for i in $(seq 1 "$REALMS"); do
    psql_at "$port" -At -c "SELECT pg_sleep_until('$at')" \
      -c "CALL qbo.run_backfill('Invoice', '2000-01-01Z', '2100-01-01Z', 36500, 1000, connection => 'c$i')" \
      > "$DIR/$name-call-$i.out" 2>&1 &
    jobs+=($!)
  done
  for i in "${!jobs[@]}"; do wait "${jobs[i]}" || { cat "$DIR/$name-call-$((i + 1)).out" >&2; die "$name: CALL $((i + 1)) failed"; }; done
  sql "$port" "SELECT round(extract(epoch FROM max(finished_at) - '$at'::timestamptz)::numeric, 3), sum(rows_total)
                 FROM (SELECT r.finished_at, (SELECT sum(c.rows) FROM qbo.run_chunks c WHERE c.run_id = r.run_id) AS rows_total
                         FROM qbo.runs r WHERE r.kind = 'backfill') t" | tr '|' ' '
}

# check PORT: every realm's raw.qb_invoices equals the truth (Ids and SyncTokens)
check() {
  local port=$1 r truth raw
  for r in "${REALM_IDS[@]}"; do
    truth=$(curl -sf "$EMU_URL/__emulator/truth/$r/Invoice" | jq -r '[.[] | select(.deleted != true) | "\(.Id):\(.SyncToken)"] | sort | join(",")' | md5sum)
    raw=$(sql "$port" "SELECT string_agg(id || ':' || (payload->>'SyncToken'), ',' ORDER BY id || ':' || (payload->>'SyncToken')) FROM raw.qb_invoices WHERE realm_id = '$r'" | md5sum)
    [ "$truth" = "$raw" ] || die "port $port: raw.qb_invoices of realm $r differs from the truth"
  done
}

note "$(nproc) cores; $("$BIN/postgres" --version); $REALMS realms x $INVOICES invoices"
# --- one plain node ---------------------------------------------------------------------------
node plain "$PORT"
setup "$PORT" plain
c0=$(cpu plain)
read -r p_secs p_rows <<<"$(load "$PORT" plain)"
c1=$(cpu plain)
check "$PORT"
p_cpu=$(awk "BEGIN { printf \"%.2f\", $c1 - $c0 }")
p_bytes=$(sql "$PORT" "SELECT pg_total_relation_size('raw.qb_invoices')")
note "plain node: $p_rows rows in $p_secs s"
PG_BIN=$BIN bash scripts/cluster.sh stop "$DIR/plain" >/dev/null

# --- Citus: a coordinator and two workers -------------------------------------------------------
CP=$((PORT + 1)); W1=$((PORT + 2)); W2=$((PORT + 3))
for n in "coord:$CP" "w1:$W1" "w2:$W2"; do
  node "${n%%:*}" "${n##*:}" "shared_preload_libraries = 'citus'"
  sql "${n##*:}" "CREATE EXTENSION citus" >/dev/null
done
sql "$CP" "SELECT citus_set_coordinator_host('127.0.0.1', $CP)" >/dev/null
sql "$CP" "SELECT citus_add_node('127.0.0.1', $W1)" >/dev/null
sql "$CP" "SELECT citus_add_node('127.0.0.1', $W2)" >/dev/null
CITUS_VERSION=$(sql "$CP" "SELECT citus_version()")
setup "$CP" citus
k0=$(cpu coord); a0=$(cpu w1); b0=$(cpu w2)
read -r c_secs c_rows <<<"$(load "$CP" citus)"
k1=$(cpu coord); a1=$(cpu w1); b1=$(cpu w2)
check "$CP"
[ "$(sql "$CP" "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 'raw.qb_invoices'::regclass")" = 1 ] ||
  die "raw.qb_invoices is not distributed"
c_cpu=$(awk "BEGIN { printf \"%.2f\", $k1 - $k0 }")
w_cpu=$(awk "BEGIN { printf \"%.2f\", ($a1 - $a0) + ($b1 - $b0) }")
c_bytes=$(sql "$CP" "SELECT citus_total_relation_size('raw.qb_invoices')")
shards=$(sql "$CP" "SELECT string_agg(n || ' shards on ' || p, ', ') FROM (SELECT nodeport AS p, count(*) AS n FROM citus_shards WHERE table_name = 'raw.qb_invoices'::regclass GROUP BY 1 ORDER BY 1) t")

echo
echo "=== pg_qbo on Citus: $REALMS companies x $INVOICES invoices backfilled at once (zero latency, Intuit's limits per realm) ==="
echo "$CITUS_VERSION; $(nproc) cores; raw.qb_invoices: $shards"
printf '%-26s %10s %10s %9s %16s %16s %18s\n' setup rows seconds rows/s "coord CPU s/1k" "worker CPU s/1k" "bytes/1k records"
printf '%-26s %10s %10s %9s %16s %16s %18s\n' "one plain node" "$p_rows" "$p_secs" \
  "$(awk "BEGIN { printf \"%.0f\", $p_rows / $p_secs }")" "$(awk "BEGIN { printf \"%.3f\", $p_cpu * 1000 / $p_rows }")" "-" \
  "$(awk "BEGIN { printf \"%.0f\", $p_bytes * 1000 / $p_rows }")"
printf '%-26s %10s %10s %9s %16s %16s %18s\n' "Citus: coordinator + 2" "$c_rows" "$c_secs" \
  "$(awk "BEGIN { printf \"%.0f\", $c_rows / $c_secs }")" "$(awk "BEGIN { printf \"%.3f\", $c_cpu * 1000 / $c_rows }")" \
  "$(awk "BEGIN { printf \"%.3f\", $w_cpu * 1000 / $c_rows }")" "$(awk "BEGIN { printf \"%.0f\", $c_bytes * 1000 / $c_rows }")"
echo "(CPU: every process of the cluster, the reaped backends included; one machine runs all three nodes and the emulator)"
echo "every realm's raw.qb_invoices equals the truth on both setups"
