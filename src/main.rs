//! The `barlow` binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    keep_freed_memory();
    barlow::cli::run(barlow::cli::Cli::parse())
}

/// Tells glibc's allocator to keep freed memory for reuse instead of returning it to the OS.
///
/// A training step allocates and frees the same large activation tensors every time (tens of
/// MB each: above glibc's 32 MB limit for reusing mapped blocks). Left alone, each is a fresh
/// `mmap` whose every page faults and is zeroed by the kernel on first write: measured 500,000
/// page faults and about a second of system time per ResNet-18 step on 2 cores. Serving them
/// from the heap and never trimming it makes the second step onwards fault-free; the price is
/// that the process keeps its peak memory until it exits, which a training run does anyway.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
