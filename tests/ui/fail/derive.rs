// What `#[derive(laptime::Stage)]` refuses.

#[derive(laptime::Stage)]
struct NotAnEnum;

#[derive(laptime::Stage)]
enum WithFields {
    Quote(f64),
}

#[derive(laptime::Stage)]
enum Generic<T> {
    Tick,
    Never(std::marker::PhantomData<T>),
}

#[derive(laptime::Stage)]
enum SameName {
    #[stage(name = "tick")]
    TickTotal,
    Tick,
}

#[derive(laptime::Stage)]
enum UnknownKey {
    #[stage(rename = "x")]
    Tick,
}

fn main() {}
