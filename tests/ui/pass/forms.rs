//! Every form `#[laptime::measure]` accepts.
#![deny(warnings)]
#![allow(dead_code)]

use std::fmt::Display;

#[laptime::measure]
fn free() -> u32 {
    7
}

#[laptime::measure(name = "stage_spread", deadline = "200ms", sample = 0.5)]
fn named(x: f64) -> f64 {
    x * 2.0
}

#[laptime::measure(labels(verb = "post", api = "batch-cancel"))]
fn labelled() {}

// Minutes and hours: the configuration file's duration grammar.
#[laptime::measure(deadline = "2m")]
fn minutes() {}

#[laptime::measure(deadline = "1h")]
fn hours() {}

#[laptime::measure(outcome)]
fn fallible(fail: bool) -> Result<u32, std::num::ParseIntError> {
    if fail {
        let n: u32 = "x".parse()?;
        return Ok(n);
    }
    Ok(1)
}

#[laptime::measure(outcome)]
fn io_alias() -> std::io::Result<()> {
    Ok(())
}

#[laptime::measure]
fn early(x: u32) -> Option<u32> {
    if x == 0 {
        return None;
    }
    let y = x.checked_sub(1)?;
    Some(y)
}

#[laptime::measure]
fn generic<T, U>(t: T, u: U) -> String
where
    T: Display,
    U: Display + Clone,
{
    format!("{t}{u}")
}

#[laptime::measure]
fn opaque(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

#[laptime::measure(outcome)]
fn opaque_result(n: u32) -> Result<impl Display, String> {
    if n == 0 {
        return Err("zero".to_owned());
    }
    Ok(n)
}

#[laptime::measure]
unsafe fn raw(p: *const u32) -> u32 {
    // SAFETY: the caller passes a valid pointer.
    unsafe { *p }
}

#[laptime::measure]
fn borrowed(s: &str) -> &str {
    &s[1..]
}

#[laptime::measure(outcome)]
fn borrowed_result(s: &str) -> Result<&str, ()> {
    s.get(1..).ok_or(())
}

#[laptime::measure]
async fn fetch(x: u32) -> u32 {
    x + 1
}

#[laptime::measure(outcome, deadline = "1.5s")]
async fn fetch_fallible(x: &str) -> Result<u32, std::num::ParseIntError> {
    let n: u32 = x.parse()?;
    Ok(n)
}

#[laptime::measure]
async fn fetch_opaque() -> impl Display {
    3
}

#[laptime::measure(polls)]
async fn fetch_polled(x: u32) -> u32 {
    x + 1
}

#[laptime::measure(name = "fetch_polled_outcome", outcome, polls)]
async fn fetch_polled_fallible(x: &str) -> Result<u32, std::num::ParseIntError> {
    if x.is_empty() {
        return Ok(0);
    }
    let n: u32 = x.parse()?;
    Ok(n)
}

#[laptime::measure(name = "fetch_polled_pair", labels(pair = pair), polls)]
async fn fetch_polled_pair(pair: &str) -> usize {
    pair.len()
}

#[laptime::measure(name = "fetch_polled_owned", labels(pair = pair), polls)]
async fn fetch_polled_owned(pair: String) -> String {
    pair
}

#[laptime::measure(polls)]
async fn fetch_polled_opaque() -> impl Display {
    3
}

struct Book {
    bids: Vec<f64>,
}

impl Book {
    #[laptime::measure]
    fn new() -> Self {
        Book { bids: Vec::new() }
    }

    #[laptime::measure]
    fn best(&self) -> Option<f64> {
        self.bids.first().copied()
    }

    #[laptime::measure(name = "book_insert")]
    fn insert(&mut self, px: f64) {
        self.bids.push(px);
    }

    #[laptime::measure]
    fn into_bids(self) -> Vec<f64> {
        self.bids
    }

    #[laptime::measure]
    async fn refresh(&mut self) -> usize {
        self.bids.len()
    }

    #[laptime::measure(polls)]
    async fn refresh_polled(&mut self) -> usize {
        self.bids.len()
    }
}

trait Venue {
    fn send(&self, qty: u32) -> Result<u32, String>;

    #[laptime::measure]
    fn heartbeat(&self) -> u32 {
        1
    }
}

impl Venue for Book {
    #[laptime::measure(outcome, name = "venue_send")]
    fn send(&self, qty: u32) -> Result<u32, String> {
        if qty == 0 { Err("zero".into()) } else { Ok(qty) }
    }
}

mod reexported {
    // A crate that re-exports laptime names it with `crate = path`.
    pub use laptime as telemetry;
}

#[laptime::measure(crate = reexported::telemetry)]
fn through_reexport() {}

fn main() {
    free();
    named(1.0);
    labelled();
    let _ = fallible(false);
    let _ = io_alias();
    early(3);
    generic(1, "a");
    opaque(3).count();
    let _ = opaque_result(1);
    // SAFETY: a valid pointer.
    unsafe { raw(&5) };
    borrowed("ab");
    let _ = borrowed_result("ab");
    let _ = fetch(1);
    let _ = fetch_fallible("1");
    let _ = fetch_opaque();
    let mut book = Book::new();
    book.insert(1.0);
    book.best();
    let _ = book.send(1);
    book.heartbeat();
    let _ = book.refresh();
    book.into_bids();
    through_reexport();
    let _ = blocks();
}

fn blocks() -> Result<u32, std::num::ParseIntError> {
    let a = laptime::measure_block!("block_plain", { 3 });
    let b = laptime::measure_block!("block_args", deadline = "5ms", sample = 1, labels(side = "bid"), {
        let x: u32 = "4".parse()?;
        x + a
    });
    let c: Result<u32, String> = laptime::measure_block!("block_outcome", outcome, { Ok(b) });
    laptime::measure_block!("block_unit", {});
    Ok(c.unwrap_or(0))
}
