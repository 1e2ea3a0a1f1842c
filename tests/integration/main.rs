//! Every integration test, in one binary (one link of rdkafka, sqlx and both Redis clients):
//! one module per area, each on the real Kafka, Redis and Postgres that `scripts/services up`
//! starts (or the addresses in the environment). A missing service fails a test with the run's
//! own error, which names the service and how to start it; nothing is skipped.

mod common;

mod adr;
mod commits;
mod compose;
mod concurrency;
mod conformance;
mod crashes;
mod db_offsets_seek;
mod e2e;
mod interrupt;
mod kafka_transactions;
mod kills;
mod no_business_write;
mod redis_ops;
mod reports;
mod service_faults;
mod stack;
mod strategies;
mod topology;
mod unreachable;
