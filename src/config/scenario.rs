//! Scenario files: a named situation (stream, faults, settings), the claim of the design note it
//! puts to the test, and the strategies and clients to run it with.
//!
//! ```toml
//! [defaults]                      # applied to every scenario; any setting below
//! trades = 1000
//!
//! [[scenario]]
//! name = "crash-after-commit-past-ttl"
//! claim = "App crashes before DONE → Redis TTL expires → retry"
//! strategies = ["redis-only", "db-only"]   # default: all
//! redis_clients = ["redis-rs"]             # default: redis-rs
//! crash_at = ["after-db-commit"]
//! processing_ttl_ms = 300
//!
//! [[scenario.fault]]              # a fault schedule: several per run (see `--fault`)
//! kind = "redis-restart"
//! at_ms = 5000
//! duration_ms = 2000              # optional; also every_ms, target
//! ```
//!
//! Settings are the `run` flags with underscores (`duplicate_rate`, `crash_at`, ...). A
//! scenario's settings override `[defaults]`, which override the command line (`cli` applies
//! them). Unknown keys and values of the wrong type are errors that name the file, the line
//! and the allowed values; a value a run cannot carry out is traced to its line by
//! [`ScenarioFile::line_of`].

use std::path::Path;

use serde::Deserialize;

use crate::config::DuplicatePartition;
use crate::faults::CrashPoint;
use crate::processor::CommitMode;
use crate::redis::RedisClientKind;
use crate::strategy::StrategyKind;
use crate::strategy::parts::OnInProgress;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: Settings,
    scenario: Vec<RawScenario>,
}

#[derive(Debug)]
pub struct ScenarioFile {
    pub defaults: Settings,
    pub scenarios: Vec<Scenario>,
    /// The file as written, to point an error at its line.
    text: String,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    /// The claim under test, in the design note's words.
    pub claim: String,
    pub strategies: Vec<StrategyKind>,
    pub redis_clients: Vec<RedisClientKind>,
    pub settings: Settings,
}

/// Declares the settings once, both as [`Settings`] and inline in a scenario's table — not
/// through `#[serde(flatten)]`, which would make unknown keys report neither their line nor
/// the allowed names.
macro_rules! settings {
    ($($field:ident: $ty:ty),+ $(,)?) => {
        /// Every setting a scenario may fix; each is optional.
        #[derive(Clone, Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $(pub $field: Option<$ty>,)+
        }

        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawScenario {
            name: String,
            claim: String,
            #[serde(default)]
            strategies: Vec<StrategyKind>,
            #[serde(default)]
            redis_clients: Vec<RedisClientKind>,
            $($field: Option<$ty>,)+
        }

        impl RawScenario {
            fn into_scenario(self) -> Scenario {
                Scenario {
                    name: self.name,
                    claim: self.claim,
                    strategies: self.strategies,
                    redis_clients: self.redis_clients,
                    settings: Settings { $($field: self.$field,)+ },
                }
            }
        }
    };
}

settings! {
    trades: u64,
    rate: f64,
    warm_up_ms: u64,
    duplicate_rate: f64,
    late_duplicate_share: f64,
    late_duplicate_delay_ms: u64,
    key_skew: f64,
    accounts: u32,
    instruments: u32,
    payload_bytes: usize,
    malformed_rate: f64,
    seed: u64,
    partitions: usize,
    replication_factor: i32,
    min_insync_replicas: i32,
    workers: usize,
    commit_mode: CommitMode,
    commit_interval_ms: u64,
    batch_size: usize,
    in_flight: usize,
    processor_threads: usize,
    transaction_interval_ms: u64,
    crash_at: Vec<CrashPoint>,
    crash_rate: f64,
    crash_trades: Vec<u64>,
    max_crashes: u64,
    restart_delay_ms: u64,
    redis_wipe_at_ms: u64,
    fault: Vec<crate::faults::ScheduledFault>,
    duplicate_partition: DuplicatePartition,
    slow_trades: Vec<u64>,
    slow_ms: u64,
    db_outage_at_ms: u64,
    db_outage_ms: u64,
    processes: usize,
    kill_at_ms: Vec<u64>,
    kill_every_ms: u64,
    session_timeout_ms: u64,
    on_in_progress: OnInProgress,
    processing_ttl_ms: u64,
    done_ttl_ms: u64,
    unique_constraint: bool,
    drain_timeout_ms: u64,
    redis_pipeline: bool,
    redis_connections: usize,
    redis_wait_replicas: u32,
    redis_wait_timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ScenarioError {
    pub path: String,
    pub message: String,
}

impl ScenarioFile {
    pub fn load(path: &Path) -> Result<ScenarioFile, ScenarioError> {
        let error = |message: String| ScenarioError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| error(format!("cannot read the scenario file: {e}")))?;
        ScenarioFile::parse(&text).map_err(error)
    }

    /// Parses a scenario file; errors carry the line, the column and the allowed values.
    pub fn parse(text: &str) -> Result<ScenarioFile, String> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        let file = ScenarioFile {
            text: text.to_string(),
            defaults: raw.defaults,
            scenarios: raw
                .scenario
                .into_iter()
                .map(RawScenario::into_scenario)
                .collect(),
        };
        if file.scenarios.is_empty() {
            return Err("no [[scenario]] in the file".into());
        }
        let mut names = std::collections::HashSet::new();
        for scenario in &file.scenarios {
            if !names.insert(scenario.name.as_str()) {
                return Err(format!(
                    "two scenarios are named {:?}; names must be unique",
                    scenario.name
                ));
            }
            if !scenario
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "scenario name {:?} may hold only letters, digits, '-' and '_'",
                    scenario.name
                ));
            }
        }
        Ok(file)
    }

    /// The line (1-based) of the file that sets `key` for `scenario`: in its own table, else
    /// in `[defaults]`. `strategies` and the like count as keys too.
    pub fn line_of(&self, scenario: &str, key: &str) -> Option<usize> {
        let mut section: Option<String> = None;
        let mut in_scenario_table = false;
        let (mut own, mut default) = (None, None);
        for (index, line) in self.text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                in_scenario_table = trimmed == "[[scenario]]";
                section = Some(trimmed.to_string());
                continue;
            }
            let Some((name, value)) = trimmed.split_once('=') else {
                continue;
            };
            let name = name.trim();
            if in_scenario_table && name == "name" {
                let value = value.trim().trim_matches('"');
                section = Some(format!("scenario:{value}"));
            }
            if name != key {
                continue;
            }
            match section.as_deref() {
                Some("[defaults]") => default = default.or(Some(index + 1)),
                Some(s) if s == format!("scenario:{scenario}") => own = own.or(Some(index + 1)),
                _ => {}
            }
        }
        own.or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_scenario_files_parse() {
        for file in [
            "scenarios/design-note-claims.toml",
            "scenarios/nightly.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let scenarios = ScenarioFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!scenarios.scenarios.is_empty(), "{file}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_line_and_the_allowed_values() {
        let error = ScenarioFile::parse("[[scenario]]\nname = \"a\"\nclaim = \"c\"\ntrdaes = 5\n")
            .unwrap_err();
        assert!(
            error.contains("line 4") && error.contains("trdaes") && error.contains("trades"),
            "{error}"
        );
        let error = ScenarioFile::parse(
            "[[scenario]]\nname = \"a\"\nclaim = \"c\"\ncrash_at = [\"after-lunch\"]\n",
        )
        .unwrap_err();
        assert!(
            error.contains("line 4") && error.contains("after-claim"),
            "{error}"
        );
        let error = ScenarioFile::parse("[defaults]\ntrades = 5\n").unwrap_err();
        assert!(error.contains("scenario"), "{error}");
        let error = ScenarioFile::parse(
            "[defaults]\ntrades = -5\n[[scenario]]\nname = \"a\"\nclaim = \"c\"\n",
        )
        .unwrap_err();
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn a_key_is_found_in_its_scenario_else_in_the_defaults() {
        let file = ScenarioFile::parse(
            "[defaults]\ntrades = 100\n\n[[scenario]]\nname = \"a\"\nclaim = \"c\"\nslow_ms = 5\n\n[[scenario]]\nname = \"b\"\nclaim = \"c\"\ntrades = 7\n",
        )
        .unwrap();
        assert_eq!(file.line_of("a", "slow_ms"), Some(7));
        assert_eq!(file.line_of("a", "trades"), Some(2));
        assert_eq!(file.line_of("b", "trades"), Some(12));
        assert_eq!(file.line_of("b", "slow_ms"), None);
    }
}
