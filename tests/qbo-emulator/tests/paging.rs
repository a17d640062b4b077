//! Paging every entity to completion and comparing with the ground truth; and showing that the
//! shuffle of ties is real (a STARTPOSITION-only pager across a >page second misses/duplicates).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::Value;

type Row = (String, String, String);

fn row(v: &Value) -> Row {
    (
        v["Id"].as_str().unwrap().to_string(),
        v["SyncToken"].as_str().unwrap().to_string(),
        v["MetaData"]["LastUpdatedTime"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

fn rows(v: &Value, entity: &str) -> Vec<Value> {
    v["QueryResponse"][entity]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A correct pager: a LastUpdatedTime cursor, pages of `ORDERBY MetaData.LastUpdatedTime
/// STARTPOSITION 1 MAXRESULTS n`; when a page is full, its last second is re-read completely in
/// Id order (`WHERE LastUpdatedTime = T ORDERBY Id STARTPOSITION k`), which has no ties.
async fn page_entity(emu: &Emu, tok: &str, entity: &str, page: usize) -> Vec<Row> {
    let active = all_active(entity);
    let mut out = Vec::new();
    let mut cursor = "1970-01-01T00:00:00Z".to_string();
    let mut op = ">=";
    loop {
        let q = format!(
            "SELECT * FROM {entity} WHERE MetaData.LastUpdatedTime {op} '{cursor}'{active} ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS {page}"
        );
        let got = rows(&emu.query(tok, &q).await, entity);
        if got.len() < page {
            out.extend(got.iter().map(row));
            return out;
        }
        let last = got.last().unwrap()["MetaData"]["LastUpdatedTime"]
            .as_str()
            .unwrap()
            .to_string();
        out.extend(
            got.iter()
                .filter(|r| r["MetaData"]["LastUpdatedTime"] != last.as_str())
                .map(row),
        );
        let mut start = 1;
        loop {
            let q = format!(
                "SELECT * FROM {entity} WHERE MetaData.LastUpdatedTime = '{last}'{active} ORDERBY Id STARTPOSITION {start} MAXRESULTS {page}"
            );
            let got = rows(&emu.query(tok, &q).await, entity);
            out.extend(got.iter().map(row));
            if got.len() < page {
                break;
            }
            start += page;
        }
        cursor = last;
        op = ">";
    }
}

fn truth_rows(t: &[Value]) -> Vec<Row> {
    let mut v: Vec<Row> = t
        .iter()
        .filter(|r| r["deleted"] == false)
        .map(|r| {
            (
                r["Id"].as_str().unwrap().to_string(),
                r["SyncToken"].as_str().unwrap().to_string(),
                r["LastUpdatedTime"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn every_entity_pages_to_exactly_the_truth() {
    let emu = start(&["--records", "Invoice=2600", "--rate-limit", "100000"]).await;
    let tok = emu.token().await;
    for realm_entity in ALL_ENTITIES {
        let page = if realm_entity == "Invoice" { 1000 } else { 37 };
        let mut got = page_entity(&emu, &tok, realm_entity, page).await;
        let n = got.len();
        got.sort();
        got.dedup();
        assert_eq!(got.len(), n, "{realm_entity}: duplicates");
        let want = truth_rows(&emu.truth(REALM, realm_entity).await);
        assert_eq!(got, want, "{realm_entity}");
    }
    // Also the trivially stable order: ORDERBY Id (no ties) with plain offsets.
    let mut got = Vec::new();
    let mut start = 1;
    loop {
        let q = format!("SELECT * FROM Customer WHERE Active IN (true,false) ORDERBY Id STARTPOSITION {start} MAXRESULTS 7");
        let page = rows(&emu.query(&tok, &q).await, "Customer");
        got.extend(page.iter().map(row));
        if page.len() < 7 {
            break;
        }
        start += 7;
    }
    got.sort();
    assert_eq!(got, truth_rows(&emu.truth(REALM, "Customer").await));
}

#[tokio::test]
async fn startposition_only_pager_misses_or_duplicates_across_a_big_second() {
    let emu = start(&["--records", "Invoice=2600", "--rate-limit", "100000"]).await;
    let tok = emu.token().await;
    let truth = emu.truth(REALM, "Invoice").await;
    let mut per_sec: BTreeMap<String, usize> = BTreeMap::new();
    for r in &truth {
        *per_sec
            .entry(r["LastUpdatedTime"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(
        *per_sec.values().max().unwrap() > 1000,
        "a second holds more than a page"
    );
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let q = format!("SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime STARTPOSITION {start} MAXRESULTS 1000");
        let page = rows(&emu.query(&tok, &q).await, "Invoice");
        seen.extend(page.iter().map(|r| r["Id"].as_str().unwrap().to_string()));
        if page.len() < 1000 {
            break;
        }
        start += 1000;
    }
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), truth.len(), "same number of rows served");
    assert!(
        distinct.len() < truth.len(),
        "ties were shuffled per request: some rows missed, others repeated"
    );
    // The same request twice sees a different order of ties (n-th identical request), yet the
    // whole run is repeatable.
    let q =
        "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 1000";
    let a: Vec<Value> = rows(&emu.query(&tok, q).await, "Invoice");
    let b: Vec<Value> = rows(&emu.query(&tok, q).await, "Invoice");
    let ids = |v: &[Value]| {
        v.iter()
            .map(|r| r["Id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_ne!(ids(&a), ids(&b));
    emu.control_post("/__emulator/reset", serde_json::json!({}))
        .await;
    let tok = emu.token().await;
    let mut again = Vec::new();
    let mut start = 1;
    loop {
        let q = format!("SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime STARTPOSITION {start} MAXRESULTS 1000");
        let page = rows(&emu.query(&tok, &q).await, "Invoice");
        again.extend(page.iter().map(|r| r["Id"].as_str().unwrap().to_string()));
        if page.len() < 1000 {
            break;
        }
        start += 1000;
    }
    assert_eq!(seen, again, "deterministic run to run");
}
