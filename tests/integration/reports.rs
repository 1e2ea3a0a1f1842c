//! The reports of a real run: summary.md reads as an ADR section, and report.html renders in a
//! real headless browser (Debian's chromium; `scripts/services test-tools` installs it), where
//! every chart is laid out with a non-empty box. Needs the real services (`scripts/services up`).

use crate::common;

use std::process::Command;

pub(crate) fn chromium() -> &'static str {
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
pub(crate) fn rendered_dom(file: &std::path::Path) -> String {
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

pub(crate) fn attribute(dom: &str, name: &str) -> Option<u64> {
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

fn committed_schema() -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("reports/schema/result.v1.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the committed schema"))
        .expect("the schema is JSON")
}

/// result.json of a real run with faults validates against the committed JSON Schema, and the
/// checker catches a result that breaks the contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn result_json_follows_the_committed_schema() {
    let (outcome, _dir) = common::run(&[
        "--strategy",
        "dual-redis-first",
        "--redis-client",
        "fred",
        "--trades",
        "400",
        "--rate",
        "0",
        "--partitions",
        "1",
        "--crash-at",
        "after-redis-done",
        "--crash-trades",
        "100",
        "--restart-delay-ms",
        "100",
    ])
    .await;
    let schema = committed_schema();
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(outcome.dir.join("result.json")).unwrap())
            .unwrap();
    assert_eq!(
        common::schema::violations(&schema, &result),
        Vec::<String>::new()
    );
    assert_eq!(result["faults"]["log"][0]["point"], "after-redis-done");

    let mut broken = result.clone();
    broken["correctness"]
        .as_object_mut()
        .unwrap()
        .remove("lost");
    broken["status"] = "finished".into();
    broken["latency_us"]["end_to_end_from_intended"]["p99"] = "fast".into();
    let found = common::schema::violations(&schema, &broken);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(
        common::schema::undocumented(&schema, &result),
        Vec::<String>::new()
    );
}

/// The hand-kept schema and the one `RunResult` type agree: a committed result read into the
/// type and written back validates, the schema names every field the type writes, and a field
/// the schema does not name is caught.
#[test]
fn the_committed_schema_describes_every_field_the_result_type_writes() {
    let schema = committed_schema();
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("reports/adr/claims/11-crash-after-claim-redis-only-redis-rs/result.json");
    let result = idembench::results::RunResult::read(&committed).unwrap();
    let written = serde_json::to_value(&result).unwrap();
    assert_eq!(
        common::schema::violations(&schema, &written),
        Vec::<String>::new()
    );
    assert_eq!(
        common::schema::undocumented(&schema, &written),
        Vec::<String>::new()
    );
    let mut extra = written.clone();
    extra["correctness"]["lost_twice"] = 1.into();
    assert_eq!(
        common::schema::undocumented(&schema, &extra),
        vec!["/correctness/lost_twice: written by RunResult, not in the schema".to_string()]
    );
}

/// Two instances at once (as on two hosts), then `merge`: counts add up, histograms merge, and
/// the merged directory gets its reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_simultaneous_runs_merge_into_one_result() {
    let dir = tempfile::tempdir().unwrap();
    let args = |seed: &'static str| {
        [
            "--strategy",
            "db-only",
            "--trades",
            "800",
            "--rate",
            "400",
            "--seed",
            seed,
        ]
    };
    let (args_a, args_b) = (args("51"), args("52"));
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let (a, b) = tokio::join!(
        common::try_run(&args_a, &dir_a),
        common::try_run(&args_b, &dir_b),
    );
    let (a, b) = (a.expect("run a"), b.expect("run b"));
    let out = dir.path().join("merged");
    let merged = idembench::results::merge::merge_into(&[a.dir.clone(), b.dir.clone()], &out)
        .expect("merge");
    // `idembench merge` renders the reports from the merged result.json, as `report` would.
    idembench::report::rerender(&out).expect("reports of the merged result");
    let sum = |f: fn(&idembench::results::RunResult) -> u64| f(&a.result) + f(&b.result);
    assert_eq!(merged.correctness.exactly_once, 1600);
    assert_eq!(
        merged.correctness.duplicates_suppressed,
        sum(|r| r.correctness.duplicates_suppressed)
    );
    assert_eq!(
        merged.latency_us.end_to_end_from_intended.count,
        sum(|r| r.latency_us.end_to_end_from_intended.count)
    );
    assert_eq!(
        merged.latency_us.end_to_end_from_intended.max,
        a.result
            .latency_us
            .end_to_end_from_intended
            .max
            .max(b.result.latency_us.end_to_end_from_intended.max)
    );
    for file in [
        "result.json",
        "summary.md",
        "report.html",
        "end_to_end_from_intended.hgrm",
    ] {
        assert!(out.join(file).exists(), "{file}");
    }
    assert_eq!(
        common::schema::violations(&committed_schema(), &serde_json::to_value(&merged).unwrap()),
        Vec::<String>::new(),
        "a merged result keeps the contract"
    );
    assert!(
        idembench::results::merge::merge_into(&[a.dir.clone(), b.dir.clone()], &out).is_err(),
        "never overwrites"
    );
}
