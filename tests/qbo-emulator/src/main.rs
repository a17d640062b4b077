use std::io::Write;

use clap::Parser;
use qbo_emulator::cli::Cli;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let cfg = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let server = match qbo_emulator::spawn(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start: {e:#}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", server.url());
    let _ = out.flush();
    server.wait().await;
}
