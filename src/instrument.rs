//! What the instrumentation macros expand to: a call-site static that resolves its stage once, and
//! the guards the expansions hold. Public only so expansions in other crates can name them, under
//! `laptime::__private`, which is not part of the API. The exception is [`StageEnum`], which
//! `#[derive(Stage)]` implements for users to call (`laptime::StageEnum`).

use std::sync::OnceLock;
use std::time::Duration;

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
            // Refused only past the stage cap (the name was checked at compile time); counted in
            // `Health::rejected` by the registry.
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
    pub fn start(site: &'static CallSite) -> AsyncSpan {
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
        OutcomeSpan {
            guard: Some(start(ok)),
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
