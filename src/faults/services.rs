//! The scheduled faults that hit a service process the run's stack started: a Redis restart,
//! a Redis failover, a Kafka broker kill. Each is a task that sleeps until its time (and again
//! every `every_ms` while production runs), finds its target as the cluster stands then (the
//! current primary, the current leader of partition 0), kills it through [`ServiceControl`],
//! waits for what heals it, and logs the fault with its target, its start and its end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::control::ServiceControl;
use super::{FaultKind, Faults, ScheduledFault};
use crate::redis::topology::REDIS;

/// What the service faults of one run need.
pub struct Injector {
    pub control: Arc<dyn ServiceControl>,
    pub redis_url: String,
    pub kafka: crate::kafka::Admin,
    pub topic: String,
    pub timeout: Duration,
    pub faults: Arc<Faults>,
}

/// How long a healed service may take to answer again, or a replica to be promoted.
const HEAL_LIMIT: Duration = Duration::from_secs(60);

/// Runs `fault` from now on (see [`super::schedule::repeat`]).
pub fn run(
    injector: Arc<Injector>,
    fault: ScheduledFault,
    produced: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let scheduled = fault.clone();
    super::schedule::repeat(&scheduled, produced, move || {
        let (injector, fault) = (injector.clone(), fault.clone());
        async move {
            if let Err(error) = injector.inject(&fault).await {
                tracing::warn!(kind = fault.kind.name(), %error, "the scheduled fault was not injected");
            }
        }
    })
}

impl Injector {
    async fn inject(&self, fault: &ScheduledFault) -> Result<(), String> {
        let _at_work = self.faults.injecting();
        match fault.kind {
            FaultKind::RedisRestart => {
                let target = match &fault.target {
                    Some(target) => target.clone(),
                    None => self.redis_primary().await?,
                };
                let logged = self.kill(fault.kind, &target)?;
                tokio::time::sleep(fault.duration()).await;
                self.restart(&target)?;
                self.until("Redis answers again", || {
                    redis_answers(target.clone(), self.timeout)
                })
                .await?;
                self.faults.end(logged);
            }
            FaultKind::RedisFailover => {
                let before = self.redis_primaries().await?;
                let old = before.first().cloned().ok_or("no Redis primary answers")?;
                let killed = Instant::now();
                self.control.kill(&old)?;
                // What the lagging link still carried dies with the primary.
                let cut = self.control.cut_replication(&old).await?;
                tracing::info!(kind = fault.kind.name(), target = %old, "injected: SIGKILL");
                let target = match cut {
                    Some(lag) => format!("{old} (its replica's link, {lag} ms behind, cut)"),
                    None => old.clone(),
                };
                let lagging = cut.is_some();
                let logged = self.faults.begin(fault.kind, Some(target));
                // Promoted: as many primaries as before, the killed one not among them.
                self.until("a replica is promoted", || async {
                    self.redis_primaries()
                        .await
                        .is_ok_and(|now| now.len() == before.len() && !now.contains(&old))
                })
                .await?;
                self.faults.end(logged);
                tracing::info!(old = %old, "injected Redis failover: a replica was promoted");
                tokio::time::sleep(fault.duration().saturating_sub(killed.elapsed())).await;
                // The old primary comes back empty and rejoins as a replica; the fault is at
                // work until it is one, in sync, so the next failover finds a replica to promote.
                self.restart(&old)?;
                if lagging {
                    // The rejoined replica goes through the lagging link again (whatever its
                    // command line names: the first replica's names the proxy), so the next
                    // failover loses the same window. At once, before its Sentinels convert it:
                    // they leave a replica's detour alone for `failover-timeout`.
                    self.until("the old primary answers again", || {
                        redis_answers(old.clone(), self.timeout)
                    })
                    .await?;
                    let primary = self.redis_primary().await?;
                    self.control.relink_replication(&primary, &old).await?;
                }
                self.until("the old primary is a replica in sync again", || {
                    replica_in_sync(old.clone(), self.timeout)
                })
                .await?;
            }
            FaultKind::KafkaBrokerKill => {
                let target = match &fault.target {
                    Some(target) => target.clone(),
                    None => self.partition_leader().await?,
                };
                let logged = self.kill(fault.kind, &target)?;
                tokio::time::sleep(fault.duration()).await;
                self.restart(&target)?;
                self.until("the broker is back in the cluster", || async {
                    self.kafka
                        .broker_addresses()
                        .await
                        .is_ok_and(|brokers| brokers.contains(&target))
                })
                .await?;
                self.faults.end(logged);
            }
            other => return Err(format!("{} is not a service fault", other.name())),
        }
        Ok(())
    }

    /// Kills `target` and logs the fault; returns its place in the log.
    fn kill(&self, kind: FaultKind, target: &str) -> Result<usize, String> {
        self.control.kill(target)?;
        tracing::info!(kind = kind.name(), target, "injected: SIGKILL");
        Ok(self.faults.begin(kind, Some(target.to_string())))
    }

    fn restart(&self, target: &str) -> Result<(), String> {
        self.control.restart(target)?;
        tracing::info!(target, "restarted after the fault");
        Ok(())
    }

    /// Polls `healed` until it holds, or fails after [`HEAL_LIMIT`].
    async fn until<F, Fut>(&self, what: &str, mut healed: F) -> Result<(), String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + HEAL_LIMIT;
        while !healed().await {
            if Instant::now() > deadline {
                return Err(format!("{what} did not happen within {HEAL_LIMIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// `host:port` of the primary the URL names now (the first primary of a cluster).
    async fn redis_primary(&self) -> Result<String, String> {
        let primaries = self.redis_primaries().await?;
        primaries
            .into_iter()
            .next()
            .ok_or_else(|| "no Redis primary answers".to_string())
    }

    /// `host:port` of every primary that serves now (a cluster's without the failed ones).
    async fn redis_primaries(&self) -> Result<Vec<String>, String> {
        let primaries = crate::redis::admin::primaries(&self.redis_url, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        Ok(primaries.iter().map(|url| host_port(url)).collect())
    }

    /// `host:port` of the broker that leads partition 0 of the run's topic.
    async fn partition_leader(&self) -> Result<String, String> {
        self.kafka
            .leader_address(&self.topic, 0)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "partition 0 has no leader".to_string())
    }
}

/// `redis://[user:password@]host:port[/db]` → `host:port`.
fn host_port(url: &str) -> String {
    let rest = url.strip_prefix(REDIS).unwrap_or(url);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    rest.split('/').next().unwrap_or(rest).to_string()
}

async fn replica_in_sync(address: String, timeout: Duration) -> bool {
    crate::redis::admin::replication(&format!("{REDIS}{address}"), timeout)
        .await
        .is_ok_and(|info| info.contains("role:slave") && info.contains("master_link_status:up"))
}

async fn redis_answers(address: String, timeout: Duration) -> bool {
    crate::redis::admin::server_version(&format!("{REDIS}{address}"), timeout)
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_primary_url_becomes_its_address() {
        let url = format!("{}user:pw@127.0.0.1:7001/0", super::REDIS);
        assert_eq!(super::host_port(&url), "127.0.0.1:7001");
        assert_eq!(super::host_port("127.0.0.1:7002"), "127.0.0.1:7002");
    }
}
