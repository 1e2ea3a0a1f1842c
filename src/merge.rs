//! `idembench merge RUN... --out DIR`: one result from several instances that ran at the same
//! time (several hosts, each with its own load generator and processor): latency histograms
//! are merged (never their percentiles averaged), counts summed, rates summed, durations
//! taken as the longest. The merged `result.json` has the same shape as a run's, plus
//! `merged_from`, so `report`, `compare` and the schema apply to it unchanged.

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use crate::result::Percentiles;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MergeError(pub String);

/// Merges every `result.json` found under `inputs` and writes the result into `out`.
pub fn merge_into(inputs: &[PathBuf], out: &Path) -> Result<Value, MergeError> {
    let mut results = Vec::new();
    for input in inputs {
        let files = crate::compare::result_files(input)
            .map_err(|e| MergeError(format!("{}: {e}", input.display())))?;
        if files.is_empty() {
            return Err(MergeError(format!(
                "{}: holds no result.json",
                input.display()
            )));
        }
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| MergeError(format!("{}: {e}", file.display())))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| MergeError(format!("{}: not JSON: {e}", file.display())))?;
            results.push(value);
        }
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
    let write = |name: &str, text: String| {
        std::fs::write(out.join(name), text).map_err(|e| MergeError(e.to_string()))
    };
    write(
        "result.json",
        serde_json::to_string_pretty(&merged).expect("JSON serializes") + "\n",
    )?;
    for (name, histogram) in histograms.iter().filter(|(_, h)| !h.is_empty()) {
        write(
            &format!("{name}.hgrm"),
            crate::hgrm::percentile_distribution(histogram, 1000.0),
        )?;
    }
    crate::report::rerender(out).map_err(|e| MergeError(e.to_string()))?;
    Ok(merged)
}

/// Histograms by name.
pub type Named = Vec<(String, Histogram<u64>)>;

/// The merged result and its merged histograms. Pure.
pub fn merge(results: &[Value]) -> Result<(Value, Named), MergeError> {
    let mut merged = results[0].clone();
    let rest = &results[1..];
    let ids: Vec<Value> = results.iter().map(|r| r["run_id"].clone()).collect();
    merged["run_id"] = json!(format!(
        "merged-{}",
        results[0]["run_id"].as_str().unwrap_or("run")
    ));
    merged["merged_from"] = Value::Array(ids);
    if results.iter().any(|r| r["status"] != "complete") {
        merged["status"] = json!("partial");
        merged["partial_reason"] = json!("at least one merged run is partial");
    }
    for field in ["strategy", "redis_client"] {
        if results.iter().any(|r| r[field] != results[0][field]) {
            merged[field] = json!("mixed");
        }
    }

    // Counts add up; the identity holds only if it held everywhere.
    for section in ["correctness", "processor"] {
        sum_integers(&mut merged[section], rest.iter().map(|r| &r[section]));
    }
    merged["correctness"]["identity_holds"] = json!(
        results
            .iter()
            .all(|r| r["correctness"]["identity_holds"] == true)
    );
    for field in ["messages_produced", "messages_processed"] {
        merged["throughput"][field] = json!(sum_f64(results, &["throughput", field]) as u64);
    }
    for field in [
        "produced_per_second",
        "processed_per_second",
        "offered_rate",
    ] {
        merged["throughput"][field] = json!(sum_f64(results, &["throughput", field]));
    }
    for field in ["produce_seconds", "process_seconds"] {
        merged["throughput"][field] = json!(
            results
                .iter()
                .filter_map(|r| r["throughput"][field].as_f64())
                .fold(0.0, f64::max)
        );
    }
    merged["throughput"]["series"] = json!([]);

    // The oracle: observed and mismatches add up, and so do the predicted bounds.
    for field in ["observed_lost", "observed_double_applied", "mismatches"] {
        merged["oracle"][field] = json!(sum_f64(results, &["oracle", field]) as u64);
    }
    for bound in ["lost", "double_applied"] {
        let pick = |r: &Value, end: &str| r["oracle"]["predicted"][bound][end].clone();
        let min: u64 = results.iter().filter_map(|r| pick(r, "min").as_u64()).sum();
        let max: Option<u64> = results.iter().map(|r| pick(r, "max").as_u64()).sum();
        merged["oracle"]["predicted"][bound] = json!({ "min": min, "max": max });
    }

    // Faults: every log, in time order; counts add up.
    let mut log: Vec<Value> = results
        .iter()
        .flat_map(|r| r["faults"]["log"].as_array().cloned().unwrap_or_default())
        .collect();
    log.sort_by_key(|event| event["at_us"].as_u64().unwrap_or(0));
    merged["faults"]["log"] = Value::Array(log);
    merged["faults"]["crashes"] = json!(sum_f64(results, &["faults", "crashes"]) as u64);
    let mut by_point = Map::new();
    for r in results {
        for (point, n) in r["faults"]["by_point"].as_object().into_iter().flatten() {
            let total = by_point.get(point).and_then(Value::as_u64).unwrap_or(0);
            by_point.insert(point.clone(), json!(total + n.as_u64().unwrap_or(0)));
        }
    }
    merged["faults"]["by_point"] = Value::Object(by_point);

    // Latency: merge the histograms, then read percentiles off the merged ones.
    let names: Vec<String> = merged["latency_us"]["histograms"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut histograms = Vec::new();
    for name in names {
        let mut total: Option<Histogram<u64>> = None;
        for r in results {
            let encoded = r["latency_us"]["histograms"][&name]
                .as_str()
                .ok_or_else(|| {
                    MergeError(format!(
                        "run {} has no {name} histogram to merge",
                        r["run_id"]
                    ))
                })?;
            let histogram = crate::hgrm::decode(encoded)
                .map_err(|e| MergeError(format!("run {}: {name}: {e}", r["run_id"])))?;
            match &mut total {
                None => total = Some(histogram),
                Some(total) => total
                    .add(&histogram)
                    .map_err(|e| MergeError(format!("{name}: {e:?}")))?,
            }
        }
        let total = total.expect("at least two results");
        let percentiles =
            serde_json::to_value(Percentiles::of(&total)).expect("percentiles serialize");
        let slot = match name.as_str() {
            "claim" | "business" | "mark_done" | "offset_commit" => {
                &mut merged["latency_us"]["stages"][name.as_str()]
            }
            other => &mut merged["latency_us"][other],
        };
        *slot = percentiles;
        merged["latency_us"]["histograms"][name.as_str()] = json!(crate::hgrm::encode(&total));
        histograms.push((name, total));
    }
    Ok((merged, histograms))
}

fn sum_f64(results: &[Value], path: &[&str]) -> f64 {
    results
        .iter()
        .filter_map(|r| path.iter().fold(r, |v, key| &v[*key]).as_f64())
        .sum()
}

/// Adds every integer field of each of `others` into `target` (other fields stay as they are).
fn sum_integers<'a>(target: &mut Value, others: impl Iterator<Item = &'a Value>) {
    let others: Vec<&Value> = others.collect();
    let Some(fields) = target.as_object_mut() else {
        return;
    };
    for (name, value) in fields.iter_mut() {
        if let Some(first) = value.as_i64()
            && !value.is_f64()
        {
            let total = first
                + others
                    .iter()
                    .filter_map(|o| o[name.as_str()].as_i64())
                    .sum::<i64>();
            *value = json!(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, lost: u64, values_us: &[u64], status: &str) -> Value {
        let mut histogram = idembench_loadgen::producer::new_histogram();
        for v in values_us {
            histogram.record(*v).unwrap();
        }
        let encoded = crate::hgrm::encode(&histogram);
        json!({
            "run_id": id, "status": status, "strategy": "redis-only", "redis_client": "fred",
            "correctness": {"exactly_once": 10, "lost": lost, "identity_holds": true},
            "processor": {"messages": 11, "lag_at_stop": 0, "close_timed_out": false},
            "throughput": {"messages_produced": 11, "messages_processed": 11,
                "produced_per_second": 100.0, "processed_per_second": 90.5,
                "offered_rate": 100.0, "produce_seconds": 0.11, "process_seconds": 2.0},
            "oracle": {"observed_lost": lost, "observed_double_applied": 0, "mismatches": 0,
                "predicted": {"lost": {"min": lost, "max": lost},
                              "double_applied": {"min": 0, "max": null}}},
            "faults": {"log": [], "crashes": 0, "by_point": {"after-claim": lost}},
            "latency_us": {"end_to_end_from_intended": {}, "stages": {},
                           "histograms": {"end_to_end_from_intended": encoded}},
        })
    }

    #[test]
    fn histograms_merge_and_counts_add() {
        let (merged, histograms) = merge(&[
            run("a", 1, &[1_000, 2_000], "complete"),
            run("b", 2, &[100_000], "complete"),
        ])
        .unwrap();
        assert_eq!(merged["correctness"]["lost"], 3);
        assert_eq!(merged["correctness"]["exactly_once"], 20);
        assert_eq!(merged["processor"]["messages"], 22);
        assert_eq!(merged["throughput"]["processed_per_second"], 181.0);
        assert_eq!(merged["throughput"]["process_seconds"], 2.0);
        assert_eq!(
            merged["oracle"]["predicted"]["lost"],
            json!({"min": 3, "max": 3})
        );
        assert_eq!(
            merged["oracle"]["predicted"]["double_applied"],
            json!({"min": 0, "max": null})
        );
        assert_eq!(merged["faults"]["by_point"]["after-claim"], 3);
        assert_eq!(histograms[0].1.len(), 3);
        let e2e = &merged["latency_us"]["end_to_end_from_intended"];
        assert_eq!(e2e["count"], 3);
        // The max comes from run b, the median from run a: merged, not averaged.
        assert!(e2e["max"].as_u64().unwrap() >= 99_000);
        assert!(e2e["p50"].as_u64().unwrap() <= 2_100);
        assert_eq!(merged["status"], "complete");
        assert_eq!(merged["merged_from"], json!(["a", "b"]));
    }

    #[test]
    fn a_partial_input_makes_the_merge_partial() {
        let (merged, _) = merge(&[
            run("a", 0, &[1_000], "complete"),
            run("b", 0, &[1_000], "partial"),
        ])
        .unwrap();
        assert_eq!(merged["status"], "partial");
    }
}
