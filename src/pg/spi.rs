//! SQL through SPI, always with `search_path` pinned to `pg_catalog, pg_temp`, as the caller or as
//! the extension owner (see README's Trust model).

use crate::pg::error::PgError;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiResult;

/// The `search_path` every statement of pg_qbo runs under: nothing a caller (or any role that may
/// create in a schema on the caller's path) made can be resolved by name, whether the statement
/// runs as the caller or as the extension owner. `pg_temp` is named last so that it is never
/// searched before `pg_catalog` (functions and operators are never looked up in it at all).
pub const SAFE_SEARCH_PATH: &std::ffi::CStr = c"pg_catalog, pg_temp";

thread_local! {
    /// The extension owner, read once per execution (see [`forget_owner`]).
    static OWNER: std::cell::Cell<Option<pg_sys::Oid>> = const { std::cell::Cell::new(None) };
}

/// The role that owns the extension (its tables hold the secrets and the ledger).
pub fn extension_owner() -> pg_sys::Oid {
    if let Some(o) = OWNER.with(|c| c.get()) {
        return o;
    }
    // no row: pg_qbo was dropped during a run; its cleanup then runs as the current role
    let o = optional(pinned(|| {
        Spi::get_one::<pg_sys::Oid>(
            "SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'pg_qbo'",
        )
    }))
    .unwrap_or_else(|e| PgError::db("pg_qbo extension owner", e).raise())
    // SAFETY: on the backend's own thread, in a session whose user InitPostgres has set (an SQL
    // function or a connected worker is running): GetUserId only reads that backend global.
    .unwrap_or_else(|| unsafe { pg_sys::GetUserId() });
    OWNER.with(|c| c.set(Some(o)));
    o
}

/// Forgets the cached extension owner (an entry point starting: the extension may have been
/// dropped and created again by another role since this backend last looked).
pub fn forget_owner() {
    OWNER.with(|c| c.set(None));
}

/// Runs `f` with `search_path` set to [`SAFE_SEARCH_PATH`], for exactly that span: the previous
/// value is restored when `f` returns or raises, as `SET search_path` on a function does (a GUC
/// nest level of its own). `f` must not commit (a commit pops every nest level).
pub fn pinned<R>(f: impl FnOnce() -> R) -> R {
    with_setting(c"search_path", SAFE_SEARCH_PATH, f)
}

/// Runs `f` with `client_min_messages = warning`, for exactly that span (as [`pinned`]): the
/// NOTICEs of statements pg_qbo runs on its own behalf (the DDL of a raw table) never reach the
/// caller, whose NOTICEs are the run's progress. `f` must not commit.
pub fn quiet<R>(f: impl FnOnce() -> R) -> R {
    with_setting(c"client_min_messages", c"warning", f)
}

/// Runs `f` with `lock_timeout` at `timeout` (`c"5s"`), for exactly that span (as [`pinned`]): a
/// statement that must wait for a lock another session holds gives up with SQLSTATE 55P03 (DDL on
/// a table a long report is reading), instead of waiting, and queueing every later reader of the
/// table behind it, for as long as that session lasts. `f` must not commit.
pub fn lock_timeout<R>(timeout: &'static std::ffi::CStr, f: impl FnOnce() -> R) -> R {
    with_setting(c"lock_timeout", timeout, f)
}

/// Runs `f` with setting `name` at `value` in a GUC nest level of its own, restored when `f`
/// returns or raises. `f` must not commit (a commit pops every nest level).
fn with_setting<R>(
    name: &'static std::ffi::CStr,
    value: &'static std::ffi::CStr,
    f: impl FnOnce() -> R,
) -> R {
    // SAFETY: on the backend's own thread inside a transaction (GUC nest levels belong to one);
    // the level is popped by AtEOXact_GUC below, or by the transaction's abort.
    let level = unsafe { pg_sys::NewGUCNestLevel() };
    // SAFETY: same thread and transaction; both strings are static and NUL-terminated, and
    // set_config_option copies them. GUC_ACTION_SAVE records the old value at the nest level
    // just opened, as a function's `SET` clause does, and elevel 0 makes a failure an ERROR.
    // Every setting it is called with (search_path, client_min_messages, lock_timeout) is
    // PGC_USERSET.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
    PgTryBuilder::new(std::panic::AssertUnwindSafe(f))
        // SAFETY: same thread; `level` is the nest level opened above, still open because `f`
        // must not commit (see above): this restores the setting whether `f` returned or raised.
        .finally(|| unsafe { pg_sys::AtEOXact_GUC(true, level) })
        .execute()
}

/// Runs `f` as the extension's owner, like a SECURITY DEFINER function with `SET search_path` but
/// reachable only from this code: credentials, tokens, the ledger, raw-table DDL and the page
/// upsert run this way, so the roles that run or read backfills need no privilege on them (and
/// cannot read a secret, forge a run's settings or write `raw.*` by hand). What runs under the
/// switch resolves nothing from the caller's `search_path` ([`pinned`]) and every SQL text is
/// schema-qualified, operators included; restricted-operation mode is on as well. Objects the
/// statements reach that a table owner can attach code to (raw tables) are checked first by
/// [`check_raw_trust`].
pub fn as_owner<R>(f: impl FnOnce() -> R) -> R {
    let owner = extension_owner();
    let (mut uid, mut ctx) = (pg_sys::InvalidOid, 0i32);
    // SAFETY: on the backend's own thread; both out-parameters are locals.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut uid, &mut ctx) };
    // SAFETY: on the backend's own thread, what fmgr_security_definer does for a SECURITY
    // DEFINER function: switch to an existing role (`owner` comes from pg_extension, or is the
    // current user), keeping the current flags and adding LOCAL_USERID_CHANGE and
    // RESTRICTED_OPERATION; restored below in `finally`, and by the abort of the transaction if
    // an ERROR escapes.
    unsafe {
        pg_sys::SetUserIdAndSecContext(
            owner,
            ctx | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION)
                as i32,
        )
    };
    PgTryBuilder::new(std::panic::AssertUnwindSafe(|| pinned(f)))
        // SAFETY: same thread; restores exactly the user and flags read above, whether `f`
        // returned or raised.
        .finally(|| unsafe { pg_sys::SetUserIdAndSecContext(uid, ctx) })
        .execute()
}

/// [`Spi::connect_mut`] as the extension's owner.
pub fn owner_connect<R>(
    f: impl FnOnce(&mut pgrx::spi::SpiClient<'_>) -> SpiResult<R>,
) -> SpiResult<R> {
    as_owner(|| Spi::connect_mut(f))
}

/// [`exec`] as the extension's owner.
pub fn owner_exec(sql: &str, args: &[DatumWithOid]) -> SpiResult<()> {
    as_owner(|| exec(sql, args))
}

/// Runs `sql` with parameters as the caller, returning nothing ([`pinned`]).
pub fn exec(sql: &str, args: &[DatumWithOid]) -> SpiResult<()> {
    pinned(|| Spi::connect_mut(|c| c.update(sql, None, args).map(|_| ())))
}

/// The value of a query that may return no row (`Spi::get_one` calls that an error): `None`
/// for no row or a NULL, the error for anything else.
pub fn optional<T>(r: SpiResult<Option<T>>) -> SpiResult<Option<T>> {
    match r {
        Err(pgrx::spi::Error::InvalidPosition) => Ok(None),
        r => r,
    }
}

/// One value of a query run as the caller ([`pinned`]).
pub fn one<T: pgrx::FromDatum + pgrx::IntoDatum>(
    sql: &str,
    args: &[DatumWithOid],
) -> SpiResult<Option<T>> {
    pinned(|| Spi::get_one_with_args::<T>(sql, args))
}
