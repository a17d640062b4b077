//! The memory one run may hold on behalf of QuickBooks' answers (`qbo.max_buffer_mb`), and how it
//! is shared out: pure arithmetic, no I/O.
//!
//! A run holds two kinds of things whose size QBO (or whatever answers in its place) decides:
//!
//! - **Pages**: response bodies being read or waiting to be parsed, and the records parsed from
//!   them until they are written. The executor keeps at most `max_in_flight` requests in flight
//!   and at most `max_in_flight + slack` pages in flight, read, or waiting to be written
//!   ([`crate::dispatch::slack`]: `max_in_flight` when requests run concurrently, 0 for the
//!   sequential pager); the network thread's parser takes one response at a time, and a response
//!   being parsed holds its body and its records together for a moment. So at most
//!   `2 × max_in_flight + 1` page-sized things exist at once (2 for the sequential pager), and
//!   three quarters of the budget divided by that many is the cap of one response: its body, and
//!   again its records once parsed ([`MemoryBudget::response_cap`]).
//! - **Ids of a second**: a second holding a full page or more is read by STARTPOSITION passes
//!   until the distinct Ids seen equal its `count(*)`, and those Ids are kept in memory. The
//!   remaining quarter bounds them, for all the seconds of a run read at once
//!   ([`IdBudget`]); `count(*)` itself is never trusted for that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Default of `qbo.max_buffer_mb`.
pub const DEFAULT_BUFFER_MB: u32 = 256;
/// Smallest `qbo.max_buffer_mb`.
pub const MIN_BUFFER_MB: u32 = 32;
/// Largest `qbo.max_buffer_mb` (64 GiB).
pub const MAX_BUFFER_MB: u32 = 65_536;
/// A response cap is never below this: QBO pages of a thousand records are commonly a few MB,
/// so a smaller cap would fail ordinary runs (the README states the bound with it).
pub const MIN_RESPONSE_CAP: usize = 4 * 1024 * 1024;
/// Nor above this, whatever the budget: no QBO page comes near it.
pub const MAX_RESPONSE_CAP: usize = 64 * 1024 * 1024;

const MIB: u64 = 1024 * 1024;

/// Bytes one record parsed from a page holds besides its Id and payload: the `RawRecord` itself
/// (its slot in the page's `Vec`), and the allocator's header and rounding of its two heap
/// blocks.
pub const RECORD_OVERHEAD: usize = 128;

/// Bytes one Id takes in one of a second's sets besides its own length: the `String` (24), its
/// share of a B-tree node (the map also stores the SyncToken) and the allocator's header and
/// rounding. Measured: 85 bytes per 7-byte Id in the map, 72 in the set (glibc, Ids inserted in
/// random order); this rounds up.
pub const ID_ENTRY_OVERHEAD: u64 = 96;

/// What one Id costs in one set.
pub fn id_entry_cost(id: &str) -> u64 {
    ID_ENTRY_OVERHEAD + id.len() as u64
}

/// The memory budget of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// `qbo.max_buffer_mb`.
    pub buffer_mb: u32,
    /// `qbo.max_in_flight`.
    pub max_in_flight: u32,
}

impl MemoryBudget {
    pub fn new(buffer_mb: u32, max_in_flight: u32) -> MemoryBudget {
        MemoryBudget {
            buffer_mb: buffer_mb.max(1),
            max_in_flight: max_in_flight.max(1),
        }
    }

    /// The whole budget in bytes.
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.buffer_mb) * MIB
    }

    /// The quarter that bounds the Ids of the seconds being read.
    pub fn id_bytes(&self) -> u64 {
        self.total_bytes() / 4
    }

    /// Page-sized things that may exist at once: `max_in_flight + slack` pages in flight, read
    /// or waiting to be written, and one more for the response being parsed (body and records
    /// together).
    pub fn page_slots(&self) -> u64 {
        let concurrent = self.max_in_flight > 1;
        u64::from(self.max_in_flight)
            + u64::from(crate::dispatch::slack(self.max_in_flight, concurrent))
            + 1
    }

    /// The cap of one response body, and of the records parsed from it: three quarters of the
    /// budget over [`MemoryBudget::page_slots`], within [`MIN_RESPONSE_CAP`] and
    /// [`MAX_RESPONSE_CAP`].
    pub fn response_cap(&self) -> usize {
        let share = (self.total_bytes() - self.id_bytes()) / self.page_slots();
        usize::try_from(share)
            .unwrap_or(usize::MAX)
            .clamp(MIN_RESPONSE_CAP, MAX_RESPONSE_CAP)
    }

    /// What the pages and the Ids may hold together: the budget, unless the
    /// [`MIN_RESPONSE_CAP`] floor lifts the pages' part above their three quarters.
    pub fn bound_bytes(&self) -> u64 {
        self.page_slots() * self.response_cap() as u64 + self.id_bytes()
    }

    /// The shared Id budget of a run.
    pub fn ids(&self) -> IdBudget {
        IdBudget::new(self.buffer_mb, self.id_bytes())
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::new(DEFAULT_BUFFER_MB, crate::client::DEFAULT_MAX_IN_FLIGHT)
    }
}

/// The bytes of Ids the pagers of one run may hold together (every pager of the run gets a clone;
/// each charges what its sets hold and gives it back when it lets them go or is dropped).
#[derive(Debug, Clone)]
pub struct IdBudget {
    inner: Arc<IdBudgetInner>,
}

#[derive(Debug)]
struct IdBudgetInner {
    buffer_mb: u32,
    limit: u64,
    held: AtomicU64,
}

impl IdBudget {
    /// A budget of `limit` bytes, reported as part of `qbo.max_buffer_mb = buffer_mb`.
    pub fn new(buffer_mb: u32, limit: u64) -> IdBudget {
        IdBudget {
            inner: Arc::new(IdBudgetInner {
                buffer_mb,
                limit,
                held: AtomicU64::new(0),
            }),
        }
    }

    /// The budget of the default `qbo.max_buffer_mb`.
    pub fn default_budget() -> IdBudget {
        MemoryBudget::default().ids()
    }

    /// Bytes the pagers may hold together.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// `qbo.max_buffer_mb` this budget is a part of.
    pub fn buffer_mb(&self) -> u32 {
        self.inner.buffer_mb
    }

    /// Bytes the pagers hold now.
    pub fn held(&self) -> u64 {
        self.inner.held.load(Ordering::Relaxed)
    }

    /// Replaces a charge of `old` bytes by one of `new`.
    pub(crate) fn recharge(&self, old: u64, new: u64) {
        if new >= old {
            self.inner.held.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.inner.held.fetch_sub(old - new, Ordering::Relaxed);
        }
    }

    /// True when both handles share one budget.
    pub fn same(&self, other: &IdBudget) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_cap_follows_the_budget_and_the_requests_in_flight() {
        let b = MemoryBudget::new(256, 10);
        // three quarters of 256 MiB over 2 x 10 + 1 page slots
        assert_eq!(b.page_slots(), 21);
        assert_eq!(b.response_cap(), 192 * 1024 * 1024 / 21);
        assert_eq!(b.id_bytes(), 64 * 1024 * 1024);
        assert!(b.bound_bytes() <= b.total_bytes());
        assert_eq!(
            MemoryBudget::new(512, 10).response_cap(),
            2 * b.response_cap() + 1
        );
        // fewer requests in flight: bigger responses allowed, same bound
        let four = MemoryBudget::new(256, 4);
        assert_eq!(four.response_cap(), 192 * 1024 * 1024 / 9);
        assert!(four.bound_bytes() <= four.total_bytes());
        // the sequential pager: one page in flight or waiting, and the one being parsed
        let one = MemoryBudget::new(256, 1);
        assert_eq!(one.page_slots(), 2);
        assert_eq!(one.response_cap(), MAX_RESPONSE_CAP);
        assert!(one.bound_bytes() <= one.total_bytes());
        // the floor: 100 requests in flight of a 32 MB budget
        let tight = MemoryBudget::new(32, 100);
        assert_eq!(tight.response_cap(), MIN_RESPONSE_CAP);
        assert_eq!(tight.bound_bytes(), 201 * 4 * 1024 * 1024 + 8 * 1024 * 1024);
        // the ceiling: a huge budget
        assert_eq!(
            MemoryBudget::new(MAX_BUFFER_MB, 10).response_cap(),
            MAX_RESPONSE_CAP
        );
        // the default
        assert_eq!(MemoryBudget::default(), MemoryBudget::new(256, 10));
    }

    #[test]
    fn a_record_fits_its_overhead() {
        assert!(std::mem::size_of::<crate::pager::RawRecord>() + 2 * 24 <= RECORD_OVERHEAD);
    }

    #[test]
    fn an_id_budget_is_shared_by_its_clones() {
        let a = MemoryBudget::new(256, 10).ids();
        let b = a.clone();
        assert!(a.same(&b) && !a.same(&IdBudget::default_budget()));
        a.recharge(0, 500);
        b.recharge(0, 300);
        b.recharge(300, 100);
        assert_eq!((a.held(), a.limit(), a.buffer_mb()), (600, 64 << 20, 256));
        a.recharge(500, 0);
        b.recharge(100, 0);
        assert_eq!(b.held(), 0);
    }
}
