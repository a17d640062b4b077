//! The emulator's shared state: data, tokens, faults, attempts, stats, request log, barrier and
//! mutations.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::Utc;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::cli::Config;
use crate::data::Dataset;
use crate::entity::Entity;
use crate::faults::{FaultSpec, Rule, Target};
use crate::oauth::Tokens;
use crate::throttle::Throttle;
use crate::util::{render_ts, StableHash};

/// Request-log entries kept (oldest dropped first).
const LOG_CAP: usize = 200_000;

/// One entry of `GET /__emulator/requests`.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub seq: u64,
    pub method: String,
    pub endpoint: &'static str,
    pub realm: Option<String>,
    pub query: Option<String>,
    pub start_position: Option<usize>,
    pub max_results: Option<usize>,
    pub status: u16,
    pub fault: Option<String>,
    pub attempt: u64,
    /// When the request arrived: microseconds since the Unix epoch (tests check rate windows).
    pub at_us: i64,
}

#[derive(Debug, Default)]
struct Attempt {
    count: u64,
    consecutive_faults: u32,
}

/// Counters of `GET /__emulator/stats`.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    pub faults_injected: BTreeMap<String, u64>,
    /// Requests refused by the throttle (any of its limits) with a 429.
    pub throttled_429: u64,
    /// Of which for the per-second limit (`--rate-limit-per-second`).
    pub throttled_per_second: u64,
    pub token_refreshes: u64,
    pub invalid_grant: u64,
    pub invalid_client: u64,
    pub mutations: u64,
}

/// What a held request reports.
#[derive(Debug, Clone, Serialize)]
pub struct HeldInfo {
    pub seq: u64,
    pub query: String,
}

#[derive(Debug, Default)]
struct Hold {
    armed: Option<(u64, Option<String>)>,
    release: Option<oneshot::Sender<()>>,
}

/// A record changed by a mutation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Changed {
    pub id: String,
    pub sync_token: String,
    pub last_updated_time: String,
    pub active: bool,
    #[serde(rename = "deleted")]
    pub deleted: bool,
}

/// A mutation request.
#[derive(Debug, Clone, Deserialize)]
pub struct Mutation {
    pub realm: Option<String>,
    pub entity: String,
    pub op: String,
    pub ids: Option<Vec<String>>,
    pub count: Option<usize>,
}

/// The state shared by every handler.
pub struct App {
    pub cfg: Config,
    pub data: RwLock<Dataset>,
    pub tokens: Mutex<Tokens>,
    pub faults: RwLock<FaultSpec>,
    api_nth: AtomicU64,
    token_nth: AtomicU64,
    attempts: Mutex<HashMap<String, Attempt>>,
    pub throttle: Arc<Throttle>,
    pub stats: Mutex<Stats>,
    log: Mutex<VecDeque<LogEntry>>,
    seq: AtomicU64,
    hold: Mutex<Hold>,
    held_tx: watch::Sender<Option<HeldInfo>>,
    mutator: Mutex<Option<JoinHandle<()>>>,
    mutation_seq: AtomicU64,
}

impl App {
    pub fn new(cfg: Config) -> Arc<App> {
        Arc::new(App {
            data: RwLock::new(Dataset::generate(&cfg)),
            tokens: Mutex::new(Tokens::new(&cfg)),
            faults: RwLock::new(cfg.faults.clone()),
            api_nth: AtomicU64::new(0),
            token_nth: AtomicU64::new(0),
            attempts: Mutex::new(HashMap::new()),
            throttle: Throttle::with_window(
                cfg.rate_limit,
                cfg.rate_limit_per_second,
                cfg.max_concurrent,
                std::time::Duration::from_millis(cfg.rate_window_ms),
            ),
            stats: Mutex::new(Stats::default()),
            log: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
            hold: Mutex::new(Hold::default()),
            held_tx: watch::channel(None).0,
            mutator: Mutex::new(None),
            mutation_seq: AtomicU64::new(0),
            cfg,
        })
    }

    /// Back to the initial state: data, tokens, faults, stats, log, barrier, mutator.
    pub fn reset(&self) {
        self.stop_mutator();
        *self.data.write().unwrap() = Dataset::generate(&self.cfg);
        *self.tokens.lock().unwrap() = Tokens::new(&self.cfg);
        self.set_faults(self.cfg.faults.clone());
        self.attempts.lock().unwrap().clear();
        self.throttle.reset();
        *self.stats.lock().unwrap() = Stats::default();
        self.log.lock().unwrap().clear();
        self.seq.store(0, Ordering::SeqCst);
        self.release();
        self.hold.lock().unwrap().armed = None;
        self.mutation_seq.store(0, Ordering::SeqCst);
    }

    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Counts one more identical request; returns its 1-based attempt number.
    pub fn bump_attempt(&self, key: &str) -> u64 {
        let mut a = self.attempts.lock().unwrap();
        let e = a.entry(key.to_string()).or_default();
        e.count += 1;
        e.count
    }

    /// Decides the injected fault of a request, enforcing the consecutive-fault cap.
    pub fn decide_fault(&self, target: Target, key: &str, attempt: u64) -> Option<Rule> {
        let spec = self.faults.read().unwrap();
        if spec.is_empty() {
            return None;
        }
        let nth = match target {
            Target::Api => &self.api_nth,
            Target::Token => &self.token_nth,
        }
        .fetch_add(1, Ordering::SeqCst)
            + 1;
        let rule = spec
            .decide(target, self.cfg.seed, key, attempt, nth)
            .cloned();
        let mut attempts = self.attempts.lock().unwrap();
        let a = attempts.entry(key.to_string()).or_default();
        match rule {
            // a lie is not a failure to get past: no cap, and it does not count towards one;
            // it is counted in the stats where it changes an answer (the query work)
            Some(r) if r.kind.lie().is_some() => Some(r),
            Some(_) if a.consecutive_faults >= self.cfg.max_consecutive_faults => {
                a.consecutive_faults = 0;
                None
            }
            Some(r) => {
                a.consecutive_faults += 1;
                self.stats
                    .lock()
                    .unwrap()
                    .faults_injected
                    .entry(r.label.clone())
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                Some(r)
            }
            None => {
                a.consecutive_faults = 0;
                None
            }
        }
    }

    pub fn set_faults(&self, spec: FaultSpec) {
        *self.faults.write().unwrap() = spec;
        self.api_nth.store(0, Ordering::SeqCst);
        self.token_nth.store(0, Ordering::SeqCst);
    }

    /// Records a finished request in the stats and the log.
    pub fn record(&self, entry: LogEntry) {
        {
            let mut s = self.stats.lock().unwrap();
            *s.requests
                .entry(entry.endpoint.to_string())
                .or_default()
                .entry(entry.status)
                .or_default() += 1;
        }
        let mut log = self.log.lock().unwrap();
        if log.len() >= LOG_CAP {
            log.pop_front();
        }
        log.push_back(entry);
    }

    pub fn log_since(&self, since: u64) -> Vec<LogEntry> {
        let log = self.log.lock().unwrap();
        let mut v: Vec<LogEntry> = log.iter().filter(|e| e.seq > since).cloned().collect();
        v.sort_by_key(|e| e.seq);
        v
    }

    pub fn count_stat(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap());
    }

    // --- barrier ---------------------------------------------------------------------------

    /// Arms the barrier: the `nth` query request from now (matching `pattern`, if given) is held.
    pub fn arm_hold(&self, nth: u64, pattern: Option<String>) {
        let mut h = self.hold.lock().unwrap();
        h.armed = Some((nth.max(1), pattern));
    }

    /// If this request is the one to hold, returns the receiver it must wait on.
    pub fn maybe_hold(&self, seq: u64, query: &str) -> Option<oneshot::Receiver<()>> {
        let mut h = self.hold.lock().unwrap();
        let (left, pattern) = h.armed.as_mut()?;
        if pattern.as_deref().is_some_and(|p| !query.contains(p)) {
            return None;
        }
        *left -= 1;
        if *left > 0 {
            return None;
        }
        h.armed = None;
        let (tx, rx) = oneshot::channel();
        h.release = Some(tx);
        self.held_tx.send_replace(Some(HeldInfo {
            seq,
            query: query.to_string(),
        }));
        Some(rx)
    }

    pub fn subscribe_held(&self) -> watch::Receiver<Option<HeldInfo>> {
        self.held_tx.subscribe()
    }

    /// Releases the held request; false if none was held (or it had gone).
    pub fn release(&self) -> bool {
        let tx = self.hold.lock().unwrap().release.take();
        self.held_tx.send_replace(None);
        tx.is_some_and(|tx| tx.send(()).is_ok())
    }

    // --- mutations -------------------------------------------------------------------------

    /// Applies an update or delete; returns what changed.
    pub fn mutate(&self, m: &Mutation) -> Result<Vec<Changed>, String> {
        let entity =
            Entity::from_name(&m.entity).ok_or_else(|| format!("unknown entity {:?}", m.entity))?;
        let delete = match m.op.as_str() {
            "update" => false,
            "delete" => true,
            o => return Err(format!("unknown op {o:?}: expected update or delete")),
        };
        let realm_id = m
            .realm
            .clone()
            .unwrap_or_else(|| self.cfg.realms[0].clone());
        let mut data = self.data.write().unwrap();
        let realm = data
            .realms
            .get_mut(&realm_id)
            .ok_or_else(|| format!("unknown realm {realm_id:?}"))?;
        let offset = realm.offset;
        let table = realm
            .tables
            .get_mut(&entity)
            .expect("every entity has a table");
        let ids: Vec<u32> = match (&m.ids, m.count) {
            (Some(ids), _) => ids
                .iter()
                .map(|s| {
                    s.parse::<u32>()
                        .ok()
                        .filter(|i| table.get(*i).is_some())
                        .ok_or_else(|| format!("no {entity} with Id {s:?}"))
                })
                .collect::<Result<_, _>>()?,
            (None, Some(n)) => {
                let k = self.mutation_seq.fetch_add(1, Ordering::SeqCst);
                let mut rng = ChaCha8Rng::seed_from_u64(
                    StableHash::new(self.cfg.seed).str("mutate").u64(k).finish(),
                );
                let live: Vec<u32> = table
                    .recs
                    .iter()
                    .filter(|r| !r.deleted)
                    .map(|r| r.id)
                    .collect();
                let mut picked = Vec::new();
                for _ in 0..n.min(live.len()) {
                    let mut id = live[rng.random_range(0..live.len())];
                    while picked.contains(&id) {
                        id = live[rng.random_range(0..live.len())];
                    }
                    picked.push(id);
                }
                picked
            }
            (None, None) => return Err("give ids or count".to_string()),
        };
        let now = Utc::now().timestamp();
        let mut changed = Vec::new();
        for id in ids {
            table.set_lut(id, now);
            let r = &mut table.recs[(id - 1) as usize];
            r.sync += 1;
            if delete {
                if entity.is_name_list() {
                    r.active = false;
                } else {
                    r.deleted = true;
                }
            }
            r.invalidate();
            changed.push(Changed {
                id: id.to_string(),
                sync_token: r.sync.to_string(),
                last_updated_time: render_ts(r.lut, &offset),
                active: r.active,
                deleted: r.deleted,
            });
        }
        self.count_stat(|s| s.mutations += changed.len() as u64);
        Ok(changed)
    }

    /// Starts a background mutator: `ticks` times (forever if None), every `every_ms`, apply `m`.
    pub fn start_mutator(self: &Arc<Self>, every_ms: u64, ticks: Option<u64>, m: Mutation) {
        self.stop_mutator();
        let app = Arc::clone(self);
        let handle = tokio::spawn(async move {
            let mut done = 0;
            while ticks.is_none_or(|t| done < t) {
                tokio::time::sleep(std::time::Duration::from_millis(every_ms.max(1))).await;
                let _ = app.mutate(&m);
                done += 1;
            }
        });
        *self.mutator.lock().unwrap() = Some(handle);
    }

    pub fn stop_mutator(&self) -> bool {
        match self.mutator.lock().unwrap().take() {
            Some(h) => {
                h.abort();
                true
            }
            None => false,
        }
    }
}
