//! One monotonic clock for the whole generator: nanoseconds since the process started.
//! The backend side stamps intended send times with it and the client side reads them.

use std::sync::LazyLock;
use std::time::Instant;

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

pub fn now_ns() -> u64 {
    START.elapsed().as_nanos() as u64
}
