//! `matrix.json`: the rows of an `idembench matrix` (one per run), written by
//! [`crate::sweep::matrix`] and read by the ADR's verdict grid.

use serde::{Deserialize, Serialize};

use crate::check::audit::Correctness;
use crate::results::{Percentiles, RunResult, Status};

pub const MATRIX_SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Matrix {
    pub schema_version: u32,
    pub started_at: String,
    pub command: String,
    pub runs: Vec<MatrixRun>,
}

/// One pair's row. `error` is set (and the measurements absent) when the run failed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MatrixRun {
    /// The scenario (with `--scenario`) and the claim it tests.
    pub scenario: Option<String>,
    pub claim: Option<String>,
    /// The claim held for this strategy: nothing lost, nothing applied twice.
    pub claim_held: Option<bool>,
    pub strategy: String,
    pub redis_client: String,
    pub status: Option<Status>,
    pub result_dir: String,
    pub error: Option<String>,
    pub processed_per_second: Option<f64>,
    pub end_to_end_from_intended_us: Option<Percentiles>,
    pub correctness: Option<Correctness>,
    pub oracle_mismatches: Option<u64>,
    /// Faults injected (crashes, Redis wipes) during the run.
    pub faults: Option<u64>,
}

impl MatrixRun {
    pub fn from_result(result: &RunResult, dir: &std::path::Path) -> MatrixRun {
        MatrixRun {
            scenario: None,
            claim: None,
            claim_held: Some(result.claim_held()),
            strategy: result.strategy.clone(),
            redis_client: result.redis_client.clone(),
            status: Some(result.status),
            result_dir: dir.display().to_string(),
            error: None,
            processed_per_second: Some(result.throughput.processed_per_second),
            end_to_end_from_intended_us: Some(result.latency_us.end_to_end_from_intended),
            correctness: Some(result.correctness.clone()),
            oracle_mismatches: Some(result.oracle.mismatches),
            faults: Some(result.faults.log.len() as u64),
        }
    }
}
