//! Where a run's services came from (`--stack`): plain data, recorded in `result.json` under
//! `environment.stack`. Deciding and starting is `crate::stack`'s.

use serde::{Deserialize, Serialize};

/// How `--stack` finds the services.
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
    Serialize,
    Deserialize,
)]
#[strum(serialize_all = "kebab-case")]
#[serde(rename_all = "kebab-case")]
pub enum StackMode {
    /// Use what answers; start what does not (and was not named by the user).
    Auto,
    /// Only the configured addresses; never start anything.
    External,
    /// Start all three as child processes, even where something answers.
    Embedded,
    /// Start all three as Docker containers (testcontainers).
    Docker,
}

/// Where one service of a run came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Already answering at the configured address (or `--stack external`).
    External,
    /// A child process this run started and stopped.
    Child,
    /// A Docker container this run started and removed.
    Docker,
    /// A broker embedded in this process (the tansu broker, cargo feature `tansu`).
    InProcess,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackInfo {
    pub mode: StackMode,
    pub kafka: Origin,
    pub redis: Origin,
    pub postgres: Origin,
    /// The Apache Kafka release of a broker this run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_version: Option<String>,
}
