//! Builders of QBO query texts (the `query` parameter of `GET /v3/company/{realm}/query`).
//!
//! - Datetime literals are always full ISO-8601 in UTC with an explicit offset
//!   (`'2025-01-01T00:00:00+00:00'`), never a date alone.
//! - QBO timestamps have whole seconds, so literals have whole seconds too: an instant with a
//!   fraction is rounded *up* to the next second, which selects exactly the same records
//!   (`t >= 10:00:00.5` and `t >= 10:00:01` agree on whole-second `t`, and so do `<`), and keeps
//!   half-open chunk boundaries exact.
//! - Name-list entities get `AND Active IN (true,false)`, or QBO returns active rows only.
//! - `MAXRESULTS` is clamped to 1..=1000 (QBO serves at most 1000 whatever is asked) and
//!   `STARTPOSITION` to at least 1 (it is 1-based).
//! - Entity names come from the extension's static catalog; they are asserted (in debug builds)
//!   to be ASCII letters only, so nothing can be injected into the query text.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

/// Largest page QBO serves.
pub const MAX_PAGE: u32 = 1000;

/// True when `entity` is a plausible QBO entity name (`[A-Za-z]+`).
pub fn is_valid_entity_name(entity: &str) -> bool {
    !entity.is_empty() && entity.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Rounds an instant up to a whole second.
pub fn ceil_second(dt: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_second(dt);
    if floor == dt {
        dt
    } else {
        floor
            .checked_add_signed(TimeDelta::seconds(1))
            .unwrap_or(floor)
    }
}

/// Truncates an instant to its whole second.
pub fn floor_second(dt: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = i64::from(dt.timestamp_subsec_nanos());
    dt.checked_sub_signed(TimeDelta::nanoseconds(nanos))
        .unwrap_or(dt)
}

/// The text of a query datetime literal (without quotes): UTC, whole seconds rounded up, `+00:00`.
pub fn literal(dt: DateTime<Utc>) -> String {
    ceil_second(dt).to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// An instant as exact ISO-8601 UTC text (fraction shown only when present), for messages.
pub fn literal_exact(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn active_clause(name_list: bool) -> &'static str {
    if name_list {
        " AND Active IN (true,false)"
    } else {
        ""
    }
}

/// The time cursor's order key.
const BY_TIME: &str = "MetaData.LastUpdatedTime";

fn paging(start_position: u32, max_results: u32) -> String {
    paging_by(BY_TIME, start_position, max_results)
}

fn paging_by(order: &str, start_position: u32, max_results: u32) -> String {
    format!(
        " ORDERBY {order} STARTPOSITION {} MAXRESULTS {}",
        start_position.max(1),
        max_results.clamp(1, MAX_PAGE)
    )
}

/// The order of a window's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// `ORDERBY MetaData.LastUpdatedTime`: the time cursor's ([`crate::pager`]).
    Time,
    /// `ORDERBY Id`: a window read by offsets ([`crate::offsets`]). `Id` is unique, so the order
    /// has no ties: two requests agree on it, whatever comparison QBO applies to Ids.
    Id,
}

/// `SELECT * FROM <entity> WHERE MetaData.LastUpdatedTime >= '<from>' AND
/// MetaData.LastUpdatedTime < '<to>' [AND Active IN (true,false)] ORDERBY
/// <MetaData.LastUpdatedTime | Id> STARTPOSITION n MAXRESULTS m`.
pub fn window_query(
    entity: &str,
    name_list: bool,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    order: Order,
    start_position: u32,
    max_results: u32,
) -> String {
    debug_assert!(is_valid_entity_name(entity), "bad entity name {entity:?}");
    let order = match order {
        Order::Time => BY_TIME,
        Order::Id => "Id",
    };
    format!(
        "SELECT * FROM {entity} WHERE MetaData.LastUpdatedTime >= '{}' AND MetaData.LastUpdatedTime < '{}'{}{}",
        literal(from),
        literal(to),
        active_clause(name_list),
        paging_by(order, start_position, max_results)
    )
}

/// `SELECT * FROM <entity> WHERE MetaData.LastUpdatedTime >= '<since>' [AND Active IN
/// (true,false)] STARTPOSITION 1 MAXRESULTS 1000`: one page of what changed since, with no end
/// (a sync's read of an entity CDC does not serve, [`crate::poll`]).
pub fn since_query(entity: &str, name_list: bool, since: DateTime<Utc>) -> String {
    debug_assert!(is_valid_entity_name(entity), "bad entity name {entity:?}");
    format!(
        "SELECT * FROM {entity} WHERE MetaData.LastUpdatedTime >= '{}'{} STARTPOSITION 1 MAXRESULTS {MAX_PAGE}",
        literal(since),
        active_clause(name_list)
    )
}

/// `SELECT * FROM <entity> STARTPOSITION 1 MAXRESULTS 1000`: every record of a transaction entity
/// in one page (a name list would need `Active IN (true,false)`).
pub fn whole_query(entity: &str) -> String {
    debug_assert!(is_valid_entity_name(entity), "bad entity name {entity:?}");
    format!("SELECT * FROM {entity} STARTPOSITION 1 MAXRESULTS {MAX_PAGE}")
}

/// `SELECT count(*) FROM <entity> WHERE MetaData.LastUpdatedTime >= '<from>' AND
/// MetaData.LastUpdatedTime < '<to>' [AND Active IN (true,false)]`: how many records a window
/// holds, which tells the executor where to split it into sub-windows fetched concurrently.
pub fn window_count_query(
    entity: &str,
    name_list: bool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> String {
    debug_assert!(is_valid_entity_name(entity), "bad entity name {entity:?}");
    format!(
        "SELECT count(*) FROM {entity} WHERE MetaData.LastUpdatedTime >= '{}' AND MetaData.LastUpdatedTime < '{}'{}",
        literal(from),
        literal(to),
        active_clause(name_list)
    )
}

/// `SELECT count(*) FROM <entity> WHERE MetaData.LastUpdatedTime = '<second>'
/// [AND Active IN (true,false)]`.
pub fn second_count_query(entity: &str, name_list: bool, second: DateTime<Utc>) -> String {
    debug_assert!(is_valid_entity_name(entity), "bad entity name {entity:?}");
    format!(
        "SELECT count(*) FROM {entity} WHERE MetaData.LastUpdatedTime = '{}'{}",
        literal(second),
        active_clause(name_list)
    )
}

/// `SELECT count(*) FROM <entity> WHERE MetaData.LastUpdatedTime = '<second>' AND Id IN ('1','2')
/// [AND Active IN (true,false)]`: how many of these Ids are (still) in that second. Quotes and
/// backslashes inside an Id are escaped with a backslash, QBO's escape.
pub fn second_ids_count_query(
    entity: &str,
    name_list: bool,
    second: DateTime<Utc>,
    ids: &[&str],
) -> String {
    debug_assert!(is_valid_entity_name(entity), "bad entity name {entity:?}");
    format!(
        "SELECT count(*) FROM {entity} WHERE MetaData.LastUpdatedTime = '{}' AND Id IN ({}){}",
        literal(second),
        id_list(ids),
        active_clause(name_list)
    )
}

/// `'1','2'`: Ids quoted for `Id IN (...)`, quotes and backslashes inside an Id escaped with a
/// backslash, QBO's escape.
fn id_list<S: AsRef<str>>(ids: &[S]) -> String {
    let list: Vec<String> = ids
        .iter()
        .map(|id| {
            let id = id.as_ref();
            format!("'{}'", id.replace('\\', "\\\\").replace('\'', "\\'"))
        })
        .collect();
    list.join(",")
}

/// `SELECT * FROM <entity> WHERE Id IN ('1','2') STARTPOSITION 1 MAXRESULTS n`: the records of
/// these Ids wherever their `LastUpdatedTime` is (n = how many were asked: QBO's default page is
/// 100). For transactions: a name list would need `Active IN (true,false)`.
pub fn ids_query<S: AsRef<str>>(entity: &str, ids: &[S]) -> String {
    debug_assert!(is_valid_entity_name(entity), "bad entity name {entity:?}");
    format!(
        "SELECT * FROM {entity} WHERE Id IN ({}) STARTPOSITION 1 MAXRESULTS {}",
        id_list(ids),
        ids.len().clamp(1, MAX_PAGE as usize)
    )
}

/// `SELECT * FROM <entity> WHERE MetaData.LastUpdatedTime = '<second>' [AND Active IN
/// (true,false)] ORDERBY MetaData.LastUpdatedTime STARTPOSITION n MAXRESULTS m`: one page of the
/// records updated in one second (`ORDERBY Id` is not reliably supported, so the order key stays).
pub fn second_page_query(
    entity: &str,
    name_list: bool,
    second: DateTime<Utc>,
    start_position: u32,
    max_results: u32,
) -> String {
    debug_assert!(is_valid_entity_name(entity), "bad entity name {entity:?}");
    format!(
        "SELECT * FROM {entity} WHERE MetaData.LastUpdatedTime = '{}'{}{}",
        literal(second),
        active_clause(name_list),
        paging(start_position, max_results)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, mi, s).single().unwrap()
    }

    #[test]
    fn ids_query_asks_each_id_once_escaped_and_a_page_as_long_as_the_list() {
        assert_eq!(
            ids_query("Invoice", &["7", "o'k", "a\\b"]),
            "SELECT * FROM Invoice WHERE Id IN ('7','o\\'k','a\\\\b') STARTPOSITION 1 MAXRESULTS 3"
        );
        let many: Vec<String> = (0..1500).map(|i| i.to_string()).collect();
        assert!(ids_query("Bill", &many).ends_with("MAXRESULTS 1000"));
    }

    #[test]
    fn window_transaction() {
        assert_eq!(
            window_query("Invoice", false, (t(2025, 1, 1, 0, 0, 0), t(2025, 1, 8, 0, 0, 0)), Order::Time, 1, 1000),
            "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '2025-01-01T00:00:00+00:00' AND MetaData.LastUpdatedTime < '2025-01-08T00:00:00+00:00' ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 1000"
        );
    }

    #[test]
    fn window_name_list_and_clamps() {
        assert_eq!(
            window_query("Customer", true, (t(2025, 1, 1, 0, 0, 0), t(2025, 1, 8, 0, 0, 0)), Order::Time, 0, 5000),
            "SELECT * FROM Customer WHERE MetaData.LastUpdatedTime >= '2025-01-01T00:00:00+00:00' AND MetaData.LastUpdatedTime < '2025-01-08T00:00:00+00:00' AND Active IN (true,false) ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 1000"
        );
        assert!(window_query(
            "Item",
            true,
            (t(2025, 1, 1, 0, 0, 0), t(2025, 1, 2, 0, 0, 0)),
            Order::Time,
            7,
            0
        )
        .ends_with("STARTPOSITION 7 MAXRESULTS 1"));
    }

    #[test]
    fn window_by_id() {
        assert_eq!(
            window_query("Customer", true, (t(2025, 1, 1, 0, 0, 0), t(2025, 1, 8, 0, 0, 0)), Order::Id, 996, 1000),
            "SELECT * FROM Customer WHERE MetaData.LastUpdatedTime >= '2025-01-01T00:00:00+00:00' AND MetaData.LastUpdatedTime < '2025-01-08T00:00:00+00:00' AND Active IN (true,false) ORDERBY Id STARTPOSITION 996 MAXRESULTS 1000"
        );
    }

    #[test]
    fn second_queries() {
        let s = t(2024, 12, 31, 23, 59, 59);
        assert_eq!(
            second_count_query("Item", true, s),
            "SELECT count(*) FROM Item WHERE MetaData.LastUpdatedTime = '2024-12-31T23:59:59+00:00' AND Active IN (true,false)"
        );
        assert_eq!(
            second_page_query("Bill", false, s, 1001, 1000),
            "SELECT * FROM Bill WHERE MetaData.LastUpdatedTime = '2024-12-31T23:59:59+00:00' ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1001 MAXRESULTS 1000"
        );
    }

    #[test]
    fn fractional_instants_round_up() {
        let x = t(2025, 1, 1, 0, 0, 0) + TimeDelta::microseconds(1);
        assert_eq!(literal(x), "2025-01-01T00:00:01+00:00");
        assert_eq!(literal_exact(x), "2025-01-01T00:00:00.000001+00:00");
        assert_eq!(floor_second(x), t(2025, 1, 1, 0, 0, 0));
        assert_eq!(ceil_second(t(2025, 1, 1, 0, 0, 0)), t(2025, 1, 1, 0, 0, 0));
        assert_eq!(literal(t(2025, 1, 1, 0, 0, 0)), "2025-01-01T00:00:00+00:00");
    }

    #[test]
    fn entity_names() {
        assert!(is_valid_entity_name("JournalEntry"));
        assert!(!is_valid_entity_name(""));
        assert!(!is_valid_entity_name("Invoice'; --"));
        assert!(!is_valid_entity_name("Invoice1"));
    }
}
