#!/usr/bin/env python3
"""The reference pipeline of bench/throughput.sh: what a typical Mage/Singer-style QuickBooks
Online extractor does, written plainly, to compare pg_qbo against.

  * one OAuth2 refresh-token grant for an access token (requests, HTTP Basic client credentials);
  * for each window of --chunk-days days in [--start, --end): page through
        SELECT * FROM <Entity> WHERE MetaData.LastUpdatedTime >= 'a' AND MetaData.LastUpdatedTime < 'b'
        ORDERBY <field> STARTPOSITION k MAXRESULTS <page-size>
    one request at a time (keep-alive session), stopping at the first short page;
  * each page upserted into --table with ONE psycopg2.extras.execute_values statement and one
    commit, with pg_qbo's semantics: insert new rows; on conflict (realm_id, id) update only when the
    incoming SyncToken is higher, or equal with a different payload; inserted vs updated counted
    with RETURNING (xmax = 0).

--order: `id` (default) pages each window by Id. `lastupdated` pages by MetaData.LastUpdatedTime,
which is what tap-quickbooks-style pipelines do, but QBO (and the emulator) shuffles ties per
request, so a STARTPOSITION pager that crosses a second holding more than one page of records
misses some rows and reads others twice. Both orders cost the same number of requests and pages;
only `id` gets every row.

Prints one human line on stderr and one JSON object on stdout:
  {"rows", "distinct_rows", "inserted", "updated", "skipped", "pages", "requests", "seconds",
   "cpu_seconds"}
(seconds: from the token request to the last commit; interpreter start-up is not counted;
cpu_seconds: this process's own CPU over the same span).

--fetch-only pages through the API without a database and discards the answers: the benchmark
uses it to warm the emulator's payload cache.
"""
import argparse
import datetime as dt
import json
import sys
import time

import psycopg2
import psycopg2.extras
import requests


def parse_ts(s):
    s = s.strip()
    if s.endswith("Z") and "T" not in s:  # '2025-01-01Z'
        s = s[:-1] + "T00:00:00+00:00"
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(dt.timezone.utc)


def qbo_ts(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


UPSERT = """
INSERT INTO {table} AS r (realm_id, id, payload, ingested_at_utc, extract_window_start_utc,
                          extract_window_end_utc, page_number, page_size, request_payload)
VALUES %s
ON CONFLICT (realm_id, id) DO UPDATE
   SET payload = EXCLUDED.payload, ingested_at_utc = EXCLUDED.ingested_at_utc,
       extract_window_start_utc = EXCLUDED.extract_window_start_utc,
       extract_window_end_utc = EXCLUDED.extract_window_end_utc,
       page_number = EXCLUDED.page_number, page_size = EXCLUDED.page_size,
       request_payload = EXCLUDED.request_payload
 WHERE (EXCLUDED.payload->>'SyncToken')::bigint > (r.payload->>'SyncToken')::bigint
    OR ((EXCLUDED.payload->>'SyncToken')::bigint = (r.payload->>'SyncToken')::bigint
        AND EXCLUDED.payload IS DISTINCT FROM r.payload)
RETURNING (xmax = 0) AS inserted
"""
TEMPLATE = "(%s, %s, %s::jsonb, now(), %s, %s, %s, %s, %s::jsonb)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="API base, e.g. http://127.0.0.1:PORT")
    ap.add_argument("--token-url", help="default: URL/oauth2/v1/tokens/bearer")
    ap.add_argument("--realm", required=True)
    ap.add_argument("--client-id", default="emu-client-id")
    ap.add_argument("--client-secret", default="emu-client-secret")
    ap.add_argument("--refresh-token", default="emu-refresh-token-0")
    ap.add_argument("--dsn", help="libpq connection string (required unless --fetch-only)")
    ap.add_argument("--table", help="target table, shaped like raw.qb_invoices (required unless --fetch-only)")
    ap.add_argument("--fetch-only", action="store_true",
                    help="page through the API and discard the answers (warms the emulator's payload cache)")
    ap.add_argument("--entity", default="Invoice")
    ap.add_argument("--start", default="2025-01-01Z")
    ap.add_argument("--end", default="2025-09-11Z")
    ap.add_argument("--chunk-days", type=int, default=30)
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--minor-version", type=int, default=75)
    ap.add_argument("--order", choices=["id", "lastupdated"], default="id")
    a = ap.parse_args()
    if not a.fetch_only and not (a.dsn and a.table):
        ap.error("--dsn and --table are required unless --fetch-only")

    order_field = "Id" if a.order == "id" else "MetaData.LastUpdatedTime"
    sql = UPSERT.format(table=a.table or "-")
    t0 = time.perf_counter()
    c0 = time.process_time()

    http = requests.Session()
    tok = http.post(
        a.token_url or f"{a.url}/oauth2/v1/tokens/bearer",
        data={"grant_type": "refresh_token", "refresh_token": a.refresh_token},
        auth=(a.client_id, a.client_secret),
        headers={"Accept": "application/json"},
        timeout=60,
    )
    tok.raise_for_status()
    http.headers.update({"Authorization": f"Bearer {tok.json()['access_token']}", "Accept": "application/json"})
    query_url = f"{a.url}/v3/company/{a.realm}/query"

    db = None if a.fetch_only else psycopg2.connect(a.dsn)
    cur = db and db.cursor()
    rows = inserted = updated = pages = requests_made = 0
    seen = set()
    start, end = parse_ts(a.start), parse_ts(a.end)
    w0 = start
    while w0 < end:
        w1 = min(w0 + dt.timedelta(days=a.chunk_days), end)
        pos, page_no = 1, 0
        while True:
            q = (f"SELECT * FROM {a.entity} WHERE MetaData.LastUpdatedTime >= '{qbo_ts(w0)}' "
                 f"AND MetaData.LastUpdatedTime < '{qbo_ts(w1)}' ORDERBY {order_field} "
                 f"STARTPOSITION {pos} MAXRESULTS {a.page_size}")
            resp = http.get(query_url, params={"query": q, "minorversion": a.minor_version}, timeout=120)
            requests_made += 1
            resp.raise_for_status()
            if a.fetch_only:
                n = resp.json()["QueryResponse"].get("maxResults", 0)
                pages += 1
                rows += n
                if n < a.page_size:
                    break
                pos += a.page_size
                continue
            records = resp.json().get("QueryResponse", {}).get(a.entity, [])
            pages += 1
            page_no += 1
            if records:
                request_payload = json.dumps({"query": q, "start_position": pos, "page_size": a.page_size,
                                              "minor_version": a.minor_version})
                by_id = {r["Id"]: r for r in records}  # one page never holds an Id twice; be safe
                values = [(a.realm, rid, json.dumps(r), w0, w1, page_no, a.page_size, request_payload)
                          for rid, r in by_id.items()]
                flags = psycopg2.extras.execute_values(cur, sql, values, template=TEMPLATE,
                                                       page_size=len(values), fetch=True)
                db.commit()
                ins = sum(1 for (f,) in flags if f)
                inserted += ins
                updated += len(flags) - ins
                rows += len(values)
                seen.update(by_id)
            if len(records) < a.page_size:
                break
            pos += a.page_size
        w0 = w1
    if db:
        db.close()
    secs = time.perf_counter() - t0
    out = {"rows": rows, "distinct_rows": len(seen), "inserted": inserted, "updated": updated,
           "skipped": rows - inserted - updated, "pages": pages, "requests": requests_made + 1,
           "seconds": round(secs, 3), "cpu_seconds": round(time.process_time() - c0, 2)}
    print(f"reference loop: {rows} rows ({len(seen)} distinct; {inserted} inserted, {updated} updated) "
          f"in {pages} pages, {secs:.2f} s", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
