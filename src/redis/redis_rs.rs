//! [`RedisOps`] on the `redis` crate (redis-rs): `ConnectionManager`s, each one multiplexed
//! connection that reconnects by itself, used round-robin; on a Redis Cluster
//! (`redis-cluster://`), `cluster_async` connections, which route each key to its slot's
//! primary and follow MOVED and ASK.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{ClientCounters, ClientInfo, KeyState, RedisError, RedisOps, RedisSettings, ttl_ms};
use crate::redact::redact_url;

/// One connection of either kind; both are cheap handles onto multiplexed connections.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Connection {
    async fn query<T: redis::FromRedisValue>(self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Connection::Single(mut c) => cmd.query_async(&mut c).await,
            Connection::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }

    async fn pipeline<T: redis::FromRedisValue>(
        self,
        pipeline: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            Connection::Single(mut c) => pipeline.query_async(&mut c).await,
            Connection::Cluster(mut c) => pipeline.query_async(&mut c).await,
        }
    }
}

pub struct RedisRs {
    connections: Vec<Connection>,
    next: AtomicUsize,
    command_timeout: Duration,
    counters: ClientCounters,
}

impl RedisRs {
    pub async fn connect(settings: &RedisSettings) -> Result<RedisRs, RedisError> {
        let connect_error = |cause: String| RedisError::Connect {
            address: redact_url(&settings.url),
            cause,
        };
        let address = super::topology::Address::parse(&settings.url).map_err(connect_error)?;
        let mut connections = Vec::with_capacity(settings.connections.max(1));
        for _ in 0..settings.connections.max(1) {
            let connecting = async {
                match &address {
                    super::topology::Address::Standalone(url) => {
                        single(url, settings).await.map(Connection::Single)
                    }
                    super::topology::Address::Cluster(nodes) => {
                        cluster(nodes, settings).await.map(Connection::Cluster)
                    }
                    // The primary the Sentinels name now. A failover moves it: re-asking
                    // the Sentinels after one is issue #15's (redis-failover).
                    super::topology::Address::Sentinel {
                        sentinels,
                        service,
                        credentials,
                    } => {
                        let primary = super::admin::sentinel_primary(
                            sentinels,
                            service,
                            credentials,
                            settings.connect_timeout,
                        )
                        .await
                        .map_err(|e| {
                            redis::RedisError::from((
                                redis::ErrorKind::Io,
                                "no Sentinel named a primary",
                                e.to_string(),
                            ))
                        })?;
                        single(&primary, settings).await.map(Connection::Single)
                    }
                }
            };
            let connection = tokio::time::timeout(settings.connect_timeout * 2, connecting)
                .await
                .map_err(|_| {
                    connect_error(format!(
                        "no answer within {:?}",
                        settings.connect_timeout * 2
                    ))
                })?
                .map_err(|e| connect_error(e.to_string()))?;
            connections.push(connection);
        }
        Ok(RedisRs {
            connections,
            next: AtomicUsize::new(0),
            command_timeout: settings.command_timeout,
            counters: ClientCounters::default(),
        })
    }

    fn connection(&self) -> Connection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        cmd: redis::Cmd,
    ) -> Result<T, RedisError> {
        let reply = tokio::time::timeout(self.command_timeout, self.connection().query::<T>(&cmd));
        self.classified(command, reply.await)
    }

    /// Sends `pipeline`'s commands in one write and reads their replies.
    async fn query_pipeline<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        pipeline: redis::Pipeline,
    ) -> Result<T, RedisError> {
        let reply = tokio::time::timeout(
            self.command_timeout,
            self.connection().pipeline::<T>(&pipeline),
        );
        self.classified(command, reply.await)
    }

    /// Turns a reply, or the timeout around it, into a counted [`RedisError`].
    fn classified<T>(
        &self,
        command: &'static str,
        reply: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, RedisError> {
        let result = match reply {
            Err(_) => Err(RedisError::Timeout {
                command,
                timeout: self.command_timeout,
            }),
            Ok(Err(e)) if e.is_timeout() => Err(RedisError::Timeout {
                command,
                timeout: self.command_timeout,
            }),
            Ok(Err(e)) if e.is_connection_dropped() || e.is_io_error() => {
                self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                Err(RedisError::Command {
                    command,
                    cause: e.to_string(),
                })
            }
            Ok(Err(e)) => Err(RedisError::Command {
                command,
                cause: e.to_string(),
            }),
            Ok(Ok(value)) => Ok(value),
        };
        self.counters.count(&result);
        result
    }
}

/// A reconnecting multiplexed connection to one server.
async fn single(url: &str, settings: &RedisSettings) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.command_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config).await
}

/// A cluster connection from seed nodes: it reads the slot map and keeps it current.
async fn cluster(
    nodes: &[String],
    settings: &RedisSettings,
) -> redis::RedisResult<redis::cluster_async::ClusterConnection> {
    let client = redis::cluster::ClusterClient::builder(nodes.to_vec())
        .connection_timeout(settings.connect_timeout)
        .response_timeout(settings.command_timeout)
        .retries(2)
        .build()?;
    client.get_async_connection().await
}

/// `SET key value [NX] PX ttl [GET]`: the only write the strategies make, in its three forms.
fn set(key: &str, value: KeyState, ttl: Duration, nx: bool, get: bool) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value.as_str());
    if nx {
        cmd.arg("NX");
    }
    cmd.arg("PX").arg(ttl_ms(ttl));
    if get {
        cmd.arg("GET");
    }
    cmd
}

impl RedisOps for RedisRs {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyState>, RedisError>> {
        async move {
            KeyState::from_reply(
                self.query("GET", redis::cmd("GET").arg(key).clone())
                    .await?,
            )
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
            // Nil when the key existed, "OK" when this call set it.
            let reply: Option<String> = self
                .query("SET NX PX", set(key, value, ttl, true, false))
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
                self.query("SET NX PX GET", set(key, value, ttl, true, true))
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
            let mut pipeline = redis::pipe();
            pipeline
                .add_command(redis::cmd("GET").arg(key).clone())
                .add_command(set(key, value, ttl, true, false));
            let (state, created): (Option<Vec<u8>>, Option<String>) =
                self.query_pipeline("GET + SET NX PX", pipeline).await?;
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
        async move {
            self.query("SET PX", set(key, value, ttl, false, false))
                .await
        }
        .boxed()
    }

    fn info(&self) -> ClientInfo {
        ClientInfo {
            name: "redis-rs".into(),
            version: crate::versions::REDIS_RS.into(),
            connections: self.connections.len(),
        }
    }

    fn counters(&self) -> &ClientCounters {
        &self.counters
    }
}
