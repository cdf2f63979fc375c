//! `laptime merge`: the binary writes what `Profile::merge` returns; bad inputs exit 2.

mod common;

use common::{Spec, dir, laptime, stderr, synthetic, tick_specs, write};
use laptime::profile::Profile;

#[test]
fn merge_via_binary_equals_the_library() {
    let d = dir("merge_via_binary_equals_the_library");
    let specs = tick_specs();
    let a = synthetic("host-a", &specs, 1);
    // The second run has one stage more and one less.
    let mut b_specs = specs[1..].to_vec();
    b_specs.push(Spec::new("stage_batch", 70_000.0, 0.3));
    let b = synthetic("host-b", &b_specs, 2);
    let (pa, pb) = (write(&d, "a.json", &a), write(&d, "b.json", &b));
    let out_path = d.join("merged.json");
    let out = laptime([
        "merge".as_ref(),
        "-o".as_ref(),
        out_path.as_os_str(),
        "--name".as_ref(),
        "fleet".as_ref(),
        pa.as_os_str(),
        pb.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let merged = Profile::from_path(&out_path).unwrap();
    let a = Profile::from_path(&pa).unwrap();
    let b = Profile::from_path(&pb).unwrap();
    assert_eq!(
        merged,
        Profile::merge("fleet", &[a.clone(), b.clone()]).unwrap()
    );

    // Independent of the library's merge: counts add up per stage, stages in order of first
    // appearance.
    let keys: Vec<String> = merged.stages.iter().map(|s| s.key()).collect();
    let want: Vec<String> = a
        .stages
        .iter()
        .map(|s| s.key())
        .chain(std::iter::once("stage_batch".to_string()))
        .collect();
    assert_eq!(keys, want);
    for s in &merged.stages {
        let count = |p: &Profile| p.stage(&s.key()).map_or(0, |x| x.count);
        assert_eq!(s.count, count(&a) + count(&b), "{}", s.key());
    }
    assert_eq!(merged.meta.name, "fleet");

    // Without --name, the first input's name.
    let out_path = d.join("unnamed.json");
    let out = laptime([
        "merge".as_ref(),
        "-o".as_ref(),
        out_path.as_os_str(),
        pa.as_os_str(),
        pb.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(Profile::from_path(&out_path).unwrap().meta.name, "host-a");
}

#[test]
fn bad_merge_inputs_exit_2() {
    let d = dir("bad_merge_inputs_exit_2");
    let specs = tick_specs();
    let a = write(&d, "a.json", &synthetic("a", &specs, 1));
    let out_path = d.join("out.json");
    let merge = |inputs: &[&std::path::Path]| {
        let mut args = vec![
            "merge".to_string(),
            "-o".into(),
            out_path.display().to_string(),
        ];
        args.extend(inputs.iter().map(|p| p.display().to_string()));
        laptime(args)
    };

    // A missing input: its path in the one-line message.
    let missing = d.join("missing.json");
    let out = merge(&[&a, &missing]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "laptime: error: input profile file {}: ",
            missing.display()
        )),
        "{err}"
    );

    // Inputs of different precision cannot be merged.
    let coarse = common::profile(
        "coarse",
        2,
        specs.iter().map(|s| common::stage(s, 2, 2)).collect(),
    );
    let coarse = write(&d, "coarse.json", &coarse);
    let out = merge(&[&a, &coarse]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("laptime: error: cannot merge profiles: "),
        "{}",
        stderr(&out)
    );

    // A stage without a histogram cannot be merged.
    let mut bare = synthetic("bare", &specs, 3);
    bare.stages[0].histogram = None;
    let bare = write(&d, "bare.json", &bare);
    let out = merge(&[&a, &bare]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot merge"), "{}", stderr(&out));

    // Not JSON at all.
    let junk = d.join("junk.json");
    std::fs::write(&junk, "HISTFAAA not json").unwrap();
    let out = merge(&[&a, &junk]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&junk.display().to_string()),
        "{}",
        stderr(&out)
    );

    // An output that cannot be written: its parent is a file.
    let unwritable = a.join("out.json");
    let out = laptime([
        "merge".as_ref(),
        "-o".as_ref(),
        unwritable.as_os_str(),
        a.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(&format!(
            "laptime: error: cannot write {}: ",
            unwritable.display()
        )),
        "{}",
        stderr(&out)
    );

    // No input at all: a usage error.
    let out = laptime(["merge", "-o", "x.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out_path.exists(), "nothing written after failures");
}
