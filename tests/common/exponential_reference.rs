//! The exact reference for exponential buckets, shared by the Prometheus native histograms'
//! tests and the OTLP bridge's (`#[path]`): client_golang's way of finding a value's bucket
//! (`frexp` of the value in the unit, then a search of the schema's bounds), in floating point,
//! where laptime uses integer tables; and the values they record (log-normal, also the
//! Prometheus quantile test's). Prometheus' bucket numbering
//! (bucket `i` is `(2^((i−1)/2^s), 2^(i/2^s)]`); OpenTelemetry's is one less.
#![allow(dead_code)]

use std::collections::BTreeMap;

/// `count` log-normal durations in nanoseconds, median 80 µs and shape `shape`, from a seeded
/// xorshift64* and the Box–Muller transform.
pub fn log_normal_ns(count: usize, shape: f64) -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut unit = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        // 53 bits into (0, 1].
        ((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) + 1) as f64 / (1u64 << 53) as f64
    };
    (0..count)
        .map(|_| {
            let normal = (-2.0 * unit().ln()).sqrt() * (std::f64::consts::TAU * unit()).cos();
            (80_000f64.ln() + shape * normal).exp().round() as u64
        })
        .collect()
}

/// Log-normal durations (median 80 µs, shape 1.2: 1 µs to tens of ms), zeros, a few seconds-long
/// stalls, and values exactly on bucket bounds and just past them (2^-9 s and 2^-8 s are whole
/// nanoseconds).
pub fn values() -> Vec<u64> {
    let mut v = log_normal_ns(40_000, 1.2);
    v.extend([0; 25]);
    v.extend([3_000_000_000; 3]);
    v.extend([1_953_125, 1_953_126, 3_906_250, 3_906_251, 1, 2]);
    v
}

/// `(fraction in [0.5, 1), exponent)` with `v = fraction · 2^exponent`, for a positive normal `v`.
pub fn frexp(v: f64) -> (f64, i32) {
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, exp)
}

/// client_golang's bucket of `v` (positive) at `schema`.
pub fn reference_index(v: f64, schema: i32) -> i32 {
    let (frac, exp) = frexp(v);
    if schema > 0 {
        let n = 1 << schema;
        let bounds: Vec<f64> = (0..n)
            .map(|j| 0.5 * (f64::from(j) / f64::from(n)).exp2())
            .collect();
        return bounds.partition_point(|&b| b < frac) as i32 + (exp - 1) * n;
    }
    let key = if frac == 0.5 { exp - 1 } else { exp };
    let offset = (1 << -schema) - 1;
    (key + offset) >> -schema
}

/// Index → count of the positive values (zeros go to the zero bucket), at `schema`, the values
/// being nanoseconds and the buckets' unit `ns_per_unit` nanoseconds.
pub fn reference_buckets(values: &[u64], schema: i32, ns_per_unit: f64) -> BTreeMap<i32, u64> {
    let mut out = BTreeMap::new();
    for &v in values.iter().filter(|&&v| v > 0) {
        *out.entry(reference_index(v as f64 / ns_per_unit, schema))
            .or_insert(0) += 1;
    }
    out
}
