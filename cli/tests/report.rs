//! `laptime report` and `laptime::report`: the HTML file's structure and escaping, the SVG and PNG
//! images, and the errors.

mod common;

use common::{Spec, dir, laptime, stderr, synthetic, tick_specs, write};
use laptime::profile::Profile;

/// A stage name and a label value an attacker could put in a profile file.
const HOSTILE: &str = "<script>alert(1)</script>";

fn hostile_profile(name: &str, seed: u64) -> Profile {
    let mut specs = tick_specs();
    specs.push(Spec {
        labels: vec![("api", "\"><img src=x onerror=alert(2)>&amp;")],
        ..Spec::new(HOSTILE, 10_000.0, 0.4)
    });
    synthetic(name, &specs, seed)
}

fn parse_html(html: &str) -> roxmltree::Document<'_> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(html, opts)
        .unwrap_or_else(|e| panic!("the report is not well-formed: {e}"))
}

/// One plot per stage (the union of both profiles), the whole file well-formed, hostile names
/// shown as text and never as markup, nothing to fetch and no script.
#[test]
fn html_has_one_plot_per_stage_and_escapes_names() {
    let mut base = hostile_profile("base", 1);
    base.stages.push(common::stage(
        &Spec::new("stage_removed", 5_000.0, 0.3),
        1,
        3,
    ));
    let cur = hostile_profile("cur <b>bold</b>", 2);
    let html = laptime::report::html(&cur, Some(&base)).unwrap();
    assert!(!html.contains("<script"), "a raw <script> tag");
    assert!(!html.contains("<img"), "a raw <img> tag");
    assert!(
        !html.contains("<b>bold"),
        "a raw <b> tag from the profile name"
    );

    let doc = parse_html(&html);
    let elements: Vec<roxmltree::Node> = doc.descendants().filter(|n| n.is_element()).collect();
    let named = |tag: &str| {
        elements
            .iter()
            .filter(|n| n.tag_name().name() == tag)
            .count()
    };
    assert_eq!(named("script"), 0);
    assert_eq!(named("img"), 0);
    // 5 current stages + 1 removed one.
    assert_eq!(named("svg"), 6);
    let sections: Vec<&roxmltree::Node> = elements
        .iter()
        .filter(|n| n.tag_name().name() == "section")
        .collect();
    assert_eq!(sections.len(), 6);
    let headings: Vec<&str> = sections
        .iter()
        .map(|s| {
            s.children()
                .find(|c| c.has_tag_name("h3"))
                .unwrap()
                .text()
                .unwrap()
        })
        .collect();
    assert_eq!(
        headings,
        [
            "tick_total",
            "stage_fetch_md",
            "stage_spread",
            "exchange_req{api=\"batch-cancel\",verb=\"post\"}",
            "<script>alert(1)</script>{api=\"\\\"><img src=x onerror=alert(2)>&amp;\"}",
            "stage_removed",
        ]
    );
    // Each plot has both curves' legends, taken from the (escaped) profile names.
    for s in &sections[..5] {
        let texts: Vec<&str> = s
            .descendants()
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        assert!(texts.contains(&"baseline: base"), "{texts:?}");
        assert!(texts.contains(&"current: cur <b>bold</b>"), "{texts:?}");
    }
    // The stats table: a header row and one row per stage.
    let rows = elements.iter().filter(|n| n.has_tag_name("tr")).count();
    assert_eq!(rows, 1 + 6);
    // Self-contained: no external resources.
    for n in &elements {
        for a in n.attributes() {
            assert!(
                !matches!(a.name(), "src" | "href") || a.value().starts_with('#'),
                "external reference {}={}",
                a.name(),
                a.value()
            );
        }
    }
}

/// The table shows the current figure, the baseline's and the change.
#[test]
fn html_table_shows_baseline_and_change() {
    let spec = Spec::new("tick_total", 420_000.0, 0.35);
    let base = synthetic("base", std::slice::from_ref(&spec), 1);
    let cur = synthetic("cur", &[Spec { scale: 1.5, ..spec }], 1);
    let (b, c) = (&base.stages[0], &cur.stages[0]);
    let html = laptime::report::html(&cur, Some(&base)).unwrap();
    let change = 100.0 * (c.p99_ns as f64 - b.p99_ns as f64) / b.p99_ns as f64;
    let want = format!(
        "<td>{}<span class=\"base\">{} <span class=\"up\">{change:+.1}&#8239;%</span></span></td>",
        laptime::report::format_ns(c.p99_ns),
        laptime::report::format_ns(b.p99_ns),
    );
    assert!(html.contains(&want), "no {want} in the table");
    assert!((change - 50.0).abs() < 0.5, "{change}");
    // Without a baseline there is no baseline figure at all.
    let alone = laptime::report::html(&cur, None).unwrap();
    assert!(!alone.contains("class=\"base\""));
    assert_eq!(
        parse_html(&alone)
            .descendants()
            .filter(|n| n.has_tag_name("svg"))
            .count(),
        1
    );
}

/// A hand-written stage without a histogram is drawn through its summary percentiles.
#[test]
fn stage_without_histogram_is_drawn() {
    let mut p = synthetic("p", &tick_specs()[..1], 1);
    p.stages[0].histogram = None;
    let svg = laptime::report::svg(&p, None, None).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let polylines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .count();
    assert!(polylines >= 1, "{svg}");
}

/// SVG and PNG through the binary: a grid of every stage, or one stage.
#[test]
fn svg_and_png_outputs() {
    let d = dir("svg_and_png_outputs");
    let specs = tick_specs();
    let cur = write(&d, "cur.json", &hostile_profile("cur", 2));
    let base = write(&d, "base.json", &synthetic("base", &specs, 1));

    let svg = d.join("all.svg");
    let out = laptime([
        "report".as_ref(),
        cur.as_os_str(),
        "--baseline".as_ref(),
        base.as_os_str(),
        "-o".as_ref(),
        svg.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    // 5 stages in 2 columns of 720 × 420 cells.
    assert_eq!(root.attribute("width"), Some("1440"));
    assert_eq!(root.attribute("height"), Some("1260"));
    let texts: Vec<&str> = doc
        .descendants()
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    assert!(texts.contains(&"stage_fetch_md"));
    assert!(
        texts.iter().any(|t| t.starts_with(HOSTILE)),
        "the hostile caption, as text"
    );

    let png = d.join("all.png");
    let out = laptime([
        "report".as_ref(),
        cur.as_os_str(),
        "--baseline".as_ref(),
        base.as_os_str(),
        "-o".as_ref(),
        png.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1440, 1260));
    // Drawn, not blank: the curves' colours are there.
    let blue = img.pixels().filter(|p| p.0 == [31, 119, 180]).count();
    let orange = img.pixels().filter(|p| p.0 == [230, 85, 13]).count();
    assert!(blue > 1000 && orange > 1000, "blue {blue}, orange {orange}");

    let one = d.join("one.png");
    let out = laptime([
        "report".as_ref(),
        cur.as_os_str(),
        "-o".as_ref(),
        one.as_os_str(),
        "--stage".as_ref(),
        "exchange_req{api=\"batch-cancel\",verb=\"post\"}".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let img = image::open(&one).unwrap();
    assert_eq!((img.width(), img.height()), (720, 420));
}

/// Bad arguments and inputs exit 2 with a message that says what to change.
#[test]
fn report_errors_exit_2() {
    let d = dir("report_errors_exit_2");
    let cur = write(&d, "cur.json", &synthetic("cur", &tick_specs()[..2], 1));
    let run = |out: &str, extra: &[&str]| {
        let mut args = vec!["report".to_string(), cur.display().to_string()];
        args.extend(["-o".to_string(), d.join(out).display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        laptime(args)
    };

    let out = run("x.pdf", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown output format; name the file .html, .svg or .png"));

    let out = run("x.svg", &["--stage", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "laptime: error: no stage \"nope\" in the profiles; pass one of: tick_total, \
         stage_fetch_md\n"
    );

    let out = run("x.html", &["--baseline", "/nonexistent/base.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("laptime: error: baseline profile file /nonexistent/base.json: "),
        "{}",
        stderr(&out)
    );

    // Under a regular file: no directory can be made there. (A missing directory is created,
    // by the write rule every output shares.)
    let out = run("cur.json/x.png", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cur.json/x.png"), "{}", stderr(&out));
}

/// PNG text needs a font: a `LAPTIME_FONT` that names no file is an error, not a fallback.
#[test]
fn png_font_override_must_exist() {
    let d = dir("png_font_override_must_exist");
    let cur = write(&d, "cur.json", &synthetic("cur", &tick_specs()[..1], 1));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_laptime"))
        .args([
            "report".as_ref(),
            cur.as_os_str(),
            "-o".as_ref(),
            d.join("x.png").as_os_str(),
        ])
        .env("LAPTIME_FONT", "/nonexistent/font.ttf")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "laptime: error: font /nonexistent/font.ttf: LAPTIME_FONT names no such file; point \
         LAPTIME_FONT at a readable .ttf or .otf file\n"
    );
    assert!(!d.join("x.png").exists());
}

/// `--stage` takes a stage's key or, when only one stage has it, its name alone; a name several
/// stages share is refused, listing their keys.
#[test]
fn stage_by_key_or_unique_name() {
    let labelled = |api: &'static str| Spec {
        labels: vec![("verb", "post"), ("api", api)],
        n: 500,
        ..Spec::new("exchange_req", 90_000.0, 0.45)
    };
    let one = synthetic(
        "one",
        &[
            Spec {
                n: 500,
                ..Spec::new("tick_total", 420_000.0, 0.35)
            },
            labelled("batch-orders"),
        ],
        1,
    );
    let key = "exchange_req{api=\"batch-orders\",verb=\"post\"}";
    let by_key = laptime::report::svg(&one, None, Some(key)).unwrap();
    let by_name = laptime::report::svg(&one, None, Some("exchange_req")).unwrap();
    assert_eq!(
        by_name, by_key,
        "the name alone picks the only stage of that name"
    );
    assert!(by_key.contains("batch-orders"), "its caption is the key");
    assert!(!by_key.contains("tick_total"));

    let two = synthetic(
        "two",
        &[labelled("batch-orders"), labelled("batch-cancel")],
        1,
    );
    let e = laptime::report::svg(&two, None, Some("exchange_req")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"exchange_req\" names 2 stages; pass one of their keys: \
         exchange_req{api=\"batch-orders\",verb=\"post\"}, \
         exchange_req{api=\"batch-cancel\",verb=\"post\"}"
    );

    let d = dir("stage_by_key_or_unique_name");
    let path = write(&d, "two.json", &two);
    let out = laptime([
        "report".as_ref(),
        path.as_os_str(),
        "-o".as_ref(),
        d.join("x.svg").as_os_str(),
        "--stage".as_ref(),
        "exchange_req".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("laptime: error: \"exchange_req\" names 2 stages"),
        "{}",
        stderr(&out)
    );
}

/// More stages than one image holds: a typed error that says what to do, exit 2, nothing
/// written; one of them by `--stage`, or the HTML report, still works.
#[test]
fn too_many_stages_for_one_image_exit_2() {
    let many = common::profile(
        "many",
        2,
        (0..65)
            .map(|i| {
                common::stage_from_values(
                    &format!("stage_{i:02}"),
                    &[],
                    &[1_000, 2_000, 3_000],
                    2,
                    None,
                )
            })
            .collect(),
    );
    let e = laptime::report::svg(&many, None, None).unwrap_err();
    assert!(
        matches!(
            e,
            laptime::report::ReportError::TooManyStages {
                stages: 65,
                limit: 64
            }
        ),
        "{e:?}"
    );
    assert_eq!(laptime::report::MAX_IMAGE_STAGES, 64);

    let d = dir("too_many_stages_for_one_image_exit_2");
    let path = write(&d, "many.json", &many);
    for ext in ["svg", "png"] {
        let output = d.join(format!("many.{ext}"));
        let out = laptime([
            "report".as_ref(),
            path.as_os_str(),
            "-o".as_ref(),
            output.as_os_str(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{ext}");
        assert_eq!(
            stderr(&out),
            "laptime: error: 65 stages are too many for one image (at most 64): pass --stage NAME \
             to draw one, or use the HTML report (-o report.html), which draws each on its own\n"
        );
        assert!(!output.exists(), "{ext}: nothing written");
    }
    let one = d.join("one.svg");
    let out = laptime([
        "report".as_ref(),
        path.as_os_str(),
        "-o".as_ref(),
        one.as_os_str(),
        "--stage".as_ref(),
        "stage_64".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(one.exists());
}

/// A profile whose tick stage was corrected for coordinated omission (every 100th span a 5 ms
/// stall, 1 ms interval), with the corrected figures computed from the values.
fn corrected_profile(name: &str, seed: u64) -> Profile {
    use laptime::profile::{CorrectedCounts, CorrectedProfile, Histogram};
    let mut p = synthetic(name, &tick_specs(), seed);
    let mut raw = common::lognormal_values(&tick_specs()[0], seed);
    for v in raw.iter_mut().step_by(100) {
        *v = 5_000_000;
    }
    let mut all = raw.clone();
    for &v in &raw {
        // HdrHistogram's loop: v − i, v − 2i, … down to i.
        let mut missing = v.saturating_sub(1_000_000);
        while missing >= 1_000_000 {
            all.push(missing);
            missing -= 1_000_000;
        }
    }
    let mut h = Histogram::new_with_bounds(1, common::HIGHEST_NS, 3).unwrap();
    for &v in &all {
        h.record(v).unwrap();
    }
    let mut stage = common::stage_from_values("tick_total", &[], &raw, 3, None);
    stage.corrected = Some(
        CorrectedProfile::from_histogram(
            &h,
            CorrectedCounts {
                expected_interval_ns: 1_000_000,
                min_ns: *all.iter().min().unwrap(),
                max_ns: *all.iter().max().unwrap(),
                sum_ns: all.iter().sum(),
                synthesized: (all.len() - raw.len()) as u64,
                truncated: 0,
                saturated: 0,
            },
        )
        .unwrap(),
    );
    p.stages[0] = stage;
    p
}

/// The CO columns appear when a stage is corrected, with its corrected figures (and the
/// baseline's beside them); the plot gets a dashed corrected curve in the profile's colour and a
/// legend entry for it. Without correction, neither.
#[test]
fn corrected_figures_get_columns_and_a_dashed_curve() {
    let (base, cur) = (corrected_profile("base", 1), corrected_profile("cur", 2));
    let html = laptime::report::html(&cur, Some(&base)).unwrap();
    parse_html(&html);
    assert!(html.contains("<th>CO p99</th>"), "no CO column");
    let (b, c) = (
        base.stages[0].corrected.as_ref().unwrap(),
        cur.stages[0].corrected.as_ref().unwrap(),
    );
    let change = 100.0 * (c.p99_ns as f64 - b.p99_ns as f64) / b.p99_ns as f64;
    let class = if change > 0.05 {
        "up"
    } else if change < -0.05 {
        "down"
    } else {
        ""
    };
    let want = format!(
        "<td>{}<span class=\"base\">{} <span class=\"{class}\">{change:+.1}&#8239;%</span></span></td>",
        laptime::report::format_ns(c.p99_ns),
        laptime::report::format_ns(b.p99_ns),
    );
    assert!(html.contains(&want), "no {want} in the table");
    assert!(html.contains(&format!("1.00ms, +{} added", c.synthesized)));
    // Uncorrected stages show dashes in the CO columns.
    assert!(html.contains("<td>–</td>"));

    let svg = laptime::report::svg(&cur, Some(&base), Some("tick_total")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts: Vec<&str> = doc
        .descendants()
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for legend in [
        "baseline: base, CO-corrected (1.00ms interval)",
        "current: cur, CO-corrected (1.00ms interval)",
    ] {
        assert!(texts.contains(&legend), "{texts:?}");
    }
    // A plain curve is one polyline in its colour (and its legend one more); a dashed one is a
    // polyline per dash.
    let polylines = |svg: &str, colour: &str| {
        roxmltree::Document::parse(svg)
            .unwrap()
            .descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(colour))
            .count()
    };
    assert!(polylines(&svg, "#1F77B4") > 20, "current's dashed curve");
    assert!(polylines(&svg, "#E6550D") > 20, "baseline's dashed curve");

    let plain = synthetic("plain", &tick_specs(), 1);
    let html = laptime::report::html(&plain, None).unwrap();
    assert!(!html.contains("CO p99"));
    let svg = laptime::report::svg(&plain, None, Some("tick_total")).unwrap();
    assert!(!svg.contains("CO-corrected"));
    assert_eq!(
        polylines(&svg, "#1F77B4"),
        2,
        "the curve and its legend line"
    );
}

/// An HTML report of more stages than it shows keeps the ones with the highest p99, in their
/// order, and says how many it left out (a report of 20 000 stages was a 209 MB file).
#[test]
fn html_report_keeps_the_highest_p99_stages_and_says_what_it_left_out() {
    let d = dir("html_report_bounded");
    let stages = (0..250u64)
        .map(|i| {
            let name = format!("s{i:03}");
            common::stage_from_values(&name, &[], &[1_000 + 10 * i, 2_000 + 10 * i], 3, None)
        })
        .collect();
    let p = write(&d, "p.json", &common::profile("many", 3, stages));
    let html_path = d.join("r.html");
    let run = |extra: &[&str]| {
        let mut args = vec![p.as_os_str(), "-o".as_ref(), html_path.as_os_str()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        laptime(std::iter::once("report".as_ref()).chain(args))
    };
    let out = run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert_eq!(html.matches("<section class=\"plot\">").count(), 200);
    assert!(
        html.contains(
            "50 of 250 stages left out</b>: this report shows the 200 with the highest p99"
        )
    );
    assert!(html.contains("<h3>s050</h3>") && html.contains("<h3>s249</h3>"));
    assert!(!html.contains("<h3>s049</h3>") && !html.contains(">s049<"));
    let (first, last) = (html.find(">s050<").unwrap(), html.find(">s249<").unwrap());
    assert!(first < last, "the stages keep their order");

    let out = run(&["--max-stages", "250"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert_eq!(html.matches("<section class=\"plot\">").count(), 250);
    assert!(!html.contains("left out"));

    for bad in [&["--max-stages=0"][..], &["--max-stages", "-1"]] {
        let out = run(bad);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("invalid value") && stderr(&out).contains("--max-stages"),
            "{}",
            stderr(&out)
        );
    }
}
