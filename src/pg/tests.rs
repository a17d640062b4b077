// In-database tests of the Postgres glue (included by src/pg/mod.rs; `cargo pgrx test`).
use crate::pg::spi;
use pgrx::prelude::*;

/// Whatever `search_path` the caller has, pg_qbo's statements resolve nothing from it, and the
/// caller's path is back as it was afterwards (also after an error).
#[pg_test]
fn pg_qbo_statements_resolve_nothing_from_the_callers_search_path() {
    Spi::run(
        "CREATE SCHEMA path_x;
         CREATE TABLE path_x.fired (n int);
         CREATE FUNCTION path_x.format(text, int, int) RETURNS text LANGUAGE sql AS 'INSERT INTO path_x.fired VALUES (1) RETURNING ''planted''';
         CREATE FUNCTION path_x.eq(text, text) RETURNS boolean LANGUAGE sql AS 'INSERT INTO path_x.fired VALUES (2) RETURNING true';
         CREATE OPERATOR path_x.= (LEFTARG = text, RIGHTARG = text, FUNCTION = path_x.eq);
         SET search_path = path_x, pg_catalog;",
    )
    .unwrap();
    // positive control: the plants win under this path
    assert_eq!(
        Spi::get_one::<String>("SELECT format('%s %s', 1, 2)").unwrap().as_deref(),
        Some("planted")
    );
    assert_eq!(Spi::get_one::<bool>("SELECT 'a'::text = 'b'::text").unwrap(), Some(true));
    Spi::run("DELETE FROM path_x.fired").unwrap();
    let (path, eq) = spi::pinned(|| {
        (
            Spi::get_one::<String>("SELECT current_setting('search_path')").unwrap(),
            Spi::get_one::<bool>("SELECT 'a'::text = 'b'::text").unwrap(),
        )
    });
    assert_eq!(path.as_deref(), Some("pg_catalog, pg_temp"));
    assert_eq!(eq, Some(false));
    let s = spi::as_owner(|| {
        Spi::get_one::<String>("SELECT format('%s %s', 1, 2)").unwrap()
    });
    assert_eq!(s.as_deref(), Some("1 2"));
    // an error inside the span restores the caller's path too
    let caught = PgTryBuilder::new(|| {
        spi::pinned(|| Spi::run("SELECT 1/0").unwrap());
        false
    })
    .catch_others(|_| true)
    .execute();
    assert!(caught);
    assert_eq!(
        Spi::get_one::<String>("SELECT current_setting('search_path')").unwrap().as_deref(),
        Some("path_x, pg_catalog")
    );
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM path_x.fired").unwrap(), Some(0));
    Spi::run("RESET search_path").unwrap();
}

/// A Postgres ERROR raised inside `held` (errfinish sets InterruptHoldoffCount to 0 before it
/// unwinds) leaves the count where it was, never below 0: before the fix the count went to -1
/// (an overflow panic while unwinding, i.e. an abort of the backend, in a debug build; a wrap that
/// holds interrupts for good, so no cancel is ever served, in a release one).
#[pg_test]
fn an_error_inside_held_leaves_interrupts_serviceable() {
    // SAFETY: the test backend's own thread reads its own counter.
    let before = unsafe { pg_sys::InterruptHoldoffCount };
    let caught = PgTryBuilder::new(|| {
        crate::pg::interrupts::held(|| Spi::run("SELECT 1 OPERATOR(pg_catalog./) 0"))
            .expect("an ERROR, not a result");
        false
    })
    .catch_others(|_| true)
    .execute();
    assert!(caught);
    // SAFETY: as above.
    let after = unsafe { pg_sys::InterruptHoldoffCount };
    assert_eq!(after, before);
}
