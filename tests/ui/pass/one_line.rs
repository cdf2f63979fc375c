//! One-line bodies of every kind of function, under `deny(warnings)`: the expansion must not
//! trip `unused_braces` (whose suggested fix would not even compile) or any other lint in the
//! caller's crate.
#![deny(warnings)]
#![allow(dead_code)]

use std::fmt::Display;

struct Book(u32);

trait Venue {
    fn send(&self) -> u32;
    fn reset(&mut self);
    fn name() -> &'static str;
    #[laptime::measure]
    fn default_body(&self) -> u32 { 3 }
}

#[laptime::measure]
fn one(x: u32) -> u32 { x * 2 }

#[laptime::measure]
fn unit() { }

#[laptime::measure]
fn unit_call(v: Vec<u32>) { drop(v) }

#[laptime::measure]
fn generic<T: Display>(t: T) -> String { t.to_string() }

#[laptime::measure]
unsafe fn not_safe(x: u32) -> u32 { x + 1 }

#[laptime::measure]
fn opaque(x: u32) -> impl Display { x }

#[laptime::measure]
async fn later(x: u32) -> u32 { x * 3 }

#[laptime::measure(outcome)]
fn fallible(x: u32) -> Result<u32, String> { Ok(x) }

#[laptime::measure(outcome)]
async fn fallible_later(x: u32) -> Result<u32, String> { Ok(x) }

#[laptime::measure(outcome)]
fn fallible_opaque(x: u32) -> Result<impl Display, String> { Ok(x) }

impl Book {
    #[laptime::measure]
    fn by_ref(&self) -> u32 { self.0 }

    #[laptime::measure]
    fn by_mut(&mut self) { self.0 += 1 }

    #[laptime::measure]
    fn by_value(self) -> u32 { self.0 }

    #[laptime::measure]
    fn associated() -> Book { Book(0) }

    #[laptime::measure]
    async fn later(&self) -> u32 { self.0 }

    #[laptime::measure]
    fn generic<T: Into<u32>>(&self, t: T) -> u32 { self.0 + t.into() }

    #[laptime::measure]
    unsafe fn not_safe(&self) -> u32 { self.0 }

    #[laptime::measure]
    fn opaque(&self) -> impl Display { self.0 }
}

impl Venue for Book {
    #[laptime::measure]
    fn send(&self) -> u32 { self.0 }

    #[laptime::measure]
    fn reset(&mut self) { self.0 = 0 }

    #[laptime::measure]
    fn name() -> &'static str { "book" }
}

struct Quote(u32);

#[laptime::measure_all]
impl Quote {
    fn by_ref(&self) -> u32 { self.0 }
    fn by_mut(&mut self) { self.0 += 1 }
    fn by_value(self) -> u32 { self.0 }
    fn associated() -> Quote { Quote(0) }
    async fn later(&self) -> u32 { self.0 }
    fn generic<T: Into<u32>>(&self, t: T) -> u32 { self.0 + t.into() }
    unsafe fn not_safe(&self) -> u32 { self.0 }
    fn opaque(&self) -> impl Display { self.0 }
    fn unit(&self) { }
}

#[laptime::measure_all]
mod free {
    pub fn one(x: u32) -> u32 { x * 2 }
    pub fn unit() { }
    pub async fn later(x: u32) -> u32 { x }
    pub fn generic<T: Into<u32>>(t: T) -> u32 { t.into() }
    pub unsafe fn not_safe(x: u32) -> u32 { x }
    pub fn opaque(x: u32) -> impl std::fmt::Display { x }
}

fn main() {
    let _ = laptime::measure_block!("one_line_block", { 1 + 1 });
}
