//! Finding records deleted in QBO where Change Data Capture cannot tell (an entity it does not
//! serve, a watermark older than its 30 days, an answer at its cap): pure logic, no I/O.
//!
//! Once a sync has applied every update up to a time `E`, a raw table differs from QBO over a
//! range `[start, E)` of `LastUpdatedTime` that it once read completely only by records deleted
//! since (and by records updated after `E`, which left the range in QBO and are still in it
//! locally: they moved, they were not deleted). So a window whose local live count equals QBO's
//! `count(*)` holds no delete, and one where they differ (≠, not >: a record missing locally is
//! found the same way) is cut in two by time, each half counted on both sides, until reading it
//! costs less than cutting it further ([`read_pays`]): then its records are read (QBO has no
//! projection, so a window costs full pages), and every local Id the read did not return is a
//! candidate. A candidate is confirmed with `Id IN (...)` and no time filter before it is
//! tombstoned: one that comes back was updated after `E` and has only moved (it is upserted).
//!
//! For `d` scattered deletes among `N` records this costs about `2·d·log₂(N / page)` counts and
//! `d` pages; the rule of [`read_pays`] reads a window outright where that would cost more, so
//! the whole hunt never costs much more than reading the range again (the top window is read at
//! once when deletes are that many).
//!
//! The hunt asks its caller for what only the database knows ([`Need`]: a window's local live
//! count, then its local Ids) and for what only QBO knows ([`HuntRequest`]: counts, pages of a
//! window in `Id` order, confirmations), and hands back what to write: records to upsert (the
//! pages and confirmations return whole records) and Ids to tombstone.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, TimeDelta, Utc};

use crate::entities::Entity;
use crate::error::QboError;
use crate::pager::RawRecord;
use crate::query::{ceil_second, floor_second, ids_query, window_count_query, window_query, Order};

/// Ids asked in one confirmation (`Id IN (...)`): one page's worth is well under QBO's query
/// length limit with numeric Ids.
pub const CONFIRM_BATCH: usize = 100;

/// What the hunt needs from the database before it can go on with a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// The live local records (not tombstoned) whose `LastUpdatedTime` is in `[from, to)`.
    LocalCount {
        window: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    /// Their Ids.
    LocalIds {
        window: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// What a request of the hunt is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HuntKind {
    /// `count(*)` of a window.
    Count { window: u32 },
    /// A page of a window in `Id` order from `position`.
    Page { window: u32, position: u32 },
    /// `Id IN (...)` of a batch of candidates.
    Confirm { batch: u32 },
}

/// One request to QBO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuntRequest {
    pub kind: HuntKind,
    pub query: String,
    /// The window it reads or counts (a confirmation: the hunt's whole range).
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Requests sent, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HuntStats {
    pub counts: u64,
    pub pages: u64,
    pub confirms: u64,
    /// Candidates confirmed deleted, and confirmed to exist still (moved).
    pub deleted: u64,
    pub moved: u64,
}

/// What a confirmation settles.
#[derive(Debug, Default)]
pub struct Confirmed {
    /// Candidates QBO still has (updated after the update pass): to upsert.
    pub upsert: Vec<RawRecord>,
    /// Candidates QBO no longer has: to tombstone.
    pub tombstone: Vec<String>,
}

/// What the answer to `Id IN (asked)` settles: the records it returned exist (to upsert), the
/// Ids it did not return are gone (to tombstone). An answer holding an Id that was not asked is
/// refused: it would write a record no confirmation vouched for.
pub fn confirm(asked: Vec<String>, records: Vec<RawRecord>) -> Result<Confirmed, QboError> {
    let asked_set: HashSet<&str> = asked.iter().map(String::as_str).collect();
    if let Some(r) = records.iter().find(|r| !asked_set.contains(r.id.as_str())) {
        return Err(QboError::BadResponse(format!(
            "an Id IN query returned Id {}, which it did not ask for ({} asked)",
            crate::pager::quote_id(&r.id),
            asked.len()
        )));
    }
    let back: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
    let tombstone: Vec<String> = asked.into_iter().filter(|id| !back.contains(id)).collect();
    Ok(Confirmed {
        upsert: records,
        tombstone,
    })
}

#[derive(Debug)]
enum State {
    /// Waiting for its local count and QBO's (either may come first).
    Counting {
        local: Option<u64>,
        remote: Option<u64>,
        count_issued: bool,
    },
    /// Its pages are being read: every position up to QBO's count, all at once. In a past
    /// window records only leave (updated out of it, or deleted), so nothing lies past the
    /// count; and a record the read misses because others left before it is a candidate like a
    /// deleted one, which its confirmation tells apart.
    Reading {
        remote: u64,
        next_position: u32,
        issued_all: bool,
        flying: BTreeSet<u32>,
        seen: HashSet<String>,
    },
    /// Read: waiting for its local Ids.
    Read { seen: HashSet<String> },
}

#[derive(Debug)]
struct Window {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    state: State,
}

/// Whether reading a window of `remote` records (by QBO's count) with `differ` records differing
/// from the local count costs fewer requests than cutting it further (on a tie, cutting: a count
/// is a fifth of a page's time and carries no payload): reading takes
/// `⌈remote / page⌉` pages (at least one); cutting costs about two counts per difference per
/// halving down to a page, and a page per difference.
pub fn read_pays(remote: u64, differ: u64, page: u32) -> bool {
    let page = u64::from(page.max(1));
    if remote <= page {
        return true; // one page: nothing to gain by cutting
    }
    let read = remote.div_ceil(page);
    let mut depth = 0u64;
    let mut size = remote;
    while size > page {
        size = size.div_ceil(2);
        depth += 1;
    }
    let cut = 2 * differ * depth + differ;
    read < cut
}

/// The hunt over one entity's range `[from, to)` (see the module documentation).
#[derive(Debug)]
pub struct DeleteHunt {
    entity: &'static Entity,
    page: u32,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    windows: BTreeMap<u32, Window>,
    next_window: u32,
    candidates: Vec<String>,
    confirms: BTreeMap<u32, Vec<String>>,
    next_batch: u32,
    stats: HuntStats,
}

impl DeleteHunt {
    /// A hunt over `[from, to)` (whole seconds: `from` rounded down, `to` up) of `entity`, read in
    /// pages of `page` records. Name lists are never deleted by QBO (they become inactive, an
    /// ordinary update): a hunt over one is refused.
    pub fn new(
        entity: &'static Entity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        page: u32,
    ) -> Result<DeleteHunt, QboError> {
        if entity.has_active {
            return Err(QboError::InvalidParameter(format!(
                "{} is a name list: QuickBooks makes its records inactive, it never deletes them",
                entity.name
            )));
        }
        if !(1..=crate::query::MAX_PAGE).contains(&page) {
            return Err(QboError::InvalidParameter(format!(
                "a page of {page} records is outside 1..={}",
                crate::query::MAX_PAGE
            )));
        }
        let (from, to) = (floor_second(from), ceil_second(to));
        if to <= from {
            return Err(QboError::InvalidParameter(
                "the range's end must be later than its start".into(),
            ));
        }
        let mut h = DeleteHunt {
            entity,
            page,
            from,
            to,
            windows: BTreeMap::new(),
            next_window: 0,
            candidates: Vec::new(),
            confirms: BTreeMap::new(),
            next_batch: 0,
            stats: HuntStats::default(),
        };
        h.add_window(from, to);
        Ok(h)
    }

    fn add_window(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) {
        self.windows.insert(
            self.next_window,
            Window {
                from,
                to,
                state: State::Counting {
                    local: None,
                    remote: None,
                    count_issued: false,
                },
            },
        );
        self.next_window += 1;
    }

    /// What the database must answer now ([`DeleteHunt::set_local_count`],
    /// [`DeleteHunt::set_local_ids`]).
    pub fn needs(&self) -> Vec<Need> {
        self.windows
            .iter()
            .filter_map(|(&window, w)| match &w.state {
                State::Counting { local: None, .. } => Some(Need::LocalCount {
                    window,
                    from: w.from,
                    to: w.to,
                }),
                State::Read { .. } => Some(Need::LocalIds {
                    window,
                    from: w.from,
                    to: w.to,
                }),
                _ => None,
            })
            .collect()
    }

    fn window_mut(&mut self, window: u32) -> Result<&mut Window, QboError> {
        self.windows
            .get_mut(&window)
            .ok_or_else(|| QboError::InvalidParameter(format!("no window {window} in this hunt")))
    }

    /// The local live count of `window` ([`Need::LocalCount`]).
    pub fn set_local_count(&mut self, window: u32, n: u64) -> Result<(), QboError> {
        match &mut self.window_mut(window)?.state {
            State::Counting { local, .. } if local.is_none() => *local = Some(n),
            _ => {
                return Err(QboError::InvalidParameter(format!(
                    "window {window} did not ask for its local count"
                )))
            }
        }
        self.decide(window);
        Ok(())
    }

    /// The local live Ids of `window` ([`Need::LocalIds`]): those its read did not return become
    /// candidates.
    pub fn set_local_ids(&mut self, window: u32, ids: Vec<String>) -> Result<(), QboError> {
        let w = self.window_mut(window)?;
        let State::Read { seen } = &w.state else {
            return Err(QboError::InvalidParameter(format!(
                "window {window} did not ask for its local Ids"
            )));
        };
        let missing: Vec<String> = ids.into_iter().filter(|id| !seen.contains(id)).collect();
        self.windows.remove(&window);
        self.candidates.extend(missing);
        Ok(())
    }

    /// Both counts known: done, read, or cut in two.
    fn decide(&mut self, window: u32) {
        let page = self.page;
        let Some(w) = self.windows.get_mut(&window) else {
            return;
        };
        let State::Counting {
            local: Some(local),
            remote: Some(remote),
            ..
        } = w.state
        else {
            return;
        };
        if local == remote {
            self.windows.remove(&window);
            return;
        }
        let one_second = w.to - w.from <= TimeDelta::seconds(1);
        if one_second || read_pays(remote, local.abs_diff(remote), page) {
            w.state = State::Reading {
                remote,
                next_position: 1,
                issued_all: false,
                flying: BTreeSet::new(),
                seen: HashSet::new(),
            };
            return;
        }
        let (from, to) = (w.from, w.to);
        let mid = floor_second(from + (to - from) / 2).max(from + TimeDelta::seconds(1));
        self.windows.remove(&window);
        self.add_window(from, mid);
        self.add_window(mid, to);
    }

    /// The requests that may go now, each once (marked sent).
    pub fn ready(&mut self) -> Vec<HuntRequest> {
        let mut out = Vec::new();
        let (entity, page) = (self.entity, self.page);
        for (&window, w) in self.windows.iter_mut() {
            match &mut w.state {
                State::Counting {
                    remote: None,
                    count_issued,
                    ..
                } if !*count_issued => {
                    *count_issued = true;
                    out.push(HuntRequest {
                        kind: HuntKind::Count { window },
                        query: window_count_query(entity.name, false, w.from, w.to),
                        from: w.from,
                        to: w.to,
                    });
                }
                State::Reading {
                    remote,
                    next_position,
                    issued_all,
                    flying,
                    ..
                } => {
                    while !*issued_all {
                        let position = *next_position;
                        out.push(HuntRequest {
                            kind: HuntKind::Page { window, position },
                            query: window_query(
                                entity.name,
                                false,
                                (w.from, w.to),
                                Order::Id,
                                position,
                                page,
                            ),
                            from: w.from,
                            to: w.to,
                        });
                        flying.insert(position);
                        *next_position = position.saturating_add(page);
                        if u64::from(*next_position) > *remote {
                            *issued_all = true;
                        }
                    }
                }
                _ => {}
            }
        }
        // candidates wait for a full batch, or for the last window: a confirmation is a request
        let last = self.windows.is_empty();
        while self.candidates.len() >= CONFIRM_BATCH || (last && !self.candidates.is_empty()) {
            let take = self.candidates.len().min(CONFIRM_BATCH);
            let ids: Vec<String> = self.candidates.drain(..take).collect();
            let batch = self.next_batch;
            self.next_batch += 1;
            out.push(HuntRequest {
                kind: HuntKind::Confirm { batch },
                query: ids_query(entity.name, &ids),
                from: self.from,
                to: self.to,
            });
            self.confirms.insert(batch, ids);
        }
        for r in &out {
            match r.kind {
                HuntKind::Count { .. } => self.stats.counts += 1,
                HuntKind::Page { .. } => self.stats.pages += 1,
                HuntKind::Confirm { .. } => self.stats.confirms += 1,
            }
        }
        out
    }

    /// QBO's count for the request `req` (a [`HuntKind::Count`]).
    pub fn accept_count(&mut self, req: &HuntRequest, n: u64) -> Result<(), QboError> {
        let HuntKind::Count { window } = req.kind else {
            return Err(QboError::InvalidParameter(
                "a count for a request that is not one".into(),
            ));
        };
        match &mut self.window_mut(window)?.state {
            State::Counting {
                remote,
                count_issued: true,
                ..
            } if remote.is_none() => *remote = Some(n),
            _ => {
                return Err(QboError::InvalidParameter(format!(
                    "window {window} was not counting"
                )))
            }
        }
        self.decide(window);
        Ok(())
    }

    /// The records of a page `req` asked for (a [`HuntKind::Page`]); returns them, to upsert
    /// (they exist in QBO: the upsert's `SyncToken` rule skips those already written).
    pub fn accept_page(
        &mut self,
        req: &HuntRequest,
        records: Vec<RawRecord>,
    ) -> Result<Vec<RawRecord>, QboError> {
        let HuntKind::Page { window, position } = req.kind else {
            return Err(QboError::InvalidParameter(
                "a page for a request that is not one".into(),
            ));
        };
        let (page, name) = (self.page, self.entity.name);
        let w = self.window_mut(window)?;
        let (from, to) = (w.from, w.to);
        let State::Reading {
            flying,
            issued_all,
            seen,
            ..
        } = &mut w.state
        else {
            return Err(QboError::InvalidParameter(format!(
                "window {window} was not being read"
            )));
        };
        if !flying.remove(&position) {
            return Err(QboError::InvalidParameter(format!(
                "window {window} did not ask for STARTPOSITION {position}"
            )));
        }
        if records.len() > page as usize {
            return Err(QboError::BadResponse(format!(
                "a page of MAXRESULTS {page} held {} records",
                records.len()
            )));
        }
        crate::pager::check_in_range(name, &records, from, to)?;
        seen.extend(records.iter().map(|r| r.id.clone()));
        if flying.is_empty() && *issued_all {
            let seen = std::mem::take(seen);
            w.state = State::Read { seen };
        }
        Ok(records)
    }

    /// The records a confirmation `req` returned (a [`HuntKind::Confirm`]): those asked for that
    /// came back moved; the others are deleted.
    pub fn accept_confirm(
        &mut self,
        req: &HuntRequest,
        records: Vec<RawRecord>,
    ) -> Result<Confirmed, QboError> {
        let HuntKind::Confirm { batch } = req.kind else {
            return Err(QboError::InvalidParameter(
                "a confirmation for a request that is not one".into(),
            ));
        };
        let asked = self.confirms.remove(&batch).ok_or_else(|| {
            QboError::InvalidParameter(format!("no confirmation {batch} in flight"))
        })?;
        let c = confirm(asked, records)?;
        self.stats.deleted += c.tombstone.len() as u64;
        self.stats.moved += c.upsert.len() as u64;
        Ok(c)
    }

    /// Nothing left to ask, read or confirm.
    pub fn is_done(&self) -> bool {
        self.windows.is_empty() && self.candidates.is_empty() && self.confirms.is_empty()
    }

    /// Requests sent so far, and what the confirmations found.
    pub fn stats(&self) -> HuntStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::lookup;
    use crate::pager::Payload;
    use serde_json::value::RawValue;
    use std::collections::HashMap;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rec(id: u64, lut: DateTime<Utc>) -> RawRecord {
        RawRecord {
            id: id.to_string(),
            sync_token: 0,
            last_updated: lut,
            payload: Payload::Text(RawValue::from_string(format!("{{\"Id\":\"{id}\"}}")).unwrap()),
        }
    }

    /// QBO (Id -> LastUpdatedTime of the live records) and the raw table's live rows, and a
    /// driver that runs a hunt between them as the executor will: the database first, then the
    /// requests, answered in the order sent.
    struct World {
        qbo: HashMap<u64, DateTime<Utc>>,
        local: HashMap<u64, DateTime<Utc>>,
        upserted: BTreeSet<u64>,
        tombstoned: BTreeSet<u64>,
    }

    impl World {
        fn in_window(
            m: &HashMap<u64, DateTime<Utc>>,
            from: DateTime<Utc>,
            to: DateTime<Utc>,
        ) -> Vec<u64> {
            let mut v: Vec<u64> = m
                .iter()
                .filter(|(_, t)| **t >= from && **t < to)
                .map(|(i, _)| *i)
                .collect();
            v.sort_unstable();
            v
        }

        fn run(&mut self, h: &mut DeleteHunt) {
            let page = h.page as usize;
            for _ in 0..100_000 {
                for need in h.needs() {
                    match need {
                        Need::LocalCount { window, from, to } => h
                            .set_local_count(
                                window,
                                Self::in_window(&self.local, from, to).len() as u64,
                            )
                            .unwrap(),
                        Need::LocalIds { window, from, to } => h
                            .set_local_ids(
                                window,
                                Self::in_window(&self.local, from, to)
                                    .iter()
                                    .map(u64::to_string)
                                    .collect(),
                            )
                            .unwrap(),
                    }
                }
                let reqs = h.ready();
                if reqs.is_empty() && h.needs().is_empty() {
                    assert!(h.is_done(), "stuck: {h:?}");
                    return;
                }
                for r in reqs {
                    match &r.kind {
                        HuntKind::Count { .. } => {
                            let n = Self::in_window(&self.qbo, r.from, r.to).len() as u64;
                            h.accept_count(&r, n).unwrap();
                        }
                        HuntKind::Page { position, .. } => {
                            let ids = Self::in_window(&self.qbo, r.from, r.to);
                            let start = (*position as usize - 1).min(ids.len());
                            let end = (start + page).min(ids.len());
                            let recs: Vec<RawRecord> = ids[start..end]
                                .iter()
                                .map(|i| rec(*i, self.qbo[i]))
                                .collect();
                            for x in h.accept_page(&r, recs).unwrap() {
                                let id: u64 = x.id.parse().unwrap();
                                self.local.insert(id, x.last_updated);
                                self.upserted.insert(id);
                            }
                        }
                        HuntKind::Confirm { .. } => {
                            let asked: Vec<u64> = r
                                .query
                                .split('\'')
                                .skip(1)
                                .step_by(2)
                                .map(|s| s.parse().unwrap())
                                .collect();
                            let back: Vec<RawRecord> = asked
                                .iter()
                                .filter_map(|i| self.qbo.get(i).map(|t| rec(*i, *t)))
                                .collect();
                            let c = h.accept_confirm(&r, back).unwrap();
                            for x in c.upsert {
                                let id: u64 = x.id.parse().unwrap();
                                self.local.insert(id, x.last_updated);
                                self.upserted.insert(id);
                            }
                            for id in c.tombstone {
                                let id: u64 = id.parse().unwrap();
                                self.local.remove(&id);
                                self.tombstoned.insert(id);
                            }
                        }
                    }
                }
            }
            panic!("the hunt never ended");
        }
    }

    /// `n` records one every 10 minutes from 2025-01-01, in QBO and locally alike.
    fn world(n: u64) -> World {
        let t0 = at("2025-01-01T00:00:00Z");
        let qbo: HashMap<u64, DateTime<Utc>> = (1..=n)
            .map(|i| (i, t0 + TimeDelta::minutes(10 * i as i64)))
            .collect();
        World {
            local: qbo.clone(),
            qbo,
            upserted: BTreeSet::new(),
            tombstoned: BTreeSet::new(),
        }
    }

    fn invoice() -> &'static Entity {
        lookup("Invoice").unwrap()
    }

    fn range() -> (DateTime<Utc>, DateTime<Utc>) {
        (at("2025-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
    }

    #[test]
    fn nothing_deleted_costs_one_count() {
        let mut w = world(100_000);
        let mut h = DeleteHunt::new(invoice(), range().0, range().1, 1000).unwrap();
        w.run(&mut h);
        assert_eq!(
            h.stats(),
            HuntStats {
                counts: 1,
                ..HuntStats::default()
            }
        );
        assert!(w.tombstoned.is_empty());
    }

    #[test]
    fn scattered_deletes_are_found_exactly_at_about_two_counts_per_halving() {
        let mut w = world(100_000);
        let deleted = [17u64, 20_001, 55_555, 99_999];
        for d in deleted {
            w.qbo.remove(&d);
        }
        let mut h = DeleteHunt::new(invoice(), range().0, range().1, 1000).unwrap();
        w.run(&mut h);
        assert_eq!(w.tombstoned, deleted.into_iter().collect());
        let s = h.stats();
        println!("4 deletes among 100,000: {s:?}");
        // at most what cutting down to a page would cost, 2·d·log2(N / 1000) counts, d pages and a
        // confirmation (2 x 4 x 7 + 4 + 1 = 61), where reading the range again costs 100 pages
        assert!(s.counts + s.pages + s.confirms <= 61, "{s:?}");
        assert_eq!((s.confirms, s.deleted, s.moved), (1, 4, 0));
    }

    #[test]
    fn a_record_updated_after_the_pass_moved_and_is_not_tombstoned() {
        let mut w = world(20_000);
        // updated in QBO after the update pass: its LastUpdatedTime left the range
        w.qbo.insert(777, at("2027-06-01T00:00:00Z"));
        w.qbo.remove(&778);
        let mut h = DeleteHunt::new(invoice(), range().0, range().1, 1000).unwrap();
        w.run(&mut h);
        assert_eq!(w.tombstoned, BTreeSet::from([778]));
        assert!(
            w.upserted.contains(&777),
            "the moved record is written again"
        );
        assert_eq!(w.local[&777], at("2027-06-01T00:00:00Z"));
        let s = h.stats();
        assert_eq!((s.deleted, s.moved), (1, 1));
    }

    #[test]
    fn a_record_missing_locally_is_found_the_same_way() {
        let mut w = world(20_000);
        w.local.remove(&4242);
        let mut h = DeleteHunt::new(invoice(), range().0, range().1, 1000).unwrap();
        w.run(&mut h);
        assert!(w.tombstoned.is_empty());
        assert!(w.upserted.contains(&4242));
        assert_eq!(w.local.len(), 20_000);
    }

    #[test]
    fn many_deletes_read_the_range_instead_of_cutting_it() {
        let mut w = world(30_000);
        // one in ten deleted: cutting would cost far more than 30 pages
        for i in (1..=30_000u64).step_by(10) {
            w.qbo.remove(&i);
        }
        let mut h = DeleteHunt::new(invoice(), range().0, range().1, 1000).unwrap();
        w.run(&mut h);
        assert_eq!(w.tombstoned.len(), 3_000);
        assert!(w.tombstoned.iter().all(|i| i % 10 == 1));
        let s = h.stats();
        println!("3,000 deletes among 30,000: {s:?}");
        // one count, the range read once (27 pages), and the candidates confirmed
        assert_eq!((s.counts, s.pages, s.confirms), (1, 27, 30));
    }

    #[test]
    fn a_record_the_read_missed_is_confirmed_never_guessed() {
        // QBO counts 10 in the window; its pages return 9 (one left between the count and the
        // read): the local records not returned are asked for by Id, none is tombstoned blindly
        let mut h = DeleteHunt::new(invoice(), range().0, range().1, 10).unwrap();
        h.set_local_count(0, 12).unwrap();
        let c = h.ready();
        h.accept_count(&c[0], 10).unwrap();
        let p = h.ready();
        assert_eq!(p.len(), 1, "one page holds what the count says");
        let t = at("2025-06-01T00:00:00Z");
        h.accept_page(&p[0], (1..=9).map(|i| rec(i, t)).collect())
            .unwrap();
        assert!(h.ready().is_empty(), "nothing is read past the count");
        assert_eq!(h.needs().len(), 1);
        h.set_local_ids(0, (1..=12).map(|i| i.to_string()).collect())
            .unwrap();
        let conf = h.ready();
        assert_eq!(
            conf[0].query,
            "SELECT * FROM Invoice WHERE Id IN ('10','11','12') STARTPOSITION 1 MAXRESULTS 3"
        );
        let c = h
            .accept_confirm(&conf[0], vec![rec(10, at("2026-12-01T00:00:00Z"))])
            .unwrap();
        assert_eq!(c.tombstone, ["11", "12"]);
        assert_eq!(c.upsert.len(), 1);
        assert!(h.is_done());
        assert_eq!(h.stats().counts + h.stats().pages + h.stats().confirms, 3);
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let (a, b) = range();
        assert_eq!(
            DeleteHunt::new(lookup("Customer").unwrap(), a, b, 1000)
                .unwrap_err()
                .to_string(),
            "Customer is a name list: QuickBooks makes its records inactive, it never deletes them"
        );
        assert!(DeleteHunt::new(invoice(), b, a, 1000).is_err());
        assert!(DeleteHunt::new(invoice(), a, b, 0).is_err());
        let mut h = DeleteHunt::new(invoice(), a, b, 1000).unwrap();
        h.set_local_count(0, 5).unwrap();
        let c = h.ready();
        h.accept_count(&c[0], 4).unwrap();
        let p = h.ready();
        // a record the confirmation did not ask for is refused
        h.accept_page(&p[0], vec![rec(1, at("2025-02-01T00:00:00Z"))])
            .unwrap();
        h.set_local_ids(0, vec!["1".into(), "2".into()]).unwrap();
        let conf = h.ready();
        let e = h
            .accept_confirm(&conf[0], vec![rec(9, at("2025-02-01T00:00:00Z"))])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "unusable response from QuickBooks: an Id IN query returned Id 9, which it did not ask for (1 asked)"
        );
    }

    #[test]
    fn read_pays_where_cutting_would_cost_more() {
        assert!(read_pays(900, 1, 1000));
        assert!(!read_pays(100_000, 4, 1000));
        assert!(read_pays(100_000, 10_000, 1000));
        assert!(read_pays(0, 3, 1000));
    }
}
