// Stage names and labels are checked at compile time by the rules registration applies.

#[laptime::measure(name = "stage spread")]
fn space_in_name() {}

#[laptime::measure(labels(le = "0.5"))]
fn reserved_label() {}

#[laptime::measure(outcome, labels(outcome = "maybe"))]
fn outcome_label_twice() -> Result<(), ()> {
    Ok(())
}

fn main() {
    laptime::measure_block!("", {});
}
