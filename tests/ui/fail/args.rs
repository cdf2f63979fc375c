// Arguments `#[laptime::measure]` refuses, each with a message that says what to write instead.

#[laptime::measure(nmae = "typo")]
fn unknown_argument() {}

#[laptime::measure(deadline = "200")]
fn deadline_without_unit() {}

#[laptime::measure(deadline = "2d")]
fn deadline_unknown_unit() {}

#[laptime::measure(deadline = "soon")]
fn deadline_garbage() {}

#[laptime::measure(deadline = "0ms")]
fn deadline_zero() {}

#[laptime::measure(deadline = "1.5ns")]
fn deadline_fraction_of_a_nanosecond() {}

#[laptime::measure(deadline = 200)]
fn deadline_not_a_string() {}

#[laptime::measure(sample = 1.5)]
fn sample_above_one() {}

#[laptime::measure(sample = "all")]
fn sample_not_a_number() {}

#[laptime::measure(name = "a", name = "b")]
fn name_twice() {}

#[laptime::measure(name = stage_spread)]
fn name_not_a_string() {}

#[laptime::measure(labels())]
fn labels_empty() {}

#[laptime::measure(labels(verb = "post", verb = "get"))]
fn label_twice() {}

#[laptime::measure(polls)]
fn polls_not_async() {}

#[laptime::measure(polls, polls)]
async fn polls_twice() {}

fn main() {}
