//! The paging state machine for ONE chunk: pure logic, no I/O.
//!
//! The caller loops: [`Pager::next_request`] says what to fetch (a query text and its parameters),
//! the caller fetches it and feeds the answer back with [`Pager::accept`] (a page of records) or
//! [`Pager::accept_count`] (a `count(*)`), stores the returned records, persists
//! [`Pager::state`], and asks again until `next_request` returns `None`.
//!
//! # Why a time cursor
//! QBO gives no order among records with the same `LastUpdatedTime` (bulk imports put thousands in
//! one second, and the order of ties may change from one request to the next), and a record
//! updated while we page moves to a later second and shifts every later offset. So STARTPOSITION
//! over the whole window loses and duplicates records. Instead:
//!
//! - **Window mode**: fetch `LastUpdatedTime >= cursor AND < chunk end ORDERBY LastUpdatedTime
//!   STARTPOSITION 1`. Records whose Id was already taken at the cursor second (with the same or
//!   a lower SyncToken) are skipped and counted as `refetched`; the cursor moves to the latest
//!   second of the page, and the remembered Ids become those at the new cursor second only (so
//!   memory is bounded by one second's records). A page shorter than the size actually served
//!   (`min(page_size, 1000)`) ends the chunk.
//! - **Second mode**: a full page entirely in one second (the cursor second) means that second
//!   alone holds a page or more, which a time cursor cannot get past. Then the pager takes
//!   `count(*)` of that second and pages `LastUpdatedTime = second` by STARTPOSITION (1, 1+size,
//!   ...) until a short page ends the pass, collecting distinct Ids. The second is complete when,
//!   at the end of a pass, the distinct Ids seen in this try equal the count. If they do not (ties
//!   reordered between requests, records moving), further passes keep collecting: with ties
//!   shuffled per request each pass sees every record with probability about 1 - 1/e, so the try
//!   allows `ceil(ln n) + 8` passes before it gives up (a stable order needs exactly one). More
//!   distinct Ids than the count means the count is stale: the try ends at once. The pages of a
//!   pass do not depend on each other, so [`Pager::ready`] hands them out together (every
//!   STARTPOSITION up to the count, and the one just past it, which comes back short) for a
//!   caller with several requests in flight, and the pass ends once they are all in, in whatever
//!   order; the batches of an Id check (below) go out together too. A try that fails
//!   retakes the count; after [`DEFAULT_SECOND_TRIES`] tries the pager fails with
//!   [`QboError::UnstableSecond`]. After the second, window mode resumes from `second + 1 s`.
//!
//! # Memory
//! The Ids of a second read in second mode are kept in memory (`seen_at_cursor` and the try's
//! set) until the second is done. `count(*)` is QBO's claim, never the bound: the Ids are held
//! within the run's Id budget ([`crate::budget::IdBudget`], a quarter of `qbo.max_buffer_mb`,
//! shared by every pager of the run, each charging what its sets cost). A count claiming more Ids
//! than fit, a pass reaching STARTPOSITIONs past them, or pages whose Ids take the run past the
//! budget fail with [`QboError::SecondTooLarge`]; a pass never plans a page past what fits.
//!
//! # What is counted
//! - `accepted`: records handed to the caller. Inside one page, duplicate Ids are reduced to the
//!   highest SyncToken first (counted as `duplicates`).
//! - `refetched`: records skipped because their Id (at that SyncToken or higher) was already taken
//!   at the cursor second.
//! - A record updated while the chunk pages moves to a later second; if that second is still in
//!   the chunk it is fetched and accepted again with its higher SyncToken (a newer version, which
//!   the store must apply). The pager cannot tell this apart from a new record without
//!   remembering every Id of the chunk, so such a record counts twice in `accepted`; the store can
//!   recognise it (the row was written by the same chunk) if it needs distinct Ids.
//!
//! Seen Ids remember their SyncToken: a record updated twice within the same second comes back
//! with a higher SyncToken and is accepted again rather than skipped.
//!
//! # Resuming
//! [`PagerState`] (cursor, Ids at the cursor second with their SyncTokens, mode) is serializable:
//! persisted with each committed page, it lets [`Pager::resume`] continue mid-chunk without
//! losing or re-storing records. In second mode it records the pages handed out, not those
//! answered: pages lost in flight with a crashed process leave the resumed pass short of its count,
//! and another pass collects what they held.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::budget::{id_entry_cost, IdBudget, ID_ENTRY_OVERHEAD};
use crate::error::QboError;
use crate::plan::Chunk;
use crate::query::{
    ceil_second, floor_second, is_valid_entity_name, literal, second_count_query,
    second_page_query, window_query, Order, MAX_PAGE,
};

/// Tries (each with a fresh `count(*)`) allowed to read a second completely.
pub const DEFAULT_SECOND_TRIES: u32 = 3;

/// One record of a page: the keys the pager needs, and the record text exactly as QBO sent it.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// `Id` (unique within realm and entity).
    pub id: String,
    /// `SyncToken`, the record's version, parsed from its string.
    pub sync_token: i64,
    /// `MetaData.LastUpdatedTime`, converted to UTC.
    pub last_updated: DateTime<Utc>,
    /// The record itself, as text or already in jsonb's binary format.
    pub payload: Payload,
}

/// A record's body on its way to the upsert.
#[derive(Debug, Clone)]
pub enum Payload {
    /// The JSON text as received (`12.30` stays `12.30`; `\u0000` replaced, see
    /// [`crate::jsonb`]); the backend casts it.
    Text(Box<RawValue>),
    /// The same record as the bytes of its jsonb datum ([`crate::jsonb::encode`]), written on the
    /// network thread so the backend parses nothing.
    Jsonb(Box<[u8]>),
}

#[derive(Deserialize)]
struct RecordKeys<'a> {
    #[serde(rename = "Id", borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(rename = "SyncToken", borrow, default)]
    sync_token: Option<&'a RawValue>,
    #[serde(rename = "MetaData", borrow, default)]
    meta: Option<MetaKeys<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct MetaKeys<'a> {
    #[serde(rename = "LastUpdatedTime", borrow, default)]
    pub(crate) last_updated: Option<Cow<'a, str>>,
}

/// A JSON string or number as text.
pub(crate) fn scalar_text(raw: &RawValue) -> Option<String> {
    let t = raw.get();
    if t.starts_with('"') {
        serde_json::from_str::<String>(t).ok()
    } else if t.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        Some(t.to_string())
    } else {
        None
    }
}

impl RawRecord {
    /// One record of a page's body: `Id`, `SyncToken` and `MetaData.LastUpdatedTime` extracted
    /// without re-encoding it, and the record itself as jsonb bytes where [`crate::jsonb::encode`]
    /// can if `jsonb` (its text is then never copied), else as its text with the `\u0000` policy
    /// of [`crate::jsonb`] applied. Errors are [`QboError::BadResponse`].
    pub fn from_page(json: &RawValue, jsonb: bool) -> Result<RawRecord, QboError> {
        let (id, sync_token, last_updated) = Self::keys(json)?;
        // the payload's `\u0000` become U+FFFD (jsonb cannot hold NUL); the key follows the
        // same rule, so it stays equal to payload->>'Id' and is valid text (a NUL inside a text
        // datum is an invalid value that changes on dump and restore)
        let id = if id.contains('\0') {
            id.replace('\0', "\u{FFFD}")
        } else {
            id
        };
        // a record too big for the encoder's bounded working memory goes to `jsonb_in` as text
        let encode = jsonb && json.get().len() <= crate::jsonb::encode::MAX_RECORD_BYTES;
        let payload = match encode
            .then(|| crate::jsonb::encode::encode(json.get()))
            .flatten()
        {
            Some(b) => Payload::Jsonb(b.into_boxed_slice()),
            None => Payload::Text(match crate::jsonb::storable(json.get()) {
                Cow::Borrowed(_) => json.to_owned(),
                Cow::Owned(fixed) => {
                    RawValue::from_string(fixed).expect("replacing an escape keeps the JSON valid")
                }
            }),
        };
        Ok(RawRecord {
            id,
            sync_token,
            last_updated,
            payload,
        })
    }

    #[allow(clippy::type_complexity)]
    fn keys(json: &RawValue) -> Result<(String, i64, DateTime<Utc>), QboError> {
        if !json.get().trim_start().starts_with('{') {
            return Err(QboError::BadResponse(
                "a record is not a JSON object".into(),
            ));
        }
        let keys: RecordKeys<'_> = serde_json::from_str(json.get()).map_err(|e| {
            QboError::BadResponse(format!(
                "a record is not a JSON object with the expected keys: {e}"
            ))
        })?;
        let id = keys
            .id
            .and_then(scalar_text)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| QboError::BadResponse("a record has no Id".into()))?;
        let tok_text = keys
            .sync_token
            .and_then(scalar_text)
            .ok_or_else(|| QboError::BadResponse(format!("record Id {id} has no SyncToken")))?;
        let sync_token = if !tok_text.is_empty() && tok_text.bytes().all(|b| b.is_ascii_digit()) {
            tok_text.parse::<i64>().ok()
        } else {
            None
        }
        .ok_or_else(|| {
            QboError::BadResponse(format!(
                "record Id {id} has a non-numeric SyncToken {:?}",
                crate::error::truncate_chars(&tok_text, 40)
            ))
        })?;
        let lut = keys.meta.and_then(|m| m.last_updated).ok_or_else(|| {
            QboError::BadResponse(format!("record Id {id} has no MetaData.LastUpdatedTime"))
        })?;
        let last_updated = DateTime::parse_from_rfc3339(&lut)
            .map_err(|e| {
                QboError::BadResponse(format!(
                    "record Id {id} has an invalid MetaData.LastUpdatedTime {:?}: {e}",
                    crate::error::truncate_chars(&lut, 60)
                ))
            })?
            .with_timezone(&Utc);
        Ok((id, sync_token, last_updated))
    }

    /// Bytes the record holds in memory: itself, its Id and its payload, with the allocator's
    /// overhead ([`crate::budget::RECORD_OVERHEAD`]).
    pub fn held_bytes(&self) -> usize {
        let payload = match &self.payload {
            Payload::Text(t) => t.get().len(),
            Payload::Jsonb(b) => b.len(),
        };
        crate::budget::RECORD_OVERHEAD + self.id.len() + payload
    }

    /// The record's JSON text, unless it was already converted to jsonb.
    pub fn text(&self) -> Option<&str> {
        match &self.payload {
            Payload::Text(t) => Some(t.get()),
            Payload::Jsonb(_) => None,
        }
    }
}

/// What the pager is doing, persisted in [`PagerState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum PagerMode {
    /// Paging the window from the cursor.
    Window,
    /// About to take `count(*)` of the cursor second, for try `second_try` (1-based).
    SecondCount {
        /// 1-based try number.
        second_try: u32,
    },
    /// Paging the cursor second by STARTPOSITION.
    SecondPages {
        /// 1-based try number.
        second_try: u32,
        /// `count(*)` taken at the start of this try.
        expected: u64,
        /// STARTPOSITION of the next page.
        next_start: u32,
        /// Passes completed in this try.
        passes: u32,
        /// Distinct Ids seen in this try.
        seen_in_try: BTreeSet<String>,
    },
    /// A pass over the cursor second ended short of its count: take `count(*)` again (records
    /// may have left the second since, or entered it if it is live) before another pass.
    SecondRecount {
        /// 1-based try number.
        second_try: u32,
        /// Passes completed in this try.
        passes: u32,
        /// Distinct Ids seen in this try.
        seen_in_try: BTreeSet<String>,
    },
    /// The recount fell to (or below) the Ids seen: records left the second while it was read
    /// (an update moves a record to the present, a delete removes it). Count how many of the Ids
    /// seen are still in the second, `VERIFY_BATCH` at a time: if that equals the recount, every
    /// record still in the second was seen.
    SecondVerify {
        /// 1-based try number.
        second_try: u32,
        /// Passes completed in this try.
        passes: u32,
        /// Distinct Ids seen in this try.
        seen_in_try: BTreeSet<String>,
        /// The recount.
        expected: u64,
        /// Next batch of `seen_in_try` to count.
        batch: u32,
        /// Seen Ids found still in the second so far.
        matched: u64,
    },
    /// The chunk is complete.
    Done,
    /// The cursor second could not be read completely; `next_request` returns the error.
    Failed {
        /// Last count.
        expected: u64,
        /// Distinct Ids seen in the last try.
        seen: u64,
        /// Tries made.
        attempts: u32,
    },
}

/// The resumable state of a [`Pager`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagerState {
    /// The second from which the window is read (always a whole second, UTC).
    pub cursor: DateTime<Utc>,
    /// Ids already taken whose `LastUpdatedTime` second is the cursor, with their SyncToken.
    pub seen_at_cursor: BTreeMap<String, i64>,
    /// Current mode.
    pub mode: PagerMode,
    /// In second mode, the Ids taken at the cursor second and those seen in the current try are
    /// kept in a table of their own, written page by page with the records
    /// ([`Accepted::second_ids`]), not in this state: a bulk second's tens of thousands of Ids
    /// would otherwise be copied and saved again with every page. Such a state comes back from
    /// storage with both sets empty; [`PagerState::with_second_ids`] fills them in.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ids_in_table: bool,
    /// Set while the window is read by offsets in Id order ([`crate::offsets`]): where it goes on.
    /// `cursor` then stays at the window's start (no second of it is complete before its end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsets: Option<OffsetsState>,
}

/// Where a window read by offsets stands (see [`crate::offsets`]), saved with every page it
/// writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetsState {
    /// STARTPOSITION of the next page to read.
    pub next: u32,
    /// Records the window held when it was counted.
    pub count: u64,
    /// The last Ids taken, in the order QBO served them (the end of the last page taken): the
    /// next page is proven to continue what was taken when it holds one of them.
    pub tail: Vec<String>,
}

/// One Id of a second being read in second mode, as kept in its table: the highest SyncToken
/// taken, and the try in which it was last seen (0: not seen in any try, only by window pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondId {
    pub id: String,
    pub sync_token: i64,
    pub seen_try: u32,
}

/// The rows to write to the second's Id table with a page (upserted: the higher SyncToken, the
/// later try).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondIds {
    /// The second being read.
    pub second: DateTime<Utc>,
    pub ids: Vec<SecondId>,
}

impl PagerState {
    /// A state saved with `ids_in_table`, with its sets filled in from the second's table rows.
    pub fn with_second_ids(mut self, rows: impl IntoIterator<Item = SecondId>) -> PagerState {
        if !self.ids_in_table {
            return self;
        }
        let current = current_try(&self.mode);
        let mut seen = BTreeSet::new();
        let mut taken = BTreeMap::new();
        for r in rows {
            if current.is_some_and(|t| t == r.seen_try) {
                seen.insert(r.id.clone());
            }
            taken.insert(r.id, r.sync_token);
        }
        self.seen_at_cursor = taken;
        match &mut self.mode {
            PagerMode::SecondPages { seen_in_try, .. }
            | PagerMode::SecondRecount { seen_in_try, .. }
            | PagerMode::SecondVerify { seen_in_try, .. } => *seen_in_try = seen,
            _ => {}
        }
        self
    }
}

/// The try of a second-mode state that collects Ids (`None` for other modes).
fn current_try(mode: &PagerMode) -> Option<u32> {
    match mode {
        PagerMode::SecondPages { second_try, .. }
        | PagerMode::SecondRecount { second_try, .. }
        | PagerMode::SecondVerify { second_try, .. } => Some(*second_try),
        _ => None,
    }
}

/// The Ids seen in the current try of a second-mode state (`None` for other modes).
fn try_set(mode: &PagerMode) -> Option<&BTreeSet<String>> {
    match mode {
        PagerMode::SecondPages { seen_in_try, .. }
        | PagerMode::SecondRecount { seen_in_try, .. }
        | PagerMode::SecondVerify { seen_in_try, .. } => Some(seen_in_try),
        _ => None,
    }
}

/// What kind of request [`Pager::next_request`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// A page of the window `[from, to)`; answer with [`Pager::accept`].
    Window,
    /// `count(*)` of the second `from`; answer with [`Pager::accept_count`].
    SecondCount,
    /// A page of the second `from`; answer with [`Pager::accept`].
    SecondPage,
}

/// One request to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What it is.
    pub kind: RequestKind,
    /// The query text to send.
    pub query: String,
    /// Lower bound (inclusive) of `LastUpdatedTime`; for second requests, the second.
    pub from: DateTime<Utc>,
    /// Upper bound (exclusive); for second requests, `from + 1 s`.
    pub to: DateTime<Utc>,
    /// STARTPOSITION (1-based; 0 for counts).
    pub start_position: u32,
    /// MAXRESULTS (0 for counts).
    pub max_results: u32,
    /// Which request of its step this is, to hand back with the answer
    /// ([`Pager::accept_part`], [`Pager::accept_count_part`]): the STARTPOSITION of a second
    /// page, the batch of an Id check, 0 otherwise.
    pub part: u32,
}

/// The result of feeding one page.
#[derive(Debug)]
pub struct Accepted {
    /// Records to store, in page order: new Ids, or known Ids with a higher SyncToken.
    pub records: Vec<RawRecord>,
    /// Records skipped because already taken at the cursor second.
    pub refetched: u64,
    /// Records dropped because the same Id appeared in the page with a higher SyncToken.
    pub duplicates: u64,
    /// True when the chunk is complete.
    pub done: bool,
    /// In second mode, what to write to the second's Id table with this page (see
    /// [`PagerState::ids_in_table`]).
    pub second_ids: Option<SecondIds>,
}

/// Running totals of one pager (not persisted: the store keeps its own counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PagerStats {
    /// Pages accepted.
    pub pages: u64,
    /// Counts accepted.
    pub counts: u64,
    /// Records handed to the caller.
    pub accepted: u64,
    /// Records skipped as already taken.
    pub refetched: u64,
    /// In-page duplicates dropped.
    pub duplicates: u64,
    /// Second-mode tries started.
    pub second_tries: u64,
    /// Seconds left after their tries without matching `count(*)` because the count kept changing
    /// (a live second still being written, or records updated or deleted out of it while it was
    /// read); what was missed is picked up by the next run.
    pub live_seconds_left: u64,
}

impl std::ops::AddAssign for PagerStats {
    fn add_assign(&mut self, s: PagerStats) {
        self.pages += s.pages;
        self.counts += s.counts;
        self.accepted += s.accepted;
        self.refetched += s.refetched;
        self.duplicates += s.duplicates;
        self.second_tries += s.second_tries;
        self.live_seconds_left += s.live_seconds_left;
    }
}

/// The paging state machine of one chunk.
#[derive(Debug)]
pub struct Pager {
    entity: String,
    name_list: bool,
    chunk: Chunk,
    /// Page size actually served: `min(page_size, 1000)`.
    size: u32,
    second_tries: u32,
    /// Exclusive end as whole second.
    end: DateTime<Utc>,
    /// Seconds at or after this instant may still be receiving records (see [`Pager::set_live_edge`]).
    live_edge: Option<DateTime<Utc>>,
    /// The count of the cursor second before the last recount, and whether a recount ever
    /// differed in this second (records were being updated or deleted while it was read).
    last_count: Option<u64>,
    churn: bool,
    /// Requests handed out by [`Pager::issue`] and not answered yet (their `part`).
    flying: BTreeSet<u32>,
    /// A page of the current second-mode pass came back short: the pass hands out no more pages
    /// and ends once those in flight are answered.
    pass_short: bool,
    /// The cursor second's Ids are all in its table (see [`PagerState::ids_in_table`]).
    table_synced: bool,
    /// The run's budget for the Ids its pagers hold (shared by them, see [`Pager::set_id_budget`]),
    /// what this pager has charged to it, and what its two sets cost
    /// ([`crate::budget::id_entry_cost`] of each entry of `seen_at_cursor` and `seen_in_try`).
    ids: IdBudget,
    charged: u64,
    cost_cursor: u64,
    cost_try: u64,
    /// The records the cursor second claimed when the budget refused it: every later
    /// [`Pager::ready`] returns [`QboError::SecondTooLarge`].
    refused: Option<u64>,
    state: PagerState,
    stats: PagerStats,
}

impl Drop for Pager {
    fn drop(&mut self) {
        self.ids.recharge(self.charged, 0);
    }
}

/// Ids per `Id IN (...)` verification count (keeps the query text a few KB).
const VERIFY_BATCH: usize = 300;

fn one_second() -> TimeDelta {
    TimeDelta::seconds(1)
}

fn max_passes(expected: u64) -> u32 {
    // ceil(ln n) + 8: under per-request shuffling of ties, the chance to miss a record after k
    // passes is about n * e^-k, so this leaves about e^-8 per try.
    let n = expected.max(1) as f64;
    let ln = n.ln().ceil();
    let ln = if ln.is_finite() && ln > 0.0 {
        ln as u32
    } else {
        0
    };
    ln.saturating_add(8)
}

impl Pager {
    /// A pager at the start of `chunk`. `page_size` must be in 1..=1000.
    pub fn new(
        entity: &str,
        name_list: bool,
        chunk: Chunk,
        page_size: u32,
    ) -> Result<Pager, QboError> {
        let cursor = ceil_second(chunk.start);
        let state = PagerState {
            cursor,
            seen_at_cursor: BTreeMap::new(),
            mode: PagerMode::Window,
            ids_in_table: false,
            offsets: None,
        };
        Pager::resume(entity, name_list, chunk, page_size, state)
    }

    /// A pager continuing from a persisted `state` of the same chunk.
    pub fn resume(
        entity: &str,
        name_list: bool,
        chunk: Chunk,
        page_size: u32,
        state: PagerState,
    ) -> Result<Pager, QboError> {
        if !is_valid_entity_name(entity) {
            return Err(QboError::InvalidParameter(format!(
                "entity {entity:?} is not a valid QBO entity name (letters only)"
            )));
        }
        if page_size == 0 || page_size > MAX_PAGE {
            return Err(QboError::InvalidParameter(format!(
                "page_size must be between 1 and {MAX_PAGE}, got {page_size}"
            )));
        }
        if chunk.end <= chunk.start {
            return Err(QboError::InvalidParameter(
                "chunk end must be later than its start".into(),
            ));
        }
        if state.offsets.is_some() {
            return Err(QboError::InvalidParameter(
                "a window read by offsets resumes by offsets, not by time cursor".into(),
            ));
        }
        let mut state = state;
        if let PagerMode::SecondVerify {
            seen_in_try,
            batch,
            matched,
            ..
        } = &mut state.mode
        {
            // every batch was handed out but the check did not end: answers were lost with the
            // process that asked, so check again from the first batch
            if (*batch as usize) * VERIFY_BATCH >= seen_in_try.len() {
                *batch = 0;
                *matched = 0;
            }
        }
        let end = ceil_second(chunk.end);
        let start = ceil_second(chunk.start);
        if state.cursor < start || state.cursor > end || floor_second(state.cursor) != state.cursor
        {
            return Err(QboError::InvalidParameter(format!(
                "saved pager cursor {} is outside chunk {} [{}, {})",
                literal(state.cursor),
                chunk.index,
                literal(chunk.start),
                literal(chunk.end)
            )));
        }
        let cost_cursor = state.seen_at_cursor.keys().map(|k| id_entry_cost(k)).sum();
        let cost_try = try_set(&state.mode)
            .map(|s| s.iter().map(|k| id_entry_cost(k)).sum())
            .unwrap_or(0);
        let mut pager = Pager {
            entity: entity.to_string(),
            name_list,
            chunk,
            size: page_size,
            second_tries: DEFAULT_SECOND_TRIES,
            end,
            live_edge: None,
            last_count: None,
            churn: false,
            flying: BTreeSet::new(),
            pass_short: false,
            table_synced: state.ids_in_table,
            ids: IdBudget::default_budget(),
            charged: 0,
            cost_cursor,
            cost_try,
            refused: None,
            state,
            stats: PagerStats::default(),
        };
        pager.charge();
        Ok(pager)
    }

    /// Makes the pager hold its Ids within `budget`, the run's (shared by all its pagers; a pager
    /// starts with a budget of its own, of the default `qbo.max_buffer_mb`). A second read by
    /// STARTPOSITION never holds more than the budget leaves it: a `count(*)`, or positions
    /// reached by its pages, beyond what fits fail with [`QboError::SecondTooLarge`] (see
    /// [`Pager::ready`]).
    pub fn set_id_budget(&mut self, budget: IdBudget) {
        if self.ids.same(&budget) {
            return;
        }
        self.ids.recharge(self.charged, 0);
        budget.recharge(0, self.charged);
        self.ids = budget;
    }

    /// [`Pager::set_id_budget`], by value.
    pub fn with_id_budget(mut self, budget: IdBudget) -> Pager {
        self.set_id_budget(budget);
        self
    }

    /// Bytes this pager's sets of Ids take, as charged to its budget.
    pub fn id_bytes(&self) -> u64 {
        self.charged
    }

    /// Brings the charge up to date after the sets changed: sets emptied or let go cost nothing
    /// (growth was added to `cost_cursor` / `cost_try` as it happened).
    fn charge(&mut self) {
        if self.state.seen_at_cursor.is_empty() {
            self.cost_cursor = 0;
        }
        if try_set(&self.state.mode).is_none_or(BTreeSet::is_empty) {
            self.cost_try = 0;
        }
        let held = self.cost_cursor + self.cost_try;
        self.ids.recharge(self.charged, held);
        self.charged = held;
    }

    /// How many Ids of the cursor second the budget lets this pager hold (counting both sets, at
    /// the average length of the Ids taken so far), and the bytes other pagers hold.
    fn id_room(&self) -> (u64, u64) {
        let others = self.ids.held().saturating_sub(self.charged);
        let room = self.ids.limit().saturating_sub(others);
        let n = self.state.seen_at_cursor.len() as u64;
        let avg_len = match n {
            0 => 1,
            n => (self.cost_cursor / n)
                .saturating_sub(ID_ENTRY_OVERHEAD)
                .max(1),
        };
        (room / (2 * (ID_ENTRY_OVERHEAD + avg_len)), others)
    }

    /// The error of a second claiming `claimed` records, more than the budget holds.
    fn too_large(&self, claimed: u64) -> QboError {
        let (fits, others) = self.id_room();
        let held = self
            .state
            .seen_at_cursor
            .len()
            .max(try_set(&self.state.mode).map_or(0, BTreeSet::len));
        QboError::SecondTooLarge {
            entity: self.entity.clone(),
            second: self.state.cursor,
            claimed,
            held: held as u64,
            fits,
            limit: self.ids.limit(),
            others,
            buffer_mb: self.ids.buffer_mb(),
        }
    }

    /// In second mode, an error once the run's pagers hold more Ids than the budget allows (or
    /// the budget refused this second before).
    fn over_budget(&self) -> Result<(), QboError> {
        if let Some(claimed) = self.refused {
            return Err(self.too_large(claimed));
        }
        if self.in_second_mode() && self.ids.held() > self.ids.limit() {
            let claimed = match &self.state.mode {
                PagerMode::SecondPages {
                    expected,
                    seen_in_try,
                    ..
                } => (*expected).max(seen_in_try.len() as u64),
                _ => self.state.seen_at_cursor.len() as u64,
            };
            return Err(self.too_large(claimed));
        }
        Ok(())
    }

    /// An error when a second's `count` is more than its Ids the budget lets this pager hold.
    fn check_count(&mut self, count: u64) -> Result<(), QboError> {
        if count > self.id_room().0 {
            self.refused = Some(count);
            return Err(self.too_large(count));
        }
        Ok(())
    }

    /// Declares that seconds at or after `edge` may still be receiving records (QBO's present, less
    /// a margin for clock skew). A second holding a full page is read until its distinct Ids match
    /// `count(*)`; in a live second the count keeps moving, so after its tries the pager moves on
    /// with what it read instead of failing: the records it did not see were written after this
    /// run asked, and the next run over the window picks them up. Historic seconds still fail.
    pub fn set_live_edge(&mut self, edge: DateTime<Utc>) {
        self.live_edge = Some(edge);
    }

    /// Changes the number of tries allowed per second (at least 1).
    pub fn with_second_tries(mut self, tries: u32) -> Pager {
        self.second_tries = tries.max(1);
        self
    }

    /// The current state.
    pub fn state(&self) -> &PagerState {
        &self.state
    }

    /// The state to persist with a committed page: [`Pager::state`], except that in second mode
    /// the sets of Ids are left to their table (written with each page, see
    /// [`Accepted::second_ids`]) once it holds them all.
    pub fn persisted_state(&self) -> PagerState {
        if !(self.table_synced && self.in_second_mode()) {
            return PagerState {
                ids_in_table: false,
                ..self.state.clone()
            };
        }
        let mode = match &self.state.mode {
            PagerMode::SecondPages {
                second_try,
                expected,
                next_start,
                passes,
                ..
            } => PagerMode::SecondPages {
                second_try: *second_try,
                expected: *expected,
                next_start: *next_start,
                passes: *passes,
                seen_in_try: BTreeSet::new(),
            },
            PagerMode::SecondRecount {
                second_try, passes, ..
            } => PagerMode::SecondRecount {
                second_try: *second_try,
                passes: *passes,
                seen_in_try: BTreeSet::new(),
            },
            PagerMode::SecondVerify {
                second_try,
                passes,
                expected,
                batch,
                matched,
                ..
            } => PagerMode::SecondVerify {
                second_try: *second_try,
                passes: *passes,
                seen_in_try: BTreeSet::new(),
                expected: *expected,
                batch: *batch,
                matched: *matched,
            },
            other => other.clone(),
        };
        PagerState {
            cursor: self.state.cursor,
            seen_at_cursor: BTreeMap::new(),
            mode,
            ids_in_table: true,
            offsets: None,
        }
    }

    /// Running totals.
    pub fn stats(&self) -> PagerStats {
        self.stats
    }

    /// The chunk being paged.
    pub fn chunk(&self) -> &Chunk {
        &self.chunk
    }

    /// True while reading one second by STARTPOSITION (a second holding a page or more).
    pub fn in_second_mode(&self) -> bool {
        !matches!(
            self.state.mode,
            PagerMode::Window | PagerMode::Done | PagerMode::Failed { .. }
        )
    }

    /// True when the chunk is complete.
    pub fn is_done(&self) -> bool {
        self.state.mode == PagerMode::Done
    }

    /// What to fetch next; `Ok(None)` when the chunk is complete; an error when a second could
    /// not be read completely ([`QboError::UnstableSecond`]). For a caller with one request at a
    /// time, answering with [`Pager::accept`] or [`Pager::accept_count`].
    pub fn next_request(&self) -> Result<Option<Request>, QboError> {
        Ok(self.ready(1)?.into_iter().next())
    }

    /// The requests that may be in flight now besides those handed out by [`Pager::issue`], at
    /// most `max`; empty while the next step waits for an answer or when the chunk is complete.
    /// Window pages and counts go one at a time (each depends on the last answer); the pages of
    /// a second-mode pass go together (every STARTPOSITION up to the count, and the one just past
    /// it, which comes back short; beyond that one at a time, in case the second grew), and so
    /// do the batches of an Id check. Each request returned must be passed to [`Pager::issue`]
    /// before it is sent, in the order returned, and answered with [`Pager::accept_part`] or
    /// [`Pager::accept_count_part`]. Errors as [`Pager::next_request`].
    pub fn ready(&self, max: usize) -> Result<Vec<Request>, QboError> {
        self.over_budget()?;
        let mut out = Vec::new();
        match &self.state.mode {
            PagerMode::Done => {}
            PagerMode::Failed {
                expected,
                seen,
                attempts,
            } => {
                return Err(QboError::UnstableSecond {
                    entity: self.entity.clone(),
                    second: self.state.cursor,
                    expected: *expected,
                    seen: *seen,
                    attempts: *attempts,
                })
            }
            PagerMode::SecondPages {
                expected,
                next_start,
                ..
            } => {
                if self.pass_short {
                    return Ok(out);
                }
                // never a page past the positions whose Ids the budget holds: a second whose
                // pages go further holds more records than may be remembered (and a pass is not
                // an endless walk however its pages answer)
                let fits = self.id_room().0;
                let mut start = *next_start;
                while out.len() < max
                    && (u64::from(start) <= expected.saturating_add(1)
                        || (out.is_empty() && self.flying.is_empty()))
                {
                    if u64::from(start) > fits.saturating_add(1) {
                        if out.is_empty() && self.flying.is_empty() {
                            return Err(self.too_large(u64::from(start) - 1));
                        }
                        break;
                    }
                    out.push(self.second_page(start));
                    match start.checked_add(self.size) {
                        Some(n) => start = n,
                        None => break,
                    }
                }
            }
            PagerMode::SecondVerify {
                seen_in_try, batch, ..
            } => {
                let mut b = *batch;
                while out.len() < max && (b as usize) * VERIFY_BATCH < seen_in_try.len() {
                    out.push(self.verify_count(seen_in_try, b));
                    b += 1;
                }
            }
            PagerMode::Window | PagerMode::SecondCount { .. } | PagerMode::SecondRecount { .. } => {
                if max > 0 && self.flying.is_empty() {
                    out.push(self.single_request());
                }
            }
        }
        Ok(out)
    }

    /// Records that `req` (returned by [`Pager::ready`]) is being sent.
    pub fn issue(&mut self, req: &Request) -> Result<(), QboError> {
        let size = self.size;
        let (next, step) = match &mut self.state.mode {
            PagerMode::SecondPages { next_start, .. } => (next_start, size),
            PagerMode::SecondVerify { batch, .. } => (batch, 1),
            _ => {
                if !self.flying.is_empty() || req.part != 0 {
                    return Err(QboError::InvalidParameter(
                        "pager: a request was issued out of turn".into(),
                    ));
                }
                self.flying.insert(0);
                return Ok(());
            }
        };
        if req.part != *next {
            return Err(QboError::InvalidParameter(format!(
                "pager: request part {} issued where {} was next",
                req.part, *next
            )));
        }
        *next = req.part.saturating_add(step);
        self.flying.insert(req.part);
        Ok(())
    }

    /// Requests issued and not answered yet.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.flying.len()
    }

    /// The part an answer without one refers to: the request [`Pager::next_request`] gave.
    fn implied_part(&self) -> u32 {
        match &self.state.mode {
            PagerMode::SecondPages { next_start, .. } => *next_start,
            PagerMode::SecondVerify { batch, .. } => *batch,
            _ => 0,
        }
    }

    /// Takes the answer to request `part` off the requests in flight; an answer to a request that
    /// was never issued is the next one of a caller going one request at a time.
    fn answered(&mut self, part: u32) -> Result<(), QboError> {
        if self.flying.remove(&part) {
            return Ok(());
        }
        if self.flying.is_empty() && part == self.implied_part() {
            let size = self.size;
            match &mut self.state.mode {
                PagerMode::SecondPages { next_start, .. } => {
                    *next_start = next_start.saturating_add(size)
                }
                PagerMode::SecondVerify { batch, .. } => *batch += 1,
                _ => {}
            }
            return Ok(());
        }
        Err(QboError::InvalidParameter(format!(
            "pager: an answer to request part {part} which is not in flight"
        )))
    }

    fn second_page(&self, start: u32) -> Request {
        let c = self.state.cursor;
        Request {
            kind: RequestKind::SecondPage,
            query: second_page_query(&self.entity, self.name_list, c, start, self.size),
            from: c,
            to: c.checked_add_signed(one_second()).unwrap_or(c),
            start_position: start,
            max_results: self.size,
            part: start,
        }
    }

    fn verify_count(&self, seen_in_try: &BTreeSet<String>, batch: u32) -> Request {
        let c = self.state.cursor;
        let ids: Vec<&str> = seen_in_try
            .iter()
            .skip(batch as usize * VERIFY_BATCH)
            .take(VERIFY_BATCH)
            .map(String::as_str)
            .collect();
        Request {
            kind: RequestKind::SecondCount,
            query: crate::query::second_ids_count_query(&self.entity, self.name_list, c, &ids),
            from: c,
            to: c.checked_add_signed(one_second()).unwrap_or(c),
            start_position: 0,
            max_results: 0,
            part: batch,
        }
    }

    /// The one request of a step that goes alone (a window page, a count of the second).
    fn single_request(&self) -> Request {
        let c = self.state.cursor;
        let (e, nl, size) = (self.entity.as_str(), self.name_list, self.size);
        if self.state.mode == PagerMode::Window {
            Request {
                kind: RequestKind::Window,
                query: window_query(e, nl, (c, self.end), Order::Time, 1, size),
                from: c,
                to: self.end,
                start_position: 1,
                max_results: size,
                part: 0,
            }
        } else {
            Request {
                kind: RequestKind::SecondCount,
                query: second_count_query(e, nl, c),
                from: c,
                to: c.checked_add_signed(one_second()).unwrap_or(c),
                start_position: 0,
                max_results: 0,
                part: 0,
            }
        }
    }

    /// Starts reading the chunk as one second known to hold `count` records (a one-second slice
    /// counted at a page or more): straight to its pages, skipping the window page and the count
    /// that would only find this out again. Only at the start of a one-second chunk.
    pub fn begin_second(&mut self, count: u64) -> Result<(), QboError> {
        let c = self.state.cursor;
        if self.state.mode != PagerMode::Window
            || !self.state.seen_at_cursor.is_empty()
            || c.checked_add_signed(one_second()) != Some(self.end)
        {
            return Err(QboError::InvalidParameter(
                "pager: begin_second needs a fresh one-second chunk".into(),
            ));
        }
        self.check_count(count)?;
        self.stats.second_tries += 1;
        self.last_count = Some(count);
        self.state.mode = PagerMode::SecondPages {
            second_try: 1,
            expected: count,
            next_start: 1,
            passes: 0,
            seen_in_try: BTreeSet::new(),
        };
        Ok(())
    }

    /// Feeds the answer to a [`RequestKind::SecondCount`] request (the one
    /// [`Pager::next_request`] gave).
    pub fn accept_count(&mut self, count: u64) -> Result<(), QboError> {
        self.accept_count_part(self.implied_part(), count)
    }

    /// Feeds the answer to the [`RequestKind::SecondCount`] request `part` (see
    /// [`Pager::ready`]).
    pub fn accept_count_part(&mut self, part: u32, count: u64) -> Result<(), QboError> {
        let r = self.take_count(part, count);
        self.charge();
        r
    }

    fn take_count(&mut self, part: u32, count: u64) -> Result<(), QboError> {
        if matches!(
            self.state.mode,
            PagerMode::SecondCount { .. } | PagerMode::SecondRecount { .. }
        ) {
            // a count is a claim: what it says must fit the budget before a pass plans for it
            self.check_count(count)?;
        }
        if !matches!(
            self.state.mode,
            PagerMode::SecondCount { .. }
                | PagerMode::SecondRecount { .. }
                | PagerMode::SecondVerify { .. }
        ) {
            return Err(QboError::InvalidParameter(
                "pager: a count was fed but no count was asked".into(),
            ));
        }
        self.answered(part)?;
        match std::mem::replace(&mut self.state.mode, PagerMode::Done) {
            PagerMode::SecondCount { second_try } => {
                self.stats.counts += 1;
                self.stats.second_tries += 1;
                self.churn |= self.last_count.is_some_and(|c| c != count);
                self.last_count = Some(count);
                self.state.mode = PagerMode::SecondPages {
                    second_try,
                    expected: count,
                    next_start: 1,
                    passes: 0,
                    seen_in_try: BTreeSet::new(),
                };
                Ok(())
            }
            PagerMode::SecondRecount {
                second_try,
                passes,
                seen_in_try,
            } => {
                self.stats.counts += 1;
                self.churn |= self.last_count.is_some_and(|c| c != count);
                self.last_count = Some(count);
                let seen = seen_in_try.len() as u64;
                self.state.mode = if count == 0 {
                    // the second is empty now: nothing in it was missed
                    self.finish_second()
                } else if seen >= count {
                    // as many Ids seen as the second now holds: check they are the ones it holds
                    PagerMode::SecondVerify {
                        second_try,
                        passes,
                        seen_in_try,
                        expected: count,
                        batch: 0,
                        matched: 0,
                    }
                } else if passes >= max_passes(count) {
                    self.fail_try(second_try, count, seen)
                } else {
                    PagerMode::SecondPages {
                        second_try,
                        expected: count,
                        next_start: 1,
                        passes,
                        seen_in_try,
                    }
                };
                Ok(())
            }
            PagerMode::SecondVerify {
                second_try,
                passes,
                seen_in_try,
                expected,
                batch,
                matched,
            } => {
                self.stats.counts += 1;
                let matched = matched + count;
                let seen = seen_in_try.len() as u64;
                self.state.mode = if !self.flying.is_empty()
                    || (batch as usize) * VERIFY_BATCH < seen_in_try.len()
                {
                    PagerMode::SecondVerify {
                        second_try,
                        passes,
                        seen_in_try,
                        expected,
                        batch,
                        matched,
                    }
                } else if matched >= expected {
                    // every record now in the second is among those seen
                    self.finish_second()
                } else if passes >= max_passes(expected) {
                    self.fail_try(second_try, expected, seen)
                } else {
                    // some record in the second was not seen yet: another pass
                    PagerMode::SecondPages {
                        second_try,
                        expected,
                        next_start: 1,
                        passes,
                        seen_in_try,
                    }
                };
                Ok(())
            }
            other => {
                self.state.mode = other;
                Err(QboError::InvalidParameter(
                    "pager: a count was fed but no count was asked".into(),
                ))
            }
        }
    }

    /// Feeds the records of a page answering a [`RequestKind::Window`] or
    /// [`RequestKind::SecondPage`] request; returns the records to store.
    ///
    /// Errors: [`QboError::BadResponse`] when a record lies outside what was asked (the state is
    /// unchanged, so the same request can be retried).
    pub fn accept(&mut self, page: Vec<RawRecord>) -> Result<Accepted, QboError> {
        self.accept_part(self.implied_part(), page)
    }

    /// Feeds the records of the page answering request `part` (see [`Pager::ready`]); as
    /// [`Pager::accept`] otherwise. The pages of a second-mode pass may be answered in any order.
    pub fn accept_part(&mut self, part: u32, page: Vec<RawRecord>) -> Result<Accepted, QboError> {
        let r = self.take_page(part, page);
        self.charge();
        let a = r?;
        // the Ids this page added may be more than the run's budget holds
        if let Err(e) = self.over_budget() {
            if let QboError::SecondTooLarge { claimed, .. } = &e {
                self.refused = Some(*claimed);
            }
            return Err(e);
        }
        Ok(a)
    }

    fn take_page(&mut self, part: u32, page: Vec<RawRecord>) -> Result<Accepted, QboError> {
        let served = page.len();
        let full = served >= self.size as usize;
        let cursor = self.state.cursor;
        let next_sec = cursor.checked_add_signed(one_second()).unwrap_or(cursor);
        let (lo, hi) = match &self.state.mode {
            PagerMode::Window => (cursor, self.end),
            PagerMode::SecondPages { .. } => (cursor, next_sec),
            _ => {
                return Err(QboError::InvalidParameter(
                    "pager: a page was fed but no page was asked".into(),
                ))
            }
        };
        check_in_range(&self.entity, &page, lo, hi)?;
        self.answered(part)?;
        let (records, duplicates) = dedupe(page);
        self.stats.pages += 1;
        self.stats.duplicates += duplicates;

        // Take or skip against the Ids remembered at the cursor second.
        let mut out = Vec::with_capacity(records.len());
        let mut refetched = 0u64;
        let mut page_max = cursor;
        let mut all_at_cursor_sec = true;
        let first_sec = records.first().map(|r| floor_second(r.last_updated));
        for r in &records {
            let sec = floor_second(r.last_updated);
            page_max = page_max.max(sec);
            if Some(sec) != first_sec {
                all_at_cursor_sec = false;
            }
        }
        let mut page_ids: Vec<String> = Vec::new();
        if let PagerMode::SecondPages { seen_in_try, .. } = &mut self.state.mode {
            for r in &records {
                if seen_in_try.insert(r.id.clone()) {
                    self.cost_try += id_entry_cost(&r.id);
                }
                page_ids.push(r.id.clone());
            }
        }
        // Ids remembered at the (possibly new) cursor second.
        let moved = page_max > cursor;
        let mut new_seen: BTreeMap<String, i64> = BTreeMap::new();
        for r in records {
            let sec = floor_second(r.last_updated);
            let known = if sec == cursor {
                self.state.seen_at_cursor.get(&r.id).copied()
            } else {
                None
            };
            let take = known.is_none_or(|tok| r.sync_token > tok);
            if sec == page_max {
                let e = new_seen.entry(r.id.clone()).or_insert(r.sync_token);
                *e = (*e).max(r.sync_token);
            }
            if take {
                out.push(r);
            } else {
                refetched += 1;
            }
        }
        if moved {
            self.state.cursor = page_max;
            self.cost_cursor = new_seen.keys().map(|k| id_entry_cost(k)).sum();
            self.state.seen_at_cursor = new_seen;
        } else {
            for (id, tok) in new_seen {
                let cost = id_entry_cost(&id);
                let mut added = false;
                let e = self.state.seen_at_cursor.entry(id).or_insert_with(|| {
                    added = true;
                    tok
                });
                *e = (*e).max(tok);
                if added {
                    self.cost_cursor += cost;
                }
            }
        }
        self.stats.accepted += out.len() as u64;
        self.stats.refetched += refetched;

        // Decide the next step.
        let new_ids = !out.is_empty();
        let next_mode = match std::mem::replace(&mut self.state.mode, PagerMode::Done) {
            PagerMode::Window => {
                if !full {
                    PagerMode::Done
                } else if all_at_cursor_sec || (!moved && !new_ids) {
                    // A second holding a full page or more: only offsets inside it can get past it.
                    PagerMode::SecondCount { second_try: 1 }
                } else {
                    PagerMode::Window
                }
            }
            PagerMode::SecondPages {
                second_try,
                expected,
                next_start,
                passes,
                seen_in_try,
            } => {
                let seen = seen_in_try.len() as u64;
                self.pass_short |= !full;
                // The pass is over once a page came back short (the end of the second) or more
                // Ids were seen than counted (the second grew while read: count again), and
                // every page of it handed out is in.
                if !self.flying.is_empty() || !(self.pass_short || seen > expected) {
                    PagerMode::SecondPages {
                        second_try,
                        expected,
                        next_start,
                        passes,
                        seen_in_try,
                    }
                } else {
                    self.pass_short = false;
                    let passes = passes + 1;
                    if seen == expected && passes == 1 {
                        // Ids seen in the first pass equal the count taken just before it: as
                        // records can only leave a past second, none was missed
                        self.finish_second()
                    } else {
                        PagerMode::SecondRecount {
                            second_try,
                            passes,
                            seen_in_try,
                        }
                    }
                }
            }
            other => other,
        };
        self.state.mode = next_mode;
        let second_ids = self.second_ids_delta(page_ids);
        Ok(Accepted {
            records: out,
            refetched,
            duplicates,
            done: self.state.mode == PagerMode::Done,
            second_ids,
        })
    }

    /// After a second-mode page: the rows its table needs so that it holds every Id taken at the
    /// second with its SyncToken and the try it was last seen in. The first time, every Id known
    /// (those taken by window pages before the second mode began included); then the page's.
    fn second_ids_delta(&mut self, page_ids: Vec<String>) -> Option<SecondIds> {
        let current = current_try(&self.state.mode)?;
        let taken = &self.state.seen_at_cursor;
        let row = |id: String, seen_try: u32| SecondId {
            sync_token: taken.get(&id).copied().unwrap_or(0),
            id,
            seen_try,
        };
        let ids = if self.table_synced {
            page_ids.into_iter().map(|id| row(id, current)).collect()
        } else {
            self.table_synced = true;
            let seen: Option<&BTreeSet<String>> = match &self.state.mode {
                PagerMode::SecondPages { seen_in_try, .. }
                | PagerMode::SecondRecount { seen_in_try, .. }
                | PagerMode::SecondVerify { seen_in_try, .. } => Some(seen_in_try),
                _ => None,
            };
            taken
                .keys()
                .map(|id| {
                    let t = if seen.is_some_and(|s| s.contains(id)) {
                        current
                    } else {
                        0
                    };
                    row(id.clone(), t)
                })
                .collect()
        };
        Some(SecondIds {
            second: self.state.cursor,
            ids,
        })
    }

    fn fail_try(&mut self, second_try: u32, expected: u64, seen: u64) -> PagerMode {
        let live = self.live_edge.is_some_and(|edge| self.state.cursor >= edge);
        if second_try >= self.second_tries && (live || self.churn) {
            // Records were being written into (live) or updated and deleted out of (churn) this
            // second while it was read, so its count never held still: keep what was read and
            // move on; what was missed is still there for the next run, which reads it calmly.
            self.stats.live_seconds_left += 1;
            self.finish_second()
        } else if second_try >= self.second_tries {
            PagerMode::Failed {
                expected,
                seen,
                attempts: second_try,
            }
        } else {
            PagerMode::SecondCount {
                second_try: second_try + 1,
            }
        }
    }

    fn finish_second(&mut self) -> PagerMode {
        self.last_count = None;
        self.churn = false;
        self.table_synced = false;
        let next = self.state.cursor.checked_add_signed(one_second());
        self.state.seen_at_cursor.clear();
        match next {
            Some(n) if n < self.end => {
                self.state.cursor = n;
                PagerMode::Window
            }
            Some(n) => {
                self.state.cursor = n.min(self.end);
                PagerMode::Done
            }
            None => PagerMode::Done,
        }
    }
}

/// Keeps one record per Id (the highest SyncToken; on a tie, the first), in first-seen order.
/// A record Id as quoted in a message: an answer's text like any other, masked (an Id carrying
/// a token-like word or a credential shows it masked) and cut ([`crate::error::quote`]).
pub(crate) fn quote_id(id: &str) -> String {
    crate::error::quote(id, &crate::error::Secrets::new())
}

/// Refuses a page holding a record whose `LastUpdatedTime` is outside `[lo, hi)`, the range asked
/// for.
pub(crate) fn check_in_range(
    entity: &str,
    page: &[RawRecord],
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
) -> Result<(), QboError> {
    match page
        .iter()
        .find(|r| r.last_updated < lo || r.last_updated >= hi)
    {
        Some(bad) => Err(QboError::BadResponse(format!(
            "{entity} record Id {} has LastUpdatedTime {} outside the requested range [{}, {})",
            quote_id(&bad.id),
            crate::query::literal_exact(bad.last_updated),
            literal(lo),
            literal(hi)
        ))),
        None => Ok(()),
    }
}

pub(crate) fn dedupe(page: Vec<RawRecord>) -> (Vec<RawRecord>, u64) {
    let mut index: HashMap<String, usize> = HashMap::with_capacity(page.len());
    let mut out: Vec<RawRecord> = Vec::with_capacity(page.len());
    let mut dups = 0u64;
    for r in page {
        match index.get(&r.id) {
            Some(&i) => {
                dups += 1;
                if r.sync_token > out[i].sync_token {
                    out[i] = r;
                }
            }
            None => {
                index.insert(r.id.clone(), out.len());
                out.push(r);
            }
        }
    }
    (out, dups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).single().unwrap()
    }
    fn sec(n: i64) -> DateTime<Utc> {
        t0() + TimeDelta::seconds(n)
    }

    /// The record text the fake serves: company offset -07:00, an amount that must stay `12.30`.
    fn rec_json(id: &str, token: i64, t: DateTime<Utc>) -> Box<RawValue> {
        let local = t.with_timezone(&chrono::FixedOffset::west_opt(7 * 3600).unwrap());
        let text = format!(
            r#"{{"Id":"{id}","SyncToken":"{token}","MetaData":{{"CreateTime":"2020-01-01T00:00:00-07:00","LastUpdatedTime":"{}"}},"TotalAmt":12.30}}"#,
            local.to_rfc3339()
        );
        RawValue::from_string(text).unwrap()
    }

    fn raw(id: &str, token: i64, t: DateTime<Utc>) -> RawRecord {
        RawRecord::from_page(&rec_json(id, token, t), false).unwrap()
    }

    /// A second whose count(*) says 5 while only 3 records ever come back (records still being
    /// written into it): past the live edge the pager moves on; before it, the chunk fails.
    fn short_second(
        live_edge: Option<DateTime<Utc>>,
    ) -> (Pager, Result<Option<Request>, QboError>) {
        let chunk = Chunk {
            index: 1,
            start: sec(0),
            end: sec(10),
        };
        let mut p = Pager::new("Invoice", false, chunk, 2)
            .unwrap()
            .with_second_tries(1);
        if let Some(e) = live_edge {
            p.set_live_edge(e);
        }
        p.accept(vec![raw("a", 0, sec(0)), raw("b", 0, sec(0))])
            .unwrap();
        p.accept_count(5).unwrap();
        while matches!(
            p.state().mode,
            PagerMode::SecondPages { .. } | PagerMode::SecondRecount { .. }
        ) {
            let r = p.next_request().unwrap().unwrap();
            if r.kind == RequestKind::SecondCount {
                p.accept_count(5).unwrap();
                continue;
            }
            let page = if r.start_position == 1 {
                vec![raw("a", 0, sec(0)), raw("b", 0, sec(0))]
            } else {
                vec![raw("c", 0, sec(0))]
            };
            p.accept(page).unwrap();
        }
        let next = p.next_request();
        (p, next)
    }

    #[test]
    fn a_past_second_whose_count_keeps_changing_is_left_to_the_next_run() {
        // records are being updated out of the second while it is read: 6, then 5, 4, 5, ...
        let chunk = Chunk {
            index: 1,
            start: sec(0),
            end: sec(10),
        };
        let mut p = Pager::new("Invoice", false, chunk, 2)
            .unwrap()
            .with_second_tries(1);
        p.set_live_edge(sec(100));
        p.accept(vec![raw("a", 0, sec(0)), raw("b", 0, sec(0))])
            .unwrap();
        let mut n = 0u64;
        p.accept_count(6).unwrap();
        while matches!(
            p.state().mode,
            PagerMode::SecondPages { .. }
                | PagerMode::SecondRecount { .. }
                | PagerMode::SecondVerify { .. }
        ) {
            let r = p.next_request().unwrap().unwrap();
            if r.kind == RequestKind::SecondCount {
                n += 1;
                p.accept_count(if r.query.contains("Id IN") {
                    1
                } else {
                    4 + n % 2
                })
                .unwrap();
                continue;
            }
            let page = if r.start_position == 1 {
                vec![raw("a", 0, sec(0)), raw("b", 0, sec(0))]
            } else {
                vec![raw("c", 0, sec(0))]
            };
            p.accept(page).unwrap();
        }
        let next = p.next_request().unwrap().unwrap();
        assert_eq!((next.kind, next.from), (RequestKind::Window, sec(1)));
        assert_eq!(p.stats().live_seconds_left, 1);
    }

    #[test]
    fn a_live_second_that_never_matches_its_count_is_left_to_the_next_run() {
        let (p, next) = short_second(Some(sec(0)));
        let next = next.unwrap().unwrap();
        assert_eq!(next.kind, RequestKind::Window);
        assert_eq!(next.from, sec(1));
        assert_eq!(p.stats().live_seconds_left, 1);
    }

    #[test]
    fn a_historic_second_that_never_matches_its_count_fails() {
        let (_, next) = short_second(Some(sec(1)));
        let err = next.unwrap_err();
        assert!(
            matches!(
                err,
                QboError::UnstableSecond {
                    expected: 5,
                    seen: 3,
                    ..
                }
            ),
            "{err}"
        );
        let (_, next) = short_second(None);
        assert!(matches!(next.unwrap_err(), QboError::UnstableSecond { .. }));
    }

    #[derive(Clone, Debug)]
    struct FakeRec {
        id: String,
        token: i64,
        t: DateTime<Utc>,
    }

    /// An in-memory QBO: ties shuffled per request (or stable), records moving between requests.
    struct Fake {
        recs: Vec<FakeRec>,
        rng: StdRng,
        shuffle: bool,
        move_prob: f64,
        move_span: i64,
        /// Latest second served so far ("now" is after it).
        high_water: DateTime<Utc>,
        /// Every (id, token, t) that ever existed.
        versions: HashSet<(String, i64, DateTime<Utc>)>,
        moved_ids: HashSet<String>,
        requests: Vec<RequestKind>,
    }

    impl Fake {
        fn new(recs: Vec<FakeRec>, seed: u64, shuffle: bool, move_prob: f64) -> Fake {
            let versions = recs.iter().map(|r| (r.id.clone(), r.token, r.t)).collect();
            Fake {
                recs,
                rng: StdRng::seed_from_u64(seed),
                shuffle,
                move_prob,
                move_span: 5,
                high_water: DateTime::<Utc>::MIN_UTC,
                versions,
                moved_ids: HashSet::new(),
                requests: Vec::new(),
            }
        }

        fn maybe_move(&mut self) {
            if self.recs.is_empty() || !self.rng.random_bool(self.move_prob) {
                return;
            }
            let i = self.rng.random_range(0..self.recs.len());
            let base = self.recs[i].t.max(self.high_water);
            let nt = base + TimeDelta::seconds(self.rng.random_range(1..=self.move_span));
            let r = &mut self.recs[i];
            r.token += 1;
            r.t = nt;
            self.versions.insert((r.id.clone(), r.token, r.t));
            self.moved_ids.insert(r.id.clone());
        }

        fn ordered(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<FakeRec> {
            let mut v: Vec<FakeRec> = self
                .recs
                .iter()
                .filter(|r| r.t >= from && r.t < to)
                .cloned()
                .collect();
            if self.shuffle {
                v.shuffle(&mut self.rng);
            } else {
                v.sort_by(|a, b| a.id.cmp(&b.id));
            }
            v.sort_by_key(|r| r.t); // stable: ties keep the shuffled order
            v
        }

        fn serve(&mut self, req: &Request) -> Served {
            self.maybe_move();
            self.requests.push(req.kind);
            match req.kind {
                RequestKind::SecondCount => {
                    // `... AND Id IN ('1','2')`: count only those Ids
                    let ids: Option<HashSet<String>> =
                        req.query.split_once("Id IN (").map(|(_, rest)| {
                            let list = rest.split_once(')').map(|(l, _)| l).unwrap_or(rest);
                            list.split(',')
                                .map(|q| q.trim_matches('\'').to_owned())
                                .collect()
                        });
                    Served::Count(
                        self.recs
                            .iter()
                            .filter(|r| {
                                r.t == req.from && ids.as_ref().is_none_or(|s| s.contains(&r.id))
                            })
                            .count() as u64,
                    )
                }
                RequestKind::Window | RequestKind::SecondPage => {
                    let v = self.ordered(req.from, req.to);
                    let start = (req.start_position as usize).saturating_sub(1);
                    let n = (req.max_results as usize).min(1000);
                    let page: Vec<FakeRec> = v.into_iter().skip(start).take(n).collect();
                    if let Some(m) = page.iter().map(|r| r.t).max() {
                        self.high_water = self.high_water.max(m);
                    }
                    Served::Page(page.iter().map(|r| raw(&r.id, r.token, r.t)).collect())
                }
            }
        }
    }

    enum Served {
        Count(u64),
        Page(Vec<RawRecord>),
    }

    /// What a second's Id table holds (see [`PagerState::ids_in_table`]), kept by the harness as
    /// the executor keeps `qbo._second_ids`: every page's [`Accepted::second_ids`] upserted.
    #[derive(Default)]
    struct IdTable(HashMap<(DateTime<Utc>, String), (i64, u32)>);

    impl IdTable {
        fn write(&mut self, a: &Accepted) {
            if let Some(d) = &a.second_ids {
                for r in &d.ids {
                    let e = self
                        .0
                        .entry((d.second, r.id.clone()))
                        .or_insert((r.sync_token, r.seen_try));
                    e.0 = e.0.max(r.sync_token);
                    e.1 = r.seen_try;
                }
            }
        }

        /// The pager's persisted state through storage and back, as a resume sees it.
        fn round_trip(&self, pager: &Pager) -> PagerState {
            let text = serde_json::to_string(&pager.persisted_state()).unwrap();
            let state: PagerState = serde_json::from_str(&text).unwrap();
            let second = state.cursor;
            state.with_second_ids(self.0.iter().filter(|((s, _), _)| *s == second).map(
                |((_, id), (tok, t))| SecondId {
                    id: id.clone(),
                    sync_token: *tok,
                    seen_try: *t,
                },
            ))
        }
    }

    /// Runs one chunk to completion, optionally through a serialize/resume after every page.
    fn run_chunk(
        fake: &mut Fake,
        chunk: Chunk,
        page_size: u32,
        resume_each_page: bool,
    ) -> Result<(Vec<RawRecord>, PagerStats), QboError> {
        let mut pager = Pager::new("Invoice", false, chunk, page_size)?;
        let mut got = Vec::new();
        let mut stats = PagerStats::default();
        let mut table = IdTable::default();
        for _ in 0..200_000 {
            let Some(req) = pager.next_request()? else {
                stats += pager.stats();
                return Ok((got, stats));
            };
            match fake.serve(&req) {
                Served::Count(n) => pager.accept_count(n)?,
                Served::Page(p) => {
                    let a = pager.accept(p)?;
                    assert_eq!(a.done, pager.is_done());
                    table.write(&a);
                    got.extend(a.records);
                }
            }
            if resume_each_page {
                stats += pager.stats();
                let state = table.round_trip(&pager);
                pager = Pager::resume("Invoice", false, chunk, page_size, state)?;
            }
        }
        panic!("pager did not finish");
    }

    /// Runs one chunk to completion with up to `max_in_flight` requests in flight (every request
    /// [`Pager::ready`] allows), answered in an order drawn from `seed`; with `resume`, now and
    /// then the state is serialized and resumed, and what was in flight is lost (a crash).
    fn run_chunk_concurrent(
        fake: &mut Fake,
        chunk: Chunk,
        page_size: u32,
        max_in_flight: usize,
        seed: u64,
        resume: bool,
    ) -> Result<(Vec<RawRecord>, PagerStats, usize), QboError> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pager = Pager::new("Invoice", false, chunk, page_size)?;
        let mut got = Vec::new();
        let mut stats = PagerStats::default();
        let mut flying: Vec<Request> = Vec::new();
        let mut most = 0;
        let mut table = IdTable::default();
        for _ in 0..200_000 {
            for r in pager.ready(max_in_flight - flying.len())? {
                pager.issue(&r)?;
                flying.push(r);
            }
            most = most.max(flying.len());
            assert_eq!(pager.in_flight(), flying.len());
            if flying.is_empty() {
                assert!(pager.is_done(), "stalled: {:?}", pager.state().mode);
                stats += pager.stats();
                return Ok((got, stats, most));
            }
            let req = flying.swap_remove(rng.random_range(0..flying.len()));
            match fake.serve(&req) {
                Served::Count(n) => pager.accept_count_part(req.part, n)?,
                Served::Page(p) => {
                    let a = pager.accept_part(req.part, p)?;
                    table.write(&a);
                    got.extend(a.records);
                }
            }
            if resume && rng.random_bool(0.1) {
                stats += pager.stats();
                let state = table.round_trip(&pager);
                pager = Pager::resume("Invoice", false, chunk, page_size, state)?;
                flying.clear();
            }
        }
        panic!("pager did not finish");
    }

    /// Checks the backfill properties over a plan; returns (accepted, re-accepted moved records).
    /// `concurrency` 1 goes one request at a time ([`run_chunk`]), more through
    /// [`run_chunk_concurrent`] (seeded by the fake's seed).
    fn check_backfill(
        fake: &mut Fake,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        chunk_days: i32,
        page_size: u32,
        resume: bool,
    ) -> (u64, u64) {
        check_backfill_with(fake, start, end, chunk_days, page_size, resume, 1)
    }

    fn check_backfill_with(
        fake: &mut Fake,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        chunk_days: i32,
        page_size: u32,
        resume: bool,
        concurrency: usize,
    ) -> (u64, u64) {
        let chunks = crate::plan::plan_chunks(start, end, chunk_days).unwrap();
        let mut all: HashMap<String, Vec<(i64, DateTime<Utc>)>> = HashMap::new();
        let mut total = 0u64;
        let mut again = 0u64;
        for chunk in chunks {
            let (got, stats) = if concurrency > 1 {
                let seed = fake.rng.random();
                let (got, stats, _) =
                    run_chunk_concurrent(fake, chunk, page_size, concurrency, seed, resume)
                        .unwrap();
                (got, stats)
            } else {
                run_chunk(fake, chunk, page_size, resume).unwrap()
            };
            assert_eq!(stats.accepted, got.len() as u64);
            total += got.len() as u64;
            let mut in_chunk: HashMap<String, i64> = HashMap::new();
            for r in &got {
                assert!(
                    r.last_updated >= chunk.start && r.last_updated < chunk.end,
                    "{} outside chunk",
                    r.id
                );
                assert!(
                    fake.versions
                        .contains(&(r.id.clone(), r.sync_token, r.last_updated)),
                    "never existed: {r:?}"
                );
                assert!(r.text().unwrap().contains(r#""TotalAmt":12.30"#));
                if let Some(prev) = in_chunk.insert(r.id.clone(), r.sync_token) {
                    assert!(
                        r.sync_token > prev,
                        "Id {} accepted twice at SyncToken {prev}",
                        r.id
                    );
                    assert!(fake.moved_ids.contains(&r.id));
                    again += 1;
                }
                all.entry(r.id.clone())
                    .or_default()
                    .push((r.sync_token, r.last_updated));
            }
        }
        // No version accepted twice anywhere.
        for (id, v) in &all {
            let distinct: HashSet<i64> = v.iter().map(|x| x.0).collect();
            assert_eq!(distinct.len(), v.len(), "a version of {id} accepted twice");
        }
        // Every record in the window (final state) was accepted at its final version.
        for r in &fake.recs {
            if r.t >= start && r.t < end {
                let v = all.get(&r.id).unwrap_or_else(|| panic!("missed {r:?}"));
                assert!(
                    v.contains(&(r.token, r.t)),
                    "missed final version of {r:?}: {v:?}"
                );
            }
        }
        (total, again)
    }

    /// `n` records (Ids `00000`, `00001`, ...) all updated in second `t`: a bulk import.
    fn bulk(n: usize, t: DateTime<Utc>) -> Vec<FakeRec> {
        (0..n)
            .map(|i| FakeRec {
                id: format!("{i:05}"),
                token: 0,
                t,
            })
            .collect()
    }

    fn dataset(rng: &mut StdRng, n: usize, seconds: i64) -> Vec<FakeRec> {
        (0..n)
            .map(|i| FakeRec {
                id: (i + 1).to_string(),
                token: rng.random_range(0..3),
                t: sec(rng.random_range(0..seconds)),
            })
            .collect()
    }

    #[test]
    fn random_datasets_heavy_ties_shuffled() {
        for seed in 0..12u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let page_size = [3u32, 10, 50, 1000][seed as usize % 4];
            let n = if page_size < 10 { 300 } else { 2500 };
            let mut recs = dataset(&mut rng, n, 3 * 86_400);
            // Heavy ties: half the records squeezed into a handful of seconds, some on boundaries.
            for (k, r) in recs.iter_mut().enumerate().filter(|(k, _)| k % 2 == 0) {
                r.t = sec([0, 86_400, 86_399, 2 * 86_400, 3 * 86_400, 17][k % 6]);
            }
            let mut fake = Fake::new(recs, seed, true, 0.0);
            let (total, again) = check_backfill(
                &mut fake,
                t0(),
                sec(3 * 86_400),
                1,
                page_size,
                seed % 3 == 0,
            );
            assert_eq!(again, 0);
            let expected = fake.recs.iter().filter(|r| r.t < sec(3 * 86_400)).count() as u64;
            assert_eq!(total, expected, "seed {seed}");
        }
    }

    #[test]
    fn records_moving_while_paging() {
        let (mut moved, mut reaccepted) = (0usize, 0u64);
        for seed in 100..112u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let page_size = [7u32, 100, 1000][seed as usize % 3];
            let mut recs = dataset(&mut rng, 1500, 2 * 86_400);
            for r in recs.iter_mut().take(400) {
                r.t = sec(86_400); // a tie exactly on the chunk boundary
            }
            let mut fake = Fake::new(recs, seed, true, if page_size < 10 { 0.02 } else { 0.2 });
            fake.move_span = 40_000;
            let (_total, again) = check_backfill(
                &mut fake,
                t0(),
                sec(2 * 86_400),
                1,
                page_size,
                seed % 2 == 0,
            );
            // Re-accepted records are moved ones (asserted inside).
            assert!(again <= fake.moved_ids.len() as u64);
            moved += fake.moved_ids.len();
            reaccepted += again;
        }
        // The runs did exercise moves, including moves inside the chunk being paged.
        assert!(moved > 50, "{moved}");
        assert!(reaccepted > 5, "{reaccepted}");
    }

    #[test]
    fn big_single_second_stable_order_exact_requests() {
        let mut recs = bulk(2500, sec(10));
        recs.push(FakeRec {
            id: "late".into(),
            token: 4,
            t: sec(11),
        });
        recs.push(FakeRec {
            id: "early".into(),
            token: 1,
            t: sec(5),
        });
        let mut fake = Fake::new(recs, 1, false, 0.0);
        let chunk = Chunk {
            index: 1,
            start: t0(),
            end: sec(60),
        };
        let (got, stats) = run_chunk(&mut fake, chunk, 1000, false).unwrap();
        assert_eq!(got.len(), 2502);
        assert_eq!(stats.accepted, 2502);
        // Page 1 has "early" + 999 of the second; window from 10 s gives 1000 at 10 s -> second mode.
        use RequestKind::*;
        assert_eq!(
            fake.requests,
            vec![
                Window,
                Window,
                SecondCount,
                SecondPage,
                SecondPage,
                SecondPage,
                Window
            ]
        );
        // 999 taken on page 1, 1000 refetched on page 2 (999 of them already taken), then the
        // second pass re-reads all 2500 of which 1000 were taken.
        assert_eq!(stats.refetched, 999 + 1000);
        assert_eq!(stats.counts, 1);
        let ids: HashSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), 2502);
    }

    #[test]
    fn big_single_second_shuffled_ties() {
        let recs = bulk(2600, sec(30));
        let mut fake = Fake::new(recs, 9, true, 0.0);
        let (total, _) = check_backfill(&mut fake, t0(), sec(31), 1, 1000, true);
        assert_eq!(total, 2600);
        // one count, then a recount and an Id check after each pass that fell short
        let counts = fake
            .requests
            .iter()
            .filter(|k| **k == RequestKind::SecondCount)
            .count();
        let pages = fake
            .requests
            .iter()
            .filter(|k| **k == RequestKind::SecondPage)
            .count();
        assert!(
            counts >= 1 && counts <= 2 * pages,
            "{counts} counts for {pages} pages"
        );
    }

    #[test]
    fn concurrent_pages_of_a_second_lose_and_duplicate_nothing() {
        // the properties of the sequential tests, with every page of a pass in flight at once
        // and answered in a random order, records moving, and crashes losing what was in flight
        for seed in 200..216u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let page_size = [3u32, 10, 100, 1000][seed as usize % 4];
            let n = if page_size < 10 { 400 } else { 3000 };
            let mut recs = dataset(&mut rng, n, 2 * 86_400);
            for (k, r) in recs.iter_mut().enumerate().filter(|(k, _)| k % 2 == 0) {
                r.t = sec([0, 86_400, 86_399, 40][k % 4]);
            }
            let moving = if seed % 2 == 0 { 0.0 } else { 0.05 };
            let mut fake = Fake::new(recs, seed, seed % 3 != 0, moving);
            fake.move_span = 40_000;
            let (total, again) = check_backfill_with(
                &mut fake,
                t0(),
                sec(2 * 86_400),
                1,
                page_size,
                seed % 4 < 2,
                10,
            );
            assert!(again <= fake.moved_ids.len() as u64);
            if moving == 0.0 {
                assert_eq!(again, 0);
                assert_eq!(total, fake.recs.len() as u64, "seed {seed}");
            }
        }
    }

    #[test]
    fn a_pass_goes_out_at_once_and_a_verification_too() {
        // 4500 records in one second, stable order: the count, then pages 1..4001 and 4501 (the
        // short one just past the count) all in flight together; the first pass sees them all
        let recs = bulk(4500, sec(7));
        let mut fake = Fake::new(recs, 3, false, 0.0);
        let chunk = Chunk {
            index: 1,
            start: sec(7),
            end: sec(8),
        };
        let mut p = Pager::new("Invoice", false, chunk, 1000).unwrap();
        p.begin_second(4500).unwrap();
        let reqs = p.ready(10).unwrap();
        let starts: Vec<u32> = reqs.iter().map(|r| r.start_position).collect();
        assert_eq!(starts, vec![1, 1001, 2001, 3001, 4001]);
        for r in &reqs {
            p.issue(r).unwrap();
        }
        assert!(p.ready(10).unwrap().is_empty());
        // answered backwards: the short page first does not end the pass early
        let mut got = 0;
        for r in reqs.iter().rev() {
            let Served::Page(page) = fake.serve(r) else {
                panic!()
            };
            assert!(!p.is_done());
            got += p.accept_part(r.part, page).unwrap().records.len();
        }
        assert_eq!(got, 4500);
        assert!(p.is_done());
        // an answer nobody asked for is refused
        let mut q = Pager::new("Invoice", false, chunk, 1000).unwrap();
        q.begin_second(4500).unwrap();
        let r = q.ready(1).unwrap().remove(0);
        q.issue(&r).unwrap();
        assert!(q.accept_part(2001, Vec::new()).is_err());
        // a stale pass ends in an Id check whose batches go out together
        let mut v = Pager::resume(
            "Invoice",
            false,
            chunk,
            1000,
            PagerState {
                cursor: sec(7),
                seen_at_cursor: BTreeMap::new(),
                mode: PagerMode::SecondRecount {
                    second_try: 1,
                    passes: 2,
                    seen_in_try: (0..700).map(|i| format!("{i:05}")).collect(),
                },
                ids_in_table: false,
                offsets: None,
            },
        )
        .unwrap();
        v.accept_count_part(0, 700).unwrap();
        let batches = v.ready(10).unwrap();
        assert_eq!(
            batches.iter().map(|r| r.part).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        for r in &batches {
            v.issue(r).unwrap();
        }
        v.accept_count_part(2, 100).unwrap();
        v.accept_count_part(0, 300).unwrap();
        assert!(!v.is_done());
        v.accept_count_part(1, 300).unwrap();
        assert!(v.is_done());
    }

    #[test]
    fn a_second_emptied_before_its_recount_ends_without_an_empty_id_list() {
        let chunk = Chunk {
            index: 1,
            start: sec(0),
            end: sec(10),
        };
        let mut p = Pager::new("Invoice", false, chunk, 2).unwrap();
        p.accept(vec![raw("a", 0, sec(0)), raw("b", 0, sec(0))])
            .unwrap();
        p.accept_count(2).unwrap();
        // both records were updated out of the second before the pass
        p.accept(Vec::new()).unwrap();
        assert!(matches!(p.state().mode, PagerMode::SecondRecount { .. }));
        p.accept_count(0).unwrap();
        assert_eq!(p.state().mode, PagerMode::Window);
        assert_eq!(p.state().cursor, sec(1));
    }

    #[test]
    fn a_bulk_seconds_ids_live_in_their_table_not_in_every_saved_state() {
        // 2600 records in one second, ties shuffled per request, a resume after every request
        // from the saved state and the table only: every record taken exactly once, and the saved
        // state stays a few hundred bytes while the pager holds thousands of Ids
        let recs = bulk(2600, sec(30));
        let mut fake = Fake::new(recs, 11, true, 0.0);
        let chunk = Chunk {
            index: 1,
            start: t0(),
            end: sec(31),
        };
        let mut pager = Pager::new("Invoice", false, chunk, 1000).unwrap();
        let mut table = IdTable::default();
        let (mut got, mut in_table, mut biggest, mut most_ids) = (Vec::new(), 0, 0, 0);
        while let Some(req) = pager.next_request().unwrap() {
            match fake.serve(&req) {
                Served::Count(n) => pager.accept_count(n).unwrap(),
                Served::Page(p) => {
                    let a = pager.accept(p).unwrap();
                    table.write(&a);
                    got.extend(a.records.into_iter().map(|r| r.id));
                }
            }
            let saved = pager.persisted_state();
            if saved.ids_in_table {
                in_table += 1;
                biggest = biggest.max(serde_json::to_string(&saved).unwrap().len());
                most_ids = most_ids.max(pager.state().seen_at_cursor.len());
            }
            let state = table.round_trip(&pager);
            pager = Pager::resume("Invoice", false, chunk, 1000, state).unwrap();
        }
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!((got.len(), distinct.len()), (2600, 2600));
        assert!(in_table >= 5, "{in_table}");
        assert!(most_ids >= 2000, "{most_ids}");
        assert!(biggest < 400, "a saved state of {biggest} bytes");
    }

    #[test]
    fn boundaries_are_half_open() {
        let recs = vec![
            FakeRec {
                id: "at-start".into(),
                token: 0,
                t: sec(0),
            },
            FakeRec {
                id: "before".into(),
                token: 0,
                t: sec(-1),
            },
            FakeRec {
                id: "at-mid".into(),
                token: 0,
                t: sec(86_400),
            },
            FakeRec {
                id: "at-end".into(),
                token: 0,
                t: sec(2 * 86_400),
            },
            FakeRec {
                id: "last-in".into(),
                token: 0,
                t: sec(2 * 86_400 - 1),
            },
        ];
        let mut fake = Fake::new(recs, 3, true, 0.0);
        let chunks = crate::plan::plan_chunks(t0(), sec(2 * 86_400), 1).unwrap();
        let (a, _) = run_chunk(&mut fake, chunks[0], 1000, false).unwrap();
        let (b, _) = run_chunk(&mut fake, chunks[1], 1000, false).unwrap();
        let ids = |v: &Vec<RawRecord>| v.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), vec!["at-start"]);
        assert_eq!(ids(&b), vec!["at-mid", "last-in"]);
    }

    #[test]
    fn small_pages_walk_exactly() {
        let recs = vec![
            FakeRec {
                id: "A".into(),
                token: 0,
                t: sec(0),
            },
            FakeRec {
                id: "B".into(),
                token: 0,
                t: sec(0),
            },
            FakeRec {
                id: "C".into(),
                token: 0,
                t: sec(1),
            },
            FakeRec {
                id: "D".into(),
                token: 0,
                t: sec(2),
            },
            FakeRec {
                id: "E".into(),
                token: 0,
                t: sec(2),
            },
            FakeRec {
                id: "F".into(),
                token: 0,
                t: sec(3),
            },
        ];
        let mut fake = Fake::new(recs, 0, false, 0.0);
        let chunk = Chunk {
            index: 1,
            start: t0(),
            end: sec(100),
        };
        let (got, stats) = run_chunk(&mut fake, chunk, 2, false).unwrap();
        use RequestKind::*;
        // [A,B] all at 0 s -> second mode (count 2, [A,B] refetched, [] ends the pass) ->
        // window from 1 s: [C,D] -> window from 2 s: [D,E] (D refetched), all at 2 s ->
        // second mode (count 2, [D,E] refetched, []) -> window from 3 s: [F] short -> done.
        assert_eq!(
            fake.requests,
            vec![
                Window,
                SecondCount,
                SecondPage,
                SecondPage,
                Window,
                Window,
                SecondCount,
                SecondPage,
                SecondPage,
                Window
            ]
        );
        assert_eq!(
            got.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            vec!["A", "B", "C", "D", "E", "F"]
        );
        assert_eq!(stats.accepted, 6);
        assert_eq!(stats.refetched, 2 + 1 + 2);
    }

    #[test]
    fn unstable_second_fails_after_three_tries() {
        let chunk = Chunk {
            index: 2,
            start: t0(),
            end: sec(100),
        };
        let mut p = Pager::new("Customer", true, chunk, 2).unwrap();
        let r = p.next_request().unwrap().unwrap();
        assert_eq!(r.query, "SELECT * FROM Customer WHERE MetaData.LastUpdatedTime >= '2025-01-01T00:00:00+00:00' AND MetaData.LastUpdatedTime < '2025-01-01T00:01:40+00:00' AND Active IN (true,false) ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 2");
        let a = p
            .accept(vec![raw("1", 0, sec(5)), raw("2", 0, sec(5))])
            .unwrap();
        assert_eq!(a.records.len(), 2);
        for try_no in 1..=3 {
            let r = p.next_request().unwrap().unwrap();
            assert_eq!(r.kind, RequestKind::SecondCount);
            assert_eq!(r.query, "SELECT count(*) FROM Customer WHERE MetaData.LastUpdatedTime = '2025-01-01T00:00:05+00:00' AND Active IN (true,false)");
            p.accept_count(3).unwrap(); // but only two ever come back
            let mut passes = 0;
            while matches!(
                p.state().mode,
                PagerMode::SecondPages { .. } | PagerMode::SecondRecount { .. }
            ) {
                let r = p.next_request().unwrap().unwrap();
                match r.kind {
                    RequestKind::SecondCount => p.accept_count(3).unwrap(), // the recount after a pass
                    RequestKind::SecondPage if r.start_position == 1 => {
                        p.accept(vec![raw("2", 0, sec(5)), raw("1", 0, sec(5))])
                            .unwrap();
                    }
                    kind => {
                        assert_eq!(kind, RequestKind::SecondPage, "try {try_no}");
                        p.accept(vec![]).unwrap();
                        passes += 1;
                    }
                }
            }
            assert_eq!(passes, max_passes(3));
        }
        let e = p.next_request().unwrap_err();
        assert_eq!(
            e.to_string(),
            "Customer records updated at 2025-01-01T00:00:05+00:00 could not be read completely: count(*) said 3 but 2 distinct Ids were seen, after 3 tries"
        );
        assert_eq!(max_passes(3), 10);
        assert_eq!(max_passes(2500), 16);
    }

    #[test]
    fn stale_count_retries_then_succeeds() {
        let chunk = Chunk {
            index: 1,
            start: t0(),
            end: sec(100),
        };
        let mut p = Pager::new("Invoice", false, chunk, 2).unwrap();
        p.accept(vec![raw("1", 0, sec(5)), raw("2", 0, sec(5))])
            .unwrap();
        p.accept_count(2).unwrap();
        // A third record appeared in the second: more distinct Ids than the count -> recount.
        p.accept(vec![raw("3", 0, sec(5)), raw("1", 0, sec(5))])
            .unwrap();
        let a = p.accept(vec![raw("2", 0, sec(5))]).unwrap();
        assert_eq!(a.refetched, 1);
        assert!(
            matches!(p.state().mode, PagerMode::SecondRecount { passes: 1, .. }),
            "{:?}",
            p.state().mode
        );
        p.accept_count(3).unwrap();
        // as many Ids seen as the second holds: are they the ones it holds?
        let r = p.next_request().unwrap().unwrap();
        assert_eq!(r.kind, RequestKind::SecondCount);
        assert_eq!(
            r.query,
            "SELECT count(*) FROM Invoice WHERE MetaData.LastUpdatedTime = '2025-01-01T00:00:05+00:00' AND Id IN ('1','2','3')"
        );
        p.accept_count(3).unwrap();
        assert_eq!(p.state().mode, PagerMode::Window);
        assert_eq!(p.state().cursor, sec(6));
        assert!(p.state().seen_at_cursor.is_empty());
        assert_eq!(p.stats().accepted, 3);
    }

    #[test]
    fn same_second_update_is_taken_again() {
        let chunk = Chunk {
            index: 1,
            start: t0(),
            end: sec(100),
        };
        let mut p = Pager::new("Invoice", false, chunk, 3).unwrap();
        let a = p
            .accept(vec![
                raw("1", 0, sec(1)),
                raw("2", 0, sec(2)),
                raw("3", 0, sec(3)),
            ])
            .unwrap();
        assert_eq!(a.records.len(), 3);
        assert_eq!(p.state().cursor, sec(3));
        assert_eq!(
            p.state().seen_at_cursor,
            BTreeMap::from([("3".to_string(), 0)])
        );
        let a = p
            .accept(vec![
                raw("3", 0, sec(3)),
                raw("3", 1, sec(3)),
                raw("4", 0, sec(4)),
            ])
            .unwrap();
        assert_eq!(a.duplicates, 1);
        assert_eq!(a.refetched, 0);
        assert_eq!(
            a.records
                .iter()
                .map(|r| (r.id.as_str(), r.sync_token))
                .collect::<Vec<_>>(),
            vec![("3", 1), ("4", 0)]
        );
        assert!(!a.done);
        assert_eq!(p.state().cursor, sec(4));
    }

    #[test]
    fn out_of_range_record_is_rejected_and_state_kept() {
        let chunk = Chunk {
            index: 1,
            start: t0(),
            end: sec(100),
        };
        let mut p = Pager::new("Invoice", false, chunk, 10).unwrap();
        let before = p.state().clone();
        let e = p.accept(vec![raw("1", 0, sec(100))]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unusable response from QuickBooks: Invoice record Id 1 has LastUpdatedTime 2025-01-01T00:01:40+00:00 outside the requested range [2025-01-01T00:00:00+00:00, 2025-01-01T00:01:40+00:00)"
        );
        assert_eq!(p.state(), &before);
        assert!(p.accept_count(1).is_err());
    }

    #[test]
    fn fractional_chunk_bounds_round_up() {
        let chunk = Chunk {
            index: 1,
            start: t0() + TimeDelta::milliseconds(500),
            end: sec(10) + TimeDelta::milliseconds(1),
        };
        let p = Pager::new("Invoice", false, chunk, 10).unwrap();
        let r = p.next_request().unwrap().unwrap();
        assert_eq!(r.from, sec(1));
        assert_eq!(r.to, sec(11));
    }

    #[test]
    fn validates_inputs() {
        let chunk = Chunk {
            index: 1,
            start: t0(),
            end: sec(10),
        };
        assert_eq!(
            Pager::new("Invoice", false, chunk, 0)
                .unwrap_err()
                .to_string(),
            "page_size must be between 1 and 1000, got 0"
        );
        assert!(Pager::new("Invoice", false, chunk, 1001).is_err());
        assert!(Pager::new("Invoice'--", false, chunk, 10).is_err());
        let st = PagerState {
            cursor: sec(11),
            seen_at_cursor: BTreeMap::new(),
            mode: PagerMode::Window,
            ids_in_table: false,
            offsets: None,
        };
        assert!(Pager::resume("Invoice", false, chunk, 10, st).is_err());
    }

    #[test]
    fn state_serializes_readably() {
        let st = PagerState {
            cursor: sec(5),
            seen_at_cursor: BTreeMap::from([("7".to_string(), 2)]),
            mode: PagerMode::SecondCount { second_try: 1 },
            ids_in_table: false,
            offsets: None,
        };
        assert_eq!(
            serde_json::to_string(&st).unwrap(),
            r#"{"cursor":"2025-01-01T00:00:05Z","seen_at_cursor":{"7":2},"mode":{"mode":"second_count","second_try":1}}"#
        );
    }

    #[test]
    fn raw_record_parsing() {
        let r = raw("42", 3, sec(0));
        assert_eq!(r.id, "42");
        assert_eq!(r.sync_token, 3);
        assert_eq!(r.last_updated, t0());
        assert!(r
            .text()
            .unwrap()
            .starts_with(r#"{"Id":"42","SyncToken":"3","MetaData":{"CreateTime""#));
        // a record kept as text gets the \u0000 policy; with jsonb on, the encoder's bytes
        let nul = RawValue::from_string(
            r#"{"Id":"9","SyncToken":"0","MetaData":{"LastUpdatedTime":"2020-09-29T06:04:21-07:00"},"M":"a\u0000b"}"#.into(),
        )
        .unwrap();
        let kept = RawRecord::from_page(&nul, false).unwrap();
        assert_eq!(
            kept.text().unwrap(),
            r#"{"Id":"9","SyncToken":"0","MetaData":{"LastUpdatedTime":"2020-09-29T06:04:21-07:00"},"M":"a\ufffdb"}"#
        );
        match RawRecord::from_page(&nul, true).unwrap().payload {
            Payload::Jsonb(b) => assert_eq!(
                Some(b.to_vec()),
                crate::jsonb::encode::encode(kept.text().unwrap())
            ),
            Payload::Text(_) => panic!("not encoded"),
        }
        // an Id holding \u0000 follows the payload's rule: the key is valid text equal to the
        // payload's Id (it once held a NUL, an invalid text value)
        for jsonb in [false, true] {
            let nul_id = RawValue::from_string(
                r#"{"Id":"9\u00001","SyncToken":"0","MetaData":{"LastUpdatedTime":"2020-09-29T06:04:21-07:00"}}"#.into(),
            )
            .unwrap();
            assert_eq!(
                RawRecord::from_page(&nul_id, jsonb).unwrap().id,
                "9\u{FFFD}1"
            );
        }
        let bad = |s: &str| {
            RawRecord::from_page(&RawValue::from_string(s.to_string()).unwrap(), false)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad(r#"{"SyncToken":"0"}"#),
            "unusable response from QuickBooks: a record has no Id"
        );
        assert_eq!(
            bad(
                r#"{"Id":"1","SyncToken":"x1","MetaData":{"LastUpdatedTime":"2020-09-29T06:04:21-07:00"}}"#
            ),
            "unusable response from QuickBooks: record Id 1 has a non-numeric SyncToken \"x1\""
        );
        assert_eq!(
            bad(r#"{"Id":"1","SyncToken":"1"}"#),
            "unusable response from QuickBooks: record Id 1 has no MetaData.LastUpdatedTime"
        );
        assert!(
            bad(r#"{"Id":"1","SyncToken":"1","MetaData":{"LastUpdatedTime":"2020-09-29"}}"#)
                .contains("invalid MetaData.LastUpdatedTime")
        );
        assert_eq!(
            bad("[1]"),
            "unusable response from QuickBooks: a record is not a JSON object"
        );
        let num = RawRecord::from_page(&RawValue::from_string(r#"{"Id":7,"SyncToken":2,"MetaData":{"LastUpdatedTime":"2020-09-29T06:04:21-07:00"}}"#.into()).unwrap(), false).unwrap();
        assert_eq!((num.id.as_str(), num.sync_token), ("7", 2));
        assert_eq!(
            num.last_updated,
            Utc.with_ymd_and_hms(2020, 9, 29, 13, 4, 21)
                .single()
                .unwrap()
        );
    }

    /// A small budget for the Id tests: 2 MiB of Ids, about 10,000 of 6 characters.
    fn small_budget() -> IdBudget {
        IdBudget::new(8, 2 * 1024 * 1024)
    }

    /// The records a lying QBO makes up for a second: `n` fresh Ids from `from` on.
    fn fresh(from: usize, n: usize, t: DateTime<Utc>) -> Vec<RawRecord> {
        (from..from + n)
            .map(|i| raw(&format!("{i:06}"), 0, t))
            .collect()
    }

    fn too_large(e: QboError) -> (u64, u64, u64, u64) {
        assert_eq!(e.sqlstate(), "54000", "{e}");
        assert!(!e.is_retryable());
        match e {
            QboError::SecondTooLarge {
                claimed,
                held,
                fits,
                others,
                ..
            } => (claimed, held, fits, others),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_count_of_a_trillion_fails_before_a_page_is_planned() {
        let chunk = Chunk {
            index: 1,
            start: t0(),
            end: sec(100),
        };
        let budget = IdBudget::default_budget();
        let mut p = Pager::new("Invoice", false, chunk, 1000)
            .unwrap()
            .with_id_budget(budget.clone());
        p.accept(fresh(0, 1000, sec(5))).unwrap();
        assert_eq!(
            p.next_request().unwrap().unwrap().kind,
            RequestKind::SecondCount
        );
        let e = p.accept_count(1_000_000_000_000).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "Invoice records updated at 2025-01-01T00:00:05+00:00: QuickBooks claims 1000000000000 records in that one second, more than qbo.max_buffer_mb = 256 MB lets pg_qbo remember while it reads them (1000 of their Ids held; the Ids of the seconds being read may take 67108864 bytes, a quarter of it, about {} Ids of this length): raise qbo.max_buffer_mb and start a new run (a resume keeps the run's settings)",
                67_108_864 / (2 * (96 + 6))
            )
        );
        let (claimed, held, fits, others) = too_large(e);
        assert_eq!((claimed, held, others), (1_000_000_000_000, 1000, 0));
        assert!(fits >= 300_000, "{fits}");
        // nothing is planned past it: the pager keeps refusing
        assert!(matches!(
            p.ready(10),
            Err(QboError::SecondTooLarge {
                claimed: 1_000_000_000_000,
                ..
            })
        ));
        assert!(budget.held() <= budget.limit());
        // a one-second slice counted at a trillion never starts its passes
        let one = Chunk {
            index: 1,
            start: sec(5),
            end: sec(6),
        };
        let mut q = Pager::new("Invoice", false, one, 1000).unwrap();
        let (claimed, held, _, _) = too_large(q.begin_second(1_000_000_000_000).unwrap_err());
        assert_eq!((claimed, held), (1_000_000_000_000, 0));
        assert!(!q.in_second_mode());
    }

    #[test]
    fn a_second_that_keeps_growing_stops_within_the_budget() {
        // every page of the second is full of Ids never seen, and every count says 5000 more
        // than were served: what the attacker's emulator did. Unbounded, the pager would page and
        // remember forever; within the budget, it stops with what fits.
        let chunk = Chunk {
            index: 1,
            start: t0(),
            end: sec(100),
        };
        let budget = small_budget();
        let mut p = Pager::new("Invoice", false, chunk, 1000)
            .unwrap()
            .with_id_budget(budget.clone());
        let mut served = 0usize;
        p.accept(fresh(served, 1000, sec(5))).unwrap();
        served += 1000;
        let mut flying: Vec<Request> = Vec::new();
        let mut requests = 0;
        let err = loop {
            assert!(requests < 10_000, "the pager never stopped");
            assert!(budget.held() <= budget.limit(), "{}", budget.held());
            let ready = match p.ready(10 - flying.len()) {
                Ok(r) => r,
                Err(e) => break e,
            };
            for r in ready {
                p.issue(&r).unwrap();
                flying.push(r);
            }
            let Some(req) = flying.pop() else {
                panic!("stalled: {:?}", p.state().mode)
            };
            requests += 1;
            let answer = if req.kind == RequestKind::SecondCount {
                p.accept_count_part(req.part, served as u64 + 5000)
            } else {
                let page = fresh(served, 1000, sec(5));
                served += 1000;
                p.accept_part(req.part, page).map(|_| ())
            };
            if let Err(e) = answer {
                break e;
            }
        };
        let (claimed, held, fits, others) = too_large(err);
        assert_eq!(others, 0);
        // it held no more Ids than fit, and the budget was never exceeded
        assert!(held <= fits, "{held} > {fits}");
        assert!(held >= 5000, "{held}");
        assert!(claimed > fits, "{claimed} <= {fits}");
        assert!(budget.held() <= budget.limit());
        assert!(requests < 20, "{requests}");
        drop(p);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_pass_never_walks_past_what_the_budget_holds() {
        // count(*) says 1500, but every page comes back full with the same thousand Ids: memory
        // stays put, yet a pass would walk STARTPOSITION on without end. It stops at the
        // positions the budget holds.
        let chunk = Chunk {
            index: 1,
            start: t0(),
            end: sec(100),
        };
        let budget = small_budget();
        let mut p = Pager::new("Invoice", false, chunk, 1000)
            .unwrap()
            .with_id_budget(budget.clone());
        p.accept(fresh(0, 1000, sec(5))).unwrap();
        p.accept_count(1500).unwrap();
        let mut highest = 0;
        let mut pages = 0;
        let err = loop {
            assert!(pages < 10_000, "the pass never ended");
            let req = match p.next_request() {
                Ok(Some(r)) => r,
                Ok(None) => panic!("done?"),
                Err(e) => break e,
            };
            if req.kind == RequestKind::SecondCount {
                p.accept_count(1500).unwrap();
                continue;
            }
            pages += 1;
            highest = highest.max(req.start_position);
            p.accept(fresh(0, 1000, sec(5))).unwrap();
        };
        let (claimed, held, fits, _) = too_large(err);
        assert_eq!(held, 1000);
        assert!(u64::from(highest) <= fits + 1, "{highest} > {fits} + 1");
        assert!(claimed > fits);
        // pages at 1, 1001, ... up to the last start within the budget, then the error
        assert_eq!(pages as u64, fits / 1000 + 1, "{pages}");
    }

    #[test]
    fn the_seconds_read_at_once_share_one_budget() {
        let budget = small_budget();
        let second = |n: i64| Chunk {
            index: 1,
            start: sec(n),
            end: sec(n + 1),
        };
        let mut a = Pager::new("Invoice", false, second(1), 1000)
            .unwrap()
            .with_id_budget(budget.clone());
        // count(*) says one more than the pass finds
        a.begin_second(8001).unwrap();
        for start in (1..=8001).step_by(1000) {
            let page = fresh(start as usize, if start <= 8000 { 1000 } else { 0 }, sec(1));
            let r = a.next_request().unwrap().unwrap();
            assert_eq!(r.start_position, start);
            a.accept(page).unwrap();
        }
        // the pass ended short with its 8000 Ids held, waiting for its recount
        assert!(matches!(a.state().mode, PagerMode::SecondRecount { .. }));
        let held_by_a = a.id_bytes();
        assert_eq!(budget.held(), held_by_a);
        assert_eq!(held_by_a, 8000 * 2 * (96 + 6));
        // another second of 5000 does not fit beside it
        let mut b = Pager::new("Invoice", false, second(2), 1000)
            .unwrap()
            .with_id_budget(budget.clone());
        let (claimed, held, fits, others) = too_large(b.begin_second(5000).unwrap_err());
        assert_eq!((claimed, held, others), (5000, 0, held_by_a));
        assert!(fits < 5000, "{fits}");
        // once the first is read (its Ids let go), it does
        a.accept_count(0).unwrap();
        assert_eq!(a.state().mode, PagerMode::Done);
        assert_eq!(budget.held(), 0);
        b.begin_second(5000).unwrap();
        // a pager moved to another budget takes its charge along
        let c = Pager::new("Invoice", false, second(3), 1000).unwrap();
        drop(c.with_id_budget(budget.clone()));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn fifty_thousand_records_in_one_second_complete_with_the_default_budget() {
        // a real bulk import: tens of thousands of records in one second
        let mut recs = bulk(50_000, sec(30));
        recs.extend(bulk(10, sec(31)).into_iter().map(|mut r| {
            r.id = format!("after-{}", r.id);
            r
        }));
        let mut fake = Fake::new(recs, 5, false, 0.0);
        let chunk = Chunk {
            index: 1,
            start: sec(29),
            end: sec(40),
        };
        let (got, stats, most) =
            run_chunk_concurrent(&mut fake, chunk, 1000, 10, 5, false).unwrap();
        let distinct: HashSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert_eq!((got.len(), distinct.len()), (50_010, 50_010));
        assert_eq!(stats.accepted, 50_010);
        assert_eq!(most, 10);
    }
}
