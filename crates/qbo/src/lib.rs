//! qbo: pg_qbo's core, in plain Rust that never touches Postgres.
//!
//! Everything here runs and is tested without a database (`cargo test -p qbo`); the extension
//! crate (`pg_qbo`, the repository's root) depends on it and supplies what needs Postgres: the
//! SQL surface, the run ledger, the raw tables, settings and interrupt checks. The compiler keeps
//! the layers apart: this crate has no pgrx in its dependency tree, so nothing here can call a
//! Postgres API (which must only ever run on the backend's own thread).
//!
//! What each module owns:
//! - [`entities`]: the catalog of QBO entities (API names, raw table names, queryability).
//! - [`query`]: the text of QBO queries (time windows, ordering, paging clauses).
//! - [`plan`]: cutting `[fecha_inicio, fecha_fin)` into chunks.
//! - [`pager`]: paging one chunk by a time cursor, exactly (no record missed or repeated at page
//!   and chunk boundaries), with resumable cursors.
//! - [`slices`]: cutting a chunk into windows fetched concurrently.
//! - [`offsets`]: reading a past window by STARTPOSITION, every page at once, each page proven to
//!   continue the last before it is taken.
//! - [`client`]: the HTTP client of the Accounting API (one request per call, classified).
//! - [`cdc`]: Change Data Capture calls and answers (tombstones, the cap, the next watermark).
//! - [`deletes`]: finding deleted records where CDC cannot tell, by comparing counts.
//! - [`oauth`]: the OAuth2 refresh-token grant; [`lifetime`]: how long a token is believed.
//! - [`fault`]: Intuit's fault bodies; [`error`]: the core error type, masking of upstream text.
//! - [`retry`]: backoff with jitter, `Retry-After`, and the rule of what is retried.
//! - [`dispatch`]: the run loop's decisions without I/O (back-pressure, 401s, backoffs).
//! - [`net`]: the network thread that runs requests while the backend writes.
//! - [`runtime`]: async waits that call the caller's interrupt check every 50 ms.
//! - [`budget`]: the memory bound of a run.
//! - [`jsonb`]: what jsonb cannot store, and the encoder of records into jsonb's binary format.

pub mod budget;
pub mod cdc;
pub mod client;
pub mod deletes;
pub mod dispatch;
pub mod entities;
pub mod error;
pub mod fault;
pub mod jsonb;
pub mod lifetime;
pub mod net;
pub mod oauth;
pub mod offsets;
pub mod pager;
pub mod plan;
pub mod poll;
pub mod query;
pub mod retry;
pub mod runtime;
pub mod slices;
