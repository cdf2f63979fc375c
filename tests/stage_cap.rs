//! The stage cap is hard: past it, registration is a typed error and hot-path calls naming a new
//! stage record nothing but are counted. Alone in its file: it fills the process's registry.

use laptime::{Collector, Stage, StageError};

#[test]
fn past_the_cap_registration_fails_and_hot_path_calls_are_counted_not_recorded() {
    let handle = Collector::builder()
        .with_max_stages(laptime::DEFAULT_MAX_STAGES)
        .install();
    let handle = match handle {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    };
    let mut last = Ok(());
    for i in 0..laptime::DEFAULT_MAX_STAGES + 1 {
        if let Err(e) = Stage::new(Box::leak(format!("fill_{i}").into_boxed_str())) {
            last = Err(e);
            break;
        }
    }
    let e = last.expect_err("the cap stops registration");
    assert_eq!(
        e,
        StageError::TooManyStages {
            cap: laptime::DEFAULT_MAX_STAGES
        }
    );
    assert!(e.to_string().contains("with_max_stages"), "{e}");
    let g = laptime::start("one_too_many");
    assert!(!g.is_recording());
    drop(g);
    assert!(handle.flush());
    assert!(handle.health().rejected >= 1);
}
