//! What every command reads and writes, through the real binary: inputs stop at
//! `--max-input-bytes` (a device that never ends included) with an error that says what to
//! change; outputs (`merge -o`, `report -o`, `gate --report`, `rules --out`) follow the library's
//! one write rule (a symlink is followed and stays a link, a device is written through, a
//! directory is refused); and nonsense numbers are refused in both the `--flag value` and the
//! `--flag=value` forms before any file is read.
#![cfg(unix)]

mod common;

use std::ffi::OsStr;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use common::{dir, laptime, stderr, stdout, synthetic, tick_specs, write};

fn assert_exit_2(out: &std::process::Output, wanted: &str) {
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(out), stderr(out));
    assert!(stderr(out).contains(wanted), "{}", stderr(out));
}

fn args<'a>(a: &'a [&'a str], paths: &'a [&'a Path]) -> Vec<&'a OsStr> {
    a.iter()
        .map(OsStr::new)
        .chain(paths.iter().map(|p| p.as_os_str()))
        .collect()
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn is_char_device(path: &str) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

#[test]
fn every_command_stops_reading_at_the_input_limit() {
    let d = dir("input_limit");
    let p = write(&d, "p.json", &synthetic("p", &tick_specs(), 1));
    let zero = Path::new("/dev/zero");
    let wanted = "/dev/zero is larger than 1048576 bytes; is this a profile? (raise the limit \
                  with --max-input-bytes";
    let out = laptime(args(
        &["gate", "--max-input-bytes", "1048576", "--baseline"],
        &[&p, Path::new("--current"), zero],
    ));
    assert_exit_2(&out, &format!("current {wanted}"));
    let out = laptime(args(
        &["merge", "--max-input-bytes=1048576", "-o"],
        &[&d.join("m.json"), &p, zero],
    ));
    assert_exit_2(&out, &format!("input {wanted}"));
    let out = laptime(args(
        &["report", "--max-input-bytes", "1048576", "-o"],
        &[&d.join("r.html"), zero],
    ));
    assert_exit_2(&out, &format!("current {wanted}"));
    let out = laptime(args(
        &["rules", "--max-input-bytes", "4096", "--config"],
        &[zero, Path::new("--out"), &d.join("rules")],
    ));
    assert_exit_2(
        &out,
        "/dev/zero is larger than 4096 bytes; is this a laptime configuration file?",
    );
    // A valid profile over the limit: the flag is what to change.
    let out = laptime(args(
        &["report", "--max-input-bytes", "100", "-o"],
        &[&d.join("r.html"), &p],
    ));
    assert_exit_2(&out, "is larger than 100 bytes");
    let out = laptime(args(
        &["report", "--max-input-bytes", "0", "-o"],
        &[&d.join("r.html"), &p],
    ));
    assert_exit_2(&out, "--max-input-bytes");
}

#[test]
fn outputs_follow_a_symlink_and_keep_it() {
    let d = dir("output_symlink");
    let p = write(&d, "p.json", &synthetic("p", &tick_specs(), 1));
    let q = write(&d, "q.json", &synthetic("q", &tick_specs(), 2));
    for (name, command) in [
        ("merged.json", vec!["merge", "-o", "LINK", "P", "Q"]),
        ("report.html", vec!["report", "P", "-o", "LINK"]),
        ("report.svg", vec!["report", "P", "-o", "LINK"]),
        ("report.png", vec!["report", "P", "-o", "LINK"]),
        (
            "gate.md",
            vec![
                "gate",
                "--baseline",
                "P",
                "--current",
                "Q",
                "--report",
                "LINK",
            ],
        ),
    ] {
        let target = d.join(format!("real-{name}"));
        std::fs::write(&target, b"old").unwrap();
        let link = d.join(name);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let argv: Vec<&OsStr> = command
            .iter()
            .map(|a| match *a {
                "LINK" => link.as_os_str(),
                "P" => p.as_os_str(),
                "Q" => q.as_os_str(),
                a => OsStr::new(a),
            })
            .collect();
        let out = laptime(argv);
        assert!(
            out.status.success(),
            "{name}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let meta = std::fs::symlink_metadata(&link).unwrap();
        assert!(
            meta.file_type().is_symlink(),
            "{name}: the link was replaced"
        );
        let written = std::fs::read(&target).unwrap();
        assert!(written.len() > 100, "{name}: the target was not written");
    }
    // rules: a generated file that is a link stays one.
    let out_dir = d.join("rules");
    std::fs::create_dir_all(out_dir.join("grafana")).unwrap();
    let target = d.join("real-dashboard.json");
    std::fs::write(&target, b"old").unwrap();
    let link = out_dir.join("grafana").join("dashboard.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let config = d.join("laptime.toml");
    std::fs::write(
        &config,
        "[[sla]]\nstage = \"tick_total\"\nwindow = \"60s\"\nmetric = \"p99\"\ncritical = \"2ms\"\n",
    )
    .unwrap();
    let out = laptime(args(
        &["rules", "--config"],
        &[&config, Path::new("--out"), &out_dir],
    ));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(is_link(&link));
    assert!(std::fs::read(&target).unwrap().len() > 100);
}

#[test]
fn outputs_write_through_a_device_and_refuse_a_directory() {
    let d = dir("output_device");
    let p = write(&d, "p.json", &synthetic("p", &tick_specs(), 1));
    // Through links, so a regression replaces a link here, never the device itself.
    let null = d.join("null.html");
    std::os::unix::fs::symlink("/dev/null", &null).unwrap();
    for argv in [
        args(&["merge", "-o"], &[&null, &p]),
        args(&["report", "-o"], &[&null, &p]),
    ] {
        let out = laptime(argv);
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        assert!(is_link(&null));
    }
    assert!(is_char_device("/dev/null"));
    let full = d.join("full.json");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    let out = laptime(args(&["merge", "-o"], &[&full, &p]));
    assert_exit_2(&out, "No space left on device");
    assert!(is_link(&full));

    let html_dir = d.join("out.html");
    std::fs::create_dir_all(&html_dir).unwrap();
    let out = laptime(args(&["report", "-o"], &[&html_dir, &p]));
    assert_exit_2(&out, "is a directory: name a regular file");
    let png_dir = d.join("out.png");
    std::fs::create_dir_all(&png_dir).unwrap();
    let out = laptime(args(&["report", "-o"], &[&png_dir, &p]));
    assert_exit_2(&out, "is a directory: name a regular file");
    let out = laptime(args(
        &["gate", "--baseline"],
        &[&p, Path::new("--current"), &p, Path::new("--report"), &d],
    ));
    assert_exit_2(&out, "is a directory: name a regular file");
    assert!(html_dir.is_dir());
}

#[test]
fn nonsense_numbers_are_refused_in_both_forms() {
    let d = dir("nonsense_numbers");
    let p = write(&d, "p.json", &synthetic("p", &tick_specs(), 1));
    for (flag, value, wanted) in [
        ("--p95", "-5", "--p95 -5: must be a finite number ≥ 0"),
        ("--p99", "NaN", "--p99 NaN: must be a finite number ≥ 0"),
        ("--deadline-miss", "inf", "--deadline-miss inf: must be"),
        ("--deadline-miss", "-0.5", "--deadline-miss -0.5: must be"),
        ("--confidence", "-0.5", "--confidence -0.5: must be"),
        ("--confidence", "1e308", "--confidence 1e308: must be"),
        ("--min-count", "0", "--min-count 0: must be at least 1"),
        ("--min-count", "-1", "invalid value '-1' for '--min-count"),
        ("--replicates", "-3", "invalid value '-3' for '--replicates"),
        (
            "--max-input-bytes",
            "-1",
            "invalid value '-1' for '--max-input-bytes",
        ),
        (
            "--max-input-bytes",
            "0",
            "invalid value '0' for '--max-input-bytes",
        ),
    ] {
        let spaced = [flag, value];
        let joined = format!("{flag}={value}");
        for extra in [&spaced[..], &[joined.as_str()][..]] {
            let paths = [p.as_path(), Path::new("--current"), &p];
            let mut argv = args(&["gate", "--baseline"], &paths);
            argv.extend(extra.iter().map(OsStr::new));
            let out = laptime(argv);
            assert_exit_2(&out, wanted);
            assert!(stdout(&out).is_empty(), "{extra:?}: the gate ran");
        }
    }
}
