//! `qbo-emulator`: a faithful, fault-injecting stand-in for the QuickBooks Online Accounting API v3
//! and Intuit's OAuth2 token endpoint, for tests and benchmarks of pg_qbo.
//!
//! Built on axum 0.8 over hyper 1 and tokio: the maintained, standard Rust HTTP stack. hyper is
//! used directly for the connection loop so that a handler can reset its own connection (fault
//! `reset`) and response bodies can hold a throttle slot until fully written; axum does the routing
//! and extraction. Payloads are rendered once per record version into cached JSON strings and
//! pages are assembled by concatenation, so serving a 1000-invoice page is a memcpy.
//!
//! Modules: [`cli`] (flags), [`entity`], [`data`] (deterministic generator and renderer),
//! [`query`] (parser), [`exec`] (query execution, tie shuffling), [`faults`], [`throttle`],
//! [`oauth`] (+ `oauth_http`), [`api`] (QBO endpoints), [`control`] (`/__emulator/`),
//! [`state`], [`server`].

pub mod api;
pub mod cli;
pub mod control;
pub mod data;
pub mod entity;
pub mod exec;
pub mod faults;
pub mod json;
pub mod oauth;
pub mod oauth_http;
pub mod query;
pub mod server;
pub mod state;
pub mod throttle;
pub mod util;

pub use cli::Config;
pub use server::{start, Server};
pub use state::App;

/// Starts an emulator with `cfg` (use port 0 for a free port).
pub async fn spawn(cfg: Config) -> anyhow::Result<Server> {
    server::start(App::new(cfg)).await
}
