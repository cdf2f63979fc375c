//! Peak resident memory from `/proc/self/status` (Linux).

/// `VmHWM` (the peak resident set) of this process in KiB; 0 where `/proc` has no such line.
pub fn peak_kib() -> u64 {
    status_kib("VmHWM:")
}

fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
