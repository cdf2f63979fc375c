//! The HTML report in a real browser: headless Chromium renders it (a screenshot that is not
//! blank), its DOM holds the plots, and the page logs nothing to the console.
//!
//! Without Chromium on the PATH the test is skipped with a message, unless `CI` is set: then it
//! fails (CI installs Debian's `chromium`). The screenshot is kept at
//! `target/report-screenshot.png` for docs/profiles.md (`docs/report.png`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Spec, dir, synthetic, tick_specs};

/// Chromium must finish within this; a hung browser fails the test instead of hanging it.
const BROWSER_LIMIT: Duration = Duration::from_secs(120);

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// Runs Chromium headless on `page` with `extra` arguments; returns its stdout and stderr.
fn run_chromium(bin: &Path, work: &Path, page: &Path, extra: &[String]) -> (String, String) {
    let (out, err) = (work.join("stdout.txt"), work.join("stderr.txt"));
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--user-data-dir={}",
            work.join("profile").display()
        ))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("chromium starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BROWSER_LIMIT {
            let _ = child.kill();
            panic!("chromium did not finish within {BROWSER_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
    );
    assert!(status.success(), "chromium failed: {status}\n{err}");
    (out, err)
}

/// The page's console messages in Chromium's log (`…:INFO:CONSOLE:…] "message", source: …`).
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

#[test]
fn report_renders_in_chromium() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but chromium is not on the PATH (Debian: apt-get install chromium)"
        );
        eprintln!("SKIPPED: chromium is not on the PATH (Debian: apt-get install chromium)");
        return;
    };
    let work = dir("report_renders_in_chromium");

    // The console check must be able to see an error: a page with one.
    let bad = work.join("bad.html");
    std::fs::write(
        &bad,
        "<!DOCTYPE html><p>x</p><script>console.error('boom')</script>",
    )
    .unwrap();
    let (_, err) = run_chromium(&bin, &work, &bad, &["--dump-dom".into()]);
    assert!(
        console_lines(&err).iter().any(|l| l.contains("boom")),
        "chromium's log format changed: no console line for a page that logs an error\n{err}"
    );

    // A report like a CI run's: one stage slower, one with deadline misses, one stage added.
    let mut specs = tick_specs();
    specs[0].deadline = Some((1_000_000, 120));
    let base = synthetic("main@a0c8129", &specs, 1);
    specs[0].deadline = Some((1_000_000, 410));
    specs[1].scale = 1.10;
    specs.push(Spec::new("stage_batch", 60_000.0, 0.3));
    let cur = synthetic("canary@5f3e2d1", &specs, 2);
    let html = laptime::report::html(&cur, Some(&base)).unwrap();
    let page = work.join("report.html");
    std::fs::write(&page, &html).unwrap();

    let (dom, err) = run_chromium(&bin, &work, &page, &["--dump-dom".into()]);
    assert_eq!(
        console_lines(&err),
        Vec::<&str>::new(),
        "the page logged to the console"
    );
    assert_eq!(
        dom.matches("<svg").count(),
        specs.len(),
        "one plot per stage in the DOM"
    );
    assert_eq!(dom.matches("<section class=\"plot\">").count(), specs.len());
    assert!(dom.contains("<title>laptime report: canary@5f3e2d1</title>"));
    assert!(dom.contains("<polyline"), "the curves are in the DOM");

    let shot = work.join("report.png");
    let (_, err) = run_chromium(
        &bin,
        &work,
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2400".into(),
        ],
    );
    assert_eq!(
        console_lines(&err),
        Vec::<&str>::new(),
        "the page logged to the console"
    );
    let img = image::open(&shot).expect("chromium wrote a PNG").to_rgb8();
    assert_eq!(img.dimensions(), (1280, 2400));
    // Not blank: the luminance varies, and both curves' colours are on screen.
    let lum: Vec<f64> = img
        .pixels()
        .map(|p| 0.299 * f64::from(p.0[0]) + 0.587 * f64::from(p.0[1]) + 0.114 * f64::from(p.0[2]))
        .collect();
    let mean = lum.iter().sum::<f64>() / lum.len() as f64;
    let variance = lum.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / lum.len() as f64;
    assert!(
        variance > 100.0,
        "a blank screenshot: luminance variance {variance}"
    );
    let near = |p: &image::Rgb<u8>, c: [u8; 3]| p.0.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 24);
    let blue = img.pixels().filter(|p| near(p, [31, 119, 180])).count();
    let orange = img.pixels().filter(|p| near(p, [230, 85, 13])).count();
    assert!(
        blue > 500 && orange > 500,
        "curves not visible: blue {blue}, orange {orange}"
    );

    let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/report-screenshot.png");
    std::fs::create_dir_all(keep.parent().unwrap()).unwrap();
    std::fs::copy(&shot, &keep).unwrap();
    eprintln!("screenshot: {}", keep.display());
}
