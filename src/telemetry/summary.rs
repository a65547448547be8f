//! Repeated events an outsider can trigger at will (failed logins, refused handshakes,
//! accept failures) are logged as one summary line per interval instead of one line each,
//! so an attack cannot flush the log ring and the rotated files.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Distinct client addresses remembered per interval; beyond it they are only counted.
const MAX_ADDRESSES: usize = 1024;
/// Addresses named in a summary line, the busiest first.
const LISTED_ADDRESSES: usize = 5;

/// What happened during one interval.
#[derive(Debug, Default)]
pub struct Report {
    counts: BTreeMap<&'static str, u64>,
    addresses: HashMap<IpAddr, u64>,
    more_addresses: bool,
    note: String,
    interval: Duration,
}

impl Report {
    pub fn count(&self, what: &str) -> u64 {
        self.counts.get(what).copied().unwrap_or(0)
    }

    /// How many distinct client addresses took part (a lower bound past 1,024).
    pub fn address_count(&self) -> usize {
        self.addresses.len()
    }

    /// The busiest addresses with their counts, e.g. `127.0.0.2 ×40, 10.0.0.9 ×3`.
    pub fn top_addresses(&self) -> String {
        let mut all: Vec<_> = self.addresses.iter().collect();
        all.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut text =
            all.iter().take(LISTED_ADDRESSES).map(|(a, n)| format!("{a} ×{n}")).collect::<Vec<_>>().join(", ");
        if all.len() > LISTED_ADDRESSES || self.more_addresses {
            text.push_str(", …");
        }
        text
    }

    /// The last note recorded (an error message, say).
    pub fn note(&self) -> &str {
        &self.note
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn is_empty(&self) -> bool {
        self.counts.values().all(|n| *n == 0)
    }
}

type Emit = Box<dyn Fn(&Report) + Send + Sync>;

struct Inner {
    current: Mutex<Report>,
    emit: Emit,
}

/// Counts events and hands them to `emit` once per interval (nothing when nothing
/// happened). The flushing task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Summary(Arc<Inner>);

impl Summary {
    pub fn new(interval: Duration, emit: impl Fn(&Report) + Send + Sync + 'static) -> Self {
        let inner = Arc::new(Inner { current: Mutex::new(Report::default()), emit: Box::new(emit) });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                flush(&inner, interval);
            }
        });
        Self(inner)
    }

    /// Counts `n` more of `what`, from `from` if known.
    pub fn add(&self, what: &'static str, n: u64, from: Option<IpAddr>) {
        let Ok(mut r) = self.0.current.lock() else { return };
        *r.counts.entry(what).or_default() += n;
        if let Some(addr) = from {
            if r.addresses.len() < MAX_ADDRESSES || r.addresses.contains_key(&addr) {
                *r.addresses.entry(addr).or_default() += n;
            } else {
                r.more_addresses = true;
            }
        }
    }

    /// Keeps `text` (the latest wins) for the next line.
    pub fn note(&self, text: String) {
        if let Ok(mut r) = self.0.current.lock() {
            r.note = text;
        }
    }

    /// Emits now what has been counted (tests and shutdown).
    pub fn flush_now(&self) {
        flush(&self.0, Duration::ZERO);
    }
}

impl Drop for Inner {
    /// What was counted since the last line is not lost when the owner goes away.
    fn drop(&mut self) {
        flush(self, Duration::ZERO);
    }
}

fn flush(inner: &Inner, interval: Duration) {
    let report = {
        let Ok(mut r) = inner.current.lock() else { return };
        if r.is_empty() {
            return;
        }
        let mut report = std::mem::take(&mut *r);
        report.interval = interval;
        report
    };
    (inner.emit)(&report);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test(start_paused = true)]
    async fn events_become_one_report_per_interval_and_quiet_intervals_none() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let summary = Summary::new(Duration::from_secs(10), move |r| {
            sink.lock().unwrap().push((r.count("failed"), r.address_count(), r.top_addresses()));
        });
        for i in 0..200u8 {
            summary.add("failed", 1, Some(IpAddr::from([127, 0, 0, 1 + i % 2])));
        }
        tokio::time::sleep(Duration::from_secs(35)).await;
        let lines = lines.lock().unwrap().clone();
        assert_eq!(lines, vec![(200, 2, "127.0.0.1 ×100, 127.0.0.2 ×100".to_string())]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_handle_flushes_what_is_left_and_ends_the_task() {
        let emitted = Arc::new(AtomicU64::new(0));
        let seen = emitted.clone();
        let summary = Summary::new(Duration::from_secs(1), move |_| {
            seen.fetch_add(1, Ordering::Relaxed);
        });
        summary.add("x", 1, None);
        drop(summary);
        assert_eq!(emitted.load(Ordering::Relaxed), 1, "flushed when the last handle goes");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(emitted.load(Ordering::Relaxed), 1, "nothing more once it is gone");
    }
}
