// Where `#[laptime::measure_all]` does not go, and the arguments it leaves to `#[measure]`.

#[laptime::measure_all]
struct NotAnImpl;

struct Book;

#[laptime::measure_all(name = "book")]
impl Book {
    fn a(&self) {}
}

#[laptime::measure_all(outcome)]
impl Book {
    fn b(&self) {}
}

#[laptime::measure_all(polls)]
impl Book {
    async fn c(&self) {}
}

#[laptime::measure_all]
mod elsewhere;

fn main() {}
