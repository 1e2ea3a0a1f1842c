//! The ADR's three files, from an [`Adr`] and the `result.json` files it links to:
//! `adr.json`, `adr.md` (an ADR to paste: context, options, evidence, consequences; every
//! number a link to the file it came from) and `report.html` (the verdict grid with each
//! strategy's cost under it on the first screen; then the cost-against-correctness chart and
//! the fixed-rate latency curves).

use std::fmt::Write;
use std::path::Path;

use super::svg::{self, Series, escape};
use crate::results::adr::{Adr, Cell, CellVerdict, Spread, StrategyCost, bytes, count};
use crate::strategy::StrategyKind;

/// Writes adr.json, adr.md and report.html into `dir`.
pub fn write(dir: &Path, adr: &Adr) -> std::io::Result<()> {
    std::fs::write(
        dir.join("adr.json"),
        serde_json::to_string_pretty(adr).map_err(std::io::Error::from)? + "\n",
    )?;
    let stories = stories(dir, adr);
    std::fs::write(dir.join("adr.md"), markdown(adr, &stories))?;
    std::fs::write(
        dir.join("report.html"),
        html(adr, &curves(dir, adr), &stories),
    )?;
    Ok(())
}

/// One refuted cell's evidence: the first timeline its run kept.
pub struct Story {
    pub scenario: String,
    pub label: String,
    pub result: String,
    pub anomaly: crate::results::anomalies::Anomaly,
    /// What the run's timelines cannot show, if anything.
    pub note: Option<String>,
}

/// The timeline of one affected trade for every refuted claim of every strategy, read from the
/// claims' result.json files (a run without timelines has no story).
fn stories(dir: &Path, adr: &Adr) -> Vec<Story> {
    let mut stories = Vec::new();
    for row in &adr.grid.rows {
        for (cell, column) in row.cells.iter().zip(&adr.grid.columns) {
            let Some(result_dir) = cell
                .result_dir
                .as_ref()
                .filter(|_| cell.verdict == CellVerdict::Refuted)
            else {
                continue;
            };
            let result = format!("{result_dir}/result.json");
            let Ok(run) = crate::results::RunResult::read(&dir.join(&result)) else {
                continue;
            };
            let Some(anomalies) = run.anomalies else {
                continue;
            };
            if let Some(anomaly) = anomalies.shown.into_iter().next() {
                stories.push(Story {
                    scenario: row.scenario.clone(),
                    label: column.label.clone(),
                    result,
                    anomaly,
                    note: anomalies.note,
                });
            }
        }
    }
    stories
}

/// `idembench report DIR` for a directory holding an adr.json: the Markdown and HTML again.
pub fn rerender(dir: &Path) -> Result<(), super::ReportError> {
    let error = |message: String| super::ReportError {
        path: dir.join("adr.json").display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(dir.join("adr.json")).map_err(|e| error(e.to_string()))?;
    let adr: Adr = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
    let stories = stories(dir, &adr);
    std::fs::write(dir.join("adr.md"), markdown(&adr, &stories))
        .map_err(|e| error(e.to_string()))?;
    std::fs::write(
        dir.join("report.html"),
        html(&adr, &curves(dir, &adr), &stories),
    )
    .map_err(|e| error(e.to_string()))
}

/// The latency-by-percentile curve of each strategy's median-p99 fixed-rate run, read from
/// its result.json (a run whose file is missing has no curve).
fn curves(dir: &Path, adr: &Adr) -> Vec<Series> {
    adr.costs
        .iter()
        .filter_map(|cost| {
            let source = &cost.latency_ms.get("p99")?.median_source;
            let result = crate::results::RunResult::read(&dir.join(source)).ok()?;
            let encoded = result
                .latency_us
                .histograms
                .get("end_to_end_from_intended")?;
            let histogram = crate::hgrm::decode(encoded).ok()?;
            (!histogram.is_empty()).then(|| Series {
                label: cost.label.clone(),
                points: histogram
                    .iter_quantiles(4)
                    .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64))
                    .collect(),
            })
        })
        .collect()
}

fn cost_of<'a>(adr: &'a Adr, strategy: &str, client: &str) -> Option<&'a StrategyCost> {
    adr.costs
        .iter()
        .find(|c| c.strategy == strategy && c.redis_client == client)
        .or_else(|| adr.costs.iter().find(|c| c.strategy == strategy))
}

fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// `median (min–max)`, with the median linked in Markdown.
fn spread_md(spread: &Spread, unit: &str) -> String {
    let median = format!(
        "[{}{unit}]({})",
        number(spread.median),
        spread.median_source
    );
    if spread.n > 1 {
        format!("{median} ({}–{})", number(spread.min), number(spread.max))
    } else {
        median
    }
}

fn spread_html(spread: &Spread, unit: &str) -> String {
    let median = format!(
        "<a href=\"{}\">{}{unit}</a>",
        escape(&spread.median_source),
        number(spread.median)
    );
    if spread.n > 1 {
        format!(
            "{median} <small>({}–{})</small>",
            number(spread.min),
            number(spread.max)
        )
    } else {
        median
    }
}

fn window(adr: &Adr) -> String {
    let ttl = adr.settings.done_ttl_ms;
    let days = ttl as f64 / 86_400_000.0;
    let span = if days >= 1.0 && days.fract() == 0.0 {
        format!("{days:.0} days")
    } else if days >= 1.0 {
        format!("{} days", number(days))
    } else {
        format!("{} h", number(ttl as f64 / 3_600_000.0))
    };
    format!(
        "{span} at {} trades/s",
        number(adr.settings.production_rate)
    )
}

/// CPU µs per message of each service, `redis 210 · postgres 806 · kafka 1156` (medians),
/// the ones with a figure.
fn services_cpu(cost: &StrategyCost) -> Option<String> {
    let parts: Vec<String> = ["redis", "postgres", "kafka"]
        .iter()
        .filter_map(|part| {
            let s = cost.cpu_us_per_message.get(*part)?;
            Some(format!("{part} {}", number(s.median)))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" · "))
}

fn description(strategy: &str) -> String {
    use strum::EnumMessage;
    strategy
        .parse::<StrategyKind>()
        .ok()
        .and_then(|kind| kind.get_documentation())
        .unwrap_or("")
        .replace('\n', " ")
}

fn rate(adr: &Adr) -> String {
    adr.common_rate_per_second
        .map_or_else(|| "-".into(), |r| format!("{r:.0}"))
}

pub fn markdown(adr: &Adr, stories: &[Story]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# ADR: idempotency of the Kafka trade consumer — measured\n"
    );
    let _ = writeln!(
        out,
        "Evidence written by idembench {} on {} in {:.0} min. Every number links to the file it came from.\n",
        adr.idembench_version,
        adr.started_at,
        adr.duration_s / 60.0
    );
    if let Some(reason) = &adr.partial_reason {
        let _ = writeln!(out, "**PARTIAL**: {reason}\n");
    }
    let _ = writeln!(
        out,
        "## Context\n\nKafka delivers at least once, so the consumer that writes trades must be idempotent. \
         The design note argues for Redis-only idempotency and against DB-only and dual Redis+DB; its \
         claims are hypotheses. Each claim below is a scenario of `{}` run against real Kafka, Redis and \
         PostgreSQL; a claim **holds** for a strategy when the audit found no trade lost and none applied \
         twice, and is **refuted** with the exact counts otherwise.\n",
        adr.settings.scenario_file
    );
    out.push_str("## Options\n\n| strategy | what it does |\n|---|---|\n");
    let mut seen = Vec::new();
    for column in &adr.grid.columns {
        if !seen.contains(&column.strategy) {
            seen.push(column.strategy.clone());
            let _ = writeln!(
                out,
                "| {} | {} |",
                column.strategy,
                description(&column.strategy)
            );
        }
    }
    out.push_str("\n## Evidence\n\n### Verdict: which strategy keeps every trade exactly once\n\n");
    let _ = write!(out, "| claim |");
    for column in &adr.grid.columns {
        let _ = write!(out, " {} |", column.label);
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(adr.grid.columns.len()));
    out.push('\n');
    for row in &adr.grid.rows {
        let _ = write!(
            out,
            "| **{}**: {} |",
            row.scenario,
            row.claim.replace('|', "\\|")
        );
        for cell in &row.cells {
            let _ = write!(out, " {} |", cell_md(cell));
        }
        out.push('\n');
    }
    out.push('\n');
    for verdict in &adr.verdicts {
        let _ = writeln!(out, "- {}", verdict.sentence);
    }
    let _ = writeln!(
        out,
        "\nThe matrix behind the grid: [{0}]({0}).\n",
        adr.claims_matrix
    );

    let _ = writeln!(
        out,
        "### Cost: what correctness costs\n\nMedian over {} repetitions (min–max). Capacity: the highest offered rate with end-to-end p99 ≤ {} ms. \
         Latency: end to end from the intended send time to the offset commit, at {} msg/s for every strategy (below each one's capacity), \
         warm-up of {} ms excluded. CPU: µs per message processed, from /proc (idembench: load generator, processor and audit in one process; services: each one the stack started or that reports its CPU, its idle work at this rate included).\n",
        adr.settings.repetitions,
        adr.settings.p99_bound_ms,
        rate(adr),
        adr.settings.latency_warm_up_ms
    );
    out.push_str("| strategy | capacity msg/s | p50 | p99 | p99.9 | CPU µs/msg idembench | CPU µs/msg services | Redis B/key | inbox B/trade |\n|---|---|---|---|---|---|---|---|---|\n");
    for cost in &adr.costs {
        let latency = |p: &str| {
            cost.latency_ms
                .get(p)
                .map_or("-".into(), |s| spread_md(s, " ms"))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cost.label,
            cost.capacity_per_second
                .as_ref()
                .map_or("none sustained".into(), |s| spread_md(s, "")),
            latency("p50"),
            latency("p99"),
            latency("p99.9"),
            cost.cpu_us_per_message
                .get("idembench")
                .map_or("-".into(), |s| spread_md(s, "")),
            services_cpu(cost).unwrap_or_else(|| "-".into()),
            cost.redis_bytes_per_key
                .as_ref()
                .map_or("-".into(), |s| spread_md(s, "")),
            cost.postgres_bytes_per_trade
                .get("inbox")
                .map_or("-".into(), |s| spread_md(s, "")),
        );
    }
    let unmeasured: std::collections::BTreeMap<&String, &String> = adr
        .costs
        .iter()
        .flat_map(|c| c.cpu_unmeasured.iter())
        .collect();
    for (part, why) in unmeasured {
        let _ = writeln!(out, "\nNo CPU figure for {part}: {why}");
    }
    let _ = writeln!(
        out,
        "\n### Projection: the DONE marks for {}\n\n{} trades in the window. Redis holds one key per trade for the TTL (one copy; each replica holds another); the inbox holds a row per trade for at least as long.\n",
        window(adr),
        count(adr.costs.first().map_or(0.0, |c| c.projection.trades))
    );
    out.push_str("| strategy | Redis keys | Redis memory | with one replica | inbox |\n|---|---|---|---|---|\n");
    for cost in &adr.costs {
        let p = &cost.projection;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cost.label,
            p.redis_keys.map_or("-".into(), count),
            p.redis_bytes.map_or("-".into(), bytes),
            p.redis_bytes.map_or("-".into(), |b| bytes(2.0 * b)),
            p.postgres_bytes
                .get("inbox")
                .map_or("-".into(), |b| bytes(*b)),
        );
    }

    if !stories.is_empty() {
        out.push_str("\n### How each claim was refuted: one affected trade\n\n");
        out.push_str("Reconstructed from what the run recorded: each copy a worker received, each Redis command and its reply, the transaction's outcome, the faults.\n");
    }
    for story in stories {
        let a = &story.anomaly;
        let _ = writeln!(
            out,
            "\n#### {} in {}: trade {} {} ([result.json]({}))\n\n{} copies sent, {} effects at the end.{}\n\n| ms | who | what |\n|---|---|---|",
            story.label,
            story.scenario,
            a.trade_id,
            a.ended,
            story.result,
            a.copies_sent,
            a.effects,
            story
                .note
                .as_ref()
                .map_or(String::new(), |n| format!(" ({n})"))
        );
        for step in &a.timeline {
            let _ = writeln!(out, "| {} | {} | {} |", step.t_ms, step.actor, step.what);
        }
    }
    out.push_str("\n## Consequences\n\n");
    for line in consequences(adr) {
        let _ = writeln!(out, "- {line}");
    }
    out.push_str("\n## Setup\n\n");
    for line in &adr.setup {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(out, "\n## Command\n\n```sh\n{}\n```", adr.command);
    out
}

fn cell_md(cell: &Cell) -> String {
    let words = match cell.verdict {
        CellVerdict::Held => cell.words(),
        _ => format!("**{}**", cell.words()),
    };
    match &cell.result_dir {
        Some(dir) => format!("[{words}]({dir}/result.json)"),
        None => words,
    }
}

/// One line per strategy: what choosing it means, from the grid and the cost suite.
fn consequences(adr: &Adr) -> Vec<String> {
    let mut lines = Vec::new();
    for verdict in &adr.verdicts {
        let cost = cost_of(adr, &verdict.strategy, &verdict.redis_client);
        let capacity = cost
            .and_then(|c| c.capacity_per_second.as_ref())
            .map_or("no sustained rate".into(), |s| {
                format!("capacity {} msg/s", number(s.median))
            });
        let p99 = cost
            .and_then(|c| c.latency_ms.get("p99"))
            .map_or(String::new(), |s| {
                format!(", p99 {} ms at {} msg/s", number(s.median), rate(adr))
            });
        let storage = cost.map_or(String::new(), |c| {
            let mut parts = Vec::new();
            if let Some(b) = c.projection.redis_bytes {
                parts.push(format!("{} of Redis", bytes(b)));
            }
            if let Some(b) = c.projection.postgres_bytes.get("inbox") {
                parts.push(format!("{} of inbox", bytes(*b)));
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!("; {} for {}", parts.join(" and "), window(adr))
            }
        });
        let judged = if verdict.held_every_claim {
            "keeps every trade exactly once under every claim's fault".to_string()
        } else {
            let mut harm = Vec::new();
            if verdict.trades_lost > 0 {
                harm.push(format!("{} trades lost", verdict.trades_lost));
            }
            if verdict.trades_doubled > 0 {
                harm.push(format!("{} applied twice", verdict.trades_doubled));
            }
            if harm.is_empty() {
                harm.push("claims it could not be tested on".into());
            }
            format!(
                "accepts {} in {} of {} claims",
                harm.join(" and "),
                verdict.claims_refuted,
                verdict.claims_tested
            )
        };
        lines.push(format!(
            "**{}** {judged}; {capacity}{p99}{storage}.",
            verdict.label
        ));
    }
    lines
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1400px;margin:.6em auto;padding:0 1em;color:#222;font-size:13px}\
h1{font-size:18px;margin:.2em 0}h2{font-size:15px;margin:1.2em 0 .3em}p{margin:.3em 0}\
table{border-collapse:collapse;font-size:12px;margin:.4em 0}th,td{border:1px solid #ccc;padding:2px 5px;text-align:center}\
th{background:#f4f4f4}td.l,th.l{text-align:left}td.held{background:#d9f2d9}td.refuted{background:#f8c9c4;font-weight:bold}\
td.failed,td.not_run{background:#eee;color:#666}tr.cost td{background:#f7f9fc}tr.cost th{text-align:left}\
a{color:inherit}ul{margin:.3em 0}li{margin:.1em 0}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}\
.bad{color:#b00;font-weight:bold}small{color:#555}figure{margin:.6em 0}figcaption{font-size:12px;color:#555}";

pub fn html(adr: &Adr, curves: &[Series], stories: &[Story]) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Which idempotency strategy keeps every trade exactly once, and what does it cost?</h1>\
         <p>Each row is a claim of the design note, run as a fault scenario on real Kafka, Redis and PostgreSQL; \
         each cell the audit's exact count. Under the claims: each strategy's cost (median of {} repetitions; \
         latency at {} msg/s for all).</p>",
        adr.settings.repetitions,
        rate(adr)
    );
    if let Some(reason) = &adr.partial_reason {
        let _ = write!(body, "<p class=\"bad\">PARTIAL: {}</p>", escape(reason));
    }
    body.push_str("<table id=\"grid\"><tr><th class=\"l\">claim</th>");
    for column in &adr.grid.columns {
        let _ = write!(body, "<th>{}</th>", escape(&column.label));
    }
    body.push_str("</tr>");
    for row in &adr.grid.rows {
        let _ = write!(
            body,
            "<tr><td class=\"l\" title=\"{}\"><b>{}</b></td>",
            escape(&row.claim),
            escape(&row.scenario)
        );
        for cell in &row.cells {
            let class = match cell.verdict {
                CellVerdict::Held => "held",
                CellVerdict::Refuted => "refuted",
                CellVerdict::Failed => "failed",
                CellVerdict::NotRun => "not_run",
            };
            let words = escape(&cell.words());
            let title = cell.error.as_deref().map(escape).unwrap_or_default();
            match &cell.result_dir {
                Some(dir) => {
                    let _ = write!(
                        body,
                        "<td class=\"{class}\" title=\"{title}\"><a href=\"{}/result.json\">{words}</a></td>",
                        escape(dir)
                    );
                }
                None => {
                    let _ = write!(body, "<td class=\"{class}\">{words}</td>");
                }
            }
        }
        body.push_str("</tr>");
    }
    let cost_row =
        |body: &mut String, heading: String, figure: &dyn Fn(&StrategyCost) -> String| {
            let _ = write!(body, "<tr class=\"cost\"><th>{}</th>", escape(&heading));
            for column in &adr.grid.columns {
                let cell = cost_of(adr, &column.strategy, &column.redis_client)
                    .map_or("-".to_string(), figure);
                let _ = write!(body, "<td>{cell}</td>");
            }
            body.push_str("</tr>");
        };
    cost_row(
        &mut body,
        format!("capacity, msg/s (p99 ≤ {} ms)", adr.settings.p99_bound_ms),
        &|c| {
            c.capacity_per_second
                .as_ref()
                .map_or("none".into(), |s| spread_html(s, ""))
        },
    );
    cost_row(&mut body, format!("p99 at {} msg/s", rate(adr)), &|c| {
        c.latency_ms
            .get("p99")
            .map_or("-".into(), |s| spread_html(s, " ms"))
    });
    cost_row(&mut body, "CPU µs/msg: idembench".into(), &|c| {
        c.cpu_us_per_message
            .get("idembench")
            .map_or("-".into(), |s| spread_html(s, ""))
    });
    cost_row(&mut body, "CPU µs/msg: services".into(), &|c| {
        services_cpu(c).map_or_else(|| "-".into(), |s| format!("<small>{s}</small>"))
    });
    cost_row(&mut body, format!("Redis for {}", window(adr)), &|c| {
        c.projection.redis_bytes.map_or("-".into(), bytes)
    });
    cost_row(&mut body, "inbox for the same".into(), &|c| {
        c.projection
            .postgres_bytes
            .get("inbox")
            .map_or("-".into(), |b| bytes(*b))
    });
    body.push_str("</table><ul id=\"verdicts\">");
    for verdict in &adr.verdicts {
        let _ = write!(body, "<li>{}</li>", escape(&verdict.sentence));
    }
    body.push_str("</ul>");

    let mut charts = 0;
    let points: Vec<(String, Option<f64>, f64)> = adr
        .verdicts
        .iter()
        .map(|v| {
            let capacity = cost_of(adr, &v.strategy, &v.redis_client)
                .and_then(|c| c.capacity_per_second.as_ref())
                .map(|s| s.median);
            (v.label.clone(), capacity, v.claims_refuted as f64)
        })
        .collect();
    if !points.is_empty() {
        charts += 1;
        let _ = write!(
            body,
            "<h2>Cost against correctness</h2><figure id=\"cost-chart\">{}<figcaption>One point per strategy: median capacity (log axis; a hollow point on the left edge sustained no rate) against the claims it failed. Bottom right is better.</figcaption></figure>",
            svg::scatter(
                "capacity against claims refuted",
                &format!(
                    "capacity, msg/s with p99 ≤ {} ms",
                    adr.settings.p99_bound_ms
                ),
                "claims refuted",
                &points
            )
        );
    }
    if !curves.is_empty() {
        charts += 1;
        let _ = write!(
            body,
            "<h2>Latency at {} msg/s</h2><figure id=\"latency-chart\">{}<figcaption>End-to-end latency (intended send → offset commit) by percentile, the median-p99 repetition of each strategy's fixed-rate runs, warm-up excluded. The claims' runs send bursts and are not latency evidence.</figcaption></figure>",
            rate(adr),
            svg::percentile_curves("latency by percentile at the common rate", curves)
        );
    }
    detail_tables(&mut body, adr);
    if !stories.is_empty() {
        body.push_str("<h2>How each claim was refuted: one affected trade</h2><p>Reconstructed from what the run recorded: each copy a worker received, each Redis command and its reply, the transaction's outcome, the faults.</p>");
    }
    for story in stories {
        let a = &story.anomaly;
        let _ = write!(
            body,
            "<h3 style=\"font-size:13px\">{} in {}: trade {} {} (<a href=\"{}\">result.json</a>)</h3><p>{} copies sent, {} effects at the end.{}</p><table class=\"timeline\"><tr><th>ms</th><th>who</th><th class=\"l\">what</th></tr>",
            escape(&story.label),
            escape(&story.scenario),
            a.trade_id,
            escape(&a.ended),
            escape(&story.result),
            a.copies_sent,
            a.effects,
            story
                .note
                .as_ref()
                .map_or(String::new(), |n| format!(" ({})", escape(n)))
        );
        for step in &a.timeline {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                step.t_ms,
                escape(&step.actor),
                escape(&step.what)
            );
        }
        body.push_str("</table>");
    }
    body.push_str("<h2>Setup</h2><ul>");
    for line in &adr.setup {
        let _ = write!(body, "<li>{}</li>", escape(line));
    }
    let _ = write!(
        body,
        "</ul><h2>Command</h2><pre>{}</pre><p>adr.json has every figure; adr.md is this as an ADR to paste.</p>",
        escape(&adr.command)
    );
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>idembench ADR evidence</title>\
         <style>{STYLE}</style></head><body data-charts=\"{charts}\">{body}\
         <script>(function(){{var n=0;document.querySelectorAll('svg.chart').forEach(function(s){{\
         var b=s.getBBox();if(b.width>0&&b.height>0)n++;}});\
         document.body.setAttribute('data-charts-rendered',String(n));\
         var box=function(id,name){{var e=document.getElementById(id);if(!e)return;var r=e.getBoundingClientRect();\
         document.body.setAttribute('data-'+name+'-width',String(Math.round(r.width)));\
         document.body.setAttribute('data-'+name+'-bottom',String(Math.round(r.bottom)));}};\
         box('grid','grid');box('verdicts','verdicts');}})();</script></body></html>\n"
    )
}

/// Every cost figure with its spread, and the projection.
fn detail_tables(body: &mut String, adr: &Adr) {
    let _ = write!(
        body,
        "<h2>Cost in detail</h2><p>Median (min–max) over {} repetitions; each median links to its file.</p>\
         <table><tr><th class=\"l\">strategy</th><th>capacity msg/s</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th>\
         <th>CPU µs/msg per part</th><th>Redis B/key</th><th>Postgres B/trade per table</th></tr>",
        adr.settings.repetitions
    );
    for cost in &adr.costs {
        let latency = |p: &str| {
            cost.latency_ms
                .get(p)
                .map_or("-".into(), |s| spread_html(s, ""))
        };
        let cpu: Vec<String> = cost
            .cpu_us_per_message
            .iter()
            .map(|(part, s)| format!("{}: {}", escape(part), spread_html(s, "")))
            .collect();
        let tables: Vec<String> = cost
            .postgres_bytes_per_trade
            .iter()
            .map(|(table, s)| format!("{}: {}", escape(table), spread_html(s, "")))
            .collect();
        let _ = write!(
            body,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            escape(&cost.label),
            cost.capacity_per_second
                .as_ref()
                .map_or("none".into(), |s| spread_html(s, "")),
            latency("p50"),
            latency("p99"),
            latency("p99.9"),
            cpu.join("<br>"),
            cost.redis_bytes_per_key
                .as_ref()
                .map_or("-".into(), |s| spread_html(s, "")),
            tables.join("<br>"),
        );
    }
    body.push_str("</table>");
    let _ = write!(
        body,
        "<h2>Projection: {}</h2><p>{} trades in the window; Redis keeps a DONE mark per trade for the TTL (one copy: each replica holds another).</p>\
         <table><tr><th class=\"l\">strategy</th><th>Redis keys</th><th>Redis memory</th><th>with one replica</th><th>inbox</th></tr>",
        escape(&window(adr)),
        count(adr.costs.first().map_or(0.0, |c| c.projection.trades))
    );
    for cost in &adr.costs {
        let p = &cost.projection;
        let _ = write!(
            body,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&cost.label),
            p.redis_keys.map_or("-".into(), count),
            p.redis_bytes.map_or("-".into(), bytes),
            p.redis_bytes.map_or("-".into(), |b| bytes(2.0 * b)),
            p.postgres_bytes
                .get("inbox")
                .map_or("-".into(), |b| bytes(*b)),
        );
    }
    body.push_str("</table>");
}
