//! Returning freed heap memory to the operating system. glibc's allocator keeps freed
//! chunks in its arenas, so after a flood of short-lived sessions the process's resident
//! size stays at its peak although the memory is free. `malloc_trim` gives the free pages
//! back. It walks every arena under its lock, so it runs only after a large drop (see the
//! session gate's upkeep), never on a timer under steady load.

/// Gives free heap pages back to the OS; returns the time it took.
pub fn trim() -> std::time::Duration {
    let started = std::time::Instant::now();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it takes the
    // arena locks itself and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
    started.elapsed()
}
