//! Counters the hub keeps about itself, read by Status (and by metrics later). Plain
//! atomics: bumping one is a single instruction on the hot path.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

#[derive(Default)]
pub struct Stats {
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub errors: AtomicU64,
    pub pushes: AtomicU64,
    pub auth_failures: AtomicU64,
    pub connections_refused: AtomicU64,
    pub rate_limited: AtomicU64,
    pub backend_overloaded: AtomicU64,
    pub undeliverable_dropped: AtomicU64,
    pub lifecycle_dropped: AtomicU64,
    pub offline_stored: AtomicU64,
    pub offline_delivered: AtomicU64,
    pub offline_expired: AtomicU64,
    pub ack_timeouts: AtomicU64,
    rates: Mutex<Rates>,
}

#[derive(Default)]
struct Rates {
    /// (when, messages in, messages out, errors) one window ago.
    last: Option<(Instant, u64, u64, u64)>,
    in_per_second: f64,
    out_per_second: f64,
    errors_per_second: f64,
}

/// Rates over the last sampling window.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateSnapshot {
    pub in_per_second: f64,
    pub out_per_second: f64,
    pub errors_per_second: f64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    pub fn add_undeliverable_dropped(&self, n: u64) {
        Self::add(&self.undeliverable_dropped, n);
        Self::add(&self.errors, n);
    }

    pub fn add_offline_expired(&self, n: u64) {
        Self::add(&self.offline_expired, n);
    }

    pub fn error(&self) {
        Self::add(&self.errors, 1);
    }

    /// Called once a second by the maintenance task.
    pub fn sample_rates(&self) {
        let now = Instant::now();
        let (i, o, e) = (Self::get(&self.messages_in), Self::get(&self.messages_out), Self::get(&self.errors));
        let Ok(mut rates) = self.rates.lock() else { return };
        if let Some((then, pi, po, pe)) = rates.last {
            let secs = now.duration_since(then).as_secs_f64().max(0.001);
            rates.in_per_second = (i - pi) as f64 / secs;
            rates.out_per_second = (o - po) as f64 / secs;
            rates.errors_per_second = (e - pe) as f64 / secs;
        }
        rates.last = Some((now, i, o, e));
    }

    pub fn rates(&self) -> RateSnapshot {
        self.rates
            .lock()
            .map(|r| RateSnapshot {
                in_per_second: r.in_per_second,
                out_per_second: r.out_per_second,
                errors_per_second: r.errors_per_second,
            })
            .unwrap_or_default()
    }
}
