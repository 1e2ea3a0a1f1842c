//! [`RedisOps`] on the `redis` crate (redis-rs): `ConnectionManager`s, each one multiplexed
//! connection that reconnects by itself, used round-robin; on a Redis Cluster
//! (`redis-cluster://`), `cluster_async` connections, which route each key to its slot's
//! primary and follow MOVED and ASK; behind Sentinels (`redis-sentinel://`), a connection to
//! the primary they name that asks them again after a failover ([`SentinelPrimary`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
    Sentinel(Arc<SentinelPrimary>),
}

impl Connection {
    async fn query<T: redis::FromRedisValue>(self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Connection::Single(mut c) => cmd.query_async(&mut c).await,
            Connection::Cluster(mut c) => cmd.query_async(&mut c).await,
            Connection::Sentinel(primary) => {
                let reply = cmd.query_async(&mut primary.manager()).await;
                primary.after(&reply);
                reply
            }
        }
    }

    async fn pipeline<T: redis::FromRedisValue>(
        self,
        pipeline: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            Connection::Single(mut c) => pipeline.query_async(&mut c).await,
            Connection::Cluster(mut c) => pipeline.query_async(&mut c).await,
            Connection::Sentinel(primary) => {
                let reply = pipeline.query_async(&mut primary.manager()).await;
                primary.after(&reply);
                reply
            }
        }
    }
}

/// The primary a group of Sentinels names, followed across failovers. Each connection is a
/// `ConnectionManager` to the primary named at connect time; after a reply that says the
/// primary is gone (a refused or dropped connection, a timeout) or demoted (`READONLY`: the old
/// primary came back as a replica), the Sentinels are asked again in the background — redis-rs's
/// `SentinelClient`, which also checks that the node it names answers `ROLE` as a master — and
/// a new primary replaces the old one. The command that failed stays failed (its outcome is
/// unknown to the strategy, which counts it); later ones go to the new primary.
struct SentinelPrimary {
    sentinels: tokio::sync::Mutex<SentinelAsked>,
    current: std::sync::RwLock<(String, ConnectionManager)>,
    settings: RedisSettings,
    /// Primaries this connection moved to (shared with the client's counters).
    followed: Arc<std::sync::atomic::AtomicU64>,
}

struct SentinelAsked {
    client: redis::sentinel::SentinelClient,
    last: Option<Instant>,
}

/// How often one connection may ask the Sentinels while its primary stays unreachable: the
/// Sentinels themselves wait `down-after-milliseconds` before they fail over.
const SENTINEL_ASK_INTERVAL: Duration = Duration::from_millis(200);

impl SentinelPrimary {
    async fn connect(
        sentinels: &[String],
        service: &str,
        credentials: &str,
        settings: &RedisSettings,
        followed: Arc<std::sync::atomic::AtomicU64>,
    ) -> redis::RedisResult<Arc<SentinelPrimary>> {
        use redis::IntoConnectionInfo;
        // The primary's credentials, read as redis-rs reads them from a URL.
        let primary_info = format!("{}{credentials}127.0.0.1", super::topology::REDIS)
            .into_connection_info()?
            .redis_settings()
            .clone();
        let mut client = redis::sentinel::SentinelClient::build(
            sentinels.to_vec(),
            service.to_string(),
            Some(
                redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(primary_info),
            ),
            redis::sentinel::SentinelServerType::Master,
        )?;
        let (address, manager) = primary_of(&mut client, settings).await?;
        Ok(Arc::new(SentinelPrimary {
            sentinels: tokio::sync::Mutex::new(SentinelAsked {
                client,
                last: Some(Instant::now()),
            }),
            current: std::sync::RwLock::new((address, manager)),
            settings: settings.clone(),
            followed,
        }))
    }

    fn manager(&self) -> ConnectionManager {
        self.current.read().expect("not poisoned").1.clone()
    }

    /// Asks the Sentinels again, in the background, if `reply` says the primary is gone.
    fn after<T>(self: &Arc<Self>, reply: &redis::RedisResult<T>) {
        let Err(e) = reply else { return };
        let gone = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        if gone {
            let primary = Arc::clone(self);
            tokio::spawn(async move { primary.follow().await });
        }
    }

    async fn follow(&self) {
        // One asks at a time; the others' failures wait for its answer.
        let Ok(mut asked) = self.sentinels.try_lock() else {
            return;
        };
        if asked
            .last
            .is_some_and(|last| last.elapsed() < SENTINEL_ASK_INTERVAL)
        {
            return;
        }
        asked.last = Some(Instant::now());
        let named = tokio::time::timeout(
            self.settings.connect_timeout,
            primary_of(&mut asked.client, &self.settings),
        )
        .await;
        let Ok(Ok((address, manager))) = named else {
            return;
        };
        let mut current = self.current.write().expect("not poisoned");
        if current.0 != address {
            tracing::info!(
                from = %current.0,
                to = %address,
                "redis-rs: the Sentinels name a new primary; following it"
            );
            *current = (address, manager);
            self.followed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The primary the Sentinels name now, its address, and a connection to it.
async fn primary_of(
    client: &mut redis::sentinel::SentinelClient,
    settings: &RedisSettings,
) -> redis::RedisResult<(String, ConnectionManager)> {
    let primary = client.async_get_client().await?;
    let address = primary.get_connection_info().addr().to_string();
    let manager = ConnectionManager::new_with_config(primary, manager_config(settings)).await?;
    Ok((address, manager))
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
        let counters = ClientCounters::default();
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
                    super::topology::Address::Sentinel {
                        sentinels,
                        service,
                        credentials,
                    } => SentinelPrimary::connect(
                        sentinels,
                        service,
                        credentials,
                        settings,
                        Arc::clone(&counters.primaries_followed),
                    )
                    .await
                    .map(Connection::Sentinel),
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
            counters,
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
    ConnectionManager::new_with_config(client, manager_config(settings)).await
}

fn manager_config(settings: &RedisSettings) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.command_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
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
