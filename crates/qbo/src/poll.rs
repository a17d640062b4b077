//! Reading the changes of an entity Change Data Capture does not serve (TaxCode, TaxRate,
//! TimeActivity) in as few requests as its size allows: pure logic, no I/O.
//!
//! CDC answers every entity it serves in one request; an entity it does not serve costs its own
//! requests at every sync, and Intuit meters each of them. So such an entity is read:
//! - **at most once per interval** ([`due`], `qbo.sync_non_cdc_interval_ms`): a sync sooner
//!   leaves it as it is. The age that counts is its watermark's, on QuickBooks' clock when the
//!   sync knows it, which is how long it has gone unread plus the watermark's margin (so a cron
//!   schedule firing a few seconds late still finds it due);
//! - **with one query** ([`Plan`]): a transaction entity whose live local records fit a page
//!   with room to spare is read whole (`SELECT * FROM TimeActivity`, no time filter), which
//!   gives its updates and its deletes at once: a live local record the answer lacks is a
//!   candidate, confirmed with `Id IN (...)` before it is tombstoned (as the deletes hunt does).
//!   Any other (a name list, never deleted; a transaction too large for one page) is read from
//!   its watermark with no end (`LastUpdatedTime >= watermark`), a transaction's deletes then
//!   found by the hunt ([`crate::deletes`]).
//! - The answer's `time` (QuickBooks' clock) gives the new watermark as a CDC answer's does
//!   ([`crate::cdc::next_watermark`]). An answer that fills the page may have left records out:
//!   what it holds is applied, and the entity goes on through the pager as before.
//!
//! In the steady state an entity costs one request per interval (two when a whole read finds
//! a deletion to confirm).

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashSet;

use crate::cdc::{next_watermark, WATERMARK_MARGIN};
use crate::deletes::CONFIRM_BATCH;
use crate::entities::Entity;
use crate::pager::RawRecord;
use crate::query::{ids_query, since_query, whole_query, MAX_PAGE};

/// Largest live local count of a transaction entity read whole: a page (1000) less room for
/// the records created since it was last read. Past it the entity is read from its watermark.
pub const WHOLE_READ_MAX: u64 = 900;

/// Default of `qbo.sync_non_cdc_interval_ms`: 12 hours. Two reads a day of each entity CDC does
/// not serve keep an hourly sync of a company within a fifth of a re-backfill's requests (issue
/// 16's goal); set it to 0 to read them at every sync.
pub const DEFAULT_INTERVAL_MS: u64 = 12 * 3600 * 1000;

/// Whether an entity last read up to `watermark` is read again when it is `now` (QuickBooks'
/// clock when known): its watermark is at least `interval` old. An interval of 0: always.
pub fn due(watermark: DateTime<Utc>, now: DateTime<Utc>, interval: TimeDelta) -> bool {
    interval <= TimeDelta::zero() || now.signed_duration_since(watermark) >= interval
}

/// When an entity not due is due (for messages).
pub fn due_at(watermark: DateTime<Utc>, interval: TimeDelta) -> DateTime<Utc> {
    watermark.checked_add_signed(interval).unwrap_or(watermark)
}

/// An interval in ms as a person reads it, in its largest whole unit (`12 h`, `90 min`, `45 s`,
/// `1500 ms`).
pub fn interval_text(ms: u64) -> String {
    match ms {
        m if m >= 3_600_000 && m % 3_600_000 == 0 => format!("{} h", m / 3_600_000),
        m if m >= 60_000 && m % 60_000 == 0 => format!("{} min", m / 60_000),
        m if m >= 1000 && m % 1000 == 0 => format!("{} s", m / 1000),
        m => format!("{m} ms"),
    }
}

/// How an entity is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Every record, no time filter: updates and deletes in one answer.
    Whole,
    /// The records updated since the watermark.
    Since(DateTime<Utc>),
}

/// The query of one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub entity: &'static Entity,
    pub read: Read,
    pub query: String,
}

impl Plan {
    /// The read of `entity`, last read up to `watermark`, with `live_local` live records in raw.
    pub fn new(entity: &'static Entity, watermark: DateTime<Utc>, live_local: u64) -> Plan {
        if !entity.has_active && live_local <= WHOLE_READ_MAX {
            return Plan {
                entity,
                read: Read::Whole,
                query: whole_query(entity.name),
            };
        }
        Plan {
            entity,
            read: Read::Since(watermark),
            query: since_query(entity.name, entity.has_active, watermark),
        }
    }

    /// Whether an answer of `rows` records may have left records out (it filled the page).
    pub fn full(&self, rows: usize) -> bool {
        rows >= MAX_PAGE as usize
    }

    /// The watermark after a complete answer computed at `answer_time` (QuickBooks' clock)
    /// `round_trip` after it was asked.
    pub fn watermark(&self, answer_time: DateTime<Utc>, round_trip: TimeDelta) -> DateTime<Utc> {
        next_watermark(answer_time, round_trip, WATERMARK_MARGIN)
    }

    /// Whether the entity's deletes are still to be found by the hunt after a complete answer
    /// (a transaction read from its watermark; a whole read finds them itself).
    pub fn needs_hunt(&self) -> bool {
        !self.entity.has_active && matches!(self.read, Read::Since(_))
    }
}

/// The live local Ids a whole read did not return: candidates for deletion, sorted. Only local
/// records last updated before the answer was computed count (`local` holds those): a record a
/// concurrent backfill wrote later is not judged by an answer older than it.
pub fn missing(local: Vec<String>, answer: &[RawRecord]) -> Vec<String> {
    let seen: HashSet<&str> = answer.iter().map(|r| r.id.as_str()).collect();
    let mut out: Vec<String> = local
        .into_iter()
        .filter(|id| !seen.contains(id.as_str()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The confirmations of candidates: `Id IN (...)` queries of at most [`CONFIRM_BATCH`] Ids, with
/// the Ids each asks; an answer is settled by [`crate::deletes::confirm`], as the hunt's are.
pub fn confirmations(entity: &Entity, candidates: &[String]) -> Vec<(String, Vec<String>)> {
    candidates
        .chunks(CONFIRM_BATCH)
        .map(|ids| (ids_query(entity.name, ids), ids.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::lookup;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rec(id: &str) -> RawRecord {
        let body = format!(
            r#"{{"Id":"{id}","SyncToken":"0","MetaData":{{"LastUpdatedTime":"2025-01-01T00:00:00Z"}}}}"#
        );
        let raw = serde_json::value::RawValue::from_string(body).unwrap();
        RawRecord::from_page(&raw, false).unwrap()
    }

    #[test]
    fn due_counts_the_watermarks_age_and_zero_means_always() {
        let w = t("2025-03-01T00:00:00Z");
        let h12 = TimeDelta::hours(12);
        assert!(!due(w, t("2025-03-01T11:59:59Z"), h12));
        assert!(due(w, t("2025-03-01T12:00:00Z"), h12));
        assert!(due(w, t("2025-03-02T00:00:00Z"), h12));
        // a clock behind the watermark (QuickBooks' set back): not due
        assert!(!due(w, t("2025-02-28T00:00:00Z"), h12));
        assert!(due(w, w, TimeDelta::zero()));
        assert_eq!(due_at(w, h12), t("2025-03-01T12:00:00Z"));
    }

    #[test]
    fn intervals_read_in_their_largest_whole_unit() {
        assert_eq!(interval_text(DEFAULT_INTERVAL_MS), "12 h");
        assert_eq!(interval_text(90 * 60_000), "90 min");
        assert_eq!(interval_text(45_000), "45 s");
        assert_eq!(interval_text(1500), "1500 ms");
        assert_eq!(interval_text(0), "0 ms");
    }

    #[test]
    fn a_small_transaction_is_read_whole_and_a_name_list_since_its_watermark() {
        let w = t("2025-03-01T10:00:00Z");
        let ta = lookup("TimeActivity").unwrap();
        let p = Plan::new(ta, w, 600);
        assert_eq!(p.read, Read::Whole);
        assert_eq!(
            p.query,
            "SELECT * FROM TimeActivity STARTPOSITION 1 MAXRESULTS 1000"
        );
        assert!(!p.needs_hunt());
        let p = Plan::new(ta, w, WHOLE_READ_MAX);
        assert_eq!(p.read, Read::Whole);
        let p = Plan::new(ta, w, WHOLE_READ_MAX + 1);
        assert_eq!(p.read, Read::Since(w));
        assert_eq!(
            p.query,
            "SELECT * FROM TimeActivity WHERE MetaData.LastUpdatedTime >= '2025-03-01T10:00:00+00:00' STARTPOSITION 1 MAXRESULTS 1000"
        );
        assert!(p.needs_hunt());
        let tc = lookup("TaxCode").unwrap();
        let p = Plan::new(tc, w, 3);
        assert_eq!(p.read, Read::Since(w));
        assert_eq!(
            p.query,
            "SELECT * FROM TaxCode WHERE MetaData.LastUpdatedTime >= '2025-03-01T10:00:00+00:00' AND Active IN (true,false) STARTPOSITION 1 MAXRESULTS 1000"
        );
        assert!(!p.needs_hunt(), "name lists are never deleted");
    }

    #[test]
    fn a_full_answer_is_not_complete() {
        let p = Plan::new(
            lookup("TimeActivity").unwrap(),
            t("2025-03-01T10:00:00Z"),
            10,
        );
        assert!(!p.full(999));
        assert!(p.full(1000));
    }

    #[test]
    fn the_watermark_is_quickbooks_time_less_round_trip_and_margin() {
        let p = Plan::new(lookup("TaxRate").unwrap(), t("2025-03-01T10:00:00Z"), 1);
        assert_eq!(
            p.watermark(t("2025-03-01T12:00:00.700Z"), TimeDelta::milliseconds(1500)),
            t("2025-03-01T11:57:59Z")
        );
    }

    #[test]
    fn missing_ids_are_candidates_and_confirmations_settle_them() {
        let answer = vec![rec("1"), rec("3")];
        let cands = missing(
            vec!["3".into(), "2".into(), "1".into(), "4".into()],
            &answer,
        );
        assert_eq!(cands, vec!["2".to_owned(), "4".to_owned()]);
        let ta = lookup("TimeActivity").unwrap();
        let qs = confirmations(ta, &cands);
        assert_eq!(qs.len(), 1);
        assert_eq!(
            qs[0].0,
            "SELECT * FROM TimeActivity WHERE Id IN ('2','4') STARTPOSITION 1 MAXRESULTS 2"
        );
        // "4" came back (updated since: it moved), "2" did not (deleted); an answer with a
        // record not asked for is refused
        let c = crate::deletes::confirm(qs[0].1.clone(), vec![rec("4")]).unwrap();
        assert_eq!(
            c.upsert.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["4"]
        );
        assert_eq!(c.tombstone, vec!["2".to_owned()]);
        assert!(crate::deletes::confirm(qs[0].1.clone(), vec![rec("4"), rec("9")]).is_err());
        let many: Vec<String> = (0..250).map(|i| i.to_string()).collect();
        let qs = confirmations(ta, &many);
        assert_eq!(
            qs.iter().map(|(_, ids)| ids.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
    }
}
