//! One run: what was asked ([`request`]), its execution ([`executor`], one code path for every
//! entry point), the access tokens it uses ([`tokens`]), the realm's shared request limiter
//! ([`limiter`]), a sync of a company's entities ([`sync`]), the background worker of the set-returning and detached entry points
//! ([`worker`]), the pg_cron job of a scheduled run ([`cron`]), cancelling a run by its id
//! ([`cancel`]) and the progress text it prints ([`notices`]).

pub mod cancel;
pub mod cron;
pub mod executor;
pub mod limiter;
pub mod notices;
pub mod request;
pub mod sync;
pub mod tokens;
pub mod worker;

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    include!("tests.rs");
}
