//! The expansions name everything by absolute path: they build under `no_implicit_prelude`, beside
//! user items that shadow the names an expansion could otherwise pick up by accident.
#![no_implicit_prelude]
#![deny(warnings)]
#![allow(dead_code, non_camel_case_types)]

// Shadows of what a careless expansion would refer to unqualified.
struct Option;
struct Result;
struct Some;
struct Ok;
struct core;
struct CallSite;
mod laptime_shadow {}

#[::laptime::measure]
fn plain() -> u32 {
    1
}

#[::laptime::measure(outcome, deadline = "1ms", sample = 1.0, labels(k = "v"))]
fn fallible() -> ::std::result::Result<u32, ()> {
    ::std::result::Result::Ok(1)
}

#[::laptime::measure(outcome)]
async fn fallible_async() -> ::std::result::Result<u32, ()> {
    ::std::result::Result::Ok(1)
}

#[::laptime::measure]
async fn plain_async() {}

struct Book;

#[::laptime::measure_all]
impl Book {
    fn best(&self) -> u32 {
        let __laptime_span = 5; // the expansion's own locals are invisible to user code
        __laptime_span
    }
}

#[derive(::laptime::Stage)]
enum EventId {
    CandleProcessing,
}

fn main() {
    plain();
    let _ = fallible();
    let _ = fallible_async();
    let _ = plain_async();
    let _ = Book.best();
    let _ = ::laptime::measure_block!("hygiene_block", outcome, {
        ::std::result::Result::<u32, ()>::Ok(2)
    });
    let _ = ::laptime::measure_block!(EventId::CandleProcessing, { 3 });
}
