//! idembench's load generator: a seeded, reproducible stream of trades, produced open-loop into
//! Kafka, with the ledger of what was produced.
//!
//! # Layout
//! - [`trade`]: the trade message and its compact wire format (shared with the processor).
//! - [`stream`]: the seeded plan — which trades exist, which get immediate or late extra copies;
//!   drawn again from the seed whenever needed, never stored.
//! - [`ledger`]: what the broker acknowledged, per logical trade; the audit's input.
//! - [`producer`]: sends a plan on its open-loop schedule and collects acknowledgements.

pub mod ledger;
pub mod producer;
pub mod stream;
pub mod trade;

pub use ledger::Ledger;
pub use producer::{CopyRouting, ProduceReport, SendSettings, produce};
pub use stream::{ExtraCopy, Plan, PlanIter, Planned, StreamSpec};
pub use trade::{Side, Trade};
