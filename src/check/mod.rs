//! Checking a run: the audit counts what happened to every trade, the oracle predicts from the
//! fault log what must have happened, and the run fails when the two disagree. `kafka` audits
//! the effects topic of a Kafka-transactional processor.

pub mod audit;
pub mod kafka;
pub mod oracle;
