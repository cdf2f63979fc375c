//! What the instrumentation macros record, under the mock clock so every duration is exact: stage
//! names, labels, outcomes, deadlines and sampling from the attribute's arguments; early returns,
//! `?` and panics; async spans that migrate between threads and futures dropped before they
//! complete; `measure_block!`, `#[measure_all]` and `#[derive(Stage)]`.
#![cfg(all(feature = "test-util", feature = "enable"))]

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{clock, install, serial};
use laptime::{Collector, Stage, StageEnum, StageStats, Window};

const MS: Duration = Duration::from_millis(1);

fn handle() -> laptime::CollectorHandle {
    clock();
    install(Collector::builder().with_interval(Duration::from_secs(30)))
}

/// Cumulative statistics of a stage found by name and labels after a flush.
fn stats(h: &laptime::CollectorHandle, name: &str, labels: &[(&str, &str)]) -> StageStats {
    assert!(h.flush());
    let stage = Stage::lookup(name, labels)
        .unwrap_or_else(|| panic!("no stage {name} {labels:?} was registered"));
    h.get_stats(stage, Window::Cumulative)
        .unwrap_or_else(|| panic!("stage {name} {labels:?} recorded nothing"))
}

#[laptime::measure]
fn default_named(work: Duration) -> u32 {
    clock().advance(work);
    7
}

#[test]
fn default_name_is_the_function_path_and_the_duration_is_exact() {
    let _s = serial();
    let h = handle();
    assert_eq!(default_named(3 * MS), 7);
    assert_eq!(default_named(5 * MS), 7);
    let s = stats(&h, "macros::default_named", &[]);
    assert_eq!((s.count, s.min, s.max), (2, 3 * MS, 5 * MS));
}

#[laptime::measure(
    name = "exchange_req",
    labels(verb = "post", api = "batch-cancel"),
    deadline = "200ms"
)]
fn batch_cancel(work: Duration) {
    clock().advance(work);
}

#[test]
fn name_labels_and_deadline_come_from_the_attribute() {
    let _s = serial();
    let h = handle();
    batch_cancel(150 * MS);
    batch_cancel(250 * MS);
    let labels = [("verb", "post"), ("api", "batch-cancel")];
    let stage = Stage::lookup("exchange_req", &labels).unwrap();
    assert_eq!(stage.deadline(), Some(200 * MS));
    let s = stats(&h, "exchange_req", &labels);
    assert_eq!((s.count, s.deadline_misses), (2, 1));
    // The name without labels is the total of its labelled stages, not a series of its own.
    let total = Stage::lookup("exchange_req", &[]).unwrap();
    assert!(total.is_total());
    let t = stats(&h, "exchange_req", &[]);
    assert_eq!((t.count, t.deadline_misses, t.max), (2, 1, 250 * MS));
}

#[laptime::measure(name = "never_kept", sample = 0.0)]
fn never_kept() {}

#[test]
fn per_stage_sampling_comes_from_the_attribute() {
    let _s = serial();
    let h = handle();
    for _ in 0..10 {
        never_kept();
    }
    assert!(h.flush());
    let stage = Stage::lookup("never_kept", &[]).unwrap();
    let s = h.get_stats(stage, Window::Cumulative).unwrap();
    assert_eq!((s.count, s.sampled_out, s.calls), (0, 10, 10));
}

#[laptime::measure(name = "order_send", outcome)]
fn send(qty: &str, work: Duration) -> Result<u32, std::num::ParseIntError> {
    clock().advance(work);
    let n: u32 = qty.parse()?; // an early exit through `?` is still an `err` value
    if n == 0 {
        return Ok(0); // an early `return` of `Ok` is an `ok` value
    }
    Ok(n)
}

#[test]
fn outcome_splits_ok_from_err_including_early_returns_and_question_marks() {
    let _s = serial();
    let h = handle();
    assert_eq!(send("3", MS), Ok(3));
    assert_eq!(send("0", 2 * MS), Ok(0));
    assert!(send("x", 4 * MS).is_err());
    let ok = stats(&h, "order_send", &[("outcome", "ok")]);
    let err = stats(&h, "order_send", &[("outcome", "err")]);
    assert_eq!((ok.count, ok.min, ok.max), (2, MS, 2 * MS));
    assert_eq!((err.count, err.min), (1, 4 * MS));
}

#[laptime::measure(name = "may_panic")]
fn may_panic(work: Duration) {
    clock().advance(work);
    panic!("inside measured code");
}

#[laptime::measure(name = "may_panic_outcome", outcome)]
fn may_panic_outcome(work: Duration) -> Result<(), ()> {
    clock().advance(work);
    panic!("inside measured code");
}

#[test]
fn a_panic_inside_measured_code_still_records_its_span() {
    let _s = serial();
    let h = handle();
    assert!(std::panic::catch_unwind(|| may_panic(6 * MS)).is_err());
    assert!(std::panic::catch_unwind(|| may_panic_outcome(7 * MS)).is_err());
    assert_eq!(stats(&h, "may_panic", &[]).max, 6 * MS);
    let err = stats(&h, "may_panic_outcome", &[("outcome", "err")]);
    assert_eq!(
        (err.count, err.max),
        (1, 7 * MS),
        "no value: counted as err"
    );
}

/// A future that is pending until `release` is set, advancing the mock clock when first polled.
struct Gate {
    released: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Future for Gate {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.released.load(std::sync::atomic::Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[laptime::measure(name = "async_fetch")]
async fn fetch(gate: Gate) -> std::thread::ThreadId {
    let first = std::thread::current().id();
    gate.await;
    assert_ne!(first, std::thread::current().id(), "did not migrate");
    first
}

fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[test]
fn an_async_span_runs_from_first_poll_to_completion_across_threads() {
    let _s = serial();
    let h = handle();
    let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fut = assert_send(fetch(Gate {
        released: released.clone(),
    }));
    clock().advance(100 * MS); // before the first poll: not part of the span
    let mut fut = Box::pin(fut);
    // First poll on this thread, completion on a tokio worker: the span crosses threads.
    assert!(poll_once(fut.as_mut()).is_pending());
    clock().advance(8 * MS); // suspended: part of the span
    released.store(true, std::sync::atomic::Ordering::Release);
    let first = runtime().block_on(async move { tokio::spawn(fut).await.unwrap() });
    assert_eq!(first, std::thread::current().id());
    let s = stats(&h, "async_fetch", &[]);
    assert_eq!((s.count, s.min, s.cancelled), (1, 8 * MS, 0));
}

#[laptime::measure(name = "async_cancelled")]
async fn cancellable(gate: Gate) {
    gate.await;
}

#[test]
fn a_future_dropped_before_completion_counts_as_cancelled_not_as_a_span() {
    let _s = serial();
    let h = handle();
    let gate = || Gate {
        released: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let mut started = Box::pin(cancellable(gate()));
    assert!(poll_once(started.as_mut()).is_pending());
    clock().advance(3 * MS);
    drop(started);
    drop(cancellable(gate())); // never polled: never started, nothing to count
    let s = stats(&h, "async_cancelled", &[]);
    assert_eq!((s.count, s.cancelled, s.calls), (0, 1, 1));
}

#[laptime::measure(name = "async_parse", outcome)]
async fn parse_later(text: String) -> Result<u32, std::num::ParseIntError> {
    tokio::task::yield_now().await;
    let n: u32 = text.parse()?;
    tokio::task::yield_now().await;
    Ok(n)
}

/// A multi-thread tokio runtime (2 workers), so tasks move between threads as they yield.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

#[test]
fn async_outcomes_are_exact_on_a_multi_thread_runtime() {
    let _s = serial();
    let h = handle();
    let errs = runtime().block_on(async {
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let text = if i % 4 == 0 {
                    "x".to_owned()
                } else {
                    i.to_string()
                };
                tokio::spawn(parse_later(text))
            })
            .collect();
        let mut errs = 0;
        for t in tasks {
            errs += u64::from(t.await.unwrap().is_err());
        }
        errs
    });
    assert_eq!(errs, 50);
    let ok = stats(&h, "async_parse", &[("outcome", "ok")]);
    let err = stats(&h, "async_parse", &[("outcome", "err")]);
    assert_eq!(
        (ok.count, err.count, ok.cancelled + err.cancelled),
        (150, 50, 0)
    );
}

fn parse_sum(a: &str, b: &str) -> Result<u32, std::num::ParseIntError> {
    let sum = laptime::measure_block!("block_parse", {
        clock().advance(2 * MS);
        a.parse::<u32>()? + b.parse::<u32>()?
    });
    Ok(sum)
}

#[test]
fn measure_block_evaluates_to_its_value_and_lets_question_marks_through() {
    let _s = serial();
    let h = handle();
    assert_eq!(parse_sum("1", "2"), Ok(3));
    assert!(parse_sum("1", "x").is_err());
    let s = stats(&h, "block_parse", &[]);
    assert_eq!(
        (s.count, s.max),
        (2, 2 * MS),
        "a block left by `?` is still timed"
    );

    let r: Result<u8, &str> = laptime::measure_block!("block_outcome", outcome, { Err("no") });
    assert!(r.is_err());
    assert_eq!(stats(&h, "block_outcome", &[("outcome", "err")]).count, 1);
}

#[test]
fn measure_block_works_inside_async_blocks() {
    let _s = serial();
    let h = handle();
    let task = async {
        laptime::measure_block!("block_async", deadline = "1s", {
            tokio::task::yield_now().await;
            clock().advance(4 * MS);
            5
        })
    };
    let v = runtime().block_on(async { tokio::spawn(task).await.unwrap() });
    assert_eq!(v, 5);
    let s = stats(&h, "block_async", &[]);
    assert_eq!(
        (s.count, s.max, s.deadline),
        (1, 4 * MS, Some(Duration::from_secs(1)))
    );
}

struct Quoter {
    spread: f64,
}

#[laptime::measure_all(labels(venue = "xnas"))]
impl Quoter {
    fn quote(&self, mid: f64) -> (f64, f64) {
        clock().advance(MS);
        (mid - self.spread, mid + self.spread)
    }

    fn widen(&mut self) {
        self.spread *= 2.0;
    }

    #[laptime::skip]
    fn not_timed(&self) -> f64 {
        self.spread
    }

    #[laptime::measure(name = "quoter_custom")]
    fn custom(&self) {}

    const fn constant() -> u32 {
        1
    }
}

#[laptime::measure_all]
mod risk {
    pub fn check(limit: u32) -> bool {
        limit > 0
    }

    #[laptime::skip]
    pub fn skipped() {}
}

#[test]
fn measure_all_times_every_function_but_the_skipped_ones() {
    let _s = serial();
    let h = handle();
    let mut q = Quoter { spread: 0.5 };
    assert_eq!(q.quote(10.0), (9.5, 10.5));
    q.widen();
    assert_eq!(q.not_timed(), 1.0);
    q.custom();
    assert_eq!(Quoter::constant(), 1);
    assert!(risk::check(1));
    risk::skipped();
    let venue = [("venue", "xnas")];
    assert_eq!(stats(&h, "macros::Quoter::quote", &venue).max, MS);
    assert_eq!(stats(&h, "macros::Quoter::widen", &venue).count, 1);
    assert_eq!(stats(&h, "quoter_custom", &[]).count, 1);
    assert_eq!(stats(&h, "macros::risk::check", &[]).count, 1);
    assert!(Stage::lookup("macros::Quoter::not_timed", &venue).is_none());
    assert!(Stage::lookup("macros::risk::skipped", &[]).is_none());
}

#[derive(Debug, Clone, Copy, laptime::Stage)]
enum EventId {
    CandleProcessing,
    HTTPRequest,
    #[stage(name = "tick_total")]
    Tick,
}

#[test]
fn derived_stage_enums_are_stages_everywhere_a_name_is() {
    let _s = serial();
    let h = handle();
    let names: Vec<_> = EventId::ALL.iter().map(|e| e.stage_name()).collect();
    assert_eq!(names, ["candle_processing", "http_request", "tick_total"]);
    {
        let _span = laptime::start(EventId::CandleProcessing);
        clock().advance(3 * MS);
    }
    laptime::record(EventId::HTTPRequest, 9 * MS);
    let v = laptime::measure_block!(EventId::Tick, {
        clock().advance(MS);
        1
    });
    assert_eq!(v, 1);
    assert!(h.flush());
    let s = laptime::get_stats(EventId::CandleProcessing, Window::S60).unwrap();
    assert_eq!((s.stage, s.count, s.max), ("candle_processing", 1, 3 * MS));
    assert_eq!(
        h.get_stats(EventId::HTTPRequest, Window::S1).unwrap().max,
        9 * MS
    );
    assert_eq!(
        h.get_stats(EventId::Tick, Window::Cumulative)
            .unwrap()
            .count,
        1
    );
}

trait Venue {
    fn send(&self, work: Duration);

    /// A default body is one call site for every implementor: each still gets its own series.
    #[laptime::measure]
    fn cancel(&self) {
        clock().advance(MS);
    }

    /// No receiver: the macro cannot tell this from a free function (see `docs/measure.md`).
    #[laptime::measure]
    fn venue_code() -> u32
    where
        Self: Sized,
    {
        1
    }
}

struct Xnas;
struct Bats;
/// A generic impl is one call site for every `T`: one series, named without the parameters.
struct Routed<T>(T);

impl Venue for Xnas {
    #[laptime::measure]
    fn send(&self, work: Duration) {
        clock().advance(work);
    }
}

impl Venue for Bats {
    #[laptime::measure]
    fn send(&self, work: Duration) {
        clock().advance(work);
    }
}

impl<T> Venue for Routed<T> {
    #[laptime::measure]
    fn send(&self, work: Duration) {
        clock().advance(work);
    }
}

#[test]
fn two_impls_of_one_method_are_two_series() {
    let _s = serial();
    let h = handle();
    for _ in 0..3 {
        Xnas.send(2 * MS);
    }
    for _ in 0..5 {
        Bats.send(3 * MS);
    }
    let xnas = stats(&h, "macros::Xnas::send", &[]);
    assert_eq!((xnas.count, xnas.max), (3, 2 * MS));
    let bats = stats(&h, "macros::Bats::send", &[]);
    assert_eq!((bats.count, bats.max), (5, 3 * MS));
    assert!(
        Stage::lookup("macros::send", &[]).is_none(),
        "no shared series"
    );

    // Alternate the types so the call site's first type is not always the one asked for.
    for _ in 0..2 {
        Bats.cancel();
        Xnas.cancel();
        Bats.cancel();
    }
    assert_eq!(stats(&h, "macros::Xnas::cancel", &[]).count, 2);
    assert_eq!(stats(&h, "macros::Bats::cancel", &[]).count, 4);

    Routed(1u8).send(MS);
    Routed("a").send(MS);
    assert_eq!(stats(&h, "macros::Routed::send", &[]).count, 2);

    assert_eq!(Xnas::venue_code() + Bats::venue_code(), 2);
    assert_eq!(stats(&h, "macros::venue_code", &[]).count, 2);
}

#[laptime::measure(name = "macro_quote", labels(pair = symbol, side = "buy"))]
fn quote(symbol: &str, work: Duration) -> usize {
    clock().advance(work);
    symbol.len()
}

/// A label from an argument: one family, a series per value, each span exact in its series.
#[laptime::measure(name = "macro_venue_ack", labels(venue = venue))]
async fn venue_ack(venue: u32, work: Duration) {
    clock().advance(work);
}

struct Router;

impl Router {
    #[laptime::measure(name = "macro_route", labels(pair = pair))]
    fn route(&self, pair: &String, work: Duration) {
        clock().advance(work);
    }
}

#[test]
fn a_label_from_an_argument_selects_a_series_of_the_sites_family() {
    let _s = serial();
    let h = handle();
    for (i, symbol) in ["BTC-USD", "ETH-USD", "BTC-USD", "SOL-USD", "BTC-USD"]
        .iter()
        .enumerate()
    {
        assert_eq!(quote(symbol, (i as u32 + 1) * MS), symbol.len());
    }
    let btc = stats(&h, "macro_quote", &[("pair", "BTC-USD"), ("side", "buy")]);
    assert_eq!((btc.count, btc.min, btc.max), (3, MS, 5 * MS));
    let eth = stats(&h, "macro_quote", &[("pair", "ETH-USD"), ("side", "buy")]);
    assert_eq!((eth.count, eth.min), (1, 2 * MS));
    // The site's family answers for all of them, and a bad value lands in its overflow series.
    let family = laptime::Family::new("macro_quote", &["pair", "side"]).unwrap();
    assert_eq!(family.len(), 3);
    assert_eq!(quote("", MS), 0);
    assert_eq!(family.overflowed(), 1);
    assert_eq!(stats(&h, "macro_quote", &[]).count, 6, "the family total");

    for venue in [7u32, 9, 7] {
        runtime().block_on(venue_ack(venue, 2 * MS));
    }
    assert_eq!(stats(&h, "macro_venue_ack", &[("venue", "7")]).count, 2);
    assert_eq!(stats(&h, "macro_venue_ack", &[("venue", "9")]).count, 1);

    let pair = String::from("XRP-USD");
    Router.route(&pair, 4 * MS);
    let routed = stats(&h, "macro_route", &[("pair", "XRP-USD")]);
    assert_eq!((routed.count, routed.max), (1, 4 * MS));
}

/// A door the test opens by hand: pending until opened, waking the waker it was last polled
/// with (the wrapper `polls` puts around the runtime's).
#[derive(Clone, Default)]
struct Door(
    std::sync::Arc<(
        std::sync::atomic::AtomicBool,
        std::sync::Mutex<Option<Waker>>,
    )>,
);

impl Door {
    fn open(&self) {
        self.0.0.store(true, std::sync::atomic::Ordering::Release);
        if let Some(waker) = self.0.1.lock().unwrap().take() {
            waker.wake();
        }
    }
}

impl Future for Door {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.0.load(std::sync::atomic::Ordering::Acquire) {
            return Poll::Ready(());
        }
        *self.0.1.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The runtime's waker in these tests: counts the wakes that reach it through the wrapper.
#[derive(Default)]
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Works `work[k]` in its k-th poll, waiting for a door between polls.
#[laptime::measure(name = "async_polled", polls)]
async fn polled(doors: [Door; 2], work: [Duration; 3]) -> u32 {
    clock().advance(work[0]);
    doors[0].clone().await;
    clock().advance(work[1]);
    doors[1].clone().await;
    clock().advance(work[2]);
    7
}

/// Wall time, busy time, each poll and each wake-to-poll delay, exact under the mock clock: a call
/// that works 5, 7 and 11 ms in three polls, waits 13 and 17 ms for its doors, and is polled 2
/// and 3 ms after each wake.
#[test]
fn polls_split_an_async_call_into_busy_time_polls_and_scheduling_delay() {
    let _s = serial();
    let h = handle();
    let doors = [Door::default(), Door::default()];
    let runtime_waker = std::sync::Arc::new(CountingWaker::default());
    let waker = Waker::from(runtime_waker.clone());
    let mut cx = Context::from_waker(&waker);
    let mut call = Box::pin(polled(doors.clone(), [5 * MS, 7 * MS, 11 * MS]));
    assert!(call.as_mut().poll(&mut cx).is_pending());
    for (k, (idle, queued)) in [(13 * MS, 2 * MS), (17 * MS, 3 * MS)]
        .into_iter()
        .enumerate()
    {
        clock().advance(idle);
        doors[k].open();
        clock().advance(queued);
        let polled = call.as_mut().poll(&mut cx);
        assert_eq!(polled.is_ready(), k == 1);
    }
    assert_eq!(
        runtime_waker.0.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "every wake reached the runtime's waker"
    );
    let wall = stats(&h, "async_polled", &[]);
    assert_eq!((wall.count, wall.min), (1, 58 * MS), "5+13+2+7+17+3+11");
    let busy = stats(&h, "async_polled.busy", &[]);
    assert_eq!((busy.count, busy.min), (1, 23 * MS), "5+7+11");
    let polls = stats(&h, "async_polled.poll", &[]);
    assert_eq!((polls.count, polls.min, polls.max), (3, 5 * MS, 11 * MS));
    let delays = stats(&h, "async_polled.wake_to_poll", &[]);
    assert_eq!((delays.count, delays.min, delays.max), (2, 2 * MS, 3 * MS));
}

/// A runtime that hands each poll another waker (a task moved between executors): the delay of a
/// wake through the old one is still recorded when the new one comes.
#[test]
fn a_new_runtime_waker_keeps_the_wake_the_old_one_saw() {
    let _s = serial();
    let h = handle();
    let doors = [Door::default(), Door::default()];
    let wakers: Vec<Waker> = (0..3)
        .map(|_| Waker::from(std::sync::Arc::new(CountingWaker::default())))
        .collect();
    let mut call = Box::pin(polled(doors.clone(), [MS, MS, MS]));
    assert!(
        call.as_mut()
            .poll(&mut Context::from_waker(&wakers[0]))
            .is_pending()
    );
    for k in 0..2 {
        clock().advance(4 * MS);
        doors[k].open();
        clock().advance((k as u32 + 5) * MS);
        let _ = call.as_mut().poll(&mut Context::from_waker(&wakers[k + 1]));
    }
    let delays = stats(&h, "async_polled.wake_to_poll", &[]);
    assert_eq!((delays.count, delays.min, delays.max), (2, 5 * MS, 6 * MS));
}

/// Recording switched off: the call runs and its wakes reach the runtime, nothing is recorded.
#[test]
fn polls_record_nothing_while_recording_is_off() {
    let _s = serial();
    let h = handle();
    laptime::set_enabled(false);
    let doors = [Door::default(), Door::default()];
    let runtime_waker = std::sync::Arc::new(CountingWaker::default());
    let waker = Waker::from(runtime_waker.clone());
    let mut cx = Context::from_waker(&waker);
    let mut call = Box::pin(polled(doors.clone(), [MS, MS, MS]));
    assert!(call.as_mut().poll(&mut cx).is_pending());
    doors[0].open();
    assert!(call.as_mut().poll(&mut cx).is_pending());
    doors[1].open();
    assert_eq!(call.as_mut().poll(&mut cx), Poll::Ready(7));
    laptime::set_enabled(true);
    assert_eq!(
        runtime_waker.0.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert!(h.flush());
    for name in ["async_polled", "async_polled.busy", "async_polled.poll"] {
        let recorded = Stage::lookup(name, &[]).and_then(|s| h.get_stats(s, Window::Cumulative));
        assert!(
            recorded.as_ref().is_none_or(|s| s.count == 0),
            "{name}: {recorded:?}"
        );
    }
}

#[laptime::measure(name = "async_yielding", polls)]
async fn yielding(yields: u32) -> u32 {
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
    yields
}

/// On tokio's multi-thread runtime: a call that yields 4 times is polled 5 times and woken 4
/// times. (The durations are the mock clock's, which no worker moves: only the counts say
/// anything here; the exact times are the hand-polled test's.)
#[test]
fn polls_on_a_multi_thread_runtime_count_every_poll_and_wake() {
    let _s = serial();
    let h = handle();
    let calls = 20;
    runtime().block_on(async {
        let tasks: Vec<_> = (0..calls).map(|_| tokio::spawn(yielding(4))).collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 4);
        }
    });
    let wall = stats(&h, "async_yielding", &[]);
    let busy = stats(&h, "async_yielding.busy", &[]);
    assert_eq!((wall.count, busy.count), (calls, calls));
    assert_eq!(stats(&h, "async_yielding.poll", &[]).count, 5 * calls);
    assert_eq!(
        stats(&h, "async_yielding.wake_to_poll", &[]).count,
        4 * calls
    );
}

/// How often the label expression below ran.
static LABEL_READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn counted(pair: &str) -> &str {
    LABEL_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    pair
}

#[laptime::measure(name = "async_polled_pair", labels(pair = counted(pair)), polls)]
async fn polled_pair(pair: &str) -> usize {
    pair.len()
}

/// A label from an argument is evaluated once a call, as without `polls`, though four series
/// (the wall time's, busy, poll, wake-to-poll) take it.
#[test]
fn polls_evaluate_a_label_from_an_argument_once_a_call() {
    let _s = serial();
    let h = handle();
    for _ in 0..3 {
        let mut call = Box::pin(polled_pair("BTC"));
        assert_eq!(poll_once(call.as_mut()), Poll::Ready(3));
    }
    assert_eq!(LABEL_READS.load(std::sync::atomic::Ordering::Relaxed), 3);
    for name in [
        "async_polled_pair",
        "async_polled_pair.busy",
        "async_polled_pair.poll",
    ] {
        assert_eq!(stats(&h, name, &[("pair", "BTC")]).count, 3, "{name}");
    }
}
