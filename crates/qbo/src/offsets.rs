//! Reading a past window by STARTPOSITION in `Id` order, every page at once, proven complete page
//! by page: pure logic, no I/O.
//!
//! A time cursor ([`crate::pager`]) needs the answer to page *k* before it can ask for page
//! *k + 1*, so it reads one page per round trip; concurrency then has to come from cutting the
//! window into slices, and every slice costs a `count(*)` to place and a short last page to end:
//! requests that carry no data (issue 15 measured +61 % over the data pages). Offsets have no such
//! chain: once `count(*)` of the window says how many records it holds, every page
//! (`STARTPOSITION 1, 1 + s, 1 + 2s, ...`) can be in flight together, and the window costs its
//! data pages and one count.
//!
//! The pages are ordered by `Id` (`ORDERBY Id`; Intuit's entity reference lists `Id` as sortable).
//! An Id is unique within an entity, so the order has no ties and two requests agree on it:
//! whatever comparison QBO applies to Ids (as numbers or as text), it is one strict order. Ordered
//! by `LastUpdatedTime`, QBO reshuffles the records of one second from one request to the next,
//! and a bulk import puts thousands in one second; ordered by `Id`, a bulk second is just more
//! positions.
//!
//! Offsets are still unsafe alone: a record updated while the window is read moves to the present
//! and leaves the window, and a deleted one leaves it too, which shifts every later position down
//! by one. So each page is used only where it is *proven* to continue what was taken before it:
//!
//! - Pages overlap: consecutive pages start `s = size - overlap` records apart ([`overlap`]), so
//!   page *k + 1* repeats the last records of page *k* when nothing moved.
//! - The window is taken in order. A page continues the last page taken `L` when it holds one of
//!   `L`'s Ids, say `x`. Every answer is a contiguous run of the window's order at the time it was
//!   served, and records only leave a past window while it is read (they never enter it, see
//!   below), so: the page starts at or before `x`, which is at or before `L`'s last record `l`;
//!   every record still there after `l` up to the page's end is in the page, *whatever happened
//!   between the two requests*. Its records after the last one it shares with `L` are new and are
//!   taken (records before that are at or before `l`, hence in `L` or before it).
//! - The window's first page (STARTPOSITION 1) needs no proof. A short page taken reached the end
//!   of the window: the window is complete, and only that ends it. The count decides how many
//!   pages go out at once, never where the window ends: past the pages it asks for, the window
//!   goes on one page at a time while they come back full (records entering at QBO's present,
//!   or a count that was wrong), and a count too high costs at most `lookahead` pages past the
//!   end, which come back empty.
//! - A page that holds none of `L`'s Ids (more records left before it than the overlap, or it came
//!   back empty) is not guessed at: the page `s` positions after `L`'s start, less `back` records,
//!   is read again (`back` is half a step at first and doubles while such a page fails too; a page
//!   at STARTPOSITION 1 always succeeds). Once it is taken, the waiting page is looked at again.
//!   Pages already in flight are never thrown away. (Only when every record of the last page
//!   taken left the window does a page read again get back to STARTPOSITION 1 sharing nothing
//!   with it: it is then taken whole, and the records taken before come again, written as
//!   skipped.)
//!
//! Records enter a window only at its live end (created or updated in seconds that QBO's clock,
//! maybe behind ours, still stamps inside it). An entering record moves later positions up (more
//! overlap, never a gap); one that lands among records already taken, or an update that keeps its
//! record in the window after it was taken, arrives with the next run, as README says of live
//! seconds.
//!
//! # Memory
//! Pages answered before the pages ahead of them wait here, at most [`OffsetWindow::held`] of
//! them; the caller counts them with its pages waiting to be written, and this window never has
//! more than `lookahead` (what may be in flight, read or waiting at once) pages issued past the
//! first one it waits for. It keeps the Ids of one page.
//!
//! # What is saved
//! [`OffsetWindow::persisted_state`] is a [`PagerState`] whose `offsets` say where the window goes
//! on: the next STARTPOSITION, the count, and the last Ids taken, so a resume reads on from exactly
//! what was written and proves its first page against those Ids (pages answered but not yet taken
//! are read again). Its `cursor` stays at the window's start until the window is complete: in Id
//! order no second of it is complete before the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::budget::IdBudget;
use crate::error::QboError;
use crate::pager::{
    check_in_range, dedupe, quote_id, Accepted, OffsetsState, Pager, PagerMode, PagerState,
    PagerStats, RawRecord, Request, RequestKind,
};
use crate::plan::Chunk;
use crate::query::{window_query, Order};

/// Pages of this size or more may be read by offsets; smaller ones keep the time cursor (and
/// slices cut by `count(*)`).
pub const MIN_OFFSET_PAGE: u32 = 20;

/// The `part` of an offset page's request: this bit and the page's index.
const OFFSET_PART: u32 = 1 << 31;
/// The `part` of a page read again after a page that could not be proven.
const REREAD_PART: u32 = 1 << 30;

/// Records consecutive pages share: 0.5 % of the page (5 of 1000), at least 1. One shared record
/// proves a boundary when nothing left the window before it between the two requests; each more
/// tolerates one more departure. A boundary that fails costs one request (a page read again).
pub fn overlap(size: u32) -> u32 {
    (size / 200).max(1)
}

/// Ids saved past the overlap, for a resume to prove its first page even when a few records left.
const TAIL_EXTRA: usize = 8;

/// A page read again (see the module documentation).
#[derive(Debug)]
struct Reread {
    position: u32,
    back: u32,
    issued: bool,
    answer: Option<Vec<RawRecord>>,
}

/// A window `[start, end)` read by offsets (see the module documentation).
#[derive(Debug)]
pub struct OffsetWindow {
    entity: String,
    name_list: bool,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    size: u32,
    /// Records the window held when counted: pages start within it (and one at a time past it
    /// while pages come back full at the live end).
    count: u64,
    overlap: u32,
    /// STARTPOSITION of page 0 (1, or where a resumed window goes on).
    base: u32,
    /// Next page to issue, and next to take (in order).
    next_issue: u32,
    next_take: u32,
    /// Most pages issued past the next one to take.
    lookahead: u32,
    /// Offset pages issued and not answered.
    flying: BTreeSet<u32>,
    /// Pages answered before the ones ahead of them.
    held: BTreeMap<u32, Vec<RawRecord>>,
    /// Ids (with SyncToken) of the last page taken, in the order served; with `chained`, what the
    /// next page must share one of.
    last: Vec<(String, i64)>,
    last_index: HashMap<String, usize>,
    chained: bool,
    /// STARTPOSITION of the last page taken.
    last_position: u32,
    /// Every page the count asks for was taken and the last was full: one more page goes out.
    extend: bool,
    reread: Option<Reread>,
    /// The answers so far are in Id order compared as numbers, as text (see `check_page`).
    by_number: bool,
    by_text: bool,
    done: bool,
    stats: PagerStats,
    rereads: u64,
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
            start,
            end,
            size,
            count,
            overlap: overlap(size),
            base: 1,
            next_issue: 0,
            next_take: 0,
            lookahead: lookahead.max(1),
            flying: BTreeSet::new(),
            held: BTreeMap::new(),
            last: Vec::new(),
            last_index: HashMap::new(),
            chained: false,
            last_position: 0,
            extend: false,
            reread: None,
            by_number: true,
            by_text: true,
            done: false,
            stats: PagerStats::default(),
            rereads: 0,
        })
    }

    /// Goes on with a window from what a saved state says (see [`OffsetsState`]).
    pub fn resume(
        entity: &str,
        name_list: bool,
        chunk: Chunk,
        size: u32,
        saved: &OffsetsState,
        lookahead: u32,
    ) -> Result<OffsetWindow, QboError> {
        let mut w = OffsetWindow::new(entity, name_list, chunk, size, saved.count, lookahead)?;
        if saved.next == 0 || (saved.next > 1 && saved.tail.is_empty()) {
            return Err(QboError::InvalidParameter(format!(
                "offsets: a saved position {} with {} Ids taken before it",
                saved.next,
                saved.tail.len()
            )));
        }
        w.base = saved.next;
        if !saved.tail.is_empty() {
            w.set_last(saved.tail.iter().map(|id| (id.clone(), i64::MAX)).collect());
            w.last_position = saved.next.saturating_sub(w.step());
        }
        Ok(w)
    }

    fn step(&self) -> u32 {
        self.size - self.overlap
    }

    /// STARTPOSITION of page `k`.
    fn position(&self, k: u32) -> u32 {
        self.base.saturating_add(k.saturating_mul(self.step()))
    }

    /// Page `k` holds records the count says are there past the page before it (which ends
    /// `overlap` records after page `k` starts).
    fn needed(&self, k: u32) -> bool {
        u64::from(self.position(k)) + u64::from(self.overlap) <= self.count
    }

    fn set_last(&mut self, last: Vec<(String, i64)>) {
        self.last_index = last
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.clone(), i))
            .collect();
        self.last = last;
        self.chained = true;
    }

    /// Pages answered and waiting for those ahead of them (held in memory).
    pub fn held(&self) -> usize {
        self.held.len() + usize::from(self.reread.as_ref().is_some_and(|r| r.answer.is_some()))
    }

    /// Changes how many pages may be issued past the next one to take (at least 1).
    pub fn set_lookahead(&mut self, pages: u32) {
        self.lookahead = pages.max(1);
    }

    /// Pages read again because a page could not be proven.
    pub fn rereads(&self) -> u64 {
        self.rereads
    }

    /// True when the window is complete and nothing of it is in flight.
    pub fn is_done(&self) -> bool {
        self.done && self.flying.is_empty() && self.reread.is_none()
    }

    /// Never: a window read by offsets has no second mode.
    pub fn in_second_mode(&self) -> bool {
        false
    }

    /// Totals.
    pub fn stats(&self) -> PagerStats {
        self.stats
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
                offsets: None,
            };
        }
        let (next, tail) = if self.chained {
            let keep = self.overlap as usize + TAIL_EXTRA;
            let from = self.last.len().saturating_sub(keep);
            (
                self.last_position.saturating_add(self.step()),
                self.last[from..].iter().map(|(id, _)| id.clone()).collect(),
            )
        } else {
            (self.base, Vec::new())
        };
        PagerState {
            cursor: self.start,
            seen_at_cursor: BTreeMap::new(),
            mode: PagerMode::Window,
            ids_in_table: false,
            offsets: Some(OffsetsState {
                next,
                count: self.count,
                tail,
            }),
        }
    }

    fn request(&self, start_position: u32, part: u32) -> Request {
        Request {
            kind: RequestKind::Window,
            query: window_query(
                &self.entity,
                self.name_list,
                (self.start, self.end),
                Order::Id,
                start_position,
                self.size,
            ),
            from: self.start,
            to: self.end,
            start_position,
            max_results: self.size,
            part,
        }
    }

    /// The requests that may go now (see [`Pager::ready`]): a page read again, then offset pages
    /// in order, at most `lookahead` past the next page to take.
    pub fn ready(&self, max: usize) -> Result<Vec<Request>, QboError> {
        let mut out = Vec::new();
        if let Some(r) = &self.reread {
            if !r.issued && max > 0 {
                out.push(self.request(r.position, REREAD_PART));
            }
        }
        let mut k = self.next_issue;
        while out.len() < max
            && !self.done
            && (self.needed(k) || (self.extend && k == self.next_issue))
            && k < self.next_take.saturating_add(self.lookahead)
        {
            out.push(self.request(self.position(k), OFFSET_PART | k));
            k += 1;
        }
        Ok(out)
    }

    /// Records that `req` (from [`OffsetWindow::ready`]) is being sent.
    pub fn issue(&mut self, req: &Request) -> Result<(), QboError> {
        if req.part == REREAD_PART {
            return match &mut self.reread {
                Some(r) if !r.issued => {
                    r.issued = true;
                    Ok(())
                }
                _ => Err(QboError::InvalidParameter(
                    "offsets: a page read again that was not asked for was issued".into(),
                )),
            };
        }
        let k = req.part & !OFFSET_PART;
        if req.part & OFFSET_PART == 0 || k != self.next_issue {
            return Err(QboError::InvalidParameter(format!(
                "offsets: page {k} issued where {} was next",
                self.next_issue
            )));
        }
        self.next_issue += 1;
        self.extend = false;
        self.flying.insert(k);
        Ok(())
    }

    /// Checks an answer: every record in the window's range, and in `Id` order, by number or by
    /// text as every page before (the proof rests on one order kept between requests: an answer
    /// QBO did not order by Id is refused, never guessed at).
    fn check_page(&mut self, page: &[RawRecord], position: u32) -> Result<(), QboError> {
        check_in_range(&self.entity, page, self.start, self.end)?;
        for pair in page.windows(2) {
            let (a, b) = (&pair[0].id, &pair[1].id);
            if self.by_number {
                self.by_number = matches!(
                    (a.parse::<u64>(), b.parse::<u64>()),
                    (Ok(x), Ok(y)) if x <= y
                );
            }
            self.by_text &= a <= b;
            if !(self.by_number || self.by_text) {
                return Err(QboError::BadResponse(format!(
                    "{} page at STARTPOSITION {position} is not in Id order (Id {} before Id {}): QuickBooks did not apply ORDERBY Id, which reading by offsets relies on; a new run with qbo.max_in_flight = 1 reads by time cursor",
                    self.entity,
                    quote_id(a),
                    quote_id(b)
                )));
            }
        }
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
        if part == REREAD_PART {
            match &mut self.reread {
                Some(r) if r.issued && r.answer.is_none() => {
                    let position = r.position;
                    self.check_page(&page, position)?;
                    self.stats.pages += 1;
                    self.reread.as_mut().expect("checked").answer = Some(page);
                }
                _ => {
                    return Err(QboError::InvalidParameter(
                        "offsets: an answer to a page read again which is not in flight".into(),
                    ))
                }
            }
        } else {
            let k = part & !OFFSET_PART;
            if part & OFFSET_PART == 0 || !self.flying.remove(&k) {
                return Err(QboError::InvalidParameter(format!(
                    "offsets: an answer to page {k} which is not in flight"
                )));
            }
            self.check_page(&page, self.position(k))?;
            self.stats.pages += 1;
            if self.done || k < self.next_take {
                // the window was complete without it
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

    /// Never asked for: a window read by offsets sends no count of its own.
    pub fn accept_count_part(&mut self, _part: u32, _count: u64) -> Result<(), QboError> {
        Err(QboError::InvalidParameter(
            "offsets: a count for a window read by offsets".into(),
        ))
    }

    /// Where `page` continues the last page taken: the index of its first record after the last
    /// one they share; `None` when it is not proven to continue it.
    fn continues(&self, page: &[RawRecord], position: u32) -> Option<usize> {
        let after_shared = page
            .iter()
            .rposition(|r| self.last_index.contains_key(&r.id))
            .map(|i| i + 1);
        if !self.chained || position == 1 {
            // the window's first page starts at its first record
            return Some(after_shared.unwrap_or(0));
        }
        after_shared
    }

    /// Takes `page` (read at `position`) from index `cut` on, and the records before `cut` that
    /// came back at a higher SyncToken than taken.
    fn take(&mut self, page: Vec<RawRecord>, cut: usize, position: u32, out: &mut Accepted) {
        let full = page.len() >= self.size as usize;
        let ids: Vec<(String, i64)> = page.iter().map(|r| (r.id.clone(), r.sync_token)).collect();
        for (i, r) in page.into_iter().enumerate() {
            let newer = i >= cut
                || self
                    .last_index
                    .get(&r.id)
                    .is_some_and(|&j| r.sync_token > self.last[j].1);
            if newer {
                self.stats.accepted += 1;
                out.records.push(r);
            } else {
                self.stats.refetched += 1;
                out.refetched += 1;
            }
        }
        if cut < ids.len() || !self.chained {
            // it reaches past the last page taken: it is the one the next must continue
            self.set_last(ids);
            self.last_position = position;
        }
        if !full {
            self.done = true;
        }
        if self.done {
            // pages answered past the end are not needed
            let dropped: u64 = self.held.values().map(|p| p.len() as u64).sum();
            self.stats.refetched += dropped;
            out.refetched += dropped;
            self.held.clear();
        }
    }

    /// Reads again the page after the last one taken, from half a step before where it starts.
    fn start_reread(&mut self) {
        let back = (self.step() / 2).max(1);
        let from = self.last_position.saturating_add(self.step());
        self.reread = Some(Reread {
            position: from.saturating_sub(back).max(1),
            back,
            issued: false,
            answer: None,
        });
        self.rereads += 1;
    }

    /// Takes pages (and pages read again) in order while they are proven.
    fn advance(&mut self, out: &mut Accepted) -> Result<(), QboError> {
        while !self.done {
            if let Some(r) = &mut self.reread {
                let Some(page) = r.answer.take() else {
                    break;
                };
                let (page, duplicates) = dedupe(page);
                out.duplicates += duplicates;
                self.stats.duplicates += duplicates;
                let position = r.position;
                match self.continues(&page, position) {
                    Some(cut) => {
                        self.reread = None;
                        self.take(page, cut, position, out);
                    }
                    None => {
                        // more left before it than it stepped back: twice as far back
                        let from = self.last_position.saturating_add(self.step());
                        let r = self.reread.as_mut().expect("checked");
                        r.back = r.back.saturating_mul(2);
                        r.position = from.saturating_sub(r.back).max(1);
                        r.issued = false;
                        self.rereads += 1;
                        break;
                    }
                }
                continue;
            }
            let k = self.next_take;
            if self.next_issue == k && self.flying.is_empty() && self.chained && !self.needed(k) {
                // every page the count asks for was taken and the last was full: read on, a page
                // at a time
                self.extend = true;
                break;
            }
            let Some(page) = self.held.remove(&k) else {
                break;
            };
            let (page, duplicates) = dedupe(page);
            out.duplicates += duplicates;
            self.stats.duplicates += duplicates;
            let position = self.position(k);
            match self.continues(&page, position) {
                Some(cut) => {
                    self.next_take += 1;
                    self.take(page, cut, position, out);
                }
                None => {
                    // not proven: read again from a little before where it should have started,
                    // then look at it again
                    self.held.insert(k, page);
                    self.start_reread();
                    break;
                }
            }
        }
        Ok(())
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

    /// See [`Pager::set_live_edge`].
    pub fn set_live_edge(&mut self, edge: DateTime<Utc>) {
        match self {
            Stream::Time(p) => p.set_live_edge(edge),
            // a window read by offsets ends on a short page only, wherever QBO's present is
            Stream::Offsets(_) => {}
        }
    }

    /// See [`Pager::set_id_budget`].
    pub fn set_id_budget(&mut self, budget: IdBudget) {
        match self {
            Stream::Time(p) => p.set_id_budget(budget),
            // a window read by offsets keeps one page's Ids, bounded with the pages
            Stream::Offsets(_) => {}
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
    use chrono::{TimeDelta, TimeZone};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::value::RawValue;
    use std::collections::{HashMap, HashSet};

    fn sec(n: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(n)
    }

    fn raw(id: &str, token: i64, t: DateTime<Utc>) -> RawRecord {
        let text = format!(r#"{{"Id":"{id}","SyncToken":"{token}"}}"#);
        RawRecord {
            id: id.to_string(),
            sync_token: token,
            last_updated: t,
            payload: Payload::Text(RawValue::from_string(text).unwrap()),
        }
    }

    /// An in-memory QBO for one window, ordered by Id as text ("10" before "9": the proof does not
    /// care how QBO compares Ids); records leave the window (updated into the present, or deleted)
    /// between requests, and with `enter`, records enter it at its live end.
    struct Fake {
        recs: Vec<(String, i64, DateTime<Utc>)>,
        rng: StdRng,
        leave_prob: f64,
        enter: u32,
        count_lie: Option<u64>,
        left: HashSet<String>,
        requests: u64,
    }

    impl Fake {
        fn new(mut recs: Vec<(String, i64, DateTime<Utc>)>, seed: u64, leave_prob: f64) -> Fake {
            recs.sort_by(|a, b| a.0.cmp(&b.0));
            Fake {
                recs,
                rng: StdRng::seed_from_u64(seed),
                leave_prob,
                enter: 0,
                count_lie: None,
                left: HashSet::new(),
                requests: 0,
            }
        }

        fn count(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
            self.requests += 1;
            let real = self.recs.iter().filter(|r| r.2 >= from && r.2 < to).count() as u64;
            self.count_lie.unwrap_or(real)
        }

        fn churn(&mut self) {
            if !self.recs.is_empty() && self.rng.random_bool(self.leave_prob) {
                let i = self.rng.random_range(0..self.recs.len());
                let r = self.recs.remove(i);
                self.left.insert(r.0);
            }
            if self.enter > 0 {
                self.enter -= 1;
                let last = self.recs.iter().map(|r| r.2).max().unwrap_or(sec(0));
                self.recs.push((format!("n{}", self.enter), 0, last));
                self.recs.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }

        fn serve(&mut self, req: &Request) -> Vec<RawRecord> {
            self.requests += 1;
            self.churn();
            assert!(
                req.query.contains(" ORDERBY Id STARTPOSITION "),
                "{}",
                req.query
            );
            // kept sorted by Id
            let skip = req.start_position.saturating_sub(1) as usize;
            self.recs
                .iter()
                .filter(|r| r.2 >= req.from && r.2 < req.to)
                .skip(skip)
                .take(req.max_results as usize)
                .map(|r| raw(&r.0, r.1, r.2))
                .collect()
        }
    }

    struct Outcome {
        got: Vec<RawRecord>,
        requests: u64,
        rereads: u64,
        most_held: usize,
    }

    struct Reading {
        size: u32,
        in_flight: usize,
        seed: u64,
        /// Save the state after this many answers, lose what is in flight, and resume from it.
        crash_at: Option<usize>,
    }

    fn reading(size: u32, in_flight: usize, seed: u64) -> Reading {
        Reading {
            size,
            in_flight,
            seed,
            crash_at: None,
        }
    }

    /// Reads `[start, end)` by offsets with up to `in_flight` requests, answered in a seeded
    /// random order.
    fn read(fake: &mut Fake, start: DateTime<Utc>, end: DateTime<Utc>, o: Reading) -> Outcome {
        let mut rng = StdRng::seed_from_u64(o.seed);
        let chunk = Chunk {
            index: 1,
            start,
            end,
        };
        let count = fake.count(start, end);
        let mut w =
            OffsetWindow::new("Invoice", false, chunk, o.size, count, o.in_flight as u32).unwrap();
        let mut got = Vec::new();
        let mut flying: Vec<Request> = Vec::new();
        let (mut answers, mut most_held, mut rereads) = (0, 0, 0);
        loop {
            for r in w.ready(o.in_flight.saturating_sub(flying.len())).unwrap() {
                w.issue(&r).unwrap();
                flying.push(r);
            }
            if flying.is_empty() {
                assert!(w.is_done(), "stalled");
                break;
            }
            let req = flying.swap_remove(rng.random_range(0..flying.len()));
            let page = fake.serve(&req);
            let a = w.accept_part(req.part, page).unwrap();
            got.extend(a.records);
            most_held = most_held.max(w.held());
            assert!(w.held() <= o.in_flight + 1, "held {} pages", w.held());
            answers += 1;
            if o.crash_at == Some(answers) {
                let text = serde_json::to_string(&w.persisted_state()).unwrap();
                let state: PagerState = serde_json::from_str(&text).unwrap();
                rereads += w.rereads();
                flying.clear();
                if state.mode == PagerMode::Done {
                    break;
                }
                assert_eq!(state.cursor, start, "no second is complete before the end");
                let saved = state
                    .offsets
                    .expect("a window in progress saves its offsets");
                w = OffsetWindow::resume("Invoice", false, chunk, o.size, &saved, 4).unwrap();
            }
        }
        assert!(w.is_done());
        assert_eq!(w.persisted_state().mode, PagerMode::Done);
        Outcome {
            got,
            requests: fake.requests,
            rereads: rereads + w.rereads(),
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
        let present: HashSet<&str> = fake.recs.iter().map(|r| r.0.as_str()).collect();
        for id in seen.keys() {
            assert!(
                present.contains(id) || fake.left.contains(*id),
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
    fn a_window_costs_its_pages_and_one_count() {
        // 995 new records a page: 10,000 records take 11 pages, 100,000 take 101
        for (n, requests) in [(10_000, 12), (100_000, 102), (996, 2), (1_001, 3)] {
            let recs = spread(n, 7);
            let (start, end) = (sec(0), sec(7 * n as i64));
            let mut fake = Fake::new(recs, 1, 0.0);
            let o = read(&mut fake, start, end, reading(1000, 10, 2));
            check(&fake, &o.got, start, end);
            assert_eq!((o.requests, o.rereads), (requests, 0), "{n} records");
            assert!(o.most_held <= 10);
        }
    }

    #[test]
    fn a_bulk_second_is_just_more_positions() {
        // 9,000 of 20,000 records in one second: no second is special in Id order
        let mut recs = spread(11_000, 11);
        recs.extend((0..9_000).map(|i| (format!("b{i}"), 0, sec(30_001))));
        let (start, end) = (sec(0), sec(130_000));
        for seed in 0..4 {
            let mut fake = Fake::new(recs.clone(), seed, 0.0);
            let o = read(&mut fake, start, end, reading(1000, 10, 10 + seed));
            check(&fake, &o.got, start, end);
            assert_eq!((o.requests, o.rereads), (22, 0));
        }
    }

    #[test]
    fn records_leaving_while_read_never_hide_the_others() {
        let (start, end) = (sec(0), sec(100_000));
        for seed in 0..6 {
            let mut rng = StdRng::seed_from_u64(seed);
            let recs: Vec<_> = (0..8_000)
                .map(|i| ((i + 1).to_string(), 0, sec(rng.random_range(0..100_000))))
                .collect();
            let mut fake = Fake::new(recs, seed, 0.5);
            let o = read(&mut fake, start, end, reading(100, 8, seed));
            check(&fake, &o.got, start, end);
            assert!(!fake.left.is_empty());
            assert!(o.rereads > 0, "departures made some boundary fail");
            println!(
                "8,000 records, one leaving every other request: {} requests, {} read again",
                o.requests, o.rereads
            );
        }
    }

    #[test]
    fn small_pages_with_heavy_departures() {
        for seed in 0..40 {
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
            let o = read(
                &mut fake,
                start,
                end,
                reading(20, 1 + seed as usize % 6, seed),
            );
            check(&fake, &o.got, start, end);
        }
    }

    #[test]
    fn a_resume_continues_from_what_was_taken() {
        let recs = spread(5_000, 3);
        let (start, end) = (sec(0), sec(15_000));
        for crash_at in [1, 2, 3, 5, 7, 11] {
            for leave in [0.0, 0.4] {
                let mut fake = Fake::new(recs.clone(), crash_at as u64, leave);
                let o = read(
                    &mut fake,
                    start,
                    end,
                    Reading {
                        crash_at: Some(crash_at),
                        ..reading(500, 6, crash_at as u64)
                    },
                );
                check(&fake, &o.got, start, end);
                if leave == 0.0 {
                    // what was in flight is read again, nothing more: 11 pages and the count,
                    // and at most the 6 pages in flight at the crash
                    assert!(o.requests <= 12 + 6, "{} requests", o.requests);
                }
            }
        }
    }

    #[test]
    fn only_a_short_page_ends_a_window_whatever_the_count_says() {
        let (start, end) = (sec(0), sec(20_000));
        // 1,995 records: pages at 1 and 996, the second full: one more page (the overlap, short)
        // ends it
        let mut fake = Fake::new(spread(1_995, 5), 1, 0.0);
        let o = read(&mut fake, start, end, reading(1000, 10, 1));
        check(&fake, &o.got, start, end);
        assert_eq!((o.requests, o.rereads), (4, 0));
        // records entering after the count (QBO's present): read on while pages are full
        let mut fake = Fake::new(spread(1_995, 5), 1, 0.0);
        fake.enter = 700;
        let o = read(&mut fake, start, end, reading(1000, 10, 1));
        check(&fake, &o.got, start, end);
        assert!(o.got.len() > 1_995, "{}", o.got.len());
        // a count too low: the pages it asks for, then one at a time to the end
        let mut fake = Fake::new(spread(3_000, 5), 1, 0.0);
        fake.count_lie = Some(1_200);
        let o = read(&mut fake, start, end, reading(1000, 10, 1));
        check(&fake, &o.got, start, end);
        assert_eq!(o.got.len(), 3_000);
        assert_eq!(o.requests, 1 + 4, "pages at 1, 996, 1991 and 2986");
        // a count too high: at most the lookahead past the end, which comes back empty
        let mut fake = Fake::new(spread(3_000, 5), 1, 0.0);
        fake.count_lie = Some(1_000_000_000_000);
        let o = read(&mut fake, start, end, reading(1000, 10, 1));
        check(&fake, &o.got, start, end);
        assert_eq!(o.got.len(), 3_000);
        // the short page is page 3: pages go out at most the lookahead past the next one to take
        assert!(o.requests <= 1 + 3 + 10, "{} requests", o.requests);
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
        let starts: Vec<u32> = reqs.iter().map(|r| r.start_position).collect();
        assert_eq!(starts, vec![1, 996, 1991, 2986]);
        for r in &reqs {
            w.issue(r).unwrap();
        }
        let recs: Vec<RawRecord> = (0..1500)
            .map(|i| raw(&format!("{i:04}"), 0, sec(i as i64 * 3)))
            .collect();
        let a = w.accept_part(reqs[0].part, recs[..1000].to_vec()).unwrap();
        assert_eq!(a.records.len(), 1000);
        let a = w.accept_part(reqs[1].part, recs[995..].to_vec()).unwrap();
        assert_eq!((a.records.len(), a.refetched), (500, 5));
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
    fn a_page_sharing_nothing_with_the_last_is_read_again_from_before_it() {
        let (start, end) = (sec(0), sec(10_000));
        let c = Chunk {
            index: 1,
            start,
            end,
        };
        let recs: Vec<RawRecord> = (0..2500)
            .map(|i| raw(&format!("{i:04}"), 0, sec(i as i64 * 3)))
            .collect();
        let mut w = OffsetWindow::new("Invoice", false, c, 1000, 2500, 2).unwrap();
        let reqs = w.ready(10).unwrap();
        assert_eq!(reqs.len(), 2);
        for r in &reqs {
            w.issue(r).unwrap();
        }
        w.accept_part(reqs[0].part, recs[..1000].to_vec()).unwrap();
        // ten records before position 996 left before page 2 was read: it starts 10 later
        let a = w
            .accept_part(reqs[1].part, recs[1005..2005].to_vec())
            .unwrap();
        assert!(a.records.is_empty() && a.refetched == 0);
        let again = w.ready(10).unwrap();
        assert_eq!(again[0].start_position, 996 - 497);
        assert_eq!(again[0].part, REREAD_PART);
        w.issue(&again[0]).unwrap();
        let a = w
            .accept_part(REREAD_PART, recs[489..1489].to_vec())
            .unwrap();
        // the page read again gives 1000..1488, then the held page the rest up to 2004
        assert_eq!(a.records.len(), 1005);
        assert_eq!(a.records[0].id, "1000");
        assert_eq!(a.records.last().unwrap().id, "2004");
        let st = w.persisted_state().offsets.unwrap();
        assert_eq!(st.next, 996 + 995);
        assert_eq!(st.tail.last().unwrap(), "2004");
        assert_eq!(st.tail.len(), 5 + TAIL_EXTRA);
    }

    #[test]
    fn an_answer_not_in_id_order_is_refused() {
        let (start, end) = (sec(0), sec(10_000));
        let c = Chunk {
            index: 1,
            start,
            end,
        };
        // by number ("9" before "10") or by text ("10" before "9"), as long as every page agrees
        for ids in [["8", "9", "10"], ["10", "8", "9"]] {
            let mut w = OffsetWindow::new("Invoice", false, c, 100, 250, 4).unwrap();
            let reqs = w.ready(1).unwrap();
            w.issue(&reqs[0]).unwrap();
            let page: Vec<RawRecord> = ids.iter().map(|id| raw(id, 0, sec(5))).collect();
            assert_eq!(w.accept_part(reqs[0].part, page).unwrap().records.len(), 3);
        }
        // a page QBO did not order by Id (it ignored ORDERBY Id): refused, not guessed at
        let mut w = OffsetWindow::new("Invoice", false, c, 100, 250, 4).unwrap();
        let reqs = w.ready(2).unwrap();
        w.issue(&reqs[0]).unwrap();
        w.issue(&reqs[1]).unwrap();
        let page: Vec<RawRecord> = (0..100)
            .map(|i| raw(&format!("{i:03}"), 0, sec(5)))
            .collect();
        w.accept_part(reqs[0].part, page).unwrap();
        let page: Vec<RawRecord> = ["121", "120", "122"]
            .iter()
            .map(|id| raw(id, 0, sec(5)))
            .collect();
        let e = w.accept_part(reqs[1].part, page).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unusable response from QuickBooks: Invoice page at STARTPOSITION 100 is not in Id order (Id 121 before Id 120): QuickBooks did not apply ORDERBY Id, which reading by offsets relies on; a new run with qbo.max_in_flight = 1 reads by time cursor"
        );
        // an answer's Ids are quoted as upstream text: a token riding in one is masked
        const TOKEN: &str = "eyJsecretACCESStoken0123456789abcdefXYZ";
        let mut w = OffsetWindow::new("Invoice", false, c, 100, 250, 4).unwrap();
        let reqs = w.ready(1).unwrap();
        w.issue(&reqs[0]).unwrap();
        let page = vec![
            raw("9", 0, sec(5)),
            raw(&format!("Bearer {TOKEN}"), 0, sec(5)),
        ];
        let page = [page, vec![raw("0", 0, sec(5))]].concat();
        let e = w.accept_part(reqs[0].part, page).unwrap_err().to_string();
        assert!(
            e.contains("is not in Id order") && !e.contains(TOKEN) && !e.contains("secretACCESS"),
            "{e}"
        );
        let mut w = OffsetWindow::new("Invoice", false, c, 100, 250, 4).unwrap();
        let reqs = w.ready(1).unwrap();
        w.issue(&reqs[0]).unwrap();
        let e = w
            .accept_part(reqs[0].part, vec![raw(TOKEN, 0, sec(20_000))])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("outside the requested range") && !e.contains("secretACCESS"),
            "{e}"
        );
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
        let bad_resume = OffsetsState {
            next: 100,
            count: 250,
            tail: Vec::new(),
        };
        assert!(OffsetWindow::resume("Invoice", false, c, 100, &bad_resume, 4).is_err());
        let mut w = OffsetWindow::new("Invoice", false, c, 100, 250, 4).unwrap();
        let reqs = w.ready(10).unwrap();
        // 250 records, 99 new a page: STARTPOSITION 1, 100, 199
        let starts: Vec<u32> = reqs.iter().map(|r| r.start_position).collect();
        assert_eq!(starts, vec![1, 100, 199]);
        assert!(w.issue(&reqs[1]).is_err());
        w.issue(&reqs[0]).unwrap();
        let bad = vec![raw("1", 0, sec(10))];
        assert!(matches!(
            w.accept_part(reqs[0].part, bad),
            Err(QboError::BadResponse(_))
        ));
        assert!(w.accept_count_part(0, 1).is_err());
    }
}
