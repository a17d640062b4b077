//! The control API under `/__emulator/`: ground truth, stats, request log, faults, mutations,
//! barrier (hold / held / release), QuickBooks' clock, tokens and reset.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::entity::Entity;
use crate::faults::FaultSpec;
use crate::state::{App, Changed, Mutation};
use crate::util::{render_time_ms, render_ts};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/__emulator/truth/{realm}/{entity}", get(truth))
        .route("/__emulator/stats", get(stats))
        .route("/__emulator/requests", get(requests))
        .route("/__emulator/faults", post(set_faults).get(get_faults))
        .route("/__emulator/mutate", post(mutate))
        .route("/__emulator/reset", post(reset))
        .route("/__emulator/hold", post(hold))
        .route("/__emulator/held", get(held))
        .route("/__emulator/release", post(release))
        .route("/__emulator/tokens", get(tokens))
        .route("/__emulator/fill_window", post(fill_window))
        .route("/__emulator/clock", post(set_clock).get(get_clock))
}

fn bad(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response()
}

async fn truth(
    State(app): State<Arc<App>>,
    Path((realm, entity)): Path<(String, String)>,
) -> Response {
    let Some(e) = Entity::from_name(&entity) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("unknown entity {entity:?}")})),
        )
            .into_response();
    };
    let data = app.data.read().unwrap();
    let Some(r) = data.realms.get(&realm) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("unknown realm {realm:?}")})),
        )
            .into_response();
    };
    let rows: Vec<Changed> = r
        .table(e)
        .recs
        .iter()
        .map(|x| Changed {
            id: x.id.to_string(),
            sync_token: x.sync.to_string(),
            last_updated_time: render_ts(x.lut, &r.offset),
            active: x.active,
            deleted: x.deleted,
        })
        .collect();
    Json(rows).into_response()
}

async fn stats(State(app): State<Arc<App>>) -> Response {
    let mut v = serde_json::to_value(&*app.stats.lock().unwrap()).unwrap_or(Value::Null);
    v["max_concurrent_seen"] = json!(app.throttle.max_concurrent_seen());
    v["in_flight"] = json!(app.throttle.in_flight());
    v["access_tokens_issued"] = json!(app.tokens.lock().unwrap().issued());
    Json(v).into_response()
}

#[derive(Deserialize)]
struct Realm {
    realm: String,
}

/// Fills a realm's rate window as another app would have (`{"realm": "..."}`): every request of
/// the realm is answered 429 for a whole window (`--rate-window-ms`).
async fn fill_window(State(app): State<Arc<App>>, Json(b): Json<Realm>) -> Response {
    if !app.cfg.realms.contains(&b.realm) {
        return bad(format!("unknown realm {:?}", b.realm));
    }
    let added = app.throttle.fill_at(&b.realm, std::time::Instant::now());
    Json(json!({"realm": b.realm, "added": added, "window_ms": app.cfg.rate_window_ms}))
        .into_response()
}

#[derive(Deserialize)]
struct Since {
    since: Option<u64>,
}

async fn requests(State(app): State<Arc<App>>, Query(q): Query<Since>) -> Response {
    Json(app.log_since(q.since.unwrap_or(0))).into_response()
}

#[derive(Deserialize)]
struct SpecBody {
    spec: String,
}

async fn set_faults(State(app): State<Arc<App>>, Json(b): Json<SpecBody>) -> Response {
    match FaultSpec::parse(&b.spec) {
        Ok(spec) => {
            let n = spec.rules.len();
            app.set_faults(spec);
            Json(json!({"spec": b.spec, "rules": n})).into_response()
        }
        Err(e) => bad(e),
    }
}

async fn get_faults(State(app): State<Arc<App>>) -> Response {
    let f = app.faults.read().unwrap();
    Json(json!({"spec": f.text, "rules": f.rules.len()})).into_response()
}

#[derive(Deserialize)]
struct Schedule {
    every_ms: u64,
    count: Option<u64>,
    #[serde(flatten)]
    mutation: Mutation,
}

async fn mutate(State(app): State<Arc<App>>, Json(v): Json<Value>) -> Response {
    if let Some(s) = v.get("schedule") {
        if s.is_null() {
            let stopped = app.stop_mutator();
            return Json(json!({"scheduled": false, "stopped": stopped})).into_response();
        }
        let s: Schedule = match serde_json::from_value(s.clone()) {
            Ok(s) => s,
            Err(e) => return bad(format!("bad schedule: {e}")),
        };
        let mut m = s.mutation;
        if m.ids.is_none() && m.count.is_none() {
            m.count = Some(1);
        }
        if let Err(e) = validate(&app, &m) {
            return bad(e);
        }
        // `count` of the schedule is the number of ticks; each tick changes `per_tick` records.
        let per_tick = v["schedule"]["per_tick"].as_u64().unwrap_or(1) as usize;
        m.count = Some(per_tick);
        app.start_mutator(s.every_ms, s.count, m);
        return Json(json!({"scheduled": true})).into_response();
    }
    let m: Mutation = match serde_json::from_value(v) {
        Ok(m) => m,
        Err(e) => return bad(format!("bad mutation: {e}")),
    };
    match app.mutate(&m) {
        Ok(changed) => Json(json!({ "changed": changed })).into_response(),
        Err(e) => bad(e),
    }
}

fn validate(app: &App, m: &Mutation) -> Result<(), String> {
    app.check_mutation(m)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    offset_seconds: i64,
}

fn clock_json(app: &App) -> Value {
    json!({
        "now": render_time_ms(app.qbo_now(), &app.cfg.offset),
        "offset_seconds": app.clock_offset(),
    })
}

/// `POST /__emulator/clock {"offset_seconds": N}`: QuickBooks' clock becomes the real UTC clock
/// plus N seconds (N may be negative; 0 resets). Answers as `GET`.
async fn set_clock(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    let b: ClockBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return bad(format!(
            "bad clock: {e}; expected {{\"offset_seconds\": N}} (N whole seconds, may be negative)"
        ))
        }
    };
    match app.set_clock_offset(b.offset_seconds) {
        Ok(()) => Json(clock_json(&app)).into_response(),
        Err(e) => bad(e),
    }
}

/// `GET /__emulator/clock`: `{"now": QuickBooks' now in the company offset, "offset_seconds"}`.
async fn get_clock(State(app): State<Arc<App>>) -> Response {
    Json(clock_json(&app)).into_response()
}

async fn reset(State(app): State<Arc<App>>) -> Response {
    app.reset();
    Json(json!({"reset": true})).into_response()
}

#[derive(Deserialize)]
struct HoldBody {
    nth: u64,
    #[serde(rename = "match")]
    pattern: Option<String>,
}

async fn hold(State(app): State<Arc<App>>, Json(b): Json<HoldBody>) -> Response {
    app.arm_hold(b.nth, b.pattern.clone());
    Json(json!({"armed": true, "nth": b.nth.max(1), "match": b.pattern})).into_response()
}

async fn held(State(app): State<Arc<App>>, Query(q): Query<HashMap<String, u64>>) -> Response {
    let timeout = Duration::from_millis(q.get("timeout_ms").copied().unwrap_or(10_000));
    let mut rx = app.subscribe_held();
    let got = tokio::time::timeout(timeout, rx.wait_for(|h| h.is_some())).await;
    match got {
        Ok(Ok(h)) => {
            let h = h.clone().expect("waited for Some");
            Json(json!({"held": true, "seq": h.seq, "query": h.query})).into_response()
        }
        _ => Json(json!({"held": false})).into_response(),
    }
}

async fn release(State(app): State<Arc<App>>) -> Response {
    let released = app.release();
    Json(json!({"released": released})).into_response()
}

async fn tokens(State(app): State<Arc<App>>) -> Response {
    let t = app.tokens.lock().unwrap();
    Json(json!({
        "refresh_token": t.current_refresh(),
        "access_tokens_valid": t.valid_access_count(),
        "access_tokens_issued": t.issued(),
    }))
    .into_response()
}
