#!/usr/bin/env bash
# pg_qbo sync benchmark (B7, issue 16). A benchmark, not a test: it prints figures and asserts no
# goal, but it fails loudly (non-zero exit) when something did not run: a sync that did not
# succeed, or a raw table that does not end equal to the emulator's truth.
#
#   bash bench/sync.sh
#
# A company of B7_INVOICES (default 100000) invoices and every other entity populated with the
# emulator's default data (60 records of each name list, 600 of most transactions...), behind
# issue 15's latency model (a 1000-row page takes 1.5 s: --latency-ms 300 --latency-per-row-us
# 1200) and Intuit's limits (--rate-limit 500 --max-concurrent 10):
#   1. the first CALL qbo.run_sync() of every entity: its whole history, read by a backfill each;
#   2. a full re-backfill of the company (qbo.sync_state emptied, the same CALL again: every
#      entity's whole history read once more, every record skipped);
#   3. 24 simulated hours: each moves QuickBooks' clock (the emulator's) one hour on, changes
#      B7_CHANGED_PER_HOUR records (default 51: 0.05 % of the company) with the emulator's "mix"
#      mutation (creates, updates, voids, inactivations, hard deletes) over the entities CDC serves,
#      hard-deletes B7_DELETED_PER_HOUR transactions (default 5: 0.005 %), then CALL qbo.run_sync().
#      The entities CDC does not serve (JournalCode, TaxAgency, TaxCode, TaxRate, TimeActivity:
#      300 of the company's records) get their 0.05 % share too, which rounds to no change an hour.
# Requests are counted in the emulator's log (what Intuit would meter), per endpoint: cdc, query
# (pages and counts), token. Seconds: psql's \timing of each CALL. At the end every raw table must
# equal the truth: its live rows the records QuickBooks has, its rows marked deleted only records
# QuickBooks deleted.
# Goals (issue 16): the 24 syncs cost at most 1/5 of the re-backfill's requests; a steady-state
# sync of every CDC-capable entity is one CDC request (plus a token refresh when due).
#
# B7_SCOPE=all (default) syncs every entity the emulator serves; B7_SCOPE=cdc only those CDC
# serves. The entities CDC does not serve (TaxCode, TaxRate, TimeActivity) cost a query each
# when due, at most every qbo.sync_non_cdc_interval_ms (default 12 h, on QuickBooks' clock: hours
# 12 and 24 here); B7_NON_CDC_INTERVAL (e.g. 0: at every sync) sets it for the run.
# Environment: SKIP_INSTALL=1 uses the installed extension as is (otherwise cargo pgrx install
# --release); B7_INVOICES, B7_CHANGED_PER_HOUR, B7_DELETED_PER_HOUR, B7_HOURS (24); B7_LATENCY_MS
# (300), B7_PER_ROW_US (1200); SYNC_DIR (/tmp/pg_qbo_syncbench), SYNC_PORT (25395).
set -euo pipefail
cd "$(dirname "$0")/.."

B7_INVOICES=${B7_INVOICES:-100000}
B7_CHANGED_PER_HOUR=${B7_CHANGED_PER_HOUR:-51}
B7_DELETED_PER_HOUR=${B7_DELETED_PER_HOUR:-5}
B7_HOURS=${B7_HOURS:-24}
B7_SCOPE=${B7_SCOPE:-all}
B7_NON_CDC_INTERVAL=${B7_NON_CDC_INTERVAL:-}
case "$B7_SCOPE" in all|cdc) ;; *) echo "B7_SCOPE must be all (every entity the emulator serves) or cdc (those CDC serves)" >&2; exit 2 ;; esac
B7_LATENCY_MS=${B7_LATENCY_MS:-300}
B7_PER_ROW_US=${B7_PER_ROW_US:-1200}
DIR=${SYNC_DIR:-/tmp/pg_qbo_syncbench}
PORT=${SYNC_PORT:-25395}
REALM=9341452000000001
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PG_BIN=$("$PG_CONFIG" --bindir)
export PG_BIN
EMU_BIN=${QBO_EMULATOR_BIN:-${CARGO_TARGET_DIR:-target}/release/qbo-emulator}
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres)
export PGOPTIONS="-c client_min_messages=warning"

note() { echo "[$(date +%T)] $*" >&2; }
die() { echo "sync.sh: FAILED: $*" >&2; exit 1; }
sql() { "${PSQL[@]}" -At -c "$1"; }

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  note "building and installing pg_qbo (release)"
  cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null
  cargo build --release -p qbo-emulator >/dev/null 2>&1
fi
[ -x "$EMU_BIN" ] || die "no emulator at $EMU_BIN (cargo build --release -p qbo-emulator)"

EMU_PID=""
cleanup() {
  [ -n "$EMU_PID" ] && { kill "$EMU_PID" 2>/dev/null || true; wait "$EMU_PID" 2>/dev/null || true; }
  bash scripts/cluster.sh stop "$DIR" >/dev/null 2>&1 || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$DIR"
}
bash scripts/cluster.sh stop "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR"
trap cleanup EXIT
trap 'exit 130' INT TERM
bash scripts/cluster.sh start "$DIR" "$PORT" "shared_buffers = '512MB'" "max_wal_size = '8GB'" >/dev/null
sql "CREATE EXTENSION pg_qbo" >/dev/null

out="$DIR/emu.out"
"$EMU_BIN" --listen 127.0.0.1:0 --realm "$REALM" --records "Invoice=$B7_INVOICES" \
  --latency-ms "$B7_LATENCY_MS" --latency-per-row-us "$B7_PER_ROW_US" --rate-limit 500 --max-concurrent 10 \
  > "$out" 2> "$out.err" &
EMU_PID=$!
for _ in $(seq 1 600); do grep -q '^listening on ' "$out" && break; sleep 0.1; done
EMU_URL=$(sed -n 's/^listening on //p' "$out")
[ -n "$EMU_URL" ] || die "emulator did not start: $(cat "$out.err")"
emu_get() { curl -sf "$EMU_URL/__emulator/$1"; }
emu_post() { curl -sf -X POST -H 'Content-Type: application/json' -d "$2" "$EMU_URL/__emulator/$1" >/dev/null || die "POST $1 $2"; }
sql "ALTER DATABASE postgres SET qbo.api_base_url = '$EMU_URL'" >/dev/null
sql "ALTER DATABASE postgres SET qbo.token_url = '$EMU_URL/oauth2/v1/tokens/bearer'" >/dev/null
printf '{"realm_id":"%s","client_id":"emu-client-id","client_secret":"emu-client-secret","refresh_token":"emu-refresh-token-0","environment":"sandbox"}' \
  "$REALM" > "$DIR/creds.json"
chown postgres "$DIR/creds.json"
sql "SELECT qbo.connect_from_file('$DIR/creds.json')" >/dev/null
[ -z "$B7_NON_CDC_INTERVAL" ] ||
  "${PSQL[@]}" -c "LOAD 'pg_qbo'" -c "ALTER DATABASE postgres SET qbo.sync_non_cdc_interval_ms = '$B7_NON_CDC_INTERVAL'" >/dev/null
NON_CDC_INTERVAL=$("${PSQL[@]}" -At -c "LOAD 'pg_qbo'" -c "SHOW qbo.sync_non_cdc_interval_ms")

# every entity pg_qbo knows that the emulator serves (it answers the truth of it)
ENTITIES=""; CDC_LIST=""; MISSING=""; RECORDS=0
for e in $(sql "SELECT string_agg(entity, ' ' ORDER BY entity) FROM qbo.entities"); do
  if n=$(emu_get "truth/$REALM/$e" 2>/dev/null | jq length 2>/dev/null) && [ -n "$n" ]; then
    cdc=$(sql "SELECT cdc FROM qbo.entities WHERE entity = '$e'")
    [ "$B7_SCOPE" = cdc ] && [ "$cdc" != t ] && { MISSING="$MISSING $e"; continue; }
    ENTITIES="$ENTITIES $e"; RECORDS=$((RECORDS + n))
    [ "$cdc" = t ] && CDC_LIST="$CDC_LIST $e"
  else
    MISSING="$MISSING $e"
  fi
done
ENTITIES=${ENTITIES# }
CDC_ENTITIES=$(printf '%s\n' $CDC_LIST | jq -R . | jq -sc .)
SQL_ENTITIES="ARRAY['$(echo "$ENTITIES" | sed "s/ /', '/g")']"
[ -z "$MISSING" ] || note "left out (not served by the emulator, or by CDC with B7_SCOPE=cdc):$MISSING"


# last_seq: the emulator's last logged request; counts SINCE: "cdc query token" requests after it
last_seq() { emu_get "requests?since=0" | jq '(last // {seq: 0}).seq'; }
counts() {
  emu_get "requests?since=$1" |
    jq -r '[([.[] | select(.endpoint == "cdc")] | length), ([.[] | select(.endpoint == "query")] | length), ([.[] | select(.endpoint == "token")] | length), ([.[] | select(.status == 429)] | length)] | @tsv'
}
# timed_sync: CALL qbo.run_sync(); prints its seconds (psql's \timing) and checks it succeeded
timed_sync() {
  local t
  t=$("${PSQL[@]}" -c '\timing on' -c "CALL qbo.run_sync($SQL_ENTITIES)" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1)
  [ "$(sql "SELECT status FROM qbo.runs WHERE kind = 'sync' ORDER BY run_id DESC LIMIT 1")" = succeeded ] ||
    die "a sync did not succeed: $(sql "SELECT error FROM qbo.runs WHERE kind = 'sync' ORDER BY run_id DESC LIMIT 1")"
  awk "BEGIN { printf \"%.3f\", $t / 1000 }"
}

note "$(nproc) cores, $("$PG_BIN/psql" --version | awk '{print $3}'), pg_qbo $(sql "SELECT extversion FROM pg_extension WHERE extname = 'pg_qbo'"); a company of $RECORDS records ($B7_INVOICES invoices)"

seq0=$(last_seq); first_secs=$(timed_sync); read -r f_cdc f_q f_tok f_429 <<<"$(counts "$seq0")"
note "first sync: $f_q queries, $f_cdc cdc, $f_tok token in $first_secs s"
sql "DELETE FROM qbo.sync_state" >/dev/null
seq0=$(last_seq); re_secs=$(timed_sync); read -r r_cdc r_q r_tok r_429 <<<"$(counts "$seq0")"
note "re-backfill: $r_q queries, $r_cdc cdc, $r_tok token in $re_secs s"

lines=()
day_cdc=0; day_q=0; day_tok=0; day_429=0; day_secs=0
for h in $(seq 1 "$B7_HOURS"); do
  emu_post clock "{\"offset_seconds\": $((h * 3600))}"
  emu_post mutate "{\"op\": \"mix\", \"count\": $B7_CHANGED_PER_HOUR, \"realm\": \"$REALM\", \"entities\": $CDC_ENTITIES}"
  left=$B7_DELETED_PER_HOUR
  for e in Invoice Bill Payment; do
    n=$(( (left + 1) / 2 )); [ "$e" = Payment ] && n=$left
    [ "$n" -gt 0 ] && emu_post mutate "{\"op\": \"delete\", \"count\": $n, \"realm\": \"$REALM\", \"entity\": \"$e\"}"
    left=$((left - n))
  done
  seq0=$(last_seq)
  secs=$(timed_sync)
  read -r c q t x <<<"$(counts "$seq0")"
  run=$(sql "SELECT max(run_id) FROM qbo.runs WHERE kind = 'sync'")
  read -r changed deleted <<<"$(sql "SELECT sum(rows), sum(deleted) FROM qbo.run_chunks WHERE run_id = $run" | tr '|' ' ')"
  day_cdc=$((day_cdc + c)); day_q=$((day_q + q)); day_tok=$((day_tok + t)); day_429=$((day_429 + x))
  day_secs=$(awk "BEGIN { print $day_secs + $secs }")
  lines+=("$(printf '%4s %5s %7s %7s %6s %8s %8s %8s' "$h" "$c" "$q" "$t" "$((c + q + t))" "$secs" "$changed" "$deleted")")
done

# every raw table equal to the truth
bad=""
for e in $ENTITIES; do
  t=$(sql "SELECT raw_table FROM qbo.entities WHERE entity = '$e'")
  truth=$(emu_get "truth/$REALM/$e")
  live_truth=$(jq '[.[] | select(.deleted != true)] | length' <<<"$truth")
  live_raw=$(sql "SELECT count(*) FROM $t WHERE realm_id = '$REALM' AND deleted_at_utc IS NULL")
  tokens_truth=$(jq -r '[.[] | select(.deleted != true) | "\(.Id):\(.SyncToken)"] | sort | join(",")' <<<"$truth" | md5sum | cut -c1-12)
  tokens_raw=$(sql "SELECT string_agg(id || ':' || (payload->>'SyncToken'), ',' ORDER BY id || ':' || (payload->>'SyncToken')) FROM $t WHERE realm_id = '$REALM' AND deleted_at_utc IS NULL" | md5sum | cut -c1-12)
  deleted_raw=$(sql "SELECT count(*) FROM $t WHERE realm_id = '$REALM' AND deleted_at_utc IS NOT NULL")
  deleted_wrong=$(sql "SELECT count(*) FROM $t WHERE realm_id = '$REALM' AND deleted_at_utc IS NOT NULL AND id <> ALL ('{$(jq -r '[.[] | select(.deleted == true) | .Id] | join(",")' <<<"$truth")}'::text[])")
  if [ "$live_truth" != "$live_raw" ] || [ "$tokens_truth" != "$tokens_raw" ] || [ "$deleted_wrong" != 0 ]; then
    bad="$bad $e(live $live_raw/$live_truth, deleted $deleted_raw, wrongly deleted $deleted_wrong)"
  fi
done
[ -z "$bad" ] || die "raw differs from the truth:$bad"

day=$((day_cdc + day_q + day_tok))
re=$((r_cdc + r_q + r_tok))
steady=$(printf '%s\n' "${lines[@]}" | awk 'NR > 1 { print $5 }' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
echo
echo "=== B7: $B7_HOURS hourly syncs of a company of $RECORDS records ($B7_INVOICES invoices) against a re-backfill; latency ${B7_LATENCY_MS} ms + ${B7_PER_ROW_US} us/row ==="
echo "entities (B7_SCOPE=$B7_SCOPE): $ENTITIES${MISSING:+ (left out, not served by the emulator or, with B7_SCOPE=cdc, by CDC:$MISSING)}"
echo "first sync (every entity's whole history): $((f_cdc + f_q + f_tok)) requests ($f_q queries, $f_cdc cdc, $f_tok token), $first_secs s"
echo "re-backfill (the same, every record skipped): $re requests ($r_q queries, $r_cdc cdc, $r_tok token), $re_secs s"
echo "per hour: $B7_CHANGED_PER_HOUR records changed over the CDC entities (emulator mix), $B7_DELETED_PER_HOUR transactions hard-deleted, QuickBooks' clock one hour on"
printf '%4s %5s %7s %7s %6s %8s %8s %8s\n' hour cdc queries token total seconds changed deleted
printf '%s\n' "${lines[@]}"
echo "the day: $day requests ($day_cdc cdc, $day_q queries, $day_tok token; $day_429 x 429), $(printf %.1f "$day_secs") s"
echo "(QuickBooks' clock moves, the emulator's 1 h tokens do not expire here: a real hourly sync refreshes its token about once per sync, $((day - day_tok + B7_HOURS)) requests for the day with one refresh an hour)"
echo "the day / the re-backfill: $(awk "BEGIN { printf \"%.3f\", $day / $re }") ($(awk "BEGIN { printf \"%.3f\", ($day - $day_tok + $B7_HOURS) / $re }") with a refresh an hour; goal <= 0.200); median requests of hours 2..$B7_HOURS: $steady"
echo "metered by Intuit (its OAuth endpoints are not): the day $((day_cdc + day_q)) requests, the re-backfill $((r_cdc + r_q)): $(awk "BEGIN { printf \"%.3f\", ($day_cdc + $day_q) / ($r_cdc + $r_q) }"); qbo.sync_non_cdc_interval_ms = $NON_CDC_INTERVAL"
echo "every raw table equals the truth (live rows and SyncTokens; rows marked deleted only for records QuickBooks deleted)"
