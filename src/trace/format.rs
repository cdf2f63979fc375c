//! The two file forms of a trace: the seed's golden JSON and Chrome trace-event JSON.
//!
//! Keys come out in a fixed order without serde_json's `preserve_order`: objects are structs
//! (field order) or `BTreeMap`s (sorted), and labels keep the order they were declared in.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::Value;

use super::Trace;
use crate::stage::Labels;

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Microseconds for a Chrome event's `ts` or `dur`: the `f64` nearest `ns / 1e3`, or the next
/// one up when that one times 1000 falls short of `ns`. Perfetto reads a fractional `ts` or `dur`
/// as `(µs * 1000.0) as i64` (trace_processor's `json::CoerceToTs`), which truncates: without the
/// nudge about one value in 170 (1001 ns, printed 1.001, reads back as 1000 ns) loses a
/// nanosecond, and a span ending with its parent could end after it there.
fn us(ns: u64) -> f64 {
    let us = ns as f64 / 1e3;
    if ((us * 1e3) as u64) < ns {
        us.next_up()
    } else {
        us
    }
}

/// A stage's labels as a JSON object, in declaration order.
struct LabelMap(Labels);

impl Serialize for LabelMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl LabelMap {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `name{k=v,...}`, as stages are printed everywhere else.
fn display_name(name: &str, labels: Labels) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", pairs.join(","))
}

#[derive(Serialize)]
struct Golden<'a> {
    trace_id: String,
    duration_ms: f64,
    metadata: BTreeMap<&'a str, Value>,
    spans: Vec<GoldenSpan<'a>>,
    stage_durations: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct GoldenSpan<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "LabelMap::is_empty")]
    labels: LabelMap,
    duration_ms: f64,
    start_ms: f64,
    depth: u32,
}

/// The seed's golden-trace form, pretty-printed with a trailing newline:
///
/// ```text
/// {
///   "trace_id": "tick_<n>",
///   "duration_ms": <root duration>,
///   "metadata": {<metadata>, "reason": "golden"|"slow"|"sampled", "root": <stage>,
///                "thread": <name>, "tick": <n>, "incomplete": true (only when it is)},
///   "spans": [{"name", "labels" (only if any), "duration_ms", "start_ms" (after the root's
///              start), "depth" (1 = child of the root)}, ...],
///   "stage_durations": {<name{labels}>: <total ms of its spans in the tick>, ...}
/// }
/// ```
///
/// Milliseconds are `ns / 1e6` as `f64`, printed in the shortest form that reads back exactly;
/// `metadata` and `stage_durations` keys are sorted. The trace's own metadata keys
/// ([`super::RESERVED_METADATA`]) replace user keys of the same name.
pub fn golden_json(trace: &Trace, metadata: &BTreeMap<String, Value>) -> String {
    let mut meta: BTreeMap<&str, Value> = metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    meta.insert("reason", trace.reason.as_str().into());
    meta.insert("root", trace.root.into());
    meta.insert("thread", trace.thread.as_str().into());
    meta.insert("tick", trace.tick.into());
    if !trace.complete {
        meta.insert("incomplete", true.into());
    }
    // Summed in nanoseconds, converted once: no float drift with the number of spans.
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for s in &trace.spans {
        *totals.entry(display_name(s.name, s.labels)).or_default() += s.duration_ns;
    }
    let golden = Golden {
        trace_id: format!("tick_{}", trace.tick),
        duration_ms: ms(trace.duration_ns),
        metadata: meta,
        spans: trace
            .spans
            .iter()
            .map(|s| GoldenSpan {
                name: s.name,
                labels: LabelMap(s.labels),
                duration_ms: ms(s.duration_ns),
                start_ms: ms(s.start_ns),
                depth: s.depth,
            })
            .collect(),
        stage_durations: totals.into_iter().map(|(k, v)| (k, ms(v))).collect(),
    };
    let mut text =
        serde_json::to_string_pretty(&golden).expect("string keys and finite numbers serialize");
    text.push('\n');
    text
}

#[derive(Serialize)]
struct Chrome<'a> {
    #[serde(rename = "traceEvents")]
    trace_events: Vec<Event<'a>>,
    #[serde(rename = "displayTimeUnit")]
    display_time_unit: &'static str,
}

#[derive(Serialize)]
struct Event<'a> {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'static str>,
    ph: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    pid: u32,
    tid: u32,
    args: BTreeMap<&'a str, Value>,
}

/// The process id written into every event: a constant, so files do not depend on the run.
const PID: u32 = 1;

/// Chrome trace-event JSON (the format `chrome://tracing` and <https://ui.perfetto.dev> open),
/// pretty-printed with a trailing newline:
/// `{"traceEvents": [...], "displayTimeUnit": "ns"}`.
///
/// Each trace becomes complete events (`"ph": "X"`): the root (`cat` `"tick"`, `args`
/// `trace_id`, `tick`, `reason`, and `incomplete` when it is), then its spans (`cat` `"stage"`,
/// `args` `tick`, `depth`), named `stage{label=value,...}`. `ts` and `dur` are microseconds as
/// `f64` (`ts` counted from the collector's install): the nearest to the exact value, or the
/// next one up where Perfetto, which truncates, would read the nearest back a nanosecond short
/// (so a span ending with its parent still does there); `pid` is 1 and `tid` numbers the threads
/// 1, 2, … in order of first appearance, each named by a `thread_name` metadata event (`"ph":
/// "M"`) at the start.
pub fn chrome_json(traces: &[Trace]) -> String {
    let mut threads: Vec<&str> = Vec::new();
    for t in traces {
        if !threads.contains(&t.thread.as_str()) {
            threads.push(&t.thread);
        }
    }
    let metadata = |name: &str, tid: u32, value: &str| Event {
        name: name.to_owned(),
        cat: None,
        ph: "M",
        ts: None,
        dur: None,
        pid: PID,
        tid,
        args: BTreeMap::from([("name", value.into())]),
    };
    let mut events = vec![metadata("process_name", 0, "laptime")];
    for (i, name) in threads.iter().enumerate() {
        events.push(metadata("thread_name", tid_of(i), name));
    }
    for t in traces {
        let tid = tid_of(threads.iter().position(|n| *n == t.thread).unwrap_or(0));
        let mut args = BTreeMap::from([
            ("trace_id", format!("tick_{}", t.tick).into()),
            ("tick", t.tick.into()),
            ("reason", t.reason.as_str().into()),
        ]);
        if !t.complete {
            args.insert("incomplete", true.into());
        }
        events.push(Event {
            name: t.root.to_owned(),
            cat: Some("tick"),
            ph: "X",
            ts: Some(us(t.start_ns)),
            dur: Some(us(t.duration_ns)),
            pid: PID,
            tid,
            args,
        });
        for s in &t.spans {
            events.push(Event {
                name: display_name(s.name, s.labels),
                cat: Some("stage"),
                ph: "X",
                ts: Some(us(t.start_ns + s.start_ns)),
                dur: Some(us(s.duration_ns)),
                pid: PID,
                tid,
                args: BTreeMap::from([("tick", t.tick.into()), ("depth", s.depth.into())]),
            });
        }
    }
    let chrome = Chrome {
        trace_events: events,
        display_time_unit: "ns",
    };
    let mut text =
        serde_json::to_string_pretty(&chrome).expect("string keys and finite numbers serialize");
    text.push('\n');
    text
}

fn tid_of(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::{Reason, TraceSpan};
    use super::*;

    fn trace() -> Trace {
        Trace {
            tick: 100,
            reason: Reason::Golden,
            root: "tick_total",
            thread: "tick-loop".into(),
            start_ns: 2_000_500,
            duration_ns: 187_200_000,
            spans: vec![
                TraceSpan {
                    name: "stage_fetch_md",
                    labels: &[],
                    start_ns: 0,
                    duration_ns: 68_300_000,
                    depth: 1,
                    parent: None,
                    stage_id: 0,
                },
                TraceSpan {
                    name: "stage_emit",
                    labels: &[],
                    start_ns: 94_900_000,
                    duration_ns: 92_300_000,
                    depth: 1,
                    parent: None,
                    stage_id: 0,
                },
                TraceSpan {
                    name: "exchange_req",
                    labels: &[("verb", "post"), ("api", "batch-cancel")],
                    start_ns: 95_000_001,
                    duration_ns: 1_500,
                    depth: 2,
                    parent: Some(1),
                    stage_id: 0,
                },
            ],
            complete: true,
        }
    }

    #[test]
    fn microseconds_read_back_as_the_same_nanoseconds_in_perfetto() {
        // Perfetto's conversion of a fractional `ts`/`dur`, after the JSON round trip.
        let perfetto = |us: f64| -> u64 {
            let read: f64 = serde_json::to_string(&us).unwrap().parse().unwrap();
            (read * 1000.0) as u64
        };
        assert_eq!(
            (1001_f64 / 1e3 * 1000.0) as u64,
            1000,
            "the truncation this avoids"
        );
        for ns in (0..300_000).chain((1 << 40)..(1 << 40) + 100_000) {
            assert_eq!(perfetto(us(ns)), ns, "{ns} ns");
        }
        assert_eq!(us(1001).to_string(), "1.0010000000000001");
        assert_eq!(us(1500).to_string(), "1.5", "exact ones are unchanged");
    }

    #[test]
    fn golden_json_is_the_seed_form_with_fixed_key_order() {
        let metadata = BTreeMap::from([
            (
                "symbols".to_owned(),
                serde_json::json!(["BTCUSDT", "ETHUSDT"]),
            ),
            ("parallel_symbols".to_owned(), serde_json::json!(10)),
        ]);
        let expected = r#"{
  "trace_id": "tick_100",
  "duration_ms": 187.2,
  "metadata": {
    "parallel_symbols": 10,
    "reason": "golden",
    "root": "tick_total",
    "symbols": [
      "BTCUSDT",
      "ETHUSDT"
    ],
    "thread": "tick-loop",
    "tick": 100
  },
  "spans": [
    {
      "name": "stage_fetch_md",
      "duration_ms": 68.3,
      "start_ms": 0.0,
      "depth": 1
    },
    {
      "name": "stage_emit",
      "duration_ms": 92.3,
      "start_ms": 94.9,
      "depth": 1
    },
    {
      "name": "exchange_req",
      "labels": {
        "verb": "post",
        "api": "batch-cancel"
      },
      "duration_ms": 0.0015,
      "start_ms": 95.000001,
      "depth": 2
    }
  ],
  "stage_durations": {
    "exchange_req{verb=post,api=batch-cancel}": 0.0015,
    "stage_emit": 92.3,
    "stage_fetch_md": 68.3
  }
}
"#;
        assert_eq!(golden_json(&trace(), &metadata), expected);
    }

    #[test]
    fn an_incomplete_trace_says_so_and_own_keys_win() {
        let mut t = trace();
        t.complete = false;
        let metadata = BTreeMap::from([("tick".to_owned(), serde_json::json!("mine"))]);
        let v: Value = serde_json::from_str(&golden_json(&t, &metadata)).unwrap();
        assert_eq!(v["metadata"]["incomplete"], Value::Bool(true));
        assert_eq!(v["metadata"]["tick"], serde_json::json!(100));
    }

    #[test]
    fn chrome_json_is_complete_events_in_microseconds() {
        let expected = r#"{
  "traceEvents": [
    {
      "name": "process_name",
      "ph": "M",
      "pid": 1,
      "tid": 0,
      "args": {
        "name": "laptime"
      }
    },
    {
      "name": "thread_name",
      "ph": "M",
      "pid": 1,
      "tid": 1,
      "args": {
        "name": "tick-loop"
      }
    },
    {
      "name": "tick_total",
      "cat": "tick",
      "ph": "X",
      "ts": 2000.5,
      "dur": 187200.0,
      "pid": 1,
      "tid": 1,
      "args": {
        "reason": "golden",
        "tick": 100,
        "trace_id": "tick_100"
      }
    },
    {
      "name": "stage_fetch_md",
      "cat": "stage",
      "ph": "X",
      "ts": 2000.5,
      "dur": 68300.0,
      "pid": 1,
      "tid": 1,
      "args": {
        "depth": 1,
        "tick": 100
      }
    },
    {
      "name": "stage_emit",
      "cat": "stage",
      "ph": "X",
      "ts": 96900.5,
      "dur": 92300.0,
      "pid": 1,
      "tid": 1,
      "args": {
        "depth": 1,
        "tick": 100
      }
    },
    {
      "name": "exchange_req{verb=post,api=batch-cancel}",
      "cat": "stage",
      "ph": "X",
      "ts": 97000.501,
      "dur": 1.5,
      "pid": 1,
      "tid": 1,
      "args": {
        "depth": 2,
        "tick": 100
      }
    }
  ],
  "displayTimeUnit": "ns"
}
"#;
        assert_eq!(chrome_json(&[trace()]), expected);
    }
}
