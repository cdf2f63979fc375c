//! The process's memory as the kernel sees it, and the trend of a series of readings.

use std::io;

/// Resident memory from `/proc/self/status`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Mem {
    /// `VmRSS`: resident now.
    pub rss_kib: u64,
    /// `VmHWM`: the highest resident size since the process started.
    pub hwm_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` of this process (Linux).
pub fn read() -> io::Result<Mem> {
    parse(&std::fs::read_to_string("/proc/self/status")?)
}

/// Parses the two lines out of a `/proc/<pid>/status` text (`VmRSS:\t  1234 kB`).
fn parse(status: &str) -> io::Result<Mem> {
    let field = |name: &str| -> io::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("/proc/self/status has no readable {name} line (Linux only)"),
                )
            })
    };
    Ok(Mem {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
    })
}

/// The least-squares slope of `(x, y)` points, `None` with fewer than two distinct `x`.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for &(x, y) in points {
        sxy += (x - mean_x) * (y - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_is_its_gradient() {
        let points: Vec<_> = (0..50).map(|i| (i as f64, 3.0 * i as f64 - 7.0)).collect();
        let s = slope(&points).unwrap();
        assert!((s - 3.0).abs() < 1e-9, "{s}");
    }

    #[test]
    fn slope_ignores_symmetric_noise() {
        // A flat series with alternating ±100 around 1000: no trend.
        let points: Vec<_> = (0..60)
            .map(|i| (i as f64, if i % 2 == 0 { 1100.0 } else { 900.0 }))
            .collect();
        let s = slope(&points).unwrap();
        // Σ(x − x̄)(y − ȳ) = 100·Σ x·(−1)^x = −3000 and Σ(x − x̄)² = n(n² − 1)/12 = 17 995.
        assert!((s + 3000.0 / 17_995.0).abs() < 1e-12, "{s}");
        assert_eq!(slope(&[(1.0, 5.0), (1.0, 9.0)]), None);
        assert_eq!(slope(&[(1.0, 5.0)]), None);
    }

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        assert_eq!(
            parse(text).unwrap(),
            Mem {
                rss_kib: 10240,
                hwm_kib: 20480
            }
        );
        assert!(parse("Name:\tx\n").is_err());
    }
}
