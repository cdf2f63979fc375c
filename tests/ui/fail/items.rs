// Items `#[laptime::measure]` cannot time.

#[laptime::measure]
const fn constant() -> u32 {
    1
}

#[laptime::measure]
struct NotAFunction;

trait Venue {
    #[laptime::measure]
    fn send(&self);
}

#[laptime::measure(outcome)]
fn outcome_of_nothing() {}

#[laptime::skip(now)]
fn skip_with_arguments() {}

fn main() {}
