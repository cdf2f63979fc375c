//! A sampling rate set before the first span survives the start of the default collector. Alone in
//! its file so the default collector starts here.

use laptime::Window;

#[test]
fn a_rate_set_before_the_first_span_is_kept() {
    laptime::set_sampling_rate(0.0).unwrap();
    {
        let _g = laptime::start("early_rate");
    }
    assert!(
        laptime::flush(),
        "the first span started the default collector"
    );
    assert_eq!(laptime::sampling_rate(), 0.0);
    let s = laptime::get_stats("early_rate", Window::Cumulative).unwrap();
    assert_eq!((s.count, s.sampled_out), (0, 1));
}
