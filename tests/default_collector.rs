//! Zero set-up: with no collector installed, the first span starts a default one. Alone in its
//! file so it is always the first collector of its process.

use laptime::{Collector, Window};

#[test]
fn the_default_collector_starts_on_the_first_span() {
    assert!(laptime::snapshot().is_none(), "nothing installed yet");
    {
        let _g = laptime::start("zero_setup");
    }
    assert!(laptime::flush(), "a default collector is running");
    assert_eq!(
        laptime::get_stats("zero_setup", Window::Cumulative)
            .unwrap()
            .count,
        1
    );
    let err = Collector::builder()
        .install()
        .expect_err("the default collector is current");
    assert!(matches!(
        err.kind,
        laptime::InstallErrorKind::AlreadyRunning
    ));
    let s = laptime::snapshot().unwrap();
    assert_eq!(
        s.windows,
        vec![Window::S1, Window::S5, Window::S60, Window::Cumulative]
    );
}
