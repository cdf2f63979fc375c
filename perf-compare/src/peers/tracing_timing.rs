//! tracing with tracing-timing's `TimingLayer` over tracing-subscriber's `Registry`, set as the
//! global dispatcher, the way tracing-timing's docs show the layer (default groupings: span
//! name, event message; HDR histograms of 3 significant digits up to 60 s).
//!
//! tracing-timing times the gaps between *events* inside a span: a span alone records nothing.
//! So a measured call is a span with one event at its end (`info_span!("span")` + `info!("done")`:
//! the time from the span's creation to the event), and a tick is one `tick` span with an event
//! after each stage — "fetch" is the time from the span's creation to the `fetch` event, "spread"
//! the gap from `fetch` to `spread`, and so on — which is how its docs time sequential steps.
//!
//! The report is read from the layer's histograms after `force_synchronize` (its docs' advice
//! over `refresh`, which waits for the next event).
//!
//! tracing-timing has no way to take a known value: `record_value` returns false.

use std::sync::OnceLock;

use tracing::{Dispatch, info, info_span};
use tracing_subscriber::{Layer, Registry};
use tracing_timing::{Builder, Histogram, LayerDowncaster, group};

use crate::peer::{Peer, Reported};

pub static PEER: Peer = Peer {
    name: "tracing-timing",
    setup,
    empty_span,
    tick,
    spin_span,
    record_value,
    flush,
    report,
};

struct Installed {
    dispatch: Dispatch,
    downcaster: LayerDowncaster<group::ByName, group::ByMessage>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

fn setup() {
    INSTALLED.get_or_init(|| {
        let layer = Builder::default()
            .layer(|| Histogram::new_with_max(60_000_000_000, 3).expect("histogram bounds"));
        let downcaster = layer.downcaster();
        let dispatch = Dispatch::new(layer.with_subscriber(Registry::default()));
        tracing::dispatcher::set_global_default(dispatch.clone())
            .expect("no other global subscriber in this process");
        Installed {
            dispatch,
            downcaster,
        }
    });
}

fn empty_span() {
    info_span!("span").in_scope(|| info!("done"));
}

fn tick(work: fn(usize)) {
    let span = info_span!("tick");
    let _entered = span.enter();
    work(0);
    info!("fetch");
    work(1);
    info!("spread");
    work(2);
    info!("guards");
    work(3);
    info!("emit");
}

fn spin_span(ns: u64) {
    info_span!("spin").in_scope(|| {
        crate::peer::spin(ns);
        info!("done");
    });
}

fn record_value(_ns: u64) -> bool {
    false
}

fn flush() {
    if let Some(layer) = layer() {
        layer.force_synchronize();
    }
}

fn layer() -> Option<&'static tracing_timing::TimingLayer<group::ByName, group::ByMessage>> {
    let i = INSTALLED.get()?;
    i.downcaster.downcast(&i.dispatch)
}

fn report(stage: &str) -> Reported {
    let Some(layer) = layer() else {
        return Reported::default();
    };
    // Where each stage's samples are: (span group, event group).
    let (span, event) = match stage {
        "fetch" | "spread" | "guards" | "emit" => ("tick", stage),
        other => (other, "done"),
    };
    layer.with_histograms(|groups| {
        let Some(h) = groups.get(span).and_then(|events| events.get(event)) else {
            return Reported {
                count: Some(0),
                ..Reported::default()
            };
        };
        Reported {
            count: Some(h.len()),
            p50_ns: Some(h.value_at_quantile(0.5)),
            p99_ns: Some(h.value_at_quantile(0.99)),
            p999_ns: Some(h.value_at_quantile(0.999)),
        }
    })
}
