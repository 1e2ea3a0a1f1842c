//! The reports of a real run: summary.md reads as an ADR section, and report.html renders in a
//! real headless browser (Debian's chromium; `scripts/services test-tools` installs it), where
//! every chart is laid out with a non-empty box. Needs the real services (`scripts/services up`).

mod common;

use std::process::Command;

fn chromium() -> &'static str {
    for candidate in ["chromium", "chromium-browser"] {
        if Command::new(candidate).arg("--version").output().is_ok() {
            return candidate;
        }
    }
    panic!(
        "no chromium on PATH: install it with `scripts/services test-tools` (Debian's chromium)"
    );
}

/// `--dump-dom` prints the DOM after the page's scripts ran.
fn rendered_dom(file: &std::path::Path) -> String {
    let profile = tempfile::tempdir().expect("temp profile");
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
        ])
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 DOM")
}

fn attribute(dom: &str, name: &str) -> Option<u64> {
    let start = dom.find(&format!("{name}=\""))? + name.len() + 2;
    dom[start..].split('"').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_writes_a_summary_and_a_report_that_renders_in_chromium() {
    let (outcome, _dir) = common::run(&[
        "--strategy",
        "redis-only",
        "--trades",
        "1500",
        "--rate",
        "600",
        "--seed",
        "41",
    ])
    .await;
    let dir = &outcome.dir;

    let summary = std::fs::read_to_string(dir.join("summary.md")).expect("summary.md");
    for needle in [
        "## Answer",
        "## Setup",
        "## How it was measured",
        "## Reproduce",
        "| redis-only | redis-rs |",
        "nothing lost or applied twice for redis-only on redis-rs",
    ] {
        assert!(
            summary.contains(needle),
            "summary.md lacks {needle:?}:\n{summary}"
        );
    }

    let html = dir.join("report.html");
    let source = std::fs::read_to_string(&html).expect("report.html");
    assert!(
        !source.contains("<link") && !source.contains("src=\"http"),
        "self-contained: no external resource"
    );
    let dom = rendered_dom(&html.canonicalize().unwrap());
    let charts = attribute(&dom, "data-charts").expect("data-charts on <body>");
    assert!(
        charts >= 3,
        "latency, throughput and correctness charts: {charts}"
    );
    assert_eq!(
        attribute(&dom, "data-charts-rendered"),
        Some(charts),
        "every chart laid out with a non-empty box in chromium"
    );
    assert!(dom.contains("<polyline"), "the latency curve is drawn");

    // `idembench report DIR` renders the same files again from result.json alone.
    std::fs::remove_file(dir.join("summary.md")).unwrap();
    let runs = idembench::report::rerender(dir).expect("re-render");
    assert_eq!(runs, 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("summary.md")).unwrap(),
        summary
    );
}
