#!/usr/bin/env bash
# The upgrade test: a database made by an older pg_qbo, with real data, updated with
# ALTER EXTENSION pg_qbo UPDATE to the version of this tree, must equal a fresh install (schema,
# privileges, comments, ownership, extension membership), keep its data, work, and have 0.1.0's
# privilege hole closed. Run as root (scripts/test.sh runs it); never touches the system
# PostgreSQL: everything is installed into a relocated copy of it in a temporary directory.
#
#   bash scripts/upgrade-test.sh
#
# Environment (all optional):
#   UPGRADE_FROM        commits to update from, space-separated (default: the 0.1.0 release,
#                       e024112, a pre-release build that called itself 0.1.0, then the 0.2.0,
#                       0.3.0, 0.4.0, 0.5.0 and 0.6.0 releases).
#                       Each is built from `git archive` of that commit, so the repository must
#                       have its history (not a shallow clone).
#   UPGRADE_E2E         1 (default) also runs e2e suites on databases created at 0.1.0 and updated
#                       (PG_QBO_TEST_FROM_VERSION), once, after the first commit; 0 skips them.
#   UPGRADE_E2E_TESTS   those suites (default: "backfill roles attacks").
#   UPGRADE_PORT        port of the throw-away cluster (default 25531).
#   UPGRADE_CACHE       directory kept between runs for the old versions' sources and builds
#                       (default: inside the temporary directory, removed at exit).
#   CARGO_TARGET_DIR    where the current build is (as for cargo); QBO_EMULATOR_BIN the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
export CARGO_TERM_COLOR=never

# 0.1.0 is commit 4c9cb67 (tag v0.1.0). Named by its full hash, not by the tag: a CI clone may
# carry no tags.
V010=4c9cb672ef8afd4e1aebff0458c960118ba33671
# e024112: the last commit before 0.2.0, whose builds carried 0.2.0's objects as version 0.1.0;
# the update must bring those databases to the same state.
E024112=e024112a6a84dd73c85a6a2264303dc5ad4dae32
# 0.2.0 is commit b01518f (tag v0.2.0).
V020=b01518f60a0a3d7562c2fd047b3f699cfe579f77
# 0.3.0 is commit 05b4eca (tag v0.3.0).
V030=05b4eca2fdb8736fab13310490e70518eaf1ef1d
# 0.4.0 is commit f9b4e4b (tag v0.4.0).
V040=f9b4e4b63879c75621156cfc7c99dc3325cd8d93
# 0.5.0 is commit 899bab8 (tag v0.5.0).
V050=899bab8fe26bcd27b9e697e97f7f891eea61aec9
# 0.6.0 is commit 1890415 (tag v0.6.0).
V060=189041524bf30864373c40433df0f6fcadf9b0e2
FROM_COMMITS=${UPGRADE_FROM:-$V010 $E024112 $V020 $V030 $V040 $V050 $V060}
PORT=${UPGRADE_PORT:-25531}
E2E=${UPGRADE_E2E:-1}
E2E_TESTS=${UPGRADE_E2E_TESTS:-backfill roles attacks}
SYS_PG=/usr/lib/postgresql/15
SYS_SHARE=/usr/share/postgresql/15
CUR_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
EMU_BIN=${QBO_EMULATOR_BIN:-$CUR_TARGET/release/qbo-emulator}
FROM_TS=2025-01-01T00:00:00Z
TO_TS=2025-09-11T00:00:00Z
REALM1=9341452000000001
REALM2=9341452000000002

WORK=$(mktemp -d /tmp/pg_qbo-upgrade.XXXXXX)
chmod 755 "$WORK" # the postgres OS user runs the relocated binaries and the cluster below it
CACHE=${UPGRADE_CACHE:-$WORK/cache}
mkdir -p "$CACHE"
R=$WORK/pg # the relocated PostgreSQL: $R/usr/lib/postgresql/15, $R/usr/share/postgresql/15
PG_BIN=$R/usr/lib/postgresql/15/bin
export PG_BIN
CLUSTER=$WORK/cluster
EMU_PID=

passed=0
failed=0
failures=()
ok() {
  passed=$((passed + 1))
  echo "ok   - $*"
}
fail() {
  failed=$((failed + 1))
  failures+=("$1")
  echo "FAIL - $*"
}
# check NAME EXPECTED ACTUAL: passes when equal, else prints both
check() {
  if [ "$2" == "$3" ]; then ok "$1"; else fail "$1: expected [$2], got [$3]"; fi
}
# die MESSAGE: a failure that stops the test (counted, then the summary line is printed at exit)
die() {
  fail "aborted: $*"
  exit 1
}
elapsed() { echo "$(($(date +%s) - T0)) s"; }

summary() {
  echo
  echo "upgrade: $passed passed, $failed failed ($(elapsed))"
  if [ "$failed" -gt 0 ]; then printf 'failed: %s\n' "${failures[@]}"; fi
}
cleanup() {
  local rc=$?
  set +e # everything below runs, whatever fails
  if [ "$rc" -ne 0 ] && [ -z "${SUMMARY_DONE:-}" ]; then
    [ "$failed" -gt 0 ] || fail "aborted (exit status $rc), see the output above"
    summary
  fi
  if [ -n "$EMU_PID" ]; then
    kill "$EMU_PID" 2>/dev/null
    wait "$EMU_PID" 2>/dev/null
  fi
  if [ -f "$CLUSTER/data/postmaster.pid" ]; then
    bash scripts/cluster.sh stop "$CLUSTER" || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$CLUSTER/server.log" ]; then
    echo "---- last lines of the server log ----"
    tail -n 40 "$CLUSTER/server.log" || true
  fi
  rm -rf "$WORK"
  echo "upgrade-test: took $(elapsed)"
}
trap cleanup EXIT

psql_() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres "$@"; }
# q DB SQL: one value per line, fields separated by |
q() { PGOPTIONS='-c client_min_messages=warning' psql_ -At -d "$1" -c "$2"; }
# q_as ROLE DB SQL
q_as() { PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$1" -At -d "$2" -c "$3"; }

emu_get() { curl -fsS --max-time 60 "$EMU_URL$1"; }
emu_post() { curl -fsS --max-time 60 -H 'Content-Type: application/json' -d "$2" "$EMU_URL$1" >/dev/null; }

# ---------------------------------------------------------------------------------------------
# Building and installing
# ---------------------------------------------------------------------------------------------
relocate_pg() {
  rm -rf "$R"
  mkdir -p "$R/usr/lib/postgresql" "$R/usr/share/postgresql"
  cp -a "$SYS_PG" "$R/usr/lib/postgresql/"
  cp -a "$SYS_SHARE" "$R/usr/share/postgresql/"
  ln -s /usr/include "$R/usr/include" # pgrx's build reads the server headers from here
  # whatever pg_qbo the system has is not part of this test
  rm -f "$R/usr/lib/postgresql/15/lib/pg_qbo.so" "$R"/usr/share/postgresql/15/extension/pg_qbo[.-]*
  [ "$("$PG_BIN/pg_config" --sharedir)" == "$R/usr/share/postgresql/15" ] ||
    die "the relocated pg_config reports sharedir $("$PG_BIN/pg_config" --sharedir)"
}

# install_from DIR TARGET_DIR: cargo pgrx install of the crate in DIR into the relocated copy
install_from() {
  (cd "$1" && CARGO_TARGET_DIR=$2 cargo pgrx install --pg-config "$PG_BIN/pg_config" >"$WORK/install.log" 2>&1) || {
    tail -n 60 "$WORK/install.log"
    die "cargo pgrx install in $1 failed"
  }
}

# build_old COMMIT: the source of COMMIT (git archive) built and installed into the relocated copy
build_old() {
  local commit=$1 src=$CACHE/src-$1
  git cat-file -e "$commit^{commit}" 2>/dev/null ||
    die "commit $commit is not in this repository (a shallow clone? fetch its history)"
  if [ ! -f "$src/Cargo.toml" ]; then
    rm -rf "$src" && mkdir -p "$src"
    git archive "$commit" | tar -x -C "$src"
  fi
  local t=$(date +%s)
  # a target directory per old version: with one shared by all, cargo found the unit of a later
  # version fresh and left the library of the version built before it in place (0.2.0 was once
  # installed from e024112's library); the dependencies are compiled once per version
  install_from "$src" "$CACHE/target-$commit"
  echo "built and installed $commit in $(($(date +%s) - t)) s"
}

# ---------------------------------------------------------------------------------------------
# Cluster and emulator
# ---------------------------------------------------------------------------------------------
start_cluster() {
  local conf=("log_min_messages = warning")
  if [ -f "$R/usr/lib/postgresql/15/lib/pg_cron.so" ]; then
    conf+=("shared_preload_libraries = 'pg_cron'" "cron.database_name = 'e2e_cron'" "cron.host = '127.0.0.1'")
  fi
  bash scripts/cluster.sh start "$CLUSTER" "$PORT" "${conf[@]}"
}
stop_cluster() { bash scripts/cluster.sh stop "$CLUSTER"; }

start_emulator() {
  [ -x "$EMU_BIN" ] || (cd "$ROOT" && cargo build --release -p qbo-emulator)
  : >"$WORK/emulator.out" # exists before the emulator's shell opens it
  # versions before 0.3.0 do not pace themselves to Intuit's 10 requests a second: lifted here
  "$EMU_BIN" --listen 127.0.0.1:0 --seed 91 --rate-limit-per-second 1000000 >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
  EMU_PID=$!
  EMU_URL=
  for _ in $(seq 1 200); do # at most 20 s for the ready line
    EMU_URL=$(sed -n 's/^listening on //p' "$WORK/emulator.out")
    [ -n "$EMU_URL" ] && break
    kill -0 "$EMU_PID" 2>/dev/null || die "the emulator exited: $(cat "$WORK/emulator.err")"
    sleep 0.1
  done
  [ -n "$EMU_URL" ] || die "the emulator printed no ready line in 20 s"
}
stop_emulator() {
  kill "$EMU_PID" 2>/dev/null && wait "$EMU_PID" 2>/dev/null || true
  EMU_PID=
}

# setup_db DB: a database pointed at the emulator, pg_qbo created (default version), the
# connections default (REALM1) and second (REALM2) registered from credentials files
setup_db() {
  local db=$1
  PGOPTIONS='-c client_min_messages=warning' psql_ -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" \
    -c "ALTER DATABASE $db SET qbo.api_base_url = '$EMU_URL'" \
    -c "ALTER DATABASE $db SET qbo.token_url = '$EMU_URL/oauth2/v1/tokens/bearer'" \
    -c "ALTER DATABASE $db SET qbo.backoff_base_ms = 5" \
    -c "ALTER DATABASE $db SET qbo.backoff_cap_ms = 40" \
    -c "ALTER DATABASE $db SET qbo.http_timeout_ms = 3000"
  q "$db" "CREATE EXTENSION pg_qbo"
  local conn realm
  for conn in default second; do
    realm=$REALM1
    [ "$conn" == second ] && realm=$REALM2
    printf '{"realm_id":"%s","client_id":"emu-client-id","client_secret":"emu-client-secret","refresh_token":"emu-refresh-token-0","environment":"sandbox"}' \
      "$realm" >"$CLUSTER/creds-$db-$conn.json"
    chown postgres "$CLUSTER/creds-$db-$conn.json"
    chmod 600 "$CLUSTER/creds-$db-$conn.json"
    q "$db" "SELECT qbo.connect_from_file('$CLUSTER/creds-$db-$conn.json', '$conn')" >/dev/null
  done
}

# raw_vs_truth DB TABLE ENTITY REALM: "equal N" when raw.TABLE holds exactly the emulator's live
# records of REALM (Id and SyncToken), else the differences
raw_vs_truth() {
  emu_get "/__emulator/truth/$4/$3" >"$WORK/truth.json"
  q "$1" "SELECT id || ' ' || (payload->>'SyncToken') FROM raw.$2 WHERE realm_id = '$4'" >"$WORK/raw.txt"
  python3 - "$WORK/truth.json" "$WORK/raw.txt" <<'EOF'
import json, sys
truth = {r["Id"]: r["SyncToken"] for r in json.load(open(sys.argv[1])) if not r.get("deleted")}
raw = dict(l.split(" ", 1) for l in open(sys.argv[2]).read().split("\n") if l)
if truth == raw:
    print(f"equal {len(raw)}")
else:
    miss = sorted(set(truth) - set(raw))[:10]
    extra = sorted(set(raw) - set(truth))[:10]
    stale = sorted(k for k in set(raw) & set(truth) if raw[k] != truth[k])[:10]
    print(f"differ: truth {len(truth)} raw {len(raw)} missing {miss} extra {extra} stale {stale}")
EOF
}

# fingerprint DB COLS: counts and md5 of every row of the data pg_qbo keeps (secrets hashed, never
# shown). The ledger's rows are hashed over the columns each table had at the first call (saved in
# COLS.<table>): columns an update adds (0.3.0: qbo.runs.requests_*) are new data, not a change.
fingerprint() {
  q "$1" "
    SELECT 'raw.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'raw' AND c.relkind = 'r' ORDER BY 1" | while read -r t; do
    echo "$t $(q "$1" "SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, E'\n' ORDER BY t.realm_id, t.id), '')) FROM $t t")"
  done
  local t table cols
  for t in "qbo.runs ORDER BY run_id" "qbo.run_chunks ORDER BY run_id, chunk" \
    "qbo.run_pages ORDER BY run_id, chunk, page" "qbo._connections ORDER BY name"; do
    table=${t%% *}
    [ -f "$2.$table" ] || q "$1" "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
                                    WHERE attrelid = '$table'::regclass AND attnum > 0 AND NOT attisdropped" >"$2.$table"
    cols=$(cat "$2.$table")
    echo "$table $(q "$1" "SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, E'\n' ${t#* }), '')) FROM (SELECT $cols FROM $table) x")"
  done
}

# schema_of DB OUT: everything that makes up pg_qbo's schema in DB, normalised: pg_dump
# --schema-only of qbo and raw from a copy where pg_qbo's members are detached from the extension
# (pg_dump leaves members out otherwise), then catalog listings of extension membership,
# owners, ACLs (functions, relations, columns, schemas, default ACLs), initial privileges and
# comments.
schema_of() {
  local db=$1 out=$2 copy=${1}_schema_copy
  PGOPTIONS='-c client_min_messages=warning' psql_ -d postgres -c "DROP DATABASE IF EXISTS $copy" -c "CREATE DATABASE $copy TEMPLATE $db"
  {
    echo "== extension"
    q "$copy" "SELECT extname, extversion, extowner::regrole, extnamespace::regnamespace, extrelocatable,
                      extconfig::regclass[], extcondition FROM pg_extension WHERE extname = 'pg_qbo'"
    echo "== members (pg_depend deptype e)"
    q "$copy" "SELECT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d
                 JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
                WHERE e.extname = 'pg_qbo' AND d.deptype = 'e' ORDER BY 1"
    echo "== schemas"
    q "$copy" "SELECT nspname, nspowner::regrole, nspacl FROM pg_namespace WHERE nspname IN ('qbo', 'raw') ORDER BY 1"
    echo "== relations"
    q "$copy" "SELECT c.oid::regclass::text AS name, c.relkind, c.relowner::regrole, c.relacl, c.reloptions, c.relpersistence,
                      obj_description(c.oid, 'pg_class')
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname IN ('qbo', 'raw') ORDER BY name"
    echo "== columns"
    q "$copy" "SELECT a.attrelid::regclass::text AS name, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                      a.attacl, col_description(a.attrelid, a.attnum)
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname IN ('qbo', 'raw') AND a.attnum > 0 AND NOT a.attisdropped ORDER BY name, a.attnum"
    echo "== functions"
    q "$copy" "SELECT p.oid::regprocedure::text AS name, p.prokind, p.proowner::regrole, p.proacl, p.prosecdef, p.proconfig,
                      p.provolatile, p.proparallel, p.prosrc, p.probin, obj_description(p.oid, 'pg_proc')
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname IN ('qbo', 'raw') ORDER BY name"
    echo "== default privileges"
    q "$copy" "SELECT d.defaclrole::regrole::text AS r, d.defaclnamespace::regnamespace::text AS n, d.defaclobjtype, d.defaclacl
                 FROM pg_default_acl d ORDER BY r, n, 3"
    echo "== initial privileges (pg_init_privs)"
    q "$copy" "SELECT pg_describe_object(i.classoid, i.objoid, 0), i.objsubid, i.privtype, i.initprivs
                 FROM pg_init_privs i
                WHERE i.privtype = 'e' OR i.objoid IN (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                                       WHERE n.nspname IN ('qbo', 'raw'))
                ORDER BY 1, 2"
  } >"$out"
  # detach the members, then dump
  q "$copy" "SELECT format('ALTER EXTENSION pg_qbo DROP %s %s;', upper(i.type), i.identity)
               FROM pg_depend d JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid,
                    LATERAL pg_identify_object(d.classid, d.objid, d.objsubid) i
              WHERE e.extname = 'pg_qbo' AND d.deptype = 'e'" >"$WORK/detach.sql"
  psql_ -d "$copy" -f "$WORK/detach.sql" >/dev/null
  echo "== pg_dump --schema-only -n qbo -n raw (members detached)" >>"$out"
  "$PG_BIN/pg_dump" -h 127.0.0.1 -p "$PORT" -U postgres --schema-only -n qbo -n raw "$copy" |
    grep -v -E '^(--|SET |SELECT pg_catalog.set_config|\\restrict |\\unrestrict |$)' >>"$out"
  psql_ -d postgres -c "DROP DATABASE $copy"
}

# ---------------------------------------------------------------------------------------------
# One update: from COMMIT to this tree
# ---------------------------------------------------------------------------------------------
OP=qbo_upg_op
RO=qbo_upg_ro
ATK=qbo_upg_atk

upgrade_from() {
  local commit=$1 short=${1:0:7}
  echo
  echo "==> update from $short to this tree ($(elapsed))"
  relocate_pg
  build_old "$commit"
  rm -rf "$CLUSTER" # a new cluster for each commit
  start_cluster
  start_emulator
  echo "cluster on port $PORT, emulator at $EMU_URL"
  PGOPTIONS='-c client_min_messages=warning' psql_ -d postgres -c "DROP ROLE IF EXISTS $OP" -c "DROP ROLE IF EXISTS $RO" \
    -c "CREATE ROLE $OP LOGIN" -c "CREATE ROLE $RO LOGIN"

  # --- the old version, with data --------------------------------------------------------------
  setup_db upg
  local old_version
  old_version=$(q upg "SELECT extversion FROM pg_extension WHERE extname = 'pg_qbo'")
  echo "installed $short as pg_qbo $old_version"
  # the same steps in the same order as in the fresh database below: a superuser's first backfill
  # creates raw (and comments it), then the roles are granted, then raw.qb_invoices is created
  q upg "CALL qbo.run_backfill('Customer', '$FROM_TS', '$TO_TS', 30, 20)" >/dev/null
  q upg "SELECT qbo.grant_operator('$OP'); SELECT qbo.grant_reader('$RO')" >/dev/null
  # an operator of 0.1.0 backfills (0.1.0 let operators use every connection); in a build that
  # already has connection grants, the superuser does
  local who=$OP
  [ "$(q upg "SELECT to_regprocedure('qbo.grant_connection(text,name)') IS NULL")" == t ] || who=postgres
  q_as "$who" upg "SELECT count(*) FROM qbo.backfill('Invoice', '$FROM_TS', '$TO_TS', chunk_size => 60, page_size => 100)" >/dev/null
  # a run that fails half way (the 6th query answers 500, no retries): to resume after the update
  emu_post /__emulator/faults '{"spec":"500json@nth=6"}'
  psql_ -d upg -c "SET qbo.max_retries = 0" \
    -c "CALL qbo.run_backfill('Invoice', '$FROM_TS', '$TO_TS', 30, 50, connection => 'second')" \
    >"$WORK/failed-run.out" 2>&1 && die "the run meant to fail succeeded"
  emu_post /__emulator/faults '{"spec":""}'
  local failed_run
  failed_run=$(q upg "SELECT max(run_id) FROM qbo.runs WHERE status = 'failed'")
  [ -n "$failed_run" ] || die "no failed run: $(cat "$WORK/failed-run.out")"
  echo "old version: $(q upg "SELECT string_agg(entity || ' ' || status, ', ' ORDER BY run_id) FROM qbo.runs")"
  fingerprint upg "$WORK/columns-$short" >"$WORK/before.txt"
  cat "$WORK/before.txt"
  # what the old version granted the operator on raw
  q upg "SELECT string_agg(DISTINCT privilege_type, ',' ORDER BY privilege_type) FROM information_schema.role_table_grants
          WHERE grantee = '$OP' AND table_schema = 'raw'" >"$WORK/op-raw-before.txt"
  echo "operator's privileges on raw before the update: $(cat "$WORK/op-raw-before.txt")"

  # --- install this tree and update ---------------------------------------------------------------
  stop_cluster # the library file is replaced: no backend keeps the old one mapped
  local t=$(date +%s)
  install_from "$ROOT" "$CUR_TARGET"
  local new_version
  new_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
  echo "installed this tree ($new_version) in $(($(date +%s) - t)) s"
  start_cluster
  psql_ -d upg -c "ALTER EXTENSION pg_qbo UPDATE" >"$WORK/update.out" 2>&1 ||
    die "ALTER EXTENSION pg_qbo UPDATE failed: $(cat "$WORK/update.out")"
  sed 's/^/  update: /' "$WORK/update.out"
  check "$short: extversion after ALTER EXTENSION pg_qbo UPDATE" "$new_version" \
    "$(q upg "SELECT extversion FROM pg_extension WHERE extname = 'pg_qbo'")"

  # --- (b) data preserved -------------------------------------------------------------------------------
  fingerprint upg "$WORK/columns-$short" >"$WORK/after.txt"
  if diff -u "$WORK/before.txt" "$WORK/after.txt" >"$WORK/data.diff"; then
    ok "$short: data preserved (raw rows, runs, chunks, pages, connections: counts and md5 identical)"
  else
    fail "$short: data changed by the update:"
    cat "$WORK/data.diff"
  fi

  # --- raw tables made before the update gain 0.6.0's columns on their first use ------------------
  # (after (b): the new columns are new data; before (a): a fresh install's raw tables have them)
  q upg "CALL qbo.run_backfill('Customer', '1999-01-01T00:00:00Z', '1999-01-02T00:00:00Z', 1, 20)" >/dev/null
  q upg "CALL qbo.run_backfill('Invoice', '1999-01-01T00:00:00Z', '1999-01-02T00:00:00Z', 1, 20)" >/dev/null
  check "$short: raw tables made before the update gain last_updated_utc (filled from the payloads) and deleted_at_utc on first use" \
    "0 0" "$(q upg "SELECT (SELECT count(*) FROM raw.qb_customers WHERE last_updated_utc IS DISTINCT FROM (payload->'MetaData'->>'LastUpdatedTime')::timestamptz OR deleted_at_utc IS NOT NULL)
                      || ' ' || (SELECT count(*) FROM raw.qb_invoices WHERE last_updated_utc IS DISTINCT FROM (payload->'MetaData'->>'LastUpdatedTime')::timestamptz OR deleted_at_utc IS NOT NULL)")"

  # --- (a) the same schema as a fresh install -------------------------------------------------------
  setup_db fresh
  q fresh "CALL qbo.run_backfill('Customer', '$FROM_TS', '$TO_TS', 30, 20)" >/dev/null
  q fresh "SELECT qbo.grant_operator('$OP'); SELECT qbo.grant_reader('$RO')" >/dev/null
  q fresh "CALL qbo.run_backfill('Invoice', '$FROM_TS', '$TO_TS', 60, 100)" >/dev/null
  schema_of upg "$WORK/schema-upg.txt"
  schema_of fresh "$WORK/schema-fresh.txt"
  if diff -u "$WORK/schema-fresh.txt" "$WORK/schema-upg.txt" >"$WORK/schema.diff"; then
    ok "$short: updated schema equals a fresh $new_version install ($(wc -l <"$WORK/schema-upg.txt") lines compared: pg_dump, members, owners, ACLs, init privs, comments)"
  else
    fail "$short: updated schema differs from a fresh $new_version install (--- fresh, +++ updated):"
    cat "$WORK/schema.diff"
  fi

  # --- (d) the privilege hole is closed ---------------------------------------------------------------
  check "$short: operator keeps SELECT and has no write privilege on raw tables" \
    "SELECT" "$(q upg "SELECT coalesce(string_agg(DISTINCT privilege_type, ',' ORDER BY privilege_type), 'none')
                        FROM information_schema.role_table_grants WHERE grantee = '$OP' AND table_schema = 'raw'")"
  check "$short: operator's default privileges on future raw tables are SELECT only" \
    "SELECT" "$(q upg "SELECT string_agg(a.privilege_type, ',') FROM pg_default_acl d, aclexplode(d.defaclacl) a
                        WHERE d.defaclnamespace = 'raw'::regnamespace AND a.grantee = '$OP'::regrole")"
  local out
  out=$(q_as "$OP" upg "UPDATE raw.qb_invoices SET page_size = 1" 2>&1 || true)
  check "$short: operator's UPDATE of raw.qb_invoices is refused" \
    "ERROR:  permission denied for table qb_invoices" "$out"
  check "$short: qbo.connections shows the operator no connection before qbo.grant_connection" \
    "0" "$(q_as "$OP" upg "SELECT count(*) FROM qbo.connections")"
  out=$(q_as "$OP" upg "SELECT count(*) FROM qbo.backfill('Customer', '$FROM_TS', '$TO_TS')" 2>&1 || true)
  check "$short: operator's backfill without qbo.grant_connection is refused" \
    "ERROR:  qbo.backfill: role \"$OP\" may not run backfills of connection \"default\": a superuser grants it with SELECT qbo.grant_connection('default', '$OP')" \
    "$out"

  # --- (c) it works: a new backfill with the stored connection, a resume of a failed 0.1.0 run ----------
  emu_post /__emulator/mutate "{\"realm\":\"$REALM1\",\"entity\":\"Invoice\",\"op\":\"update\",\"count\":7}"
  q upg "SELECT qbo.grant_connection('default', '$OP')" >/dev/null
  check "$short: qbo.connections shows the granted connection to the operator" \
    "default" "$(q_as "$OP" upg "SELECT string_agg(name, ',') FROM qbo.connections")"
  out=$(q_as "$OP" upg "SELECT sum(updated) FROM qbo.backfill('Invoice', '$FROM_TS', now() + interval '1 day', chunk_size => 60, page_size => 100)" 2>&1 || true)
  check "$short: operator's new backfill with the stored tokens updates the 7 changed invoices" "7" "$out"
  check "$short: raw.qb_invoices of realm 1 equals the emulator's truth after it" \
    "equal 600" "$(raw_vs_truth upg qb_invoices Invoice "$REALM1")"
  out=$(q upg "SELECT count(*) FROM qbo.resume($failed_run)" 2>&1 || true)
  out="$(q upg "SELECT status FROM qbo.runs WHERE run_id = $failed_run")$([[ $out =~ ^[0-9]+$ ]] || echo " ($out)")"
  check "$short: qbo.resume of the run that failed before the update succeeds" "succeeded" "$out"
  check "$short: raw.qb_invoices of realm 2 equals the emulator's truth after the resume" \
    "equal 600" "$(raw_vs_truth upg qb_invoices Invoice "$REALM2")"

  # --- (d) an attack on the updated database: functions planted in public never run in a
  # superuser's backfill (tests/e2e/tests/attacks.rs), with a positive control --------------------------
  PGOPTIONS='-c client_min_messages=warning' psql_ -d postgres -c "DROP ROLE IF EXISTS $ATK" -c "CREATE ROLE $ATK LOGIN"
  q upg "GRANT CREATE ON SCHEMA public TO $ATK"
  local body="INSERT INTO public.atk_marker (who, what) VALUES (current_user, 'fired');
              BEGIN EXECUTE 'ALTER ROLE $ATK SUPERUSER';
                    INSERT INTO public.atk_marker (who, what) VALUES (current_user, 'made $ATK a superuser');
              EXCEPTION WHEN OTHERS THEN NULL; END;"
  q_as "$ATK" upg "
    CREATE TABLE public.atk_marker (who name, what text);
    GRANT INSERT, SELECT ON public.atk_marker TO PUBLIC;
    CREATE FUNCTION public.format(text, int, int) RETURNS text LANGUAGE plpgsql AS \$f\$
      BEGIN $body RETURN pg_catalog.format(\$1, \$2, \$3); END \$f\$;
    CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS \$f\$
      BEGIN $body RETURN QUERY SELECT pg_catalog.unnest(\$1); END \$f\$;"
  q_as "$ATK" upg "SELECT format('chunk %s page %s', 1, 2); SELECT count(*) FROM unnest('{a,b}'::text[])" >/dev/null
  check "$short: attack positive control: both plants fire when called" \
    "2" "$(q upg "SELECT count(*) FROM public.atk_marker WHERE what = 'fired'")"
  q upg "DELETE FROM public.atk_marker"
  q upg "CALL qbo.run_backfill('Invoice', '$FROM_TS', '$TO_TS', 7, 50)" >/dev/null
  q upg "SELECT count(*) FROM qbo.backfill('Customer', '$FROM_TS', '$TO_TS', chunk_size => 7, page_size => 20)" >/dev/null
  check "$short: attack: plants in public never run in a superuser's backfills on the updated database" \
    "0 false" "$(q upg "SELECT (SELECT count(*) FROM public.atk_marker) || ' ' || (SELECT rolsuper FROM pg_roles WHERE rolname = '$ATK')")"

  # --- a second update is refused cleanly and changes nothing (already at the newest version) -------
  out=$(psql_ -d upg -c "ALTER EXTENSION pg_qbo UPDATE" 2>&1 || true)
  check "$short: ALTER EXTENSION pg_qbo UPDATE again is a no-op" \
    "NOTICE:  version \"$new_version\" of extension \"pg_qbo\" is already installed" "$out"

  stop_emulator
  stop_cluster
}

# ---------------------------------------------------------------------------------------------
echo "upgrade-test: work directory $WORK"
first=1
for commit in $FROM_COMMITS; do
  full=$(git rev-parse --verify "$commit^{commit}" 2>/dev/null) ||
    die "commit $commit is not in this repository (a shallow clone? fetch its history)"
  upgrade_from "$full"
  if [ "$first" == 1 ] && [ "$E2E" == 1 ]; then
    # --- e2e suites on databases created at 0.1.0's script and updated ----------------------------
    echo
    echo "==> e2e suites ($E2E_TESTS) on databases created at 0.1.0 and updated ($(elapsed))"
    [ "$full" == "$V010" ] || die "the e2e suites need the 0.1.0 script installed (UPGRADE_FROM starts with $full)"
    start_cluster
    args=()
    for t in $E2E_TESTS; do args+=(--test "$t"); done
    # each test is one named check (the "test result" lines are not repeated: the summary of
    # scripts/test.sh adds up every "N passed" of this log)
    PG_QBO_TEST_DIR=$CLUSTER PG_QBO_TEST_PORT=$PORT QBO_EMULATOR_BIN=$EMU_BIN PG_QBO_TEST_FROM_VERSION=0.1.0 \
      cargo test -p pg_qbo_e2e "${args[@]}" -- --test-threads=2 >"$WORK/e2e.log" 2>&1 || true
    while read -r name result; do
      if [ "$result" == ok ]; then ok "e2e on an updated database: $name"; else fail "e2e on an updated database: $name ($result)"; fi
    done < <(sed -n 's/^test \([a-z0-9_:]*\) \.\.\. \(.*\)$/\1 \2/p' "$WORK/e2e.log")
    if ! grep -q '^test result: ok' "$WORK/e2e.log" || grep -q '^test result: FAILED' "$WORK/e2e.log"; then
      fail "e2e suites ($E2E_TESTS) on updated databases did not all pass"
      sed -n '/^failures:/,$p' "$WORK/e2e.log" | grep -v '^test result' | head -n 150
      grep -q '^test ' "$WORK/e2e.log" || tail -n 60 "$WORK/e2e.log"
    fi
    stop_cluster
  fi
  first=0
done

summary
SUMMARY_DONE=1
[ "$failed" -eq 0 ]
