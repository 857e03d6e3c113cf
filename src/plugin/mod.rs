//! Front ends the Dovecot plugin talks to.
//!
//! Each one only frames requests and answers; the meaning of a registration
//! or notification lives in [`crate::service`].

pub mod http;
pub mod json;
pub mod legacy;

use portable_atomic::AtomicU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::log_gate::{held_back, LogGate};

/// Connection and request counters of one front end, for metrics.
#[derive(Default, Debug)]
pub struct FrontEndStats {
    pub open: AtomicUsize,
    pub accepted: AtomicU64,
    pub refused_over_limit: AtomicU64,
    pub requests: AtomicU64,
    pub bad_requests: AtomicU64,
    /// Requests the store could not serve (503): a full disk fails every
    /// registration, so their log line is gated.
    store_failure_log: LogGate,
}

impl FrontEndStats {
    /// Counts a new connection unless `max` are already open; the returned
    /// slot un-counts it when dropped, however the connection task ends.
    /// A refusal is logged, at doubling intervals so a flood cannot fill
    /// the log; `who` names the connection in that line.
    pub fn admit(self: &Arc<Self>, max: usize, who: &dyn std::fmt::Display) -> Option<OpenSlot> {
        if self.open.load(Ordering::Relaxed) >= max {
            let n = self.refused_over_limit.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log::warn!("{who} closed: {max} already open ({n} refused so far)");
            }
            return None;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Some(OpenSlot(Arc::clone(self)))
    }
}

impl FrontEndStats {
    /// Logs a request that failed on our side (503) at error level: at most
    /// once a minute per front end, with the count held back since.
    pub fn log_failure(&self, who: &dyn std::fmt::Display, reason: &str) {
        if let Some(held) = self.store_failure_log.pass() {
            log::error!("{who} failed (503): {reason}{}", held_back(held));
        }
    }
}

/// One open connection, counted in [`FrontEndStats::open`] while alive.
pub struct OpenSlot(Arc<FrontEndStats>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
