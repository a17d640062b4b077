//! The emulator's shared state: data, tokens, faults, attempts, stats, request log, barrier and
//! mutations.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::cli::Config;
use crate::data::{Dataset, Rec, Table};
use crate::entity::{Entity, Kind};
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

impl Changed {
    fn of(r: &Rec, offset: &chrono::FixedOffset) -> Changed {
        Changed {
            id: r.id.to_string(),
            sync_token: r.sync.to_string(),
            last_updated_time: render_ts(r.lut, offset),
            active: r.active,
            deleted: r.deleted,
        }
    }
}

/// One change of an `op: "mix"` mutation: the truth row of the record, with its realm, entity
/// and the op applied to it.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub realm: String,
    pub entity: &'static str,
    pub op: &'static str,
    #[serde(flatten)]
    pub changed: Changed,
}

/// What a mutation answers: truth rows (one op on one entity) or, for `mix`, changes that name
/// their entity and op.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum MutationOutcome {
    Records(Vec<Changed>),
    Mixed(Vec<Applied>),
}

impl MutationOutcome {
    pub fn len(&self) -> usize {
        match self {
            MutationOutcome::Records(v) => v.len(),
            MutationOutcome::Mixed(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A mutation request (`POST /__emulator/mutate`, and each tick of the periodic mutator).
#[derive(Debug, Clone, Deserialize)]
pub struct Mutation {
    pub realm: Option<String>,
    /// The entity of every op but `mix`.
    pub entity: Option<String>,
    pub op: String,
    pub ids: Option<Vec<String>>,
    pub count: Option<usize>,
    /// `mix` only: the entities to draw from (default: every entity of the realm).
    pub entities: Option<Vec<String>>,
}

/// What a mutation does to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// SyncToken + 1, LastUpdatedTime = now, a field changed (PrivateNote, Notes, Description,
    /// Note).
    Update,
    /// A transaction or an Attachable is hard-deleted (gone from queries and counts, a tombstone
    /// in CDC); a name-list record is made inactive, as QuickBooks never hard-deletes name lists.
    Delete,
    /// A new record with the next Id after the highest; SyncToken 0, CreateTime =
    /// LastUpdatedTime = now.
    Create,
    /// Transactions (not TimeActivity): SyncToken + 1, LastUpdatedTime = now, every amount 0,
    /// PrivateNote "Voided"; the record stays live.
    Void,
    /// Name lists: Active = false, SyncToken + 1, LastUpdatedTime = now.
    Inactivate,
}

/// The ops `POST /__emulator/mutate` accepts, as its errors list them.
pub const OPS: &str = "update, delete, create, void, inactivate, mix";

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "update" => Op::Update,
            "delete" => Op::Delete,
            "create" => Op::Create,
            "void" => Op::Void,
            "inactivate" => Op::Inactivate,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Create => "create",
            Op::Void => "void",
            Op::Inactivate => "inactivate",
        }
    }

    /// Why this op cannot apply to `e` (`None` when it can).
    pub fn refusal(self, e: Entity) -> Option<String> {
        match self {
            Op::Void if e.is_name_list() => Some(format!(
                "op \"void\" does not apply to {e}: {e} is a name list and QuickBooks voids transactions only (make a {e} inactive with \"inactivate\" or \"delete\")"
            )),
            Op::Void if e.kind() == Kind::Other => Some(format!(
                "op \"void\" does not apply to {e}: {e} is not a transaction and QuickBooks voids transactions only (delete it with \"delete\")"
            )),
            Op::Void if !e.voidable() => Some(format!(
                "op \"void\" does not apply to {e}: QuickBooks Online does not void a {e} (delete it with \"delete\")"
            )),
            Op::Inactivate if e.kind() == Kind::Other => Some(format!(
                "op \"inactivate\" does not apply to {e}: {e} is not a name list and only name lists have Active (use \"delete\")"
            )),
            Op::Inactivate if !e.is_name_list() => Some(format!(
                "op \"inactivate\" does not apply to {e}: {e} is a transaction and only name lists have Active (use \"void\" or \"delete\")"
            )),
            _ => None,
        }
    }

    /// Whether a record can take this op when it is picked at random (`count`, `mix`): a live
    /// record; for void one not voided yet; for inactivate (and delete of a name list) an active
    /// one.
    fn can_pick(self, e: Entity, r: &Rec) -> bool {
        !r.deleted
            && match self {
                Op::Void => !r.voided,
                Op::Inactivate => r.active,
                Op::Delete if e.is_name_list() => r.active,
                _ => true,
            }
    }
}

/// A mutation checked against the configuration (not yet against the data).
#[derive(Debug, Clone)]
enum Plan {
    One {
        realm: String,
        entity: Entity,
        op: Op,
        ids: Option<Vec<String>>,
        count: usize,
    },
    Mix {
        realm: String,
        entities: Option<Vec<Entity>>,
        count: usize,
    },
}

/// Most records one `create` or `mix` makes or changes (memory is the bound).
pub const MAX_MUTATION_COUNT: usize = 10_000_000;

/// Bound of the clock offset (`POST /__emulator/clock`): a century either way.
pub const MAX_CLOCK_OFFSET_SECS: i64 = 100 * 366 * 86_400;

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
    /// QuickBooks' clock minus the real one, in seconds (`POST /__emulator/clock`).
    clock_offset: AtomicI64,
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
            clock_offset: AtomicI64::new(0),
            cfg,
        })
    }

    /// Back to the initial state: data, tokens, faults, stats, log, barrier, mutator, clock.
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
        self.clock_offset.store(0, Ordering::SeqCst);
    }

    // --- clock -----------------------------------------------------------------------------

    /// QuickBooks' "now": the real UTC clock moved by the offset a test set. It stamps the `time`
    /// of answers and faults, the 30-day limit of CDC and the MetaData of mutations; rate limits,
    /// throttle windows, latency and the request log stay on the real clock.
    pub fn qbo_now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.clock_offset())
    }

    /// QuickBooks' clock minus the real one, in seconds.
    pub fn clock_offset(&self) -> i64 {
        self.clock_offset.load(Ordering::SeqCst)
    }

    /// Sets QuickBooks' clock to the real one plus `secs` (0: the real clock).
    pub fn set_clock_offset(&self, secs: i64) -> Result<(), String> {
        if secs.abs() > MAX_CLOCK_OFFSET_SECS {
            return Err(format!(
                "offset_seconds {secs} is out of range: at most {MAX_CLOCK_OFFSET_SECS} either way"
            ));
        }
        self.clock_offset.store(secs, Ordering::SeqCst);
        Ok(())
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

    /// Checks a mutation against the configuration: realm, entity, op, and that the op applies
    /// to the entity.
    fn plan(&self, m: &Mutation) -> Result<Plan, String> {
        let realm = m
            .realm
            .clone()
            .unwrap_or_else(|| self.cfg.realms[0].clone());
        if !self.cfg.realms.contains(&realm) {
            return Err(format!("unknown realm {realm:?}"));
        }
        let entity =
            |name: &str| Entity::from_name(name).ok_or_else(|| format!("unknown entity {name:?}"));
        if m.op == "mix" {
            if m.entity.is_some() || m.ids.is_some() {
                return Err(
                    "op \"mix\" takes \"count\" and optional \"entities\" (a list), not \"entity\" or \"ids\""
                        .to_string(),
                );
            }
            let count = m
                .count
                .ok_or_else(|| "op \"mix\" needs \"count\"".to_string())?;
            if count > MAX_MUTATION_COUNT {
                return Err(format!(
                    "count {count} is too many: at most {MAX_MUTATION_COUNT} records a mutation"
                ));
            }
            let entities = match &m.entities {
                Some(list) if list.is_empty() => {
                    return Err("op \"mix\": \"entities\" is empty".to_string())
                }
                Some(list) => Some(list.iter().map(|n| entity(n)).collect::<Result<_, _>>()?),
                None => None,
            };
            return Ok(Plan::Mix {
                realm,
                entities,
                count,
            });
        }
        let op = Op::parse(&m.op)
            .ok_or_else(|| format!("unknown op {:?}: expected one of {OPS}", m.op))?;
        if m.entities.is_some() {
            return Err(format!(
                "\"entities\" is for op \"mix\"; op {:?} takes \"entity\"",
                m.op
            ));
        }
        let name = m
            .entity
            .as_deref()
            .ok_or_else(|| format!("op {:?} needs \"entity\"", m.op))?;
        let entity = entity(name)?;
        if let Some(why) = op.refusal(entity) {
            return Err(why);
        }
        match (op, &m.ids, m.count) {
            (Op::Create, Some(_), _) => Err(
                "op \"create\" makes records with new Ids: give \"count\", not \"ids\"".to_string(),
            ),
            (Op::Create, None, None) => Err("op \"create\" needs \"count\"".to_string()),
            (Op::Create, None, Some(n)) if n > MAX_MUTATION_COUNT => Err(format!(
                "count {n} is too many: at most {MAX_MUTATION_COUNT} records a mutation"
            )),
            (_, None, None) => Err("give ids or count".to_string()),
            (_, ids, count) => Ok(Plan::One {
                realm,
                entity,
                op,
                ids: ids.clone(),
                count: count.unwrap_or(0),
            }),
        }
    }

    /// Checks a mutation without applying it (the periodic mutator checks its one at once).
    pub fn check_mutation(&self, m: &Mutation) -> Result<(), String> {
        self.plan(m).map(|_| ())
    }

    /// Applies a mutation; returns what changed. Random picks (`count`, `mix`) are drawn from
    /// the seed and the emulator's mutation sequence number, so a run is repeatable.
    pub fn mutate(&self, m: &Mutation) -> Result<MutationOutcome, String> {
        let plan = self.plan(m)?;
        let now = self.qbo_now().timestamp();
        let mut data = self.data.write().unwrap();
        let out = match plan {
            Plan::One {
                realm,
                entity,
                op,
                ids,
                count,
            } => {
                let r = data
                    .realms
                    .get_mut(&realm)
                    .ok_or_else(|| format!("unknown realm {realm:?}"))?;
                let offset = r.offset;
                let table = r.tables.get_mut(&entity).expect("every entity has a table");
                MutationOutcome::Records(
                    self.apply_one(&realm, table, entity, op, ids, count, now, &offset)?,
                )
            }
            Plan::Mix {
                realm,
                entities,
                count,
            } => {
                let r = data
                    .realms
                    .get_mut(&realm)
                    .ok_or_else(|| format!("unknown realm {realm:?}"))?;
                let offset = r.offset;
                let entities =
                    entities.unwrap_or_else(|| r.tables.keys().copied().collect::<Vec<_>>());
                let k = self.mutation_seq.fetch_add(1, Ordering::SeqCst);
                let mut rng = ChaCha8Rng::seed_from_u64(
                    StableHash::new(self.cfg.seed).str("mix").u64(k).finish(),
                );
                let mut out = Vec::with_capacity(count);
                // Each change: an entity drawn uniformly, then an op by weight, in percent:
                // update 40, create 25, void (transactions) or inactivate (name lists) 15,
                // delete 20. An entity with neither void nor inactivate (TimeActivity,
                // Attachable) gets an update instead; an op that finds no record to change (an
                // empty table, every record deleted, voided or inactive) becomes a create.
                for _ in 0..count {
                    let entity = entities[rng.random_range(0..entities.len())];
                    let roll = rng.random_range(0..100u32);
                    let op = match roll {
                        0..40 => Op::Update,
                        40..65 => Op::Create,
                        65..80 if entity.is_name_list() => Op::Inactivate,
                        65..80 if entity.voidable() => Op::Void,
                        65..80 => Op::Update,
                        _ => Op::Delete,
                    };
                    let table = r.tables.get_mut(&entity).expect("every entity has a table");
                    let picked = match op {
                        Op::Create => None,
                        op => pick_one(table, entity, op, &mut rng),
                    };
                    let (op, id) = match picked {
                        Some(id) => (op, Some(id)),
                        None => (Op::Create, None),
                    };
                    let id = apply(
                        table,
                        entity,
                        op,
                        id,
                        now,
                        created_variant(self.cfg.seed, &realm, entity, table.recs.len() + 1),
                    );
                    out.push(Applied {
                        realm: realm.clone(),
                        entity: entity.name(),
                        op: op.name(),
                        changed: Changed::of(table.get(id).expect("just changed"), &offset),
                    });
                }
                MutationOutcome::Mixed(out)
            }
        };
        self.count_stat(|s| s.mutations += out.len() as u64);
        Ok(out)
    }

    /// One op on one entity, on the records `ids` or on `count` records picked at random (for a
    /// create: `count` new records).
    #[allow(clippy::too_many_arguments)]
    fn apply_one(
        &self,
        realm: &str,
        table: &mut Table,
        entity: Entity,
        op: Op,
        ids: Option<Vec<String>>,
        count: usize,
        now: i64,
        offset: &chrono::FixedOffset,
    ) -> Result<Vec<Changed>, String> {
        let ids: Vec<Option<u32>> = match (op, ids) {
            (Op::Create, _) => vec![None; count],
            (_, Some(ids)) => ids
                .iter()
                .map(|s| {
                    let rec = s
                        .parse::<u32>()
                        .ok()
                        .and_then(|i| table.get(i))
                        .ok_or_else(|| format!("no {entity} with Id {s:?}"))?;
                    // update and delete take any record, as they always have; void and
                    // inactivate change live records only
                    if rec.deleted && matches!(op, Op::Void | Op::Inactivate) {
                        return Err(format!("{entity} {s} is deleted"));
                    }
                    Ok(Some(rec.id))
                })
                .collect::<Result<_, _>>()?,
            (_, None) => {
                let k = self.mutation_seq.fetch_add(1, Ordering::SeqCst);
                let mut rng = ChaCha8Rng::seed_from_u64(
                    StableHash::new(self.cfg.seed).str("mutate").u64(k).finish(),
                );
                // update and delete draw among the live records exactly as they always have
                let live: Vec<u32> = table
                    .recs
                    .iter()
                    .filter(|r| match op {
                        Op::Update | Op::Delete => !r.deleted,
                        _ => op.can_pick(entity, r),
                    })
                    .map(|r| r.id)
                    .collect();
                let mut picked = Vec::new();
                for _ in 0..count.min(live.len()) {
                    let mut id = live[rng.random_range(0..live.len())];
                    while picked.contains(&Some(id)) {
                        id = live[rng.random_range(0..live.len())];
                    }
                    picked.push(Some(id));
                }
                picked
            }
        };
        Ok(ids
            .into_iter()
            .map(|id| {
                let variant = created_variant(self.cfg.seed, realm, entity, table.recs.len() + 1);
                let id = apply(table, entity, op, id, now, variant);
                Changed::of(table.get(id).expect("just changed"), offset)
            })
            .collect())
    }

    /// Starts a background mutator: `ticks` times (forever if None), every `every_ms`, apply `m`.
    pub fn start_mutator(self: &Arc<Self>, every_ms: u64, ticks: Option<u64>, m: Mutation) {
        self.stop_mutator();
        let app = Arc::clone(self);
        let handle = tokio::spawn(async move {
            let mut done = 0;
            // each tick is an ordinary mutation: every op, `mix` included, and its random picks
            // follow the mutation sequence number
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

/// The content seed of the record a create makes: from the seed, realm, entity and the new Id,
/// so the same creates give the same records run after run.
fn created_variant(seed: u64, realm: &str, entity: Entity, id: usize) -> u64 {
    StableHash::new(seed)
        .str(realm)
        .str(entity.name())
        .u64(id as u64)
        .str("created")
        .finish()
}

/// Picks at random a record that can take `op`, or `None` if there is none: a few draws, then a
/// scan (so a big table costs little and a table of unsuitable records is seen as such).
fn pick_one(table: &Table, entity: Entity, op: Op, rng: &mut ChaCha8Rng) -> Option<u32> {
    let n = table.recs.len();
    if n == 0 {
        return None;
    }
    for _ in 0..32 {
        let r = &table.recs[rng.random_range(0..n)];
        if op.can_pick(entity, r) {
            return Some(r.id);
        }
    }
    let ok: Vec<u32> = table
        .recs
        .iter()
        .filter(|r| op.can_pick(entity, r))
        .map(|r| r.id)
        .collect();
    (!ok.is_empty()).then(|| ok[rng.random_range(0..ok.len())])
}

/// Applies `op` to record `id` (a create makes a new record from `variant`); returns the Id.
fn apply(
    table: &mut Table,
    entity: Entity,
    op: Op,
    id: Option<u32>,
    now: i64,
    variant: u64,
) -> u32 {
    let id = match (op, id) {
        (Op::Create, _) | (_, None) => return table.create(now, variant),
        (_, Some(id)) => id,
    };
    table.set_lut(id, now);
    let r = &mut table.recs[(id - 1) as usize];
    r.sync += 1;
    match op {
        Op::Delete if entity.is_name_list() => r.active = false,
        Op::Delete => r.deleted = true,
        Op::Void => r.voided = true,
        Op::Inactivate => r.active = false,
        Op::Update | Op::Create => {}
    }
    r.invalidate();
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(args: &[&str]) -> Arc<App> {
        let mut all = vec!["--realm", "1"];
        all.extend_from_slice(args);
        App::new(Config::from_args(all).unwrap())
    }

    fn m(v: serde_json::Value) -> Mutation {
        serde_json::from_value(v).unwrap()
    }

    fn records(o: MutationOutcome) -> Vec<Changed> {
        match o {
            MutationOutcome::Records(v) => v,
            MutationOutcome::Mixed(_) => panic!("mixed"),
        }
    }

    fn mixed(o: MutationOutcome) -> Vec<Applied> {
        match o {
            MutationOutcome::Mixed(v) => v,
            MutationOutcome::Records(_) => panic!("records"),
        }
    }

    fn payload(app: &App, e: Entity, id: u32) -> serde_json::Value {
        let d = app.data.read().unwrap();
        let r = &d.realms["1"];
        serde_json::from_str(&r.payload(e, r.table(e).get(id).unwrap())).unwrap()
    }

    #[test]
    fn clock_offset_moves_qbo_now_within_bounds() {
        let a = app(&[]);
        assert_eq!(a.clock_offset(), 0);
        a.set_clock_offset(-86_400 * 40).unwrap();
        let lag = Utc::now() - a.qbo_now();
        assert!((lag.num_seconds() - 86_400 * 40).abs() <= 1, "{lag}");
        assert_eq!(
            a.set_clock_offset(MAX_CLOCK_OFFSET_SECS + 1).unwrap_err(),
            format!(
                "offset_seconds {} is out of range: at most {MAX_CLOCK_OFFSET_SECS} either way",
                MAX_CLOCK_OFFSET_SECS + 1
            )
        );
        assert_eq!(a.clock_offset(), -86_400 * 40);
        a.reset();
        assert_eq!(a.clock_offset(), 0);
    }

    #[test]
    fn create_appends_ids_stamped_with_qbos_now() {
        let a = app(&["--records", "Invoice=10"]);
        a.set_clock_offset(3600).unwrap();
        let want = a.qbo_now().timestamp();
        let got = records(
            a.mutate(&m(
                serde_json::json!({"entity": "Invoice", "op": "create", "count": 2}),
            ))
            .unwrap(),
        );
        assert_eq!(
            got.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["11", "12"]
        );
        let d = a.data.read().unwrap();
        let t = d.realms["1"].table(Entity::Invoice);
        assert_eq!(t.recs.len(), 12);
        assert_eq!(t.by_lut.len(), 12);
        for id in [11, 12] {
            let r = t.get(id).unwrap();
            assert_eq!((r.sync, r.create, r.lut), (0, r.lut, r.lut));
            assert!((r.lut - want).abs() <= 1);
            assert!(r.active && !r.deleted && !r.voided);
        }
        drop(d);
        let p = payload(&a, Entity::Invoice, 12);
        assert_eq!(p["Id"], "12");
        assert_eq!(p["SyncToken"], "0");
        assert_eq!(
            p["MetaData"]["CreateTime"],
            p["MetaData"]["LastUpdatedTime"]
        );
        assert_eq!(p["DocNumber"], "1012");
        // the same creates make the same records in another emulator of the same seed
        let b = app(&["--records", "Invoice=10"]);
        b.mutate(&m(
            serde_json::json!({"entity": "Invoice", "op": "create", "count": 2}),
        ))
        .unwrap();
        let q = payload(&b, Entity::Invoice, 12);
        assert_eq!(p["CustomerRef"], q["CustomerRef"]);
        assert_eq!(p["TotalAmt"], q["TotalAmt"]);
        assert_eq!(a.stats.lock().unwrap().mutations, 2);
    }

    #[test]
    fn void_zeroes_every_amount_and_keeps_the_record_live() {
        let a = app(&[]);
        for (e, id) in [
            (Entity::Invoice, 4),
            (Entity::Bill, 4),
            (Entity::Payment, 4),
            (Entity::JournalEntry, 4),
            (Entity::CreditMemo, 4),
            (Entity::Purchase, 4),
        ] {
            let before = payload(&a, e, id);
            let got = records(
                a.mutate(&m(
                    serde_json::json!({"entity": e.name(), "op": "void", "ids": [id.to_string()]}),
                ))
                .unwrap(),
            );
            assert_eq!(got.len(), 1);
            assert!(!got[0].deleted && got[0].active);
            let after = payload(&a, e, id);
            let sync =
                |v: &serde_json::Value| v["SyncToken"].as_str().unwrap().parse::<u32>().unwrap();
            assert_eq!(sync(&after), sync(&before) + 1, "{e}");
            assert_eq!(after["PrivateNote"], "Voided", "{e}");
            assert_eq!(after["TotalAmt"], 0, "{e}");
            assert_ne!(before["TotalAmt"], 0, "{e}");
            for l in after["Line"].as_array().unwrap() {
                assert_eq!(l["Amount"], 0, "{e}: {l}");
                assert!(l["SalesItemLineDetail"].get("UnitPrice").is_none());
            }
            if let Some(b) = after.get("Balance") {
                assert_eq!(*b, 0, "{e}");
            }
            if e == Entity::Invoice {
                assert_eq!(after["TxnTaxDetail"]["TotalTax"], 0);
            }
            // everything else is as it was
            for k in [
                "DocNumber",
                "TxnDate",
                "CustomerRef",
                "VendorRef",
                "CurrencyRef",
            ] {
                assert_eq!(after.get(k), before.get(k), "{e} {k}");
            }
            // a voided record is still queried
            let d = a.data.read().unwrap();
            let r = d.realms["1"].table(e).get(id).unwrap();
            assert!(r.voided && !r.deleted);
        }
    }

    #[test]
    fn ops_refuse_entities_they_do_not_apply_to_with_clear_text() {
        let a = app(&[]);
        let err = |v| a.mutate(&m(v)).unwrap_err();
        assert_eq!(
            err(serde_json::json!({"entity": "Customer", "op": "void", "ids": ["1"]})),
            "op \"void\" does not apply to Customer: Customer is a name list and QuickBooks voids transactions only (make a Customer inactive with \"inactivate\" or \"delete\")"
        );
        assert_eq!(
            err(serde_json::json!({"entity": "Invoice", "op": "inactivate", "count": 1})),
            "op \"inactivate\" does not apply to Invoice: Invoice is a transaction and only name lists have Active (use \"void\" or \"delete\")"
        );
        assert_eq!(
            err(serde_json::json!({"entity": "TimeActivity", "op": "void", "ids": ["1"]})),
            "op \"void\" does not apply to TimeActivity: QuickBooks Online does not void a TimeActivity (delete it with \"delete\")"
        );
        assert_eq!(
            err(serde_json::json!({"entity": "Invoice", "op": "create", "ids": ["1"]})),
            "op \"create\" makes records with new Ids: give \"count\", not \"ids\""
        );
        assert_eq!(
            err(serde_json::json!({"entity": "Invoice", "op": "archive", "ids": ["1"]})),
            "unknown op \"archive\": expected one of update, delete, create, void, inactivate, mix"
        );
        assert_eq!(
            err(serde_json::json!({"op": "update", "ids": ["1"]})),
            "op \"update\" needs \"entity\""
        );
        assert_eq!(
            err(serde_json::json!({"op": "mix"})),
            "op \"mix\" needs \"count\""
        );
        assert_eq!(
            err(serde_json::json!({"op": "mix", "count": 1, "entities": ["Invoices"]})),
            "unknown entity \"Invoices\""
        );
        // a deleted transaction is not voided
        a.mutate(&m(
            serde_json::json!({"entity": "Invoice", "op": "delete", "ids": ["9"]}),
        ))
        .unwrap();
        assert_eq!(
            err(serde_json::json!({"entity": "Invoice", "op": "void", "ids": ["9"]})),
            "Invoice 9 is deleted"
        );
        // nothing was applied by a refused mutation
        assert_eq!(a.stats.lock().unwrap().mutations, 1);
    }

    /// Every amount of a payload, wherever it is (`Amount`, `TotalAmt`, `Balance`, …).
    fn amounts(v: &serde_json::Value, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    if [
                        "Amount",
                        "TotalAmt",
                        "Balance",
                        "TotalTax",
                        "RemainingCredit",
                    ]
                    .contains(&k.as_str())
                    {
                        out.push(x.as_f64().unwrap());
                    } else {
                        amounts(x, out);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| amounts(x, out)),
            _ => {}
        }
    }

    #[test]
    fn void_of_the_new_transactions_zeroes_every_amount() {
        let a = app(&[]);
        for e in [
            Entity::BillPayment,
            Entity::Deposit,
            Entity::PurchaseOrder,
            Entity::RefundReceipt,
            Entity::Transfer,
            Entity::VendorCredit,
        ] {
            // a record with a non-zero amount somewhere (a Deposit with cash back if any)
            let id = (1..=250)
                .find(|id| {
                    let p = payload(&a, e, *id);
                    e != Entity::Deposit || p.get("CashBack").is_some()
                })
                .unwrap();
            let before = payload(&a, e, id);
            let mut was = Vec::new();
            amounts(&before, &mut was);
            assert!(was.iter().any(|x| *x != 0.0), "{e}");
            let got = records(
                a.mutate(&m(
                    serde_json::json!({"entity": e.name(), "op": "void", "ids": [id.to_string()]}),
                ))
                .unwrap(),
            );
            assert!(got[0].active && !got[0].deleted, "{e}");
            let after = payload(&a, e, id);
            let mut now = Vec::new();
            amounts(&after, &mut now);
            assert_eq!(now.len(), was.len(), "{e}: the same amounts");
            assert!(now.iter().all(|x| *x == 0.0), "{e}: {after}");
            assert_eq!(after["PrivateNote"], "Voided", "{e}");
            for k in [
                "TxnDate",
                "DocNumber",
                "VendorRef",
                "CustomerRef",
                "FromAccountRef",
            ] {
                assert_eq!(after.get(k), before.get(k), "{e} {k}");
            }
        }
    }

    #[test]
    fn ops_on_the_new_entities_apply_as_qbo_allows() {
        let a = app(&[]);
        let err = |e: &str, op: &str| {
            a.mutate(&m(serde_json::json!({"entity": e, "op": op, "ids": ["1"]})))
                .unwrap_err()
        };
        assert_eq!(
            err("Attachable", "void"),
            "op \"void\" does not apply to Attachable: Attachable is not a transaction and QuickBooks voids transactions only (delete it with \"delete\")"
        );
        assert_eq!(
            err("Attachable", "inactivate"),
            "op \"inactivate\" does not apply to Attachable: Attachable is not a name list and only name lists have Active (use \"delete\")"
        );
        for e in ["Budget", "TaxRate"] {
            assert_eq!(
                err(e, "void"),
                format!("op \"void\" does not apply to {e}: {e} is a name list and QuickBooks voids transactions only (make a {e} inactive with \"inactivate\" or \"delete\")")
            );
        }
        for e in [
            "BillPayment",
            "Deposit",
            "PurchaseOrder",
            "RefundReceipt",
            "Transfer",
            "VendorCredit",
        ] {
            assert_eq!(
                err(e, "inactivate"),
                format!("op \"inactivate\" does not apply to {e}: {e} is a transaction and only name lists have Active (use \"void\" or \"delete\")")
            );
        }
        assert_eq!(a.stats.lock().unwrap().mutations, 0);
        // delete: an Attachable is hard-deleted, a Budget or a TaxRate made inactive
        let got = records(
            a.mutate(&m(
                serde_json::json!({"entity": "Attachable", "op": "delete", "ids": ["2"]}),
            ))
            .unwrap(),
        );
        assert!(got[0].deleted);
        for e in [Entity::Budget, Entity::TaxRate] {
            let id = {
                let d = a.data.read().unwrap();
                d.realms["1"]
                    .table(e)
                    .recs
                    .iter()
                    .find(|r| r.active)
                    .unwrap()
                    .id
            };
            for op in ["delete", "update", "inactivate"] {
                let got = records(
                    a.mutate(&m(
                        serde_json::json!({"entity": e.name(), "op": op, "ids": [id.to_string()]}),
                    ))
                    .unwrap(),
                );
                assert!(!got[0].active && !got[0].deleted, "{e} {op}");
            }
            assert_eq!(payload(&a, e, id)["Active"], false);
        }
        // update changes the text QuickBooks would show
        a.mutate(&m(
            serde_json::json!({"entity": "Attachable", "op": "update", "ids": ["1"]}),
        ))
        .unwrap();
        let p = payload(&a, Entity::Attachable, 1);
        let sync = p["SyncToken"].as_str().unwrap();
        assert!(
            p["Note"]
                .as_str()
                .unwrap()
                .ends_with(&format!("(revision {sync})")),
            "{p}"
        );
        // a mix of the new entities voids transactions only and inactivates name lists only
        let got = mixed(
            a.mutate(&m(
                serde_json::json!({"op": "mix", "count": 300, "entities": [
                "Attachable", "BillPayment", "Budget", "Deposit", "PurchaseOrder",
                "RefundReceipt", "TaxRate", "Transfer", "VendorCredit"]}),
            ))
            .unwrap(),
        );
        let mut seen = std::collections::BTreeSet::new();
        for x in &got {
            let e = Entity::from_name(x.entity).unwrap();
            seen.insert(x.entity);
            match x.op {
                "void" => assert!(e.voidable(), "{e}"),
                "inactivate" => assert!(e.is_name_list(), "{e}"),
                "delete" => assert_eq!(x.changed.deleted, !e.is_name_list(), "{e}"),
                _ => {}
            }
        }
        assert_eq!(seen.len(), 9);
    }

    #[test]
    fn inactivate_and_delete_of_a_name_list_keep_the_record() {
        let a = app(&[]);
        let active: Vec<u32> = {
            let d = a.data.read().unwrap();
            d.realms["1"]
                .table(Entity::Customer)
                .recs
                .iter()
                .filter(|r| r.active)
                .map(|r| r.id)
                .take(2)
                .collect()
        };
        for (op, id) in [("inactivate", active[0]), ("delete", active[1])] {
            let got = records(
                a.mutate(&m(
                    serde_json::json!({"entity": "Customer", "op": op, "ids": [id.to_string()]}),
                ))
                .unwrap(),
            );
            assert!(!got[0].active && !got[0].deleted, "{op}");
            assert_eq!(payload(&a, Entity::Customer, id)["Active"], false);
        }
    }

    fn summary(
        v: &[Applied],
    ) -> Vec<(
        String,
        &'static str,
        &'static str,
        String,
        String,
        bool,
        bool,
    )> {
        v.iter()
            .map(|x| {
                (
                    x.realm.clone(),
                    x.entity,
                    x.op,
                    x.changed.id.clone(),
                    x.changed.sync_token.clone(),
                    x.changed.active,
                    x.changed.deleted,
                )
            })
            .collect()
    }

    #[test]
    fn mix_is_deterministic_valid_and_weighted() {
        let run = |seed: &str| {
            let a = app(&["--seed", seed]);
            let first = mixed(
                a.mutate(&m(serde_json::json!({"op": "mix", "count": 400})))
                    .unwrap(),
            );
            let second = mixed(
                a.mutate(&m(serde_json::json!({"op": "mix", "count": 5})))
                    .unwrap(),
            );
            (summary(&first), summary(&second), a)
        };
        let (a1, a2, a) = run("42");
        let (b1, b2, _) = run("42");
        assert_eq!(a1, b1);
        assert_eq!(a2, b2);
        let (c1, _, _) = run("7");
        assert_ne!(a1, c1);
        assert_eq!(a.stats.lock().unwrap().mutations, 405);
        let mut by_op: BTreeMap<&str, usize> = BTreeMap::new();
        for (realm, entity, op, _, sync, active, deleted) in &a1 {
            assert_eq!(realm, "1");
            let e = Entity::from_name(entity).unwrap();
            *by_op.entry(op).or_default() += 1;
            match *op {
                "create" => assert_eq!(sync, "0"),
                "void" => assert!(e.voidable() && !deleted && *active),
                "inactivate" => assert!(e.is_name_list() && !active && !deleted),
                "delete" if e.is_name_list() => assert!(!active && !deleted),
                "delete" => assert!(deleted),
                "update" => assert!(!deleted),
                o => panic!("op {o}"),
            }
        }
        // the weights, with the shares of entities that have neither void nor inactivate
        // (TimeActivity and Attachable, 2 of 28) moved to update
        let share = |op: &str| *by_op.get(op).unwrap_or(&0) as f64 / 400.0;
        assert!((0.33..0.50).contains(&share("update")), "{by_op:?}");
        assert!((0.18..0.32).contains(&share("create")), "{by_op:?}");
        assert!(
            (0.09..0.21).contains(&(share("void") + share("inactivate"))),
            "{by_op:?}"
        );
        assert!((0.14..0.26).contains(&share("delete")), "{by_op:?}");
        // what mix reports is what truth holds: the last change of each record
        let d = a.data.read().unwrap();
        let realm = &d.realms["1"];
        let mut last: BTreeMap<(&str, &str), (&str, bool, bool)> = BTreeMap::new();
        for (_, e, _, id, sync, active, deleted) in a1.iter().chain(a2.iter()) {
            last.insert((e, id), (sync, *active, *deleted));
        }
        for ((e, id), (sync, active, deleted)) in last {
            let r = realm
                .table(Entity::from_name(e).unwrap())
                .get(id.parse().unwrap())
                .unwrap();
            assert_eq!(
                (r.sync.to_string().as_str(), r.active, r.deleted),
                (sync, active, deleted)
            );
        }
    }

    #[test]
    fn mix_draws_only_the_entities_given_and_creates_when_nothing_is_left() {
        let a = app(&["--records", "Bill=0", "--records", "Term=0"]);
        let got = mixed(
            a.mutate(&m(
                serde_json::json!({"op": "mix", "count": 30, "entities": ["Bill", "Term"]}),
            ))
            .unwrap(),
        );
        assert_eq!(got.len(), 30);
        assert!(got.iter().all(|x| x.entity == "Bill" || x.entity == "Term"));
        // the first change of each (empty) table can only be a create
        for e in ["Bill", "Term"] {
            let first = got.iter().find(|x| x.entity == e).unwrap();
            assert_eq!((first.op, first.changed.id.as_str()), ("create", "1"));
        }
    }
}
