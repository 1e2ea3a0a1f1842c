//! `summary.md`: what a reviewer pastes into an ADR — the question, the answer, the setup, one
//! table per scenario, how it was measured, and the command that reproduces it.

use std::fmt::Write;

use super::{COLUMNS, MEASUREMENT_NOTES, Mark, answers, by_scenario, commands, row, setup_lines};

pub fn render(runs: &[crate::results::RunResult], command: Option<&str>) -> String {
    let mut out = String::new();
    let scenarios = by_scenario(runs);
    let title = if scenarios.iter().any(|(s, _)| s.is_some()) {
        "the design note's claims, measured"
    } else if runs.len() == 1 {
        "one run"
    } else {
        "strategies side by side"
    };
    let _ = writeln!(out, "# idembench: {title}\n");
    let _ = writeln!(
        out,
        "**Question.** Kafka delivers at least once. Which idempotency strategy applies every trade \
         exactly once — under the faults below — and what does it cost in throughput and latency?\n"
    );
    let partial = runs
        .iter()
        .filter(|r| r.status != crate::results::Status::Complete)
        .count();
    if partial > 0 {
        let _ = writeln!(
            out,
            "> **{partial} of {} runs are PARTIAL** (interrupted or not drained): their counts cover what was measured.\n",
            runs.len()
        );
    }

    let _ = writeln!(out, "## Answer\n");
    for answer in answers(runs) {
        let name = match (&answer.scenario, &answer.claim) {
            (Some(s), Some(claim)) => format!("**{s}** — “{claim}”: "),
            (Some(s), None) => format!("**{s}**: "),
            _ => String::new(),
        };
        let refuted: Vec<String> = answer
            .refuted
            .iter()
            .map(|(label, lost, double)| format!("{label} ({lost} lost, {double} applied twice)"))
            .collect();
        let _ = writeln!(
            out,
            "- {name}nothing lost or applied twice for {}; {}.",
            if answer.held.is_empty() {
                "no strategy".into()
            } else {
                answer.held.join(", ")
            },
            if refuted.is_empty() {
                "no strategy lost or doubled a trade".into()
            } else {
                format!("trades lost or applied twice for {}", refuted.join(", "))
            }
        );
    }
    let mismatches: u64 = runs.iter().map(|r| r.oracle.mismatches).sum();
    let identity = runs.iter().all(|r| r.correctness.identity_holds);
    let in_memory = runs.iter().any(|r| r.config.no_business_write);
    let _ = writeln!(
        out,
        "\nEvery count below is exact: the audit reads every trade's effects back from {} and \
         checks `exactly_once + lost + double_applied = produced` ({}). Each run's oracle \
         predicted its counts from the fault log by the strategy's own rule: {}.\n",
        if in_memory {
            "Postgres, or from the in-memory record a `--no-business-write` run keeps,"
        } else {
            "Postgres"
        },
        if identity {
            "held in every run"
        } else {
            "**violated in at least one run**"
        },
        if mismatches == 0 {
            "every prediction agreed".to_string()
        } else {
            format!("**{mismatches} disagreement(s)**")
        }
    );

    let _ = writeln!(out, "## Setup\n");
    for line in setup_lines(runs) {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(
        out,
        "- Scenario settings override these per scenario (see `config` in each `result.json`)."
    );

    let _ = writeln!(out, "\n## Results\n");
    for (scenario, members) in &scenarios {
        if let Some(name) = scenario {
            let _ = writeln!(
                out,
                "### {name}\n\n{}\n",
                members[0]
                    .claim()
                    .map(|c| format!("Claim: {c}"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(out, "| {} |", COLUMNS.join(" | "));
        let alignment: Vec<&str> = (0..COLUMNS.len())
            .map(|i| match i {
                0 | 1 => "---",
                i if i >= COLUMNS.len() - 2 => "---",
                _ => "--:",
            })
            .collect();
        let _ = writeln!(out, "|{}|", alignment.join("|"));
        for r in members {
            let cells: Vec<String> = row(r)
                .into_iter()
                .map(|(text, mark)| match mark {
                    Mark::Bad => format!("**{text}**"),
                    Mark::Good | Mark::Plain => text,
                })
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## How it was measured\n");
    for line in MEASUREMENT_NOTES {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(out, "\n## Reproduce\n\n```sh");
    for command in commands(runs, command) {
        let _ = writeln!(out, "{command}");
    }
    let _ = writeln!(out, "```");
    out
}
