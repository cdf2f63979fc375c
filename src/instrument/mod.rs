//! What the instrumentation macros expand to: a call-site static that resolves its stage once, and
//! the guards the expansions hold. Public only so expansions in other crates can name them, under
//! `laptime::__private`, which is not part of the API. The exception is [`StageEnum`], which
//! `#[derive(Stage)]` implements for users to call (`laptime::StageEnum`).

use std::sync::OnceLock;
use std::time::Duration;

mod polls;

pub use polls::PollTimer;

use crate::family::{Family, LabelValue};
use crate::recorder::{SpanGuard, start};
use crate::stage::{IntoStage, Labels, Stage, check_labels, check_name};

/// One instrumented call site: the stage's name, labels and per-site settings, and the handle,
/// resolved on first use. A hit costs one load and a branch: no hashing, no lock, no allocation.
#[derive(Debug)]
pub struct CallSite {
    name: &'static str,
    labels: Labels,
    /// Nanoseconds; 0 = the site sets no deadline.
    deadline_ns: u64,
    sample: Option<f64>,
    /// `Some(None)`: the stage could not be registered (the cap): the site stays inert.
    stage: OnceLock<Option<Stage>>,
}

impl CallSite {
    /// A call site. Checks the name and labels with registration's own rules; called to
    /// initialise a `static`, a bad name is a compile error.
    pub const fn new(
        name: &'static str,
        labels: Labels,
        deadline_ns: u64,
        sample: Option<f64>,
    ) -> CallSite {
        if let Err(problem) = check_name(name) {
            panic!("{}", problem.message());
        }
        if let Err(problem) = check_labels(labels) {
            panic!("{}", problem.message());
        }
        CallSite {
            name,
            labels,
            deadline_ns,
            sample,
            stage: OnceLock::new(),
        }
    }

    /// Registers the stage and applies the site's deadline and sampling rate: once per site.
    #[cold]
    fn resolve(&self) -> Option<Stage> {
        *self.stage.get_or_init(|| {
            // Refused only past the stage cap, or for a name used with labels and without (the
            // name was checked at compile time); counted in `Health::rejected` by the registry.
            let stage = Stage::with_labels(self.name, self.labels).ok()?;
            if self.deadline_ns != 0 {
                let _ = stage.set_deadline(Some(Duration::from_nanos(self.deadline_ns)));
            }
            if let Some(rate) = self.sample {
                let _ = stage.set_sampling_rate(Some(rate));
            }
            Some(stage)
        })
    }
}

/// The call site of a method named by default: its stage is `module::Type::method`, where `Type`
/// is `Self`'s, so two impls of one trait method are two series. Only the compiler knows `Self`
/// (`core::any::type_name` is not a `const fn`), so each type's [`CallSite`] is made on the first
/// call with that type, its name leaked once. A `static` in a generic impl or in a trait's
/// default method is one for every `Self` it is compiled for, so the site keeps a list of them,
/// one entry per type, never freed; a call walks it without a lock and allocates nothing once its
/// type is in it.
#[derive(Debug)]
pub struct MethodSite {
    module: &'static str,
    method: &'static str,
    /// Named `module::method` (checked at compile time), with the site's labels, deadline and
    /// sampling rate: what every type's site copies, the name too when `module::Type::method`
    /// breaks the naming rules (longer than [`crate::MAX_NAME_LEN`]). Never resolved itself.
    template: CallSite,
    first: OnceLock<&'static TypedSite>,
}

/// One `Self` type's call site in a [`MethodSite`]'s list.
#[derive(Debug)]
struct TypedSite {
    type_name: &'static str,
    /// Inline, not behind a pointer: one dependent load less on every call.
    site: CallSite,
    next: OnceLock<&'static TypedSite>,
}

impl MethodSite {
    /// A method's call site; `template` is [`CallSite::new`]'s, named `module::method`.
    pub const fn new(module: &'static str, method: &'static str, template: CallSite) -> MethodSite {
        MethodSite {
            module,
            method,
            template,
            first: OnceLock::new(),
        }
    }

    /// The call site of `Self = type_name` (`core::any::type_name::<Self>()`). The first type
    /// seen costs one load and a compare more than a [`CallSite`]; others walk the list.
    #[inline(always)]
    pub fn of(&'static self, type_name: &'static str) -> &'static CallSite {
        match self.first.get() {
            Some(typed) if same_str(typed.type_name, type_name) => &typed.site,
            _ => self.find(type_name),
        }
    }

    /// Walks the list, appending `type_name` at its end when it is not there (the only step
    /// that allocates or may wait, once per type).
    #[cold]
    fn find(&'static self, type_name: &'static str) -> &'static CallSite {
        let mut slot = &self.first;
        loop {
            let typed = *slot.get_or_init(|| {
                Box::leak(Box::new(TypedSite {
                    type_name,
                    site: self.site_for(type_name),
                    next: OnceLock::new(),
                }))
            });
            if same_str(typed.type_name, type_name) {
                return &typed.site;
            }
            slot = &typed.next;
        }
    }

    fn site_for(&self, type_name: &str) -> CallSite {
        let name = format!(
            "{}::{}::{}",
            self.module,
            short_type(type_name),
            self.method
        );
        let CallSite {
            name: fallback,
            labels,
            deadline_ns,
            sample,
            ..
        } = self.template;
        CallSite {
            name: match check_name(&name) {
                Ok(()) => String::leak(name),
                Err(_) => fallback,
            },
            labels,
            deadline_ns,
            sample,
            stage: OnceLock::new(),
        }
    }
}

/// `type_name` gives one string per type, usually at one address: compare the address first.
#[inline(always)]
fn same_str(a: &str, b: &str) -> bool {
    a.len() == b.len() && (std::ptr::eq(a.as_ptr(), b.as_ptr()) || a == b)
}

/// The type's own name as `#[measure_all]` writes it: the last path segment without generic
/// arguments (`venues::Routed<u8>` → `Routed`, `&dyn venues::Venue` → `Venue`), and only the
/// characters a stage name allows (`[u8]` → `u8`).
fn short_type(type_name: &str) -> String {
    let base = type_name.split('<').next().unwrap_or(type_name);
    let last = base.rsplit("::").next().unwrap_or(base);
    let last = last.rsplit(' ').next().unwrap_or(last);
    let short: String = last
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if short.is_empty() {
        "_".to_owned()
    } else {
        short
    }
}

/// The call site of a function timed with a label from an argument
/// (`#[measure(name = "order_exec", labels(pair = symbol))]`): a family named after the site,
/// declared on the first call, whose series each call's values select with the family's
/// lock-free lookup (no lock, no allocation once the series exists). Values laptime cannot carry,
/// or past the caps, go to the family's overflow series, counted.
#[derive(Debug)]
pub struct FamilySite {
    name: &'static str,
    label_names: &'static [&'static str],
    family: OnceLock<Option<Family>>,
}

impl FamilySite {
    /// A family call site. Checks the name and label names with registration's own rules;
    /// called to initialise a `static`, a bad one is a compile error.
    pub const fn new(name: &'static str, label_names: &'static [&'static str]) -> FamilySite {
        if let Err(problem) = check_name(name) {
            panic!("{}", problem.message());
        }
        if let Err(problem) = crate::stage::check_label_names(label_names) {
            panic!("{}", problem.message());
        }
        FamilySite {
            name,
            label_names,
            family: OnceLock::new(),
        }
    }

    /// The series of `values`; `None` when the family cannot be declared (its name is a
    /// stage's, or a family of that name has other label names), counted in
    /// [`crate::Health::rejected`] once, as a site past the stage cap.
    #[inline]
    pub fn series(&'static self, values: &[&dyn LabelValue]) -> Option<Stage> {
        let family = match self.family.get() {
            Some(family) => *family,
            None => self.declare(),
        }?;
        Some(family.series_or_overflow(values))
    }

    #[cold]
    fn declare(&self) -> Option<Family> {
        *self.family.get_or_init(|| {
            let family = Family::new(self.name, self.label_names).ok();
            if family.is_none() {
                crate::stage::registry().count_rejected();
            }
            family
        })
    }
}

impl IntoStage for &'static CallSite {
    #[inline(always)]
    fn into_stage(self) -> Option<Stage> {
        match self.stage.get() {
            Some(stage) => *stage,
            None => self.resolve(),
        }
    }
}

/// The span of an `async fn`: from its first poll to its completion. A future dropped before it
/// completes drops this without [`AsyncSpan::finish`], and the span counts as cancelled.
#[derive(Debug)]
#[must_use]
pub struct AsyncSpan(Option<SpanGuard>);

impl AsyncSpan {
    /// Starts the span (the `async fn`'s body runs from its first poll).
    #[inline]
    pub fn start(site: impl IntoStage) -> AsyncSpan {
        AsyncSpan(Some(start(site)))
    }

    /// The future completed: record the span.
    #[inline]
    pub fn finish(mut self) {
        drop(self.0.take());
    }
}

impl Drop for AsyncSpan {
    fn drop(&mut self) {
        if let Some(guard) = self.0.take() {
            guard.cancel();
        }
    }
}

/// What `outcome` classifies: `Ok` goes to the `outcome="ok"` series, `Err` to `outcome="err"`.
#[diagnostic::on_unimplemented(
    message = "`outcome` needs a function or block that produces a `Result`, not `{Self}`",
    label = "this is not a `Result`",
    note = "drop `outcome`, or return `Result<_, _>`"
)]
pub trait Outcome {
    /// Whether this is the success series.
    fn is_ok(&self) -> bool;
}

impl<T, E> Outcome for Result<T, E> {
    #[inline(always)]
    fn is_ok(&self) -> bool {
        Result::is_ok(self)
    }
}

/// A span whose series is picked at its end by the value produced: the `ok` site's stage or the
/// `err` site's. Admission (enabled, sampled in) is decided once, at the start, by the `ok` site.
/// A deadline-watched span publishes its start under the `ok` stage (the outcome is not known yet),
/// so a miss seen while it is still running is counted there.
#[derive(Debug)]
#[must_use]
pub struct OutcomeSpan {
    guard: Option<SpanGuard>,
    err: &'static CallSite,
    /// Async: dropped before completion means cancelled. Sync: left without a value (a panic, or a
    /// `?`/`return` out of a `measure!` block) means `err`.
    cancel_on_drop: bool,
}

impl OutcomeSpan {
    /// Starts a span of a function or block.
    #[inline]
    pub fn start(ok: &'static CallSite, err: &'static CallSite) -> OutcomeSpan {
        let guard = start(ok);
        if guard.is_recording() {
            // Both series exist (exported at zero) from the first call, not from the first
            // error: a scraper's `rate()` of the errors then counts the first one too.
            let _ = err.into_stage();
        }
        OutcomeSpan {
            guard: Some(guard),
            err,
            cancel_on_drop: false,
        }
    }

    /// Starts a span of an `async fn`.
    #[inline]
    pub fn start_async(ok: &'static CallSite, err: &'static CallSite) -> OutcomeSpan {
        let mut span = OutcomeSpan::start(ok, err);
        span.cancel_on_drop = true;
        span
    }

    /// Records the span under the series `value` belongs to.
    #[inline]
    pub fn finish<T: Outcome>(mut self, value: &T) {
        if let Some(mut guard) = self.guard.take()
            && !value.is_ok()
        {
            retarget(&mut guard, self.err);
        }
    }
}

impl Drop for OutcomeSpan {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            if self.cancel_on_drop {
                guard.cancel();
            } else {
                retarget(&mut guard, self.err);
            }
        }
    }
}

fn retarget(guard: &mut SpanGuard, site: &'static CallSite) {
    if guard.is_recording()
        && let Some(stage) = site.into_stage()
    {
        guard.retarget(stage);
    }
}

/// What `#[derive(Stage)]` implements besides [`IntoStage`] and [`crate::IntoStageQuery`]: the
/// enum's stages by name, for code that walks them all.
pub trait StageEnum: Sized + 'static {
    /// Every variant, in declaration order.
    const ALL: &'static [Self];

    /// The stage name this variant records under.
    fn stage_name(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::{CallSite, MethodSite, short_type};

    /// Stands in for `module_path!()`, which the expansion passes alone and in `concat!`.
    macro_rules! module {
        () => {
            "a_module_path_long_enough_that_a_long_type_name_breaks_the_limit_of_stage_names"
        };
    }
    const MODULE: &str = module!();
    static SITE: MethodSite = MethodSite::new(
        module!(),
        "send",
        CallSite::new(concat!(module!(), "::send"), &[], 0, None),
    );

    #[test]
    fn each_type_gets_one_site_and_an_overlong_name_falls_back() {
        let xnas = SITE.of("venues::Xnas");
        let long = SITE.of("venues::AVenueWhoseTypeNameIsLongEnoughToBreakTheLimit");
        assert_eq!(xnas.name, format!("{MODULE}::Xnas::send"));
        assert_eq!(long.name, format!("{MODULE}::send"));
        // The same site again, first in the list or not, and by content when the address differs.
        assert!(std::ptr::eq(SITE.of("venues::Xnas"), xnas));
        assert!(std::ptr::eq(
            SITE.of(String::from("venues::Xnas").leak()),
            xnas
        ));
        assert!(std::ptr::eq(
            SITE.of("venues::AVenueWhoseTypeNameIsLongEnoughToBreakTheLimit"),
            long
        ));
    }

    #[test]
    fn a_type_is_named_by_its_last_segment_without_parameters() {
        for (full, short) in [
            ("macros::Xnas", "Xnas"),
            ("macros::Routed<u8>", "Routed"),
            ("macros::Routed<alloc::string::String>", "Routed"),
            ("&dyn macros::Venue", "Venue"),
            ("&mut macros::Book", "Book"),
            ("[u8]", "u8"),
            ("()", "_"),
        ] {
            assert_eq!(short_type(full), short, "{full}");
        }
    }
}
