//! Sizes that come from flags and files, checked before anything is
//! allocated: a clear error instead of an allocation abort.

use crate::error::Result;

/// The most samples one data set, shard file or benchmark may hold.
pub const MAX_SAMPLES: usize = 1 << 31;

/// Bytes of memory available now (Linux's MemAvailable), if known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `what` needs `count` items of `size` bytes: an error naming it when
/// that overflows or exceeds the memory available.
pub fn check_alloc(what: &str, count: usize, size: usize) -> Result<()> {
    let bytes = (count as u128) * (size as u128);
    let avail = available_memory().map_or(u128::MAX, u128::from);
    if bytes > avail || bytes > isize::MAX as u128 {
        let gb = bytes as f64 / 1e9;
        let have = if avail == u128::MAX {
            String::new()
        } else {
            format!(" ({:.1} GB available)", avail as f64 / 1e9)
        };
        return Err(crate::invalid!(
            "{what} would take {gb:.1} GB of memory{have}"
        ));
    }
    Ok(())
}

/// `v` (the flag or field `what`) is at most `max`.
pub fn at_most(what: &str, v: usize, max: usize) -> Result<()> {
    if v > max {
        return Err(crate::invalid!(
            "{what} = {v} is more than the {max} this accepts"
        ));
    }
    Ok(())
}
