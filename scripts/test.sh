#!/usr/bin/env bash
# Runs every test of pg_qbo on a fresh Debian 12 machine, as root:
#   1. installs what is needed (scripts/setup.sh),
#   2. the emulator's unit and HTTP tests, and the third-party Python client against it,
#   3. the core crate's tests (cargo test -p qbo: client, OAuth, paging, planning, retry, encoding,
#      no Postgres), then the extension's unit tests and in-database suites (cargo pgrx test),
#   4. end-to-end tests: the extension installed into a real cluster, driven against real
#      emulator processes (tests/e2e),
#   5. the upgrade test: a 0.1.0 database with data updated to this version (scripts/upgrade-test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

step "setup"
bash scripts/setup.sh

step "lint: rustfmt and clippy (warnings are errors)"
cargo fmt --all -- --check
cargo clippy --workspace --tests -q -- -D warnings

step "emulator: build and test"
cargo build --release -p qbo-emulator
cargo test -p qbo-emulator 2>&1 | tee /tmp/pg_qbo-emulator-tests.log

if [ -x tests/python/run.sh ] || [ -f tests/python/run.sh ]; then
  step "emulator: third-party Python client (python-quickbooks)"
  bash tests/python/run.sh 2>&1 | tee /tmp/pg_qbo-python-tests.log
fi

step "core: the plain-Rust crate's tests (no Postgres)"
cargo test -p qbo 2>&1 | tee /tmp/pg_qbo-core-tests.log

step "extension: unit tests and in-database suites (cargo pgrx test)"
install -d -o postgres -g postgres /tmp/pgrx-test-pgdata
cargo pgrx test pg15 --runas postgres --pgdata /tmp/pgrx-test-pgdata 2>&1 | tee /tmp/pg_qbo-pgrx-tests.log

step "extension: install into PostgreSQL 15"
cargo pgrx install --pg-config "$PG_CONFIG" >/dev/null

step "end-to-end tests against a real cluster and the emulator"
export PG_QBO_TEST_DIR=${PG_QBO_TEST_DIR:-/tmp/pg_qbo_e2e}
# Ports of every throw-away cluster (here 25391, and +7, +8 for the suites that crash or
# reconfigure a cluster of their own; demo 25390, benchmarks 25394, upgrade test 25531) lie below
# Linux's ephemeral range (32768-60999): no outgoing connection and no emulator (which listens on
# port 0) can be holding one when its cluster starts. A run of the suite once failed that way.
export PG_QBO_TEST_PORT=${PG_QBO_TEST_PORT:-25391}
export QBO_EMULATOR_BIN=$ROOT/target/release/qbo-emulator
bash scripts/cluster.sh stop "$PG_QBO_TEST_DIR" || true
rm -rf "$PG_QBO_TEST_DIR"
bash scripts/cluster.sh start "$PG_QBO_TEST_DIR" "$PG_QBO_TEST_PORT" \
  "log_statement = 'all'" "log_min_messages = notice" "log_min_error_statement = error" \
  "shared_preload_libraries = 'pg_cron'" "cron.database_name = 'e2e_cron'" "cron.host = '127.0.0.1'"
trap 'bash scripts/cluster.sh stop "$PG_QBO_TEST_DIR"' EXIT
# the Citus suite (tests/e2e/tests/citus.rs, every test named citus_*) needs a PostgreSQL with
# Citus, which Debian does not package: it runs only when PG_QBO_CITUS_BIN points at one
if [ -n "${PG_QBO_CITUS_BIN:-}" ]; then
  CITUS_NOTE="citus: run against $PG_QBO_CITUS_BIN"
  CITUS_SKIP=()
else
  CITUS_NOTE="citus: SKIPPED (PG_QBO_CITUS_BIN is not set: tests/e2e/tests/citus.rs needs a PostgreSQL 15 with Citus 13.2)"
  CITUS_SKIP=(--skip citus_)
fi
echo "$CITUS_NOTE"
cargo test -p pg_qbo_e2e -- --test-threads=2 "${CITUS_SKIP[@]}" 2>&1 | tee /tmp/pg_qbo-e2e-tests.log

step "upgrade: 0.1.0 (built from its commit) updated to this tree equals a fresh install, keeps its data, works"
# its own relocated copy of PostgreSQL and cluster: the system install above is left alone
bash scripts/upgrade-test.sh 2>&1 | tee /tmp/pg_qbo-upgrade-tests.log

step "summary"
logs=(/tmp/pg_qbo-emulator-tests.log /tmp/pg_qbo-core-tests.log /tmp/pg_qbo-pgrx-tests.log
      /tmp/pg_qbo-e2e-tests.log /tmp/pg_qbo-upgrade-tests.log)
[ -f /tmp/pg_qbo-python-tests.log ] && logs+=(/tmp/pg_qbo-python-tests.log)
for f in "${logs[@]}"; do
  printf '  %-24s %s passed, %s failed\n' "$(basename "$f" .log)" \
    "$(grep -ohE '([0-9]+) passed' "$f" | awk '{s+=$1} END {print s+0}')" \
    "$(grep -ohE '([0-9]+) failed' "$f" | awk '{s+=$1} END {print s+0}')"
done
passed=$(cat "${logs[@]}" | grep -ohE '([0-9]+) passed' | awk '{s+=$1} END {print s+0}')
failed=$(cat "${logs[@]}" | grep -ohE '([0-9]+) failed' | awk '{s+=$1} END {print s+0}')
echo "total: $passed passed, $failed failed"
echo "$CITUS_NOTE"
