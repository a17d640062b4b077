// In-database tests of a run's parts: the shared per-realm limiter (included by src/run/mod.rs;
// `cargo pgrx test`).
use pgrx::prelude::*;

fn admit(want: i32, per_minute: i32, in_flight: i32, finished: &str) -> (Vec<i64>, i32) {
    admit_per_second(want, 1000, per_minute, in_flight, finished)
}

fn admit_per_second(
    want: i32,
    per_second: i32,
    per_minute: i32,
    in_flight: i32,
    finished: &str,
) -> (Vec<i64>, i32) {
    let sql = format!(
        "SELECT admitted, wait_ms FROM qbo._api_admit('9341', array_fill('query'::text, ARRAY[{want}]), {per_second}, {per_minute}, {in_flight}, '{finished}'::bigint[], 'app', NULL, 0)"
    );
    Spi::connect(|c| {
        let r = c.select(&sql, Some(1), &[])?.first();
        Ok::<_, pgrx::spi::Error>((
            r.get::<Vec<i64>>(1)?.unwrap_or_default(),
            r.get::<i32>(2)?.unwrap_or(-1),
        ))
    })
    .unwrap()
}

#[pg_test]
fn limiter_caps_requests_in_flight_and_frees_a_slot_when_a_response_is_read() {
    let (a, w) = admit(5, 500, 3, "{}");
    assert_eq!((a.len(), w), (3, 0), "3 of 5 admitted with 3 in flight allowed");
    let (b, w) = admit(1, 500, 3, "{}");
    assert!(b.is_empty());
    assert_eq!(w, 20, "all in flight: look again shortly");
    // one response read completely: one slot free
    let (c, _) = admit(2, 500, 3, &format!("{{{}}}", a[0]));
    assert_eq!(c.len(), 1);
    // another realm is not affected
    let other = Spi::get_one::<Vec<i64>>(
        "SELECT admitted FROM qbo._api_admit('other', '{query,query}', 10, 500, 3, '{}', 'app', NULL, 0)",
    )
    .unwrap()
    .unwrap();
    assert_eq!(other.len(), 2);
}

#[pg_test]
fn limiter_counts_a_sliding_minute_and_says_how_long_to_wait() {
    // 4 admitted 30 s ago and finished, 1 admitted 10 s ago and finished
    Spi::run(
        "INSERT INTO qbo._api_requests (realm_id, pid, started_at, finished_at)
         SELECT '9341', pg_backend_pid(), clock_timestamp() - interval '30 s', clock_timestamp() - interval '29 s'
           FROM generate_series(1, 4)
         UNION ALL SELECT '9341', pg_backend_pid(), clock_timestamp() - interval '10 s', clock_timestamp() - interval '9 s'",
    )
    .unwrap();
    let (a, _) = admit(3, 6, 10, "{}");
    assert_eq!(a.len(), 1, "6 a minute, 5 in the window: 1 more");
    let (b, w) = admit(1, 6, 10, "{}");
    assert!(b.is_empty());
    // the oldest of the window leaves it 61 s after it started: about 31 s from now
    assert!((29_000..=32_000).contains(&w), "wait {w} ms");
    // requests older than the window no longer count
    Spi::run("UPDATE qbo._api_requests SET started_at = started_at - interval '40 s' WHERE started_at < clock_timestamp() - interval '20 s'").unwrap();
    let (c, _) = admit(10, 6, 10, "{}");
    assert_eq!(c.len(), 4, "only the 2 recent ones count: 4 more");
}

#[pg_test]
fn limiter_frees_the_slots_of_a_process_that_is_gone() {
    // a request left in flight by a process that died (pid 0 never exists)
    Spi::run(
        "INSERT INTO qbo._api_requests (realm_id, pid, started_at) VALUES ('9341', 0, clock_timestamp()), ('9341', 0, clock_timestamp())",
    )
    .unwrap();
    let (a, _) = admit(2, 500, 2, "{}");
    assert_eq!(a.len(), 2, "the dead process's slots were freed");
    let freed = Spi::get_one::<i32>("SELECT qbo._api_release_mine()").unwrap().unwrap();
    assert_eq!(freed, 2);
}

#[pg_test]
fn limiter_counts_a_sliding_second_with_a_200_ms_margin() {
    // 3 admitted 1.1 s ago (still inside 1 s + 200 ms), 1 admitted 1.3 s ago (outside), finished
    Spi::run(
        "INSERT INTO qbo._api_requests (realm_id, pid, started_at, finished_at)
         SELECT '9341', pg_backend_pid(), clock_timestamp() - interval '1.1 s', clock_timestamp()
           FROM generate_series(1, 3)
         UNION ALL SELECT '9341', pg_backend_pid(), clock_timestamp() - interval '1.3 s', clock_timestamp()",
    )
    .unwrap();
    let (a, _) = admit_per_second(10, 4, 500, 10, "{}");
    assert_eq!(a.len(), 1, "4 a second, 3 in the window: 1 more");
    let (b, w) = admit_per_second(1, 4, 500, 10, "{}");
    assert!(b.is_empty());
    // the oldest of the window (1.1 s ago) leaves it 1.2 s after it started: about 100 ms
    assert!((1..=150).contains(&w), "wait {w} ms");
    // the minute's rule still holds beside it
    let (c, w) = admit_per_second(1, 1000, 5, 10, "{}");
    assert!(c.is_empty(), "5 in the minute already");
    assert!((59_000..=61_000).contains(&w), "wait {w} ms");
}

#[pg_test]
fn admissions_are_counted_per_month_app_realm_and_kind_and_on_their_run() {
    Spi::run(
        "INSERT INTO qbo.runs (entity, connection, realm_id, environment, fecha_inicio, fecha_fin, chunk_size,
                               page_size, minor_version, settings, entry_point, status, chunks_total)
         VALUES ('Invoice', 'default', '9341', 'sandbox', '2025-01-01', '2025-02-01', 7, 100, 75, '{}', 'call', 'running', 1)",
    )
    .unwrap();
    let run = Spi::get_one::<i64>("SELECT max(run_id) FROM qbo.runs").unwrap().unwrap();
    let a = Spi::get_one::<Vec<i64>>(&format!(
        "SELECT admitted FROM qbo._api_admit('9341', '{{count,query,query,count,query}}', 10, 500, 3, '{{}}', 'app', {run}, 0)"
    ))
    .unwrap()
    .unwrap();
    assert_eq!(a.len(), 3, "3 in flight allowed: the first 3 kinds are admitted");
    Spi::run(&format!("SELECT qbo._api_count('app', '9341', 'token', {run})")).unwrap();
    let usage = Spi::get_one::<String>(
        "SELECT string_agg(kind || '=' || requests || '/' || app_month_requests, ',' ORDER BY kind)
           FROM qbo.api_usage WHERE client_id = 'app' AND realm_id = '9341'
            AND month = date_trunc('month', now() AT TIME ZONE 'UTC')::date",
    )
    .unwrap()
    .unwrap();
    assert_eq!(usage, "count=1/4,query=2/4,token=1/4");
    let on_run = Spi::get_one::<String>(&format!(
        "SELECT requests_query || ',' || requests_count || ',' || requests_token FROM qbo.runs WHERE run_id = {run}"
    ))
    .unwrap()
    .unwrap();
    assert_eq!(on_run, "2,1,1");
}

#[pg_test]
fn the_monthly_budget_admits_up_to_it_then_none_whatever_the_realm() {
    let admit_budget = |realm: &str, want: i32| {
        Spi::connect(|c| {
            let r = c
                .select(
                    &format!(
                        "SELECT admitted, month_requests, usage_month FROM qbo._api_admit('{realm}', array_fill('query'::text, ARRAY[{want}]), 1000, 1000, 100, '{{}}', 'app', NULL, 5)"
                    ),
                    Some(1),
                    &[],
                )?
                .first();
            Ok::<_, pgrx::spi::Error>((
                r.get::<Vec<i64>>(1)?.unwrap_or_default().len(),
                r.get::<i64>(2)?,
                r.get::<String>(3)?,
            ))
        })
        .unwrap()
    };
    let month = Spi::get_one::<String>("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')")
        .unwrap();
    assert_eq!(admit_budget("9341", 3), (3, Some(3), month.clone()));
    // another realm of the same app shares the budget: 2 of 4 wanted
    assert_eq!(admit_budget("9342", 4), (2, Some(5), month.clone()));
    assert_eq!(admit_budget("9341", 1), (0, Some(5), month.clone()));
    // another app has its own
    let other = Spi::get_one::<i64>(
        "SELECT cardinality(admitted) FROM qbo._api_admit('9341', '{query}', 1000, 1000, 100, '{}', 'other app', NULL, 5)",
    )
    .unwrap();
    assert_eq!(other, Some(1));
    // without a budget nothing is refused, and nothing is summed
    let free = Spi::get_one::<String>(
        "SELECT cardinality(admitted) || ' ' || coalesce(month_requests::text, 'null') FROM qbo._api_admit('9341', '{query}', 1000, 1000, 100, '{}', 'app', NULL, 0)",
    )
    .unwrap()
    .unwrap();
    assert_eq!(free, "1 null");
}
