//! Executes a parsed query against one realm's data.
//!
//! Rows are ordered by the ORDERBY field (by Id when absent). Records sharing a sort key (ties)
//! come in an order shuffled per request, seeded by (seed, query text, n-th identical request),
//! like real QBO which promises no order among ties. `ORDERBY MetaData.LastUpdatedTime` uses a
//! sorted index and skips whole tie groups before STARTPOSITION, so deep pages stay cheap.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{name_of, Realm, Rec};
use crate::entity::Entity;
use crate::query::{like, Cond, Field, Op, Query, Value};
use crate::util::StableHash;

/// The result of a query.
#[derive(Debug)]
pub enum Outcome {
    Count(usize),
    Page(Vec<Arc<str>>),
}

fn field_value(e: Entity, rec: &Rec, f: Field, realm: &Realm) -> Value {
    match f {
        Field::CreateTime => Value::Instant(rec.create * 1000),
        Field::LastUpdatedTime => Value::Instant(rec.lut * 1000),
        Field::Id => Value::Int(i64::from(rec.id)),
        Field::Active => Value::Bool(rec.active),
        Field::TxnDate => Value::Date(rec.txn_day(&realm.offset)),
        Field::DisplayName | Field::Name => Value::Str(name_of(e, rec.id)),
    }
}

fn eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x.to_lowercase() == y.to_lowercase(),
        _ => a == b,
    }
}

fn cond_matches(v: &Value, c: &Cond) -> bool {
    let first = &c.values[0];
    match c.op {
        Op::Eq | Op::In => c.values.iter().any(|x| eq(v, x)),
        Op::Ne => !c.values.iter().any(|x| eq(v, x)),
        Op::Lt => v < first,
        Op::Le => v <= first,
        Op::Gt => v > first,
        Op::Ge => v >= first,
        Op::Like => match (v, first) {
            (Value::Str(s), Value::Str(p)) => like(p, s),
            _ => false,
        },
    }
}

/// Whether a live record satisfies the query's conditions and the name-list Active rule.
pub fn matches(realm: &Realm, q: &Query, rec: &Rec) -> bool {
    if rec.deleted {
        return false;
    }
    if q.entity.is_name_list() && !q.filters_active() && !rec.active {
        return false;
    }
    q.conds
        .iter()
        .all(|c| cond_matches(&field_value(q.entity, rec, c.field, realm), c))
}

/// Runs a query. `shuffle` seeds the order of ties.
pub fn run(realm: &Realm, q: &Query, shuffle: StableHash) -> Outcome {
    let table = realm.table(q.entity);
    let start0 = q.start - 1;
    let ids: Vec<u32> = match q.order {
        Some((Field::LastUpdatedTime, desc)) => {
            let (lo, hi) = lut_bounds(&table.by_lut, &q.conds);
            let slice = &table.by_lut[lo..hi];
            let live = |&&(lut, id): &&(i64, u32)| -> Option<(i64, u32)> {
                table
                    .get(id)
                    .filter(|r| matches(realm, q, r))
                    .map(|_| (lut, id))
            };
            if q.count {
                return Outcome::Count(slice.iter().filter_map(|x| live(&x)).count());
            }
            if desc {
                window(
                    slice.iter().rev().filter_map(|x| live(&x)),
                    start0,
                    q.max,
                    shuffle,
                )
            } else {
                window(
                    slice.iter().filter_map(|x| live(&x)),
                    start0,
                    q.max,
                    shuffle,
                )
            }
        }
        order => {
            let live = table.recs.iter().filter(|r| matches(realm, q, r));
            if q.count {
                return Outcome::Count(live.count());
            }
            match order {
                None => window(live.map(|r| (r.id, r.id)), start0, q.max, shuffle),
                Some((f, desc)) => {
                    let mut keyed: Vec<(Value, u32)> = live
                        .map(|r| (field_value(q.entity, r, f, realm), r.id))
                        .collect();
                    keyed.sort();
                    if desc {
                        keyed.reverse();
                    }
                    window(keyed.into_iter(), start0, q.max, shuffle)
                }
            }
        }
    };
    Outcome::Page(
        ids.into_iter()
            .filter_map(|id| table.get(id))
            .map(|r| realm.payload(q.entity, r))
            .collect(),
    )
}

/// Narrows the LastUpdatedTime index to the range the conditions allow.
fn lut_bounds(idx: &[(i64, u32)], conds: &[Cond]) -> (usize, usize) {
    let (mut lo, mut hi) = (0, idx.len());
    for c in conds.iter().filter(|c| c.field == Field::LastUpdatedTime) {
        let Value::Instant(v) = c.values[0] else {
            continue;
        };
        let ge = |strict: bool| {
            idx.partition_point(|(l, _)| if strict { l * 1000 <= v } else { l * 1000 < v })
        };
        let le = |strict: bool| {
            idx.partition_point(|(l, _)| if strict { l * 1000 < v } else { l * 1000 <= v })
        };
        match c.op {
            Op::Ge => lo = lo.max(ge(false)),
            Op::Gt => lo = lo.max(ge(true)),
            Op::Le => hi = hi.min(le(false)),
            Op::Lt => hi = hi.min(le(true)),
            Op::Eq if c.values.len() == 1 => {
                lo = lo.max(ge(false));
                hi = hi.min(le(false));
            }
            _ => {}
        }
    }
    (lo, hi.max(lo))
}

/// Takes rows `[start0, start0 + max)` of a key-sorted stream, shuffling each group of equal keys.
fn window<K: PartialEq>(
    items: impl Iterator<Item = (K, u32)>,
    start0: usize,
    max: usize,
    shuffle: StableHash,
) -> Vec<u32> {
    let mut out = Vec::with_capacity(max.min(1000));
    if max == 0 {
        return out;
    }
    let mut pos = 0usize;
    let mut grp: Vec<u32> = Vec::new();
    let mut key: Option<K> = None;
    let flush = |grp: &mut Vec<u32>, pos: &mut usize, out: &mut Vec<u32>| {
        let len = grp.len();
        if *pos + len > start0 && out.len() < max {
            if len > 1 {
                let mut rng = ChaCha8Rng::seed_from_u64(shuffle.u64(*pos as u64).finish());
                grp.shuffle(&mut rng);
            }
            let from = start0.saturating_sub(*pos);
            let take = (max - out.len()).min(len - from);
            out.extend_from_slice(&grp[from..from + take]);
        }
        *pos += len;
        grp.clear();
    };
    for (k, id) in items {
        if key.as_ref() != Some(&k) {
            flush(&mut grp, &mut pos, &mut out);
            if out.len() >= max {
                return out;
            }
            key = Some(k);
        }
        grp.push(id);
    }
    flush(&mut grp, &mut pos, &mut out);
    out
}

/// The `windowlie=n` fault: a `count(*)` not pinned to one second answers `n`; pages and pinned
/// counts are left alone. Returns the answer and whether the lie changed it.
pub fn window_lie(q: &Query, outcome: Outcome, n: u64) -> (Outcome, bool) {
    let pinned = q
        .conds
        .iter()
        .any(|c| c.field == Field::LastUpdatedTime && c.op == Op::Eq);
    match outcome {
        Outcome::Count(real) if !pinned => (Outcome::Count(n as usize), real as u64 != n),
        other => (other, false),
    }
}

/// First Id of the records a `countlie` makes up (real Ids are 1..N per table).
pub const LIE_ID_BASE: i64 = 900_000_000_000;

/// The `countlie=n` fault: a query pinned to one second (`MetaData.LastUpdatedTime = 'T'`)
/// sees that second as holding `n` records, the real ones first. `count(*)` answers `n`, or,
/// with `Id IN (...)`, the real matches plus the listed made-up Ids; a page (STARTPOSITION s,
/// MAXRESULTS m) gets, after the real records it holds, made-up ones for the positions past the
/// real records up to `n`: Id `LIE_ID_BASE + position`, SyncToken 0, LastUpdatedTime T. So
/// every page past the real records brings Ids never seen, as long as the lie goes. Other
/// queries are left alone. Returns the answer and whether the lie changed it.
pub fn count_lie(realm: &Realm, q: &Query, outcome: Outcome, n: u64) -> (Outcome, bool) {
    let pinned = q
        .conds
        .iter()
        .find_map(|c| match (c.field, c.op, &c.values[..]) {
            (Field::LastUpdatedTime, Op::Eq, [Value::Instant(ms)]) => Some(*ms),
            _ => None,
        });
    let Some(ms) = pinned else {
        return (outcome, false);
    };
    let id_cond = q.conds.iter().find(|c| c.field == Field::Id);
    // the second's real records, whatever the Id condition
    let mut all = q.clone();
    all.count = true;
    all.conds.retain(|c| c.field != Field::Id);
    let real = match run(realm, &all, StableHash::new(0)) {
        Outcome::Count(r) => r as u64,
        Outcome::Page(_) => 0,
    };
    let made_up = |id: i64| {
        let pos = id - LIE_ID_BASE;
        pos > 0 && (pos as u64) > real && (pos as u64) <= n
    };
    match (outcome, id_cond) {
        (Outcome::Count(_), None) => (Outcome::Count(n as usize), true),
        (Outcome::Count(c), Some(cond)) => {
            let listed = cond
                .values
                .iter()
                .filter(|v| matches!(v, Value::Int(id) if made_up(*id)))
                .count();
            (Outcome::Count(c + listed), listed > 0)
        }
        (Outcome::Page(mut rows), None) => {
            let start = q.start as u64;
            let last = (start + q.max as u64).saturating_sub(1).min(n);
            let first = start.max(real + 1);
            let changed = first <= last;
            if changed {
                let ts = crate::util::render_ts(ms.div_euclid(1000), &realm.offset);
                for pos in first..=last {
                    let id = LIE_ID_BASE + pos as i64;
                    rows.push(
                        format!(
                            "{{\"Id\":\"{id}\",\"SyncToken\":\"0\",\"MetaData\":{{\"CreateTime\":\"{ts}\",\"LastUpdatedTime\":\"{ts}\"}},\"DocNumber\":\"countlie-{pos}\",\"Active\":true,\"domain\":\"QBO\",\"sparse\":false}}"
                        )
                        .into(),
                    );
                }
            }
            (Outcome::Page(rows), changed)
        }
        (other, Some(_)) => (other, false),
    }
}

/// The Ids of one entity's part of a CDC answer: every record changed at or after `since_ms`
/// (deleted ones included), oldest change first.
pub fn cdc_ids(realm: &Realm, e: Entity, since_ms: i64) -> Vec<u32> {
    let table = realm.table(e);
    let lo = table.by_lut.partition_point(|(l, _)| l * 1000 < since_ms);
    table.by_lut[lo..].iter().map(|(_, id)| *id).collect()
}

/// One object of a CDC answer: the full payload, or for a deleted record the minimal tombstone
/// QuickBooks sends (`{"domain":"QBO","status":"Deleted","Id":..,"MetaData":{"LastUpdatedTime":..}}`).
pub fn cdc_object(realm: &Realm, e: Entity, id: u32) -> Arc<str> {
    let r = realm.table(e).get(id).expect("an Id of the table");
    if r.deleted {
        format!(
            "{{\"domain\":\"QBO\",\"status\":\"Deleted\",\"Id\":\"{}\",\"MetaData\":{{\"LastUpdatedTime\":\"{}\"}}}}",
            r.id,
            crate::util::render_ts(r.lut, &realm.offset)
        )
        .into()
    } else {
        realm.payload(e, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Config;
    use crate::data::Dataset;
    use crate::query::parse;

    fn ids(o: Outcome) -> Vec<String> {
        match o {
            Outcome::Page(rows) => rows
                .iter()
                .map(|r| {
                    serde_json::from_str::<serde_json::Value>(r).unwrap()["Id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect(),
            Outcome::Count(_) => panic!("count"),
        }
    }

    #[test]
    fn window_shuffles_ties_only() {
        let items = vec![(1, 1), (2, 2), (2, 3), (2, 4), (2, 5), (3, 6)];
        let all = window(items.clone().into_iter(), 0, 10, StableHash::new(1));
        assert_eq!(all[0], 1);
        assert_eq!(all[5], 6);
        let mut mid = all[1..5].to_vec();
        mid.sort();
        assert_eq!(mid, vec![2, 3, 4, 5]);
        assert_eq!(
            window(items.clone().into_iter(), 2, 2, StableHash::new(1)),
            all[2..4].to_vec()
        );
        assert_eq!(
            window(items.into_iter(), 6, 2, StableHash::new(1)),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn name_list_active_rule_and_count() {
        let cfg = Config::from_args(["--realm", "1"]).unwrap();
        let d = Dataset::generate(&cfg);
        let realm = &d.realms["1"];
        let t = realm.table(Entity::Customer);
        let active = t.recs.iter().filter(|r| r.active).count();
        let q = parse("SELECT count(*) FROM Customer", &cfg.offset).unwrap();
        assert!(matches!(run(realm, &q, StableHash::new(0)), Outcome::Count(n) if n == active));
        let q = parse(
            "SELECT count(*) FROM Customer WHERE Active IN (true,false)",
            &cfg.offset,
        )
        .unwrap();
        assert!(
            matches!(run(realm, &q, StableHash::new(0)), Outcome::Count(n) if n == t.recs.len())
        );
        let q = parse(
            "SELECT count(*) FROM Customer WHERE Active = false",
            &cfg.offset,
        )
        .unwrap();
        assert!(
            matches!(run(realm, &q, StableHash::new(0)), Outcome::Count(n) if n == t.recs.len() - active)
        );
    }

    #[test]
    fn filters_and_orders() {
        let cfg = Config::from_args(["--realm", "1"]).unwrap();
        let d = Dataset::generate(&cfg);
        let realm = &d.realms["1"];
        let q = parse(
            "SELECT * FROM Invoice WHERE Id IN ('3','5') ORDERBY Id DESC",
            &cfg.offset,
        )
        .unwrap();
        assert_eq!(ids(run(realm, &q, StableHash::new(0))), vec!["5", "3"]);
        let q = parse(
            "SELECT * FROM Invoice STARTPOSITION 599 MAXRESULTS 10",
            &cfg.offset,
        )
        .unwrap();
        assert_eq!(ids(run(realm, &q, StableHash::new(0))), vec!["599", "600"]);
        let q = parse(
            "SELECT * FROM Customer WHERE DisplayName = 'café zoë ✓'",
            &cfg.offset,
        )
        .unwrap();
        assert_eq!(
            ids(run(realm, &q, StableHash::new(0))).len(),
            usize::from(realm.table(Entity::Customer).get(4).unwrap().active)
        );
        // LastUpdatedTime range through the index agrees with a scan.
        let t = realm.table(Entity::Invoice);
        let lo = t.by_lut[100].0;
        let hi = t.by_lut[300].0;
        let qs = format!(
            "SELECT count(*) FROM Invoice WHERE MetaData.LastUpdatedTime >= '{}' AND MetaData.LastUpdatedTime < '{}' ORDERBY MetaData.LastUpdatedTime",
            crate::util::render_ts(lo, &cfg.offset),
            crate::util::render_ts(hi, &cfg.offset)
        );
        let q = parse(&qs, &cfg.offset).unwrap();
        let want = t.recs.iter().filter(|r| r.lut >= lo && r.lut < hi).count();
        assert!(matches!(run(realm, &q, StableHash::new(0)), Outcome::Count(n) if n == want));
    }
}
