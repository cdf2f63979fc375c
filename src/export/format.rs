//! The exposition formats `/metrics` answers in, and which one a request's `Accept` header asks
//! for (RFC 9110 §12.5.1: media ranges with parameters and `q` weights).

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// The Prometheus text format, `text/plain; version=0.0.4`: what every scraper reads.
    Text,
    /// OpenMetrics 1.0 text, `application/openmetrics-text; version=1.0.0`: `_created` series,
    /// exemplars, `# EOF`.
    OpenMetrics,
    /// Length-delimited `io.prometheus.client.MetricFamily` messages: the only format that carries
    /// native histograms.
    Protobuf,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Protobuf => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            }
        }
    }
}

/// How much a request's `Accept` header wants each format, in thousandths (`q=0.8` is 800); 0
/// for not acceptable. Without the header, or with one that names none of them, text.
#[cfg(feature = "http")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Accept {
    weights: [u16; 3],
}

#[cfg(feature = "http")]
impl Default for Accept {
    fn default() -> Self {
        Self {
            weights: [1000, 0, 0],
        }
    }
}

#[cfg(feature = "http")]
impl Accept {
    /// Reads an `Accept` header. A media range that does not parse is skipped: a client that
    /// sends garbage gets text, the format every scraper takes.
    pub(crate) fn parse(header: &[u8]) -> Self {
        let Ok(header) = std::str::from_utf8(header) else {
            return Self::default();
        };
        let mut weights = [0u16; 3];
        // The most specific range decides a format's weight (RFC 9110: `text/plain` over
        // `text/*` over `*/*`), so each weight remembers how specific its source was.
        let mut specificity = [0u8; 3];
        for range in header.split(',') {
            let Some(parsed) = MediaRange::parse(range) else {
                continue;
            };
            for format in [Format::Text, Format::OpenMetrics, Format::Protobuf] {
                let Some(rank) = parsed.matches(format) else {
                    continue;
                };
                let k = format as usize;
                // Of two ranges as specific, the one that weighs it more.
                if rank > specificity[k] || (rank == specificity[k] && parsed.q > weights[k]) {
                    specificity[k] = rank;
                    weights[k] = parsed.q;
                }
            }
        }
        if weights == [0; 3] && specificity == [0; 3] {
            return Self::default();
        }
        Self { weights }
    }

    /// The format to answer in, of those `offered` (text always is): the one the client weighs
    /// highest, text on a tie, text when it accepts none of them (better an answer the client
    /// may read than a `406` a scraper cannot act on).
    pub(crate) fn choose(self, offered: &[Format]) -> Format {
        let mut best = (Format::Text, self.weights[Format::Text as usize]);
        for &f in offered {
            let w = self.weights[f as usize];
            if w > best.1 {
                best = (f, w);
            }
        }
        best.0
    }
}

#[cfg(feature = "http")]
/// One media range of an `Accept` header: type, subtype, the parameters that tell Prometheus'
/// formats apart, and the weight.
struct MediaRange<'a> {
    ty: &'a str,
    subtype: &'a str,
    version: Option<&'a str>,
    proto: Option<&'a str>,
    encoding: Option<&'a str>,
    q: u16,
}

#[cfg(feature = "http")]
impl<'a> MediaRange<'a> {
    fn parse(range: &'a str) -> Option<Self> {
        let mut parts = range.split(';');
        let (ty, subtype) = parts.next()?.trim().split_once('/')?;
        let mut r = MediaRange {
            ty: ty.trim(),
            subtype: subtype.trim(),
            version: None,
            proto: None,
            encoding: None,
            q: 1000,
        };
        if r.ty.is_empty() || r.subtype.is_empty() {
            return None;
        }
        for param in parts {
            let (name, value) = param.split_once('=')?;
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "q" => r.q = parse_q(value)?,
                "version" => r.version = Some(value),
                "proto" => r.proto = Some(value),
                "encoding" => r.encoding = Some(value),
                _ => {}
            }
        }
        Some(r)
    }

    /// How specifically this range names `format` (3 exactly, 2 by `type/*`, 1 by `*/*`), or
    /// `None` if it does not.
    fn matches(&self, format: Format) -> Option<u8> {
        let (ty, subtype) = match format {
            Format::Text => ("text", "plain"),
            Format::OpenMetrics => ("application", "openmetrics-text"),
            Format::Protobuf => ("application", "vnd.google.protobuf"),
        };
        if self.ty == "*" && self.subtype == "*" {
            // A wildcard takes any format, but only text is one a client that asked for nothing
            // in particular is sure to read.
            return (format == Format::Text).then_some(1);
        }
        if !self.ty.eq_ignore_ascii_case(ty) {
            return None;
        }
        if self.subtype == "*" {
            return (format == Format::Text).then_some(2);
        }
        if !self.subtype.eq_ignore_ascii_case(subtype) {
            return None;
        }
        let fits = match format {
            Format::Text => self.version.is_none_or(|v| v == "0.0.4"),
            // 1.0.0 is what is written; 0.0.1 is the draft Prometheus also offers, the same lines.
            Format::OpenMetrics => self.version.is_none_or(|v| v == "1.0.0" || v == "0.0.1"),
            Format::Protobuf => {
                self.proto == Some("io.prometheus.client.MetricFamily")
                    && self.encoding == Some("delimited")
            }
        };
        fits.then_some(3)
    }
}

#[cfg(feature = "http")]
/// A `q` value: `0` to `1` with at most three decimals, in thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;

    const ALL: [Format; 3] = [Format::Text, Format::OpenMetrics, Format::Protobuf];

    fn choose(header: &str, offered: &[Format]) -> Format {
        Accept::parse(header.as_bytes()).choose(offered)
    }

    #[test]
    fn prometheus_with_native_histograms_gets_protobuf() {
        let h = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(choose(h, &ALL), Format::Protobuf);
        assert_eq!(choose(h, &[Format::OpenMetrics]), Format::OpenMetrics);
        assert_eq!(choose(h, &[]), Format::Text);
    }

    #[test]
    fn prometheus_without_the_flag_gets_openmetrics_or_text() {
        let h = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(choose(h, &ALL), Format::OpenMetrics);
        assert_eq!(choose(h, &[Format::Protobuf]), Format::Text);
    }

    #[test]
    fn plain_clients_get_text() {
        for h in ["", "*/*", "text/plain", "text/*", "text/html, */*;q=0.5"] {
            assert_eq!(choose(h, &ALL), Format::Text, "{h:?}");
        }
    }

    #[test]
    fn weights_and_specific_ranges_decide() {
        assert_eq!(
            choose("text/plain;q=0.2, application/openmetrics-text", &ALL),
            Format::OpenMetrics
        );
        // `text/plain;q=0` refuses text even though `*/*` would take it.
        assert_eq!(
            choose(
                "text/plain;q=0, */*, application/openmetrics-text;q=0.1",
                &ALL
            ),
            Format::OpenMetrics
        );
        // Protobuf without the message it carries is not ours.
        assert_eq!(
            choose("application/vnd.google.protobuf", &ALL),
            Format::Text
        );
        assert_eq!(
            choose(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
                &ALL
            ),
            Format::Text
        );
        assert_eq!(
            choose("application/openmetrics-text;version=2.0.0", &ALL),
            Format::Text
        );
        // Two ranges as specific (two versions): the higher weight counts, in either order.
        let versions = "application/openmetrics-text;version=0.0.1;q=0.3, application/openmetrics-text;version=1.0.0, text/plain;q=0.5";
        assert_eq!(choose(versions, &ALL), Format::OpenMetrics);
        let reversed = "text/plain;q=0.5, application/openmetrics-text;version=1.0.0;q=0.3, application/openmetrics-text;version=0.0.1";
        assert_eq!(choose(reversed, &ALL), Format::OpenMetrics);
    }

    #[test]
    fn garbage_gets_text_and_never_panics() {
        for h in [
            "\u{0}\u{1}",
            ";;;,,,",
            "a/b;q=2",
            "application/openmetrics-text;q=1.5",
            "application/openmetrics-text;q=-1",
            "application/openmetrics-text;q=0.12345",
            "application/openmetrics-text;q",
            "/",
            "application/",
        ] {
            assert_eq!(choose(h, &ALL), Format::Text, "{h:?}");
        }
        assert_eq!(Accept::parse(&[0xff, 0xfe]), Accept::default());
    }

    #[test]
    fn q_values_are_read_to_the_thousandth() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.8"), Some(800));
        assert_eq!(parse_q("0.75"), Some(750));
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q("x"), None);
    }
}
