//! `db-offsets` — what Kafka's documentation advises for sinks outside Kafka, and the design
//! note never considered: no inbox and no Redis. The business transaction also moves the
//! partition's next offset, kept in Postgres (`consumer_offsets`); a message whose offset is
//! below the stored one is a redelivery and is skipped (the row is read `FOR UPDATE`, so two
//! consumers of one partition during a rebalance serialise). On every partition assignment the
//! processor seeks to the offsets stored here, so redeliveries are not even fetched; Kafka's
//! committed offsets are advisory only.
//!
//! Guarantee: every Kafka *message* is applied exactly once — a crash anywhere leaves the
//! effects and the offset committed together or not at all. Where it fails: it knows messages,
//! not trades. A trade *published twice* (two offsets) is two messages; only the trade id's
//! unique constraint stops the second one (`caught_by_constraint`; the offset still moves,
//! inside a savepoint), and with `--no-unique-constraint` it is applied twice. It also needs
//! the business data and the offsets in one database.

use super::parts::{DbTx, SingleTransaction, TxShape};

pub fn new(tx: DbTx) -> SingleTransaction {
    SingleTransaction::new(tx, TxShape::OFFSETS)
}
