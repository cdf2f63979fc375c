// `outcome` splits `Ok` from `Err`: a function that returns something else is refused.

#[laptime::measure(outcome)]
fn not_a_result() -> u32 {
    1
}

fn main() {
    let _ = laptime::measure_block!("stage_emit", outcome, { 3 });
}
