//! Benchmark helpers shared by the bench binaries: process CPU and memory from `/proc`.

use std::time::Duration;

/// CPU time (user + system) this process has used, from `/proc/self/stat`.
///
/// # Panics
/// Off Linux, or when `/proc/self/stat` cannot be read.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    Duration::from_millis(ticks * 1000 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// `VmRSS` and `VmHWM` (peak) of this process in MiB, from `/proc/self/status`.
pub fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Nearest-rank quantile `q` (0 to 1) of sorted `values`.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Bytes and blocks the program currently holds on the heap, when the binary's global
/// allocator is `stats_alloc`'s instrumented system allocator (as in `beat-load`): the
/// heap a registration costs, read without the noise of RSS (allocator caches,
/// fragmentation).
pub fn heap_live(stats: stats_alloc::Stats) -> (usize, usize) {
    // A realloc is already counted in bytes_allocated / bytes_deallocated.
    let bytes = stats
        .bytes_allocated
        .saturating_sub(stats.bytes_deallocated);
    (bytes, stats.allocations.saturating_sub(stats.deallocations))
}
