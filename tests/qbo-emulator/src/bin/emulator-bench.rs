//! Benchmark: pages/s and MB/s of 1000-row Invoice pages served on loopback.
//!
//! Starts an emulator in-process (rate and concurrency limits lifted), warms the payload cache,
//! then runs `--connections` keep-alive HTTP/1.1 clients (a minimal raw client, so the client
//! costs little) that page through the invoices with
//! `ORDERBY MetaData.LastUpdatedTime STARTPOSITION s MAXRESULTS 1000` for `--seconds`.
//!
//! `cargo run --release -p qbo-emulator --bin emulator-bench -- --invoices 100000`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use qbo_emulator::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// Invoices in the benchmark realm.
    #[arg(long, default_value_t = 100_000)]
    invoices: usize,
    /// Concurrent keep-alive client connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measured duration.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Tokio worker threads of the in-process server and clients.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

const REALM: &str = "9341452000000001";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn get(
    conn: &mut BufReader<TcpStream>,
    path: &str,
    token: &str,
) -> anyhow::Result<(u16, usize)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes()).await?;
    // Headers.
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status: u16 = head.split(' ').nth(1).unwrap_or("0").parse()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .ok_or_else(|| anyhow::anyhow!("no content-length"))?
        .parse()?;
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    Ok((status, len))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = Config::from_args([
        "--listen".to_string(),
        "127.0.0.1:0".into(),
        "--realm".into(),
        REALM.into(),
        "--records".into(),
        format!("Invoice={}", args.invoices),
        "--rate-limit".into(),
        "1000000000".into(),
        "--rate-limit-per-second".into(),
        "1000000000".into(),
        "--max-concurrent".into(),
        "100000".into(),
    ])?;
    let t = Instant::now();
    let server = qbo_emulator::spawn(cfg).await?;
    eprintln!(
        "generated {} invoices in {:.2?}",
        args.invoices,
        t.elapsed()
    );
    let token = server
        .app
        .tokens
        .lock()
        .unwrap()
        .refresh("emu-refresh-token-0")
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .access_token;
    let pages = args.invoices.div_ceil(1000);
    let path = |i: usize| {
        let q = format!(
            "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime STARTPOSITION {} MAXRESULTS 1000",
            (i % pages) * 1000 + 1
        );
        format!(
            "/v3/company/{REALM}/query?query={}&minorversion=75",
            url_encode(&q)
        )
    };
    // Warm-up: render every payload once.
    let t = Instant::now();
    let mut conn = BufReader::with_capacity(1 << 16, TcpStream::connect(server.addr).await?);
    let mut warm_bytes = 0;
    for i in 0..pages {
        let (s, n) = get(&mut conn, &path(i), &token).await?;
        anyhow::ensure!(s == 200, "warm-up status {s}");
        warm_bytes += n;
    }
    eprintln!(
        "warm-up (first render) of {pages} pages, {:.1} MB in {:.2?}",
        warm_bytes as f64 / 1e6,
        t.elapsed()
    );

    let done = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (done, bytes, token) = (Arc::clone(&done), Arc::clone(&bytes), token.clone());
        let addr = server.addr;
        let paths: Vec<String> = (0..pages).map(path).collect();
        tasks.push(tokio::spawn(async move {
            let mut conn = BufReader::with_capacity(1 << 16, TcpStream::connect(addr).await?);
            let mut i = c * 7;
            while Instant::now() < deadline {
                let (s, n) = get(&mut conn, &paths[i % paths.len()], &token).await?;
                anyhow::ensure!(s == 200, "status {s}");
                done.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                i += 1;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed) as f64;
    let b = bytes.load(Ordering::Relaxed) as f64;
    println!(
        "served {n:.0} pages of 1000 invoices ({:.0} B/invoice) in {secs:.2} s over {} connections: {:.1} pages/s, {:.1} MB/s",
        b / n / 1000.0,
        args.connections,
        n / secs,
        b / secs / 1e6
    );
    Ok(())
}
