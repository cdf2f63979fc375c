//! PromQL over one stage histogram family, in the two shapes Prometheus may store it, for the
//! rules ([`crate::rules`]) and the dashboard ([`crate::dashboard`]) alike.
//!
//! * **Classic**: per label set, one `<family>_bucket{le="…"}` series per bucket, a `_count` and
//!   a `_sum`.
//! * **Native** (`[prometheus] native = true`, or `laptime rules --native`): per label set, one
//!   series under the bare family name whose samples are whole histograms. Prometheus 2.42 keeps
//!   only that series for a family exported with native buckets (no `_bucket`, `_count` or
//!   `_sum`, even when the exposition carries classic buckets too), read with
//!   `histogram_quantile`, `histogram_count` and `histogram_sum`.
//!
//! The two shapes take the same aggregation ([`Agg`]); the classic one adds `le`, which a native
//! histogram carries inside its samples.

use laptime::config::PrometheusSection;

/// How Prometheus stores the stage histograms the queries read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Histograms {
    /// `_bucket`, `_count` and `_sum` series.
    #[default]
    Classic,
    /// Native histograms, one series per label set under the family's own name.
    Native,
}

/// How a query sums a family's series.
#[derive(Debug, Clone, Copy)]
pub enum Agg<'a> {
    /// `sum`: everything into one series.
    All,
    /// `sum by (…)`, the label names comma-separated (never `le`: the classic shape adds it).
    By(&'a str),
    /// `sum without (…)`.
    Without(&'a str),
}

impl Agg<'_> {
    /// The aggregation and the space before its operand: `sum`, `sum by (stage) `.
    fn prefix(self, le: bool) -> String {
        match self {
            Agg::All if le => "sum by (le) ".to_owned(),
            Agg::All => "sum".to_owned(),
            Agg::By(g) if le && !g.is_empty() => format!("sum by (le, {g}) "),
            Agg::By(_) if le => "sum by (le) ".to_owned(),
            Agg::By(g) => format!("sum by ({g}) "),
            // `without` keeps `le` by itself.
            Agg::Without(g) => format!("sum without ({g}) "),
        }
    }
}

/// One part of a histogram that grows like a counter.
#[derive(Debug, Clone, Copy)]
pub enum Part {
    /// The number of spans.
    Count,
    /// Their total duration.
    Sum,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Count => "count",
            Part::Sum => "sum",
        }
    }
}

impl Histograms {
    /// The shape `[prometheus]` says the exporter's stage histograms have.
    pub fn of(prometheus: &PrometheusSection) -> Self {
        if prometheus.native {
            Histograms::Native
        } else {
            Histograms::Classic
        }
    }

    /// Whether this is [`Histograms::Native`].
    pub fn is_native(self) -> bool {
        self == Histograms::Native
    }

    /// `histogram_quantile(q, …)` of `family` over `range`, the series picked by `selector`
    /// (`{…}`, braces included) summed as `agg` says.
    pub fn quantile(
        self,
        q: f64,
        agg: Agg<'_>,
        family: &str,
        selector: &str,
        range: &str,
    ) -> String {
        let (series, sum) = match self {
            Histograms::Classic => (format!("{family}_bucket{selector}"), agg.prefix(true)),
            Histograms::Native => (format!("{family}{selector}"), agg.prefix(false)),
        };
        format!("histogram_quantile({q}, {sum}(rate({series}[{range}])))")
    }

    /// The per-second rate of a family's `part` (spans, or their total duration), summed as
    /// `agg` says.
    pub fn rate(
        self,
        part: Part,
        agg: Agg<'_>,
        family: &str,
        selector: &str,
        range: &str,
    ) -> String {
        let (sum, part) = (agg.prefix(false), part.name());
        match self {
            Histograms::Classic => format!("{sum}(rate({family}_{part}{selector}[{range}]))"),
            Histograms::Native => {
                format!("{sum}(histogram_{part}(rate({family}{selector}[{range}])))")
            }
        }
    }

    /// A series that exists while the family is exported, for `absent()` and Grafana's
    /// `label_values()`: its `_count`, or the native series itself.
    pub fn presence(self, family: &str, selector: &str) -> String {
        match self {
            Histograms::Classic => format!("{family}_count{selector}"),
            Histograms::Native => format!("{family}{selector}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_shapes_of_each_query() {
        let (c, n) = (Histograms::Classic, Histograms::Native);
        let fam = "mm_stage_duration_seconds";
        let sel = r#"{stage="tick"}"#;
        assert_eq!(
            c.quantile(0.99, Agg::By("stage, env"), fam, sel, "5m"),
            r#"histogram_quantile(0.99, sum by (le, stage, env) (rate(mm_stage_duration_seconds_bucket{stage="tick"}[5m])))"#
        );
        assert_eq!(
            n.quantile(0.99, Agg::By("stage, env"), fam, sel, "5m"),
            r#"histogram_quantile(0.99, sum by (stage, env) (rate(mm_stage_duration_seconds{stage="tick"}[5m])))"#
        );
        assert_eq!(
            c.quantile(0.5, Agg::All, fam, "{}", "1m"),
            "histogram_quantile(0.5, sum by (le) (rate(mm_stage_duration_seconds_bucket{}[1m])))"
        );
        assert_eq!(
            n.quantile(0.5, Agg::All, fam, "{}", "1m"),
            "histogram_quantile(0.5, sum(rate(mm_stage_duration_seconds{}[1m])))"
        );
        assert_eq!(
            n.quantile(0.5, Agg::Without("instance"), fam, "{}", "1m"),
            "histogram_quantile(0.5, sum without (instance) (rate(mm_stage_duration_seconds{}[1m])))"
        );
        assert_eq!(
            c.rate(Part::Count, Agg::All, fam, sel, "1m"),
            r#"sum(rate(mm_stage_duration_seconds_count{stage="tick"}[1m]))"#
        );
        assert_eq!(
            n.rate(Part::Sum, Agg::By("stage"), fam, sel, "1m"),
            r#"sum by (stage) (histogram_sum(rate(mm_stage_duration_seconds{stage="tick"}[1m])))"#
        );
        assert_eq!(c.presence(fam, ""), "mm_stage_duration_seconds_count");
        assert_eq!(
            n.presence(fam, sel),
            r#"mm_stage_duration_seconds{stage="tick"}"#
        );
    }
}
