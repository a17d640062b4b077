//! Harness of the end-to-end tests: a real PostgreSQL cluster (started by `scripts/test.sh`,
//! found through `PG_QBO_TEST_PORT` / `PG_QBO_TEST_DIR`) with pg_qbo installed, and real
//! `qbo-emulator` processes (one per test, on a free port).
//!
//! Each test gets its own database (so tests run in parallel) whose settings point pg_qbo at its
//! own emulator, with fast retry settings.

use postgres::{Client, NoTls};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Port of the test cluster.
pub fn port() -> u16 {
    std::env::var("PG_QBO_TEST_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("PG_QBO_TEST_PORT is not set: run the tests with scripts/test.sh")
}

/// Directory of the test cluster (holds server.log).
pub fn cluster_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("PG_QBO_TEST_DIR").expect("PG_QBO_TEST_DIR is not set: run scripts/test.sh"),
    )
}

/// Connects to `db` as the superuser.
pub fn connect(db: &str) -> Client {
    Client::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname={db}", port()),
        NoTls,
    )
    .unwrap_or_else(|e| panic!("cannot connect to {db}: {e}"))
}

/// Connects to `db` as `role` (a login role; trust authentication).
pub fn as_role(db: &str, role: &str) -> Client {
    Client::connect(
        &format!("host=127.0.0.1 port={} user={role} dbname={db}", port()),
        NoTls,
    )
    .unwrap_or_else(|e| panic!("connect as {role}: {e}"))
}

/// The NOTICEs a client received, in order (see [`collecting`]).
#[derive(Clone, Default)]
pub struct Notices(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Notices {
    /// Everything received so far, removed.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// Everything received so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (up to 60 s) until a NOTICE containing `text` has arrived; returns it.
    pub fn wait_for(&self, text: &str) -> String {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(n) = self.all().into_iter().find(|n| n.contains(text)) {
                return n;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no NOTICE containing {text:?} arrived: {:?}",
                self.all()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A statement's error as (SQLSTATE, message); panics if it is not a database error.
pub fn db_error(e: postgres::Error) -> (String, String) {
    let d = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a database error: {e}"));
    (d.code().code().to_owned(), d.message().to_owned())
}

/// Creates (or resets) a login role with no attributes and no settings.
pub fn fresh_role(admin: &mut postgres::Client, role: &str) {
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} LOGIN; END IF;
             END $$;
             ALTER ROLE {role} NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS LOGIN;
             ALTER ROLE {role} RESET ALL;"
        ))
        .unwrap();
}

/// Connects to `db` as `user`, keeping every NOTICE (and WARNING) the server sends.
pub fn collecting(db: &str, user: &str) -> (Client, Notices) {
    let notices = Notices::default();
    let sink = notices.clone();
    let mut cfg: postgres::Config =
        format!("host=127.0.0.1 port={} user={user} dbname={db}", port())
            .parse()
            .expect("config");
    cfg.notice_callback(move |n| sink.0.lock().unwrap().push(n.message().to_owned()));
    let c = cfg
        .connect(NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to {db} as {user}: {e}"));
    (c, notices)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running emulator, killed on drop.
pub struct Emulator {
    child: Child,
    pub url: String,
}

impl Emulator {
    /// Starts the emulator with extra flags.
    ///
    /// Intuit's 10 requests a second per realm is lifted unless `args` set
    /// `--rate-limit-per-second` (and [`fresh_db`] lifts pg_qbo's own pacing to match): only the
    /// suites about that limit (request_limits.rs) pay for realistic pacing; every other suite
    /// runs at the speed it tests, as it did before the limit existed.
    pub fn start(args: &[&str]) -> Emulator {
        let bin = std::env::var("QBO_EMULATOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("target/release/qbo-emulator"));
        let lift: &[&str] = if args.contains(&"--rate-limit-per-second") {
            &[]
        } else {
            &["--rate-limit-per-second", "1000000"]
        };
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(lift)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("emulator output");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected emulator banner: {line:?}"))
            .to_owned();
        Emulator { child, url }
    }

    fn get(&self, path: &str) -> Value {
        ureq::get(&format!("{}{path}", self.url))
            .timeout(Duration::from_secs(60))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .into_json()
            .expect("json")
    }

    /// POSTs a JSON body to the control API.
    pub fn post(&self, path: &str, body: Value) -> Value {
        ureq::post(&format!("{}{path}", self.url))
            .timeout(Duration::from_secs(60))
            .send_json(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
            .into_json()
            .unwrap_or(Value::Null)
    }

    /// Ground truth: Id → SyncToken of the live (not deleted) records.
    pub fn truth(&self, realm: &str, entity: &str) -> BTreeMap<String, i64> {
        let v = self.get(&format!("/__emulator/truth/{realm}/{entity}"));
        v.as_array()
            .expect("truth array")
            .iter()
            .filter(|r| !r["deleted"].as_bool().unwrap_or(false))
            .map(|r| {
                (
                    r["Id"].as_str().expect("Id").to_owned(),
                    r["SyncToken"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .expect("SyncToken"),
                )
            })
            .collect()
    }

    /// Full truth rows.
    pub fn truth_rows(&self, realm: &str, entity: &str) -> Vec<Value> {
        self.get(&format!("/__emulator/truth/{realm}/{entity}"))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The request log since `seq`.
    pub fn requests(&self, since: u64) -> Vec<Value> {
        self.get(&format!("/__emulator/requests?since={since}"))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Sequence number of the last logged request (0 when none): pass it to [`Emulator::requests`]
    /// to see only what comes after.
    pub fn last_seq(&self) -> u64 {
        self.requests(0)
            .last()
            .and_then(|r| r["seq"].as_u64())
            .unwrap_or(0)
    }

    /// Counters.
    pub fn stats(&self) -> Value {
        self.get("/__emulator/stats")
    }

    /// Replaces the fault spec.
    pub fn faults(&self, spec: &str) {
        self.post("/__emulator/faults", serde_json::json!({ "spec": spec }));
    }

    /// Holds the `nth` query request from now until [`Emulator::release`].
    pub fn hold(&self, nth: u64) {
        self.post("/__emulator/hold", serde_json::json!({ "nth": nth }));
    }

    /// Holds the `nth` query request from now whose query text contains `pattern`.
    pub fn hold_matching(&self, nth: u64, pattern: &str) {
        self.post(
            "/__emulator/hold",
            serde_json::json!({ "nth": nth, "match": pattern }),
        );
    }

    /// Waits until a request is held.
    pub fn wait_held(&self) -> Value {
        let v = self.get("/__emulator/held?timeout_ms=60000");
        assert_eq!(v["held"], Value::Bool(true), "no request was held: {v}");
        v
    }

    /// Lets a held request go.
    pub fn release(&self) {
        self.post("/__emulator/release", serde_json::json!({}));
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Default realms served by the emulator.
pub const REALM1: &str = "9341452000000001";
pub const REALM2: &str = "9341452000000002";

/// A fresh database with pg_qbo, pointed at `emu`, with connections `default` (REALM1) and
/// `second` (REALM2) registered from a credentials file (secrets never in SQL text).
pub fn fresh_db(name: &str, emu: &Emulator) -> Client {
    let mut admin = connect("postgres");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .expect("drop db");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create db");
    configure_db(name, emu)
}

/// Like [`fresh_db`] but keeps an existing database (pg_cron's scheduler is tied to its database
/// and does not come back after the database is dropped): pg_qbo and `raw` are dropped and made
/// anew, pg_cron's jobs removed.
pub fn reset_db(name: &str, emu: &Emulator) -> Client {
    let mut admin = connect("postgres");
    let exists = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .expect("pg_database")
        .get::<_, i64>(0)
        > 0;
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create db");
    } else {
        let mut c = connect(name);
        c.batch_execute("DROP EXTENSION IF EXISTS pg_qbo CASCADE")
            .expect("drop pg_qbo");
        c.batch_execute("DROP SCHEMA IF EXISTS raw CASCADE")
            .expect("drop raw");
        c.batch_execute(
            "DO $$ BEGIN IF to_regclass('cron.job') IS NOT NULL THEN
                 PERFORM cron.unschedule(jobid) FROM cron.job; DELETE FROM cron.job_run_details;
             END IF; END $$",
        )
        .expect("clear cron");
    }
    configure_db(name, emu)
}

fn configure_db(name: &str, emu: &Emulator) -> Client {
    let mut admin = connect("postgres");
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET qbo.api_base_url = '{u}';
             ALTER DATABASE {name} SET qbo.token_url = '{u}/oauth2/v1/tokens/bearer';
             ALTER DATABASE {name} SET qbo.backoff_base_ms = 5;
             ALTER DATABASE {name} SET qbo.backoff_cap_ms = 40;
             ALTER DATABASE {name} SET qbo.http_timeout_ms = 3000;
             ALTER DATABASE {name} SET qbo.max_requests_per_second = 1000;
             ALTER DATABASE {name} RESET qbo.sync_non_cdc_interval_ms;",
            u = emu.url
        ))
        .expect("settings");
    let mut c = connect(name);
    c.batch_execute(&create_extension_sql())
        .expect("create extension");
    register(&mut c, name, "default", REALM1, "emu-refresh-token-0");
    c
}

/// How a test database gets pg_qbo: `CREATE EXTENSION pg_qbo`, or, when `PG_QBO_TEST_FROM_VERSION`
/// names an older version whose script is installed (scripts/upgrade-test.sh sets it to 0.1.0),
/// that version updated to the current one, so a suite runs on an updated schema.
pub fn create_extension_sql() -> String {
    match std::env::var("PG_QBO_TEST_FROM_VERSION") {
        Ok(v) if !v.is_empty() => {
            assert!(
                v.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '-'),
                "PG_QBO_TEST_FROM_VERSION={v:?} is not a version"
            );
            format!("CREATE EXTENSION pg_qbo VERSION '{v}'; ALTER EXTENSION pg_qbo UPDATE")
        }
        _ => "CREATE EXTENSION pg_qbo".to_owned(),
    }
}

/// Writes a credentials file and registers it with qbo.connect_from_file.
pub fn register(c: &mut Client, db: &str, conn: &str, realm: &str, refresh: &str) {
    let path = cluster_dir().join(format!("creds-{db}-{conn}.json"));
    std::fs::write(
        &path,
        serde_json::json!({
            "realm_id": realm, "client_id": "emu-client-id", "client_secret": "emu-client-secret",
            "refresh_token": refresh, "environment": "sandbox"
        })
        .to_string(),
    )
    .expect("write creds");
    c.query_one(
        "SELECT qbo.connect_from_file($1, $2)",
        &[&path.to_string_lossy().as_ref(), &conn],
    )
    .expect("connect_from_file");
}

/// The raw table as Id → SyncToken for one realm.
pub fn raw(c: &mut Client, table: &str, realm: &str) -> BTreeMap<String, i64> {
    c.query(
        &format!("SELECT id, (payload->>'SyncToken')::bigint FROM raw.{table} WHERE realm_id = $1"),
        &[&realm],
    )
    .expect("raw")
    .iter()
    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
    .collect()
}

/// One volumetry row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vol {
    pub chunks: i64,
    pub pages: i64,
    pub rows: i64,
    pub inserted: i64,
    pub updated: i64,
    pub skipped: i64,
}

/// Sums the rows returned by qbo.backfill / qbo.resume.
pub fn sum_rows(rows: &[postgres::Row]) -> Vol {
    let mut v = Vol::default();
    for r in rows {
        v.chunks += 1;
        v.pages += r.get::<_, i32>("pages") as i64;
        v.rows += r.get::<_, i64>("rows");
        v.inserted += r.get::<_, i64>("inserted");
        v.updated += r.get::<_, i64>("updated");
        v.skipped += r.get::<_, i64>("skipped");
    }
    v
}

/// The truth restricted to a window on LastUpdatedTime (RFC 3339 bounds, half-open).
pub fn truth_in_window(
    emu: &Emulator,
    realm: &str,
    entity: &str,
    from: &str,
    to: &str,
) -> BTreeMap<String, i64> {
    let parse = |s: &str| -> i64 { parse_rfc3339(s) };
    let (lo, hi) = (parse(from), parse(to));
    emu.truth_rows(realm, entity)
        .iter()
        .filter(|r| !r["deleted"].as_bool().unwrap_or(false))
        .filter(|r| {
            let t = parse(r["LastUpdatedTime"].as_str().unwrap_or(""));
            t >= lo && t < hi
        })
        .map(|r| {
            (
                r["Id"].as_str().unwrap().to_owned(),
                r["SyncToken"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// The second holding the most Invoices in realm 1 (the emulator's bulk import), as the literal
/// pg_qbo's queries use (`2025-06-26T07:02:59+00:00`), with its number of records.
pub fn bulk_second(emu: &Emulator, c: &mut Client) -> (String, usize) {
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    for r in emu.truth_rows(REALM1, "Invoice") {
        *per_second
            .entry(parse_rfc3339(r["LastUpdatedTime"].as_str().unwrap()))
            .or_default() += 1;
    }
    let (t, n) = per_second.into_iter().max_by_key(|(_, n)| *n).unwrap();
    let literal: String = c
        .query_one(
            "SELECT to_char(to_timestamp($1::float8) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || '+00:00'",
            &[&(t as f64)],
        )
        .unwrap()
        .get(0);
    (literal, n)
}

/// Seconds since the epoch of an RFC 3339 timestamp with offset (`2025-01-01T00:00:00-07:00`, `...Z`).
pub fn parse_rfc3339(s: &str) -> i64 {
    let (date, rest) = s.split_at(10);
    let mut d = date.split('-').map(|p| p.parse::<i64>().unwrap());
    let (y, m, dd) = (d.next().unwrap(), d.next().unwrap(), d.next().unwrap());
    let time = &rest[1..9];
    let mut t = time.split(':').map(|p| p.parse::<i64>().unwrap());
    let (hh, mm, ss) = (t.next().unwrap(), t.next().unwrap(), t.next().unwrap());
    let mut tz = &rest[9..];
    if let Some(p) = tz.find(['Z', '+', '-']) {
        tz = &tz[p..];
    }
    let off = if tz.starts_with('Z') || tz.is_empty() {
        0
    } else {
        let sign = if tz.starts_with('-') { -1 } else { 1 };
        let h: i64 = tz[1..3].parse().unwrap();
        let mi: i64 = tz[4..6].parse().unwrap();
        sign * (h * 3600 + mi * 60)
    };
    // days from civil (Howard Hinnant)
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    days * 86400 + hh * 3600 + mm * 60 + ss - off
}

/// The raw table of `entity`, as `qbo.entities` names it.
pub fn table_of(c: &mut Client, entity: &str) -> String {
    let t: String = c
        .query_one(
            "SELECT raw_table FROM qbo.entities WHERE entity = $1",
            &[&entity],
        )
        .unwrap()
        .get(0);
    t
}

/// Live rows (Id -> SyncToken) and the Ids marked deleted, of one raw table and realm.
pub fn mirror(
    c: &mut Client,
    entity: &str,
    realm: &str,
) -> (BTreeMap<String, i64>, std::collections::BTreeSet<String>) {
    let t = table_of(c, entity);
    let mut live = BTreeMap::new();
    let mut deleted = std::collections::BTreeSet::new();
    for r in c
        .query(
            &format!(
                "SELECT id, qbo._sync_token(payload), deleted_at_utc IS NOT NULL,
                        last_updated_utc = (payload->'MetaData'->>'LastUpdatedTime')::timestamptz
                   FROM {t} WHERE realm_id = $1"
            ),
            &[&realm],
        )
        .unwrap()
    {
        let id: String = r.get(0);
        assert_eq!(
            r.get::<_, Option<bool>>(3),
            Some(true),
            "{entity} {id}: last_updated_utc is the payload's MetaData.LastUpdatedTime"
        );
        if r.get::<_, bool>(2) {
            deleted.insert(id);
        } else {
            live.insert(id, r.get(1));
        }
    }
    (live, deleted)
}

/// Asserts raw equals the truth under the documented rule: live rows are exactly the live
/// records (same SyncToken); a row is marked deleted exactly when its record was hard-deleted
/// (a record created and deleted between two syncs leaves no row).
pub fn assert_mirrors(c: &mut Client, emu: &Emulator, entity: &str, realm: &str) -> usize {
    let (live, deleted) = mirror(c, entity, realm);
    let truth = emu.truth(realm, entity);
    assert_eq!(live, truth, "{entity}: live rows equal the live records");
    let truth_deleted: std::collections::BTreeSet<String> = emu
        .truth_rows(realm, entity)
        .iter()
        .filter(|r| r["deleted"].as_bool().unwrap_or(false))
        .map(|r| r["Id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        deleted.is_subset(&truth_deleted),
        "{entity}: rows marked deleted that QuickBooks still has: {:?}",
        deleted.difference(&truth_deleted).collect::<Vec<_>>()
    );
    deleted.len()
}

/// A cluster of a test's own (for crashing it), started with `scripts/cluster.sh`.
pub struct PrivateCluster {
    pub dir: PathBuf,
    pub port: u16,
    /// The PostgreSQL bin directory it runs from (the system's by default).
    pub pg_bin: PathBuf,
    /// Extra `postgresql.conf` lines (first start only).
    pub conf: Vec<String>,
}

impl PrivateCluster {
    /// Initialises and starts a cluster in `dir` on `port` (removing what was there).
    pub fn start(dir: &str, port: u16) -> PrivateCluster {
        PrivateCluster::start_with(dir, port, "/usr/lib/postgresql/15/bin", &[])
    }

    /// [`PrivateCluster::start`] from the PostgreSQL in `pg_bin`, with extra configuration lines.
    pub fn start_with(dir: &str, port: u16, pg_bin: &str, conf: &[&str]) -> PrivateCluster {
        let c = PrivateCluster {
            dir: PathBuf::from(dir),
            port,
            pg_bin: PathBuf::from(pg_bin),
            conf: conf.iter().map(|s| s.to_string()).collect(),
        };
        let _ = c.pg_ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&c.dir);
        c.up();
        c
    }

    /// Starts it again (after a crash: crash recovery runs).
    pub fn up(&self) {
        let st = Command::new("bash")
            .arg(repo_root().join("scripts/cluster.sh"))
            .args(["start", &self.dir.to_string_lossy(), &self.port.to_string()])
            .args(&self.conf)
            .env("PG_BIN", &self.pg_bin)
            .status()
            .expect("cluster.sh");
        assert!(st.success(), "cluster.sh start failed");
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::ExitStatus {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.pg_bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w"])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl")
    }

    /// `pg_ctl stop -m fast`: a clean stop (a node taken down on purpose).
    pub fn stop(&self) {
        assert!(self.pg_ctl(&["-m", "fast", "stop"]).success());
    }

    /// `pg_ctl stop -m immediate`: every process killed at once, no shutdown checkpoint.
    pub fn crash(&self) {
        assert!(self.pg_ctl(&["-m", "immediate", "stop"]).success());
    }

    /// Connects as the superuser.
    pub fn connect(&self, db: &str) -> Client {
        Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname={db}",
                self.port
            ),
            NoTls,
        )
        .unwrap_or_else(|e| panic!("cannot connect to {db}: {e}"))
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_parsing() {
        assert_eq!(super::parse_rfc3339("1970-01-01T00:00:00Z"), 0);
        assert_eq!(super::parse_rfc3339("2025-01-01T00:00:00Z"), 1735689600);
        assert_eq!(
            super::parse_rfc3339("2024-12-31T17:00:00-07:00"),
            1735689600
        );
    }
}
