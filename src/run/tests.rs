// In-database tests of a run's parts: the shared per-realm limiter (included by src/run/mod.rs;
// `cargo pgrx test`).
use pgrx::prelude::*;

fn admit(want: i32, per_minute: i32, in_flight: i32, finished: &str) -> (Vec<i64>, i32) {
    let sql = format!(
        "SELECT admitted, wait_ms FROM qbo._api_admit('9341', {want}, {per_minute}, {in_flight}, '{finished}'::bigint[])"
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
        "SELECT admitted FROM qbo._api_admit('other', 2, 500, 3, '{}')",
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
