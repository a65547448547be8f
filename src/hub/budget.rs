//! Bytes of client events held in memory on their way to a backend, bounded per socket and
//! in all.
//!
//! A client event is charged when it enters the bridge and the charge travels with it
//! (inside the `ClientEvent`), so the bytes return when the last holder lets it go:
//! written to a backend stream, to Redis, dropped from the undelivered buffer, or refused.
//! Counts alone would not do: a thousand queued events of 1 MB are a gigabyte.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why an event was not taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    /// This socket's own earlier events still wait for the backend.
    Socket,
    /// Events of all sockets together fill the bridge's share of memory for them.
    Total,
}

/// The bridge-wide budget.
#[derive(Debug)]
pub struct EventBudget {
    used: Arc<AtomicUsize>,
    max_total: usize,
    max_per_socket: usize,
}

impl EventBudget {
    pub fn new(max_total: usize, max_per_socket: usize) -> Self {
        Self { used: Arc::default(), max_total, max_per_socket }
    }

    /// Charges `bytes` to a socket (whose own count is `socket`) and to the whole bridge,
    /// or refuses. An event larger than a limit is taken only when nothing else of its
    /// kind waits, so a single event within the payload limit always gets through.
    pub fn charge(&self, socket: &Arc<AtomicUsize>, bytes: usize) -> Result<Charge, OverBudget> {
        take(socket, bytes, self.max_per_socket).map_err(|()| OverBudget::Socket)?;
        if take(&self.used, bytes, self.max_total).is_err() {
            socket.fetch_sub(bytes, Ordering::AcqRel);
            return Err(OverBudget::Total);
        }
        Ok(Charge { socket: Some(socket.clone()), total: Some(self.used.clone()), bytes })
    }

    /// Bytes held now, over all sockets.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Adds `bytes` to `counter` unless that would pass `max` (a counter at zero takes any
/// size).
fn take(counter: &AtomicUsize, bytes: usize, max: usize) -> Result<(), ()> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            (used == 0 || used.saturating_add(bytes) <= max).then_some(used + bytes)
        })
        .map(|_| ())
        .map_err(|_| ())
}

/// Bytes an event holds of the budget; returned when dropped.
#[derive(Debug, Default)]
pub struct Charge {
    socket: Option<Arc<AtomicUsize>>,
    total: Option<Arc<AtomicUsize>>,
    bytes: usize,
}

impl Charge {
    /// No charge: an event that is not held against this instance's budget (read back
    /// from Redis, where it already waited).
    pub fn none() -> Self {
        Self::default()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        for counter in [&self.socket, &self.total].into_iter().flatten() {
            counter.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_return_when_dropped_and_limits_hold_per_socket_and_in_all() {
        let budget = EventBudget::new(250, 100);
        let (a, b, c) = (Arc::default(), Arc::default(), Arc::default());
        let first = budget.charge(&a, 60).expect("fits");
        assert_eq!(budget.charge(&a, 60).unwrap_err(), OverBudget::Socket);
        let _b = budget.charge(&b, 100).expect("fits");
        let _c = budget.charge(&c, 80).expect("fits: 240 of 250");
        let d = Arc::default();
        assert_eq!(budget.charge(&d, 20).unwrap_err(), OverBudget::Total);
        assert_eq!(d.load(Ordering::Acquire), 0, "a refused charge leaves nothing behind");
        drop(first);
        assert_eq!(a.load(Ordering::Acquire), 0);
        assert_eq!(budget.used(), 180);
        let big = budget.charge(&a, 1000);
        assert!(big.is_err(), "over the total while others wait");
    }

    #[test]
    fn one_oversized_event_passes_when_nothing_else_waits() {
        let budget = EventBudget::new(100, 10);
        let a = Arc::default();
        let charge = budget.charge(&a, 50).expect("alone: taken");
        assert_eq!(budget.used(), 50);
        drop(charge);
        assert_eq!(budget.used(), 0);
    }
}
