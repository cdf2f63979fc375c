//! The OpenMetrics 1.0 text exposition (`application/openmetrics-text; version=1.0.0`): what a
//! Prometheus without `--enable-feature=native-histograms` asks for first.
//!
//! The stage histograms are written by the text writer ([`super::text`], in its OpenMetrics
//! dialect), with a `_created` sample per series (the collector's install time) and, where a
//! golden trace was kept, an exemplar on the bucket of its value. The registry's other families
//! are written here from what the prometheus crate gathers: a counter `x_total` is the family
//! `x` with samples `x_total` (and `x_created` for the export's own counters that start at
//! install), untyped families are `unknown`, and the exposition ends with `# EOF`. No `# UNIT`:
//! OpenMetrics wants the name to end in the unit it gives, which `_ms` names do not.
//!
//! A registry the exporter does not own is gathered plainly and written without `_created` or
//! exemplars (its prefix and common labels are the gather's to add).

use std::fmt::Write as _;
use std::time::SystemTime;

use ::prometheus::Registry;
use ::prometheus::proto::{Metric, MetricFamily, MetricType};

use super::Unit;
use super::buckets::Exemplar;
use super::names::MetricNames;
use super::text::{self, Dialect, Entry, LeCache, escape, label_text, push_all};

/// The whole registry in OpenMetrics, ending in `# EOF`. `created` is when the collector was
/// installed (none before one publishes).
pub(super) fn render(
    registry: &Registry,
    owned: bool,
    created: Option<SystemTime>,
    names: &MetricNames,
) -> String {
    let (others, mut ours) = if owned {
        text::gather_split(registry)
    } else {
        (registry.gather(), Vec::new())
    };
    let created = created.filter(|_| owned).map(unix_seconds);
    let dialect = Dialect::OpenMetrics {
        created: created.as_deref(),
    };
    let mut le = LeCache::default();
    let room = ours
        .iter_mut()
        .map(|f| text::room_for(f, &mut le, dialect))
        .sum::<usize>()
        + others
            .iter()
            .map(|f| 256 + 192 * f.get_metric().len())
            .sum::<usize>();
    let mut out = String::with_capacity(room);
    for entry in text::in_name_order(others, |f| f.name(), ours) {
        match entry {
            Entry::Other(f) => {
                let since_install = created.as_deref().filter(|_| names.since_install(f.name()));
                family(&mut out, &f, since_install);
            }
            Entry::Ours(mut f) => text::histogram_family(&mut out, &mut f, &mut le, dialect),
        }
    }
    out.push_str("# EOF\n");
    out
}

/// One family the prometheus crate gathered; `created` for its `_created` samples, if known.
fn family(out: &mut String, f: &MetricFamily, created: Option<&str>) {
    let ty = f.get_field_type();
    let name = f.name();
    let (family, type_name) = match ty {
        MetricType::COUNTER => (name.strip_suffix("_total").unwrap_or(name), "counter"),
        MetricType::GAUGE => (name, "gauge"),
        MetricType::SUMMARY => (name, "summary"),
        MetricType::UNTYPED => (name, "unknown"),
        MetricType::HISTOGRAM => (name, "histogram"),
    };
    let _ = writeln!(out, "# TYPE {family} {type_name}");
    if !f.help().is_empty() {
        let _ = writeln!(out, "# HELP {family} {}", escape(f.help(), true));
    }
    let mut labels = String::new();
    for m in f.get_metric() {
        label_text(&mut labels, m.get_label());
        let line = Line {
            family,
            labels: &labels,
        };
        match ty {
            MetricType::COUNTER => {
                line.sample(out, "_total", None, &value(m.get_counter().get_value()))
            }
            MetricType::GAUGE => line.sample(out, "", None, &value(m.get_gauge().get_value())),
            // The crate marks the getter deprecated (protobuf-specific), yet still fills it in.
            #[allow(deprecated)]
            MetricType::UNTYPED => line.sample(out, "", None, &value(m.get_untyped().get_value())),
            MetricType::SUMMARY => summary(out, &line, m),
            MetricType::HISTOGRAM => histogram(out, &line, m),
        }
        if let Some(at) = created.filter(|_| ty != MetricType::GAUGE && ty != MetricType::UNTYPED) {
            line.sample(out, "_created", None, at);
        }
    }
}

/// The samples of one series of a family.
struct Line<'a> {
    family: &'a str,
    /// Written once per series, escaped.
    labels: &'a str,
}

impl Line<'_> {
    /// `<family><suffix>{<labels>,<extra>} <value>`.
    fn sample(&self, out: &mut String, suffix: &str, extra: Option<(&str, &str)>, value: &str) {
        push_all(out, &[self.family, suffix]);
        if !self.labels.is_empty() || extra.is_some() {
            push_all(out, &["{", self.labels]);
            if let Some((name, v)) = extra {
                let sep = if self.labels.is_empty() { "" } else { "," };
                push_all(out, &[sep, name, "=\"", v, "\""]);
            }
            out.push('}');
        }
        push_all(out, &[" ", value, "\n"]);
    }
}

fn summary(out: &mut String, line: &Line<'_>, m: &Metric) {
    let s = m.get_summary();
    for q in s.get_quantile() {
        let quantile = canonical(q.quantile());
        line.sample(out, "", Some(("quantile", &quantile)), &value(q.value()));
    }
    line.sample(out, "_sum", None, &value(s.sample_sum()));
    line.sample(out, "_count", None, &s.sample_count().to_string());
}

/// A histogram another collector built: its buckets, `+Inf` (from the count when the crate left
/// it out), `_count` and `_sum`.
fn histogram(out: &mut String, line: &Line<'_>, m: &Metric) {
    let h = m.get_histogram();
    for b in h.get_bucket() {
        if b.upper_bound().is_infinite() {
            continue;
        }
        let le = canonical(b.upper_bound());
        let count = b.cumulative_count().to_string();
        line.sample(out, "_bucket", Some(("le", &le)), &count);
    }
    let count = h.get_sample_count().to_string();
    line.sample(out, "_bucket", Some(("le", "+Inf")), &count);
    line.sample(out, "_count", None, &count);
    line.sample(out, "_sum", None, &value(h.get_sample_sum()));
}

/// ` # {trace_id="tick_<n>"} <value> <timestamp>` after a bucket's count.
pub(super) fn push_exemplar(out: &mut String, e: &Exemplar, unit: Unit) {
    let _ = write!(
        out,
        " # {{trace_id=\"tick_{}\"}} {} {}",
        e.tick,
        value(unit.of_ns(e.value_ns)),
        unix_seconds(e.at)
    );
}

/// A sample value: shortest round-trip digits, `NaN`, `+Inf`, `-Inf`.
fn value(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".to_owned(),
        f64::INFINITY => "+Inf".to_owned(),
        f64::NEG_INFINITY => "-Inf".to_owned(),
        v => v.to_string(),
    }
}

/// A number as OpenMetrics wants `le` and `quantile` values written (its "canonical numbers"):
/// Go's `%g` with a `.0` added when there is neither a point nor an exponent, so that the same
/// bound is the same label value whatever client wrote it: `1e-06`, `0.0001`, `1.0`,
/// `100000.0`, `1e+06`, `+Inf`.
pub(super) fn canonical(v: f64) -> String {
    if !v.is_finite() {
        return value(v);
    }
    // Shortest round-trip digits with their exponent, e.g. "2.5e-5".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    // Go's rule for the shortest form: an exponent below -4 or of 6 and more takes `e`, written
    // with a sign and at least two digits.
    if v != 0.0 && !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.unsigned_abs());
    }
    let plain = v.to_string();
    if plain.contains('.') {
        plain
    } else {
        plain + ".0"
    }
}

/// Unix seconds with nanoseconds, exactly: `1733600000.123456789`.
pub(super) fn unix_seconds(at: SystemTime) -> String {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", since.as_secs(), since.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of the OpenMetrics specification's "Considerations: Canonical Numbers".
    #[test]
    fn numbers_are_written_as_the_specification_shows() {
        let cases = [
            (0.0, "0.0"),
            (0.001, "0.001"),
            (0.002, "0.002"),
            (0.01, "0.01"),
            (0.1, "0.1"),
            (0.9, "0.9"),
            (0.95, "0.95"),
            (0.99, "0.99"),
            (0.999, "0.999"),
            (1.0, "1.0"),
            (1.7, "1.7"),
            (10.0, "10.0"),
            (1e-10, "1e-10"),
            (1e-9, "1e-09"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (100000.0, "100000.0"),
            (1e6, "1e+06"),
            (1e10, "1e+10"),
            (2.5e-5, "2.5e-05"),
            (1234567.0, "1.234567e+06"),
            (f64::INFINITY, "+Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(canonical(v), want, "{v}");
        }
    }

    #[test]
    fn timestamps_are_exact_unix_seconds() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_733_600_000, 5_000);
        assert_eq!(unix_seconds(at), "1733600000.000005000");
    }
}
