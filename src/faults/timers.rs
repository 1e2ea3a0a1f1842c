//! Timed faults from outside the flow: each is a task that sleeps until its time, logs the
//! fault and injects it. The run aborts them when it stops.

use std::sync::Arc;
use std::time::Duration;

use super::outage::Relay;
use super::{FaultKind, Faults};

/// Deletes every Redis key under `prefix` `at_ms` after now, as a restart without
/// persistence would (only the run's keys: Redis may be shared).
pub fn redis_wipe(
    url: String,
    prefix: String,
    at_ms: u64,
    faults: Arc<Faults>,
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(at_ms)).await;
        faults.record(FaultKind::RedisWipe);
        match crate::redis::admin::delete_keys(&url, &prefix, timeout).await {
            Ok(deleted) => tracing::info!(deleted, "injected Redis wipe"),
            Err(error) => tracing::warn!(%error, "the injected Redis wipe failed"),
        }
    })
}

/// Cuts every connection through `relay` `at_ms` after now and refuses new ones for
/// `lasting`.
pub fn db_outage(
    relay: Arc<Relay>,
    at_ms: u64,
    lasting: Duration,
    faults: Arc<Faults>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(at_ms)).await;
        faults.record(FaultKind::DbOutage);
        relay.cut();
        tokio::time::sleep(lasting).await;
        relay.restore();
    })
}
