// A label from an argument makes a family: what the family call site cannot do yet is refused
// with the way around it.

struct Book;

impl Book {
    // A method's default name depends on `Self`: a family needs a fixed one.
    #[laptime::measure(labels(pair = pair))]
    fn quote(&self, pair: &str) {
        let _ = pair;
    }
}

#[laptime::measure(name = "ui_outcome_family", outcome, labels(pair = pair))]
fn send(pair: &str) -> Result<(), ()> {
    let _ = pair;
    Ok(())
}

#[laptime::measure(name = "ui_deadline_family", deadline = "1ms", labels(pair = pair))]
fn fill(pair: &str) {
    let _ = pair;
}

#[laptime::measure_all(labels(pair = pair))]
impl Book {
    fn cancel(&self, pair: &str) {
        let _ = pair;
    }
}

fn main() {
    Book.quote("x");
    let _ = send("x");
    fill("x");
}
