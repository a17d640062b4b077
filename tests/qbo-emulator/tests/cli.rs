//! The binary: `--help`, the ready line, and clear errors for bad flags.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_qbo-emulator");

#[test]
fn help_documents_every_flag() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--seed",
        "--realm",
        "--records",
        "--data-from",
        "--data-to",
        "--company-offset",
        "--client-id",
        "--client-secret",
        "--refresh-token",
        "--rotate-refresh",
        "--access-token-ttl",
        "--latency-ms",
        "--latency-per-row-us",
        "--faults",
        "--rate-limit",
        "--rate-limit-per-second",
        "--max-concurrent",
        "--max-consecutive-faults",
        "429json-ra",
        "@nth=N",
        "badexpires",
        "expires0",
        "echoauth",
        "flood[=BYTES]",
        "countlie=N",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_flags_fail_naming_the_value() {
    for (args, needle) in [
        (vec!["--faults", "429jsonn"], "429jsonn"),
        (vec!["--faults", "500json:2"], "2"),
        (vec!["--rotate-refresh", "sometimes"], "sometimes"),
        (vec!["--records", "Invoices=5"], "Invoices"),
        (vec!["--records", "Invoice=lots"], "lots"),
        (vec!["--company-offset", "PST"], "PST"),
        (vec!["--data-from", "yesterday"], "yesterday"),
        (vec!["--realm", "abc"], "abc"),
        (vec!["--seed", "-x"], "-x"),
        (
            vec!["--rate-limit-per-second", "0"],
            "--rate-limit-per-second",
        ),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn prints_one_ready_line() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--records", "Invoice=10"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    let addr = line
        .trim()
        .strip_prefix("listening on http://127.0.0.1:")
        .expect(&line);
    assert!(addr.parse::<u16>().unwrap() > 0);
}
