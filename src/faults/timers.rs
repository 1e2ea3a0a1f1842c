//! Timed faults from outside the flow that need no stack: a Redis wipe, a Postgres outage and
//! a stall of the transactional producers.
//! Each is run by [`super::schedule::repeat`] at its time; the run aborts them when it stops.

use std::sync::Arc;
use std::time::Duration;

use super::outage::Relay;
use super::{FaultKind, Faults};

/// Deletes every Redis key under `prefix`, as a restart without persistence would (only the
/// run's keys: Redis may be shared).
pub async fn redis_wipe(url: &str, prefix: &str, faults: &Faults, timeout: Duration) {
    let logged = faults.begin(FaultKind::RedisWipe, None);
    match crate::redis::admin::delete_keys(url, prefix, timeout).await {
        Ok(deleted) => tracing::info!(deleted, "injected Redis wipe"),
        Err(error) => tracing::warn!(%error, "the injected Redis wipe failed"),
    }
    faults.end(logged);
}

/// Adds `fault`'s toxic to `proxy` for the fault's duration, then removes it.
pub async fn network(
    toxiproxy: &super::toxiproxy::Toxiproxy,
    proxy: &str,
    fault: &super::ScheduledFault,
    faults: &Faults,
) {
    let toxic = fault.kind.name();
    if let Err(error) = toxiproxy.add_toxic(proxy, fault.toxic(toxic)).await {
        tracing::warn!(%error, "the network fault was not injected");
        return;
    }
    let logged = faults.begin(fault.kind, Some(format!("{} via Toxiproxy", fault.link())));
    tokio::time::sleep(fault.duration()).await;
    if let Err(error) = toxiproxy.remove_toxic(proxy, toxic).await {
        tracing::warn!(%error, "cannot remove the network fault's toxic");
    }
    faults.end(logged);
}

/// Cuts every connection through `relay` and refuses new ones for `lasting`.
pub async fn db_outage(relay: &Arc<Relay>, lasting: Duration, faults: &Faults) {
    let logged = faults.begin(FaultKind::DbOutage, None);
    relay.cut();
    tokio::time::sleep(lasting).await;
    relay.restore();
    faults.end(logged);
}

/// Every transactional producer that reaches `send_offsets` in the next `lasting` hangs there
/// until its worker lets go of it.
pub async fn producer_stall(lasting: Duration, faults: &Faults) {
    let logged = faults.begin(FaultKind::ProducerStall, None);
    faults.stall_producers(lasting);
    tokio::time::sleep(lasting).await;
    faults.end(logged);
}
