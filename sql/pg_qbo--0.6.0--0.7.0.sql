-- pg_qbo 0.6.0 -> 0.7.0 (run by ALTER EXTENSION pg_qbo UPDATE, after the 0.7.0 build is installed).
--
-- 0.7.0 is what CREATE EXTENSION pg_qbo creates at 0.7.0 (sql/schema.sql and the #[pg_extern]
-- functions, as `cargo pgrx schema` prints them); this script takes a 0.6.0 install (or an older
-- one, after the earlier scripts) to exactly that (scripts/upgrade-test.sh compares an updated
-- database with a fresh 0.7.0 one). Written idempotently and fully qualified, like every update.
--
-- What changes (no table or row changes):
--   * the entities Change Data Capture does not serve (TaxCode, TaxRate, TimeActivity) are read
--     by a sync with one query, at most every qbo.sync_non_cdc_interval_ms (a new setting,
--     default 12 h), on the new routes `query` and `not_due` of qbo.run_chunks: the comments of
--     the routes, of where requests are counted and of the watermark say so;
--   * Citus: qbo.distribute_raw_tables() (new, superusers only) distributes existing raw tables;
--     new ones are created distributed where Citus is installed (qbo.citus_distribute_raw_tables).

\echo Use "ALTER EXTENSION pg_qbo UPDATE TO '0.7.0'" to load this file. \quit

COMMENT ON COLUMN qbo.run_chunks.route IS 'For a sync: how the entity''s changes were read: cdc (Change Data Capture), first_sync (its whole history, by a backfill: child_run_id), query (CDC does not serve the entity: one query, of every record for a transaction entity that fits a page, else of those changed since window_start), not_due (CDC does not serve the entity and its watermark is younger than qbo.sync_non_cdc_interval_ms: not read), pager (a backfill over [window_start, window_end): its watermark is older than CDC reaches, or a CDC answer or its query filled the page alone).';
COMMENT ON COLUMN qbo.run_chunks.requests IS 'For a sync: requests spent on the entity: its backfill''s (child_run_id), its queries and deletes hunt, the CDC requests whose first entity (in qbo.entities order) it was, and the sync''s own token refreshes on its first entity read by CDC (else by query, else through the pager), so the rows of a sync add up to its requests_* exactly.';
COMMENT ON COLUMN qbo.sync_state.watermark IS 'Every change before it is applied, on QuickBooks'' clock (a CDC or query answer''s time less the request''s round trip and 120 s; for a pass through the pager, its end less 120 s). The next sync reads from here; changes seen again are skipped.';
COMMENT ON COLUMN qbo.sync_state.route IS 'How that sync read the entity: cdc, first_sync, query or pager (see qbo.run_chunks.route).';

COMMENT ON PROCEDURE qbo.run_sync(text[], text, int, bigint) IS
    'pg_qbo: brings raw.* up to date with QuickBooks for the entities asked (NULL: every entity of qbo.entities) of one connection, in this session, committing as it goes. An entity never synced reads its whole history (a backfill from 2000-01-01); then Change Data Capture reads what changed since its watermark (qbo.sync_state), all CDC entities in one request when their changes fit QuickBooks'' 1000-object cap, deletions marking raw.*.deleted_at_utc; entities CDC does not serve (TaxCode, TaxRate, TimeActivity) are read with one query at most every qbo.sync_non_cdc_interval_ms (default 12 h), and those whose watermark is older than CDC''s 30 days through the pager. Returns the sync''s run id (NULL when a sync of the same company was already running: a NOTICE says so and nothing is done). Must be CALLed outside a transaction block; one NOTICE per entity (route, window, changed, inserted, updated, deleted, skipped, requests); qbo.runs (kind sync) and qbo.run_chunks (one row per entity) hold the same.';

COMMENT ON FUNCTION qbo.sync(text[], text, int) IS
    'pg_qbo: the sync of CALL qbo.run_sync (same arguments, same work, same NOTICEs) run in a background worker of this session, returning one row per entity: entity, since, until (the window it read, until = the new watermark), requests (a CDC request counted on the first entity it asked for, so the rows add up to the sync''s total), changed (= inserted + updated + deleted + skipped; records read, for an entity read through the pager), inserted, updated, deleted, skipped, duration, route (cdc, first_sync, query, not_due, pager). No rows, and a NOTICE, when a sync of the company was already running. Needs a free pg_qbo worker slot (qbo.max_workers); CALL qbo.run_sync needs none.';

-- Citus
CREATE OR REPLACE FUNCTION qbo."distribute_raw_tables"() RETURNS TABLE (
	"raw_table" TEXT,  /* String */
	"rows" bigint,  /* i64 */
	"action" TEXT  /* String */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'distribute_raw_tables_wrapper';
COMMENT ON FUNCTION qbo.distribute_raw_tables() IS
    'pg_qbo: where Citus is installed in this database (CREATE EXTENSION citus, workers added), distributes every raw table pg_qbo made that is still local, by realm_id and co-located with each other, moving its rows into the shards, in one transaction; returns one row per raw table (raw_table, rows, action: distributed or already distributed). New raw tables are created distributed already (qbo.citus_distribute_raw_tables, on by default). Superusers only: it runs as the extension owner, takes the raw DDL lock, and refuses a raw table another role attached something to. Blocks writes to each table while its rows move: run it between runs. The ledger, connections and limiter stay on the coordinator.';
-- superusers only (as the end of the extension script makes it for every routine
-- qbo._routine_grants does not list)
REVOKE ALL ON FUNCTION qbo.distribute_raw_tables() FROM PUBLIC;
