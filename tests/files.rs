//! The files the library reads and writes (`laptime::fs`): reads stop at a limit whatever the
//! path is (a sparse file, `/dev/zero`, a FIFO fed more than the limit), with an error that says
//! so; writes follow symbolic links, write through character devices and FIFOs without replacing
//! them, keep a replaced file's permissions, and refuse directories and dangling links.
#![cfg(all(unix, feature = "profile", feature = "config"))]

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use laptime::config::{Config, ConfigFileError};
use laptime::profile::{DEFAULT_MAX_BYTES, Profile, ProfileConfig, ProfileError, ProfileMeta};

/// A fresh directory for one test.
fn dir(test: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("laptime-files")
        .join(test);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
}

/// Runs `f` on a thread and waits at most 10 s for it, so a test of a FIFO fails instead of
/// hanging when one side never opens (a thread left blocked ends with the test process).
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10)).ok()
}

fn empty_profile() -> Profile {
    let mut meta = ProfileMeta::new("files", ProfileConfig::new(3, 3_600_000_000_000));
    meta.started_unix_ms = 1_767_225_600_000;
    meta.ended_unix_ms = 1_767_225_600_000;
    Profile::new(meta, Vec::new())
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn is_char_device(path: &str) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

#[test]
fn a_regular_file_past_the_limit_is_refused_before_it_is_read() {
    let d = dir("sparse");
    let path = d.join("huge.json");
    // Sparse: no disk space, no read; the error must come from the length alone.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(DEFAULT_MAX_BYTES + 1)
        .unwrap();
    let e = Profile::from_path(&path).unwrap_err();
    assert!(
        matches!(&e, ProfileError::TooLarge { limit, .. } if *limit == DEFAULT_MAX_BYTES),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "{} is larger than {DEFAULT_MAX_BYTES} bytes; is this a profile?",
            path.display()
        )) && text.contains("--max-input-bytes"),
        "{text}"
    );
    std::fs::File::create(&path)
        .unwrap()
        .set_len(laptime::config::DEFAULT_MAX_BYTES + 1)
        .unwrap();
    let e = Config::from_path(&path).unwrap_err();
    assert!(matches!(e, ConfigFileError::TooLarge { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("is this a laptime configuration file?"),
        "{e}"
    );
}

#[test]
fn a_device_that_never_ends_stops_at_the_limit() {
    let limit = 1 << 20;
    let e = Profile::from_path_with_limit("/dev/zero", limit).unwrap_err();
    assert!(matches!(e, ProfileError::TooLarge { .. }), "{e:?}");
    let e = Config::from_path_with_limit("/dev/zero", limit).unwrap_err();
    assert!(matches!(e, ConfigFileError::TooLarge { .. }), "{e:?}");
}

#[test]
fn a_fifo_fed_past_the_limit_stops_at_the_limit() {
    let d = dir("fifo-read");
    let fifo = d.join("in.json");
    mkfifo(&fifo);
    let limit: u64 = 64 << 10;
    // A writer that offers four times the limit of what could be the start of a profile; the
    // reader stops after limit + 1 bytes, and the writer's next write fails (no reader left).
    let path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mut sent = 0u64;
        let mut chunk = b"{\"format\": \"laptime-profile\", \"meta\": {\"name\": \"".to_vec();
        chunk.resize(4096, b'a');
        while sent < 4 * limit && f.write_all(&chunk).is_ok() {
            sent += chunk.len() as u64;
        }
        sent
    });
    let read = within_10s(move || Profile::from_path_with_limit(&fifo, limit))
        .expect("the read ends by itself");
    assert!(
        matches!(&read, Err(ProfileError::TooLarge { limit: l, .. }) if *l == limit),
        "{read:?}"
    );
    writer.join().unwrap();
}

#[test]
fn an_io_error_says_what_to_check_for_its_kind() {
    let e = ProfileError::Io {
        path: "big.json".into(),
        source: std::io::ErrorKind::OutOfMemory.into(),
    };
    let text = e.to_string();
    assert!(!text.contains("permissions"), "{text}");
    assert!(text.contains("does not fit in memory"), "{text}");
    let missing = Profile::from_path("/nonexistent/laptime.json").unwrap_err();
    assert!(
        missing.to_string().ends_with(": check the path"),
        "{missing}"
    );
    let e = Config::from_path("/nonexistent/laptime.toml").unwrap_err();
    assert!(e.to_string().ends_with(": check the path"), "{e}");
}

#[test]
fn a_profile_read_as_it_streams_equals_one_read_whole() {
    let d = dir("stream");
    let path = d.join("p.json");
    let p = empty_profile();
    p.write(&path).unwrap();
    assert_eq!(Profile::from_path(&path).unwrap(), p);
    // The error of a file that does not parse is the one `from_json` gives (format first).
    std::fs::write(&path, br#"{"format": "other", "unknown": 1}"#).unwrap();
    assert!(matches!(
        Profile::from_path(&path),
        Err(ProfileError::Format { .. })
    ));
    std::fs::write(&path, b"[]").unwrap();
    assert!(matches!(
        Profile::from_path(&path),
        Err(ProfileError::Field { .. })
    ));
}

#[test]
fn a_symlink_is_followed_and_stays_a_link() {
    let d = dir("symlink");
    let target = d.join("real.json");
    std::fs::write(&target, b"old").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = d.join("link.json");
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    let p = empty_profile();
    p.write(&link).unwrap();
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_symlink(), "the link was replaced");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("real.json"));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), p.to_json());
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the replaced file keeps its permissions");
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

/// Only root may give a file away, so elsewhere this checks nothing.
#[test]
fn a_replaced_file_keeps_its_owner_and_mode_bits_when_root_writes_it() {
    use std::os::unix::fs::MetadataExt;
    let d = dir("owner");
    let path = d.join("p.json");
    std::fs::write(&path, b"old").unwrap();
    if std::fs::metadata(&path).unwrap().uid() != 0 {
        return;
    }
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o4750)).unwrap();
    empty_profile().write(&path).unwrap();
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.permissions().mode() & 0o7777),
        (65534, 65534, 0o4750)
    );
}

#[test]
fn a_dangling_symlink_is_refused() {
    let d = dir("dangling");
    let link = d.join("link.json");
    std::os::unix::fs::symlink("missing/real.json", &link).unwrap();
    let e = empty_profile().write(&link).unwrap_err();
    assert!(
        e.to_string().contains("which does not exist") && e.to_string().contains("remove the link"),
        "{e}"
    );
    assert!(is_link(&link));
    assert!(
        !d.join("missing").exists(),
        "nothing created through the link"
    );
}

#[test]
fn a_character_device_is_written_through_not_replaced() {
    let d = dir("device");
    // Through a link, so a regression replaces the link in this directory, never /dev/null.
    let link = d.join("null.json");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    empty_profile().write(&link).unwrap();
    assert!(is_link(&link));
    assert!(is_char_device("/dev/null"));
    // A device that refuses the bytes is an error, not a file put in its place.
    let full = d.join("full.json");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    assert!(empty_profile().write(&full).is_err());
    assert!(is_char_device("/dev/full"));
    assert!(is_link(&full));
}

#[test]
fn a_fifo_is_written_through_to_its_reader() {
    let d = dir("fifo-write");
    let fifo = d.join("out.json");
    mkfifo(&fifo);
    let path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    });
    let path = fifo.clone();
    let written = within_10s(move || empty_profile().write(&path).map_err(|e| e.to_string()));
    assert_eq!(written, Some(Ok(())));
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // The reader got the bytes (if the FIFO had been replaced, it would still wait: the timeout
    // fails the test instead of hanging it).
    let got = within_10s(move || reader.join().unwrap());
    assert_eq!(got, Some(empty_profile().to_json()));
}

#[test]
fn a_directory_is_refused_with_a_clear_error() {
    let d = dir("directory");
    let e = empty_profile().write(&d).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("is a directory: name a regular file"),
        "{text}"
    );
    assert!(d.is_dir());
}
