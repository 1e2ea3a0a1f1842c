//! `idembench merge RUN... --out DIR`: one result from several instances that ran at the same
//! time (several hosts, each with its own load generator and processor): latency histograms
//! are merged (never their percentiles averaged), counts summed, rates summed, durations
//! taken as the longest. The merged `result.json` has the same shape as a run's, plus
//! `merged_from`, so `report`, `compare` and the schema apply to it unchanged.

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Latencies, Percentiles, RunResult, Status};
use crate::check::oracle::{Bounds, OracleReport};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MergeError(pub String);

/// Merges every `result.json` found under `inputs` and writes the result (result.json and
/// *.hgrm) into `out`; the reports are rendered from it by `report::rerender`.
pub fn merge_into(inputs: &[PathBuf], out: &Path) -> Result<RunResult, MergeError> {
    let mut results = Vec::new();
    for input in inputs {
        let loaded = super::load(input).map_err(|e| MergeError(e.to_string()))?;
        results.extend(loaded.into_iter().map(|(_, result)| result));
    }
    if results.len() < 2 {
        return Err(MergeError(
            "merge needs at least two results (give several run directories)".into(),
        ));
    }
    if out.join("result.json").exists() {
        return Err(MergeError(format!(
            "{} already holds a result.json; pass another --out",
            out.display()
        )));
    }
    let (merged, histograms) = merge(&results)?;
    std::fs::create_dir_all(out).map_err(|e| MergeError(e.to_string()))?;
    merged.write(out).map_err(|e| MergeError(e.to_string()))?;
    for (name, histogram) in histograms.iter().filter(|(_, h)| !h.is_empty()) {
        std::fs::write(
            out.join(format!("{name}.hgrm")),
            crate::hgrm::percentile_distribution(histogram, 1000.0),
        )
        .map_err(|e| MergeError(e.to_string()))?;
    }
    Ok(merged)
}

/// Histograms by name.
pub type Named = Vec<(String, Histogram<u64>)>;

/// The merged result and its merged histograms. Pure.
pub fn merge(results: &[RunResult]) -> Result<(RunResult, Named), MergeError> {
    let first = &results[0];
    let mut merged = first.clone();
    merged.run_id = format!("merged-{}", first.run_id);
    merged.merged_from = results.iter().map(|r| r.run_id.clone()).collect();
    // Each instance measured its own keys and tables; their sum would not be one state.
    merged.storage = None;
    merged.anomalies = None;
    // Its percentiles have no histograms to merge from; the merged runs keep theirs.
    merged.kafka_transactions = None;
    merged.correctness.kafka = None;
    if results.iter().any(|r| r.status != Status::Complete) {
        merged.status = Status::Partial;
        merged.partial_reason = Some("at least one merged run is partial".into());
    }
    if results.iter().any(|r| r.strategy != first.strategy) {
        merged.strategy = "mixed".into();
    }
    if results.iter().any(|r| r.redis_client != first.redis_client) {
        merged.redis_client = "mixed".into();
    }
    // Counts add up; the identity holds only if it held everywhere.
    merged.correctness = sum_counts(results.iter().map(|r| &r.correctness));
    merged.correctness.identity_holds = results.iter().all(|r| r.correctness.identity_holds);
    merged.processor = sum_counts(results.iter().map(|r| &r.processor));
    merged.processor.close_timed_out = results.iter().any(|r| r.processor.close_timed_out);
    merge_throughput(&mut merged.throughput, results);
    merge_oracle(&mut merged.oracle, results);
    merge_faults(&mut merged.faults, results);
    let histograms = merge_latency(&mut merged.latency_us, results)?;
    Ok((merged, histograms))
}

/// Rates and counts add up; durations are the longest; the series is dropped (the
/// instances' clocks started apart).
fn merge_throughput(throughput: &mut super::Throughput, results: &[RunResult]) {
    let sum = |read: fn(&RunResult) -> f64| results.iter().map(read).sum::<f64>();
    let longest = |read: fn(&RunResult) -> f64| results.iter().map(read).fold(0.0, f64::max);
    throughput.messages_produced = results.iter().map(|r| r.throughput.messages_produced).sum();
    throughput.messages_processed = results
        .iter()
        .map(|r| r.throughput.messages_processed)
        .sum();
    throughput.produced_per_second = sum(|r| r.throughput.produced_per_second);
    throughput.processed_per_second = sum(|r| r.throughput.processed_per_second);
    throughput.offered_rate = sum(|r| r.throughput.offered_rate);
    throughput.produce_seconds = longest(|r| r.throughput.produce_seconds);
    throughput.process_seconds = longest(|r| r.throughput.process_seconds);
    throughput.after_warm_up_per_second = None;
    throughput.series = Vec::new();
}

/// Observed counts and mismatches add up, and so do the predicted bounds.
fn merge_oracle(oracle: &mut OracleReport, results: &[RunResult]) {
    oracle.observed_lost = results.iter().map(|r| r.oracle.observed_lost).sum();
    oracle.observed_double_applied = results
        .iter()
        .map(|r| r.oracle.observed_double_applied)
        .sum();
    oracle.mismatches = results.iter().map(|r| r.oracle.mismatches).sum();
    let add = |read: fn(&RunResult) -> Bounds| Bounds {
        min: results.iter().map(|r| read(r).min).sum(),
        max: results.iter().map(|r| read(r).max).sum(),
    };
    oracle.predicted.lost = add(|r| r.oracle.predicted.lost);
    oracle.predicted.double_applied = add(|r| r.oracle.predicted.double_applied);
}

/// Every log, in time order; counts add up.
fn merge_faults(faults: &mut super::FaultsReport, results: &[RunResult]) {
    let mut log: Vec<_> = results
        .iter()
        .flat_map(|r| r.faults.log.iter().cloned())
        .collect();
    log.sort_by_key(|event| event.at_us);
    faults.log = log;
    faults.crashes = results.iter().map(|r| r.faults.crashes).sum();
    faults.log_truncated = results.iter().any(|r| r.faults.log_truncated);
    faults.by_point.clear();
    for r in results {
        for (point, n) in &r.faults.by_point {
            *faults.by_point.entry(point.clone()).or_insert(0) += n;
        }
    }
}

/// Merges the histograms, then reads the percentiles off the merged ones.
fn merge_latency(latency: &mut Latencies, results: &[RunResult]) -> Result<Named, MergeError> {
    let names: Vec<String> = latency.histograms.keys().cloned().collect();
    let mut histograms = Vec::new();
    for name in names {
        let mut total: Option<Histogram<u64>> = None;
        for r in results {
            let encoded = r.latency_us.histograms.get(&name).ok_or_else(|| {
                MergeError(format!("run {} has no {name} histogram to merge", r.run_id))
            })?;
            let histogram = crate::hgrm::decode(encoded)
                .map_err(|e| MergeError(format!("run {}: {name}: {e}", r.run_id)))?;
            match &mut total {
                None => total = Some(histogram),
                Some(total) => total
                    .add(&histogram)
                    .map_err(|e| MergeError(format!("{name}: {e:?}")))?,
            }
        }
        let total = total.expect("at least two results");
        if let Some(slot) = latency.slot(&name) {
            *slot = Percentiles::of(&total);
        }
        latency
            .histograms
            .insert(name.clone(), crate::hgrm::encode(&total));
        histograms.push((name, total));
    }
    Ok(histograms)
}

/// Adds every integer field of a section of counts across the results; other fields keep the
/// first result's value. Generic over the section, so a count added to it later adds up too.
fn sum_counts<'a, T>(sections: impl Iterator<Item = &'a T>) -> T
where
    T: Serialize + DeserializeOwned + 'a,
{
    let values: Vec<Value> = sections
        .map(|section| serde_json::to_value(section).expect("counts serialize"))
        .collect();
    let mut total = values[0].clone();
    if let Some(fields) = total.as_object_mut() {
        for (name, value) in fields.iter_mut() {
            if value.is_u64() || value.is_i64() {
                let sum: i64 = values
                    .iter()
                    .filter_map(|v| v[name.as_str()].as_i64())
                    .sum();
                *value = json!(sum);
            }
        }
    }
    serde_json::from_value(total).expect("a sum of counts has the counts' shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A committed result with a histogram of `values_us` and `lost` trades lost.
    fn run(id: &str, lost: u64, values_us: &[u64], status: Status) -> RunResult {
        let mut result: RunResult =
            serde_json::from_str(super::super::tests::COMMITTED_RESULT).expect("reads");
        let mut histogram = idembench_loadgen::producer::new_histogram();
        for v in values_us {
            histogram.record(*v).unwrap();
        }
        result.run_id = id.into();
        result.status = status;
        result.correctness.exactly_once = 10;
        result.correctness.lost = lost;
        result.processor.counts.messages = 11;
        result.throughput.processed_per_second = 90.5;
        result.throughput.process_seconds = 2.0;
        result.oracle.predicted.lost = Bounds::exactly(lost);
        result.oracle.predicted.double_applied = Bounds { min: 0, max: None };
        result.faults.by_point = [("after-claim".to_string(), lost)].into();
        result.latency_us.histograms = [(
            "end_to_end_from_intended".to_string(),
            crate::hgrm::encode(&histogram),
        )]
        .into();
        result
    }

    #[test]
    fn histograms_merge_and_counts_add() {
        let (merged, histograms) = merge(&[
            run("a", 1, &[1_000, 2_000], Status::Complete),
            run("b", 2, &[100_000], Status::Complete),
        ])
        .unwrap();
        assert_eq!(merged.correctness.lost, 3);
        assert_eq!(merged.correctness.exactly_once, 20);
        assert_eq!(merged.processor.counts.messages, 22);
        assert_eq!(merged.throughput.processed_per_second, 181.0);
        assert_eq!(merged.throughput.process_seconds, 2.0);
        assert_eq!(merged.oracle.predicted.lost, Bounds::exactly(3));
        assert_eq!(
            merged.oracle.predicted.double_applied,
            Bounds { min: 0, max: None }
        );
        assert_eq!(merged.faults.by_point["after-claim"], 3);
        assert_eq!(histograms[0].1.len(), 3);
        let e2e = &merged.latency_us.end_to_end_from_intended;
        assert_eq!(e2e.count, 3);
        // The max comes from run b, the median from run a: merged, not averaged.
        assert!(e2e.max >= 99_000);
        assert!(e2e.p50 <= 2_100);
        assert_eq!(merged.status, Status::Complete);
        assert_eq!(merged.merged_from, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn a_partial_input_makes_the_merge_partial() {
        let (merged, _) = merge(&[
            run("a", 0, &[1_000], Status::Complete),
            run("b", 0, &[1_000], Status::Partial),
        ])
        .unwrap();
        assert_eq!(merged.status, Status::Partial);
    }
}
