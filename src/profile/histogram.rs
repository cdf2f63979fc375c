//! A stage's figures from its histogram, and the histogram's text form: HdrHistogram's V2 deflate
//! serialization in base64, decoded with its header checked before anything is allocated.

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

use super::{
    CorrectedCounts, CorrectedProfile, DistributionProfile, Histogram, ProfileConfig, ProfileError,
    StageCounts, StageProfile, invalid,
};
use crate::stage::MAX_NAME_LEN;
use crate::stats::{QUANTILES, miss_share};

/// HdrHistogram's V2 cookies (its `serialization` module keeps them private).
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
/// Cookie, payload length, normalizing offset, digits, lowest, highest, integer-to-double ratio.
const V2_HEADER_LEN: usize = 40;
/// The histogram settings a collector accepts (`CollectorBuilder::with_histogram`).
const MIN_HIGHEST: u64 = 2048;
const MAX_HIGHEST: u64 = 1 << 62;

/// Checks significant digits and highest value the way the collector does; on failure, the field
/// (under `at`) and what is wrong.
pub(super) fn check_settings(digits: u8, highest: u64) -> Result<(), (&'static str, String)> {
    if !(1..=5).contains(&digits) {
        return Err((
            "significant_digits",
            format!("{digits} is out of range: use 1..=5"),
        ));
    }
    if !(MIN_HIGHEST..=MAX_HIGHEST).contains(&highest) {
        return Err((
            "highest_ns",
            format!("{highest} is out of range: use {MIN_HIGHEST}..=2^62"),
        ));
    }
    Ok(())
}

/// Counters a `Histogram::new_with_bounds(1, highest, digits)` holds: HdrHistogram's own sizing
/// (`buckets_to_cover` and `num_bins`), to bound a serialized payload before decoding it.
fn counters(digits: u8, highest: u64) -> u64 {
    let sub_buckets = (2 * 10u64.pow(u32::from(digits))).next_power_of_two();
    let (mut untrackable, mut buckets) = (sub_buckets, 1u64);
    while untrackable <= highest {
        untrackable <<= 1;
        buckets += 1;
    }
    (buckets + 1) * (sub_buckets / 2)
}

/// The histogram's text: V2 deflate, standard base64.
fn encode(hist: &Histogram) -> Result<String, String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(hist, &mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(STANDARD.encode(bytes))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Decodes a histogram's text. hdrhistogram's decoder trusts the header: it sizes a buffer by the
/// payload length it declares (up to 4 GiB) and the counters by its bounds, before reading any
/// data. So the header is inflated and checked here first (lowest value 1, the collector's
/// settings, `expect`ed ones if given, a payload no longer than the counters can need), and the
/// payload is inflated no further than it declares: memory stays proportional to what the
/// settings allow and the data holds.
fn decode(text: &str, expect: Option<&ProfileConfig>) -> Result<Histogram, String> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| format!("not standard base64 ({e})"))?;
    if bytes.len() < 8 {
        return Err(format!(
            "{} bytes is too short for a histogram",
            bytes.len()
        ));
    }
    match be_u32(&bytes) {
        V2_COMPRESSED_COOKIE => {}
        V2_COOKIE => {
            return Err("an uncompressed V2 histogram; write it with V2DeflateSerializer".into());
        }
        other => {
            return Err(format!(
                "cookie {other:#010x} is not HdrHistogram's V2 deflate cookie {V2_COMPRESSED_COOKIE:#010x}"
            ));
        }
    }
    let declared = be_u32(&bytes[4..]) as usize;
    let compressed = &bytes[8..];
    if declared > compressed.len() {
        return Err(format!(
            "declares {declared} compressed bytes but holds {}: cut short",
            compressed.len()
        ));
    }
    let mut inflater = flate2::read::ZlibDecoder::new(&compressed[..declared]);
    let mut data = vec![0u8; V2_HEADER_LEN];
    inflater
        .read_exact(&mut data)
        .map_err(|e| format!("its header does not inflate ({e})"))?;
    if be_u32(&data) != V2_COOKIE {
        return Err(format!(
            "inner cookie {:#010x} is not HdrHistogram's V2 cookie {V2_COOKIE:#010x}",
            be_u32(&data)
        ));
    }
    let payload = u64::from(be_u32(&data[4..]));
    let digits = be_u32(&data[12..]);
    let (lowest, highest) = (be_u64(&data[16..]), be_u64(&data[24..]));
    if lowest != 1 {
        return Err(format!(
            "lowest discernible value {lowest}: profiles use 1 ns"
        ));
    }
    let digits = u8::try_from(digits).unwrap_or(u8::MAX);
    check_settings(digits, highest)
        .map_err(|(field, message)| format!("its {field}: {message}"))?;
    if let Some(config) = expect
        && (digits, highest) != (config.significant_digits, config.highest_ns)
    {
        return Err(format!(
            "it has {digits} significant digits up to {highest} ns, but meta.config says {} up \
             to {} ns",
            config.significant_digits, config.highest_ns
        ));
    }
    // Each counter takes at most 9 bytes (LEB128 of a zigzagged i64).
    let most = 9 * counters(digits, highest);
    if payload > most {
        return Err(format!(
            "declares a {payload}-byte payload, more than its {most} bytes of counters can need"
        ));
    }
    inflater
        .take(payload)
        .read_to_end(&mut data)
        .map_err(|e| format!("its counters do not inflate ({e})"))?;
    if data.len() as u64 != V2_HEADER_LEN as u64 + payload {
        return Err(format!(
            "declares {payload} bytes of counters but inflates to {}: cut short",
            data.len() - V2_HEADER_LEN
        ));
    }
    // The inflated bytes are the plain V2 form, which the decoder takes as they are.
    data[..4].copy_from_slice(&V2_COOKIE.to_be_bytes());
    Deserializer::new()
        .deserialize(&mut data.as_slice())
        .map_err(|e| e.to_string())
}

/// The nearest-rank percentiles ([`QUANTILES`]) of `hist`: the highest value of the bucket that
/// holds each rank, clamped to the exact `[min, max]` (as the aggregator's `stats_from` does).
/// `hist` holds at least one value and `min <= max`.
fn percentiles(hist: &Histogram, min: u64, max: u64) -> [u64; QUANTILES.len()] {
    let n = hist.len();
    let ranks = QUANTILES.map(|q| crate::rank(q, n));
    let mut out = [max; QUANTILES.len()];
    let (mut next, mut seen) = (0, 0u64);
    for v in hist.iter_recorded() {
        seen = seen.saturating_add(v.count_at_value());
        while next < ranks.len() && ranks[next] <= seen {
            out[next] = hist
                .highest_equivalent(v.value_iterated_to())
                .clamp(min, max);
            next += 1;
        }
        if next == ranks.len() {
            break;
        }
    }
    out
}

impl StageProfile {
    /// The stage's histogram, decoded; `None` when the profile has none. Fails on text that is
    /// not base64, not HdrHistogram's V2 deflate serialization, or has a lowest value other than
    /// 1 ns or settings a collector would refuse.
    pub fn histogram(&self) -> Result<Option<Histogram>, ProfileError> {
        self.decode("", None)
    }

    /// [`StageProfile::histogram`], with errors at `at.histogram` and the settings checked
    /// against `expect`.
    pub(super) fn decode(
        &self,
        at: &str,
        expect: Option<&ProfileConfig>,
    ) -> Result<Option<Histogram>, ProfileError> {
        decode_field(self.histogram.as_deref(), at, expect)
    }

    /// A stage's figures from its histogram and the exact counts beside it: the one place they
    /// are computed (a collector's profile and [`Profile::merge`](super::Profile::merge) both
    /// come here). `count` is `hist.len()`; `calls` is `count + sampled_out + dropped +
    /// cancelled + in_rings`; `mean_ns` is `sum_ns / count`; the percentiles are nearest-rank
    /// ([`crate::rank`]), each the highest value of its bucket clamped to `[min_ns, max_ns]`;
    /// `deadline_miss_pct` is `100 × misses / max(count, misses)`. The stage has no `corrected`
    /// figures; set them with [`CorrectedProfile::from_histogram`].
    ///
    /// Fails when `hist` does not have a lowest value of 1 ns and settings a collector accepts
    /// (1–5 digits, highest 2048 ns – 2^62 ns), or when `counts` contradict it (`min_ns >
    /// max_ns`, a sum outside `count × [min, max]`, more saturated values than recorded ones,
    /// non-zero min/max/sum with nothing recorded).
    pub fn from_histogram(
        name: impl Into<String>,
        labels: BTreeMap<String, String>,
        hist: &Histogram,
        counts: StageCounts,
    ) -> Result<StageProfile, ProfileError> {
        let name = name.into();
        check_hist(hist, &name)?;
        let at = StageProfile::key_of(&name, &labels);
        let count = hist.len();
        let mut stage = StageProfile {
            name,
            labels,
            count,
            calls: count
                .saturating_add(counts.sampled_out)
                .saturating_add(counts.dropped)
                .saturating_add(counts.cancelled)
                .saturating_add(counts.in_rings),
            distribution: DistributionProfile::of(
                hist,
                (counts.min_ns, counts.max_ns, counts.sum_ns),
                &at,
            )?,
            deadline_ns: counts.deadline_ns,
            deadline_misses: counts.deadline_misses,
            deadline_miss_pct: miss_share(count, counts.deadline_misses, 100.0),
            dropped: counts.dropped,
            sampled_out: counts.sampled_out,
            cancelled: counts.cancelled,
            saturated: counts.saturated,
            histogram: None,
            unwound: counts.unwound,
            in_rings: counts.in_rings,
            corrected: None,
        };
        stage.check_figures(&at)?;
        stage.histogram = Some(encode_field(hist, &at)?);
        Ok(stage)
    }

    /// Checks the stage's figures against its decoded histogram: it holds `count` values, and
    /// each percentile is what [`StageProfile::from_histogram`] computes from it (so the gate's
    /// point values and its intervals, both taken from the histogram, agree with the file).
    /// Errors name fields under `at`; run after [`check_figures`](Self::check_figures), which
    /// ensures `min_ns <= max_ns`.
    pub(super) fn check_histogram(&self, at: &str, hist: &Histogram) -> Result<(), ProfileError> {
        self.distribution.check_against(at, hist, self.count)
    }

    /// Checks the stage's figures against each other (not its histogram); errors name fields
    /// under `at`.
    pub(super) fn check_figures(&self, at: &str) -> Result<(), ProfileError> {
        let f = |name: &str| field(at, name);
        if self.name.is_empty() {
            return Err(invalid(f("name"), "the stage name is empty"));
        }
        too_long(&f("name"), "the stage name", &self.name)?;
        for (k, v) in &self.labels {
            if k.is_empty() || v.is_empty() {
                return Err(invalid(
                    f("labels"),
                    format!("label {k:?} = {v:?}: names and values must not be empty"),
                ));
            }
            too_long(&f("labels"), "a label name", k)?;
            too_long(&f("labels"), &format!("the value of label {k:?}"), v)?;
        }
        let expected_calls = self
            .count
            .saturating_add(self.sampled_out)
            .saturating_add(self.dropped)
            .saturating_add(self.cancelled)
            .saturating_add(self.in_rings);
        if self.calls != expected_calls {
            return Err(invalid(
                f("calls"),
                format!(
                    "calls is {} but count + sampled_out + dropped + cancelled + in_rings is \
                     {expected_calls}",
                    self.calls
                ),
            ));
        }
        if self.saturated > self.count {
            return Err(invalid(
                f("saturated"),
                format!(
                    "{} saturated values but only {} recorded",
                    self.saturated, self.count
                ),
            ));
        }
        if self.unwound > self.count {
            return Err(invalid(
                f("unwound"),
                format!(
                    "{} unwound spans but only {} recorded (unwound spans are recorded too)",
                    self.unwound, self.count
                ),
            ));
        }
        let pct = miss_share(self.count, self.deadline_misses, 100.0);
        if !close(self.deadline_miss_pct, pct) {
            return Err(invalid(
                f("deadline_miss_pct"),
                format!(
                    "{:?} is not 100 × deadline_misses / max(count, deadline_misses) = {pct:?}",
                    self.deadline_miss_pct
                ),
            ));
        }
        self.distribution.check(at, self.count)?;
        if let Some(c) = &self.corrected {
            let at = field(at, "corrected");
            c.check_figures(&at)?;
            // The corrected histogram holds the spans recorded while the correction was on: some
            // of this stage's, never more.
            let spans = c.count.saturating_sub(c.synthesized);
            if spans > self.count {
                return Err(invalid(
                    field(&at, "count"),
                    format!(
                        "count − synthesized is {spans} spans but the stage recorded only {}: the \
                         corrected histogram holds the stage's spans plus the added values",
                        self.count
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl CorrectedProfile {
    /// Corrected figures from the corrected histogram and the exact counts beside it, by the
    /// rules of [`StageProfile::from_histogram`]. Fails on the histogram settings it refuses,
    /// on counts that contradict the histogram, and on a zero expected interval or more
    /// synthesized values than the histogram holds.
    pub fn from_histogram(
        hist: &Histogram,
        counts: CorrectedCounts,
    ) -> Result<CorrectedProfile, ProfileError> {
        let at = "corrected";
        check_hist(hist, at)?;
        let mut c = CorrectedProfile {
            expected_interval_ns: counts.expected_interval_ns,
            count: hist.len(),
            synthesized: counts.synthesized,
            truncated: counts.truncated,
            saturated: counts.saturated,
            distribution: DistributionProfile::of(
                hist,
                (counts.min_ns, counts.max_ns, counts.sum_ns),
                at,
            )?,
            histogram: None,
        };
        c.check_figures(at)?;
        c.histogram = Some(encode_field(hist, at)?);
        Ok(c)
    }

    /// The corrected histogram, decoded; `None` when there is none (a hand-written profile).
    pub fn histogram(&self) -> Result<Option<Histogram>, ProfileError> {
        self.decode("corrected", None)
    }

    pub(super) fn decode(
        &self,
        at: &str,
        expect: Option<&ProfileConfig>,
    ) -> Result<Option<Histogram>, ProfileError> {
        decode_field(self.histogram.as_deref(), at, expect)
    }

    /// The corrected figures against their histogram, as [`StageProfile::check_histogram`].
    pub(super) fn check_histogram(&self, at: &str, hist: &Histogram) -> Result<(), ProfileError> {
        self.distribution.check_against(at, hist, self.count)
    }

    /// The corrected figures against each other; errors name fields under `at`.
    pub(super) fn check_figures(&self, at: &str) -> Result<(), ProfileError> {
        if self.expected_interval_ns == 0 {
            return Err(invalid(
                field(at, "expected_interval_ns"),
                "the expected interval is 0: give the period the stage's spans start at, in ns",
            ));
        }
        if self.synthesized > self.count {
            return Err(invalid(
                field(at, "synthesized"),
                format!(
                    "{} synthesized values but the corrected histogram holds only {}",
                    self.synthesized, self.count
                ),
            ));
        }
        if self.saturated > self.count {
            return Err(invalid(
                field(at, "saturated"),
                format!(
                    "{} saturated values but the corrected histogram holds only {}",
                    self.saturated, self.count
                ),
            ));
        }
        if self.truncated > self.count - self.synthesized {
            return Err(invalid(
                field(at, "truncated"),
                format!(
                    "{} truncated corrections but only {} spans (count − synthesized)",
                    self.truncated,
                    self.count - self.synthesized
                ),
            ));
        }
        self.distribution.check(at, self.count)
    }
}

/// A histogram field's text decoded, with errors at `at.histogram`.
fn decode_field(
    text: Option<&str>,
    at: &str,
    expect: Option<&ProfileConfig>,
) -> Result<Option<Histogram>, ProfileError> {
    let Some(text) = text else {
        return Ok(None);
    };
    decode(text, expect)
        .map(Some)
        .map_err(|message| ProfileError::Histogram {
            path: field(at, "histogram"),
            message,
        })
}

/// A histogram's text, with errors at `at.histogram`.
fn encode_field(hist: &Histogram, at: &str) -> Result<String, ProfileError> {
    encode(hist).map_err(|message| ProfileError::Histogram {
        path: field(at, "histogram"),
        message,
    })
}

/// A histogram a profile can hold: lowest value 1 ns and settings a collector accepts.
fn check_hist(hist: &Histogram, at: &str) -> Result<(), ProfileError> {
    let error = |message: String| ProfileError::Histogram {
        path: field(at, "histogram"),
        message,
    };
    if hist.low() != 1 {
        return Err(error(format!(
            "lowest discernible value {}: profiles use 1 ns",
            hist.low()
        )));
    }
    check_settings(hist.sigfig(), hist.high())
        .map_err(|(field, message)| error(format!("its {field}: {message}")))
}

fn min_below_max(at: &str, min: u64, max: u64) -> Result<(), ProfileError> {
    if min > max {
        return Err(invalid(
            field(at, "min_ns"),
            format!("min_ns {min} is above max_ns {max}"),
        ));
    }
    Ok(())
}

/// The percentile fields, in [`QUANTILES`] order.
const PERCENTILE_FIELDS: [&str; QUANTILES.len()] =
    ["p50_ns", "p90_ns", "p95_ns", "p99_ns", "p999_ns"];

impl DistributionProfile {
    /// The figures of `hist` with the exact `(min, max, sum)` of its values beside it: the mean
    /// `sum / count` and the percentiles [`percentiles`] computes. All 0 when `hist` is empty;
    /// errors name fields under `at`.
    fn of(
        hist: &Histogram,
        (min, max, sum): (u64, u64, u64),
        at: &str,
    ) -> Result<Self, ProfileError> {
        let mut d = DistributionProfile {
            min_ns: min,
            max_ns: max,
            sum_ns: sum,
            ..DistributionProfile::default()
        };
        let count = hist.len();
        if count > 0 {
            min_below_max(at, min, max)?;
            d.mean_ns = sum as f64 / count as f64;
            [d.p50_ns, d.p90_ns, d.p95_ns, d.p99_ns, d.p999_ns] = percentiles(hist, min, max);
        }
        Ok(d)
    }

    /// `p50_ns` … `p999_ns`, in [`QUANTILES`] order.
    fn percentiles(&self) -> [u64; QUANTILES.len()] {
        [
            self.p50_ns,
            self.p90_ns,
            self.p95_ns,
            self.p99_ns,
            self.p999_ns,
        ]
    }

    /// The figures against their decoded histogram: it holds `count` values, and each
    /// percentile is what [`percentiles`] computes from it (so the gate's point values and its
    /// intervals, both taken from the histogram, agree with the file). Errors name fields under
    /// `at`; run after [`check`](Self::check), which ensures `min_ns <= max_ns`.
    fn check_against(&self, at: &str, hist: &Histogram, count: u64) -> Result<(), ProfileError> {
        if hist.len() != count {
            return Err(invalid(
                field(at, "histogram"),
                format!(
                    "the histogram holds {} values but count is {count}",
                    hist.len()
                ),
            ));
        }
        if count == 0 {
            return Ok(());
        }
        let expected = percentiles(hist, self.min_ns, self.max_ns);
        for ((name, found), want) in PERCENTILE_FIELDS
            .into_iter()
            .zip(self.percentiles())
            .zip(expected)
        {
            if found != want {
                return Err(invalid(
                    field(at, name),
                    format!(
                        "{name} is {found} but the histogram gives {want} (nearest rank, the \
                         bucket's highest value clamped to [min_ns, max_ns]): write {want}, or \
                         leave out `histogram` to have hand-written figures taken as they are"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The figures of `count` values against each other: with nothing recorded every figure is
    /// 0; otherwise min ≤ p50 ≤ … ≤ p999 ≤ max, the sum within `count × [min, max]` and the mean
    /// `sum / count`. Errors name fields under `at`.
    fn check(&self, at: &str, count: u64) -> Result<(), ProfileError> {
        let f = |name: &str| field(at, name);
        let (min, max, sum, mean_ns) = (self.min_ns, self.max_ns, self.sum_ns, self.mean_ns);
        let mut ordered = vec![("min_ns", min)];
        ordered.extend(PERCENTILE_FIELDS.into_iter().zip(self.percentiles()));
        ordered.push(("max_ns", max));
        if count == 0 {
            if let Some((name, v)) = ordered
                .iter()
                .chain(&[("sum_ns", sum)])
                .find(|(_, v)| *v != 0)
            {
                return Err(invalid(
                    f(name),
                    format!("{name} is {v} but count is 0: with nothing recorded it must be 0"),
                ));
            }
            if mean_ns != 0.0 {
                return Err(invalid(
                    f("mean_ns"),
                    format!("mean_ns is {mean_ns:?} but count is 0"),
                ));
            }
            return Ok(());
        }
        for pair in ordered.windows(2) {
            let ((low_name, low), (high_name, high)) = (pair[0], pair[1]);
            if high < low {
                return Err(invalid(
                    f(high_name),
                    format!(
                        "{high_name} {high} is below {low_name} {low}: min ≤ p50 ≤ p90 ≤ p95 ≤ p99 ≤ p999 ≤ max"
                    ),
                ));
            }
        }
        // A saturated sum (u64::MAX) only bounds from below.
        let (n, total) = (u128::from(count), u128::from(sum));
        let (least, most) = (n * u128::from(min), n * u128::from(max));
        if total < least || (total > most && sum != u64::MAX) {
            return Err(invalid(
                f("sum_ns"),
                format!("sum_ns {sum} is outside count × [min_ns, max_ns] = [{least}, {most}]"),
            ));
        }
        let expected = sum as f64 / count as f64;
        if !close(mean_ns, expected) {
            return Err(invalid(
                f("mean_ns"),
                format!("mean_ns {mean_ns:?} is not sum_ns / count = {expected:?}"),
            ));
        }
        Ok(())
    }
}

/// Refuses a name or label longer than a collector registers ([`MAX_NAME_LEN`] bytes), without
/// quoting it: the error of a 1 MB name is one line.
fn too_long(at: &str, what: &str, text: &str) -> Result<(), ProfileError> {
    if text.len() <= MAX_NAME_LEN {
        return Ok(());
    }
    let start: String = text.chars().take(32).collect();
    Err(invalid(
        at,
        format!(
            "{what} ({start:?}…) is {} bytes, more than the {MAX_NAME_LEN} a collector \
             registers: shorten it",
            text.len()
        ),
    ))
}

/// Equal within 1e-9, relative to the larger of 1 and the expected value; false for NaN and
/// infinities.
fn close(found: f64, expected: f64) -> bool {
    found.is_finite() && (found - expected).abs() <= 1e-9 * expected.abs().max(1.0)
}

/// `at.name`, or `name` when `at` is empty.
fn field(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_owned()
    } else {
        format!("{at}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A V2 deflate histogram text with the given header fields and counter bytes, as a crafted
    /// file would hold it.
    fn crafted(cookie: u32, payload_len: u32, digits: u32, lowest: u64, highest: u64) -> Vec<u8> {
        let mut inner = Vec::new();
        inner.extend(cookie.to_be_bytes());
        inner.extend(payload_len.to_be_bytes());
        inner.extend(0u32.to_be_bytes());
        inner.extend(digits.to_be_bytes());
        inner.extend(lowest.to_be_bytes());
        inner.extend(highest.to_be_bytes());
        inner.extend(1.0f64.to_be_bytes());
        inner.extend([2, 2]); // a count of 1 (zigzag-encoded: 2) at index 0, another at 1
        inner
    }

    fn deflated(inner: &[u8]) -> String {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(inner).unwrap();
        let compressed = z.finish().unwrap();
        let mut bytes = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        bytes.extend((compressed.len() as u32).to_be_bytes());
        bytes.extend(compressed);
        STANDARD.encode(bytes)
    }

    fn error(text: &str) -> String {
        decode(text, None).expect_err("a crafted histogram must be refused")
    }

    #[test]
    fn a_well_formed_crafted_histogram_decodes() {
        let h = decode(&deflated(&crafted(V2_COOKIE, 2, 3, 1, 1 << 40)), None).unwrap();
        assert_eq!((h.len(), h.sigfig(), h.high()), (2, 3, 1 << 40));
        assert_eq!(h.count_at(0), 1);
        assert_eq!(h.count_at(1), 1);
    }

    #[test]
    fn a_huge_declared_payload_is_refused_before_allocating() {
        let e = error(&deflated(&crafted(V2_COOKIE, u32::MAX, 3, 1, 1 << 40)));
        assert!(e.contains("4294967295-byte payload"), "{e}");
        // Within the bound, but more than the data holds.
        let e = error(&deflated(&crafted(V2_COOKIE, 1000, 3, 1, 1 << 40)));
        assert!(e.contains("cut short"), "{e}");
    }

    #[test]
    fn settings_a_collector_refuses_are_refused() {
        let e = error(&deflated(&crafted(V2_COOKIE, 2, 3, 2, 1 << 40)));
        assert!(e.contains("lowest discernible value 2"), "{e}");
        let e = error(&deflated(&crafted(V2_COOKIE, 2, 6, 1, 1 << 40)));
        assert!(e.contains("significant_digits"), "{e}");
        let e = error(&deflated(&crafted(V2_COOKIE, 2, 1 << 20, 1, 1 << 40)));
        assert!(e.contains("significant_digits"), "{e}");
        let e = error(&deflated(&crafted(V2_COOKIE, 2, 3, 1, u64::MAX)));
        assert!(e.contains("highest_ns"), "{e}");
        let expect = ProfileConfig::new(2, 1 << 40);
        let text = deflated(&crafted(V2_COOKIE, 2, 3, 1, 1 << 40));
        let e = decode(&text, Some(&expect)).unwrap_err();
        assert!(e.contains("meta.config says 2"), "{e}");
    }

    #[test]
    fn wrong_cookies_and_short_texts_are_refused() {
        let e = error(&deflated(&crafted(0x1c84_9301, 2, 3, 1, 1 << 40)));
        assert!(e.contains("inner cookie"), "{e}");
        let plain = STANDARD.encode(crafted(V2_COOKIE, 2, 3, 1, 1 << 40));
        assert!(error(&plain).contains("uncompressed"));
        assert!(error("AAAA").contains("too short"));
        let mut bytes = STANDARD
            .decode(deflated(&crafted(V2_COOKIE, 2, 3, 1, 1 << 40)))
            .unwrap();
        bytes.truncate(bytes.len() - 3);
        assert!(error(&STANDARD.encode(&bytes)).contains("cut short"));
        // Zlib garbage after a valid outer header.
        let mut bytes = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        bytes.extend(4u32.to_be_bytes());
        bytes.extend([1, 2, 3, 4]);
        assert!(error(&STANDARD.encode(&bytes)).contains("does not inflate"));
    }

    #[test]
    fn the_payload_bound_follows_hdrhistograms_sizing() {
        for digits in 1..=5u8 {
            for highest in [MIN_HIGHEST, 1 << 20, 3_600_000_000_000, MAX_HIGHEST] {
                let h = Histogram::new_with_bounds(1, highest, digits).unwrap();
                assert_eq!(
                    counters(digits, highest),
                    h.distinct_values() as u64,
                    "{digits} digits, highest {highest}"
                );
            }
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_bucket_tops_clamped_to_min_and_max() {
        let mut h = Histogram::new_with_bounds(1, 1 << 40, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        // Ranks 500, 900, 950, 990, 999 hold 500 000 … 999 000, each in a 256 ns bucket
        // (2^18 ≤ v < 2^19 → 256, 2^19 ≤ v < 2^20 → 512).
        let top = |v: u64| h.highest_equivalent(v);
        assert_eq!(
            percentiles(&h, 1000, 1_000_000),
            [
                top(500_000),
                top(900_000),
                top(950_000),
                top(990_000),
                top(999_000)
            ]
        );
        assert_eq!(top(500_000), 500_223);
        assert_eq!(percentiles(&h, 1000, 990_000)[4], 990_000, "clamped to max");
    }
}
