//! Reading a past window by STARTPOSITION, every page at once, proven complete page by page:
//! pure logic, no I/O.
//!
//! A time cursor ([`crate::pager`]) needs the answer to page *k* before it can ask for page
//! *k + 1*, so it reads one page per round trip; concurrency then has to come from cutting the
//! window into slices, and every slice costs a `count(*)` to place and a short last page to end:
//! requests that carry no data (issue 15 measured +61 % over the data pages). Offsets have no such
//! chain: once `count(*)` of the window says how many records it holds, every page
//! (`STARTPOSITION 1, 1 + s, 1 + 2s, ...`) can be in flight together, and the window costs its
//! data pages, one count and the rows of the overlaps below.
//!
//! Offsets are unsafe in general (QBO orders ties of one `LastUpdatedTime` differently from one
//! request to the next, and a record updated while the window is read leaves it and shifts every
//! later position), so each page is used only where it is *proven* to continue what was taken
//! before it, with the time cursor's own rule:
//!
//! - Pages overlap: consecutive pages start `s = size - overlap` records apart, so page *k + 1*
//!   repeats the last `overlap` records of page *k* when nothing moved.
//! - The window is taken in offset order. The **frontier** is the time cursor's state: every
//!   second before the frontier second `f` is taken, and the Ids taken at `f` are remembered.
//! - Page *k + 1*, whose records span seconds `F ..= L`, continues the frontier when `F < f` and
//!   (`L > f` or the page is short). QBO orders by `LastUpdatedTime`, so within one answer the
//!   records of a second are contiguous: a page that starts before second `f` and ends after it
//!   holds all of `f`, and every record after `f` up to its end, *whatever happened between the
//!   two requests*: ties shuffled within a second do not matter (the second is whole in the page),
//!   and records that left the window only moved the page's start earlier. Its records after `f`,
//!   and those at `f` not taken before (or at a higher SyncToken), are taken; the frontier moves
//!   to `L`. A short page reached the end of the window: the window is complete.
//! - A page that does not continue the frontier (its first second is `f` or later: records left
//!   the window and the overlap was used up, or a second holding more records than the overlap
//!   sits on the boundary; or it ends at `f`, a second wider than the page) is not guessed at: the
//!   seconds it leaves in doubt, `[f, F]` (or `f` alone), are read by a time-cursor [`Pager`]
//!   resumed from the frontier, with every guarantee of the pager (ties, a bulk second read by
//!   count and passes, Id budget). Its end is the new frontier, and the same page is looked at
//!   again: it now continues it, or lies wholly before it and is skipped as re-fetched. The pages
//!   already in flight are never thrown away.
//! - A page that is empty where records were expected (the window shrank) is the same doubt: the
//!   pager reads from the frontier to the end of the window.
//!
//! Records only leave a window while it is read (an update moves a record to the present, a
//! delete removes it), which is what makes "starts before `f`" prove that nothing was skipped;
//! records enter it only at its live end (created or updated in seconds that QBO's clock, maybe
//! behind ours, still stamps inside the window). An entering record only moves later pages'
//! contents later (more overlap, never a gap), and one entering a second already taken arrives
//! with the next run, as README says of live seconds for the time cursor.
//!
//! # Memory
//! Pages answered before the pages ahead of them wait here, at most [`OffsetWindow::held`] of
//! them; the caller counts them with its pages waiting to be written, and this window never has
//! more than `lookahead` (its share of the requests in flight) pages issued past the first one it
//! waits for. The Ids at the frontier are at most one page's.
//!
//! # What is saved
//! [`OffsetWindow::persisted_state`] is a [`PagerState`]: the frontier in window mode (or the
//! fallback pager's own state while it reads), so a resume continues with a time-cursor
//! [`Pager`] from exactly what was written; pages answered but not yet taken are read again.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};

use crate::budget::IdBudget;
use crate::error::QboError;
use crate::pager::{
    dedupe, Accepted, Pager, PagerMode, PagerState, PagerStats, RawRecord, Request, RequestKind,
};
use crate::plan::Chunk;
use crate::query::{floor_second, literal, literal_exact, window_query};

/// Pages of this size or more may be read by offsets; smaller ones leave too little room for an
/// overlap and keep the time cursor.
pub const MIN_OFFSET_PAGE: u32 = 20;

/// The `part` of an offset page's request: this bit and the page's index. A fallback pager's parts
/// (a STARTPOSITION, a batch number) stay below [`SPLIT_PART`].
const OFFSET_PART: u32 = 1 << 31;
/// The `part` of a request of a second split by `TxnDate`: this bit and the part's index, or
/// [`SPLIT_COUNT`] for the second's count.
const SPLIT_PART: u32 = 1 << 30;
const SPLIT_COUNT: u32 = SPLIT_PART | (SPLIT_PART - 1);
/// A second split by `TxnDate` has at most this many parts (one request each).
const MAX_SPLIT_PARTS: usize = 16;

/// The least overlap between consecutive pages: 1 % of the page (10 of 1000), at least 2. Each
/// record of overlap costs a row, never a request; a second on a boundary holding more records
/// than the overlap costs one small request of the fallback pager.
pub fn overlap(size: u32) -> u32 {
    (size / 100).max(2)
}

/// The overlap of a window's first pages: 4 % (40 of 1000), halved down to [`overlap`] while
/// boundaries are proven (see `OffsetWindow::adapt`). Replayed on the emulator's data (100,000
/// invoices, about a third of them in seconds holding more than 10) by
/// `bench/offsets_bound.py`, starting at 1 % cost 22-23 requests per 100 data pages and starting
/// at 4 % 13-19, while data without bursts pays at most 2 pages per 100 for the first 4 %.
pub fn first_overlap(size: u32) -> u32 {
    (size / 25).max(overlap(size))
}

fn one_second() -> TimeDelta {
    TimeDelta::seconds(1)
}

/// A window `[start, end)` read by offsets (see the module documentation).
#[derive(Debug)]
pub struct OffsetWindow {
    entity: String,
    name_list: bool,
    chunk: Chunk,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    size: u32,
    /// Records the window held when counted: pages start within it (and one at a time past it
    /// while pages come back full).
    count: u64,
    /// STARTPOSITION of every page issued, by index.
    positions: Vec<u32>,
    /// Records the next page issued repeats of the page before it (see [`overlap`]).
    overlap: u32,
    /// Boundaries proven in a row since the overlap last changed.
    proven: u32,
    /// Pages before this one have been judged for the overlap.
    judged: u32,
    /// The last page taken was full and every page issued is taken: one more page goes out.
    extend: bool,
    /// Next page to issue, and next to take (in order).
    next_issue: u32,
    next_take: u32,
    /// Most pages issued past the next one to take.
    lookahead: u32,
    /// Offset pages issued and not answered.
    flying: BTreeSet<u32>,
    /// Pages answered before the ones ahead of them.
    held: BTreeMap<u32, Vec<RawRecord>>,
    /// The frontier (window mode): seconds before `cursor` taken; Ids taken at `cursor`.
    frontier: PagerState,
    /// The time-cursor pager reading seconds in doubt, up to its own end.
    fallback: Option<Box<Pager>>,
    /// Transactions: a second holding more than a page is split by `TxnDate`.
    by_txn_date: bool,
    /// The second being read by `TxnDate` parts.
    split: Option<Split>,
    /// Window complete.
    done: bool,
    /// Records released by a fallback that completed on a count, for [`OffsetWindow::take_released`].
    released: Option<Accepted>,
    live_edge: Option<DateTime<Utc>>,
    ids: Option<IdBudget>,
    stats: PagerStats,
    /// Fallback pagers started (seconds in doubt read by time cursor).
    fallbacks: u64,
    /// Seconds split by `TxnDate`.
    splits: u64,
}

/// A second holding more than a page, read as parts split by `TxnDate` (transactions): its
/// `count(*)` first, then one page per part, all at once. Every record of the second has one
/// `TxnDate`, so the parts hold every record once; a part that is short is complete. When every
/// part is short and they hold at least the count (taken before them: records only leave a past
/// second), the second is complete; otherwise (a part of a page or more, records without a
/// `TxnDate`, or records that left meanwhile) the time cursor's STARTPOSITION passes read the
/// rest, with every Id taken so far remembered.
#[derive(Debug)]
struct Split {
    second: DateTime<Utc>,
    /// Part `i` covers `TxnDate` in `[cuts[i - 1], cuts[i])`, open at both ends.
    cuts: Vec<chrono::NaiveDate>,
    count: Option<u64>,
    count_issued: bool,
    next_issue: u32,
    flying: BTreeSet<u32>,
    answered: u32,
    /// Distinct Ids the parts returned.
    ids: BTreeSet<String>,
    /// A part came back full.
    overflow: bool,
}

impl Split {
    fn parts(&self) -> u32 {
        self.cuts.len() as u32 + 1
    }
}

impl OffsetWindow {
    /// Reads the window `[chunk.start, chunk.end)` (whole seconds), which held `count` records
    /// when counted, `size` records a page (at least [`MIN_OFFSET_PAGE`]).
    pub fn new(
        entity: &str,
        name_list: bool,
        chunk: Chunk,
        size: u32,
        count: u64,
        lookahead: u32,
    ) -> Result<OffsetWindow, QboError> {
        if !(MIN_OFFSET_PAGE..=crate::query::MAX_PAGE).contains(&size) {
            return Err(QboError::InvalidParameter(format!(
                "offsets: a page of {size} records is outside {MIN_OFFSET_PAGE}..={}",
                crate::query::MAX_PAGE
            )));
        }
        let (start, end) = (chunk.start, chunk.end);
        if end <= start {
            return Err(QboError::InvalidParameter(
                "offsets: the window's end must be later than its start".into(),
            ));
        }
        Ok(OffsetWindow {
            entity: entity.to_string(),
            name_list,
            chunk,
            start,
            end,
            size,
            count,
            positions: Vec::new(),
            overlap: first_overlap(size),
            proven: 0,
            judged: 0,
            extend: false,
            next_issue: 0,
            next_take: 0,
            lookahead: lookahead.max(1),
            flying: BTreeSet::new(),
            held: BTreeMap::new(),
            frontier: PagerState {
                cursor: start,
                seen_at_cursor: BTreeMap::new(),
                mode: PagerMode::Window,
                ids_in_table: false,
            },
            fallback: None,
            splits: 0,
            by_txn_date: crate::entities::lookup(entity)
                .is_ok_and(|e| e.kind == crate::entities::Kind::Transaction),
            split: None,
            done: false,
            released: None,
            live_edge: None,
            ids: None,
            stats: PagerStats::default(),
            fallbacks: 0,
        })
    }

    /// STARTPOSITION of the page after one starting at `position`.
    fn next_position(&self, position: u32) -> u32 {
        position.saturating_add(self.size - self.overlap)
    }

    /// The overlap after a boundary: doubled (up to a quarter of the page) when a second wider
    /// than it sat on the boundary, halved (down to [`overlap`]) after 16 boundaries proven in a
    /// row. Data with bursts of ties pays in rows (cheap) instead of requests; data without pays
    /// 1 %. Pages already issued keep their positions.
    fn adapt(&mut self, proven: bool) {
        if proven {
            self.proven += 1;
            if self.proven >= 16 {
                self.overlap = (self.overlap / 2).max(overlap(self.size));
                self.proven = 0;
            }
        } else {
            self.overlap = (self.overlap * 2).min(self.size / 4);
            self.proven = 0;
        }
    }

    /// Pages answered and waiting for those ahead of them (held in memory).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Fallback pagers started so far.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks
    }

    /// Seconds split by `TxnDate` so far.
    pub fn splits(&self) -> u64 {
        self.splits
    }

    /// See [`Pager::set_live_edge`].
    pub fn set_live_edge(&mut self, edge: DateTime<Utc>) {
        self.live_edge = Some(edge);
        if let Some(p) = &mut self.fallback {
            p.set_live_edge(edge);
        }
    }

    /// See [`Pager::set_id_budget`] (for the fallback pager; the frontier holds at most a page's
    /// Ids).
    pub fn set_id_budget(&mut self, budget: IdBudget) {
        if let Some(p) = &mut self.fallback {
            p.set_id_budget(budget.clone());
        }
        self.ids = Some(budget);
    }

    /// True when the window is complete and nothing of it is in flight.
    pub fn is_done(&self) -> bool {
        self.done && self.flying.is_empty() && self.fallback.is_none() && self.split.is_none()
    }

    /// True while the fallback pager reads a second by STARTPOSITION.
    pub fn in_second_mode(&self) -> bool {
        self.split.is_some() || self.fallback.as_ref().is_some_and(|p| p.in_second_mode())
    }

    /// Totals, the fallback pagers' included.
    pub fn stats(&self) -> PagerStats {
        let mut s = self.stats;
        if let Some(p) = &self.fallback {
            s += p.stats();
        }
        s
    }

    /// What a resume continues from (see the module documentation).
    pub fn persisted_state(&self) -> PagerState {
        // Done only once nothing is in flight: the slice is complete when its state says so
        if self.is_done() {
            return PagerState {
                cursor: self.end,
                seen_at_cursor: BTreeMap::new(),
                mode: PagerMode::Done,
                ids_in_table: false,
            };
        }
        match &self.fallback {
            // never Done: the pager ends where the window goes on (it is replaced once done)
            Some(p) if !p.is_done() => p.persisted_state(),
            _ => self.frontier.clone(),
        }
    }

    /// The requests that may go now (see [`Pager::ready`]): the fallback pager's, then offset
    /// pages in order, at most `lookahead` past the next page to take.
    pub fn ready(&self, max: usize) -> Result<Vec<Request>, QboError> {
        let mut out = match &self.fallback {
            Some(p) => p.ready(max)?,
            None => Vec::new(),
        };
        if let Some(sp) = &self.split {
            let s = sp.second;
            let next = s + one_second();
            if !sp.count_issued && out.len() < max {
                out.push(Request {
                    kind: RequestKind::SecondCount,
                    query: crate::query::second_count_query(&self.entity, self.name_list, s),
                    from: s,
                    to: next,
                    start_position: 0,
                    max_results: 0,
                    part: SPLIT_COUNT,
                });
            }
            // the parts once the count is in (taken before them: see Split)
            let mut i = sp.next_issue;
            while sp.count.is_some() && out.len() < max && i < sp.parts() {
                let from = (i > 0).then(|| sp.cuts[i as usize - 1]);
                let to = sp.cuts.get(i as usize).copied();
                out.push(Request {
                    kind: RequestKind::SecondPage,
                    query: crate::query::second_txn_date_query(
                        &self.entity,
                        s,
                        from,
                        to,
                        self.size,
                    ),
                    from: s,
                    to: next,
                    start_position: 1,
                    max_results: self.size,
                    part: SPLIT_PART | i,
                });
                i += 1;
            }
        }
        let mut k = self.next_issue;
        let mut position = match self.positions.last() {
            Some(p) => self.next_position(*p),
            None => 1,
        };
        while out.len() < max
            && !self.done
            && (u64::from(position) <= self.count || (self.extend && k == self.next_issue))
            && k < self.next_take.saturating_add(self.lookahead)
        {
            let start_position = position;
            position = self.next_position(position);
            out.push(Request {
                kind: RequestKind::Window,
                query: window_query(
                    &self.entity,
                    self.name_list,
                    self.start,
                    self.end,
                    start_position,
                    self.size,
                ),
                from: self.start,
                to: self.end,
                start_position,
                max_results: self.size,
                part: OFFSET_PART | k,
            });
            k += 1;
        }
        Ok(out)
    }

    /// Records that `req` (from [`OffsetWindow::ready`]) is being sent.
    pub fn issue(&mut self, req: &Request) -> Result<(), QboError> {
        if req.part & OFFSET_PART == 0 && req.part & SPLIT_PART != 0 {
            let Some(sp) = &mut self.split else {
                return Err(QboError::InvalidParameter(
                    "offsets: a request of no split second was issued".into(),
                ));
            };
            if req.part == SPLIT_COUNT && !sp.count_issued {
                sp.count_issued = true;
                return Ok(());
            }
            let i = req.part & !SPLIT_PART;
            if i != sp.next_issue || sp.count.is_none() {
                return Err(QboError::InvalidParameter(format!(
                    "offsets: part {i} of a split second issued out of turn"
                )));
            }
            sp.next_issue += 1;
            sp.flying.insert(i);
            return Ok(());
        }
        if req.part & OFFSET_PART == 0 {
            return match &mut self.fallback {
                Some(p) => p.issue(req),
                None => Err(QboError::InvalidParameter(
                    "offsets: a request of no fallback pager was issued".into(),
                )),
            };
        }
        let k = req.part & !OFFSET_PART;
        if k != self.next_issue {
            return Err(QboError::InvalidParameter(format!(
                "offsets: page {k} issued where {} was next",
                self.next_issue
            )));
        }
        self.next_issue += 1;
        self.extend = false;
        self.positions.push(req.start_position);
        self.flying.insert(k);
        Ok(())
    }

    /// Feeds the answer to the page request `part`; returns what can be taken now (the records of
    /// this and of any held pages it unblocks, or nothing while an earlier page is awaited).
    pub fn accept_part(&mut self, part: u32, page: Vec<RawRecord>) -> Result<Accepted, QboError> {
        let mut out = Accepted {
            records: Vec::new(),
            refetched: 0,
            duplicates: 0,
            done: false,
            second_ids: None,
        };
        if part & OFFSET_PART == 0 && part & SPLIT_PART != 0 {
            self.take_split_part(part & !SPLIT_PART, page, &mut out)?;
        } else if part & OFFSET_PART == 0 {
            let Some(p) = &mut self.fallback else {
                return Err(QboError::InvalidParameter(
                    "offsets: a page for no fallback pager".into(),
                ));
            };
            let a = p.accept_part(part, page)?;
            merge(&mut out, a);
            self.after_fallback_step();
        } else {
            let k = part & !OFFSET_PART;
            if !self.flying.remove(&k) {
                return Err(QboError::InvalidParameter(format!(
                    "offsets: an answer to page {k} which is not in flight"
                )));
            }
            if let Some(bad) = page
                .iter()
                .find(|r| r.last_updated < self.start || r.last_updated >= self.end)
            {
                return Err(QboError::BadResponse(format!(
                    "{} record Id {} has LastUpdatedTime {} outside the requested range [{}, {})",
                    self.entity,
                    bad.id,
                    literal_exact(bad.last_updated),
                    literal(self.start),
                    literal(self.end)
                )));
            }
            self.stats.pages += 1;
            if self.done || k < self.next_take {
                // the window was completed without it (a fallback read to its end)
                self.stats.refetched += page.len() as u64;
                out.refetched += page.len() as u64;
            } else {
                self.held.insert(k, page);
            }
        }
        self.advance(&mut out)?;
        out.done = self.is_done();
        Ok(out)
    }

    /// Feeds a count the fallback pager asked for (see [`Pager::accept_count_part`]). Records
    /// this releases (held pages it unblocked) wait for [`OffsetWindow::take_released`].
    pub fn accept_count_part(&mut self, part: u32, count: u64) -> Result<(), QboError> {
        if part == SPLIT_COUNT {
            let Some(sp) = &mut self.split else {
                return Err(QboError::InvalidParameter(
                    "offsets: a count for no split second".into(),
                ));
            };
            if !sp.count_issued || sp.count.is_some() {
                return Err(QboError::InvalidParameter(
                    "offsets: a split second's count answered twice".into(),
                ));
            }
            sp.count = Some(count);
            self.stats.counts += 1;
            return Ok(());
        }
        let Some(p) = &mut self.fallback else {
            return Err(QboError::InvalidParameter(
                "offsets: a count for no fallback pager".into(),
            ));
        };
        p.accept_count_part(part, count)?;
        self.after_fallback_step();
        let mut out = self.released.take().unwrap_or(Accepted {
            records: Vec::new(),
            refetched: 0,
            duplicates: 0,
            done: false,
            second_ids: None,
        });
        self.advance(&mut out)?;
        out.done = self.is_done();
        if !out.records.is_empty() || out.refetched > 0 {
            self.released = Some(out);
        }
        Ok(())
    }

    /// Records released by the last count (see [`OffsetWindow::accept_count_part`]), to be written
    /// like a page's.
    pub fn take_released(&mut self) -> Option<Accepted> {
        self.released.take()
    }

    /// A fallback pager that completed hands the frontier back: every second before its end is
    /// taken.
    fn after_fallback_step(&mut self) {
        let Some(p) = &self.fallback else { return };
        if !p.is_done() {
            return;
        }
        let p = self.fallback.take().expect("checked");
        self.stats += p.stats();
        let end = p.chunk().end;
        self.frontier = PagerState {
            cursor: end,
            seen_at_cursor: BTreeMap::new(),
            mode: PagerMode::Window,
            ids_in_table: false,
        };
        if end >= self.end {
            self.done = true;
            // pages answered past the end are not needed any more
            self.held.clear();
        }
    }

    /// Reads `[frontier, until)` with a time-cursor pager resumed from the frontier.
    fn start_fallback(&mut self, until: DateTime<Utc>) -> Result<(), QboError> {
        let c = Chunk {
            index: self.chunk.index,
            start: self.frontier.cursor,
            end: until.min(self.end),
        };
        let mut p = Pager::resume(
            &self.entity,
            self.name_list,
            c,
            self.size,
            self.frontier.clone(),
        )?;
        if let Some(e) = self.live_edge {
            p.set_live_edge(e);
        }
        if let Some(b) = &self.ids {
            p.set_id_budget(b.clone());
        }
        self.fallback = Some(Box::new(p));
        self.fallbacks += 1;
        Ok(())
    }

    /// Starts reading the frontier second, which holds more than a page, as parts split by
    /// `TxnDate` at the dates the pages in hand show for it (see [`Split`]); `false` when they
    /// show fewer than two dates (nothing to split on).
    fn start_split(&mut self) -> bool {
        let f = self.frontier.cursor;
        let mut dates: Vec<chrono::NaiveDate> = self
            .held
            .values()
            .flatten()
            .filter(|r| floor_second(r.last_updated) == f)
            .filter_map(|r| r.txn_date)
            .collect();
        dates.sort_unstable();
        let mut distinct = dates.clone();
        distinct.dedup();
        if distinct.len() < 2 {
            return false;
        }
        // one part a date; more dates than parts: cut at equal shares of the dates seen
        let cuts: Vec<chrono::NaiveDate> = if distinct.len() <= MAX_SPLIT_PARTS {
            distinct[1..].to_vec()
        } else {
            let mut c: Vec<chrono::NaiveDate> = (1..MAX_SPLIT_PARTS)
                .map(|i| dates[dates.len() * i / MAX_SPLIT_PARTS])
                .filter(|d| *d > dates[0])
                .collect();
            c.dedup();
            c
        };
        self.split = Some(Split {
            second: f,
            cuts,
            count: None,
            count_issued: false,
            next_issue: 0,
            flying: BTreeSet::new(),
            answered: 0,
            ids: BTreeSet::new(),
            overflow: false,
        });
        self.splits += 1;
        true
    }

    /// Takes the page of part `i` of the split second: its records not taken before.
    fn take_split_part(
        &mut self,
        i: u32,
        page: Vec<RawRecord>,
        out: &mut Accepted,
    ) -> Result<(), QboError> {
        let Some(sp) = &mut self.split else {
            return Err(QboError::InvalidParameter(
                "offsets: a page for no split second".into(),
            ));
        };
        if !sp.flying.remove(&i) {
            return Err(QboError::InvalidParameter(format!(
                "offsets: an answer to part {i} of a split second which is not in flight"
            )));
        }
        let s = sp.second;
        if let Some(bad) = page.iter().find(|r| floor_second(r.last_updated) != s) {
            return Err(QboError::BadResponse(format!(
                "{} record Id {} has LastUpdatedTime {} outside the requested second {}",
                self.entity,
                bad.id,
                literal_exact(bad.last_updated),
                literal(s)
            )));
        }
        self.stats.pages += 1;
        sp.answered += 1;
        sp.overflow |= page.len() >= self.size as usize;
        let (page, duplicates) = dedupe(page);
        out.duplicates += duplicates;
        self.stats.duplicates += duplicates;
        for r in page {
            sp.ids.insert(r.id.clone());
            let known = self.frontier.seen_at_cursor.get(&r.id).copied();
            if known.is_none_or(|tok| r.sync_token > tok) {
                self.frontier
                    .seen_at_cursor
                    .insert(r.id.clone(), r.sync_token);
                self.stats.accepted += 1;
                out.records.push(r);
            } else {
                self.stats.refetched += 1;
                out.refetched += 1;
            }
        }
        if sp.answered < sp.parts() {
            return Ok(());
        }
        let sp = self.split.take().expect("checked");
        let complete = !sp.overflow && sp.count.is_some_and(|n| sp.ids.len() as u64 >= n);
        if complete {
            let next = s + one_second();
            self.frontier = PagerState {
                cursor: next,
                seen_at_cursor: BTreeMap::new(),
                mode: PagerMode::Window,
                ids_in_table: false,
            };
            self.done |= next >= self.end;
        } else {
            // the time cursor's passes read the rest, every Id taken so far remembered
            self.start_fallback(s + one_second())?;
        }
        Ok(())
    }

    /// Takes held pages in order while they continue the frontier.
    fn advance(&mut self, out: &mut Accepted) -> Result<(), QboError> {
        while !self.done && self.fallback.is_none() && self.split.is_none() {
            let k = self.next_take;
            if self.next_issue == k && self.flying.is_empty() && !self.extend {
                // every page issued was taken and the last was full: the window goes on past
                // what was counted, one page at a time
                self.extend = true;
            }
            let Some(page) = self.held.remove(&k) else {
                break;
            };
            let full = page.len() >= self.size as usize;
            let (page, duplicates) = dedupe(page);
            out.duplicates += duplicates;
            self.stats.duplicates += duplicates;
            let f = self.frontier.cursor;
            let (Some(first), Some(last)) = (
                page.iter().map(|r| floor_second(r.last_updated)).min(),
                page.iter().map(|r| floor_second(r.last_updated)).max(),
            ) else {
                // empty: the window shrank below this page's position
                if k == 0 {
                    self.next_take += 1;
                    self.done = true;
                } else {
                    self.held.insert(k, page);
                    self.start_fallback(self.end)?;
                }
                continue;
            };
            // page 0 starts at the window's first record
            let continues = k == 0 || (first < f && (last > f || !full));
            let waits =
                !continues && first < f && last == f && full && self.flying.contains(&(k + 1));
            if k > 0 && first <= f && k >= self.judged && !waits {
                // once a page (a page starting after the frontier is records that left, not the
                // overlap's size)
                self.adapt(continues);
                self.judged = k + 1;
            }
            if continues {
                self.next_take += 1;
                self.take(page, last, full, out);
                if !full {
                    self.done = true;
                }
            } else if last < f {
                // wholly before the frontier (a fallback read past it): taken already
                self.next_take += 1;
                let n = page.len() as u64;
                out.refetched += n;
                self.stats.refetched += n;
                if !full {
                    // it reached the end of the window: nothing after the frontier is left
                    self.done = true;
                }
            } else {
                // seconds in doubt: [f, first] when the page starts at f or later, else the
                // frontier second alone (wider than the page); then this page again. A page
                // wholly in one second after a gap: the gap first, then that second alone.
                let single = first == last && full;
                let until = if first > f && single {
                    first
                } else if first >= f {
                    first + one_second()
                } else {
                    f + one_second()
                };
                if waits {
                    // whether the frontier second fills the next page too decides how to read
                    // it: wait for that page
                    self.held.insert(k, page);
                    break;
                }
                let next_in_f = self.held.get(&(k + 1)).is_some_and(|p| {
                    p.len() >= self.size as usize
                        && p.iter().all(|r| floor_second(r.last_updated) == f)
                });
                // the frontier second holds more than a page
                let wide = until == f + one_second()
                    && ((single && first == f) || (first < f && last == f && full && next_in_f));
                self.held.insert(k, page);
                if !(wide && self.by_txn_date && self.start_split()) {
                    self.start_fallback(until)?;
                }
            }
        }
        Ok(())
    }

    /// Takes a page that continues the frontier, and moves the frontier to its last second.
    fn take(&mut self, page: Vec<RawRecord>, last: DateTime<Utc>, full: bool, out: &mut Accepted) {
        let f = self.frontier.cursor;
        let mut at_last: BTreeMap<String, i64> = BTreeMap::new();
        for r in page {
            let sec = floor_second(r.last_updated);
            if sec == last {
                let e = at_last.entry(r.id.clone()).or_insert(r.sync_token);
                *e = (*e).max(r.sync_token);
            }
            let known = if sec == f {
                self.frontier.seen_at_cursor.get(&r.id).copied()
            } else if sec < f {
                Some(i64::MAX)
            } else {
                None
            };
            if known.is_none_or(|tok| r.sync_token > tok) {
                self.stats.accepted += 1;
                out.records.push(r);
            } else {
                self.stats.refetched += 1;
                out.refetched += 1;
            }
        }
        if !full {
            return;
        }
        if last == f {
            // page 0 wholly in the window's first second
            for (id, tok) in at_last {
                let e = self.frontier.seen_at_cursor.entry(id).or_insert(tok);
                *e = (*e).max(tok);
            }
        } else {
            self.frontier.cursor = last;
            self.frontier.seen_at_cursor = at_last;
        }
    }
}

fn merge(out: &mut Accepted, a: Accepted) {
    out.records.extend(a.records);
    out.refetched += a.refetched;
    out.duplicates += a.duplicates;
    if a.second_ids.is_some() {
        out.second_ids = a.second_ids;
    }
}

/// How a slice is read: by time cursor, or by offsets.
#[derive(Debug)]
pub enum Stream {
    /// A time cursor (see [`crate::pager`]).
    Time(Box<Pager>),
    /// Offsets (see this module).
    Offsets(Box<OffsetWindow>),
}

impl Stream {
    /// See [`Pager::ready`].
    pub fn ready(&self, max: usize) -> Result<Vec<Request>, QboError> {
        match self {
            Stream::Time(p) => p.ready(max),
            Stream::Offsets(o) => o.ready(max),
        }
    }

    /// See [`Pager::issue`].
    pub fn issue(&mut self, req: &Request) -> Result<(), QboError> {
        match self {
            Stream::Time(p) => p.issue(req),
            Stream::Offsets(o) => o.issue(req),
        }
    }

    /// See [`Pager::accept_part`] and [`OffsetWindow::accept_part`].
    pub fn accept_part(&mut self, part: u32, page: Vec<RawRecord>) -> Result<Accepted, QboError> {
        match self {
            Stream::Time(p) => p.accept_part(part, page),
            Stream::Offsets(o) => o.accept_part(part, page),
        }
    }

    /// See [`Pager::accept_count_part`].
    pub fn accept_count_part(&mut self, part: u32, count: u64) -> Result<(), QboError> {
        match self {
            Stream::Time(p) => p.accept_count_part(part, count),
            Stream::Offsets(o) => o.accept_count_part(part, count),
        }
    }

    /// Records a count released (see [`OffsetWindow::take_released`]); never for a time cursor.
    pub fn take_released(&mut self) -> Option<Accepted> {
        match self {
            Stream::Time(_) => None,
            Stream::Offsets(o) => o.take_released(),
        }
    }

    /// See [`Pager::set_live_edge`].
    pub fn set_live_edge(&mut self, edge: DateTime<Utc>) {
        match self {
            Stream::Time(p) => p.set_live_edge(edge),
            Stream::Offsets(o) => o.set_live_edge(edge),
        }
    }

    /// See [`Pager::set_id_budget`].
    pub fn set_id_budget(&mut self, budget: IdBudget) {
        match self {
            Stream::Time(p) => p.set_id_budget(budget),
            Stream::Offsets(o) => o.set_id_budget(budget),
        }
    }

    /// See [`Pager::persisted_state`].
    pub fn persisted_state(&self) -> PagerState {
        match self {
            Stream::Time(p) => p.persisted_state(),
            Stream::Offsets(o) => o.persisted_state(),
        }
    }

    /// See [`Pager::stats`].
    pub fn stats(&self) -> PagerStats {
        match self {
            Stream::Time(p) => p.stats(),
            Stream::Offsets(o) => o.stats(),
        }
    }

    /// See [`Pager::is_done`].
    pub fn is_done(&self) -> bool {
        match self {
            Stream::Time(p) => p.is_done(),
            Stream::Offsets(o) => o.is_done(),
        }
    }

    /// See [`Pager::in_second_mode`].
    pub fn in_second_mode(&self) -> bool {
        match self {
            Stream::Time(p) => p.in_second_mode(),
            Stream::Offsets(o) => o.in_second_mode(),
        }
    }

    /// Pages answered and held until those ahead of them are in (offsets only).
    pub fn held(&self) -> usize {
        match self {
            Stream::Time(_) => 0,
            Stream::Offsets(o) => o.held(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pager::Payload;
    use chrono::TimeZone;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use serde_json::value::RawValue;
    use std::collections::{HashMap, HashSet};

    fn sec(n: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(n)
    }

    /// A transaction's date in the fake: one of four days, from its Id.
    fn txn_date(id: &str) -> chrono::NaiveDate {
        let n: u64 = id.bytes().map(u64::from).sum();
        chrono::NaiveDate::from_ymd_opt(2024, 12, 28).unwrap() + chrono::Days::new(n % 4)
    }

    fn raw(id: &str, token: i64, t: DateTime<Utc>) -> RawRecord {
        let text = format!(r#"{{"Id":"{id}","SyncToken":"{token}"}}"#);
        RawRecord {
            id: id.to_string(),
            sync_token: token,
            last_updated: t,
            txn_date: Some(txn_date(id)),
            payload: Payload::Text(RawValue::from_string(text).unwrap()),
        }
    }

    /// `TxnDate >= 'd'` / `TxnDate < 'd'` of a query, if any.
    fn date_bound(q: &str, op: &str) -> Option<chrono::NaiveDate> {
        let (_, rest) = q.split_once(&format!("TxnDate {op} '"))?;
        chrono::NaiveDate::parse_from_str(&rest[..10], "%Y-%m-%d").ok()
    }

    /// An in-memory QBO for one window: ties shuffled per request; records leaving the window
    /// (updated into the present, or deleted) between requests.
    struct Fake {
        recs: Vec<(String, i64, DateTime<Utc>)>,
        rng: StdRng,
        leave_prob: f64,
        left: HashSet<String>,
        requests: u64,
        counts: u64,
    }

    impl Fake {
        fn new(recs: Vec<(String, i64, DateTime<Utc>)>, seed: u64, leave_prob: f64) -> Fake {
            Fake {
                recs,
                rng: StdRng::seed_from_u64(seed),
                leave_prob,
                left: HashSet::new(),
                requests: 0,
                counts: 0,
            }
        }

        fn count(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
            self.recs.iter().filter(|r| r.2 >= from && r.2 < to).count() as u64
        }

        fn serve(&mut self, req: &Request) -> Result<Vec<RawRecord>, u64> {
            self.requests += 1;
            if !self.recs.is_empty() && self.rng.random_bool(self.leave_prob) {
                let i = self.rng.random_range(0..self.recs.len());
                let r = self.recs.remove(i);
                self.left.insert(r.0);
            }
            if req.kind == RequestKind::SecondCount {
                self.counts += 1;
                let ids: Option<HashSet<String>> = req.query.split_once("Id IN (").map(|(_, r)| {
                    let list = r.split_once(')').map(|(l, _)| l).unwrap_or(r);
                    list.split(',')
                        .map(|q| q.trim_matches('\'').to_owned())
                        .collect()
                });
                return Err(self
                    .recs
                    .iter()
                    .filter(|r| r.2 == req.from && ids.as_ref().is_none_or(|s| s.contains(&r.0)))
                    .count() as u64);
            }
            let (lo, hi) = (date_bound(&req.query, ">="), date_bound(&req.query, "<"));
            let mut v: Vec<_> = self
                .recs
                .iter()
                .filter(|r| r.2 >= req.from && r.2 < req.to)
                .filter(|r| lo.is_none_or(|d| txn_date(&r.0) >= d))
                .filter(|r| hi.is_none_or(|d| txn_date(&r.0) < d))
                .cloned()
                .collect();
            v.shuffle(&mut self.rng);
            v.sort_by_key(|r| r.2);
            let skip = req.start_position.saturating_sub(1) as usize;
            Ok(v.iter()
                .skip(skip)
                .take(req.max_results as usize)
                .map(|r| raw(&r.0, r.1, r.2))
                .collect())
        }
    }

    struct Outcome {
        got: Vec<RawRecord>,
        requests: u64,
        fallbacks: u64,
        splits: u64,
        most_held: usize,
    }

    /// Reads `[start, end)` by offsets with up to `in_flight` requests, answered in a seeded
    /// random order; with `crash_at`, the state is saved after that many answers and the rest
    /// read by a time-cursor pager resumed from it (what was in flight is lost).
    fn read(
        fake: &mut Fake,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        size: u32,
        in_flight: usize,
        seed: u64,
        crash_at: Option<usize>,
    ) -> Outcome {
        read_entity("Invoice", fake, start, end, size, in_flight, seed, crash_at)
    }

    #[allow(clippy::too_many_arguments)]
    fn read_entity(
        entity: &str,
        fake: &mut Fake,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        size: u32,
        in_flight: usize,
        seed: u64,
        crash_at: Option<usize>,
    ) -> Outcome {
        let mut rng = StdRng::seed_from_u64(seed);
        let chunk = Chunk {
            index: 1,
            start,
            end,
        };
        let count = fake.count(start, end);
        fake.counts += 1;
        fake.requests += 1;
        let mut w = OffsetWindow::new(entity, false, chunk, size, count, in_flight as u32).unwrap();
        let mut got = Vec::new();
        let mut flying: Vec<Request> = Vec::new();
        let mut answers = 0;
        let mut most_held = 0;
        loop {
            for r in w.ready(in_flight - flying.len()).unwrap() {
                w.issue(&r).unwrap();
                flying.push(r);
            }
            if flying.is_empty() {
                assert!(w.is_done(), "stalled");
                break;
            }
            let req = flying.swap_remove(rng.random_range(0..flying.len()));
            match fake.serve(&req) {
                Ok(page) => {
                    let a = w.accept_part(req.part, page).unwrap();
                    got.extend(a.records);
                }
                Err(n) => {
                    w.accept_count_part(req.part, n).unwrap();
                    if let Some(a) = w.take_released() {
                        got.extend(a.records);
                    }
                }
            }
            most_held = most_held.max(w.held());
            assert!(w.held() <= in_flight, "held {} pages", w.held());
            answers += 1;
            if crash_at == Some(answers) {
                let text = serde_json::to_string(&w.persisted_state()).unwrap();
                let state: PagerState = serde_json::from_str(&text).unwrap();
                let mut p = Pager::resume(entity, false, chunk, size, state).unwrap();
                while let Some(req) = p.next_request().unwrap() {
                    match fake.serve(&req) {
                        Ok(page) => got.extend(p.accept(page).unwrap().records),
                        Err(n) => p.accept_count(n).unwrap(),
                    }
                }
                return Outcome {
                    got,
                    requests: fake.requests,
                    fallbacks: w.fallbacks(),
                    splits: w.splits(),
                    most_held,
                };
            }
        }
        assert_eq!(w.stats().accepted, got.len() as u64);
        Outcome {
            got,
            requests: fake.requests,
            fallbacks: w.fallbacks(),
            splits: w.splits(),
            most_held,
        }
    }

    /// Every record still in the window was taken once, at its version; nothing taken twice.
    fn check(fake: &Fake, got: &[RawRecord], start: DateTime<Utc>, end: DateTime<Utc>) {
        let mut seen: HashMap<&str, i64> = HashMap::new();
        for r in got {
            assert!(r.last_updated >= start && r.last_updated < end);
            assert!(
                seen.insert(&r.id, r.sync_token).is_none(),
                "Id {} taken twice",
                r.id
            );
        }
        for (id, token, t) in &fake.recs {
            if *t >= start && *t < end {
                assert_eq!(seen.get(id.as_str()), Some(token), "missed Id {id}");
            }
        }
        for id in seen.keys() {
            assert!(
                fake.recs.iter().any(|r| r.0 == *id) || fake.left.contains(*id),
                "Id {id} never existed"
            );
        }
    }

    fn spread(n: usize, every: i64) -> Vec<(String, i64, DateTime<Utc>)> {
        (0..n)
            .map(|i| ((i + 1).to_string(), 0, sec(i as i64 * every)))
            .collect()
    }

    #[test]
    fn spread_records_cost_their_pages_and_one_count() {
        let recs = spread(10_000, 7);
        let (start, end) = (sec(0), sec(70_000));
        let mut fake = Fake::new(recs, 1, 0.0);
        let o = read(&mut fake, start, end, 1000, 10, 2, None);
        check(&fake, &o.got, start, end);
        // 10,000 records, 990 new a page: 11 pages, and the count
        assert_eq!((o.requests, fake.counts, o.fallbacks), (12, 1, 0));
        assert!(o.most_held <= 10);
    }

    #[test]
    fn ties_shuffled_on_every_boundary_are_read_again_by_time_cursor() {
        // 60 records a second: more than the overlap of 40 (and the most it comes down to), so
        // most boundaries are in doubt
        let recs: Vec<_> = (0..20_000)
            .map(|i| ((i + 1).to_string(), 0, sec(i as i64 / 60)))
            .collect();
        let (start, end) = (sec(0), sec(1_000));
        for seed in 0..4 {
            let mut fake = Fake::new(recs.clone(), seed, 0.0);
            let o = read(&mut fake, start, end, 1000, 10, seed, None);
            check(&fake, &o.got, start, end);
            assert!(o.fallbacks > 0);
            println!(
                "60 a second: {} requests for 20,000 records, {} fallbacks",
                o.requests, o.fallbacks
            );
        }
    }

    #[test]
    fn a_bulk_second_of_transactions_is_split_by_txn_date_and_of_a_list_read_by_passes() {
        let mut recs = spread(6_000, 11);
        recs.extend((0..3_001).map(|i| (format!("b{i}"), 0, sec(30_001))));
        let (start, end) = (sec(0), sec(70_000));
        for seed in 0..4 {
            // a transaction: the second's count and one page for each of its four dates
            let mut fake = Fake::new(recs.clone(), seed, 0.0);
            let o = read(&mut fake, start, end, 1000, 10, 10 + seed, None);
            check(&fake, &o.got, start, end);
            println!(
                "Invoice, a bulk second of 3,001 among 6,000: {} requests ({} counts), {} splits, {} fallbacks",
                o.requests, fake.counts, o.splits, o.fallbacks
            );
            assert_eq!((o.splits, o.fallbacks), (1, 0));
            // 10 pages (9,001 records, 960 new a page), their count, the second's, 4 parts
            assert!(o.requests <= 10 + 2 + 4 + 1, "{} requests", o.requests);
            // a name list has no TxnDate: the time cursor's passes
            let mut fake = Fake::new(recs.clone(), seed, 0.0);
            let o = read_entity("Item", &mut fake, start, end, 1000, 10, 10 + seed, None);
            check(&fake, &o.got, start, end);
            assert_eq!(o.splits, 0);
            assert!(o.fallbacks > 0);
        }
    }

    #[test]
    fn a_split_part_holding_a_page_or_more_is_finished_by_passes() {
        // 5,000 records in one second over four dates: about 1,250 a part
        let mut recs = spread(2_000, 11);
        recs.extend((0..5_000).map(|i| (format!("b{i}"), 0, sec(10_001))));
        let (start, end) = (sec(0), sec(30_000));
        let mut fake = Fake::new(recs, 3, 0.0);
        let o = read(&mut fake, start, end, 1000, 10, 3, None);
        check(&fake, &o.got, start, end);
        assert_eq!((o.splits, o.fallbacks), (1, 1));
    }

    #[test]
    fn a_split_second_that_loses_records_meanwhile_is_finished_by_passes() {
        // records leave while the parts are read: the parts fall short of the count taken before
        // them, and the passes finish the second with what was taken remembered
        let mut recs = spread(3_000, 11);
        recs.extend((0..2_500).map(|i| (format!("b{i}"), 0, sec(20_001))));
        let (start, end) = (sec(0), sec(40_000));
        for seed in 0..6 {
            let mut fake = Fake::new(recs.clone(), seed, 0.3);
            let o = read(&mut fake, start, end, 1000, 10, 20 + seed, None);
            check(&fake, &o.got, start, end);
        }
    }

    #[test]
    fn records_leaving_while_read_never_hide_the_others() {
        let (start, end) = (sec(0), sec(100_000));
        for seed in 0..6 {
            let mut rng = StdRng::seed_from_u64(seed);
            let recs: Vec<_> = (0..8_000)
                .map(|i| {
                    (
                        (i + 1).to_string(),
                        0,
                        sec(rng.random_range(0..100_000) / 4 * 4),
                    )
                })
                .collect();
            let mut fake = Fake::new(recs, seed, 0.5);
            let o = read(&mut fake, start, end, 100, 8, seed, None);
            check(&fake, &o.got, start, end);
            assert!(!fake.left.is_empty());
        }
    }

    #[test]
    fn small_pages_with_heavy_ties_and_departures() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(100 + seed);
            let n = rng.random_range(1..600);
            let span = rng.random_range(1..200);
            let recs: Vec<_> = (0..n)
                .map(|i| {
                    (
                        (i + 1).to_string(),
                        rng.random_range(0..3),
                        sec(rng.random_range(0..span)),
                    )
                })
                .collect();
            let (start, end) = (sec(0), sec(span));
            let mut fake = Fake::new(recs, seed, 0.2);
            let o = read(&mut fake, start, end, 20, 1 + seed as usize % 6, seed, None);
            check(&fake, &o.got, start, end);
        }
    }

    #[test]
    fn a_resume_continues_from_what_was_taken() {
        let recs = spread(5_000, 3);
        let (start, end) = (sec(0), sec(15_000));
        for crash_at in [1, 2, 3, 5, 7] {
            let mut fake = Fake::new(recs.clone(), crash_at as u64, 0.0);
            let o = read(
                &mut fake,
                start,
                end,
                500,
                6,
                crash_at as u64,
                Some(crash_at),
            );
            check(&fake, &o.got, start, end);
        }
    }

    #[test]
    fn the_window_is_done_only_once_no_page_of_it_is_in_flight() {
        // counted 3,000, but 1,500 left before the pages were read: page 1 comes back short
        // while pages 2 and 3 are still in flight
        let (start, end) = (sec(0), sec(10_000));
        let c = Chunk {
            index: 1,
            start,
            end,
        };
        let mut w = OffsetWindow::new("Invoice", false, c, 1000, 3000, 10).unwrap();
        let reqs = w.ready(10).unwrap();
        assert_eq!(reqs.len(), 4);
        for r in &reqs {
            w.issue(r).unwrap();
        }
        let recs: Vec<RawRecord> = (0..1500)
            .map(|i| raw(&i.to_string(), 0, sec(i as i64 * 3)))
            .collect();
        let a = w.accept_part(reqs[0].part, recs[..1000].to_vec()).unwrap();
        assert_eq!(a.records.len(), 1000);
        let a = w.accept_part(reqs[1].part, recs[990..].to_vec()).unwrap();
        assert_eq!((a.records.len(), a.refetched), (500, 10));
        assert!(!a.done && !w.is_done());
        assert_ne!(
            w.persisted_state().mode,
            PagerMode::Done,
            "pages still in flight"
        );
        w.accept_part(reqs[3].part, Vec::new()).unwrap();
        let a = w.accept_part(reqs[2].part, Vec::new()).unwrap();
        assert!(a.done && w.is_done());
        assert_eq!(w.persisted_state().mode, PagerMode::Done);
    }

    #[test]
    fn validates_inputs() {
        let c = Chunk {
            index: 1,
            start: sec(0),
            end: sec(10),
        };
        assert!(OffsetWindow::new("Invoice", false, c, 10, 50, 4).is_err());
        let empty = Chunk { end: sec(0), ..c };
        assert!(OffsetWindow::new("Invoice", false, empty, 100, 50, 4).is_err());
        let mut w = OffsetWindow::new("Invoice", false, c, 100, 250, 4).unwrap();
        let reqs = w.ready(10).unwrap();
        // 250 records, 96 new a page (the first overlap is 4 %): STARTPOSITION 1, 97, 193
        let starts: Vec<u32> = reqs.iter().map(|r| r.start_position).collect();
        assert_eq!(starts, vec![1, 97, 193]);
        assert!(w.issue(&reqs[1]).is_err());
        w.issue(&reqs[0]).unwrap();
        let bad = vec![raw("1", 0, sec(10))];
        assert!(matches!(
            w.accept_part(reqs[0].part, bad),
            Err(QboError::BadResponse(_))
        ));
    }
}
