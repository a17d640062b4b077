// In-database suites that cross the layers, run by `cargo pgrx test` inside a transaction that is
// rolled back: the core's jsonb encoder (crates/qbo, no Postgres) against Postgres' own jsonb_in.
// The suites of each layer live beside its code (src/*/tests.rs); everything that COMMITs —
// procedures, workers — is tested end to end in tests/e2e.
use crate::store::raw;
use pgrx::prelude::*;

/// The bytes of a varlena datum.
///
/// # Safety
/// `d` must point to a complete, non-toasted varlena (such as an input function's fresh
/// result) that stays allocated for the call.
unsafe fn varlena_bytes(d: pg_sys::Datum) -> Vec<u8> {
    let p = d.cast_mut_ptr::<pg_sys::varlena>();
    // SAFETY: `p` is a complete in-memory varlena (our caller's guarantee), so varsize_any
    // reads its header and the whole length it gives is readable; the bytes are copied out.
    unsafe { std::slice::from_raw_parts(p as *const u8, pgrx::varsize_any(p)).to_vec() }
}

/// PostgreSQL's own jsonb of `text` (after the `\u0000` policy), `None` where it raises.
fn postgres_jsonb(text: &str) -> Option<Vec<u8>> {
    let text = qbo::jsonb::storable(text).into_owned();
    PgTryBuilder::new(move || {
        // SAFETY: jsonb_in's result is a fresh jsonb varlena palloc'd in the current memory
        // context (never toasted), still allocated while its bytes are copied.
        raw::jsonb_in(&text).ok().map(|d| unsafe { varlena_bytes(d) })
    })
    .catch_others(|_| None)
    .execute()
}

/// Every QBO sample document: where the network thread's encoder writes jsonb, its bytes are
/// exactly jsonb_in's, and it declines none of them.
#[pg_test]
fn jsonb_encoder_writes_jsonb_in_bytes_for_every_qbo_sample() {
    assert!(raw::database_is_utf8());
    let mut files = Vec::new();
    let mut dirs = vec![qbo::fault::samples_dir()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                files.push(p);
            }
        }
    }
    files.sort();
    let (mut same, mut invalid) = (0, 0);
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        let ours = qbo::jsonb::encode::encode(&text);
        let theirs = postgres_jsonb(&text);
        match (&ours, &theirs) {
            (Some(o), Some(t)) => {
                assert!(o == t, "{}: encoder bytes differ from jsonb_in", f.display());
                same += 1;
            }
            (Some(_), None) => panic!("{}: encoded what jsonb_in rejects", f.display()),
            // no sample has an exponent or a repeated key: none may be declined
            (None, Some(_)) => panic!("{}: declined a plain QBO document", f.display()),
            (None, None) => invalid += 1,
        }
    }
    // 128 of the 136 files are JSON (the rest are XML or HTML error bodies named .json)
    assert!(same >= 120, "only {same} of {} samples compared ({invalid} not JSON)", files.len());
}

/// Generated documents (seeded): deep and wide containers (past the 32-entry offset stride),
/// keys in every length order, escapes, surrogate pairs, `\u0000`, numbers of every scale and
/// weight (short and long numeric headers, negative zero): byte-identical to jsonb_in.
#[pg_test]
fn jsonb_encoder_writes_jsonb_in_bytes_for_generated_documents() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261128);
    fn digits(rng: &mut rand::rngs::StdRng, n: usize, lead_nonzero: bool) -> String {
        (0..n)
            .map(|i| {
                let lo = if i == 0 && lead_nonzero { 1 } else { 0 };
                char::from(b'0' + rng.random_range(lo..10u8))
            })
            .collect()
    }
    fn number(rng: &mut rand::rngs::StdRng) -> String {
        let mut s = String::new();
        if rng.random_bool(0.3) {
            s.push('-');
        }
        if rng.random_bool(0.3) {
            s.push('0');
        } else {
            let n = rng.random_range(1..30);
            s.push_str(&digits(rng, n, true));
        }
        if rng.random_bool(0.6) {
            s.push('.');
            let n = *[1, 2, 3, 4, 5, 8, 63, 64, 70].get(rng.random_range(0..9)).unwrap();
            if rng.random_bool(0.3) {
                s.push_str(&"0".repeat(rng.random_range(1..300)));
            }
            s.push_str(&digits(rng, n, false));
        }
        s
    }
    fn string(rng: &mut rand::rngs::StdRng) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "0", " ", "é", "日本", "😀", "\\\"", "\\\\", "\\/", "\\n", "\\t", "\\r",
            "\\b", "\\f", "\\u00e9", "\\u65e5", "\\ud83d\\ude00", "\\u0000", "\\u001f", "x y",
        ];
        let n = rng.random_range(0..12);
        let body: String = (0..n).map(|_| PIECES[rng.random_range(0..PIECES.len())]).collect();
        format!("\"{body}\"")
    }
    fn value(rng: &mut rand::rngs::StdRng, depth: u32) -> String {
        let pick = if depth >= 4 { rng.random_range(0..5) } else { rng.random_range(0..7) };
        match pick {
            0 => "null".into(),
            1 => if rng.random_bool(0.5) { "true".into() } else { "false".into() },
            2 => number(rng),
            3 | 4 => string(rng),
            5 => {
                let n = *[0, 1, 2, 31, 32, 33, 65].get(rng.random_range(0..7)).unwrap();
                let items: Vec<String> = (0..n).map(|_| value(rng, depth + 1)).collect();
                format!("[{}]", items.join(if rng.random_bool(0.5) { "," } else { " ,\n " }))
            }
            _ => {
                let n = *[0, 1, 3, 16, 33, 40].get(rng.random_range(0..6)).unwrap();
                // distinct after unescaping ("é" and "\u00e9" are one key): a numbered prefix
                let pairs: Vec<String> = (0..n)
                    .map(|i| {
                        let body = string(rng);
                        let key = format!("\"{i}|{}", &body[1..]);
                        format!("{key}:{}", value(rng, depth + 1))
                    })
                    .collect();
                format!("{{{}}}", pairs.join(","))
            }
        }
    }
    let mut compared = 0;
    for _ in 0..1500 {
        let doc = value(&mut rng, 0);
        let ours = qbo::jsonb::encode::encode(&doc);
        let theirs = postgres_jsonb(&doc);
        match (ours, theirs) {
            (Some(o), Some(t)) => {
                assert!(o == t, "encoder bytes differ from jsonb_in for {doc}");
                compared += 1;
            }
            (o, t) => panic!("encoder {:?} / jsonb_in {:?} for {doc}", o.is_some(), t.is_some()),
        }
    }
    assert_eq!(compared, 1500);
}

