//! Sub-windows ("slices") of one chunk, so a chunk's pages can be fetched concurrently: pure
//! logic, no I/O.
//!
//! A time cursor pages one window sequentially (page *k + 1* starts where page *k* ended), so
//! concurrency comes from paging several windows at once: several chunks, and slices of a chunk.
//! `count(*)` tells where to cut: a slice holding more than [`SLICE_PAGES`] pages is cut into
//! equal-time parts, each counted again (so a burst inside one part is cut again where it is),
//! until every slice holds at most about [`SLICE_PAGES`] pages or is one second wide. Each slice
//! is then paged by its own [`Pager`], with every guarantee of the pager (ties, churn, live
//! seconds). A one-second slice holding a page or more (a bulk import) goes straight to the
//! pager's second mode, whose passes send all their STARTPOSITION pages at once. Slices are disjoint and cover the chunk, so nothing is fetched twice or missed at a
//! slice boundary, exactly as at a chunk boundary.
//!
//! With one request in flight (`qbo.max_in_flight = 1`) nothing is counted or cut: the chunk is
//! one slice, the sequential pager of earlier versions.
//!
//! # What is saved
//! [`ChunkSlices::saved`] is the chunk's cursor stored with every committed page: each slice with
//! its pager state after its last *written* page (`null` before its first), or `done`. A resume
//! continues every slice from there; slices not yet paged are counted again. A cursor saved by the
//! sequential pager of an earlier version (a bare pager state) resumes as one slice.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::budget::IdBudget;
use crate::error::QboError;
use crate::offsets::{OffsetWindow, Stream, MIN_OFFSET_PAGE};
use crate::pager::{Pager, PagerState, Request, SecondId};
use crate::plan::Chunk;
use crate::query::{ceil_second, window_count_query};

/// A slice holding more pages than this (by `count(*)`) is cut.
pub const SLICE_PAGES: u64 = 4;
/// A slice is cut into at most this many parts at a time.
pub const MAX_PARTS: u64 = 8;

/// What one slice is doing.
#[derive(Debug)]
pub enum Work {
    /// Not counted yet: the next request is its `count(*)`.
    Count,
    /// Being paged (by time cursor, or by offsets: see [`crate::offsets`]).
    Page(Stream),
    /// Complete without paging (counted empty, or done in a saved cursor).
    Done,
}

/// One slice `[start, end)` of a chunk (whole seconds).
#[derive(Debug)]
pub struct Slice {
    /// Stable id within the chunk (positions shift when a slice is cut).
    pub id: u32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub work: Work,
    /// The slice's `count(*)` is in flight (the requests of its pager are tracked by the pager).
    pub busy: bool,
    /// Pager state after the last written page (what a resume continues from).
    committed: Option<PagerState>,
    /// Complete, and its last page written.
    committed_done: bool,
    /// Pages fetched and not yet written.
    unwritten: u32,
    /// Records the slice held when counted (None: not counted).
    expected: Option<u64>,
    /// Records fetched so far.
    fetched: u64,
}

impl Slice {
    /// A slice with nothing fetched or saved yet.
    fn new(id: u32, start: DateTime<Utc>, end: DateTime<Utc>, work: Work) -> Slice {
        Slice {
            id,
            start,
            end,
            work,
            busy: false,
            committed: None,
            committed_done: false,
            unwritten: 0,
            expected: None,
            fetched: 0,
        }
    }

    /// Nothing more to fetch (pages may still wait to be written).
    pub fn complete(&self) -> bool {
        match &self.work {
            Work::Done => true,
            Work::Page(p) => p.is_done(),
            Work::Count => false,
        }
    }
}

/// The next request of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceRequest {
    /// `count(*)` of the slice, to decide whether to cut it.
    Count { query: String },
    /// A request of the slice's pager.
    Pager(Request),
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedSlice {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    #[serde(default)]
    state: Option<PagerState>,
    #[serde(default)]
    done: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedChunk {
    slices: Vec<SavedSlice>,
}

/// The slices of one chunk being fetched.
#[derive(Debug)]
pub struct ChunkSlices {
    entity: &'static str,
    name_list: bool,
    chunk: Chunk,
    page_size: u32,
    split: bool,
    slices: Vec<Slice>,
    next_id: u32,
    live_edge: Option<DateTime<Utc>>,
    /// The run's budget for Ids, given to every pager (see [`Pager::set_id_budget`]).
    ids: Option<IdBudget>,
    /// Most pages a window read by offsets issues past the one it waits for.
    lookahead: u32,
}

fn whole(t: DateTime<Utc>) -> DateTime<Utc> {
    ceil_second(t)
}

impl ChunkSlices {
    /// The slices of `chunk` (its end already capped to what this execution reads), starting
    /// fresh or from a saved cursor. `split`: count and cut (false: one slice, paged directly).
    /// `second_ids` reads the Id table of a second a saved slice was reading (see
    /// [`PagerState::ids_in_table`]); its error (the caller's own, e.g. a database error) is
    /// returned as it is, the cursor's problems as `E::from(QboError)`.
    pub fn new<E: From<QboError>>(
        entity: &'static str,
        name_list: bool,
        chunk: Chunk,
        page_size: u32,
        split: bool,
        saved: Option<&serde_json::Value>,
        second_ids: &mut dyn FnMut(DateTime<Utc>) -> Result<Vec<SecondId>, E>,
    ) -> Result<ChunkSlices, E> {
        let start = whole(chunk.start);
        let end = whole(chunk.end);
        let mut cs = ChunkSlices {
            entity,
            name_list,
            chunk,
            page_size,
            split,
            slices: Vec::new(),
            next_id: 0,
            live_edge: None,
            ids: None,
            lookahead: 10,
        };
        let bad = |e: serde_json::Error| {
            QboError::InvalidParameter(format!(
                "chunk {}: saved cursor unreadable: {e}",
                chunk.index
            ))
        };
        let saved_slices: Vec<SavedSlice> = match saved {
            None => Vec::new(),
            Some(v) if v.get("slices").is_some() => {
                serde_json::from_value::<SavedChunk>(v.clone())
                    .map_err(bad)?
                    .slices
            }
            // a cursor saved by the sequential pager: the whole chunk as one slice
            Some(v) => vec![SavedSlice {
                start,
                end,
                state: Some(serde_json::from_value::<PagerState>(v.clone()).map_err(bad)?),
                done: false,
            }],
        };
        let mut covered = start;
        for s in saved_slices {
            if s.start != covered || s.end <= s.start {
                return Err(QboError::InvalidParameter(format!(
                    "chunk {}: saved slices do not follow each other at {}",
                    chunk.index,
                    crate::query::literal(s.start)
                ))
                .into());
            }
            // a resume may read less far than the saved run did (never: as_of only grows), or
            // further (a later as_of): slices past `end` are clipped, the rest is added below
            if s.start >= end {
                break;
            }
            let s_end = s.end.min(end);
            covered = s_end;
            let (work, committed, committed_done) = if s.done {
                (Work::Done, None, true)
            } else if let Some(saved) = s.state.as_ref().and_then(|st| st.offsets.clone()) {
                // a window read by offsets goes on in its own order, which a window with another
                // end would not share
                if s_end != s.end {
                    return Err(QboError::InvalidParameter(format!(
                        "chunk {}: a window read by offsets was saved up to {}, not {}",
                        chunk.index,
                        crate::query::literal(s.end),
                        crate::query::literal(s_end)
                    ))
                    .into());
                }
                let w = OffsetWindow::resume(
                    entity,
                    name_list,
                    Chunk {
                        index: chunk.index,
                        start: s.start,
                        end: s_end,
                    },
                    page_size.min(crate::query::MAX_PAGE),
                    &saved,
                    cs.lookahead,
                )?;
                (Work::Page(Stream::Offsets(Box::new(w))), s.state, false)
            } else if let Some(state) = s.state {
                let full = if state.ids_in_table {
                    let rows = second_ids(state.cursor)?;
                    state.clone().with_second_ids(rows)
                } else {
                    state.clone()
                };
                let pager = cs.pager(s.start, s_end, Some(full))?;
                (
                    Work::Page(Stream::Time(Box::new(pager))),
                    Some(state),
                    false,
                )
            } else {
                (cs.fresh_work(s.start, s_end)?, None, false)
            };
            let id = cs.new_id();
            let mut slice = Slice::new(id, s.start, s_end, work);
            slice.committed = committed;
            slice.committed_done = committed_done;
            cs.slices.push(slice);
        }
        if covered < end {
            let work = cs.fresh_work(covered, end)?;
            let id = cs.new_id();
            cs.slices.push(Slice::new(id, covered, end, work));
        }
        Ok(cs)
    }

    fn new_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn pos(&self, id: u32) -> Result<usize, QboError> {
        self.slices
            .iter()
            .position(|s| s.id == id)
            .ok_or_else(|| QboError::InvalidParameter(format!("slices: no slice {id}")))
    }

    /// Declares where QBO's present begins (see [`Pager::set_live_edge`]), for every pager of
    /// the chunk, present and future.
    pub fn set_live_edge(&mut self, edge: DateTime<Utc>) {
        self.live_edge = Some(edge);
        for p in self.pagers_mut() {
            p.set_live_edge(edge);
        }
    }

    fn fresh_work(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Work, QboError> {
        if self.split {
            Ok(Work::Count)
        } else {
            Ok(Work::Page(Stream::Time(Box::new(
                self.pager(start, end, None)?,
            ))))
        }
    }

    fn pager(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        state: Option<PagerState>,
    ) -> Result<Pager, QboError> {
        let c = Chunk {
            index: self.chunk.index,
            start,
            end,
        };
        let mut p = match state {
            Some(s) => Pager::resume(self.entity, self.name_list, c, self.page_size, s),
            None => Pager::new(self.entity, self.name_list, c, self.page_size),
        }?;
        if let Some(e) = self.live_edge {
            p.set_live_edge(e);
        }
        if let Some(b) = &self.ids {
            p.set_id_budget(b.clone());
        }
        Ok(p)
    }

    /// Makes every pager of the chunk, present and future, hold its Ids within the run's
    /// `budget` (see [`Pager::set_id_budget`]).
    pub fn set_id_budget(&mut self, budget: &IdBudget) {
        for p in self.pagers_mut() {
            p.set_id_budget(budget.clone());
        }
        self.ids = Some(budget.clone());
    }

    /// The chunk.
    pub fn chunk(&self) -> &Chunk {
        &self.chunk
    }

    /// The slices (read only).
    pub fn slices(&self) -> &[Slice] {
        &self.slices
    }

    /// How many pages a window read by offsets may issue past the one it waits for (the executor
    /// sets what may be in flight, read or waiting at once: 2 x `qbo.max_in_flight`; 10 until
    /// set).
    pub fn set_lookahead(&mut self, pages: u32) {
        self.lookahead = pages.max(1);
        for p in self.pagers_mut() {
            if let Stream::Offsets(o) = p {
                o.set_lookahead(pages);
            }
        }
    }

    /// Pages answered and held by windows read by offsets until the pages ahead of them are in:
    /// memory like pages waiting to be written.
    pub fn held_pages(&self) -> usize {
        self.slices
            .iter()
            .map(|s| match &s.work {
                Work::Page(p) => p.held(),
                _ => 0,
            })
            .sum()
    }

    fn pagers_mut(&mut self) -> impl Iterator<Item = &mut Stream> {
        self.slices.iter_mut().filter_map(|s| match &mut s.work {
            Work::Page(p) => Some(p),
            _ => None,
        })
    }

    /// The requests the slices may send now besides those in flight, at most `per_slice` of each
    /// slice (the caller picks among slices by [`ChunkSlices::priority`]): a slice's count, or
    /// what its pager allows (one window page at a time; every page of a second-mode pass at
    /// once, see [`Pager::ready`]). Each one sent must be passed to [`ChunkSlices::issue`] first,
    /// in the order returned for its slice. An error is a pager that gave up on a second
    /// ([`QboError::UnstableSecond`]).
    pub fn wanted(&self, per_slice: usize) -> Result<Vec<(u32, SliceRequest)>, QboError> {
        let mut out = Vec::new();
        if per_slice == 0 {
            return Ok(out);
        }
        for s in &self.slices {
            let i = s.id;
            match &s.work {
                Work::Count if !s.busy => out.push((
                    i,
                    SliceRequest::Count {
                        query: window_count_query(self.entity, self.name_list, s.start, s.end),
                    },
                )),
                Work::Page(p) => {
                    for r in p.ready(per_slice)? {
                        out.push((i, SliceRequest::Pager(r)));
                    }
                }
                Work::Count | Work::Done => {}
            }
        }
        Ok(out)
    }

    /// How much a slice's next request matters for finishing early: a count first (it is cheap
    /// and opens up work), then a second being read by STARTPOSITION (its passes, each waiting
    /// for the one before, are the longest chain of a chunk), then pages of the slices with the
    /// most records left (their chains of sequential pages are the longest: started first, they
    /// do not trail at the end).
    pub fn priority(&self, slice: u32) -> u64 {
        match self.slices.iter().find(|s| s.id == slice) {
            Some(s) => match (&s.work, s.expected) {
                (Work::Count, _) => u64::MAX,
                (Work::Page(p), _) if p.in_second_mode() => u64::MAX - 1,
                (_, Some(n)) => n.saturating_sub(s.fetched).max(1),
                (_, None) => u64::from(self.page_size),
            },
            None => 0,
        }
    }

    /// True when `slice` is read by offsets (see [`crate::offsets`]).
    pub fn reads_by_offsets(&self, slice: u32) -> bool {
        self.slices
            .iter()
            .any(|s| s.id == slice && matches!(s.work, Work::Page(Stream::Offsets(_))))
    }

    /// Slices still needing requests (counted or being paged).
    pub fn open_slices(&self) -> usize {
        self.slices.iter().filter(|s| !s.complete()).count()
    }

    /// Records that a request of [`ChunkSlices::wanted`] is being sent.
    pub fn issue(&mut self, slice: u32, req: &SliceRequest) -> Result<(), QboError> {
        let i = self.pos(slice)?;
        let s = &mut self.slices[i];
        match (req, &mut s.work) {
            (SliceRequest::Count { .. }, Work::Count) if !s.busy => {
                s.busy = true;
                Ok(())
            }
            (SliceRequest::Pager(r), Work::Page(p)) => p.issue(r),
            _ => Err(QboError::InvalidParameter(format!(
                "slices: slice {slice} did not ask for this request"
            ))),
        }
    }

    /// Feeds the `count(*)` of a slice in [`Work::Count`]. A slice wider than a second holding
    /// more than a page is read by offsets, every page at once ([`crate::offsets`]; pages of at
    /// least [`MIN_OFFSET_PAGE`] records); with smaller pages it is cut into counted parts when
    /// it holds more than [`SLICE_PAGES`] pages, else paged by time cursor.
    /// A slice that holds nothing and lies wholly before `live_edge` is complete at once (a
    /// record can only leave a past window during the run, never enter it).
    pub fn accept_slice_count(
        &mut self,
        slice: u32,
        count: u64,
        live_edge: DateTime<Utc>,
    ) -> Result<(), QboError> {
        let slice = self.pos(slice)?;
        let s = &self.slices[slice];
        if !matches!(s.work, Work::Count) {
            return Err(QboError::InvalidParameter(
                "slices: a count was fed to a slice that did not ask for one".into(),
            ));
        }
        let (start, end) = (s.start, s.end);
        let per_slice = u64::from(self.page_size.min(crate::query::MAX_PAGE)) * SLICE_PAGES;
        let width = (end - start).num_seconds();
        if count == 0 && end <= live_edge {
            let s = &mut self.slices[slice];
            s.work = Work::Done;
            s.busy = false;
            if s.unwritten == 0 {
                s.committed_done = true;
            }
            return Ok(());
        }
        let size = self.page_size.min(crate::query::MAX_PAGE);
        if count > u64::from(size) && size >= MIN_OFFSET_PAGE {
            let w = OffsetWindow::new(
                self.entity,
                self.name_list,
                Chunk {
                    index: self.chunk.index,
                    start,
                    end,
                },
                size,
                count,
                self.lookahead,
            )?;
            let s = &mut self.slices[slice];
            s.work = Work::Page(Stream::Offsets(Box::new(w)));
            s.expected = Some(count);
            s.busy = false;
            return Ok(());
        }
        if count > per_slice && width >= 2 {
            let parts = count
                .div_ceil(per_slice)
                .clamp(2, MAX_PARTS)
                .min(width as u64);
            let mut bounds = Vec::with_capacity(parts as usize + 1);
            for i in 0..=parts {
                let off = (width as i128 * i as i128 / parts as i128) as i64;
                bounds.push(start + TimeDelta::seconds(off));
            }
            let mut new = Vec::with_capacity(parts as usize);
            for w in bounds.windows(2) {
                let id = self.new_id();
                new.push(Slice::new(id, w[0], w[1], Work::Count));
            }
            self.slices.splice(slice..=slice, new);
            return Ok(());
        }
        let mut pager = self.pager(start, end, None)?;
        if width == 1 && count >= u64::from(self.page_size.min(crate::query::MAX_PAGE)) {
            // one second holding a page or more: straight to reading it by STARTPOSITION
            pager.begin_second(count)?;
        }
        let s = &mut self.slices[slice];
        s.work = Work::Page(Stream::Time(Box::new(pager)));
        s.expected = Some(count);
        s.busy = false;
        Ok(())
    }

    /// Call after feeding a count to a slice's pager: the slice may take its next request, and a
    /// pager that completed on a count (a slice ending with a second read by `count(*)`
    /// verification) completes the slice without another page.
    pub fn count_fed(&mut self, slice: u32) -> Result<(), QboError> {
        let i = self.pos(slice)?;
        let s = &mut self.slices[i];
        s.busy = false;
        if s.unwritten == 0 && s.complete() {
            s.committed_done = true;
        }
        Ok(())
    }

    /// The pager of a slice being paged.
    pub fn pager_mut(&mut self, slice: u32) -> Result<&mut Stream, QboError> {
        let i = self.pos(slice)?;
        match &mut self.slices[i].work {
            Work::Page(p) => Ok(p),
            _ => Err(QboError::InvalidParameter(format!(
                "slices: slice {slice} is not being paged"
            ))),
        }
    }

    /// Call after feeding a page to a slice's pager: the page is now waiting to be written. Returns
    /// the pager state to save once it is written (see [`ChunkSlices::page_written`]).
    pub fn page_fetched(
        &mut self,
        slice: u32,
        records: usize,
    ) -> Result<Option<PagerState>, QboError> {
        let i = self.pos(slice)?;
        let s = &mut self.slices[i];
        s.unwritten += 1;
        s.fetched += records as u64;
        Ok(match &s.work {
            Work::Page(p) => Some(p.persisted_state()),
            _ => None,
        })
    }

    /// A page of `slice` was written; `state` is what [`ChunkSlices::page_fetched`] returned for
    /// it. Pages of one slice are written in the order they were fetched.
    pub fn page_written(&mut self, slice: u32, state: Option<PagerState>) -> Result<(), QboError> {
        let i = self.pos(slice)?;
        let s = &mut self.slices[i];
        s.unwritten = s.unwritten.saturating_sub(1);
        if let Some(st) = state {
            s.committed_done = st.mode == crate::pager::PagerMode::Done;
            s.committed = Some(st);
        }
        if s.unwritten == 0 && s.complete() {
            s.committed_done = true;
        }
        Ok(())
    }

    /// Every second before this instant is written (the start of the first slice not complete
    /// and written, or where its last written page left it); the chunk's end once all are.
    pub fn committed_until(&self) -> DateTime<Utc> {
        for s in &self.slices {
            if s.committed_done {
                continue;
            }
            return match &s.committed {
                // in every mode, the seconds before the cursor are complete
                Some(st) => st.cursor.max(s.start),
                None => s.start,
            };
        }
        whole(self.chunk.end)
    }

    /// True when every slice is complete and written.
    pub fn is_done(&self) -> bool {
        self.slices.iter().all(|s| s.committed_done)
    }

    /// The cursor to save with a committed page.
    pub fn saved(&self) -> serde_json::Value {
        let slices: Vec<SavedSlice> = self
            .slices
            .iter()
            .map(|s| SavedSlice {
                start: s.start,
                end: s.end,
                state: if s.committed_done {
                    None
                } else {
                    s.committed.clone()
                },
                done: s.committed_done,
            })
            .collect();
        serde_json::to_value(SavedChunk { slices }).unwrap_or(serde_json::Value::Null)
    }

    /// Seconds left by the pagers because they kept changing (see `PagerStats::live_seconds_left`).
    pub fn live_seconds_left(&self) -> u64 {
        self.slices
            .iter()
            .map(|s| match &s.work {
                Work::Page(p) => p.stats().live_seconds_left,
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, d, h, 0, 0).unwrap()
    }
    fn chunk() -> Chunk {
        Chunk {
            index: 1,
            start: t(1, 0),
            end: t(8, 0),
        }
    }
    fn far() -> DateTime<Utc> {
        t(30, 0)
    }
    fn no_ids(_: DateTime<Utc>) -> Result<Vec<SecondId>, QboError> {
        panic!("no saved slice reads a second here")
    }

    #[test]
    fn sequential_is_one_slice_paged_at_once() {
        let cs =
            ChunkSlices::new("Invoice", false, chunk(), 1000, false, None, &mut no_ids).unwrap();
        let w = cs.wanted(10).unwrap();
        assert_eq!(w.len(), 1);
        assert!(matches!(&w[0].1, SliceRequest::Pager(r) if r.start_position == 1));
    }

    #[test]
    fn a_big_count_cuts_into_counted_equal_parts_covering_the_chunk() {
        let mut cs =
            ChunkSlices::new("Invoice", false, chunk(), 10, true, None, &mut no_ids).unwrap();
        let w = cs.wanted(10).unwrap();
        let first = cs.slices()[0].id;
        assert_eq!(
            w,
            vec![(
                first,
                SliceRequest::Count {
                    query: "SELECT count(*) FROM Invoice WHERE MetaData.LastUpdatedTime >= '2025-03-01T00:00:00+00:00' AND MetaData.LastUpdatedTime < '2025-03-08T00:00:00+00:00'".into()
                }
            )]
        );
        cs.accept_slice_count(first, 125, t(4, 12)).unwrap();
        // 125 rows at 4 pages of 10 a slice (pages too small for offsets): 4 parts
        assert_eq!(cs.slices().len(), 4);
        assert_eq!(cs.slices()[0].start, t(1, 0));
        assert_eq!(cs.slices()[3].end, t(8, 0));
        for w in cs.slices().windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert_eq!(cs.wanted(10).unwrap().len(), 4, "one count per slice");
        assert_eq!(cs.wanted(1).unwrap().len(), 4);
        // (the live edge at the end of the second part: the last two may still receive records)
        // a past part is paged (by offsets), an empty past part is done, a part with a burst
        // that reaches the present is cut again
        let ids: Vec<u32> = cs.slices().iter().map(|s| s.id).collect();
        cs.accept_slice_count(ids[0], 30, t(4, 12)).unwrap();
        cs.accept_slice_count(ids[1], 0, t(4, 12)).unwrap();
        cs.accept_slice_count(ids[2], 90, t(4, 12)).unwrap();
        // ids stay stable across the cut
        assert_eq!(cs.slices()[5].id, ids[3]);
        assert_eq!(cs.slices().len(), 4 - 1 + 3);
        assert!(matches!(cs.slices()[0].work, Work::Page(_)));
        assert!(matches!(cs.slices()[1].work, Work::Done));
        assert!(!cs.is_done());
    }

    #[test]
    fn counts_come_first_then_the_slices_with_most_records_left() {
        let mut cs =
            ChunkSlices::new("Invoice", false, chunk(), 10, true, None, &mut no_ids).unwrap();
        let id = cs.slices()[0].id;
        cs.accept_slice_count(id, 90, t(1, 0)).unwrap();
        let ids: Vec<u32> = cs.slices().iter().map(|s| s.id).collect();
        assert_eq!(ids.len(), 3);
        cs.accept_slice_count(ids[0], 15, t(1, 0)).unwrap();
        cs.accept_slice_count(ids[1], 39, t(1, 0)).unwrap();
        assert_eq!(cs.priority(ids[2]), u64::MAX, "a count first");
        assert!(cs.priority(ids[1]) > cs.priority(ids[0]));
        // fetching records lowers what is left
        cs.page_fetched(ids[1], 30).unwrap();
        assert_eq!(cs.priority(ids[1]), 9);
        assert!(cs.priority(ids[0]) > cs.priority(ids[1]));
    }

    #[test]
    fn an_empty_slice_at_the_live_edge_is_paged_not_skipped() {
        let mut cs =
            ChunkSlices::new("Invoice", false, chunk(), 1000, true, None, &mut no_ids).unwrap();
        let id = cs.slices()[0].id;
        cs.accept_slice_count(id, 0, t(5, 0)).unwrap();
        assert!(matches!(cs.slices()[0].work, Work::Page(_)));
    }

    /// STARTPOSITION of every request of `wanted`, all pages.
    fn page_starts(wanted: &[(u32, SliceRequest)]) -> Vec<u32> {
        wanted
            .iter()
            .map(|(_, r)| match r {
                SliceRequest::Pager(r) => r.start_position,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_one_second_slice_is_never_cut_and_a_bulk_one_is_read_by_offsets() {
        let c = Chunk {
            index: 1,
            start: t(1, 0),
            end: t(1, 0) + TimeDelta::seconds(1),
        };
        let mut cs = ChunkSlices::new("Invoice", false, c, 1000, true, None, &mut no_ids).unwrap();
        let id = cs.slices()[0].id;
        cs.accept_slice_count(id, 50_000, far()).unwrap();
        assert_eq!(cs.slices().len(), 1);
        assert!(matches!(
            &cs.slices()[0].work,
            Work::Page(Stream::Offsets(_))
        ));
        // in Id order a second is no different: as many pages at once as asked for
        let w = cs.wanted(10).unwrap();
        assert!(w
            .iter()
            .all(|(_, r)| matches!(r, SliceRequest::Pager(r) if r.kind == crate::pager::RequestKind::Window)));
        let starts = page_starts(&w);
        assert_eq!(starts, (0..10).map(|k| 1 + 995 * k).collect::<Vec<u32>>());
        for (slice, r) in &w[..4] {
            cs.issue(*slice, r).unwrap();
        }
        // the next ones follow those in flight; the same request twice is refused
        assert!(
            matches!(&cs.wanted(1).unwrap()[0].1, SliceRequest::Pager(r) if r.start_position == 1 + 995 * 4)
        );
        assert!(cs.issue(id, &w[0].1).is_err());
    }

    #[test]
    fn a_past_slice_is_read_by_offsets_every_page_at_once_without_cutting() {
        let mut cs =
            ChunkSlices::new("Invoice", false, chunk(), 1000, true, None, &mut no_ids).unwrap();
        cs.set_lookahead(10);
        let id = cs.slices()[0].id;
        cs.accept_slice_count(id, 12_500, far()).unwrap();
        assert_eq!(cs.slices().len(), 1, "not cut");
        assert!(matches!(&cs.slices()[0].work, Work::Page(s) if matches!(s, Stream::Offsets(_))));
        assert!(cs.reads_by_offsets(id));
        // 12,500 records, 995 new a page: 13 pages, the first 10 at once (the lookahead)
        let w = cs.wanted(20).unwrap();
        let starts = page_starts(&w);
        assert_eq!(starts, (0..10).map(|k| 1 + 995 * k).collect::<Vec<u32>>());
        assert!(w
            .iter()
            .all(|(_, r)| matches!(r, SliceRequest::Pager(r) if r.query.contains(" ORDERBY Id "))));
        // what it saves with a page goes on by offsets, from where the page left it
        for (slice, r) in &w[..2] {
            cs.issue(*slice, r).unwrap();
        }
        let page = |from: usize, n: usize| -> Vec<crate::pager::RawRecord> {
            (from..from + n)
                .map(|i| {
                    let text = format!(
                        r#"{{"Id":"{i:05}","SyncToken":"0","MetaData":{{"LastUpdatedTime":"2025-03-02T10:00:00Z"}}}}"#
                    );
                    let raw = serde_json::value::RawValue::from_string(text).unwrap();
                    crate::pager::RawRecord::from_page(&raw, false).unwrap()
                })
                .collect()
        };
        let p = cs.pager_mut(id).unwrap();
        let SliceRequest::Pager(first) = &w[0].1 else {
            panic!("a page")
        };
        p.accept_part(first.part, page(0, 1000)).unwrap();
        let state = cs.page_fetched(id, 1000).unwrap();
        cs.page_written(id, state).unwrap();
        let saved = cs.saved();
        assert_eq!(saved["slices"][0]["state"]["offsets"]["next"], 996);
        assert_eq!(
            cs.committed_until(),
            chunk().start,
            "no second is complete before the end"
        );
        let mut again = ChunkSlices::new(
            "Invoice",
            false,
            chunk(),
            1000,
            true,
            Some(&saved),
            &mut no_ids,
        )
        .unwrap();
        again.set_lookahead(2);
        let w = again.wanted(20).unwrap();
        let starts = page_starts(&w);
        assert_eq!(starts, vec![996, 1991]);
        // a saved window read by offsets goes on only over the same window
        let shorter = Chunk {
            end: t(5, 0),
            ..chunk()
        };
        let e = ChunkSlices::new(
            "Invoice",
            false,
            shorter,
            1000,
            true,
            Some(&saved),
            &mut no_ids,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("a window read by offsets was saved up to"),
            "{e}"
        );
        // small pages keep the time cursor and the cut
        let mut cs =
            ChunkSlices::new("Invoice", false, chunk(), 10, true, None, &mut no_ids).unwrap();
        let id = cs.slices()[0].id;
        cs.accept_slice_count(id, 125, far()).unwrap();
        assert!(cs.slices().len() > 1);
    }

    #[test]
    fn saved_cursor_resumes_written_state_and_recounts_the_rest() {
        let mut cs =
            ChunkSlices::new("Invoice", false, chunk(), 10, true, None, &mut no_ids).unwrap();
        let id = cs.slices()[0].id;
        cs.accept_slice_count(id, 80, t(1, 0)).unwrap();
        assert_eq!(cs.slices().len(), 2);
        let (a, b) = (cs.slices()[0].id, cs.slices()[1].id);
        cs.accept_slice_count(a, 5, t(1, 0)).unwrap();
        cs.accept_slice_count(b, 30, t(1, 0)).unwrap();
        // slice 0: one short page, done; slice 1: one full page fetched but not yet written
        let r0 = match cs.wanted(10).unwrap().remove(0).1 {
            SliceRequest::Pager(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(r0.start_position, 1);
        let acc = cs.pager_mut(a).unwrap().accept_part(0, Vec::new()).unwrap();
        assert!(acc.done);
        let st0 = cs.page_fetched(a, 0).unwrap();
        let saved_before = cs.saved();
        assert_eq!(saved_before["slices"][0]["done"], false);
        cs.page_written(a, st0).unwrap();
        let saved = cs.saved();
        assert_eq!(saved["slices"][0]["done"], true);
        assert_eq!(saved["slices"][1]["state"], serde_json::Value::Null);
        let again = ChunkSlices::new(
            "Invoice",
            false,
            chunk(),
            10,
            true,
            Some(&saved),
            &mut no_ids,
        )
        .unwrap();
        assert_eq!(again.slices().len(), 2);
        assert!(matches!(again.slices()[0].work, Work::Done));
        assert!(matches!(again.slices()[1].work, Work::Count));
        // resumed with a later end: the rest of the chunk is a new slice
        let longer = Chunk {
            end: t(9, 0),
            ..chunk()
        };
        let more = ChunkSlices::new(
            "Invoice",
            false,
            longer,
            10,
            true,
            Some(&saved),
            &mut no_ids,
        )
        .unwrap();
        assert_eq!(more.slices().len(), 3);
        assert_eq!(more.slices()[2].start, t(8, 0));
    }

    #[test]
    fn a_pager_that_completes_on_a_count_completes_its_slice() {
        let done = PagerState {
            cursor: t(1, 0),
            seen_at_cursor: Default::default(),
            mode: crate::pager::PagerMode::Done,
            ids_in_table: false,
            offsets: None,
        };
        let v = serde_json::json!({"slices": [
            {"start": "2025-03-01T00:00:00Z", "end": "2025-03-08T00:00:00Z", "state": done}
        ]});
        let mut cs =
            ChunkSlices::new("Invoice", false, chunk(), 1000, true, Some(&v), &mut no_ids).unwrap();
        let id = cs.slices()[0].id;
        assert!(cs.wanted(10).unwrap().is_empty());
        assert!(!cs.is_done(), "complete but not yet settled");
        cs.count_fed(id).unwrap();
        assert!(cs.is_done());
    }

    #[test]
    fn a_bare_pager_state_resumes_as_one_slice() {
        let p = Pager::new("Invoice", false, chunk(), 1000).unwrap();
        let v = serde_json::to_value(p.state()).unwrap();
        let cs =
            ChunkSlices::new("Invoice", false, chunk(), 1000, true, Some(&v), &mut no_ids).unwrap();
        assert_eq!(cs.slices().len(), 1);
        assert!(matches!(cs.slices()[0].work, Work::Page(_)));
    }

    #[test]
    fn a_saved_slice_reading_a_second_gets_its_ids_from_the_table() {
        let v = serde_json::json!({"slices": [
            {"start": "2025-03-01T00:00:00Z", "end": "2025-03-08T00:00:00Z", "state": {
                "cursor": "2025-03-02T10:00:00Z", "seen_at_cursor": {}, "ids_in_table": true,
                "mode": {"mode": "second_pages", "second_try": 2, "expected": 3000,
                         "next_start": 2001, "passes": 1, "seen_in_try": []}}}
        ]});
        let mut asked = Vec::new();
        let mut load = |second: DateTime<Utc>| {
            asked.push(second);
            Ok(vec![
                SecondId {
                    id: "1".into(),
                    sync_token: 3,
                    seen_try: 2,
                },
                SecondId {
                    id: "2".into(),
                    sync_token: 0,
                    seen_try: 1,
                },
                SecondId {
                    id: "3".into(),
                    sync_token: 1,
                    seen_try: 2,
                },
            ])
        };
        let mut cs = ChunkSlices::new::<QboError>(
            "Invoice",
            false,
            chunk(),
            1000,
            true,
            Some(&v),
            &mut load,
        )
        .unwrap();
        assert_eq!(asked, vec![t(2, 10)]);
        let id = cs.slices()[0].id;
        let st = match cs.pager_mut(id).unwrap() {
            Stream::Time(p) => p.state().clone(),
            Stream::Offsets(_) => panic!("a second is read by time cursor"),
        };
        assert_eq!(st.seen_at_cursor.len(), 3);
        assert_eq!(st.seen_at_cursor["1"], 3);
        match st.mode {
            crate::pager::PagerMode::SecondPages {
                seen_in_try,
                next_start,
                ..
            } => {
                assert_eq!(seen_in_try.into_iter().collect::<Vec<_>>(), vec!["1", "3"]);
                assert_eq!(next_start, 2001);
            }
            other => panic!("{other:?}"),
        }
        // what is saved again leaves the Ids to the table
        assert_eq!(
            cs.saved()["slices"][0]["state"]["seen_at_cursor"],
            serde_json::json!({})
        );
    }

    #[test]
    fn every_pager_of_a_chunk_holds_its_ids_within_the_runs_budget() {
        // a saved slice reading a second, its three Ids (two seen in this try) from the table
        let v = serde_json::json!({"slices": [
            {"start": "2025-03-01T00:00:00Z", "end": "2025-03-02T10:00:01Z", "state": {
                "cursor": "2025-03-02T10:00:00Z", "seen_at_cursor": {}, "ids_in_table": true,
                "mode": {"mode": "second_pages", "second_try": 1, "expected": 3000,
                         "next_start": 2001, "passes": 1, "seen_in_try": []}}},
            {"start": "2025-03-02T10:00:01Z", "end": "2025-03-02T10:00:02Z"}
        ]});
        let rows = || {
            ["1", "2", "3"]
                .into_iter()
                .map(|id| SecondId {
                    id: id.into(),
                    sync_token: 0,
                    seen_try: u32::from(id != "2"),
                })
                .collect::<Vec<_>>()
        };
        let budget = crate::budget::MemoryBudget::new(256, 10).ids();
        let mut cs = ChunkSlices::new::<QboError>(
            "Invoice",
            false,
            chunk(),
            1000,
            true,
            Some(&v),
            &mut |_| Ok(rows()),
        )
        .unwrap();
        cs.set_id_budget(&budget);
        assert_eq!(budget.held(), 5 * (96 + 1));
        // a one-second slice counted at a trillion is read by offsets, which hold no Ids: its
        // pages end at the first short one, whatever the count claimed
        let second = cs.slices()[1].id;
        cs.accept_slice_count(second, 1_000_000_000_000, far())
            .unwrap();
        assert!(matches!(
            &cs.slices()[1].work,
            Work::Page(Stream::Offsets(_))
        ));
        assert_eq!(budget.held(), 5 * (96 + 1));
        // a resumed second holding more than a (tiny) budget allows is refused at once
        let tiny = IdBudget::new(1, 400);
        let mut cs = ChunkSlices::new::<QboError>(
            "Invoice",
            false,
            chunk(),
            1000,
            true,
            Some(&v),
            &mut |_| Ok(rows()),
        )
        .unwrap();
        cs.set_id_budget(&tiny);
        let e = cs.wanted(10).unwrap_err();
        assert!(
            matches!(e, QboError::SecondTooLarge { held: 3, .. }),
            "{e:?}"
        );
        drop(cs);
        assert_eq!(tiny.held(), 0);
    }

    #[test]
    fn slices_that_do_not_follow_each_other_are_refused() {
        let v = serde_json::json!({"slices": [
            {"start": "2025-03-01T00:00:00Z", "end": "2025-03-02T00:00:00Z", "done": true},
            {"start": "2025-03-03T00:00:00Z", "end": "2025-03-08T00:00:00Z"}
        ]});
        let e = ChunkSlices::new("Invoice", false, chunk(), 1000, true, Some(&v), &mut no_ids)
            .unwrap_err();
        assert!(e.to_string().contains("do not follow"), "{e}");
    }
}
