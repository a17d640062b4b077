#!/usr/bin/env bash
# pg_qbo throughput benchmark. A benchmark, not a test: it prints figures and asserts no goal, but
# it fails loudly (non-zero exit) when something did not run: a run that did not succeed, or a
# table that does not end with exactly the emulator's ground-truth row count.
#
#   bash bench/throughput.sh [b1|b2|b3|b4|b5|b6|all]  (default all)
#
# Everything runs on a throw-away cluster (TPUT_DIR=/tmp/pg_qbo_tput, TPUT_PORT=25394;
# shared_buffers 512MB, min/max_wal_size 4GB/8GB, checkpoint_timeout 30min) against local
# qbo-emulator processes. The comparisons of each part run side by side in one invocation, so
# their ratios mean something on a noisy machine; absolute figures do not travel across days.
#
# B1  zero latency, INVOICES invoices (default 100000), throttling off. Three contenders, each
#     into its own EMPTY table of identical shape (LIKE raw.qb_invoices INCLUDING ALL), each after
#     a CHECKPOINT (and once autovacuum is idle):
#       (a) pg_qbo: CALL qbo.run_backfill('Invoice', '2025-01-01Z', '2025-09-11Z', 30, 1000)
#       (b) bench/reference_loop.py: what a typical Mage/Singer pipeline does (refresh grant,
#           30-day windows paged with STARTPOSITION/MAXRESULTS 1000, one execute_values upsert
#           with pg_qbo's ON CONFLICT ... WHERE SyncToken semantics and one commit per page)
#       (c) the COPY floor: the same rows (exported beforehand, untimed) in one COPY ... FROM
#     Before them, an untimed warm-up pg_qbo load then TRUNCATE: a fresh cluster is slow on its
#     first GBs of WAL (segment creation) and the emulator renders each payload on first read.
#     Goals: pg_qbo >= 2x the Python loop's rows/s; pg_qbo time / COPY time <= 1.25.
# B4  right after B1's pg_qbo load, the same CALL again (every row unchanged: all skipped), then
#     once more after VACUUM (ANALYZE); the Python loop re-run for comparison.
#     Goal: the immediate re-run is not slower than the first load.
# B2  realistic latency: an emulator with --latency-ms B2_LATENCY_MS (default 300) and
#     --latency-per-row-us B2_PER_ROW_US (default 1200): issue 15's model, a 1000-row page takes
#     1.5 s and a count 0.3 s (before 2026-12-05 the default was 100 + 1400: a count took 0.1 s),
#     --rate-limit 500 --max-concurrent 10, B2_INVOICES (default 200000)
#     invoices, evenly spread (--no-big-burst), and once more with the emulator's default data,
#     which has one bulk-import second of 1001 + n/50 records. pg_qbo with default settings over
#     the whole range (both data sets), then the sequential pager
#     (SET qbo.max_in_flight = 1, when the build has that setting) over the first window holding
#     about B2_SEQ_PAGES (default 40) pages. A fresh emulator (clean log and rate window) and an
#     empty raw table per run. Prints data pages, pages/min, API requests/min, 429s (must be 0)
#     and pages/min as a % of the ceiling min(500, 60 x 10 / 1.5 s) = 400 pages/min.
#     Goal: pg_qbo's default run >= 90 % of the ceiling.
# B6  a small company over a long window: B6_INVOICES (default 20000) invoices updated between
#     B6_DATA_FROM and B6_DATA_TO (2023-01 .. 2026-11), B2's latency model, backfilled over
#     [B6_FROM = 2000-01-01, tomorrow): pg_qbo with chunk_size 7 (about 1,400 chunks) and 36500
#     (one chunk), and bench/reference_loop.py as a plain offset loop over one window. Prints the
#     API requests of each (token calls apart) and the seconds. Goal (issue 15): pg_qbo's requests
#     <= the loop's + 5 %, in <= 1.5 x its time.
# B3  memory: the peak private (Anonymous, /proc/PID/smaps_rollup) memory above idle of the
#     backend doing the CALL, sampled every 50 ms, for B3_SIZES (default 10000 100000 1000000)
#     invoices (an emulator per size, payload cache warmed; 1M takes the emulator ~1.9 GB RAM).
#     Goal: flat in the number of records.
# B5  many companies at once: B5_REALMS (default 4) realms, each with B5_INVOICES (default 100000)
#     invoices of the emulator's default data (with its bulk second) in one emulator serving them
#     all (its limits are per realm, as Intuit's), one connection each, backfilled concurrently
#     from B5_REALMS psql sessions (CALL qbo.run_backfill, each waiting for one common instant with
#     pg_sleep_until, so they start together). First at zero latency, with realm 1 alone before
#     (the reference), after an untimed warm-up load of every realm; then with B2's latency model
#     (B2_LATENCY_MS + B2_PER_ROW_US, --rate-limit 500 --max-concurrent 10 per realm,
#     pg_qbo's default pacing), once with evenly spread data (--no-big-burst) and once with the
#     default data, fresh realms each time, each time after one more realm alone (the reference at
#     latency: what one realm's pager reaches). Prints per realm and in aggregate: rows, seconds,
#     rows/s, data pages, pages/min and % of one realm's ceiling (400 pages/min), requests and
#     429s; the aggregate against its goal: at zero latency >= 90 % of realm 1 alone's rows/s; at
#     latency >= 90 % of min(B5_REALMS x one realm's ceiling in rows/s, B5's own zero-latency
#     aggregate). Where the time goes at zero latency: CPU seconds of each backend, of the
#     emulator, of the postgres background processes (walwriter,
#     checkpointer, background writer, autovacuum) and of the whole machine (/proc/stat: what other
#     processes took too), with the load average before and after.
#
# pg_qbo paces itself (qbo.max_requests_per_minute, 500 by default, and qbo.max_requests_per_second,
# 10, per realm across sessions): in B1, B3 and B4, whose emulator does not throttle, the script
# lifts them to 100000 and 1000 (the Python loop
# does not pace either); B2 keeps pg_qbo's defaults and gives each run a realm of its own, so no run
# starts with a minute used up by the previous one. (Builds without these settings: nothing set.)
#
# Every CALL (and the COPY) is timed by psql's \timing; the Python loop times itself (token request
# to last commit). For each contender the backend doing the work is sampled every 50 ms: private
# memory (peak above idle; for the CALL, idle = after LOAD 'pg_qbo', just before the CALL) and CPU
# time (/proc/PID/stat, all threads); B1/B4 also print the Python process's and the emulator's CPU,
# which shows where the time goes.
#
# Environment: SKIP_INSTALL=1 uses the installed extension as is (otherwise: scripts/setup.sh,
# cargo pgrx install --release); KEEP=1 leaves the cluster directory behind; INVOICES, B2_INVOICES,
# B2_SEQ_PAGES, B3_SIZES, B5_INVOICES, B5_REALMS as above; PG_CONFIG (default
# /usr/lib/postgresql/15/bin/pg_config, or $PG_BIN/pg_config when PG_BIN is set: a relocated
# PostgreSQL to install into and run the cluster from; psql is taken from its bindir);
# QBO_EMULATOR_BIN (default $CARGO_TARGET_DIR/release/qbo-emulator, target/ without it);
# EMU_PORT (default 0: each emulator on a port the kernel picks; else the emulators listen on
# EMU_PORT, EMU_PORT + 1, ... in the order they start); PY_ORDER=id|lastupdated (reference loop paging order, see
# bench/reference_loop.py: lastupdated loses rows in seconds holding more than a page, so B1 then
# fails its row-count check).
set -euo pipefail
cd "$(dirname "$0")/.."

PARTS=${1:-all}
case "$PARTS" in b1|b2|b3|b4|b5|b6|all) ;; *) echo "usage: bash bench/throughput.sh [b1|b2|b3|b4|b5|b6|all]" >&2; exit 2 ;; esac
want() { [ "$PARTS" = all ] || [ "$PARTS" = "$1" ]; }

INVOICES=${INVOICES:-100000}
B2_INVOICES=${B2_INVOICES:-200000}
B2_SEQ_PAGES=${B2_SEQ_PAGES:-40}
B3_SIZES=${B3_SIZES:-"10000 100000 1000000"}
B5_INVOICES=${B5_INVOICES:-100000}
B5_REALMS=${B5_REALMS:-4}
B6_INVOICES=${B6_INVOICES:-20000}
B6_DATA_FROM=${B6_DATA_FROM:-2023-01-01T00:00:00Z}
B6_DATA_TO=${B6_DATA_TO:-2026-11-01T00:00:00Z}
B6_FROM=${B6_FROM:-2000-01-01Z}
PY_ORDER=${PY_ORDER:-id}
DIR=${TPUT_DIR:-/tmp/pg_qbo_tput}
PORT=${TPUT_PORT:-25394}
REALM=9341452000000001
ENTITY=Invoice
START=2025-01-01Z
END=2025-09-11Z
CHUNK=30
PAGE=1000
B2_LATENCY_MS=${B2_LATENCY_MS:-300}
B2_PER_ROW_US=${B2_PER_ROW_US:-1200}
B2_RATE=500
B2_CONC=10
if [ -n "${PG_BIN:-}" ]; then PG_CONFIG=${PG_CONFIG:-$PG_BIN/pg_config}; fi
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PG_BIN=$("$PG_CONFIG" --bindir)
export PG_BIN   # scripts/cluster.sh runs the cluster from it
TARGET=${CARGO_TARGET_DIR:-target}
EMU_BIN=${QBO_EMULATOR_BIN:-$TARGET/release/qbo-emulator}
EMU_PORT=${EMU_PORT:-0}
VENV=target/bench-venv
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres)
export PGOPTIONS="-c client_min_messages=warning"
DSN="host=127.0.0.1 port=$PORT user=postgres dbname=postgres"

note() { echo "[$(date +%T)] $*" >&2; }          # progress, on stderr
die() { echo "throughput.sh: FAILED: $*" >&2; exit 1; }
sql() { "${PSQL[@]}" -At -c "$1"; }              # one statement, unaligned output
calc() { awk "BEGIN { printf \"$1\", $2 }"; }      # calc FORMAT EXPR

# ---------------------------------------------------------------------------------------------
# Build, install, cluster, cleanup
# ---------------------------------------------------------------------------------------------
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  bash scripts/setup.sh >/dev/null
  [ -n "${QBO_EMULATOR_BIN:-}" ] || cargo build --release -q -p qbo-emulator
  cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
elif [ ! -x "$EMU_BIN" ]; then
  cargo build --release -q -p qbo-emulator
fi
PY=""
if want b1 || want b2 || want b3 || want b4 || want b6; then   # B5 needs no Python
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r bench/requirements.txt
  PY="$VENV/bin/python"
fi

EMU_PIDS=()
JOB_PIDS=()
cleanup() {
  local p
  for p in "${JOB_PIDS[@]}" "${EMU_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${EMU_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  bash scripts/cluster.sh stop "$DIR" || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$DIR"
}
bash scripts/cluster.sh stop "$DIR" || true
rm -rf "$DIR"
trap cleanup EXIT
trap 'exit 130' INT TERM
# The port lies in the kernel's ephemeral range: a client connection of another process may hold it
# for a moment (bind then fails with "Address already in use"), so try a few times.
for try in 1 2 3 4 5 6 7 8 9 10; do
  bash scripts/cluster.sh start "$DIR" "$PORT" "shared_buffers = '512MB'" "max_wal_size = '8GB'" \
    "min_wal_size = '4GB'" "checkpoint_timeout = '30min'" 2>/dev/null && break
  [ "$try" = 10 ] && { tail -5 "$DIR/server.log" >&2; die "cannot start the cluster on port $PORT"; }
  note "cluster did not start on port $PORT (in use?), retrying"
  sleep 2
done
sql "CREATE EXTENSION pg_qbo" >/dev/null
sql "CREATE SCHEMA bench" >/dev/null
# Does this build have the pipelined pager's settings? (The sequential build does not.)
HAS_IN_FLIGHT=$("${PSQL[@]}" -At -c "LOAD 'pg_qbo'" -c "SELECT count(*) FROM pg_settings WHERE name = 'qbo.max_in_flight'")
# That build also paces itself (qbo.max_requests_per_minute, default 500, a sliding minute per realm
# shared by every session). Where the emulator does not throttle (B1, B3, B4) that pacing is lifted,
# as the Python loop does not pace either; B2 keeps the defaults.
UNPACED=()
[ "$HAS_IN_FLIGHT" = 1 ] && UNPACED=("SET qbo.max_requests_per_minute = 100000")
# (and its per-second pacing, qbo.max_requests_per_second, default 10, in builds that have it)
HAS_PER_SECOND=$("${PSQL[@]}" -At -c "LOAD 'pg_qbo'" -c "SELECT count(*) FROM pg_settings WHERE name = 'qbo.max_requests_per_second'")
[ "$HAS_PER_SECOND" = 1 ] && UNPACED+=("SET qbo.max_requests_per_second = 1000")
SO=$($PG_CONFIG --pkglibdir)/pg_qbo.so
note "pg_qbo $(sql "SELECT extversion FROM pg_extension WHERE extname = 'pg_qbo'"), $SO built $(date -r "$SO" '+%F %T'); qbo.max_in_flight: $([ "$HAS_IN_FLIGHT" = 1 ] && echo "$(sql "LOAD 'pg_qbo'; SHOW qbo.max_in_flight" 2>/dev/null || echo present)" || echo 'absent (sequential pager)')"

# ---------------------------------------------------------------------------------------------
# Helpers: emulator, connection, timed CALL with memory sampling, quiet point
# ---------------------------------------------------------------------------------------------
EMU_URL=""
EMU_PID=""
# start_emulator ARGS...: a fresh emulator serving realm REALM (or the realms listed in EMU_REALMS,
# if set); sets EMU_URL and EMU_PID.
start_emulator() {
  local out="$DIR/emu.${#EMU_PIDS[@]}.out" listen=127.0.0.1:0 r realm_args=()
  [ "$EMU_PORT" = 0 ] || listen=127.0.0.1:$((EMU_PORT + ${#EMU_PIDS[@]}))
  for r in ${EMU_REALMS:-$REALM}; do realm_args+=(--realm "$r"); done
  "$EMU_BIN" --listen "$listen" "${realm_args[@]}" "$@" > "$out" 2> "$out.err" &
  EMU_PID=$!
  EMU_PIDS+=("$EMU_PID")
  for _ in $(seq 1 600); do
    grep -q '^listening on ' "$out" && break
    kill -0 "$EMU_PID" 2>/dev/null || die "emulator did not start: $(cat "$out.err")"
    sleep 0.1
  done
  EMU_URL=$(sed -n 's/^listening on //p' "$out")
  [ -n "$EMU_URL" ] || die "emulator did not print its address"
}
stop_emulator() { kill "$EMU_PID" 2>/dev/null || true; wait "$EMU_PID" 2>/dev/null || true; }
emu_get() { curl -sf "$EMU_URL/__emulator/$1"; }
truth_count() { emu_get "truth/$REALM/$ENTITY" | jq length; }

# register_connection: points pg_qbo at the current emulator (new sessions) and (re)registers the
# 'default' connection with its initial refresh token (clears any cached access token).
register_connection() {
  sql "ALTER DATABASE postgres SET qbo.api_base_url = '$EMU_URL'" >/dev/null
  sql "ALTER DATABASE postgres SET qbo.token_url = '$EMU_URL/oauth2/v1/tokens/bearer'" >/dev/null
  printf '{"realm_id":"%s","client_id":"emu-client-id","client_secret":"emu-client-secret","refresh_token":"emu-refresh-token-0","environment":"sandbox"}' \
    "$REALM" > "$DIR/creds.json"
  chown postgres "$DIR/creds.json"
  sql "SELECT qbo.connect_from_file('$DIR/creds.json')" >/dev/null
}

# Private (anonymous) memory of a backend in kB: what it allocates itself, not the shared buffers
# it touches (RSS would count those). A bash read loop: no fork per sample.
anon_kb() {
  local k v _
  while read -r k v _; do
    [ "$k" = Anonymous: ] && { echo "$v"; return; }
  done 2>/dev/null < "/proc/$1/smaps_rollup"
  echo 0
}
# CPU time (user + system, all threads) of a process, in clock ticks.
cpu_ticks() {
  local f
  read -r -a f 2>/dev/null < "/proc/$1/stat" || { echo 0; return; }
  echo $(( f[13] + f[14] ))
}
TICK=$(getconf CLK_TCK)

# sample_backend APP JOB [QUERY_PREFIX [PROGRESS_SQL]]: finds the backend of application_name APP
# (running a query starting with QUERY_PREFIX, if given), takes its private memory then as idle, and
# samples it every 50 ms until the client process JOB ends, with the backend's and the emulator's
# CPU. About once a minute it notes the answer of PROGRESS_SQL, if given.
# Sets S_IDLE_MB S_PEAK_MB (peak above idle) S_CPU (backend CPU s) S_EMU_CPU (emulator CPU s).
sample_backend() {
  local app=$1 job=$2 prefix=${3:-} progress_sql=${4:-} pid="" idle peak=0 cur cpu0 cpu=0 emu0
  emu0=$(cpu_ticks "$EMU_PID")
  for _ in $(seq 1 1000); do
    pid=$(sql "SELECT pid FROM pg_stat_activity WHERE application_name = '$app' AND query LIKE '$prefix%'")
    [ -n "$pid" ] && break
    kill -0 "$job" 2>/dev/null || break
    sleep 0.01
  done
  [ -n "$pid" ] || { S_IDLE_MB=?; S_PEAK_MB=?; S_CPU=?; S_EMU_CPU=?; return 1; }
  idle=$(anon_kb "$pid")
  cpu0=$(cpu_ticks "$pid")
  local n=0
  while kill -0 "$job" 2>/dev/null; do
    cur=$(anon_kb "$pid"); [ "${cur:-0}" -gt "$peak" ] && peak=$cur
    cur=$(cpu_ticks "$pid"); [ "$cur" -gt 0 ] && cpu=$cur   # the last value seen before it exits
    n=$((n + 1))
    if [ -n "$progress_sql" ] && [ $((n % 1000)) = 0 ]; then   # about once a minute
      note "  ... still running: $(sql "$progress_sql" 2>/dev/null || true)"
    fi
    sleep 0.05
  done
  S_IDLE_MB=$(calc %.1f "$idle / 1024")
  S_PEAK_MB=$(calc %.1f "($peak > $idle ? $peak - $idle : 0) / 1024")
  S_CPU=$(calc %.1f "($cpu > $cpu0 ? $cpu - $cpu0 : 0) / $TICK")
  S_EMU_CPU=$(calc %.1f "($(cpu_ticks "$EMU_PID") - $emu0) / $TICK")
}

# run_call WINDOW_END [SQL...]: CALL qbo.run_backfill over [START, WINDOW_END) in a fresh session
# (the SQL statements run first, e.g. SET qbo.max_in_flight = 1), timed by psql's \timing, the
# backend sampled by sample_backend (idle = after LOAD 'pg_qbo', during a 0.3 s sleep). Sets R_SECS
# R_IDLE_MB R_PEAK_MB R_CPU R_EMU_CPU R_RUN R_ROWS R_INS R_UPD R_SKP R_PAGES. Dies unless the run
# succeeded.
run_call() {
  local wend=$1; shift
  local app="pg_qbo_tput_$$" out="$DIR/call.out" s before job
  local args=(-c '\timing on' -c "SET client_min_messages = warning" -c "LOAD 'pg_qbo'")
  for s in "$@"; do args+=(-c "$s"); done
  args+=(-c "SELECT pg_sleep(0.3)" -c "CALL qbo.run_backfill('$ENTITY', '$START', '$wend', $CHUNK, $PAGE)")
  before=$(sql "SELECT coalesce(max(run_id), 0) FROM qbo.runs")
  PGAPPNAME=$app "${PSQL[@]}" -At "${args[@]}" > "$out" 2>&1 &
  job=$!
  JOB_PIDS+=("$job")
  sample_backend "$app" "$job" "SELECT pg_sleep" \
    "SELECT format('%s rows, %s pages so far', coalesce(sum(rows), 0), coalesce(sum(pages), 0)) FROM qbo.run_chunks WHERE run_id = (SELECT max(run_id) FROM qbo.runs)" \
    || { wait "$job" || true; cat "$out" >&2; die "the CALL's backend was not seen"; }
  if ! wait "$job"; then cat "$out" >&2; die "CALL qbo.run_backfill failed"; fi
  R_SECS=$(awk '/^Time:/ { t = $2 } END { printf "%.3f", t / 1000 }' "$out")
  R_IDLE_MB=$S_IDLE_MB R_PEAK_MB=$S_PEAK_MB R_CPU=$S_CPU R_EMU_CPU=$S_EMU_CPU
  R_RUN=$(sql "SELECT max(run_id) FROM qbo.runs")
  [ "$R_RUN" -gt "$before" ] || die "no new run in qbo.runs"
  local status
  status=$(sql "SELECT status FROM qbo.runs WHERE run_id = $R_RUN")
  [ "$status" = succeeded ] || die "run $R_RUN ended $status: $(sql "SELECT error FROM qbo.runs WHERE run_id = $R_RUN")"
  read -r R_ROWS R_INS R_UPD R_SKP R_PAGES <<<"$(sql "SELECT sum(rows), sum(inserted), sum(updated), sum(skipped), sum(pages) FROM qbo.run_chunks WHERE run_id = $R_RUN" | tr '|' ' ')"
}

# run_python TABLE: the reference loop into TABLE, its backend sampled like the CALL's. Sets
# P_SECS P_ROWS P_INS P_UPD P_SKP P_PAGES P_PYCPU (the Python process's own CPU s) P_PEAK_MB P_CPU
# P_EMU_CPU.
run_python() {
  local app="pg_qbo_tput_py_$$" out="$DIR/py.out" job
  "$PY" bench/reference_loop.py --url "$EMU_URL" --realm "$REALM" --dsn "$DSN application_name=$app" \
    --table "$1" --entity "$ENTITY" --start "$START" --end "$END" --chunk-days "$CHUNK" \
    --page-size "$PAGE" --order "$PY_ORDER" > "$out" 2> "$out.err" &
  job=$!
  JOB_PIDS+=("$job")
  sample_backend "$app" "$job" || true
  wait "$job" || { cat "$out.err" >&2; die "reference loop failed"; }
  read -r P_SECS P_ROWS P_INS P_UPD P_SKP P_PAGES P_PYCPU <<<"$(jq -r '"\(.seconds) \(.rows) \(.inserted) \(.updated) \(.skipped) \(.pages) \(.cpu_seconds)"' "$out")"
  P_PEAK_MB=$S_PEAK_MB P_CPU=$S_CPU P_EMU_CPU=$S_EMU_CPU
}

# quiesce: wait until no autovacuum worker runs (at most 5 min), then CHECKPOINT: each timed run
# starts from the same quiet state. Prints nothing.
quiesce() {
  for _ in $(seq 1 600); do
    [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" = 0 ] && break
    sleep 0.5
  done
  sql "CHECKPOINT"
}

# check_count TABLE EXPECTED: dies unless the table holds exactly EXPECTED rows.
check_count() {
  local n
  n=$(sql "SELECT count(*) FROM $1")
  [ "$n" = "$2" ] || die "$1 holds $n rows, the emulator's truth says $2"
}
raw_table() { sql "SELECT to_regclass('raw.qb_invoices') IS NOT NULL"; }
rps() { calc %.0f "$1 / $2"; }

# ---------------------------------------------------------------------------------------------
# B1 + B4: zero-latency load (pg_qbo, Python loop, COPY floor) and the unchanged re-runs
# ---------------------------------------------------------------------------------------------
part_b1_b4() {
  local do_b1=$1 do_b4=$2
  note "B1/B4: emulator with $INVOICES invoices, throttling off, no latency"
  start_emulator --records "$ENTITY=$INVOICES" --rate-limit 100000000 --rate-limit-per-second 100000000 --max-concurrent 1000
  register_connection
  local truth
  truth=$(truth_count)
  [ "$truth" -gt 0 ] || die "emulator truth is empty"
  local load0
  load0=$(cut -d' ' -f1 /proc/loadavg)

  note "warm-up (untimed): one pg_qbo load, then TRUNCATE"
  if [ "$(raw_table)" = t ]; then sql "TRUNCATE raw.qb_invoices"; fi
  run_call "$END" "${UNPACED[@]}"
  local warm_secs=$R_SECS
  check_count raw.qb_invoices "$truth"
  if [ "$do_b1" = 1 ]; then   # the COPY floor's input: the very rows pg_qbo wrote (untimed)
    sql "COPY (SELECT realm_id, id, payload, extract_window_start_utc, extract_window_end_utc, page_number, page_size, request_payload FROM raw.qb_invoices) TO '$DIR/invoices.copy'"
  fi
  sql "TRUNCATE raw.qb_invoices"
  sql "DROP TABLE IF EXISTS bench.py_invoices, bench.copy_invoices"
  sql "CREATE TABLE bench.py_invoices (LIKE raw.qb_invoices INCLUDING ALL)"
  sql "CREATE TABLE bench.copy_invoices (LIKE raw.qb_invoices INCLUDING ALL)"

  # one result line: LABEL ROWS SECS PAGES BACKEND_CPU CLIENT_CPU EMU_CPU PEAK_MB [NOTE]
  local fmt='%-40s %8s %8s %8s %6s %8s %8s %8s %9s  %s\n'
  local head
  head=$(printf "$fmt" "" rows seconds rows/s pages "be cpu s" "cl cpu s" "emu cpu" "be mem MB" "")
  line() { printf "$fmt" "$1" "$2" "$3" "$(rps "$2" "$3")" "$4" "$5" "$6" "$7" "$8" "${9:-}"; }
  local L_A L_R1 L_R2 L_B L_BR L_C a_secs r1_secs="" b_secs c_secs=""

  note "(a) pg_qbo load"
  quiesce
  run_call "$END" "${UNPACED[@]}"
  check_count raw.qb_invoices "$truth"
  [ "$R_INS" = "$truth" ] || die "pg_qbo load inserted $R_INS rows, expected $truth"
  a_secs=$R_SECS
  L_A=$(line "(a) pg_qbo CALL qbo.run_backfill" "$R_ROWS" "$R_SECS" "$R_PAGES" "$R_CPU" - "$R_EMU_CPU" "$R_PEAK_MB" "$R_INS inserted")
  if [ "$do_b4" = 1 ]; then
    note "B4: pg_qbo re-run right after the load (CHECKPOINT only)"
    sql "CHECKPOINT"
    run_call "$END" "${UNPACED[@]}"
    check_count raw.qb_invoices "$truth"
    [ "$R_INS" = 0 ] && [ "$R_UPD" = 0 ] || die "re-run wrote rows ($R_INS inserted, $R_UPD updated)"
    r1_secs=$R_SECS
    L_R1=$(line "pg_qbo re-run right after" "$R_ROWS" "$R_SECS" "$R_PAGES" "$R_CPU" - "$R_EMU_CPU" "$R_PEAK_MB" "$R_SKP skipped")
    note "B4: pg_qbo re-run after VACUUM (ANALYZE)"
    sql "VACUUM (ANALYZE) raw.qb_invoices"
    quiesce
    run_call "$END" "${UNPACED[@]}"
    [ "$R_INS" = 0 ] && [ "$R_UPD" = 0 ] || die "re-run wrote rows ($R_INS inserted, $R_UPD updated)"
    L_R2=$(line "pg_qbo re-run after VACUUM (ANALYZE)" "$R_ROWS" "$R_SECS" "$R_PAGES" "$R_CPU" - "$R_EMU_CPU" "$R_PEAK_MB" "$R_SKP skipped")
  fi

  note "(b) Python reference loop"
  quiesce
  run_python bench.py_invoices
  check_count bench.py_invoices "$truth"
  [ "$P_INS" = "$truth" ] || die "Python loop inserted $P_INS rows, expected $truth"
  b_secs=$P_SECS
  L_B=$(line "(b) Python reference loop" "$P_ROWS" "$P_SECS" "$P_PAGES" "$P_CPU" "$P_PYCPU" "$P_EMU_CPU" "$P_PEAK_MB" "$P_INS inserted; ORDERBY $PY_ORDER")
  if [ "$do_b4" = 1 ]; then
    note "B4: Python loop re-run right after its load (CHECKPOINT only)"
    sql "CHECKPOINT"
    run_python bench.py_invoices
    check_count bench.py_invoices "$truth"
    L_BR=$(line "Python loop re-run right after" "$P_ROWS" "$P_SECS" "$P_PAGES" "$P_CPU" "$P_PYCPU" "$P_EMU_CPU" "$P_PEAK_MB" "$P_SKP skipped")
  fi

  if [ "$do_b1" = 1 ]; then
    note "(c) COPY floor"
    quiesce
    local app="pg_qbo_tput_copy_$$" job
    PGAPPNAME=$app "${PSQL[@]}" -At -c '\timing on' -c "SELECT pg_sleep(0.3)" \
      -c "COPY bench.copy_invoices (realm_id, id, payload, extract_window_start_utc, extract_window_end_utc, page_number, page_size, request_payload) FROM '$DIR/invoices.copy'" \
      > "$DIR/copy.out" 2>&1 &
    job=$!
    JOB_PIDS+=("$job")
    sample_backend "$app" "$job" "SELECT pg_sleep" || true
    wait "$job" || { cat "$DIR/copy.out" >&2; die "COPY failed"; }
    c_secs=$(awk '/^Time:/ { t = $2 } END { printf "%.3f", t / 1000 }' "$DIR/copy.out")
    check_count bench.copy_invoices "$truth"
    L_C=$(line "(c) COPY floor: one COPY ... FROM" "$truth" "$c_secs" - "$S_CPU" - - "$S_PEAK_MB" "$(( $(stat -c %s "$DIR/invoices.copy") / 1048576 )) MB file")
  fi
  stop_emulator
  local load1
  load1=$(cut -d' ' -f1 /proc/loadavg)

  echo
  echo "(be cpu s: CPU of the Postgres backend doing the work; cl cpu s: of the Python process; emu cpu: of the emulator;"
  echo " be mem MB: the backend's peak private memory above idle; 1-min load average $load0 before, $load1 after)"
  if [ "$do_b1" = 1 ]; then
    echo
    echo "=== B1: zero-latency load of $truth invoices (chunk $CHUNK days, page $PAGE; $(nproc) cores) ==="
    echo "warm-up done first, untimed: one pg_qbo load ($warm_secs s) then TRUNCATE (WAL segments, emulator payload cache)"
    echo "each contender into its own empty identical table, after CHECKPOINT (autovacuum idle)"
    [ ${#UNPACED[@]} = 0 ] || echo "pg_qbo's own pacing lifted (${UNPACED[*]}): this emulator does not throttle"
    echo "$head"
    echo "$L_A"; echo "$L_B"; echo "$L_C"
    echo "pg_qbo speed / Python speed: $(calc %.2f "$b_secs / $a_secs")x   (goal >= 2x)"
    echo "pg_qbo time / COPY time:     $(calc %.2f "$a_secs / $c_secs")    (goal <= 1.25)"
    echo "raw.qb_invoices, bench.py_invoices, bench.copy_invoices: each exactly $truth rows (emulator truth)"
  fi
  if [ "$do_b4" = 1 ]; then
    echo
    echo "=== B4: re-run over unchanged data ($truth invoices, every row skipped) ==="
    echo "$head"
    echo "$L_A"; echo "$L_R1"; echo "$L_R2"; echo "$L_B"; echo "$L_BR"
    echo "pg_qbo re-run time / first load time: $(calc %.2f "$r1_secs / $a_secs")   (goal <= 1: not slower)"
  fi
}

# ---------------------------------------------------------------------------------------------
# B2: realistic latency and Intuit's throttling
# ---------------------------------------------------------------------------------------------
# emu_summary: counts of the current emulator's request log (a fresh emulator per run):
# "total data_pages count_queries token 429s max_concurrent_seen"
emu_summary() {
  local log stats
  log=$(emu_get "requests?since=0")
  stats=$(emu_get stats)
  echo "$(jq -r '[length,
      ([.[] | select(.endpoint == "query" and .status == 200 and ((.query // "") | test("count\\(\\*\\)"; "i") | not))] | length),
      ([.[] | select(.endpoint == "query" and ((.query // "") | test("count\\(\\*\\)"; "i")))] | length),
      ([.[] | select(.endpoint == "token")] | length),
      ([.[] | select(.status == 429)] | length)] | map(tostring) | join(" ")' <<<"$log") $(jq -r .max_concurrent_seen <<<"$stats")"
}

# overhead TOTAL TOKEN ROWS: the requests that were not data pages (every request but token calls,
# less ceil(ROWS / PAGE)), as a % of the data pages (issue 15's definition)
overhead() {
  calc %.1f%% "100 * (($1 - $2) - int(($3 + $PAGE - 1) / $PAGE)) / int(($3 + $PAGE - 1) / $PAGE)"
}

part_b2() {
  local emu_args=(--records "$ENTITY=$B2_INVOICES" --latency-ms "$B2_LATENCY_MS" --latency-per-row-us "$B2_PER_ROW_US"
                  --rate-limit "$B2_RATE" --max-concurrent "$B2_CONC")
  local page_s ceiling
  page_s=$(calc %.3f "($B2_LATENCY_MS + $B2_PER_ROW_US * $PAGE / 1000) / 1000")
  ceiling=$(calc %.0f "(60 * $B2_CONC / $page_s < $B2_RATE) ? 60 * $B2_CONC / $page_s : $B2_RATE")
  local lines=() label wend extra truth tot data cnt tok t429 conc pm rpm def_pm def_429 seq_pm def_rows def_secs seq_rows seq_secs

  # pg_qbo's limiter remembers each realm's requests of the last minute, across runs: each B2 run
  # gets a realm of its own (like its fresh emulator), so no run starts with a used-up minute.
  local REALM n_run=0
  # default, sequential: evenly spread records (--no-big-burst); burst: the emulator's default
  # data, with one second holding 1001 + n/50 records (a bulk import) that only a pager reading
  # that second page by page (ties reshuffled on every request) can get, a sequential tail
  for which in default burst sequential; do
    n_run=$((n_run + 1))
    REALM=93414520000001$(printf %02d "$n_run")
    if [ "$which" = burst ]; then
      start_emulator "${emu_args[@]}"
    else
      start_emulator "${emu_args[@]}" --no-big-burst
    fi
    register_connection
    if [ "$which" = default ]; then
      wend=$END; extra=()
      truth=$(truth_count)
      label="pg_qbo, default settings"
    elif [ "$which" = burst ]; then
      wend=$END; extra=()
      truth=$(truth_count)
      label="pg_qbo, default, with a bulk second"
    else
      # the first UTC day boundary after the (B2_SEQ_PAGES x PAGE)-th record: ~B2_SEQ_PAGES pages
      read -r wend truth <<<"$(emu_get "truth/$REALM/$ENTITY" | "$PY" -c "
import json, sys, datetime as dt
lut = sorted(dt.datetime.fromisoformat(r['LastUpdatedTime']).astimezone(dt.timezone.utc) for r in json.load(sys.stdin))
n = $B2_SEQ_PAGES * $PAGE
if n >= len(lut):
    print('$END', len(lut))
else:
    end = dt.datetime.combine(lut[n - 1].date() + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    print(end.strftime('%Y-%m-%dZ'), sum(1 for t in lut if t < end))")"
      if [ "$HAS_IN_FLIGHT" = 1 ]; then
        extra=("SET qbo.max_in_flight = 1"); label="pg_qbo, SET qbo.max_in_flight = 1"
      else
        extra=(); label="pg_qbo, this build (sequential pager)"
      fi
    fi
    note "B2: $label over [$START, $wend): $truth invoices, latency $B2_LATENCY_MS ms + $B2_PER_ROW_US us/row"
    if [ "$(raw_table)" = t ]; then sql "TRUNCATE raw.qb_invoices"; fi
    quiesce
    run_call "$wend" "${extra[@]}"
    check_count raw.qb_invoices "$truth"
    read -r tot data cnt tok t429 conc <<<"$(emu_summary)"
    stop_emulator
    pm=$(calc %.1f "$data * 60 / $R_SECS")
    rpm=$(calc %.1f "$tot * 60 / $R_SECS")
    case $which in default) def_pm=$pm def_429=$t429 def_rows=$truth def_secs=$R_SECS ;; sequential) seq_pm=$pm seq_rows=$truth seq_secs=$R_SECS ;; esac
    lines+=("$(printf '%-36s %-11s %7s %8s %6s %6s %5s %9s %8s %4s %4s %7s %8s %9s' "$label" "$wend" "$truth" "$R_SECS" "$data" "$cnt" "$tot" "$pm" "$rpm" "$t429" "$conc" \
      "$(calc %.1f "100 * $pm / $ceiling")%" "$(calc %.1f "100 * $truth * 60 / $R_SECS / ($ceiling * $PAGE)")%" "$(overhead "$tot" "$tok" "$truth")")")
  done
  echo
  echo "=== B2: latency $B2_LATENCY_MS ms + $B2_PER_ROW_US us/row (a $PAGE-row page: $page_s s), rate limit $B2_RATE/min, $B2_CONC in flight; $B2_INVOICES invoices ==="
  echo "ceiling: min($B2_RATE, 60 x $B2_CONC / $page_s) = $ceiling data pages/min; goal (issue 15): rows >= 95 % of it with overhead <= 5 %, 0 x 429; bench/b2_bound.py: what one window can reach"
  echo "pages: data pages answered 200 (short ones included); counts: count(*) queries; reqs: every API request in the"
  echo "emulator's log (data, counts, token, any 429); conc: most requests in flight at once; % ceil: pages/min / $ceiling;"
  echo "rows %: rows/min / ($ceiling x $PAGE), the same ceiling in rows (a short page costs less than 1.5 s);"
  echo "overhead: API requests but token calls, less the data pages ceil(rows / $PAGE), as a % of those data pages. A fresh emulator per run."
  printf '%-36s %-11s %7s %8s %6s %6s %5s %9s %8s %4s %4s %7s %8s %9s\n' run "window end" rows seconds pages counts reqs pages/min reqs/min 429s conc "% ceil" "rows %" overhead
  printf '%s\n' "${lines[@]}"
  echo "pg_qbo default (evenly spread data): $(calc %.1f "100 * $def_pm / $ceiling") % of the ceiling in pages, $(calc %.1f "100 * $def_rows * 60 / $def_secs / ($ceiling * $PAGE)") % in rows (goal >= 95 %, overhead <= 5 %); $(calc %.2f "($def_rows / $def_secs) / ($seq_rows / $seq_secs)")x the sequential pager's rows/s"
  [ "$def_429" = 0 ] || echo "WARNING: pg_qbo's default run received $def_429 x 429 (it must receive none)"
  [ "$HAS_IN_FLIGHT" = 1 ] || echo "note: this build has no qbo.max_in_flight: both runs use its sequential pager"
}

# ---------------------------------------------------------------------------------------------
# B6: a small company over a long window (issue 15: requests win over speed)
# ---------------------------------------------------------------------------------------------
part_b6() {
  local emu_args=(--records "$ENTITY=$B6_INVOICES" --data-from "$B6_DATA_FROM" --data-to "$B6_DATA_TO" --no-big-burst
                  --latency-ms "$B2_LATENCY_MS" --latency-per-row-us "$B2_PER_ROW_US" --rate-limit "$B2_RATE" --max-concurrent "$B2_CONC")
  local wend lines=() truth tot data cnt tok t429 conc label n_run=0 REALM chunk q secs
  wend=$(date -u -d tomorrow +%Y-%m-%dZ)
  for chunk in 7 36500 loop; do
    n_run=$((n_run + 1))
    REALM=93414520000006$(printf %02d "$n_run")
    start_emulator "${emu_args[@]}"
    register_connection
    truth=$(truth_count)
    if [ "$(raw_table)" = t ]; then sql "TRUNCATE raw.qb_invoices"; fi
    quiesce
    if [ "$chunk" = loop ]; then
      label="offset loop, one window"
      sql "DROP TABLE IF EXISTS bench_b6; CREATE TABLE bench_b6 (LIKE raw.qb_invoices INCLUDING ALL)"
      START=$B6_FROM END=$wend CHUNK=36500 PY_ORDER=id run_python bench_b6
      check_count bench_b6 "$truth"
      secs=$P_SECS
    else
      label="pg_qbo, chunk_size $chunk"
      START=$B6_FROM CHUNK=$chunk run_call "$wend"
      check_count raw.qb_invoices "$truth"
      secs=$R_SECS
    fi
    read -r tot data cnt tok t429 conc <<<"$(emu_summary)"
    stop_emulator
    q=$((tot - tok))
    [ "$chunk" = loop ] && { LOOP_Q=$q; LOOP_SECS=$secs; }
    lines+=("$(printf '%-28s %7s %8s %6s %6s %8s %4s %9s' "$label" "$truth" "$secs" "$data" "$cnt" "$q" "$t429" "$(overhead "$tot" "$tok" "$truth")")")
  done
  echo
  echo "=== B6: a small company, $B6_INVOICES invoices updated in [$B6_DATA_FROM, $B6_DATA_TO), backfilled over [$B6_FROM, $wend); B2's latency ==="
  echo "requests: API requests but token calls; goal: pg_qbo's <= the offset loop's + 5 %, in <= 1.5 x its time"
  printf '%-28s %7s %8s %6s %6s %8s %4s %9s\n' run rows seconds pages counts requests 429s overhead
  printf '%s\n' "${lines[@]}"
  echo "(the loop: $LOOP_Q requests in $LOOP_SECS s; pg_qbo's rows above are to be read against them)"
}

# ---------------------------------------------------------------------------------------------
# B3: backend private memory against the number of records
# ---------------------------------------------------------------------------------------------
part_b3() {
  local lines=() n truth
  for n in $B3_SIZES; do
    note "B3: emulator with $n invoices; warming its payload cache (untimed)"
    start_emulator --records "$ENTITY=$n" --rate-limit 100000000 --rate-limit-per-second 100000000 --max-concurrent 1000
    register_connection
    truth=$(truth_count)
    "$PY" bench/reference_loop.py --fetch-only --url "$EMU_URL" --realm "$REALM" --entity "$ENTITY" \
      --start "$START" --end "$END" --chunk-days "$CHUNK" --page-size "$PAGE" >/dev/null 2>&1 || die "warming the emulator failed"
    if [ "$(raw_table)" = t ]; then sql "TRUNCATE raw.qb_invoices"; fi
    quiesce
    note "B3: pg_qbo load of $truth invoices"
    run_call "$END" "${UNPACED[@]}"
    check_count raw.qb_invoices "$truth"
    stop_emulator
    note "B3: $truth invoices: $R_SECS s, $(rps "$R_ROWS" "$R_SECS") rows/s, peak $R_PEAK_MB MB above idle ($R_IDLE_MB MB)"
    lines+=("$(printf '%10s %7s %9s %9s %9s %12s %14s' "$truth" "$R_PAGES" "$R_SECS" "$(rps "$R_ROWS" "$R_SECS")" "$R_CPU" "$R_IDLE_MB" "$R_PEAK_MB")")
    sql "TRUNCATE raw.qb_invoices"
  done
  echo
  echo "=== B3: peak private (Anonymous) memory of the backend doing the CALL, sampled every 50 ms (chunk $CHUNK, page $PAGE) ==="
  [ ${#UNPACED[@]} = 0 ] || echo "pg_qbo's own pacing lifted (${UNPACED[*]}): this emulator does not throttle"
  printf '%10s %7s %9s %9s %9s %12s %14s\n' invoices pages seconds rows/s "be cpu s" "idle MB" "peak-idle MB"
  printf '%s\n' "${lines[@]}"
}

# ---------------------------------------------------------------------------------------------
# B5: many companies at once
# ---------------------------------------------------------------------------------------------
# register_realms REALM...: points pg_qbo at the current emulator and registers one connection per
# realm, b5_1, b5_2, ... (each with the emulator's refresh token; its limits are per realm).
register_realms() {
  local i=0 r
  sql "ALTER DATABASE postgres SET qbo.api_base_url = '$EMU_URL'" >/dev/null
  sql "ALTER DATABASE postgres SET qbo.token_url = '$EMU_URL/oauth2/v1/tokens/bearer'" >/dev/null
  for r in "$@"; do
    i=$((i + 1))
    printf '{"realm_id":"%s","client_id":"emu-client-id","client_secret":"emu-client-secret","refresh_token":"emu-refresh-token-0","environment":"sandbox"}' \
      "$r" > "$DIR/creds_b5_$i.json"
    chown postgres "$DIR/creds_b5_$i.json"
    sql "SELECT qbo.connect_from_file('$DIR/creds_b5_$i.json', 'b5_$i')" >/dev/null
  done
}

# busy_ticks: CPU time the whole machine spent busy (all cores; user, nice, system, irq, softirq,
# steal), in clock ticks, from /proc/stat.
busy_ticks() {
  local _ u n s idle io irq sirq st
  read -r _ u n s idle io irq sirq st _ < /proc/stat
  echo $(( u + n + s + irq + sirq + st ))
}

# run_group K [SQL...]: K psql sessions, session i running CALL qbo.run_backfill over [START, END)
# with connection b5_i (the SQL statements first), all waiting for one common instant
# (pg_sleep_until) and so starting together; samples every 50 ms the CPU of their backends, of the
# emulator, of postgres' background processes and of the whole machine. Dies unless every run
# succeeded. Sets G_WALL (s, the slowest session's CALL), G_SECS[i], G_RUN[i],
# G_ROWS[i], G_PAGES[i], G_CPU[i] (backend CPU s), G_EMU_CPU, G_BG (text: CPU s of each
# background process), G_BG_CPU, G_MACHINE_CPU (busy core-seconds of the machine), G_LOAD0/G_LOAD1
# (1-min load average before and after).
run_group() {
  local k=$1; shift
  local i s at tag="pg_qbo_b5_$$" jobs=() pids=() c0=() c1=() bgpids=() bgnames=() bg0=() bg1=()
  local pid name emu0 m0 n=0
  local at_ns
  read -r at_ns at <<<"$(sql "SELECT (extract(epoch FROM t) * 1e9)::bigint || ' ' || t::text FROM (SELECT date_trunc('milliseconds', clock_timestamp() + interval '3 s') t) s")"
  for i in $(seq 1 "$k"); do
    local args=(-c '\timing on' -c "SET client_min_messages = warning" -c "LOAD 'pg_qbo'")
    for s in "$@"; do args+=(-c "$s"); done
    args+=(-c "SELECT pg_sleep_until('$at')" -c "CALL qbo.run_backfill('$ENTITY', '$START', '$END', $CHUNK, $PAGE, connection => 'b5_$i')")
    PGAPPNAME="${tag}_$i" "${PSQL[@]}" -At "${args[@]}" > "$DIR/b5_call_$i.out" 2>&1 &
    jobs[i]=$!
    JOB_PIDS+=("${jobs[i]}")
  done
  # the backends, once each waits for the instant
  for _ in $(seq 1 250); do
    n=0
    for i in $(seq 1 "$k"); do
      [ -n "${pids[i]:-}" ] && { n=$((n + 1)); continue; }
      pids[i]=$(sql "SELECT pid FROM pg_stat_activity WHERE application_name = '${tag}_$i' AND query LIKE 'SELECT pg_sleep_until%'")
      [ -n "${pids[i]}" ] && n=$((n + 1))
    done
    [ "$n" = "$k" ] && break
    sleep 0.01
  done
  [ "$n" = "$k" ] || die "B5: only $n of the $k sessions reached the start (raise the 3 s head start?)"
  while IFS='|' read -r pid name; do
    bgpids+=("$pid"); bgnames+=("$name")
  done < <(sql "SELECT pid, backend_type FROM pg_stat_activity WHERE backend_type IN ('walwriter', 'checkpointer', 'background writer', 'autovacuum launcher', 'logical replication launcher') ORDER BY backend_type")
  # the baselines at the common instant, when the CALLs start
  while [ "$(date +%s%N)" -lt "$at_ns" ]; do sleep 0.005; done
  for i in $(seq 1 "$k"); do c0[i]=$(cpu_ticks "${pids[i]}"); c1[i]=${c0[i]}; done
  for i in "${!bgpids[@]}"; do bg0[i]=$(cpu_ticks "${bgpids[i]}"); done
  local avcpu=0
  emu0=$(cpu_ticks "$EMU_PID")
  G_LOAD0=$(cut -d' ' -f1 /proc/loadavg)
  m0=$(busy_ticks)
  local running=1 cur
  declare -A av0=() av1=()
  n=0
  while [ "$running" = 1 ]; do
    running=0
    for i in $(seq 1 "$k"); do
      if kill -0 "${jobs[i]}" 2>/dev/null; then
        running=1
        cur=$(cpu_ticks "${pids[i]}"); [ "$cur" -gt 0 ] && c1[i]=$cur
      fi
    done
    n=$((n + 1))
    if [ $((n % 20)) = 0 ]; then   # about every second: autovacuum workers come and go
      for pid in $(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"); do
        cur=$(cpu_ticks "$pid")
        [ -n "${av0[$pid]:-}" ] || av0[$pid]=$cur
        av1[$pid]=$cur
      done
    fi
    sleep 0.05
  done
  G_MACHINE_CPU=$(calc %.1f "($(busy_ticks) - $m0) / $TICK")
  G_EMU_CPU=$(calc %.1f "($(cpu_ticks "$EMU_PID") - $emu0) / $TICK")
  G_LOAD1=$(cut -d' ' -f1 /proc/loadavg)
  G_BG=""; G_BG_CPU=0
  for i in "${!bgpids[@]}"; do
    bg1[i]=$(calc %.1f "($(cpu_ticks "${bgpids[i]}") - ${bg0[i]}) / $TICK")
    G_BG+="${G_BG:+, }${bgnames[i]} ${bg1[i]}"
    G_BG_CPU=$(calc %.1f "$G_BG_CPU + ${bg1[i]}")
  done
  for pid in "${!av1[@]}"; do avcpu=$((avcpu + ${av1[$pid]} - ${av0[$pid]})); done
  G_BG+=", autovacuum workers $(calc %.1f "$avcpu / $TICK") (${#av1[@]} seen, sampled each second)"
  G_BG_CPU=$(calc %.1f "$G_BG_CPU + $avcpu / $TICK")
  G_WALL=0
  for i in $(seq 1 "$k"); do
    wait "${jobs[i]}" || { cat "$DIR/b5_call_$i.out" >&2; kill -0 "$EMU_PID" 2>/dev/null || echo "the emulator (pid $EMU_PID) is gone: $(tail -5 "$DIR"/emu.*.out.err)" >&2; die "B5: CALL of session $i failed"; }
    G_SECS[i]=$(awk '/^Time:/ { t = $2 } END { printf "%.3f", t / 1000 }' "$DIR/b5_call_$i.out")
    G_RUN[i]=$(awk '/^[0-9]+$/ { id = $1 } END { print id }' "$DIR/b5_call_$i.out")
    [ -n "${G_RUN[i]}" ] || { cat "$DIR/b5_call_$i.out" >&2; die "B5: no run id from session $i"; }
    local status
    status=$(sql "SELECT status FROM qbo.runs WHERE run_id = ${G_RUN[i]}")
    [ "$status" = succeeded ] || die "B5: run ${G_RUN[i]} ended $status: $(sql "SELECT error FROM qbo.runs WHERE run_id = ${G_RUN[i]}")"
    read -r G_ROWS[i] G_PAGES[i] <<<"$(sql "SELECT sum(rows), sum(pages) FROM qbo.run_chunks WHERE run_id = ${G_RUN[i]}" | tr '|' ' ')"
    G_CPU[i]=$(calc %.1f "(${c1[i]} - ${c0[i]}) / $TICK")
    G_WALL=$(calc %.3f "(${G_SECS[i]} > $G_WALL) ? ${G_SECS[i]} : $G_WALL")
  done
}

# check_realm REALM TRUTH: dies unless raw.qb_invoices holds exactly TRUTH rows of REALM.
check_realm() {
  local n
  n=$(sql "SELECT count(*) FROM raw.qb_invoices WHERE realm_id = '$1'")
  [ "$n" = "$2" ] || die "raw.qb_invoices holds $n rows of realm $1, the emulator's truth says $2"
}

# realm_summary REALM: counts of the current emulator's request log for one realm:
# "total data_pages count_queries 429s"
realm_summary() {
  emu_get "requests?since=0" | jq -r --arg r "$1" '[.[] | select(.realm == $r)] | [length,
      ([.[] | select(.endpoint == "query" and .status == 200 and ((.query // "") | test("count\\(\\*\\)"; "i") | not))] | length),
      ([.[] | select(.endpoint == "query" and ((.query // "") | test("count\\(\\*\\)"; "i")))] | length),
      ([.[] | select(.status == 429)] | length)] | map(tostring) | join(" ")'
}

part_b5() {
  local k=$B5_REALMS i realms=() truths=() lines=() fmt head
  local page_s ceiling ceil_rps
  page_s=$(calc %.3f "($B2_LATENCY_MS + $B2_PER_ROW_US * $PAGE / 1000) / 1000")
  ceiling=$(calc %.0f "(60 * $B2_CONC / $page_s < $B2_RATE) ? 60 * $B2_CONC / $page_s : $B2_RATE")
  ceil_rps=$(calc %.1f "$ceiling * $PAGE / 60")
  fmt='%-22s %-17s %8s %8s %8s %6s %9s %7s %8s\n'
  head=$(printf "$fmt" run realm rows seconds rows/s pages pages/min "% ceil" "be cpu s")
  b5line() {   # LABEL REALM ROWS SECS PAGES CPU
    printf "$fmt" "$1" "$2" "$3" "$4" "$(rps "$3" "$4")" "$5" "$(calc %.1f "$5 * 60 / $4")" \
      "$(calc %.1f "100 * $5 * 60 / $4 / $ceiling")%" "$6"
  }

  # ---- zero latency: realm 1 alone, then all k at once
  for i in $(seq 1 "$k"); do realms[i]=93414520000005$(printf %02d "$i"); done
  note "B5: one emulator serving $k realms of $B5_INVOICES invoices each (default data), no latency, throttling off"
  EMU_REALMS="${realms[*]}" start_emulator --records "$ENTITY=$B5_INVOICES" --rate-limit 100000000 --rate-limit-per-second 100000000 --max-concurrent 1000
  register_realms "${realms[@]}"
  for i in $(seq 1 "$k"); do
    truths[i]=$(emu_get "truth/${realms[i]}/$ENTITY" | jq length)
    [ "${truths[i]}" -gt 0 ] || die "emulator truth of realm ${realms[i]} is empty"
  done
  note "B5 warm-up (untimed): the $k realms at once, then TRUNCATE"
  if [ "$(raw_table)" = t ]; then sql "TRUNCATE raw.qb_invoices"; fi
  run_group "$k" "${UNPACED[@]}"
  for i in $(seq 1 "$k"); do check_realm "${realms[i]}" "${truths[i]}"; done
  sql "TRUNCATE raw.qb_invoices"

  note "B5: realm 1 alone (the reference)"
  quiesce
  run_group 1 "${UNPACED[@]}"
  check_realm "${realms[1]}" "${truths[1]}"
  local alone_rows=${G_ROWS[1]} alone_secs=${G_SECS[1]} alone_rps alone_where
  alone_rps=$(calc %.1f "${G_ROWS[1]} / ${G_SECS[1]}")
  lines+=("$(b5line "alone (reference)" "${realms[1]}" "${G_ROWS[1]}" "${G_SECS[1]}" "${G_PAGES[1]}" "${G_CPU[1]}")")
  alone_where="backend ${G_CPU[1]} s, emulator $G_EMU_CPU s, postgres background $G_BG_CPU s ($G_BG); machine busy $G_MACHINE_CPU of $(calc %.1f "$(nproc) * ${G_SECS[1]}") core-s; load $G_LOAD0 -> $G_LOAD1"
  sql "TRUNCATE raw.qb_invoices"

  note "B5: the $k realms at once"
  quiesce
  run_group "$k" "${UNPACED[@]}"
  local agg_rows=0 agg_pages=0 be_cpu=0 be_list=""
  for i in $(seq 1 "$k"); do
    check_realm "${realms[i]}" "${truths[i]}"
    agg_rows=$((agg_rows + G_ROWS[i])); agg_pages=$((agg_pages + G_PAGES[i]))
    be_cpu=$(calc %.1f "$be_cpu + ${G_CPU[i]}"); be_list+="${be_list:+ + }${G_CPU[i]}"
    lines+=("$(b5line "$k at once" "${realms[i]}" "${G_ROWS[i]}" "${G_SECS[i]}" "${G_PAGES[i]}" "${G_CPU[i]}")")
  done
  lines+=("$(b5line "$k at once: aggregate" "(slowest session)" "$agg_rows" "$G_WALL" "$agg_pages" "$be_cpu")")
  local zl_rps cores_s other
  zl_rps=$(calc %.1f "$agg_rows / $G_WALL")
  cores_s=$(calc %.1f "$(nproc) * $G_WALL")
  other=$(calc %.1f "$G_MACHINE_CPU - $be_cpu - $G_EMU_CPU - $G_BG_CPU")
  stop_emulator
  echo
  echo "=== B5: $k companies at once, zero latency ($B5_INVOICES invoices each, emulator default data; chunk $CHUNK, page $PAGE; $(nproc) cores) ==="
  echo "warm-up first, untimed: the $k realms at once, then TRUNCATE; each timed run after CHECKPOINT (autovacuum idle), into an empty raw.qb_invoices"
  [ ${#UNPACED[@]} = 0 ] || echo "pg_qbo's own pacing lifted (${UNPACED[*]}): this emulator does not throttle"
  echo "$head"
  printf '%s\n' "${lines[@]}"
  echo "aggregate / alone: $(calc %.0f "$zl_rps") / $(calc %.0f "$alone_rps") rows/s = $(calc %.1f "100 * $zl_rps / $alone_rps") %   (goal >= 90 %)"
  echo "where the time goes, alone: $alone_where"
  echo "where the time goes, $k at once ($G_WALL s wall = $cores_s core-s on $(nproc) cores): machine busy $G_MACHINE_CPU core-s ($(calc %.0f "100 * $G_MACHINE_CPU / $cores_s") %):"
  echo "  backends $be_list = $be_cpu s; emulator $G_EMU_CPU s; postgres background $G_BG_CPU s ($G_BG);"
  echo "  everything else (psql clients, this script's sampling, other users' processes) $other s; 1-min load average $G_LOAD0 before, $G_LOAD1 after"
  echo "every realm's rows in raw.qb_invoices: exactly the emulator's truth (${truths[*]})"

  # ---- B2's latency model, fresh realms per data set
  local data n_set=0 emu_args t429_total tot data_p cnt t429
  lines=()
  local lfmt='%-8s %-22s %8s %8s %8s %6s %6s %5s %4s %9s %7s\n'
  for data in even default; do
    n_set=$((n_set + 1))
    for i in $(seq 0 "$k"); do realms[i]=9341452000000$((5 + n_set))$(printf %02d "$i"); done
    emu_args=(--records "$ENTITY=$B5_INVOICES" --latency-ms "$B2_LATENCY_MS" --latency-per-row-us "$B2_PER_ROW_US"
              --rate-limit "$B2_RATE" --max-concurrent "$B2_CONC")
    [ "$data" = even ] && emu_args+=(--no-big-burst)
    # realm 0 alone first (the reference at latency), then realms 1..k at once: each run with
    # realms of its own, so no run starts with a minute another one used up
    EMU_REALMS="${realms[*]}" start_emulator "${emu_args[@]}"
    for i in $(seq 0 "$k"); do
      truths[i]=$(emu_get "truth/${realms[i]}/$ENTITY" | jq length)
      [ "${truths[i]:-0}" -gt 0 ] || die "emulator truth of realm ${realms[i]} is empty: $(tail -5 "$DIR"/emu.*.out.err)"
    done
    note "B5: realm ${realms[0]} alone, latency $B2_LATENCY_MS ms + $B2_PER_ROW_US us/row, $data data"
    register_realms "${realms[0]}"
    sql "TRUNCATE raw.qb_invoices"
    quiesce
    run_group 1
    check_realm "${realms[0]}" "${truths[0]}"
    read -r tot data_p cnt t429 <<<"$(realm_summary "${realms[0]}")"
    local alone_pm
    alone_pm=$(calc %.1f "$data_p * 60 / ${G_SECS[1]}")
    lines+=("$(printf "$lfmt" "$data" "${realms[0]} alone" "${G_ROWS[1]}" "${G_SECS[1]}" "$(rps "${G_ROWS[1]}" "${G_SECS[1]}")" "$data_p" "$cnt" "$tot" "$t429" \
      "$alone_pm" "$(calc %.1f "100 * $alone_pm / $ceiling")%")")
    note "B5: $k realms at once, latency $B2_LATENCY_MS ms + $B2_PER_ROW_US us/row, $data data"
    register_realms "${realms[@]:1}"
    sql "TRUNCATE raw.qb_invoices"
    quiesce
    run_group "$k"
    local agg_rows=0 agg_pages=0 conc
    t429_total=0
    for i in $(seq 1 "$k"); do
      check_realm "${realms[i]}" "${truths[i]}"
      read -r tot data_p cnt t429 <<<"$(realm_summary "${realms[i]}")"
      agg_rows=$((agg_rows + G_ROWS[i])); agg_pages=$((agg_pages + data_p)); t429_total=$((t429_total + t429))
      lines+=("$(printf "$lfmt" "$data" "${realms[i]}" "${G_ROWS[i]}" "${G_SECS[i]}" "$(rps "${G_ROWS[i]}" "${G_SECS[i]}")" "$data_p" "$cnt" "$tot" "$t429" \
        "$(calc %.1f "$data_p * 60 / ${G_SECS[i]}")" "$(calc %.1f "100 * $data_p * 60 / ${G_SECS[i]} / $ceiling")%")")
    done
    conc=$(emu_get stats | jq -r .max_concurrent_seen)
    local agg_rps goal_ref
    agg_rps=$(calc %.1f "$agg_rows / $G_WALL")
    goal_ref=$(calc %.1f "($k * $ceil_rps < $zl_rps) ? $k * $ceil_rps : $zl_rps")
    lines+=("$(printf "$lfmt" "$data" "aggregate" "$agg_rows" "$G_WALL" "$(rps "$agg_rows" "$G_WALL")" "$agg_pages" - - "$t429_total" \
      "$(calc %.1f "$agg_pages * 60 / $G_WALL")" "$(calc %.1f "100 * $agg_pages * 60 / $G_WALL / ($k * $ceiling)")%")")
    lines+=("$(echo "$data: aggregate $(calc %.0f "$agg_rps") rows/s = $(calc %.1f "100 * $agg_rps / $goal_ref") % of min($k x $(calc %.0f "$ceil_rps"), $(calc %.0f "$zl_rps")) = $(calc %.0f "$goal_ref") rows/s (goal >= 90 %); $(calc %.1f "100 * $agg_pages * 60 / $G_WALL / $k / $alone_pm") % of $k x realm 0 alone's pages/min; most in flight at once in one realm: $conc; load $G_LOAD0 -> $G_LOAD1")")
    stop_emulator
  done
  echo
  echo "=== B5: $k companies at once, latency $B2_LATENCY_MS ms + $B2_PER_ROW_US us/row (a $PAGE-row page: $page_s s), $B2_RATE/min and $B2_CONC in flight per realm; $B5_INVOICES invoices each ==="
  echo "one realm's ceiling: min($B2_RATE, 60 x $B2_CONC / $page_s) = $ceiling data pages/min = $(calc %.0f "$ceil_rps") rows/s; pg_qbo's default pacing; a fresh emulator and fresh realms per data set"
  echo "even: --no-big-burst; default: the emulator's default data (one bulk second of 1001 + n/50 records per realm)"
  echo "pages: data pages answered 200; counts: count(*) queries; reqs: the realm's requests in the emulator's log (token requests carry no realm); % ceil: pages/min / $ceiling (aggregate: / $k x $ceiling)"
  printf "$lfmt" data realm rows seconds rows/s pages counts reqs 429s pages/min "% ceil"
  printf '%s\n' "${lines[@]}"
}

# ---------------------------------------------------------------------------------------------
# Main, in one block: bash parses it whole before running it, so editing this file during a run
# does not derail the run.
{
  echo "pg_qbo throughput benchmark ($PARTS): $(nproc) cores, $("$PG_BIN/psql" --version | awk '{print $3}'), $(date '+%F %T')"
  if want b1 || want b4; then
    part_b1_b4 "$(want b1 && echo 1 || echo 0)" "$(want b4 && echo 1 || echo 0)"
  fi
  want b2 && part_b2
  want b3 && part_b3
  want b5 && part_b5
  want b6 && part_b6
  exit 0
}
