//! [`RedisOps`] on the `fred` crate: a `Pool` of clients, each one connection, used round-robin
//! by fred itself.

use super::topology::{REDIS, REDIS_CLUSTER, REDIS_SENTINEL};
use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{
    ClientCounters, ClientInfo, KeyState, RedisError, RedisOps, RedisSettings, WaitReplicas, ttl_ms,
};
use crate::redact::redact_url;

pub struct Fred {
    pool: Pool,
    command_timeout: Duration,
    wait: Option<WaitReplicas>,
    cluster: bool,
    counters: ClientCounters,
}

/// fred names a cluster's further seeds as `?node=host:port` query pairs; idembench's
/// `redis-cluster://` URLs list them comma-separated, as redis-rs and redis-cli take them.
fn fred_url(url: &str) -> String {
    match super::topology::Address::parse(url) {
        Ok(super::topology::Address::Sentinel {
            sentinels,
            service,
            credentials,
        }) => {
            let hosts: Vec<&str> = sentinels
                .iter()
                .filter_map(|s| s.strip_prefix(REDIS))
                .collect();
            let rest: String = hosts[1..].iter().map(|h| format!("&node={h}")).collect();
            format!(
                "{REDIS_SENTINEL}{credentials}{}?sentinelServiceName={service}{rest}",
                hosts[0]
            )
        }
        Ok(super::topology::Address::Cluster(nodes)) => {
            let hosts: Vec<&str> = nodes
                .iter()
                .filter_map(|node| node.strip_prefix(REDIS))
                .map(|node| node.rsplit_once('@').map_or(node, |(_, host)| host))
                .collect();
            let credentials = nodes[0]
                .strip_prefix(REDIS)
                .and_then(|node| node.rsplit_once('@'))
                .map(|(credentials, _)| format!("{credentials}@"))
                .unwrap_or_default();
            let rest: Vec<String> = hosts[1..].iter().map(|h| format!("node={h}")).collect();
            let query = if rest.is_empty() {
                String::new()
            } else {
                format!("?{}", rest.join("&"))
            };
            format!("{REDIS_CLUSTER}{credentials}{}{query}", hosts[0])
        }
        _ => url.to_string(),
    }
}

impl Fred {
    pub async fn connect(settings: &RedisSettings) -> Result<Fred, RedisError> {
        let connect_error = |cause: String| RedisError::Connect {
            address: redact_url(&settings.url),
            cause,
        };
        let config =
            Config::from_url(&fred_url(&settings.url)).map_err(|e| connect_error(e.to_string()))?;
        let pool = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = settings.connect_timeout;
                c.internal_command_timeout = settings.reply_timeout();
            })
            .with_performance_config(|p| p.default_command_timeout = settings.reply_timeout())
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build_pool(settings.connections.max(1))
            .map_err(|e| connect_error(e.to_string()))?;
        // init() resolves once every client connected, or with the first connection error.
        match tokio::time::timeout(settings.connect_timeout * 2, pool.init()).await {
            Ok(Ok(_task)) => {}
            Ok(Err(e)) => {
                let _ = pool.quit().await;
                return Err(connect_error(e.to_string()));
            }
            Err(_) => {
                let _ = pool.quit().await;
                return Err(connect_error(format!(
                    "no answer within {:?}",
                    settings.connect_timeout * 2
                )));
            }
        }
        let counters = ClientCounters::default();
        let address = super::topology::Address::parse(&settings.url);
        let sentinel = matches!(address, Ok(super::topology::Address::Sentinel { .. }));
        let cluster = matches!(address, Ok(super::topology::Address::Cluster(_)));
        for client in pool.clients() {
            let reconnects = counters.reconnects.clone();
            let followed = counters.primaries_followed.clone();
            // Behind Sentinels fred asks them again on every reconnect; a reconnect to another
            // server than the last one is a failover followed.
            let last = std::sync::Arc::new(std::sync::Mutex::new(
                client.active_connections().into_iter().next(),
            ));
            client.on_reconnect(move |server| {
                let reconnects = reconnects.clone();
                let followed = followed.clone();
                let last = last.clone();
                async move {
                    reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut last = last.lock().expect("not poisoned");
                    if sentinel && last.as_ref().is_some_and(|was| *was != server) {
                        followed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    *last = Some(server);
                    Ok(())
                }
            });
        }
        Ok(Fred {
            pool,
            command_timeout: settings.reply_timeout(),
            wait: settings.wait,
            cluster,
            counters,
        })
    }

    fn classify(&self, command: &'static str, error: fred::error::Error) -> RedisError {
        if *error.kind() == fred::error::ErrorKind::Timeout {
            RedisError::Timeout {
                command,
                timeout: self.command_timeout,
            }
        } else {
            RedisError::Command {
                command,
                cause: error.to_string(),
            }
        }
    }

    fn counted<T>(&self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        self.counters.count(&result);
        result
    }
}

impl Fred {
    /// `SET key value [NX] PX ttl [GET]`, classified and counted like every command.
    async fn set<R: FromValue>(
        &self,
        command: &'static str,
        key: &str,
        value: KeyState,
        ttl: Duration,
        options: Option<SetOptions>,
        get: bool,
    ) -> Result<R, RedisError> {
        let expiry = Expiration::PX(i64::try_from(ttl_ms(ttl)).unwrap_or(i64::MAX));
        let client = self.pool.next();
        let reply = client
            .set(key, value.as_str(), Some(expiry), options, get)
            .await;
        let reply = self.counted(reply.map_err(|e| self.classify(command, e)))?;
        self.wait_after(command, client, key).await;
        Ok(reply)
    }

    /// Under `--redis-wait-replicas`, `WAIT` on the connection that wrote `key` (on a
    /// cluster, `client`'s connection to the key's primary), counted short if too few
    /// replicas acknowledged. The write's own reply came back: a WAIT that fails (the
    /// connection dropped, the reply timed out, no primary known for the slot) leaves it done,
    /// only not known to be replicated — counted short, never failed, or a retry of SET NX
    /// would meet its own claim and skip the trade.
    async fn wait_after(&self, command: &'static str, client: &Client, key: &str) {
        let Some(wait) = self.wait else {
            return;
        };
        let timeout = i64::try_from(ttl_ms(wait.timeout)).unwrap_or(i64::MAX);
        let acked: Result<i64, RedisError> = if self.cluster {
            let slot = fred::util::redis_keyslot(key.as_bytes());
            match client
                .cached_cluster_state()
                .and_then(|state| state.get_server(slot).cloned())
            {
                Some(server) => client
                    .with_cluster_node(server)
                    .wait(i64::from(wait.replicas), timeout)
                    .await
                    .map_err(|e| self.classify(command, e)),
                None => Err(RedisError::Command {
                    command,
                    cause: format!("WAIT: no primary known for slot {slot}"),
                }),
            }
        } else {
            client
                .wait(i64::from(wait.replicas), timeout)
                .await
                .map_err(|e| self.classify(command, e))
        };
        match self.counted(acked) {
            Ok(acked) => self.counters.waited(wait, acked),
            Err(error) => {
                tracing::debug!(%error, "WAIT after a write failed; the write stands");
                self.counters.waited(wait, -1);
            }
        }
    }
}

impl RedisOps for Fred {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyState>, RedisError>> {
        async move {
            let value: Result<Option<Vec<u8>>, _> = self
                .pool
                .get(key)
                .await
                .map_err(|e| self.classify("GET", e));
            KeyState::from_reply(self.counted(value)?)
        }
        .boxed()
    }

    fn set_nx_px<'a>(
        &'a self,
        key: &'a str,
        value: KeyState,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, RedisError>> {
        async move {
            let reply: Option<String> = self
                .set("SET NX PX", key, value, ttl, Some(SetOptions::NX), false)
                .await?;
            Ok(reply.is_some())
        }
        .boxed()
    }

    fn set_nx_px_get<'a>(
        &'a self,
        key: &'a str,
        value: KeyState,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<KeyState>, RedisError>> {
        async move {
            KeyState::from_reply(
                self.set("SET NX PX GET", key, value, ttl, Some(SetOptions::NX), true)
                    .await?,
            )
        }
        .boxed()
    }

    fn get_then_set_nx_px<'a>(
        &'a self,
        key: &'a str,
        value: KeyState,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(Option<KeyState>, bool), RedisError>> {
        async move {
            let command = "GET + SET NX PX";
            let expiry = Expiration::PX(i64::try_from(ttl_ms(ttl)).unwrap_or(i64::MAX));
            let client = self.pool.next();
            let pipeline = client.pipeline();
            // Each call only queues its command; `all` sends both in one write.
            let queued: Result<(), _> = async {
                let () = pipeline.get(key).await?;
                pipeline
                    .set(
                        key,
                        value.as_str(),
                        Some(expiry),
                        Some(SetOptions::NX),
                        false,
                    )
                    .await
            }
            .await;
            let replies: Result<(Option<Vec<u8>>, Option<String>), _> = match queued {
                Ok(()) => pipeline.all().await,
                Err(error) => Err(error),
            };
            let (state, created) = self.counted(replies.map_err(|e| self.classify(command, e)))?;
            self.wait_after(command, client, key).await;
            Ok((KeyState::from_reply(state)?, created.is_some()))
        }
        .boxed()
    }

    fn set_px<'a>(
        &'a self,
        key: &'a str,
        value: KeyState,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), RedisError>> {
        async move { self.set("SET PX", key, value, ttl, None, false).await }.boxed()
    }

    fn info(&self) -> ClientInfo {
        ClientInfo {
            name: "fred".into(),
            version: crate::versions::FRED.into(),
            connections: self.pool.size(),
        }
    }

    fn counters(&self) -> &ClientCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cluster_url_becomes_fred_seed_pairs() {
        assert_eq!(
            super::fred_url("redis-cluster://:pw@127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002"),
            "redis-cluster://:pw@127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002"
        );
        assert_eq!(
            super::fred_url("redis-sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/idembench"),
            "redis-sentinel://:pw@127.0.0.1:26379?sentinelServiceName=idembench&node=127.0.0.1:26380"
        );
        assert_eq!(
            super::fred_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
