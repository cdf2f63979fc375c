//! Invalid configuration gives a typed error that says what to change; nothing is installed.

mod common;

use std::time::Duration;

use laptime::{
    Collector, ConfigError, InstallErrorKind, Metric, SlaRule, Stage, StageError, Window,
    WindowSpec,
};

fn err(builder: laptime::CollectorBuilder) -> ConfigError {
    let e = builder
        .install()
        .expect_err("configuration must be refused");
    let message = e.to_string();
    match e.kind {
        InstallErrorKind::Config(c) => {
            assert!(message.contains(&c.to_string()), "{message}");
            c
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn each_bad_setting_has_its_own_error_and_message() {
    let _s = common::serial();
    let s = Duration::from_secs(1);
    let ms = Duration::from_millis(1);
    assert_eq!(
        err(Collector::builder().with_ring_capacity(0)),
        ConfigError::RingCapacity { capacity: 0 }
    );
    assert!(matches!(
        err(Collector::builder().with_interval(Duration::ZERO)),
        ConfigError::Interval { .. }
    ));
    // Nonsense that used to be taken: a 1 ns interval spun the aggregator ~13 000 cycles a second,
    // and a 1 ns window never held a value.
    assert!(matches!(
        err(Collector::builder().with_interval(Duration::from_nanos(1))),
        ConfigError::Interval { .. }
    ));
    let ns = Duration::from_nanos(1);
    assert_eq!(
        err(Collector::builder().with_window(ns, ns)),
        ConfigError::SliceTooShort {
            window: ns,
            slice: ns
        }
    );
    let message = err(Collector::builder().with_window(ns, ns)).to_string();
    assert!(
        message.contains("use a slice of at least 1 µs"),
        "{message}"
    );
    assert_eq!(
        err(Collector::builder().with_windows([])),
        ConfigError::NoWindows
    );
    assert_eq!(
        err(Collector::builder().with_windows([WindowSpec::new(s, Duration::from_millis(300))])),
        ConfigError::WindowNotMultipleOfSlice {
            window: s,
            slice: Duration::from_millis(300)
        }
    );
    let message = ConfigError::WindowNotMultipleOfSlice {
        window: s,
        slice: Duration::from_millis(300),
    }
    .to_string();
    assert!(
        message.contains("pick a slice that divides the window"),
        "{message}"
    );
    assert_eq!(
        err(Collector::builder().with_windows([WindowSpec::new(s, Duration::ZERO)])),
        ConfigError::ZeroWindow
    );
    assert!(matches!(
        err(Collector::builder().with_windows([WindowSpec::new(Duration::from_secs(3600), ms)])),
        ConfigError::TooManySlices { .. }
    ));
    assert!(matches!(
        err(Collector::builder().with_window(s, s).with_window(s, s)),
        ConfigError::DuplicateWindow { .. }
    ));
    assert_eq!(
        err(Collector::builder().with_histogram(0, s)),
        ConfigError::SignificantDigits { digits: 0 }
    );
    assert_eq!(
        err(Collector::builder().with_histogram(6, s)),
        ConfigError::SignificantDigits { digits: 6 }
    );
    assert!(matches!(
        err(Collector::builder().with_histogram(3, Duration::from_nanos(100))),
        ConfigError::HighestValue { .. }
    ));
    assert!(matches!(
        err(Collector::builder().with_max_stages(0)),
        ConfigError::MaxStages { .. }
    ));
    assert!(matches!(
        err(Collector::builder().with_sampling_rate(f64::NAN)),
        ConfigError::SamplingRate { .. }
    ));
    assert!(matches!(
        err(Collector::builder().with_sampling_rate(1.5)),
        ConfigError::SamplingRate { .. }
    ));
    assert!(matches!(
        err(Collector::builder().with_sla_rule(
            SlaRule::new("cfg_q", Window::S60, Metric::Quantile(1.2)).with_critical(ms)
        )),
        ConfigError::Quantile { .. }
    ));
    assert!(matches!(
        err(Collector::builder().with_sla_rule(
            SlaRule::new("cfg_q", Window::S60, Metric::Quantile(f64::NAN)).with_critical(ms)
        )),
        ConfigError::Quantile { .. }
    ));
    assert!(matches!(
        err(Collector::builder().with_sla_rule(
            SlaRule::new("cfg_w", Window::Last(Duration::from_secs(7)), Metric::P99)
                .with_critical(ms)
        )),
        ConfigError::UnknownWindow { .. }
    ));
    assert!(matches!(
        err(Collector::builder().with_deadline("cfg_d", Duration::ZERO)),
        ConfigError::ZeroDeadline { .. }
    ));
    assert!(matches!(
        err(Collector::builder().with_deadline("bad name", ms)),
        ConfigError::Stage(StageError::InvalidName { .. })
    ));
    assert!(matches!(
        err(
            Collector::builder().with_adaptive_sampling(laptime::AdaptiveSampling {
                budget_per_sec: -1.0,
                reduced_rate: 0.1
            })
        ),
        ConfigError::AdaptiveBudget { .. }
    ));
    assert!(laptime::snapshot().is_none(), "nothing was installed");
}

#[test]
fn the_stage_cap_is_hard_and_configurable() {
    let _s = common::serial();
    // Registered stages count against the cap for the whole process.
    for i in 0..5 {
        Stage::new(Box::leak(format!("cap_{i}").into_boxed_str())).unwrap();
    }
    let e = err(Collector::builder().with_max_stages(1));
    assert!(
        matches!(e, ConfigError::MaxStages { cap: 1, registered } if registered >= 5),
        "{e:?}"
    );
    assert!(e.to_string().contains("already registered"), "{e}");
}
