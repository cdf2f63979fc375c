//! fastrace with `enable` on and a reporter installed, the way its docs put it for hot paths:
//! a root `Span` made the thread's local parent (`set_local_parent`), and a `LocalSpan`
//! (`LocalSpan::enter_with_local_parent`) per measured call inside it.
//!
//! A root is a trace (a request, a tick); here the span and spin workloads open one root per
//! [`SPANS_PER_ROOT`] calls on each thread — a request that makes that many measured calls — so
//! the per-span figure is the `LocalSpan`'s, with a root's cost spread thin. A tick is one root
//! with its four stages as `LocalSpan`s. fastrace keeps at most 10 240 local spans under one
//! local parent and drops the rest without a count, which a root per 1 024 calls stays under.
//!
//! The reporter ([`Keeper`]) runs on fastrace's collector thread and keeps, per span name, the
//! count and every duration (as a value → occurrences map, so memory follows the number of
//! distinct durations, not of spans): `report` gives exact nearest-rank percentiles of what
//! fastrace delivered. A thread's open root is submitted when the root is closed: at the next
//! rotation, on `flush` for the calling thread, and at thread exit for the others.
//!
//! Each root's local spans go into a fresh `Vec` that doubles as it fills, so a thread allocates
//! about 9 times per 1 024 spans (≈ 240 B per span); the collector turns them into `SpanRecord`s.
//!
//! fastrace has no way to take a known value: `record_value` returns false.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Mutex, Once};

use fastrace::Span;
use fastrace::collector::{Config, Reporter, SpanContext, SpanRecord};
use fastrace::local::{LocalParentGuard, LocalSpan};

use crate::peer::{Peer, Reported};

pub static PEER: Peer = Peer {
    name: "fastrace",
    setup,
    empty_span,
    tick,
    spin_span,
    record_value,
    flush,
    report,
};

/// Measured calls per root span on one thread (well under fastrace's 10 240 per local parent).
pub const SPANS_PER_ROOT: u32 = 1024;

/// What the reporter received, per span name.
static KEPT: Mutex<Option<HashMap<Cow<'static, str>, Kept>>> = Mutex::new(None);

#[derive(Default)]
struct Kept {
    count: u64,
    /// Duration in ns → how many spans had it.
    durations: HashMap<u64, u64>,
}

/// Counts and keeps every reported span's duration.
struct Keeper;

impl Reporter for Keeper {
    fn report(&mut self, spans: Vec<SpanRecord>) {
        let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
        let kept = kept.get_or_insert_with(HashMap::new);
        for span in spans {
            let k = kept.entry(span.name).or_default();
            k.count += 1;
            *k.durations.entry(span.duration_ns).or_default() += 1;
        }
    }
}

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| fastrace::set_reporter(Keeper, Config::default()));
}

/// The calling thread's open root, its local-parent guard first so that it is dropped first
/// (the guard submits the local spans, then the root ends).
struct Root {
    _parent: LocalParentGuard,
    _root: Span,
}

thread_local! {
    static ROOT: RefCell<Option<Root>> = const { RefCell::new(None) };
    /// Calls left under the open root; 0 = open a new one. No destructor, so touching it
    /// registers nothing.
    static LEFT: Cell<u32> = const { Cell::new(0) };
    /// Whether `ROOT` holds a root (no destructor either).
    static OPEN: Cell<bool> = const { Cell::new(false) };
}

/// Closes the thread's open root, if any: its local spans go to the collector.
fn close_root() {
    if OPEN.replace(false) {
        drop(ROOT.with(|r| r.borrow_mut().take()));
    }
    LEFT.set(0);
}

/// Makes sure the thread has an open root with room for one more call.
#[inline]
fn in_root() {
    let left = LEFT.get();
    if left > 0 {
        LEFT.set(left - 1);
        return;
    }
    // Close the old root before the new one becomes the local parent (local parents nest).
    // The root is made before `ROOT` is first touched: thread-local destructors run in reverse
    // order of first use, so at thread exit `ROOT` is dropped (and its spans submitted) while
    // fastrace's own thread-locals still exist.
    close_root();
    let root = Span::root("root", SpanContext::random());
    let parent = root.set_local_parent();
    ROOT.with(|r| {
        *r.borrow_mut() = Some(Root {
            _parent: parent,
            _root: root,
        })
    });
    OPEN.set(true);
    LEFT.set(SPANS_PER_ROOT - 1);
}

fn empty_span() {
    in_root();
    let _span = LocalSpan::enter_with_local_parent("span");
}

fn tick(work: fn(usize)) {
    let root = Span::root("tick", SpanContext::random());
    let _parent = root.set_local_parent();
    {
        let _s = LocalSpan::enter_with_local_parent("fetch");
        work(0);
    }
    {
        let _s = LocalSpan::enter_with_local_parent("spread");
        work(1);
    }
    {
        let _s = LocalSpan::enter_with_local_parent("guards");
        work(2);
    }
    {
        let _s = LocalSpan::enter_with_local_parent("emit");
        work(3);
    }
}

fn spin_span(ns: u64) {
    in_root();
    let _span = LocalSpan::enter_with_local_parent("spin");
    crate::peer::spin(ns);
}

fn record_value(_ns: u64) -> bool {
    false
}

/// Closes this thread's root (its spans go to the collector) and has fastrace hand everything
/// it holds to the reporter (`fastrace::flush` runs the collector once, on a thread of its own).
fn flush() {
    close_root();
    fastrace::flush();
}

fn report(stage: &str) -> Reported {
    let kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let Some(k) = kept.as_ref().and_then(|m| m.get(stage)) else {
        return Reported {
            count: Some(0),
            ..Reported::default()
        };
    };
    let mut values: Vec<(u64, u64)> = k.durations.iter().map(|(&v, &n)| (v, n)).collect();
    values.sort_unstable();
    let at = |q: f64| {
        let rank = laptime::rank(q, k.count).max(1);
        let mut seen = 0;
        values.iter().find_map(|&(v, n)| {
            seen += n;
            (seen >= rank).then_some(v)
        })
    };
    Reported {
        count: Some(k.count),
        p50_ns: at(0.5),
        p99_ns: at(0.99),
        p999_ns: at(0.999),
    }
}
