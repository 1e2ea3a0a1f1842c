//! `idembench compare BASELINE CURRENT`: the nightly regression gate.
//!
//! Each side is a `result.json`, a run directory, or any directory holding several (a matrix,
//! or repetitions of the same runs): every `result.json` beneath it is read. Runs are grouped by
//! (scenario, strategy, Redis client); within a group, repetitions are reduced to their median.
//! Performance changes beyond their threshold (relative; throughput and latency each have one)
//! are regressions or improvements, smaller ones noise. Correctness never gets a threshold: any trade lost or applied twice that the
//! baseline did not lose or double, a violated audit identity, or an oracle mismatch is a
//! regression. Exit codes: 0 fine, 1 regression, 2 error.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::RunResult;

/// What a comparison reads from one `result.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub group: String,
    /// The scenario the run belongs to ("" without one).
    pub scenario: String,
    pub processed_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub lost: u64,
    pub double_applied: u64,
    pub identity_holds: bool,
    pub oracle_mismatches: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{path}: {message}")]
    Input { path: String, message: String },
}

impl Sample {
    pub fn of(result: &RunResult) -> Sample {
        let scenario = result.scenario().unwrap_or("");
        let group = format!(
            "{}{} on {}",
            if scenario.is_empty() {
                String::new()
            } else {
                format!("{scenario}: ")
            },
            result.strategy,
            result.redis_client
        );
        let e2e = &result.latency_us.end_to_end_from_intended;
        Sample {
            group,
            scenario: scenario.to_string(),
            processed_per_second: result.throughput.processed_per_second,
            p50_us: e2e.p50 as f64,
            p99_us: e2e.p99 as f64,
            p999_us: e2e.p999 as f64,
            lost: result.correctness.lost,
            double_applied: result.correctness.double_applied,
            identity_holds: result.correctness.identity_holds,
            oracle_mismatches: result.oracle.mismatches,
        }
    }
}

/// Every `result.json` at or beneath `path`, as samples.
pub fn load(path: &Path) -> Result<Vec<Sample>, CompareError> {
    let results = super::load(path).map_err(|e| CompareError::Input {
        path: e.path,
        message: e.message,
    })?;
    Ok(results
        .iter()
        .map(|(_, result)| Sample::of(result))
        .collect())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Noise,
    Improved,
    Regression,
}

#[derive(Clone, Debug, Serialize)]
pub struct MetricChange {
    pub group: String,
    pub metric: &'static str,
    pub baseline: f64,
    pub current: f64,
    /// Relative change, current / baseline - 1 (absent when the baseline is 0).
    pub change: Option<f64>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub thresholds: Thresholds,
    pub changes: Vec<MetricChange>,
    /// Groups of the baseline that the current side lacks, and the reverse.
    pub missing_in_current: Vec<String>,
    pub new_in_current: Vec<String>,
    pub regressions: usize,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn group(samples: &[Sample]) -> BTreeMap<String, Vec<&Sample>> {
    let mut groups: BTreeMap<String, Vec<&Sample>> = BTreeMap::new();
    for sample in samples {
        groups.entry(sample.group.clone()).or_default().push(sample);
    }
    groups
}

/// Noise thresholds, relative (0.1 = 10 %): latency tails are noisier than throughput.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Thresholds {
    pub throughput: f64,
    pub latency: f64,
}

/// What a comparison gates on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Gate {
    /// Compare throughput and latency only for runs of these scenarios (`None`: every run).
    /// Correctness is compared for every run regardless.
    pub performance_scenarios: Option<Vec<String>>,
}

/// Compares medians per group against `thresholds`.
pub fn compare(
    baseline: &[Sample],
    current: &[Sample],
    thresholds: Thresholds,
    gate: &Gate,
) -> Comparison {
    let (base_groups, current_groups) = (group(baseline), group(current));
    let mut changes = Vec::new();
    for (name, base) in &base_groups {
        let Some(now) = current_groups.get(name) else {
            continue;
        };
        // Higher is better for throughput, lower for latency.
        type Metric = (&'static str, fn(&Sample) -> f64, bool);
        let metrics: [Metric; 4] = [
            ("processed_per_second", |s| s.processed_per_second, true),
            ("end_to_end_p50_us", |s| s.p50_us, false),
            ("end_to_end_p99_us", |s| s.p99_us, false),
            ("end_to_end_p999_us", |s| s.p999_us, false),
        ];
        let gated = gate
            .performance_scenarios
            .as_ref()
            .is_none_or(|names| names.contains(&base[0].scenario));
        for (metric, read, higher_is_better) in metrics.into_iter().filter(|_| gated) {
            let threshold = if higher_is_better {
                thresholds.throughput
            } else {
                thresholds.latency
            };
            let b = median(base.iter().map(|s| read(s)).collect());
            let c = median(now.iter().map(|s| read(s)).collect());
            let change = (b != 0.0).then(|| c / b - 1.0);
            let verdict = match change {
                None => Verdict::Ok,
                Some(change) if change.abs() <= threshold => Verdict::Noise,
                Some(change) if (change > 0.0) == higher_is_better => Verdict::Improved,
                Some(_) => Verdict::Regression,
            };
            changes.push(MetricChange {
                group: name.clone(),
                metric,
                baseline: b,
                current: c,
                change,
                verdict,
            });
        }
        // Correctness: the worst repetition counts, and nothing is noise.
        type Count = (&'static str, fn(&Sample) -> u64);
        let counts: [Count; 4] = [
            ("lost", |s| s.lost),
            ("double_applied", |s| s.double_applied),
            ("identity_violations", |s| u64::from(!s.identity_holds)),
            ("oracle_mismatches", |s| s.oracle_mismatches),
        ];
        for (metric, read) in counts {
            let b = base.iter().map(|s| read(s)).max().unwrap_or(0);
            let c = now.iter().map(|s| read(s)).max().unwrap_or(0);
            let verdict = match c.cmp(&b) {
                std::cmp::Ordering::Greater => Verdict::Regression,
                std::cmp::Ordering::Less => Verdict::Improved,
                std::cmp::Ordering::Equal => Verdict::Ok,
            };
            let change = (b != 0).then(|| c as f64 / b as f64 - 1.0);
            changes.push(MetricChange {
                group: name.clone(),
                metric,
                baseline: b as f64,
                current: c as f64,
                change,
                verdict,
            });
        }
    }
    let missing_in_current: Vec<String> = base_groups
        .keys()
        .filter(|k| !current_groups.contains_key(*k))
        .cloned()
        .collect();
    let new_in_current = current_groups
        .keys()
        .filter(|k| !base_groups.contains_key(*k))
        .cloned()
        .collect();
    let regressions = changes
        .iter()
        .filter(|c| c.verdict == Verdict::Regression)
        .count()
        + missing_in_current.len();
    Comparison {
        thresholds,
        changes,
        missing_in_current,
        new_in_current,
        regressions,
    }
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::EnumMessage,
)]
#[strum(serialize_all = "lowercase")]
pub enum Format {
    Text,
    Json,
    Markdown,
}

impl Comparison {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string_pretty(self).expect("serializable") + "\n",
            Format::Text | Format::Markdown => {
                let markdown = format == Format::Markdown;
                let mut out = String::new();
                if markdown {
                    out.push_str("| group | metric | baseline | current | change | verdict |\n|---|---|---|---|---|---|\n");
                }
                for c in &self.changes {
                    let change = c
                        .change
                        .map_or("-".to_string(), |x| format!("{:+.1} %", x * 100.0));
                    let verdict = match c.verdict {
                        Verdict::Ok => "ok",
                        Verdict::Noise => "noise",
                        Verdict::Improved => "improved",
                        Verdict::Regression => "REGRESSION",
                    };
                    if markdown {
                        out.push_str(&format!(
                            "| {} | {} | {:.1} | {:.1} | {change} | {verdict} |\n",
                            c.group, c.metric, c.baseline, c.current
                        ));
                    } else {
                        out.push_str(&format!(
                            "{:<40} {:<22} {:>12.1} {:>12.1} {change:>9}  {verdict}\n",
                            c.group, c.metric, c.baseline, c.current
                        ));
                    }
                }
                for missing in &self.missing_in_current {
                    out.push_str(&format!(
                        "REGRESSION: {missing} is in the baseline but not in the current runs\n"
                    ));
                }
                for new in &self.new_in_current {
                    out.push_str(&format!("note: {new} is new (no baseline)\n"));
                }
                out.push_str(&format!(
                    "{} regression(s); noise thresholds: throughput {:.0} %, latency {:.0} %\n",
                    self.regressions,
                    self.thresholds.throughput * 100.0,
                    self.thresholds.latency * 100.0
                ));
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(group: &str, rate: f64, p99: f64) -> Sample {
        Sample {
            group: group.into(),
            scenario: group.into(),
            processed_per_second: rate,
            p50_us: 5_000.0,
            p99_us: p99,
            p999_us: p99 * 1.5,
            lost: 0,
            double_applied: 0,
            identity_holds: true,
            oracle_mismatches: 0,
        }
    }

    #[test]
    fn a_twenty_percent_throughput_drop_is_a_regression_and_repeats_are_noise() {
        let baseline = [
            sample("a", 1000.0, 60_000.0),
            sample("a", 1010.0, 62_000.0),
            sample("a", 990.0, 61_000.0),
        ];
        let same = [sample("a", 1005.0, 61_500.0), sample("a", 995.0, 60_500.0)];
        let verdict = compare(
            &baseline,
            &same,
            Thresholds {
                throughput: 0.1,
                latency: 0.1,
            },
            &Gate::default(),
        );
        assert_eq!(verdict.regressions, 0, "{}", verdict.render(Format::Text));
        let dropped = [sample("a", 800.0, 61_000.0), sample("a", 805.0, 60_000.0)];
        let verdict = compare(
            &baseline,
            &dropped,
            Thresholds {
                throughput: 0.1,
                latency: 0.1,
            },
            &Gate::default(),
        );
        assert_eq!(verdict.regressions, 1);
        let throughput = verdict
            .changes
            .iter()
            .find(|c| c.metric == "processed_per_second")
            .unwrap();
        assert_eq!(throughput.verdict, Verdict::Regression);
        assert!(
            (throughput.change.unwrap() + 0.1975).abs() < 1e-3,
            "{:?}",
            throughput.change
        );
    }

    #[test]
    fn performance_is_gated_only_for_the_named_scenarios_and_correctness_always() {
        let baseline = [
            sample("burst", 1000.0, 60_000.0),
            sample("steady", 400.0, 9_000.0),
        ];
        let mut noisy = sample("burst", 500.0, 600_000.0);
        let steady = sample("steady", 398.0, 9_100.0);
        let gate = Gate {
            performance_scenarios: Some(vec!["steady".into()]),
        };
        let tight = Thresholds {
            throughput: 0.1,
            latency: 0.1,
        };
        let verdict = compare(&baseline, &[noisy.clone(), steady.clone()], tight, &gate);
        assert_eq!(verdict.regressions, 0, "{}", verdict.render(Format::Text));
        noisy.double_applied = 1;
        let verdict = compare(&baseline, &[noisy, steady], tight, &gate);
        assert_eq!(verdict.regressions, 1, "correctness is gated everywhere");
    }

    #[test]
    fn latency_has_its_own_threshold() {
        let baseline = [sample("a", 1000.0, 60_000.0)];
        let slower_tail = [sample("a", 1000.0, 78_000.0)];
        let both = Thresholds {
            throughput: 0.1,
            latency: 0.1,
        };
        assert_eq!(
            compare(&baseline, &slower_tail, both, &Gate::default()).regressions,
            2,
            "p99, p99.9"
        );
        let lenient = Thresholds {
            throughput: 0.1,
            latency: 0.5,
        };
        assert_eq!(
            compare(&baseline, &slower_tail, lenient, &Gate::default()).regressions,
            0
        );
        let slower = [sample("a", 850.0, 60_000.0)];
        assert_eq!(
            compare(&baseline, &slower, lenient, &Gate::default()).regressions,
            1
        );
    }

    #[test]
    fn correctness_regressions_always_fail_and_missing_groups_too() {
        let baseline = [sample("a", 1000.0, 60_000.0), sample("b", 1000.0, 60_000.0)];
        let mut lossy = sample("a", 1000.0, 60_000.0);
        lossy.lost = 1;
        let verdict = compare(
            &baseline,
            &[lossy],
            Thresholds {
                throughput: 0.5,
                latency: 0.5,
            },
            &Gate::default(),
        );
        assert_eq!(verdict.missing_in_current, vec!["b".to_string()]);
        assert_eq!(verdict.regressions, 2, "{}", verdict.render(Format::Text));
        let text = verdict.render(Format::Markdown);
        assert!(
            text.contains("| a | lost | 0.0 | 1.0 |") && text.contains("REGRESSION"),
            "{text}"
        );
    }

    #[test]
    fn samples_are_read_from_result_json_and_grouped_by_scenario() {
        let mut result: RunResult =
            serde_json::from_str(super::super::tests::COMMITTED_RESULT).unwrap();
        result.config.scenario = Some("crash".into());
        result.strategy = "db-only".into();
        result.redis_client = "none".into();
        result.throughput.processed_per_second = 480.5;
        result.correctness.double_applied = 2;
        let sample = Sample::of(&result);
        assert_eq!(sample.group, "crash: db-only on none");
        assert_eq!(
            (sample.processed_per_second, sample.double_applied),
            (480.5, 2)
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("result.json"), r#"{"strategy": "x"}"#).unwrap();
        let error = load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("result.json") && error.contains("not an idembench result.json"),
            "{error}"
        );
    }
}
