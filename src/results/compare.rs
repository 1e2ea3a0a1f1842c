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

/// What a comparison reads from one `result.json`, or from one capacity search's
/// `capacity.json` (its group is `capacity: STRATEGY on CLIENT`).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub group: String,
    /// The scenario the run belongs to ("" without one; [`CAPACITY`] for a capacity search).
    pub scenario: String,
    pub processed_per_second: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    /// idembench's own CPU per processed message (`resources.cpu_us_per_message.idembench`;
    /// of a capacity search: its first probe's, at the fixed `--min-rate`).
    pub cpu_us_per_message: Option<f64>,
    /// A capacity search's highest sustained rate.
    pub capacity_per_second: Option<f64>,
    pub lost: u64,
    pub double_applied: u64,
    pub identity_holds: bool,
    pub oracle_mismatches: u64,
}

/// The scenario name of a capacity search's sample.
pub const CAPACITY: &str = "capacity";

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
            processed_per_second: Some(result.throughput.processed_per_second),
            p50_us: Some(e2e.p50 as f64),
            p99_us: Some(e2e.p99 as f64),
            p999_us: Some(e2e.p999 as f64),
            cpu_us_per_message: result
                .resources
                .cpu_us_per_message
                .get("idembench")
                .copied(),
            capacity_per_second: None,
            lost: result.correctness.lost,
            double_applied: result.correctness.double_applied,
            identity_holds: result.correctness.identity_holds,
            oracle_mismatches: result.oracle.mismatches,
        }
    }
}

/// What a comparison reads of a `capacity.json` (`idembench capacity`'s output).
#[derive(serde::Deserialize)]
struct CapacityFile {
    strategy: String,
    redis_client: String,
    capacity_per_second: Option<f64>,
    probes: Vec<ProbeFile>,
}

#[derive(serde::Deserialize)]
struct ProbeFile {
    /// Where the probe's run went when the search ran: its last component names the probe's
    /// directory beside `capacity.json`.
    result_dir: String,
}

/// Every `result.json` at or beneath `path`, as samples, and every capacity search beneath it
/// as one sample each (its probes' runs count only as that sample: their rates differ).
pub fn load(path: &Path) -> Result<Vec<Sample>, CompareError> {
    let input = |path: &Path, message: String| CompareError::Input {
        path: path.display().to_string(),
        message,
    };
    let results = super::load(path).map_err(|e| CompareError::Input {
        path: e.path,
        message: e.message,
    })?;
    let searches =
        super::files_named(path, "capacity.json").map_err(|e| input(path, e.to_string()))?;
    let dirs: Vec<&Path> = searches.iter().filter_map(|file| file.parent()).collect();
    let mut samples: Vec<Sample> = results
        .iter()
        .filter(|(file, _)| !dirs.iter().any(|dir| file.starts_with(dir)))
        .map(|(_, result)| Sample::of(result))
        .collect();
    for (file, dir) in searches.iter().zip(&dirs) {
        let text = std::fs::read_to_string(file).map_err(|e| input(file, e.to_string()))?;
        let search: CapacityFile = serde_json::from_str(&text).map_err(|e| {
            input(
                file,
                format!("not an idembench capacity.json ({e}); make it with idembench capacity"),
            )
        })?;
        let probes: Vec<&RunResult> = results
            .iter()
            .filter(|(result, _)| result.starts_with(dir))
            .map(|(_, result)| result)
            .collect();
        let first = search
            .probes
            .first()
            .and_then(|probe| Path::new(&probe.result_dir).file_name())
            .map(|name| dir.join(name).join("result.json"));
        let first = results
            .iter()
            .find(|(result, _)| Some(result) == first.as_ref())
            .map(|(_, result)| Sample::of(result));
        samples.push(Sample {
            group: format!("{CAPACITY}: {} on {}", search.strategy, search.redis_client),
            scenario: CAPACITY.into(),
            processed_per_second: None,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            cpu_us_per_message: first.and_then(|sample| sample.cpu_us_per_message),
            // Not even --min-rate sustained: zero, so a search that found nothing regresses.
            capacity_per_second: Some(search.capacity_per_second.unwrap_or(0.0)),
            lost: probes.iter().map(|r| r.correctness.lost).sum(),
            double_applied: probes.iter().map(|r| r.correctness.double_applied).sum(),
            identity_holds: probes.iter().all(|r| r.correctness.identity_holds),
            oracle_mismatches: probes.iter().map(|r| r.oracle.mismatches).sum(),
        });
    }
    Ok(samples)
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
    /// `--history`: each figure over the last nights, this one included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<super::history::History>,
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
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

/// Noise thresholds, relative (0.1 = 10 %): latency tails are noisier than throughput, CPU per
/// message and capacity.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Thresholds {
    pub throughput: f64,
    pub latency: f64,
    pub cpu: f64,
    pub capacity: f64,
}

impl Thresholds {
    /// Every threshold at `threshold`.
    pub fn all(threshold: f64) -> Thresholds {
        Thresholds {
            throughput: threshold,
            latency: threshold,
            cpu: threshold,
            capacity: threshold,
        }
    }
}

/// What a comparison gates on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Gate {
    /// Compare performance figures only for runs of these scenarios (`None`: every run;
    /// [`CAPACITY`] names the capacity searches). Correctness is compared for every run.
    pub performance_scenarios: Option<Vec<String>>,
}

/// A gated performance figure: its name, how to read it, whether higher is better, and its
/// threshold.
type Metric = (
    &'static str,
    fn(&Sample) -> Option<f64>,
    bool,
    fn(&Thresholds) -> f64,
);

const METRICS: [Metric; 6] = [
    (
        "processed_per_second",
        |s| s.processed_per_second,
        true,
        |t| t.throughput,
    ),
    ("end_to_end_p50_us", |s| s.p50_us, false, |t| t.latency),
    ("end_to_end_p99_us", |s| s.p99_us, false, |t| t.latency),
    ("end_to_end_p999_us", |s| s.p999_us, false, |t| t.latency),
    (
        "cpu_us_per_message",
        |s| s.cpu_us_per_message,
        false,
        |t| t.cpu,
    ),
    (
        "capacity_per_second",
        |s| s.capacity_per_second,
        true,
        |t| t.capacity,
    ),
];

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
        let scenario = &base[0].scenario;
        let gated = gate
            .performance_scenarios
            .as_ref()
            .is_none_or(|names| names.contains(scenario));
        for (metric, read, higher_is_better, threshold) in METRICS.into_iter().filter(|_| gated) {
            let values =
                |side: &[&Sample]| -> Vec<f64> { side.iter().filter_map(|s| read(s)).collect() };
            let (b, c) = (values(base), values(now));
            // A figure one side lacks (a baseline made before it existed) is not compared.
            if b.is_empty() || c.is_empty() {
                continue;
            }
            let (b, c) = (median(b), median(c));
            let threshold = threshold(&thresholds);
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
        history: None,
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
                    "{} regression(s); noise thresholds: throughput {:.0} %, latency {:.0} %, CPU per message {:.0} %, capacity {:.0} %\n",
                    self.regressions,
                    self.thresholds.throughput * 100.0,
                    self.thresholds.latency * 100.0,
                    self.thresholds.cpu * 100.0,
                    self.thresholds.capacity * 100.0
                ));
                if let Some(history) = &self.history {
                    out.push_str(&history.render(markdown));
                }
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
            processed_per_second: Some(rate),
            p50_us: Some(5_000.0),
            p99_us: Some(p99),
            p999_us: Some(p99 * 1.5),
            cpu_us_per_message: None,
            capacity_per_second: None,
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
        let verdict = compare(&baseline, &same, Thresholds::all(0.1), &Gate::default());
        assert_eq!(verdict.regressions, 0, "{}", verdict.render(Format::Text));
        let dropped = [sample("a", 800.0, 61_000.0), sample("a", 805.0, 60_000.0)];
        let verdict = compare(&baseline, &dropped, Thresholds::all(0.1), &Gate::default());
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
        let tight = Thresholds::all(0.1);
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
        let both = Thresholds::all(0.1);
        assert_eq!(
            compare(&baseline, &slower_tail, both, &Gate::default()).regressions,
            2,
            "p99, p99.9"
        );
        let lenient = Thresholds {
            latency: 0.5,
            ..Thresholds::all(0.1)
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
        let verdict = compare(&baseline, &[lossy], Thresholds::all(0.5), &Gate::default());
        assert_eq!(verdict.missing_in_current, vec!["b".to_string()]);
        assert_eq!(verdict.regressions, 2, "{}", verdict.render(Format::Text));
        let text = verdict.render(Format::Markdown);
        assert!(
            text.contains("| a | lost | 0.0 | 1.0 |") && text.contains("REGRESSION"),
            "{text}"
        );
    }

    #[test]
    fn a_capacity_search_is_one_sample_whose_cpu_is_its_first_probes_and_both_are_gated() {
        let dir = tempfile::tempdir().unwrap();
        let search = dir.path().join("capacity");
        for (name, cpu) in [("00-rate-400", 500.0), ("01-rate-6400", 300.0)] {
            let mut result: RunResult =
                serde_json::from_str(super::super::tests::COMMITTED_RESULT).unwrap();
            result
                .resources
                .cpu_us_per_message
                .insert("idembench".into(), cpu);
            std::fs::create_dir_all(search.join(name)).unwrap();
            std::fs::write(
                search.join(name).join("result.json"),
                serde_json::to_string(&result).unwrap(),
            )
            .unwrap();
        }
        // The probes' directories as the search named them, wherever it ran.
        std::fs::write(
            search.join("capacity.json"),
            r#"{"strategy": "redis-only", "redis_client": "redis-rs", "p99_bound_ms": 100.0,
                "capacity_per_second": 1600.0, "failed_at_per_second": 6400.0, "command": "",
                "probes": [{"result_dir": "elsewhere/00-rate-400"}, {"result_dir": "elsewhere/01-rate-6400"}]}"#,
        )
        .unwrap();
        let samples = load(dir.path()).unwrap();
        assert_eq!(
            samples.len(),
            1,
            "the probes are not runs of their own: {samples:?}"
        );
        let search = &samples[0];
        assert_eq!(search.group, "capacity: redis-only on redis-rs");
        assert_eq!(
            (search.capacity_per_second, search.cpu_us_per_message),
            (Some(1600.0), Some(500.0))
        );
        // The committed run lost 3 (crash-after-claim under redis-only): both probes count.
        assert_eq!(search.lost, 6);
        let slower = Sample {
            capacity_per_second: Some(1200.0),
            cpu_us_per_message: Some(650.0),
            ..search.clone()
        };
        // `capacity` names the capacity searches among the performance scenarios.
        let gate = Gate {
            performance_scenarios: Some(vec![CAPACITY.into()]),
        };
        let verdict = compare(&samples, &[slower], Thresholds::all(0.1), &gate);
        let flagged: Vec<&str> = verdict
            .changes
            .iter()
            .filter(|c| c.verdict == Verdict::Regression)
            .map(|c| c.metric)
            .collect();
        assert_eq!(flagged, ["cpu_us_per_message", "capacity_per_second"]);
        let same = compare(&samples, &samples, Thresholds::all(0.1), &gate);
        assert_eq!(same.regressions, 0, "{}", same.render(Format::Text));
        let elsewhere = Gate {
            performance_scenarios: Some(vec!["steady-load".into()]),
        };
        let slower = [Sample {
            capacity_per_second: Some(1200.0),
            ..samples[0].clone()
        }];
        assert_eq!(
            compare(&samples, &slower, Thresholds::all(0.1), &elsewhere).regressions,
            0,
            "not a performance scenario of this gate"
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
            (Some(480.5), 2)
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
