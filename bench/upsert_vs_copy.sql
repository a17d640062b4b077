-- The page upsert's SQL against COPY, without pg_qbo around it: 100k synthetic invoices (~820 B
-- each) into three identical tables shaped like raw.qb_<entity> (primary key, three indexes, lz4):
-- one COPY; 100 batches of 1000 of a plain INSERT ... SELECT FROM unnest(arrays); 100 batches of
-- pg_qbo's upsert statement as it was up to 9224e54 (store.rs upsert_sql, SyncToken read inline;
-- payloads as text[] cast to jsonb in the statement: since 07bafca they arrive as jsonb[] already
-- encoded on the network thread, see BENCHMARKS.md). The last block times building the batches'
-- arrays alone, to subtract from the two loops.
--   psql -X -d <db> -f bench/upsert_vs_copy.sql        (superuser: server-side COPY via /tmp)
-- Prints four "Time:" lines in that order. Creates and drops exp_* tables.
\timing off
SET client_min_messages = warning;
DROP TABLE IF EXISTS exp_src, exp_copy, exp_up, exp_ins;
CREATE TABLE exp_src AS
  SELECT g AS n, g::text AS id,
         (jsonb_build_object('Id', g::text, 'SyncToken', '0', 'MetaData', jsonb_build_object('LastUpdatedTime','2025-03-01T00:00:00-07:00'),
            'Line', (SELECT jsonb_agg(jsonb_build_object('Amount', (g*k)%997 + 0.5, 'Description', md5((g*k)::text), 'DetailType','SalesItemLineDetail')) FROM generate_series(1,6) k),
            'CustomerRef', jsonb_build_object('value', (g%300)::text, 'name', md5(g::text))))::text AS payload
  FROM generate_series(1,100000) g;
SELECT avg(length(payload))::int AS avg_len FROM exp_src;
CREATE INDEX ON exp_src (n);
ANALYZE exp_src;
CREATE TABLE exp_copy (realm_id text NOT NULL, id text NOT NULL, payload jsonb COMPRESSION lz4 NOT NULL, ingested_at_utc timestamptz NOT NULL DEFAULT now(),
  extract_window_start_utc timestamptz NOT NULL, extract_window_end_utc timestamptz NOT NULL, page_number int, page_size int, request_payload jsonb COMPRESSION lz4, PRIMARY KEY (realm_id, id));
CREATE INDEX ON exp_copy (ingested_at_utc); CREATE INDEX ON exp_copy (extract_window_start_utc); CREATE INDEX ON exp_copy (extract_window_end_utc);
CREATE TABLE exp_up (LIKE exp_copy INCLUDING ALL); CREATE TABLE exp_ins (LIKE exp_copy INCLUDING ALL);
COPY (SELECT 'r', id, payload, now(), now(), now(), 1, 1000, '{"q":1}' FROM exp_src) TO '/tmp/exp.copy';
CHECKPOINT;
\timing on
COPY exp_copy (realm_id, id, payload, ingested_at_utc, extract_window_start_utc, extract_window_end_utc, page_number, page_size, request_payload) FROM '/tmp/exp.copy';
\timing off
CHECKPOINT;
\timing on
DO $$ DECLARE b int; ids text[]; pl text[]; sy int8[]; BEGIN
 FOR b IN 0..99 LOOP
  SELECT array_agg(id ORDER BY n), array_agg(payload ORDER BY n), array_agg(0::int8) INTO ids, pl, sy FROM exp_src WHERE n > b*1000 AND n <= (b+1)*1000;
  INSERT INTO exp_ins (realm_id, id, payload, ingested_at_utc, extract_window_start_utc, extract_window_end_utc, page_number, page_size, request_payload)
   SELECT 'r', i.id, i.payload::jsonb, now(), now(), now(), 1, 1000, '{"q":1}'::jsonb FROM unnest(ids, pl, sy) i(id, payload, sync);
 END LOOP; END $$;
\timing off
CHECKPOINT;
\timing on
DO $$ DECLARE b int; ids text[]; pl text[]; sy int8[]; BEGIN
 FOR b IN 0..99 LOOP
  SELECT array_agg(id ORDER BY n), array_agg(payload ORDER BY n), array_agg(0::int8) INTO ids, pl, sy FROM exp_src WHERE n > b*1000 AND n <= (b+1)*1000;
  WITH incoming AS (SELECT i.id, i.payload::jsonb AS payload, i.sync FROM unnest(ids, pl, sy) AS i(id, payload, sync)),
   changed AS (SELECT n.* FROM incoming n WHERE (SELECT NOT ((cur.payload->>'SyncToken')::bigint > n.sync OR ((cur.payload->>'SyncToken')::bigint = n.sync AND cur.payload = n.payload)) FROM exp_up cur WHERE cur.realm_id = 'r' AND cur.id = n.id LIMIT 1) IS NOT FALSE)
  INSERT INTO exp_up AS r (realm_id, id, payload, ingested_at_utc, extract_window_start_utc, extract_window_end_utc, page_number, page_size, request_payload)
   SELECT 'r', c.id, c.payload, now(), now(), now(), 1, 1000, '{"q":1}'::jsonb FROM changed c ORDER BY c.id
   ON CONFLICT (realm_id, id) DO UPDATE SET payload = EXCLUDED.payload WHERE (EXCLUDED.payload->>'SyncToken')::bigint > (r.payload->>'SyncToken')::bigint;
 END LOOP; END $$;

\timing off
CHECKPOINT;
\timing on
DO $$ DECLARE b int; ids text[]; pl text[]; sy int8[]; BEGIN
 FOR b IN 0..99 LOOP
  SELECT array_agg(id ORDER BY n), array_agg(payload ORDER BY n), array_agg(0::int8) INTO ids, pl, sy FROM exp_src WHERE n > b*1000 AND n <= (b+1)*1000;
 END LOOP; END $$;

\timing off
DROP TABLE exp_src, exp_copy, exp_up, exp_ins;
