// Forms `laptime::measure_block!` refuses.

#[derive(laptime::Stage)]
enum EventId {
    Emit,
}

fn main() {
    laptime::measure_block!("stage_emit");
    laptime::measure_block!("stage_emit", 1 + 1);
    laptime::measure_block!(EventId::Emit, deadline = "1ms", {});
    laptime::measure_block!("stage_emit", {}, {});
    laptime::measure_block!("stage_emit", name = "x", {});
    laptime::measure_block!("stage_emit", polls, {});
}
