//! How much memory this machine lends barlow, and refusing a size that cannot fit before it is
//! allocated (an allocation that fails aborts the process instead of returning an error).

use anyhow::{Result, bail};

/// The memory barlow may use: the machine's physical memory, or its container's limit when lower.
pub fn total() -> u64 {
    // SAFETY: sysconf reads a constant of the running system and has no preconditions.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    let physical = match pages > 0 && page > 0 {
        true => (pages as u64).saturating_mul(page as u64),
        false => u64::MAX,
    };
    let limit = |file: &str| std::fs::read_to_string(file).ok().and_then(|s| s.trim().parse::<u64>().ok());
    // cgroup v2, then v1 (v1 writes a huge number for "no limit", which the min drops).
    let container = limit("/sys/fs/cgroup/memory.max").or_else(|| limit("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
    physical.min(container.unwrap_or(u64::MAX))
}

/// Refuses `bytes` (what `what` needs, at the least) when it is more than [`total`]; `change` says
/// which settings would lower it.
pub fn ensure_fits(bytes: u128, what: &str, change: &str) -> Result<()> {
    let total = total();
    if bytes > total as u128 {
        bail!("{what} needs at least {}, more than the {} of memory this machine has; {change}", size(bytes), size(total as u128));
    }
    Ok(())
}

/// `bytes` for people: "12.9 GiB".
pub fn size(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let (mut value, mut unit) = (bytes as f64, 0);
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} bytes"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_beyond_the_machine_is_refused_by_what_needs_it() {
        let total = total();
        assert!(total > 1 << 20 && total < u64::MAX, "{total}");
        assert!(ensure_fits(total as u128 / 2, "half", "-").is_ok());
        let err = ensure_fits(total as u128 + 1, "a batch", "lower optim.batch_size").unwrap_err().to_string();
        assert!(err.starts_with("a batch needs at least ") && err.ends_with("lower optim.batch_size"), "{err}");
        assert_eq!(size(1000), "1000 bytes");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }
}
