//! Token-rotation soak: the emulator rotates the refresh token on every use and invalidates the old
//! one; access tokens live 2 s (so pg_qbo refreshes before every request); 401s and 5xx are
//! injected; 100 runs, a third of them cancelled or terminated at a seeded random point and then
//! resumed. No run may ever need new credentials (no invalid_grant).

use pg_qbo_e2e::*;
use std::time::{Duration, Instant};

const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2025-09-11T00:00:00Z";

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn hundred_runs_with_rotating_tokens_kills_and_cancels_never_lose_the_refresh_token() {
    let emu = Emulator::start(&[
        "--seed",
        "91",
        "--rotate-refresh",
        "always",
        "--access-token-ttl",
        "2",
        "--faults",
        "401:0.08,503html:0.05",
    ]);
    let mut admin = fresh_db("e2e_token_soak", &emu);
    let mut rng = Lcg(20261128);
    let (mut cancelled, mut terminated) = (0, 0);
    let t0 = Instant::now();
    let entities = [
        ("Term", "qb_terms"),
        ("Class", "qb_classes"),
        ("Department", "qb_departments"),
        ("PaymentMethod", "qb_payment_methods"),
    ];
    for i in 0..100u64 {
        let (entity, _) = entities[(i % 4) as usize];
        let mut c = connect("e2e_token_soak");
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        let action = rng.next(6); // 0: cancel, 1: terminate, else run through
        if action < 2 {
            emu.hold(1 + rng.next(3));
        }
        let h = std::thread::spawn(move || {
            c.query_one(
                "CALL qbo.run_backfill($1, $2::text::timestamptz, $3::text::timestamptz, 400, 20)",
                &[&entity, &FROM, &TO],
            )
            .map(|r| r.get::<_, i64>(0))
            .map_err(|e| e.to_string())
        });
        if action < 2 {
            emu.wait_held();
            if action == 0 {
                admin
                    .execute("SELECT pg_cancel_backend($1)", &[&pid])
                    .unwrap();
                cancelled += 1;
            } else {
                admin
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .unwrap();
                terminated += 1;
            }
            assert!(h.join().unwrap().is_err());
            emu.release();
            let run_id: i64 = admin
                .query_one("SELECT max(run_id) FROM qbo.runs", &[])
                .unwrap()
                .get(0);
            // the run is cancelled (or, once its dead backend is noticed, interrupted): resume it
            let t = Instant::now();
            loop {
                admin
                    .batch_execute("SELECT qbo._mark_interrupted()")
                    .unwrap();
                let s: String = admin
                    .query_one("SELECT status FROM qbo.runs WHERE run_id = $1", &[&run_id])
                    .unwrap()
                    .get(0);
                if s == "cancelled" || s == "interrupted" {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "run {run_id} stayed {s}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            admin
                .query("SELECT * FROM qbo.resume($1)", &[&run_id])
                .unwrap_or_else(|e| panic!("resume {run_id}: {e}"));
        } else {
            h.join().unwrap().unwrap_or_else(|e| panic!("run {i}: {e}"));
        }
    }
    let stats = emu.stats();
    println!(
        "token soak: 100 runs ({cancelled} cancelled, {terminated} terminated, all resumed) in {:.1} s; {} token refreshes (each rotating the refresh token), {} access tokens issued, invalid_grant {}",
        t0.elapsed().as_secs_f64(),
        stats["token_refreshes"],
        stats["access_tokens_issued"],
        stats["invalid_grant"]
    );
    assert_eq!(
        stats["invalid_grant"].as_i64(),
        Some(0),
        "a refresh token was lost: {stats}"
    );
    let not_done: i64 = admin
        .query_one(
            "SELECT count(*) FROM qbo.runs WHERE status <> 'succeeded'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(not_done, 0);
    for (entity, table) in entities {
        assert_eq!(
            raw(&mut admin, table, REALM1),
            truth_in_window(&emu, REALM1, entity, FROM, TO),
            "{entity}"
        );
    }
}
