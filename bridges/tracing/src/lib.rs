//! A [`tracing_subscriber::Layer`] that times `tracing` spans into laptime stages, so spans an
//! application already has reach laptime's windows, SLA rules, deadlines and export.
//!
//! # Guarantees
//!
//! * **Nothing leaks per span**: a span's stage is resolved once per callsite (its name, and
//!   target if asked, checked and interned once) and kept in a table the layer owns; a span
//!   carries a copy of it and its label values inline in the registry's span extensions.
//! * **One allocation per span**, the box `tracing-subscriber`'s registry puts each span
//!   extension in (the registry's own per-span storage is pooled); label values live inline.
//! * **Never a panic**: a span name laptime refuses is counted ([`LayerCounts::refused`]); a
//!   label value laptime cannot carry (missing, empty, longer than [`MAX_LABEL_VALUE`] bytes) or
//!   past a family's series cap goes to the family's overflow series, counted there
//!   ([`laptime::Family::overflowed`]).
//!
//! # Quickstart
//!
//! ```
//! use laptime_tracing::{LaptimeLayer, SpanTime};
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let layer = LaptimeLayer::builder()
//!     .with_time(SpanTime::Busy) // time inside the span, not the time it waited
//!     .with_label_field("pair")
//!     .build()
//!     .unwrap();
//! let subscriber = tracing_subscriber::registry().with(layer);
//! tracing::subscriber::with_default(subscriber, || {
//!     let span = tracing::info_span!("doc_quote", pair = "BTC-USD", qty = 3);
//!     span.in_scope(|| { /* the work */ });
//! });
//! laptime::flush();
//! let stats = laptime::get_stats("doc_quote", laptime::Window::Cumulative).unwrap();
//! assert_eq!(stats.count, 1);
//! ```
//!
//! # What maps to what
//!
//! | `tracing` | laptime |
//! |---|---|
//! | a span's static name (with [`with_target_in_name`](LaptimeLayerBuilder::with_target_in_name): `target::name`), characters outside `[A-Za-z0-9_.:/-]` as `_` | the stage's name |
//! | the fields named by [`with_label_field`](LaptimeLayerBuilder::with_label_field) that the callsite declares | the labels of a [`laptime::Family`] of that name: a series per value set (values from the span's creation, or recorded later, up to its close) |
//! | a callsite that declares none of them | a plain stage |
//! | the span's duration, by [`SpanTime`] | one value given to `laptime::record` when the span closes |
//!
//! A span entered on one thread and closed on another is one span: its state travels with it
//! in the registry, not in thread-locals.
//!
//! # Caveats
//!
//! * Durations come from the layer's clock ([`LaptimeLayerBuilder::with_clock`], `Instant` by
//!   default) and reach laptime as values: laptime's deadline watch judges them when they close,
//!   not while they are still open.
//! * One name, one label set: a name whose callsites declare different label fields keeps the
//!   first family; the others' values go to its overflow series. A name used both as a plain
//!   stage and as a family is refused where laptime refuses it (counted).
//! * This crate depends on laptime without its `enable` feature: the final binary turns it on.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use laptime::{Destination, Family, LabelValues};
use parking_lot::{Mutex, RwLock};
use tracing_core::callsite::Identifier;
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Most fields a layer turns into labels.
pub const MAX_LABEL_FIELDS: usize = 4;

/// Longest label value kept inline with a span, in bytes; a longer one goes to the overflow
/// series.
pub const MAX_LABEL_VALUE: usize = 64;

/// Which duration of a span is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SpanTime {
    /// From the span's creation to its close: everything it covers, waiting included.
    #[default]
    Wall,
    /// From the span's first enter to its close. A span never entered records nothing (counted in
    /// [`LayerCounts::never_entered`]).
    WallFromFirstEnter,
    /// The sum of the intervals the span was entered (on any thread): its own work, not the time
    /// it waited (an async task's span between polls). A span never entered records nothing.
    Busy,
}

/// What the layer counted instead of recording: plain data, read with [`LayerTally::counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerCounts {
    /// Spans not recorded because laptime refused their callsite's name (or name and labels).
    pub refused: u64,
    /// Spans closed without ever being entered under [`SpanTime::WallFromFirstEnter`] or
    /// [`SpanTime::Busy`].
    pub never_entered: u64,
}

/// A reader of a layer's [`LayerCounts`], usable after the layer is moved into a subscriber.
#[derive(Debug, Clone, Default)]
pub struct LayerTally(Arc<Atomics>);

#[derive(Debug, Default)]
struct Atomics {
    refused: AtomicU64,
    never_entered: AtomicU64,
}

impl LayerTally {
    /// The counts so far.
    pub fn counts(&self) -> LayerCounts {
        LayerCounts {
            refused: self.0.refused.load(Ordering::Relaxed),
            never_entered: self.0.never_entered.load(Ordering::Relaxed),
        }
    }
}

/// Why a layer could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerError {
    /// More than [`MAX_LABEL_FIELDS`] label fields: keep the ones a dashboard groups by.
    TooManyLabelFields {
        /// How many were given.
        count: usize,
    },
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyLabelFields { count } => write!(
                f,
                "{count} label fields: at most {MAX_LABEL_FIELDS}, keep the ones you group by"
            ),
        }
    }
}

impl std::error::Error for LayerError {}

/// Settings of a [`LaptimeLayer`]: `with_*` setters, then [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct LaptimeLayerBuilder {
    time: SpanTime,
    label_fields: Vec<&'static str>,
    target_in_name: bool,
    clock: fn() -> u64,
}

impl LaptimeLayerBuilder {
    /// Which duration is recorded (default [`SpanTime::Wall`]).
    pub fn with_time(mut self, time: SpanTime) -> Self {
        self.time = time;
        self
    }

    /// The span field `name` becomes a label wherever a callsite declares it (at most
    /// [`MAX_LABEL_FIELDS`]).
    pub fn with_label_field(mut self, name: &'static str) -> Self {
        self.label_fields.push(name);
        self
    }

    /// Stage names are `target::name` instead of the span's name alone, so spans of one name in
    /// different modules stay apart.
    pub fn with_target_in_name(mut self, on: bool) -> Self {
        self.target_in_name = on;
        self
    }

    /// The clock spans are timed with: monotonic nanoseconds (default: `Instant` since the first
    /// read). Tests pass a hand-driven one, e.g. reading laptime's `MockClock`.
    pub fn with_clock(mut self, now_ns: fn() -> u64) -> Self {
        self.clock = now_ns;
        self
    }

    /// The layer, for `tracing_subscriber::registry().with(layer)`.
    pub fn build(self) -> Result<LaptimeLayer, LayerError> {
        if self.label_fields.len() > MAX_LABEL_FIELDS {
            return Err(LayerError::TooManyLabelFields {
                count: self.label_fields.len(),
            });
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(LaptimeLayer {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            time: self.time,
            clock: self.clock,
            shared: Arc::new(Shared {
                label_fields: self.label_fields,
                target_in_name: self.target_in_name,
                callsites: RwLock::new(HashMap::default()),
                names: Mutex::new(HashMap::new()),
                label_sets: Mutex::new(Vec::new()),
                tally: LayerTally::default(),
            }),
        })
    }
}

/// The layer: see the [crate docs](crate).
pub struct LaptimeLayer {
    /// Tells this layer's state in a span from another instance's (several may share a
    /// subscriber, e.g. one for wall and one for busy time).
    id: u64,
    time: SpanTime,
    clock: fn() -> u64,
    shared: Arc<Shared>,
}

impl fmt::Debug for LaptimeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaptimeLayer")
            .field("time", &self.time)
            .field("label_fields", &self.shared.label_fields)
            .field("counts", &self.tally().counts())
            .finish()
    }
}

impl LaptimeLayer {
    /// The defaults: wall time, no labels, the span's name alone, the `Instant` clock.
    pub fn builder() -> LaptimeLayerBuilder {
        LaptimeLayerBuilder {
            time: SpanTime::Wall,
            label_fields: Vec::new(),
            target_in_name: false,
            clock: monotonic_ns,
        }
    }

    /// The reader of this layer's counts.
    pub fn tally(&self) -> LayerTally {
        self.shared.tally.clone()
    }

    /// Nanoseconds by the layer's clock.
    #[inline]
    fn now(&self) -> u64 {
        (self.clock)()
    }
}

fn monotonic_ns() -> u64 {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    let anchor = *ANCHOR.get_or_init(Instant::now);
    u64::try_from(anchor.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

struct Shared {
    label_fields: Vec<&'static str>,
    target_in_name: bool,
    /// Each span callsite's target, resolved on its first span.
    /// `None`: laptime refused the callsite's name (or name and labels).
    callsites: RwLock<HashMap<Identifier, Option<Destination>, BuildHasherDefault<AddressHasher>>>,
    /// Stage names the layer had to build (sanitised, or with the target), interned.
    names: Mutex<HashMap<String, &'static str>>,
    /// Label-name lists given to laptime, interned.
    label_sets: Mutex<Vec<&'static [&'static str]>>,
    tally: LayerTally,
}

/// Hashes a callsite's identity (its static's address) with a multiply per word: the lookup runs
/// once per span, and these keys are addresses in the program, not input an attacker chooses,
/// so SipHash's protection buys nothing here.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_usize(usize::from(*b));
        }
    }

    fn write_usize(&mut self, word: usize) {
        self.0 = (self.0.rotate_left(26) ^ word as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Shared {
    fn destination(&self, metadata: &'static Metadata<'static>) -> Option<Destination> {
        let id = metadata.callsite();
        if let Some(target) = self.callsites.read().get(&id) {
            return *target;
        }
        let mut callsites = self.callsites.write();
        // Callsites are statics of the program: this table is bounded by its code.
        *callsites
            .entry(id)
            .or_insert_with(|| self.resolve(metadata))
    }

    /// Declares the callsite's stage, or its family when it declares label fields (a name
    /// labelled at another callsite is that family: see [`Destination::declare`]).
    fn resolve(&self, metadata: &'static Metadata<'static>) -> Option<Destination> {
        let name = self.stage_name(metadata);
        let declared: Vec<&'static str> = self
            .label_fields
            .iter()
            .copied()
            .filter(|f| metadata.fields().field(f).is_some())
            .collect();
        let label_names = if declared.is_empty() {
            &[]
        } else {
            self.intern_labels(declared)
        };
        Destination::declare(name, label_names).ok()
    }

    /// The span's name, or `target::name`, as a laptime name: characters laptime does not take
    /// become `_`, cut at [`laptime::MAX_NAME_LEN`]. Built names are interned, so each is kept
    /// once for the process however many callsites share it.
    fn stage_name(&self, metadata: &'static Metadata<'static>) -> &'static str {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-');
        let raw = metadata.name();
        if !self.target_in_name
            && !raw.is_empty()
            && raw.len() <= laptime::MAX_NAME_LEN
            && raw.chars().all(ok)
        {
            return raw;
        }
        let mut built = String::new();
        if self.target_in_name {
            built.push_str(metadata.target());
            built.push_str("::");
        }
        built.push_str(raw);
        let mut name: String = built
            .chars()
            .map(|c| if ok(c) { c } else { '_' })
            .take(laptime::MAX_NAME_LEN)
            .collect();
        if name.is_empty() {
            name.push_str("span");
        }
        let mut names = self.names.lock();
        if let Some(interned) = names.get(&name) {
            return interned;
        }
        let interned: &'static str = Box::leak(name.clone().into_boxed_str());
        names.insert(name, interned);
        interned
    }

    fn intern_labels(&self, labels: Vec<&'static str>) -> &'static [&'static str] {
        let mut sets = self.label_sets.lock();
        if let Some(set) = sets.iter().find(|s| **s == labels.as_slice()) {
            return set;
        }
        let set: &'static [&'static str] = labels.leak();
        sets.push(set);
        set
    }
}

/// Every layer instance's state in one span, in its registry extensions (one entry per type).
/// The first instance's is inline: with one layer, a span costs the extension's box alone.
struct Timings {
    first: Option<(u64, Timing)>,
    more: Vec<(u64, Timing)>,
}

impl Timings {
    fn get_mut(&mut self, id: u64) -> Option<&mut Timing> {
        match &mut self.first {
            Some((first, timing)) if *first == id => Some(timing),
            _ => self.more.iter_mut().find(|(i, _)| *i == id).map(|(_, t)| t),
        }
    }

    fn take(&mut self, id: u64) -> Option<Timing> {
        if self.first.as_ref().is_some_and(|(first, _)| *first == id) {
            return self.first.take().map(|(_, t)| t);
        }
        let at = self.more.iter().position(|(i, _)| *i == id)?;
        Some(self.more.swap_remove(at).1)
    }
}

/// One layer's state of a span.
struct Timing {
    destination: Destination,
    values: Values,
    created: u64,
    first_enter: Option<u64>,
    /// Entered intervals closed so far, in nanoseconds.
    busy: u64,
    /// When the current outermost enter began (meaningful while `depth > 0`).
    entered_at: u64,
    /// Enters not yet exited: a span may be entered again while entered (re-entrancy, or two
    /// threads at once); busy time counts the union.
    depth: u32,
}

/// Label values kept inline, one slot per label of the callsite's family, in its order.
#[derive(Clone, Copy)]
struct Values {
    family: Option<Family>,
    slots: [Slot; MAX_LABEL_FIELDS],
}

/// A label value: UTF-8 text (only whole `&str` pieces are copied in), or too long.
#[derive(Clone, Copy)]
struct Slot {
    len: u8,
    overlong: bool,
    bytes: [u8; MAX_LABEL_VALUE],
}

const _: () = assert!(MAX_LABEL_VALUE <= u8::MAX as usize);

impl Slot {
    const EMPTY: Slot = Slot {
        len: 0,
        overlong: false,
        bytes: [0; MAX_LABEL_VALUE],
    };

    /// The value; empty when missing or too long, which laptime sends to the overflow series.
    fn as_str(&self) -> &str {
        if self.overlong {
            return "";
        }
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Write for Slot {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let start = usize::from(self.len);
        let end = start + s.len();
        if self.overlong || end > MAX_LABEL_VALUE {
            self.overlong = true;
            return Err(fmt::Error);
        }
        self.bytes[start..end].copy_from_slice(s.as_bytes());
        self.len = end as u8;
        Ok(())
    }
}

impl Values {
    fn new(destination: Destination) -> Values {
        Values {
            family: match destination {
                Destination::Family(f) => Some(f),
                _ => None,
            },
            slots: [Slot::EMPTY; MAX_LABEL_FIELDS],
        }
    }

    /// The slot of field `field`, cleared for a new value, if it is a label.
    fn slot(&mut self, field: &Field) -> Option<&mut Slot> {
        let family = self.family?;
        let index = family
            .label_names()
            .iter()
            .position(|l| *l == field.name())?;
        let slot = self.slots.get_mut(index)?;
        *slot = Slot::EMPTY;
        Some(slot)
    }
}

impl Visit for Values {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(slot) = self.slot(field) {
            let _ = slot.write_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(slot) = self.slot(field) {
            let _ = write!(slot, "{value:?}");
        }
    }
}

impl LabelValues for Values {
    fn count(&self) -> usize {
        self.family.map_or(0, |f| f.label_names().len())
    }

    fn each(&self, f: &mut dyn FnMut(&str)) {
        for i in 0..self.count() {
            f(self.slots.get(i).map_or("", Slot::as_str));
        }
    }
}

impl LaptimeLayer {
    fn timing<'a>(
        extensions: &'a mut tracing_subscriber::registry::ExtensionsMut<'_>,
        id: u64,
    ) -> Option<&'a mut Timing> {
        extensions.get_mut::<Timings>()?.get_mut(id)
    }
}

impl<S> Layer<S> for LaptimeLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(destination) = self.shared.destination(attrs.metadata()) else {
            self.shared.tally.0.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(span) = ctx.span(id) else { return };
        let mut values = Values::new(destination);
        if values.family.is_some() {
            attrs.record(&mut values);
        }
        let created = if self.time == SpanTime::Wall {
            self.now()
        } else {
            0
        };
        let timing = Timing {
            destination,
            values,
            created,
            first_enter: None,
            busy: 0,
            entered_at: 0,
            depth: 0,
        };
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<Timings>() {
            Some(timings) => timings.more.push((self.id, timing)),
            None => extensions.insert(Timings {
                first: Some((self.id, timing)),
                more: Vec::new(),
            }),
        }
    }

    fn on_record(&self, id: &Id, record: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(timing) = Self::timing(&mut extensions, self.id)
            && timing.values.family.is_some()
        {
            record.record(&mut timing.values);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if self.time == SpanTime::Wall {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let Some(timing) = Self::timing(&mut extensions, self.id) else {
            return;
        };
        if timing.depth == 0 {
            let now = self.now();
            timing.first_enter.get_or_insert(now);
            timing.entered_at = now;
        }
        timing.depth += 1;
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if self.time != SpanTime::Busy {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        let Some(timing) = Self::timing(&mut extensions, self.id) else {
            return;
        };
        timing.depth = timing.depth.saturating_sub(1);
        if timing.depth == 0 {
            timing.busy += self.now().saturating_sub(timing.entered_at);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let taken = span
            .extensions_mut()
            .get_mut::<Timings>()
            .and_then(|t| t.take(self.id));
        let Some(timing) = taken else {
            return;
        };
        // The clock is read only when the figure needs the close: not for a busy span.
        let ns = match (self.time, timing.first_enter) {
            (SpanTime::Wall, _) => self.now().saturating_sub(timing.created),
            (SpanTime::WallFromFirstEnter, Some(first)) => self.now().saturating_sub(first),
            // Still entered at its close (a guard moved away and leaked): count to now.
            (SpanTime::Busy, Some(_)) if timing.depth > 0 => {
                timing.busy + self.now().saturating_sub(timing.entered_at)
            }
            (SpanTime::Busy, Some(_)) => timing.busy,
            (_, None) => {
                self.shared
                    .tally
                    .0
                    .never_entered
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let stage = timing.destination.stage(&timing.values);
        laptime::record(stage, Duration::from_nanos(ns));
    }
}
