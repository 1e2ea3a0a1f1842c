//! idembench: puts Kafka consumer idempotency designs to the test on real Kafka, Redis and
//! Postgres, and reports throughput, latency and exact correctness counts.
//!
//! # Layout
//! The flow is loadgen → Kafka → processor → strategy (Redis and/or Postgres) → business
//! write → audit → result → report. A folder per stage; imports only go down this list (each
//! module uses only those below it), and only [`cli`] names clap:
//! - [`cli`]: the command line — flags and scenario files resolved into plain configuration,
//!   and one function per command.
//! - [`sweep`]: many runs — the strategy × client matrix and the capacity search.
//! - [`conformance`]: the Kafka broker conformance suite.
//! - [`run`]: one run as named phases — prepare, start, supervise, assemble.
//! - [`report`]: `summary.md` and `report.html`, rendered from results only.
//! - [`results`]: the one typed `result.json`, merge, compare, environment.
//! - [`check`]: the audit (exact counts) and the oracle (each strategy's rule).
//! - [`stack`]: where the services come from — used as they are, or started as children.
//! - [`config`]: plain configuration — a run's settings, their validation, names, scenarios.
//! - [`processor`]: the consumer group member, its workers and commits; the fleet of
//!   processor processes.
//! - [`strategy`]: the idempotency seam — one trait, one file per strategy, one table of
//!   capabilities.
//! - [`faults`]: the fault plan, fault kinds and log; crash points, timed faults, kills.
//! - [`redis`], [`db`], [`kafka`]: the stores — one trait and a file per Redis client; Postgres
//!   (and the in-memory business store); the run's topic and producer.
//! - [`hgrm`], [`redact`], [`spawn`], [`versions`]: histograms as `*.hgrm` files and
//!   encodings; passwords never leave the process; child processes that outlive the thread
//!   that started them, on ports nothing else takes; the linked versions.
//! - `idembench_loadgen` (the `loadgen/` crate): trade model, seeded stream, open-loop producer,
//!   ledger.

pub mod check;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod db;
pub mod faults;
pub mod hgrm;
pub mod kafka;
pub mod processor;
pub mod redact;
pub mod redis;
pub mod report;
pub mod results;
pub mod run;
pub mod spawn;
pub mod stack;
pub mod strategy;
pub mod sweep;
pub mod versions;
