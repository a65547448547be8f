//! Prints what socket-bridge's own state costs per connection, item by item: the heap
//! bytes a connection's registry entry, handshake, user index entry and rate-limit bucket
//! take (counted by a global allocator, rounded up as glibc's malloc rounds each block),
//! and the fixed sizes of the handlers it gives the Socket.IO layer.
//!
//!     cargo bench --bench conn_state
//!
//! The benchmark suite's idle-memory table shows the same thing from outside (RSS of
//! socket-bridge minus RSS of bare socketioxide with the same settings, per connection).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use socket_bridge::hub::registry::{Connection, Handshake, Registry};

/// Live heap bytes as requested, and as glibc's malloc holds them (8 bytes of header,
/// 16-byte granules, 32 bytes at least).
struct Counting;

static REQUESTED: AtomicIsize = AtomicIsize::new(0);
static HELD: AtomicIsize = AtomicIsize::new(0);

fn held(size: usize) -> isize {
    ((size + 8).div_ceil(16) * 16).max(32) as isize
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        REQUESTED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        HELD.fetch_add(held(layout.size()), Ordering::Relaxed);
        // SAFETY: same layout as asked.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        REQUESTED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        HELD.fetch_sub(held(layout.size()), Ordering::Relaxed);
        // SAFETY: ptr came from alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REQUESTED.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        HELD.fetch_add(held(new_size) - held(layout.size()), Ordering::Relaxed);
        // SAFETY: as GlobalAlloc::realloc requires of its caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const N: usize = 10_000;

fn snapshot() -> (isize, isize) {
    (REQUESTED.load(Ordering::Relaxed), HELD.load(Ordering::Relaxed))
}

fn per_conn(label: &str, before: (isize, isize), after: (isize, isize)) -> isize {
    let req = (after.0 - before.0) as f64 / N as f64;
    let held = (after.1 - before.1) as f64 / N as f64;
    println!("{label:<58} {req:>8.0} B requested {held:>8.0} B held");
    after.1 - before.1
}

/// A handshake as the benchmark's clients present it (user agent, IPv4 peer, no origin).
fn handshake(i: usize) -> Handshake {
    Handshake {
        user_agent: "socket-bridge-bench".into(),
        remote_address: format!("127.1.{}.{}:{}", i / 250 % 250, i % 250, 40000 + i % 20000),
        origin: String::new(),
        auth_json: format!("{{\"userId\":\"u{i}\"}}"),
        transport: "websocket".into(),
    }
}

fn main() {
    println!("socket-bridge's own state per connection ({N} connections, one user each):");
    let t0 = snapshot();
    let conns: Vec<Arc<Connection>> = (0..N)
        .map(|i| {
            Arc::new(Connection::new(
                format!("{:020}", 1_000_000 + i),
                "/".into(),
                Some(format!("u{i}")),
                handshake(i),
                100.0,
                200,
            ))
        })
        .collect();
    let t1 = snapshot();
    // The Vec holding them is the benchmark's, not the bridge's.
    let vec_bytes = (std::mem::size_of::<Arc<Connection>>() * N) as isize;
    let t1 = (t1.0 - vec_bytes, t1.1 - held(std::mem::size_of::<Arc<Connection>>() * N));
    let mut total = per_conn("connection (ids, handshake, rate-limit bucket, counters)", t0, t1);
    let registry = Registry::default();
    let t2 = snapshot();
    for c in &conns {
        registry.register(c.clone());
    }
    let t3 = snapshot();
    total += per_conn("registry entry and user index (maps grown as they are)", t2, t3);
    println!(
        "{:<58} {:>8} B (size of Connection: {} B; of Handshake: {} B)",
        "  of which the connection struct itself",
        std::mem::size_of::<Connection>() + 16,
        std::mem::size_of::<Connection>(),
        std::mem::size_of::<Handshake>()
    );
    println!("{:<58} {:>8.0} B held", "total", total as f64 / N as f64);
    drop(registry);
    drop(conns);
}
