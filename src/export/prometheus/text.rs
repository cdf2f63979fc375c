//! The text exposition of the stage histograms, written straight from the published counts.
//!
//! At 20 000 series the prometheus crate's path (a protobuf `Metric` with ~25 `Bucket` messages
//! and owned label strings per series, gathered, sorted, then encoded line by line with every
//! label escaped again on every line) took ~200 ms a scrape. Here each series' labels are escaped
//! once, each bucket list's `le` values formatted once, and every line is a few copies and an
//! integer. The output is byte for byte what [`::prometheus::TextEncoder`] writes for the same
//! families (`tests/prometheus.rs` checks it against the encoder), so the registry's other metrics still go
//! through the crate and the two are merged family by family in name order, as a gather orders
//! them.
//!
//! The same writer renders them in OpenMetrics ([`Dialect::OpenMetrics`], for
//! [`super::openmetrics`]): canonical `le` floats, exemplars and `_created` lines.
//!
//! Only an exporter that owns its registry renders this way: a registry given by the application
//! may carry a prefix or common labels that a gather adds and this writer cannot see.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;

use ::prometheus::proto::MetricFamily;
use ::prometheus::{Encoder, Registry, TextEncoder};

use super::Unit;
use super::buckets::Bounds;
use super::encode::HistFamily;

thread_local! {
    /// Set while [`render`] gathers on this thread: the stage collector hands its histogram
    /// families over here instead of building protobuf for them.
    static HISTOGRAMS: RefCell<Option<Vec<HistFamily>>> = const { RefCell::new(None) };
}

/// Takes `families` for the text render if one is gathering on this thread; gives them back
/// otherwise (a plain gather: the caller builds protobuf).
pub(super) fn offer(families: Vec<HistFamily>) -> Option<Vec<HistFamily>> {
    HISTOGRAMS.with(|h| match h.borrow_mut().as_mut() {
        Some(taken) => {
            taken.extend(families.into_iter().filter(|f| !f.series.is_empty()));
            None
        }
        None => Some(families),
    })
}

/// The whole registry's text exposition: the other collectors' families through the
/// prometheus crate's encoder, the stage histograms written here, merged in name order into one
/// buffer sized up front (at 20 000 series a render is ~40 MB; growing it, or writing each family
/// apart and copying, spent more time in page faults than in writing).
pub(super) fn render(registry: &Registry) -> Result<String, String> {
    let (others, mut ours) = gather_split(registry);
    let mut others_text = Vec::with_capacity(others.len());
    for family in &others {
        others_text.push((family.name(), encode(family)?));
    }
    let mut le = LeCache::default();
    let room = ours
        .iter_mut()
        .map(|f| room_for(f, &mut le, Dialect::Text))
        .sum::<usize>()
        + others_text.iter().map(|(_, t)| t.len()).sum::<usize>();
    let mut out = String::with_capacity(room);
    for entry in in_name_order(others_text, |(name, _)| name, ours) {
        match entry {
            Entry::Other((_, text)) => out.push_str(&text),
            Entry::Ours(mut f) => histogram_family(&mut out, &mut f, &mut le, Dialect::Text),
        }
    }
    Ok(out)
}

/// A family of the registry: another collector's (as gathered, or already encoded), or one of
/// the stage histograms this module writes.
pub(super) enum Entry<O> {
    Other(O),
    Ours(HistFamily),
}

/// `others` (in name order, as a gather returns them) with `ours` (in name order) merged in, as
/// one gather would order them all.
pub(super) fn in_name_order<O>(
    others: Vec<O>,
    name: impl Fn(&O) -> &str,
    ours: Vec<HistFamily>,
) -> Vec<Entry<O>> {
    let mut all = Vec::with_capacity(others.len() + ours.len());
    let mut ours = ours.into_iter().peekable();
    for other in others {
        while let Some(f) = ours.next_if(|f| f.name.as_str() < name(&other)) {
            all.push(Entry::Ours(f));
        }
        all.push(Entry::Other(other));
    }
    all.extend(ours.map(Entry::Ours));
    all
}

/// The registry's families: the other collectors' as the prometheus crate gathers them, and the
/// stage histograms as [`offer`] took them, in name order.
pub(super) fn gather_split(registry: &Registry) -> (Vec<MetricFamily>, Vec<HistFamily>) {
    let others = {
        let _gathering = Gathering::start();
        registry.gather()
    };
    let mut ours = HISTOGRAMS
        .with(|h| h.borrow_mut().take())
        .unwrap_or_default();
    ours.sort_by(|a, b| a.name.cmp(&b.name));
    (others, ours)
}

/// Opens the thread's slot for [`offer`] and closes it when dropped, so a panicking collector
/// leaves nothing behind for the next gather on this thread.
struct Gathering;

impl Gathering {
    fn start() -> Self {
        HISTOGRAMS.with(|h| *h.borrow_mut() = Some(Vec::new()));
        Gathering
    }
}

impl Drop for Gathering {
    fn drop(&mut self) {
        // Keeps what was offered for `render` to take; only an unwind leaves it to be cleared.
        if std::thread::panicking() {
            HISTOGRAMS.with(|h| h.borrow_mut().take());
        }
    }
}

fn encode(family: &MetricFamily) -> Result<String, String> {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(std::slice::from_ref(family), &mut buf)
        .map_err(|e| e.to_string())?;
    String::from_utf8(buf).map_err(|e| e.to_string())
}

/// How a histogram family is written.
#[derive(Clone, Copy)]
pub(super) enum Dialect<'a> {
    /// The Prometheus text format, byte for byte as the prometheus crate's encoder writes it.
    Text,
    /// OpenMetrics 1.0: `le` as canonical floats, each bucket's exemplar, and a `_created`
    /// sample per series when the start is known (unix seconds, written once).
    OpenMetrics { created: Option<&'a str> },
}

impl Dialect<'_> {
    fn is_openmetrics(self) -> bool {
        matches!(self, Dialect::OpenMetrics { .. })
    }
}

/// At least the bytes [`histogram_family`] writes for `f`: every line at its longest (a count
/// of 20 digits), labels escaped at worst. Room never touched costs no page.
pub(super) fn room_for(f: &HistFamily, le: &mut LeCache, dialect: Dialect<'_>) -> usize {
    let om = dialect.is_openmetrics();
    let mut room = f.help.len() * 2 + f.name.len() * 2 + 32;
    for s in &f.series {
        let line = f.name.len() + 16 + s.labels.text.len() + 22;
        let bounds = le.get(&s.export.bounds, f.unit, om);
        room += bounds.iter().map(|b| line + b.len()).sum::<usize>();
        room += 3 * line + 32;
        if om {
            // `_created`, and each exemplar: labels, value and timestamp.
            room += line + 32;
            room += s.exemplars.as_ref().map_or(0, |e| e.len() * 96);
        }
    }
    room
}

/// The `le` values of the last bucket list, unit and dialect seen (stages mostly share one list),
/// each with the `"} ` that follows it on a bucket line: one copy less on each of half a million
/// lines at 20 000 series.
#[derive(Default)]
pub(super) struct LeCache {
    bounds: Option<(Arc<Bounds>, Unit, bool)>,
    le: Vec<String>,
}

impl LeCache {
    fn get(&mut self, bounds: &Arc<Bounds>, unit: Unit, openmetrics: bool) -> &[String] {
        let same = (self.bounds.as_ref())
            .is_some_and(|(b, u, om)| Arc::ptr_eq(b, bounds) && *u == unit && *om == openmetrics);
        if !same {
            let le = |ns: &u64| {
                let mut le = match openmetrics {
                    true => super::openmetrics::canonical(unit.of_ns(*ns)),
                    false => unit.of_ns(*ns).to_string(),
                };
                le.push_str("\"} ");
                le
            };
            self.le = bounds.as_slice().iter().map(le).collect();
            self.bounds = Some((bounds.clone(), unit, openmetrics));
        }
        &self.le
    }
}

/// One histogram family as the prometheus crate's encoder writes it (or in OpenMetrics):
/// `# HELP`, `# TYPE`, then each series (ordered by label values, as a gather orders them) as
/// its buckets, `+Inf`, `_sum` and `_count` (and `_created`).
pub(super) fn histogram_family(
    out: &mut String,
    f: &mut HistFamily,
    le: &mut LeCache,
    dialect: Dialect<'_>,
) {
    let (name, unit, om) = (f.name.as_str(), f.unit, dialect.is_openmetrics());
    f.series
        .sort_by(|a, b| super::encode::label_order(&a.labels.pairs, &b.labels.pairs));
    if !f.help.is_empty() {
        // OpenMetrics escapes the double quote in help texts too.
        let _ = writeln!(out, "# HELP {name} {}", escape(f.help, om));
    }
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut bucket = String::new();
    let mut line = String::new();
    for s in &f.series {
        let labels = s.labels.text.as_str();
        let e = &*s.export;
        let exemplars = s.exemplars.as_deref().filter(|_| om);
        let exemplar = |out: &mut String, i: usize| {
            if let Some(x) = exemplars.and_then(|all| all.get(i)?.as_ref()) {
                super::openmetrics::push_exemplar(out, x, unit);
            }
        };
        // Plain pushes, no formatting machinery: half a million lines at 20 000 series.
        let sep = if labels.is_empty() { "" } else { "," };
        bucket.clear();
        push_all(&mut bucket, &[name, "_bucket{", labels, sep, "le=\""]);
        let mut cumulative = 0u64;
        let bounds = le.get(&e.bounds, unit, om);
        for (i, (bound, n)) in bounds.iter().zip(e.counts.iter()).enumerate() {
            cumulative += n;
            push_all(out, &[&bucket, bound]);
            push_count(out, cumulative);
            exemplar(out, i);
            out.push('\n');
        }
        push_all(out, &[&bucket, "+Inf\"} "]);
        push_count(out, e.count);
        exemplar(out, bounds.len());
        out.push('\n');
        let (open, close) = if labels.is_empty() {
            ("", "")
        } else {
            ("{", "}")
        };
        line.clear();
        push_all(&mut line, &[name, "_sum", open, labels, close, " "]);
        let _ = writeln!(line, "{}", e.sum_ns as f64 / unit.ns_per_unit());
        out.push_str(&line);
        push_line(out, &[name, "_count", open, labels, close, " "], e.count);
        if let Dialect::OpenMetrics { created: Some(at) } = dialect {
            push_all(out, &[name, "_created", open, labels, close, " ", at, "\n"]);
        }
    }
}

/// A series' labels as `name="value",…`, values escaped, into `out` (cleared first).
pub(super) fn label_text(out: &mut String, labels: &[::prometheus::proto::LabelPair]) {
    out.clear();
    for l in labels {
        if !out.is_empty() {
            out.push(',');
        }
        push_all(out, &[l.name(), "=\"", &escape(l.value(), true), "\""]);
    }
}

pub(super) fn push_all(out: &mut String, parts: &[&str]) {
    for p in parts {
        out.push_str(p);
    }
}

/// `parts`, then a count as the encoder writes it, then a newline.
fn push_line(out: &mut String, parts: &[&str], n: u64) {
    push_all(out, parts);
    push_count(out, n);
    out.push('\n');
}

/// A count as the encoder writes it (an `f64`: below 2^53 that is the integer's digits, written
/// here without the float's shortest-digits search), two digits at a time.
fn push_count(out: &mut String, n: u64) {
    /// "00", "01", … "99".
    const PAIRS: [u8; 200] = {
        let mut pairs = [0u8; 200];
        let mut i = 0;
        while i < 100 {
            pairs[2 * i] = b'0' + (i / 10) as u8;
            pairs[2 * i + 1] = b'0' + (i % 10) as u8;
            i += 1;
        }
        pairs
    };
    if n >= 1 << 53 {
        let _ = write!(out, "{}", n as f64);
        return;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    while n >= 100 {
        at -= 2;
        let pair = 2 * (n % 100) as usize;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        n /= 100;
    }
    if n >= 10 {
        at -= 2;
        let pair = 2 * n as usize;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + n as u8;
    }
    // One byte at a time: for the few digits of a count, a copy through `push_str` (a UTF-8
    // check, then a call to memcpy) cost three times as many instructions (callgrind).
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// The text format's escaping: backslash and newline, and in label values the double quote.
pub(super) fn escape(v: &str, quote: bool) -> std::borrow::Cow<'_, str> {
    let special = |c: char| c == '\\' || c == '\n' || (quote && c == '"');
    if !v.contains(special) {
        return v.into();
    }
    let mut s = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '"' if quote => s.push_str("\\\""),
            c => s.push(c),
        }
    }
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_written_as_the_encoder_writes_its_float() {
        let mut edges = vec![0, 1, 9, 10, 11, 99, 100, 101, 999, 1_000, 1 << 53, u64::MAX];
        for k in 1..=16 {
            let p = 10u64.pow(k);
            edges.extend([p - 1, p, p + 1, 3 * p + 7]);
        }
        edges.extend([(1 << 53) - 1, 123_456_789_012_345]);
        for n in edges {
            let mut out = String::from("x");
            push_count(&mut out, n);
            // The prometheus crate formats every value as an f64 with `{}`.
            assert_eq!(out, format!("x{}", n as f64), "{n}");
        }
    }
}
