//! Change Data Capture (CDC): one call's request and its answer, and the rules a sync builds on:
//! which entities CDC serves, how far back it reaches, when an answer may have left changes out,
//! and where the next call starts. Pure logic and parsing; [`crate::client::QboClient::cdc`] sends
//! the call.
//!
//! `GET {base}/v3/company/{realm}/cdc?entities=A,B&changedSince=T&minorversion=M` answers every
//! record of the listed entities changed at or after `T`, up to QBO's present when it answers:
//!
//! ```text
//! {"CDCResponse":[{"QueryResponse":[{"Invoice":[...],"startPosition":1,"maxResults":2},
//!                                   {"Customer":[...]}]}],
//!  "time":"2026-12-05T04:02:53.512-08:00"}
//! ```
//!
//! - A record changed since `T` comes back whole, as a query returns it; a record deleted since
//!   `T` comes back as a tombstone: `{"domain":"QBO","status":"Deleted","Id":"65",
//!   "MetaData":{"LastUpdatedTime":...}}` (no `SyncToken`, nothing else). Name lists are never
//!   deleted: they become `Active = false`, an ordinary change.
//! - At most [`MAX_OBJECTS`] objects per answer, shared by all its entities, and which ones an
//!   answer at the cap holds is not documented: every entity of a capped answer
//!   ([`CdcAnswer::capped`]) may be missing changes and must be completed another way.
//! - `T` at most 30 days back ([`MAX_AGE`]); JournalCode, TaxAgency, TaxCode, TaxRate and
//!   TimeActivity are not served ([`crate::entities::Entity::cdc`]).
//! - No end time: the answer reaches QBO's present, read on QBO's clock. The next call starts from
//!   [`next_watermark`], computed from the answer's `time`, never from this machine's clock.
//!
//! [`route`] says how each entity's changes are read (CDC, or the pager where CDC does not serve
//! it or no longer reaches its watermark, or a first backfill), and [`CdcRound`] runs the CDC
//! calls of one sync: one call for every entity while the answer stays under the cap, halves of
//! the entities asked again when it does not, an entity that fills an answer alone handed back to
//! be completed another way.
//!
//! The parser trusts nothing in an answer: the members and lists it walks are bounded as a query
//! page's are, an entity the call did not ask for is refused (its records must never land in
//! another entity's table), and the records it keeps hold at most the response cap
//! ([`crate::budget::MemoryBudget::response_cap`]).

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::client::{encode_component, fault_in_ok, unusable, Members, Records};
use crate::entities::{lookup, Entity, ENTITIES};
use crate::error::QboError;
use crate::pager::{scalar_text, MetaKeys, RawRecord};
use crate::query::floor_second;

/// Most objects (records and tombstones of every entity) one CDC answer holds.
pub const MAX_OBJECTS: usize = 1000;

/// How far back `changedSince` may reach.
pub const MAX_AGE: TimeDelta = TimeDelta::days(30);

/// A watermark this much younger than [`MAX_AGE`] is already treated as too old
/// ([`reachable`]): this machine's clock and QBO's may differ, and a call refused for its age
/// costs a request.
pub const AGE_SAFETY: TimeDelta = TimeDelta::hours(1);

/// One CDC call: the entities it asks for (each served by CDC, each once, in the catalog's order)
/// and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdcCall {
    entities: Vec<&'static Entity>,
    since: DateTime<Utc>,
}

impl CdcCall {
    /// A call for `names` (exact entity names) changed at or after `since` (rounded down to the
    /// second: a change seen twice is skipped, one missed is lost). The error names a name that is
    /// unknown or that CDC does not serve.
    pub fn new(names: &[&str], since: DateTime<Utc>) -> Result<CdcCall, QboError> {
        if names.is_empty() {
            return Err(QboError::InvalidParameter(
                "a Change Data Capture call needs at least one entity".into(),
            ));
        }
        let mut entities: Vec<&'static Entity> = Vec::with_capacity(names.len());
        for name in names {
            let e = lookup(name).map_err(QboError::InvalidParameter)?;
            if !e.cdc {
                return Err(QboError::InvalidParameter(format!(
                    "Change Data Capture does not serve {}; QuickBooks serves {} only through queries",
                    e.name,
                    unsupported().join(", ")
                )));
            }
            if !entities.iter().any(|x| x.name == e.name) {
                entities.push(e);
            }
        }
        entities.sort_by_key(|e| e.name);
        Ok(CdcCall {
            entities,
            since: floor_second(since),
        })
    }

    /// The entities asked for, in the catalog's order.
    pub fn entities(&self) -> impl Iterator<Item = &'static Entity> + '_ {
        self.entities.iter().copied()
    }

    /// Where the call starts (whole seconds).
    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }

    /// `cdc?entities=...&changedSince=...&minorversion=...`, the part after
    /// `/v3/company/{realm}/`.
    pub fn path_and_query(&self, minor_version: u32) -> String {
        let names: Vec<&str> = self.entities.iter().map(|e| e.name).collect();
        format!(
            "cdc?entities={}&changedSince={}&minorversion={minor_version}",
            names.join(","),
            encode_component(&self.since.to_rfc3339_opts(SecondsFormat::Secs, false))
        )
    }

    fn asked(&self, key: &str) -> Option<&'static Entity> {
        self.entities.iter().copied().find(|e| e.name == key)
    }
}

/// The entities CDC does not serve, by name.
pub fn unsupported() -> Vec<&'static str> {
    ENTITIES.iter().filter(|e| !e.cdc).map(|e| e.name).collect()
}

/// A record deleted since the call's start: all QBO says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub id: String,
    /// When it was deleted (`MetaData.LastUpdatedTime`), UTC.
    pub deleted_at: DateTime<Utc>,
}

/// What one answer says of one entity.
#[derive(Debug)]
pub struct EntityChanges {
    pub entity: &'static Entity,
    /// Records changed (created, updated, voided, made inactive), whole.
    pub records: Vec<RawRecord>,
    /// Records deleted.
    pub deleted: Vec<Tombstone>,
}

/// A parsed CDC answer: one [`EntityChanges`] per entity asked for (empty when QBO sent none), in
/// the call's order.
#[derive(Debug)]
pub struct CdcAnswer {
    /// QBO's clock when it answered (the answer's `time`).
    pub time: DateTime<Utc>,
    pub changes: Vec<EntityChanges>,
    pub intuit_tid: Option<String>,
    pub body_bytes: usize,
}

impl CdcAnswer {
    /// Records and tombstones of every entity.
    pub fn objects(&self) -> usize {
        self.changes
            .iter()
            .map(|c| c.records.len() + c.deleted.len())
            .sum()
    }

    /// The answer holds [`MAX_OBJECTS`] objects or more: QBO may have left changes of any of its
    /// entities out.
    pub fn capped(&self) -> bool {
        self.objects() >= MAX_OBJECTS
    }
}

/// Where the call after an answer starts: QBO's clock when it answered, less the call's whole
/// round trip (the answer was computed at some moment between sending and receiving, on QBO's
/// clock, and a change committed just before that moment may not have been visible to it), less
/// `margin` for what QBO's own commit order may hide, rounded down to the second. Changes seen
/// again from there are skipped by their `SyncToken`; none is missed.
pub fn next_watermark(
    answer_time: DateTime<Utc>,
    round_trip: TimeDelta,
    margin: TimeDelta,
) -> DateTime<Utc> {
    let back = round_trip.max(TimeDelta::zero()) + margin.max(TimeDelta::zero());
    floor_second(answer_time.checked_sub_signed(back).unwrap_or(answer_time))
}

/// Whether a call may start at `watermark` when it is `now`: within [`MAX_AGE`] less
/// [`AGE_SAFETY`]. An older watermark is read another way (the pager over what changed since).
pub fn reachable(watermark: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now.signed_duration_since(watermark) < MAX_AGE - AGE_SAFETY
}

/// How far behind QBO's clock a sync's new watermark is set, beyond the call's round trip
/// ([`next_watermark`]): a change QBO stamped just before it answered may become visible to its
/// reads a moment later.
pub const WATERMARK_MARGIN: TimeDelta = TimeDelta::seconds(120);

/// How one entity's changes since its watermark are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// No watermark yet: the entity's whole history is read as a backfill reads it.
    FirstSync,
    /// Through CDC calls, with the other entities routed there.
    Cdc,
    /// CDC does not serve the entity: read with one query when due ([`crate::poll`]).
    Unsupported,
    /// The watermark is further back than CDC reaches ([`reachable`]): its changes through the
    /// pager, its deletes by comparing counts ([`crate::deletes`]).
    TooOld,
}

/// The route of `entity` whose changes are read up to `watermark` (None: never synced), when it
/// is `now`.
pub fn route(entity: &Entity, watermark: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Route {
    match watermark {
        None => Route::FirstSync,
        Some(_) if !entity.cdc => Route::Unsupported,
        Some(w) if !reachable(w, now) => Route::TooOld,
        Some(_) => Route::Cdc,
    }
}

/// What a CDC answer settles for one of the entities its call asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Every change of the entity from its watermark up to `watermark` is in the answers
    /// applied so far: the entity's watermark moves there (in the transaction that writes the
    /// answer's rows).
    Complete {
        entity: &'static Entity,
        watermark: DateTime<Utc>,
    },
    /// The entity alone filled an answer: CDC cannot tell whether it left changes out. What the
    /// answer held is applied; the changes since `since` are completed another way (the pager,
    /// and the count comparison for deletes) and its watermark stays until then.
    Capped {
        entity: &'static Entity,
        since: DateTime<Utc>,
    },
}

/// Entities asked together, each with its watermark.
type Group = Vec<(&'static Entity, DateTime<Utc>)>;

/// The CDC calls of one sync (see the module documentation): every entity routed to CDC is asked
/// in one call from the earliest of their watermarks. An answer under the cap settles all its
/// entities. An answer at the cap is applied all the same (its objects are real changes) and its
/// entities are asked again in two halves, each from the earliest watermark of its half, until an
/// answer is under the cap or an entity fills one alone. A sync whose changes fit one answer (the
/// steady state of an hourly sync) costs one request.
#[derive(Debug)]
pub struct CdcRound {
    /// Groups waiting to be asked.
    queue: Vec<Group>,
    /// Groups asked and not answered, by the call that asks them.
    flying: Vec<(CdcCall, Group)>,
    calls: u64,
}

impl CdcRound {
    /// A round over `entities`, each with its watermark; an entity CDC does not serve is refused.
    pub fn new(entities: &[(&'static Entity, DateTime<Utc>)]) -> Result<CdcRound, QboError> {
        if let Some((e, _)) = entities.iter().find(|(e, _)| !e.cdc) {
            return Err(QboError::InvalidParameter(format!(
                "Change Data Capture does not serve {}",
                e.name
            )));
        }
        let mut group: Group = Vec::new();
        for (e, w) in entities {
            match group.iter_mut().find(|(x, _)| x.name == e.name) {
                Some(g) => g.1 = g.1.min(*w),
                None => group.push((*e, *w)),
            }
        }
        group.sort_by_key(|(e, _)| e.name);
        Ok(CdcRound {
            queue: if group.is_empty() {
                Vec::new()
            } else {
                vec![group]
            },
            flying: Vec::new(),
            calls: 0,
        })
    }

    /// The calls that may go now (every group waiting), each to be sent once.
    pub fn ready(&mut self) -> Result<Vec<CdcCall>, QboError> {
        let mut out = Vec::new();
        for group in std::mem::take(&mut self.queue) {
            let names: Vec<&str> = group.iter().map(|(e, _)| e.name).collect();
            let since = group
                .iter()
                .map(|(_, w)| *w)
                .min()
                .expect("a group is never empty");
            let call = CdcCall::new(&names, since)?;
            self.flying.push((call.clone(), group));
            self.calls += 1;
            out.push(call);
        }
        Ok(out)
    }

    /// Feeds `answer` to `call` (from [`CdcRound::ready`]), which took `round_trip` from sending
    /// to the end of its answer; returns what it settles. The caller applies the answer's records
    /// and tombstones whatever it settles.
    pub fn accept(
        &mut self,
        call: &CdcCall,
        answer: &CdcAnswer,
        round_trip: TimeDelta,
    ) -> Result<Vec<Settled>, QboError> {
        let at = self
            .flying
            .iter()
            .position(|(c, _)| c == call)
            .ok_or_else(|| {
                QboError::InvalidParameter(
                    "a CDC answer for a call that was not asked for, or answered twice".into(),
                )
            })?;
        let (_, group) = self.flying.swap_remove(at);
        if !answer.capped() {
            let watermark = next_watermark(answer.time, round_trip, WATERMARK_MARGIN);
            return Ok(group
                .iter()
                .map(|(entity, _)| Settled::Complete { entity, watermark })
                .collect());
        }
        if group.len() == 1 {
            let (entity, since) = group[0];
            return Ok(vec![Settled::Capped { entity, since }]);
        }
        let mut first = group;
        let second = first.split_off(first.len() / 2);
        self.queue.push(first);
        self.queue.push(second);
        Ok(Vec::new())
    }

    /// Gives up `call` (asked and not answered): its entities are completed another way, by the
    /// caller.
    pub fn abandon(&mut self, call: &CdcCall) {
        if let Some(at) = self.flying.iter().position(|(c, _)| c == call) {
            self.flying.swap_remove(at);
        }
    }

    /// Every call answered and nothing left to ask.
    pub fn is_done(&self) -> bool {
        self.queue.is_empty() && self.flying.is_empty()
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }
}

#[derive(Deserialize)]
struct CdcEnvelope<'a> {
    #[serde(rename = "CDCResponse", borrow, default)]
    cdc: Option<&'a RawValue>,
    #[serde(rename = "Fault", alias = "fault", borrow, default)]
    fault: Option<&'a RawValue>,
    #[serde(rename = "time", borrow, default)]
    time: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct CdcItem<'a> {
    #[serde(rename = "QueryResponse", borrow, default)]
    query_response: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StatusKeys<'a> {
    #[serde(rename = "status", borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(rename = "Id", borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(rename = "MetaData", borrow, default)]
    meta: Option<MetaKeys<'a>>,
}

/// Parses a 2xx CDC body for `call` (see the module documentation). The parsed records and
/// tombstones may hold at most `cap` bytes, as the body.
pub fn parse_answer(
    body: &[u8],
    tid: Option<String>,
    secret: &str,
    jsonb_payloads: bool,
    call: &CdcCall,
    cap: usize,
) -> Result<CdcAnswer, QboError> {
    let bad = |what: String| unusable(&what, secret, &tid);
    let env: CdcEnvelope<'_> = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "invalid JSON in a {}-byte Change Data Capture response: {e}",
            body.len()
        ))
    })?;
    if env.fault.is_some() {
        return Err(bad(fault_in_ok(body, secret)));
    }
    let time_text = env.time.ok_or_else(|| {
        bad("a Change Data Capture response without its time (the next call starts from QuickBooks' clock)".into())
    })?;
    let time = DateTime::parse_from_rfc3339(&time_text)
        .map_err(|e| {
            bad(format!(
                "a Change Data Capture response's time {:?} is not a timestamp: {e}",
                crate::error::truncate_chars(&time_text, 60)
            ))
        })?
        .with_timezone(&Utc);
    let outer = env
        .cdc
        .ok_or_else(|| bad("no CDCResponse in the answer".into()))?;
    let Records(items) = serde_json::from_str(outer.get())
        .map_err(|e| bad(format!("CDCResponse is not a list: {e}")))?;
    let mut changes: Vec<EntityChanges> = call
        .entities()
        .map(|entity| EntityChanges {
            entity,
            records: Vec::new(),
            deleted: Vec::new(),
        })
        .collect();
    let mut held = 0usize;
    for item in items {
        let item: CdcItem<'_> = serde_json::from_str(item.get())
            .map_err(|e| bad(format!("a CDCResponse item is not an object: {e}")))?;
        let Some(qr) = item.query_response else {
            continue;
        };
        let Records(responses) = serde_json::from_str(qr.get())
            .map_err(|e| bad(format!("CDCResponse.QueryResponse is not a list: {e}")))?;
        for response in responses {
            let Members(members) = serde_json::from_str(response.get()).map_err(|e| {
                bad(format!(
                    "a CDCResponse.QueryResponse item is not an object: {e}"
                ))
            })?;
            for (key, list) in members {
                if matches!(key.as_str(), "startPosition" | "maxResults" | "totalCount")
                    || !list.get().starts_with('[')
                {
                    continue;
                }
                let entity = call.asked(&key).ok_or_else(|| {
                    bad(format!(
                        "Change Data Capture answered with {} records, which the call did not ask for",
                        crate::error::truncate_chars(&key, 60)
                    ))
                })?;
                let slot = changes
                    .iter_mut()
                    .find(|c| c.entity.name == entity.name)
                    .expect("every entity asked for has its changes");
                let Records(objects) = serde_json::from_str(list.get()).map_err(|e| {
                    bad(format!(
                        "CDCResponse.QueryResponse.{key} is not a list of records: {e}"
                    ))
                })?;
                for object in objects {
                    let keys: StatusKeys<'_> = serde_json::from_str(object.get()).map_err(|e| {
                        bad(format!(
                            "a {key} object of a Change Data Capture answer is not a record: {e}"
                        ))
                    })?;
                    if keys.status.as_deref() == Some("Deleted") {
                        let t = tombstone(&keys).map_err(|m| bad(format!("{key}: {m}")))?;
                        held += crate::budget::RECORD_OVERHEAD + t.id.len();
                        slot.deleted.push(t);
                    } else {
                        let rec =
                            RawRecord::from_page(object, jsonb_payloads).map_err(|e| match e {
                                QboError::BadResponse(m) => bad(format!("{key}: {m}")),
                                other => other,
                            })?;
                        held += rec.held_bytes();
                        slot.records.push(rec);
                    }
                    if held > cap {
                        return Err(QboError::ResponseTooLarge {
                            limit: cap,
                            parsed: true,
                            intuit_tid: tid,
                        });
                    }
                }
            }
        }
    }
    Ok(CdcAnswer {
        time,
        changes,
        intuit_tid: tid,
        body_bytes: body.len(),
    })
}

fn tombstone(keys: &StatusKeys<'_>) -> Result<Tombstone, String> {
    let id = keys
        .id
        .and_then(scalar_text)
        .filter(|s| !s.is_empty())
        .ok_or("a deleted record has no Id")?;
    let lut = keys
        .meta
        .as_ref()
        .and_then(|m| m.last_updated.as_deref())
        .ok_or_else(|| format!("deleted record Id {id} has no MetaData.LastUpdatedTime"))?;
    let deleted_at = DateTime::parse_from_rfc3339(lut)
        .map_err(|e| {
            format!(
                "deleted record Id {id} has an invalid MetaData.LastUpdatedTime {:?}: {e}",
                crate::error::truncate_chars(lut, 60)
            )
        })?
        .with_timezone(&Utc);
    Ok(Tombstone { id, deleted_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::tests::sample;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn parse(body: &str, call: &CdcCall) -> Result<CdcAnswer, QboError> {
        parse_answer(body.as_bytes(), None, "tok-secret", false, call, 1 << 20)
    }

    #[test]
    fn a_call_names_its_entities_once_in_catalog_order_and_its_start_in_whole_seconds() {
        let since = at("2026-12-01T10:00:07.900Z");
        let c = CdcCall::new(&["Invoice", "Customer", "Invoice"], since).unwrap();
        assert_eq!(
            c.path_and_query(75),
            "cdc?entities=Customer,Invoice&changedSince=2026-12-01T10%3A00%3A07%2B00%3A00&minorversion=75"
        );
        assert_eq!(c.since(), at("2026-12-01T10:00:07Z"));
        let names: Vec<&str> = c.entities().map(|e| e.name).collect();
        assert_eq!(names, ["Customer", "Invoice"]);
    }

    #[test]
    fn a_call_refuses_an_entity_cdc_does_not_serve_or_that_does_not_exist() {
        let since = at("2026-12-01T10:00:00Z");
        let e = CdcCall::new(&["Invoice", "TimeActivity"], since).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Change Data Capture does not serve TimeActivity; QuickBooks serves TaxCode, TaxRate, TimeActivity only through queries"
        );
        let e = CdcCall::new(&["invoice"], since).unwrap_err();
        assert!(e.to_string().contains("did you mean \"Invoice\"?"), "{e}");
        assert!(CdcCall::new(&[], since).is_err());
    }

    #[test]
    fn the_recorded_answer_parses_into_records_of_the_entity_asked_for() {
        let body = String::from_utf8(sample("qbo_api/vcr/cdc/basic__0.json")).unwrap();
        let call = CdcCall::new(&["Estimate"], at("2020-09-01T00:00:00Z")).unwrap();
        let a = parse(&body, &call).unwrap();
        assert_eq!(a.time, at("2020-09-29T15:02:53.512Z"));
        assert_eq!(a.changes.len(), 1);
        assert_eq!(a.changes[0].entity.name, "Estimate");
        assert!(!a.changes[0].records.is_empty());
        assert!(a.changes[0].deleted.is_empty());
        let first = &a.changes[0].records[0];
        assert_eq!(first.id, "48");
        assert_eq!(first.last_updated, at("2015-10-07T18:43:20Z"));
        // the record is kept byte for byte, as a query page's
        assert!(
            first.text().unwrap().contains("\"Amount\": 300.0")
                || first.text().unwrap().contains("\"Amount\":300.0")
        );
        assert!(!a.capped());
    }

    #[test]
    fn tombstones_are_told_apart_from_records_and_every_entity_asked_for_is_answered() {
        let call =
            CdcCall::new(&["Invoice", "Customer", "Bill"], at("2026-12-01T00:00:00Z")).unwrap();
        let body = r#"{"CDCResponse":[{"QueryResponse":[
            {"Invoice":[
                {"domain":"QBO","Id":"7","SyncToken":"3","MetaData":{"CreateTime":"2026-11-01T00:00:00Z","LastUpdatedTime":"2026-12-02T08:00:00-08:00"},"TotalAmt":12.30},
                {"domain":"QBO","status":"Deleted","Id":"65","MetaData":{"LastUpdatedTime":"2026-12-03T07:34:31-08:00"}}
             ],"startPosition":1,"maxResults":2},
            {"Customer":[{"Id":"5","SyncToken":"0","Active":false,"MetaData":{"LastUpdatedTime":"2026-12-02T00:00:00Z"}}]},
            {}
        ]}],"time":"2026-12-04T10:00:00.250-08:00"}"#;
        let a = parse(body, &call).unwrap();
        let names: Vec<&str> = a.changes.iter().map(|c| c.entity.name).collect();
        assert_eq!(names, ["Bill", "Customer", "Invoice"]);
        assert!(a.changes[0].records.is_empty() && a.changes[0].deleted.is_empty());
        assert_eq!(a.changes[1].records.len(), 1);
        let inv = &a.changes[2];
        assert_eq!(inv.records.len(), 1);
        assert_eq!(inv.records[0].sync_token, 3);
        assert!(inv.records[0]
            .text()
            .unwrap()
            .contains("\"TotalAmt\":12.30"));
        assert_eq!(
            inv.deleted,
            vec![Tombstone {
                id: "65".into(),
                deleted_at: at("2026-12-03T15:34:31Z")
            }]
        );
        assert_eq!(a.objects(), 3);
        assert_eq!(
            a.time,
            Utc.with_ymd_and_hms(2026, 12, 4, 18, 0, 0).unwrap() + TimeDelta::milliseconds(250)
        );
    }

    #[test]
    fn an_answer_at_the_cap_is_capped() {
        let call = CdcCall::new(&["Invoice"], at("2026-12-01T00:00:00Z")).unwrap();
        let objs: Vec<String> = (1..=MAX_OBJECTS)
            .map(|i| format!(r#"{{"status":"Deleted","Id":"{i}","MetaData":{{"LastUpdatedTime":"2026-12-02T00:00:00Z"}}}}"#))
            .collect();
        let body = format!(
            r#"{{"CDCResponse":[{{"QueryResponse":[{{"Invoice":[{}]}}]}}],"time":"2026-12-04T00:00:00Z"}}"#,
            objs.join(",")
        );
        let a = parse(&body, &call).unwrap();
        assert_eq!(a.objects(), MAX_OBJECTS);
        assert!(a.capped());
    }

    #[test]
    fn an_answer_is_refused_with_a_reason_when_it_cannot_be_trusted() {
        let call = CdcCall::new(&["Invoice"], at("2026-12-01T00:00:00Z")).unwrap();
        let cases = [
            (
                r#"{"CDCResponse":[{"QueryResponse":[{"Customer":[]}]}],"time":"2026-12-04T00:00:00Z"}"#,
                "unusable response from QuickBooks: Change Data Capture answered with Customer records, which the call did not ask for",
            ),
            (
                r#"{"CDCResponse":[{"QueryResponse":[]}]}"#,
                "unusable response from QuickBooks: a Change Data Capture response without its time (the next call starts from QuickBooks' clock)",
            ),
            (
                r#"{"time":"2026-12-04T00:00:00Z"}"#,
                "unusable response from QuickBooks: no CDCResponse in the answer",
            ),
            (
                r#"{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"status":"Deleted","MetaData":{"LastUpdatedTime":"2026-12-02T00:00:00Z"}}]}]}],"time":"2026-12-04T00:00:00Z"}"#,
                "unusable response from QuickBooks: Invoice: a deleted record has no Id",
            ),
            (
                r#"{"CDCResponse":[{"QueryResponse":[{"Invoice":[{"Id":"1","MetaData":{"LastUpdatedTime":"2026-12-02T00:00:00Z"}}]}]}],"time":"2026-12-04T00:00:00Z"}"#,
                "unusable response from QuickBooks: Invoice: record Id 1 has no SyncToken",
            ),
        ];
        for (body, want) in cases {
            let e = parse(body, &call).unwrap_err();
            assert_eq!(e.to_string(), want, "{body}");
        }
        // the access token never comes back in an error, whatever the answer quotes
        let e = parse(
            r#"{"CDCResponse":[{"QueryResponse":[{"tok-secret":[]}]}],"time":"2026-12-04T00:00:00Z"}"#,
            &call,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("tok-secret"), "{e}");
    }

    #[test]
    fn the_records_an_answer_holds_are_bounded() {
        let call = CdcCall::new(&["Invoice"], at("2026-12-01T00:00:00Z")).unwrap();
        let objs: Vec<String> = (1..=50)
            .map(|i| format!(r#"{{"Id":"{i}","SyncToken":"0","MetaData":{{"LastUpdatedTime":"2026-12-02T00:00:00Z"}},"Memo":"{}"}}"#, "x".repeat(200)))
            .collect();
        let body = format!(
            r#"{{"CDCResponse":[{{"QueryResponse":[{{"Invoice":[{}]}}]}}],"time":"2026-12-04T00:00:00Z"}}"#,
            objs.join(",")
        );
        let e = parse_answer(body.as_bytes(), None, "s", false, &call, 4096).unwrap_err();
        assert!(
            matches!(
                e,
                QboError::ResponseTooLarge {
                    limit: 4096,
                    parsed: true,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(parse_answer(body.as_bytes(), None, "s", false, &call, 1 << 20).is_ok());
    }

    #[test]
    fn the_next_call_starts_from_qbos_clock_less_the_round_trip_and_the_margin() {
        let t = at("2026-12-04T10:00:00.250Z");
        assert_eq!(
            next_watermark(t, TimeDelta::milliseconds(1500), TimeDelta::seconds(60)),
            at("2026-12-04T09:58:58Z")
        );
        // a negative round trip (a clock step) never moves the watermark forward
        assert_eq!(
            next_watermark(t, TimeDelta::seconds(-5), TimeDelta::zero()),
            at("2026-12-04T10:00:00Z")
        );
    }

    fn entity(name: &str) -> &'static Entity {
        lookup(name).unwrap()
    }

    /// An answer to `call` holding `n` deleted objects per entity, at `time`.
    fn answer(call: &CdcCall, n: &[usize], time: &str) -> CdcAnswer {
        let changes = call
            .entities()
            .zip(n)
            .map(|(entity, &k)| EntityChanges {
                entity,
                records: Vec::new(),
                deleted: (0..k)
                    .map(|i| Tombstone {
                        id: i.to_string(),
                        deleted_at: at(time),
                    })
                    .collect(),
            })
            .collect();
        CdcAnswer {
            time: at(time),
            changes,
            intuit_tid: None,
            body_bytes: 0,
        }
    }

    #[test]
    fn routes_follow_the_watermark_the_entity_and_cdcs_reach() {
        let now = at("2026-12-05T12:00:00Z");
        let inv = entity("Invoice");
        assert_eq!(route(inv, None, now), Route::FirstSync);
        assert_eq!(route(inv, Some(now - TimeDelta::hours(1)), now), Route::Cdc);
        assert_eq!(
            route(inv, Some(now - TimeDelta::days(30)), now),
            Route::TooOld
        );
        assert_eq!(
            route(entity("TimeActivity"), Some(now - TimeDelta::hours(1)), now),
            Route::Unsupported
        );
        assert_eq!(route(entity("TimeActivity"), None, now), Route::FirstSync);
    }

    #[test]
    fn a_round_under_the_cap_is_one_call_from_the_earliest_watermark() {
        let w1 = at("2026-12-05T10:00:00Z");
        let w2 = at("2026-12-05T09:00:00Z");
        let mut r = CdcRound::new(&[
            (entity("Invoice"), w1),
            (entity("Customer"), w2),
            (entity("Bill"), w1),
        ])
        .unwrap();
        let calls = r.ready().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].since(), w2);
        assert!(r.ready().unwrap().is_empty(), "a call goes once");
        let a = answer(&calls[0], &[3, 0, 996], "2026-12-05T11:00:00.400Z");
        let settled = r
            .accept(&calls[0], &a, TimeDelta::milliseconds(900))
            .unwrap();
        let wm = at("2026-12-05T10:57:59Z");
        assert_eq!(
            settled,
            vec![
                Settled::Complete {
                    entity: entity("Bill"),
                    watermark: wm
                },
                Settled::Complete {
                    entity: entity("Customer"),
                    watermark: wm
                },
                Settled::Complete {
                    entity: entity("Invoice"),
                    watermark: wm
                },
            ]
        );
        assert!(r.is_done());
        assert_eq!(r.calls(), 1);
        // the same answer cannot be fed twice
        assert!(r.accept(&calls[0], &a, TimeDelta::zero()).is_err());
    }

    #[test]
    fn a_capped_answer_asks_again_in_halves_until_one_entity_fills_an_answer_alone() {
        let w = at("2026-12-05T10:00:00Z");
        let names = ["Bill", "Customer", "Invoice", "Item"];
        let list: Vec<(&'static Entity, DateTime<Utc>)> =
            names.iter().map(|n| (entity(n), w)).collect();
        let mut r = CdcRound::new(&list).unwrap();
        let c = r.ready().unwrap();
        // 1000 objects over four entities: every one suspect, nothing settled yet
        let settled = r
            .accept(
                &c[0],
                &answer(&c[0], &[100, 100, 700, 100], "2026-12-05T11:00:00Z"),
                TimeDelta::zero(),
            )
            .unwrap();
        assert!(settled.is_empty());
        let halves = r.ready().unwrap();
        let asked: Vec<Vec<&str>> = halves
            .iter()
            .map(|c| c.entities().map(|e| e.name).collect())
            .collect();
        assert_eq!(asked, [vec!["Bill", "Customer"], vec!["Invoice", "Item"]]);
        assert!(halves.iter().all(|c| c.since() == w));
        // Bill and Customer fit: settled; Invoice and Item fill it again: halves again
        let s1 = r
            .accept(
                &halves[0],
                &answer(&halves[0], &[150, 120], "2026-12-05T11:00:05Z"),
                TimeDelta::zero(),
            )
            .unwrap();
        assert_eq!(s1.len(), 2);
        assert!(r
            .accept(
                &halves[1],
                &answer(&halves[1], &[990, 10], "2026-12-05T11:00:05Z"),
                TimeDelta::zero()
            )
            .unwrap()
            .is_empty());
        let last = r.ready().unwrap();
        assert_eq!(last.len(), 2);
        let inv = r
            .accept(
                &last[0],
                &answer(&last[0], &[1000], "2026-12-05T11:00:09Z"),
                TimeDelta::zero(),
            )
            .unwrap();
        assert_eq!(
            inv,
            vec![Settled::Capped {
                entity: entity("Invoice"),
                since: w
            }]
        );
        let item = r
            .accept(
                &last[1],
                &answer(&last[1], &[12], "2026-12-05T11:00:09Z"),
                TimeDelta::zero(),
            )
            .unwrap();
        assert!(matches!(item[..], [Settled::Complete { .. }]));
        assert!(r.is_done());
        assert_eq!(r.calls(), 5);
    }

    #[test]
    fn a_round_refuses_an_entity_cdc_does_not_serve() {
        let e = CdcRound::new(&[(entity("TaxRate"), at("2026-12-05T10:00:00Z"))]).unwrap_err();
        assert_eq!(e.to_string(), "Change Data Capture does not serve TaxRate");
        let mut empty = CdcRound::new(&[]).unwrap();
        assert!(empty.ready().unwrap().is_empty());
        assert!(empty.is_done());
    }

    #[test]
    fn a_watermark_is_reachable_up_to_thirty_days_less_the_safety() {
        let now = at("2026-12-31T00:00:00Z");
        assert!(reachable(
            now - MAX_AGE + AGE_SAFETY + TimeDelta::seconds(1),
            now
        ));
        assert!(!reachable(now - MAX_AGE + AGE_SAFETY, now));
        assert!(!reachable(now - TimeDelta::days(31), now));
        assert!(reachable(now, now));
    }

    #[test]
    fn an_abandoned_call_leaves_nothing_to_ask() {
        let inv = lookup("Invoice").unwrap();
        let bill = lookup("Bill").unwrap();
        let t = "2026-12-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let mut round = CdcRound::new(&[(inv, t), (bill, t)]).unwrap();
        let calls = round.ready().unwrap();
        assert_eq!(calls.len(), 1);
        assert!(!round.is_done());
        round.abandon(&calls[0]);
        assert!(round.is_done());
        assert!(round.ready().unwrap().is_empty());
        assert_eq!(round.calls(), 1);
    }
}
