//! idembench: puts Kafka consumer idempotency designs to the test on real Kafka, Redis and
//! Postgres, and reports throughput, latency and exact correctness counts.
//!
//! # Layout
//! The flow is loadgen → Kafka → processor → strategy (Redis and/or Postgres) → business
//! write → audit → result. One module per stage:
//! - `idembench_loadgen` (the `loadgen/` crate): trade model, seeded stream, open-loop producer, ledger.
//! - [`kafka`]: cluster reachability and the run's topic.
//! - [`processor`]: the consumer group member, per-partition workers, offset commits, metrics.
//! - [`strategy`]: the idempotency seam — one trait, one file per strategy.
//! - [`redis`]: the Redis seam — one trait, one file per client library.
//! - [`db`]: Postgres — per-run schema, migrations, the business transaction.
//! - [`audit`]: the ledger against Postgres, into exact correctness counts.
//! - [`hgrm`]: histograms as `*.hgrm` files and as encodings in `result.json`.
//! - [`result`]: `result.json` and the human summary; [`compare`]: results against a baseline.
//! - [`run`]: one run, start to finish; [`matrix`]: every strategy × client pair, one table;
//!   [`cli`]: the command line.
//! - [`faults`]: crashes at named points of the flow, and their log.
//! - [`oracle`]: each strategy's rule applied to the fault log, against the audit.
//! - [`scenario`]: scenario files — a situation, the claim it tests, the strategies to run.
//! - [`redact`]: passwords never leave the process.

pub mod audit;
pub mod capacity;
pub mod cli;
pub mod compare;
pub mod conformance;
pub mod db;
#[cfg(feature = "tansu")]
pub mod embedded;
pub mod environment;
pub mod faults;
pub mod fleet;
pub mod hgrm;
pub mod kafka;
pub mod matrix;
pub mod member;
pub mod merge;
pub mod oracle;
pub mod outage;
pub mod processor;
pub mod redact;
pub mod redis;
pub mod report;
pub mod result;
pub mod run;
pub mod scenario;
pub mod stack;
pub mod strategy;
pub mod versions;
