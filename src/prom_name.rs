//! The Prometheus name rules, in one place: a stage's static labels ([`crate::Stage::with_labels`]),
//! the exporter's namespace, gauges and const labels, the configuration file's `[prometheus]`
//! names, and (through `laptime::export::prometheus`) the rule generator all call these two.
//!
//! Both are `const fn` because a stage's labels are checked in const context.

/// A metric name as the library accepts it: `[a-zA-Z_][a-zA-Z0-9_]*`, ASCII only. Prometheus also
/// allows `:`, but keeps it for recording rules, so a namespace or a gauge may not use one.
pub const fn is_metric_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || !(bytes[0].is_ascii_alphabetic() || bytes[0] == b'_') {
        return false;
    }
    let mut i = 1;
    while i < bytes.len() {
        if !(bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

/// A label name: a metric name (so no `:`) that does not start with `__`, which Prometheus keeps
/// for its own labels.
pub const fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    is_metric_name(name) && !(bytes.len() >= 2 && bytes[0] == b'_' && bytes[1] == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    // Usable where the stage registry checks labels: in const context.
    const _: () = assert!(is_label_name("verb") && !is_label_name("__name__"));

    #[test]
    fn names_valid_and_invalid() {
        // (name, a metric name?, a label name?)
        let table = [
            ("mm", true, true),
            ("Ab9", true, true),
            ("_x1", true, true),
            ("_", true, true),
            ("_env", true, true),
            ("a_b_", true, true),
            ("__", true, false),
            ("__env", true, false),
            ("__name__", true, false),
            ("", false, false),
            ("1x", false, false),
            ("9", false, false),
            ("a:b", false, false),
            (":a", false, false),
            ("a:", false, false),
            ("a-b", false, false),
            ("a.b", false, false),
            ("a b", false, false),
            (" a", false, false),
            ("é", false, false),
            ("aé", false, false),
            ("a\u{0}", false, false),
        ];
        for (name, metric, label) in table {
            assert_eq!(is_metric_name(name), metric, "metric name {name:?}");
            assert_eq!(is_label_name(name), label, "label name {name:?}");
        }
    }
}
