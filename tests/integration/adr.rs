//! `idembench adr` as a user runs it (the binary, on the services of `scripts/services up`),
//! small: two claims × two strategies, two repetitions of a two-probe capacity search and of a
//! fixed-rate run. adr.json follows its committed schema, the grid says what the audit found,
//! every linked file exists, and report.html's grid and charts are laid out in chromium on the
//! first screen, which the test saves as a screenshot for a person to look at.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::schema;
use crate::reports::{attribute, chromium, rendered_dom};

fn committed_schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/schema/adr.v1.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the committed schema"))
        .expect("the schema is JSON")
}

#[test]
fn adr_writes_a_grid_a_cost_suite_and_a_first_screen_that_answers() {
    let out = tempfile::tempdir().expect("temp dir");
    let dir = out.path().join("adr");
    let claims = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/adr-claims.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_idembench"))
        .args(["adr", "--scenario"])
        .arg(&claims)
        .args([
            "--strategies",
            "redis-only,db-only",
            "--repetitions",
            "2",
            "--probes",
            "2",
            "--duration-s",
            "4",
            "--min-rate",
            "100",
            "--max-rate",
            "400",
            "--latency-duration-s",
            "4",
            "--latency-warm-up-ms",
            "1000",
            "--stack",
            "external",
            "--quiet",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("idembench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "idembench adr failed ({}); is `scripts/services up` running?\n{stderr}",
        output.status
    );

    let text = std::fs::read_to_string(dir.join("adr.json")).expect("adr.json");
    let adr: Value = serde_json::from_str(&text).expect("adr.json is JSON");
    let schema = committed_schema();
    assert_eq!(schema::violations(&schema, &adr), Vec::<String>::new());
    assert_eq!(schema::undocumented(&schema, &adr), Vec::<String>::new());
    // The checker catches a shape that breaks the contract.
    let mut broken = adr.clone();
    broken["grid"]["rows"][0]["cells"][0]["verdict"] = "fine".into();
    assert!(!schema::violations(&schema, &broken).is_empty());

    // The grid: one row per claim, a column per strategy, the audit's counts in the cells.
    let typed: idembench::results::adr::Adr = serde_json::from_str(&text).expect("typed");
    let labels: Vec<&str> = typed
        .grid
        .columns
        .iter()
        .map(|c| c.label.as_str())
        .collect();
    assert_eq!(labels, ["redis-only", "db-only"]);
    let words: Vec<Vec<String>> = typed
        .grid
        .rows
        .iter()
        .map(|row| row.cells.iter().map(|c| c.words()).collect())
        .collect();
    // Two crashes after the claim: redis-only skips both redeliveries as in progress.
    assert_eq!(words, [["held", "held"], ["lost 2", "held"]]);
    assert_eq!(
        typed.verdicts[0].sentence,
        "redis-only: refuted 1 of 2 claims — lost 2 in crash-after-claim."
    );
    assert_eq!(
        typed.verdicts[1].sentence,
        "db-only: held every claim (2 of 2)."
    );
    for row in &typed.grid.rows {
        for cell in &row.cells {
            let linked = dir
                .join(cell.result_dir.as_ref().expect("a run"))
                .join("result.json");
            assert!(
                linked.is_file(),
                "{} is linked but missing",
                linked.display()
            );
        }
    }

    // The refuted run's result.json keeps both lost trades' timelines, with the total.
    let refuted = dir
        .join(typed.grid.rows[1].cells[0].result_dir.as_ref().unwrap())
        .join("result.json");
    let run = idembench::results::RunResult::read(&refuted).expect("the refuted run");
    let anomalies = run.anomalies.expect("anomalies");
    assert_eq!(anomalies.total, 2);
    let traced: Vec<(u64, &str)> = anomalies
        .shown
        .iter()
        .map(|a| (a.trade_id, a.ended.as_str()))
        .collect();
    assert_eq!(traced, [(100, "lost"), (200, "lost")]);
    assert!(anomalies.trace_events > 0 && anomalies.trace_dropped == 0);

    // The cost suite: two repetitions of each figure, every median from a file that exists.
    let rate = typed.common_rate_per_second.expect("a common rate");
    assert!(rate > 0.0);
    for cost in &typed.costs {
        assert_eq!(cost.capacity_runs.len(), 2, "{}", cost.label);
        assert_eq!(cost.latency_runs.len(), 2, "{}", cost.label);
        let p99 = &cost.latency_ms["p99"];
        assert_eq!(p99.n, 2);
        assert!(p99.min <= p99.median && p99.median <= p99.max, "{p99:?}");
        assert!(dir.join(&p99.median_source).is_file());
        assert!(cost.cpu_us_per_message["idembench"].median > 0.0);
        if let Some(capacity) = &cost.capacity_per_second {
            // Half the lowest median capacity, rounded down: below each strategy's.
            assert!(rate <= capacity.median / 2.0, "{rate} vs {capacity:?}");
            assert!(dir.join(&capacity.median_source).is_file());
        }
        assert_eq!(cost.projection.trades, 5_000.0 * 604_800.0);
    }
    let (redis_only, db_only) = (&typed.costs[0], &typed.costs[1]);
    let per_key = redis_only
        .redis_bytes_per_key
        .as_ref()
        .expect("redis bytes per key");
    // A DONE mark's key, value and dictionary entry: tens of bytes at least.
    assert!(per_key.median >= 50.0, "{per_key:?}");
    assert_eq!(redis_only.redis_keys_per_trade, Some(1.0));
    assert!(redis_only.projection.redis_bytes.unwrap() > 1e11);
    assert!(!redis_only.postgres_bytes_per_trade.contains_key("inbox"));
    assert!(db_only.redis_bytes_per_key.is_none());
    assert!(db_only.postgres_bytes_per_trade["inbox"].median > 10.0);
    assert!(db_only.projection.postgres_bytes["inbox"] > 1e10);

    // adr.md is an ADR to paste, its numbers links.
    let markdown = std::fs::read_to_string(dir.join("adr.md")).expect("adr.md");
    for needle in [
        "## Context",
        "## Options",
        "## Evidence",
        "## Consequences",
        "## Setup",
        "## Command",
        "[**lost 2**](claims/",
        "](cost/latency/db-only/rep-",
        "](cost/capacity/db-only/rep-",
        "- db-only: held every claim (2 of 2).",
        // How the claim was refuted, from the run's own trace: the claim, the crash, the
        // redelivery that found PROCESSING and was skipped.
        "#### redis-only in crash-after-claim: trade 100 lost",
        "| incarnation 1 | Redis SET NX PX PROCESSING → OK |",
        "| fault | crash at after-claim: the processor dies with everything uncommitted |",
        "| incarnation 2 | Redis GET → PROCESSING |",
        "| incarnation 2 | decided: skipped as in progress (PROCESSING) |",
    ] {
        assert!(
            markdown.contains(needle),
            "adr.md lacks {needle:?}:\n{markdown}"
        );
    }

    // report.html in chromium: both charts laid out, the grid and the verdicts on the first
    // screen of a 1400 × 900 window.
    let html = dir.join("report.html").canonicalize().unwrap();
    let dom = rendered_dom(&html);
    assert_eq!(
        attribute(&dom, "data-charts"),
        Some(2),
        "the cost and latency charts"
    );
    assert_eq!(attribute(&dom, "data-charts-rendered"), Some(2));
    let grid_width = attribute(&dom, "data-grid-width").expect("the grid's box");
    assert!(
        grid_width > 200,
        "the grid is laid out: {grid_width} px wide"
    );
    let bottom = attribute(&dom, "data-verdicts-bottom").expect("the verdicts' box");
    assert!(
        bottom <= 900,
        "the grid, its cost rows and the verdicts end at {bottom} px"
    );
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("adr-first-screen.png");
    let _ = std::fs::remove_file(&screenshot);
    let profile = tempfile::tempdir().expect("temp profile");
    let shot = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,900",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--screenshot={}", screenshot.display()),
        ])
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs");
    assert!(
        shot.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real image"
    );
    eprintln!("first screen of report.html: {}", screenshot.display());

    // `idembench report DIR` renders adr.md and report.html again from adr.json.
    std::fs::remove_file(dir.join("adr.md")).unwrap();
    idembench::report::rerender(&dir).expect("re-render");
    assert_eq!(
        std::fs::read_to_string(dir.join("adr.md")).unwrap(),
        markdown
    );
}
