//! `report.html`: one self-contained file — tables and inline SVG charts, no external
//! resource, readable offline. A last, optional script only marks how many charts the browser
//! laid out (`data-charts-rendered` on `<body>`), which the browser test reads.

use std::fmt::Write;

use super::svg::{self, Series, escape};
use super::{COLUMNS, MEASUREMENT_NOTES, Mark, answers, by_scenario, commands, row, setup_lines};

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}\
th{background:#f4f4f4}td.l,th.l{text-align:left}.bad{color:#b00;font-weight:bold}.ok{color:#070}\
pre{background:#f6f6f6;padding:.6em;overflow-x:auto}section{margin-top:2.5em}figure{margin:1em 0}\
figcaption{font-size:12px;color:#555}";

pub fn render(runs: &[crate::results::RunResult], command: Option<&str>) -> String {
    let mut charts = 0usize;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>idembench report</h1><p><b>Question.</b> Kafka delivers at least once. Which idempotency \
         strategy applies every trade exactly once — under the faults below — and what does it cost \
         in throughput and latency?</p>"
    );
    let partial = runs
        .iter()
        .filter(|r| r.status != crate::results::Status::Complete)
        .count();
    if partial > 0 {
        let _ = write!(
            body,
            "<p class=\"bad\">{partial} of {} runs are PARTIAL (interrupted or not drained).</p>",
            runs.len()
        );
    }
    body.push_str("<h2>Answer</h2><ul>");
    answer_items(&mut body, runs);
    body.push_str("</ul><h2>Setup</h2><ul>");
    for line in setup_lines(runs) {
        let _ = write!(body, "<li>{}</li>", escape(&line));
    }
    body.push_str("</ul>");

    for (scenario, members) in by_scenario(runs) {
        charts += scenario_section(&mut body, scenario, &members);
    }

    body.push_str("<h2>How it was measured</h2><ul>");
    for line in MEASUREMENT_NOTES {
        let _ = write!(body, "<li>{}</li>", escape(line));
    }
    body.push_str("</ul><h2>Reproduce</h2><pre>");
    for command in commands(runs, command) {
        let _ = writeln!(body, "{}", escape(command));
    }
    body.push_str("</pre>");

    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>idembench report</title>\
         <style>{STYLE}</style></head><body data-charts=\"{charts}\">{body}\
         <script>(function(){{var n=0;document.querySelectorAll('svg.chart').forEach(function(s){{\
         var b=s.getBBox();if(b.width>0&&b.height>0)n++;}});\
         document.body.setAttribute('data-charts-rendered',String(n));}})();</script></body></html>\n"
    )
}

/// One list item per scenario: for which strategies its claim held, and for which not.
fn answer_items(body: &mut String, runs: &[crate::results::RunResult]) {
    for answer in answers(runs) {
        let name = match (&answer.scenario, &answer.claim) {
            (Some(s), Some(claim)) => format!("<b>{}</b> — “{}”: ", escape(s), escape(claim)),
            (Some(s), None) => format!("<b>{}</b>: ", escape(s)),
            _ => String::new(),
        };
        let refuted: Vec<String> = answer
            .refuted
            .iter()
            .map(|(label, lost, double)| {
                format!(
                    "<span class=\"bad\">{}</span> ({lost} lost, {double} applied twice)",
                    escape(label)
                )
            })
            .collect();
        let _ = write!(
            body,
            "<li>{name}nothing lost or applied twice for <span class=\"ok\">{}</span>; {}.</li>",
            if answer.held.is_empty() {
                "no strategy".into()
            } else {
                escape(&answer.held.join(", "))
            },
            if refuted.is_empty() {
                "no strategy lost or doubled a trade".into()
            } else {
                format!("trades lost or applied twice for {}", refuted.join(", "))
            }
        );
    }
}

/// A scenario's section: its claim, the results table and its charts. Returns the charts drawn.
fn scenario_section(
    body: &mut String,
    scenario: Option<&str>,
    members: &[&crate::results::RunResult],
) -> usize {
    let mut charts = 0;
    body.push_str("<section>");
    if let Some(name) = scenario {
        let _ = write!(body, "<h2>{}</h2>", escape(name));
        if let Some(claim) = members[0].claim() {
            let _ = write!(body, "<p>Claim: {}</p>", escape(claim));
        }
    } else {
        body.push_str("<h2>Results</h2>");
    }
    table(body, members);

    let curves: Vec<Series> = members
        .iter()
        .filter_map(|r| {
            let encoded = r.latency_us.histograms.get("end_to_end_from_intended")?;
            let histogram = crate::hgrm::decode(encoded).ok()?;
            (!histogram.is_empty()).then(|| Series {
                label: r.label(),
                points: histogram
                    .iter_quantiles(4)
                    .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64))
                    .collect(),
            })
        })
        .collect();
    if !curves.is_empty() {
        charts += 1;
        let _ = write!(
            body,
            "<figure>{}<figcaption>End-to-end latency (intended send → offset commit) by percentile, one line per run.</figcaption></figure>",
            svg::percentile_curves("latency by percentile", &curves)
        );
    }
    let rates: Vec<Series> = members
        .iter()
        .filter(|r| r.throughput.series.len() > 1)
        .map(|r| Series {
            label: r.label(),
            points: r
                .throughput
                .series
                .windows(2)
                .map(|w| {
                    let dt = (w[1].t_s - w[0].t_s).max(1e-3);
                    (
                        w[1].t_s,
                        w[1].committed.saturating_sub(w[0].committed) as f64 / dt,
                    )
                })
                .collect(),
        })
        .collect();
    let windows = fault_windows(members);
    let shaded = if windows.is_empty() {
        ""
    } else {
        " Shaded: each run's faults, from the injection until the service healed."
    };
    if !rates.is_empty() {
        charts += 1;
        let _ = write!(
            body,
            "<figure>{}<figcaption>Messages committed per second over the run, one line per run.{shaded}</figcaption></figure>",
            svg::lines(
                "throughput over time",
                "seconds",
                "messages/s",
                &rates,
                &windows
            )
        );
    }
    let tails: Vec<Series> = members
        .iter()
        .filter(|r| r.throughput.series.iter().any(|p| p.p99_us.is_some()))
        .map(|r| Series {
            label: r.label(),
            points: r
                .throughput
                .series
                .iter()
                .filter_map(|p| Some((p.t_s, p.p99_us? as f64 / 1000.0)))
                .collect(),
        })
        .collect();
    if !tails.is_empty() && !windows.is_empty() {
        charts += 1;
        let _ = write!(
            body,
            "<figure>{}<figcaption>End-to-end p99 of the messages completed in each second (in-process processors only), one line per run.{shaded}</figcaption></figure>",
            svg::lines("p99 per second", "seconds", "p99 ms", &tails, &windows)
        );
    }
    let bars: Vec<(String, u64, u64)> = members
        .iter()
        .map(|r| (r.label(), r.correctness.lost, r.correctness.double_applied))
        .collect();
    charts += 1;
    let _ = write!(
        body,
        "<figure>{}<figcaption>Trades lost and applied twice, per run (exact, from the audit).</figcaption></figure>",
        svg::anomaly_bars("correctness", &bars)
    );
    body.push_str("</section>");
    charts
}

/// Every run's fault windows (start to heal, from `faults.recovery`), each kind labelled
/// once.
fn fault_windows(members: &[&crate::results::RunResult]) -> Vec<svg::Window> {
    let mut labelled = std::collections::BTreeSet::new();
    members
        .iter()
        .flat_map(|r| r.faults.recovery.iter())
        .map(|recovery| {
            let from_s = recovery.at_ms as f64 / 1000.0;
            let lasted = recovery.healed_after_ms.unwrap_or(0) as f64 / 1000.0;
            let kind = recovery.kind.name();
            svg::Window {
                from_s,
                to_s: from_s + lasted,
                label: if labelled.insert(kind) {
                    kind.to_string()
                } else {
                    String::new()
                },
            }
        })
        .collect()
}

fn table(out: &mut String, runs: &[&crate::results::RunResult]) {
    out.push_str("<table><tr>");
    for (i, column) in COLUMNS.iter().enumerate() {
        let class = if i < 2 { " class=\"l\"" } else { "" };
        let _ = write!(out, "<th{class}>{}</th>", escape(column));
    }
    out.push_str("</tr>");
    for r in runs {
        out.push_str("<tr>");
        for (i, (text, mark)) in row(r).into_iter().enumerate() {
            let class = match (i < 2, mark) {
                (true, _) => " class=\"l\"",
                (false, Mark::Bad) => " class=\"bad\"",
                (false, Mark::Good) => " class=\"ok\"",
                (false, Mark::Plain) => "",
            };
            let _ = write!(out, "<td{class}>{}</td>", escape(&text));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}
