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

use super::{
    ClientCounters, ClientInfo, KeyState, RedisError, RedisOps, RedisSettings, WaitReplicas, ttl_ms,
};
use crate::redact::redact_url;

/// One connection of either kind; both are cheap handles onto multiplexed connections.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
    /// One of the managers of the primary the Sentinels name, by index.
    Sentinel(Arc<SentinelPrimary>, usize),
}

impl Connection {
    async fn query<T: redis::FromRedisValue>(self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Connection::Single(mut c) => cmd.query_async(&mut c).await,
            Connection::Cluster(mut c) => cmd.query_async(&mut c).await,
            Connection::Sentinel(primary, i) => {
                let reply = cmd.query_async(&mut primary.manager(i)).await;
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
            Connection::Sentinel(primary, i) => {
                let reply = pipeline.query_async(&mut primary.manager(i)).await;
                primary.after(&reply);
                reply
            }
        }
    }
}

/// The primary a group of Sentinels names, followed across failovers, for all of a client's
/// connections at once. Each connection is a `ConnectionManager` to the primary named at
/// connect time; after a reply on any of them that says the primary is gone (a refused or
/// dropped connection, a timeout) or demoted (`READONLY`: the old primary came back as a
/// replica), the Sentinels are asked again in the background — redis-rs's `SentinelClient`,
/// which also checks that the node it names answers `ROLE` as a master — and connections to a
/// new primary replace every old one. (Followed one connection at a time, a connection that
/// met no error after the promotion stayed on the dead address, and a retry that landed on
/// it failed again.) The command that failed stays failed (its outcome is unknown to the
/// strategy, which counts it); later ones go to the new primary.
struct SentinelPrimary {
    sentinels: tokio::sync::Mutex<SentinelAsked>,
    current: std::sync::RwLock<(String, Vec<ConnectionManager>)>,
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
        let (address, managers) = primary_of(&mut client, settings).await?;
        Ok(Arc::new(SentinelPrimary {
            sentinels: tokio::sync::Mutex::new(SentinelAsked {
                client,
                last: Some(Instant::now()),
            }),
            current: std::sync::RwLock::new((address, managers)),
            settings: settings.clone(),
            followed,
        }))
    }

    fn manager(&self, i: usize) -> ConnectionManager {
        let current = self.current.read().expect("not poisoned");
        current.1[i % current.1.len()].clone()
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
        let (address, managers) = match named {
            Ok(Ok(named)) => named,
            Ok(Err(error)) => {
                tracing::debug!(%error, "redis-rs: asking the Sentinels failed");
                return;
            }
            Err(_) => {
                tracing::debug!("redis-rs: the Sentinels did not answer in time");
                return;
            }
        };
        let mut current = self.current.write().expect("not poisoned");
        if current.0 != address {
            tracing::info!(
                from = %current.0,
                to = %address,
                "redis-rs: the Sentinels name a new primary; following it"
            );
            let moved = managers.len() as u64;
            *current = (address, managers);
            self.followed.fetch_add(moved, Ordering::Relaxed);
        }
    }
}

/// The primary the Sentinels name now, its address, and `settings.connections` connections
/// to it.
async fn primary_of(
    client: &mut redis::sentinel::SentinelClient,
    settings: &RedisSettings,
) -> redis::RedisResult<(String, Vec<ConnectionManager>)> {
    let primary = client.async_get_client().await?;
    let address = primary.get_connection_info().addr().to_string();
    let mut managers = Vec::with_capacity(settings.connections.max(1));
    for _ in 0..settings.connections.max(1) {
        managers.push(
            ConnectionManager::new_with_config(primary.clone(), manager_config(settings)).await?,
        );
    }
    Ok((address, managers))
}

pub struct RedisRs {
    connections: Vec<Connection>,
    /// Writes in flight on each connection, for `WAIT`'s choice of connection.
    writing: Vec<AtomicUsize>,
    next: AtomicUsize,
    command_timeout: Duration,
    wait: Option<WaitReplicas>,
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
        let count = settings.connections.max(1);
        let limit = settings.connect_timeout * 2;
        let mut connections = Vec::with_capacity(count);
        match &address {
            super::topology::Address::Standalone(url) => {
                for _ in 0..count {
                    connections.push(Connection::Single(
                        within(single(url, settings).boxed(), limit, &connect_error).await?,
                    ));
                }
            }
            super::topology::Address::Cluster(nodes) => {
                for _ in 0..count {
                    connections.push(Connection::Cluster(
                        within(cluster(nodes, settings).boxed(), limit, &connect_error).await?,
                    ));
                }
            }
            super::topology::Address::Sentinel {
                sentinels,
                service,
                credentials,
            } => {
                // One follower for all the connections: a failover any of them meets moves
                // them all.
                let primary = within(
                    SentinelPrimary::connect(
                        sentinels,
                        service,
                        credentials,
                        settings,
                        Arc::clone(&counters.primaries_followed),
                    )
                    .boxed(),
                    limit,
                    &connect_error,
                )
                .await?;
                connections.extend((0..count).map(|i| Connection::Sentinel(primary.clone(), i)));
            }
        }
        Ok(RedisRs {
            writing: connections.iter().map(|_| AtomicUsize::new(0)).collect(),
            connections,
            next: AtomicUsize::new(0),
            command_timeout: settings.reply_timeout(),
            wait: settings.wait,
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

    /// Sends a write's `commands` — followed, under `--redis-wait-replicas`, by `WAIT` on the
    /// same connection in the same pipeline (a cluster routes it with the key) — and reads the
    /// write's reply: one command's, or a tuple of several commands' replies.
    async fn write<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        commands: Vec<redis::Cmd>,
    ) -> Result<T, RedisError> {
        let single = commands.len() == 1;
        if self.wait.is_none() && single {
            if let Some(cmd) = commands.into_iter().next() {
                return self.query(command, cmd).await;
            }
            return Err(RedisError::Command {
                command,
                cause: "nothing to send".into(),
            });
        }
        let mut pipeline = redis::pipe();
        for cmd in commands {
            pipeline.add_command(cmd);
        }
        let Some(wait) = self.wait else {
            return self.query_pipeline(command, pipeline).await;
        };
        pipeline.add_command(
            redis::cmd("WAIT")
                .arg(wait.replicas)
                .arg(ttl_ms(wait.timeout))
                .clone(),
        );
        // A WAIT holds its connection until the replicas answer, and every command behind it
        // on that multiplexed connection waits too: it goes where the fewest writes wait.
        let (i, _) = self
            .writing
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| n.load(Ordering::Relaxed))
            .unwrap_or((0, &self.writing[0]));
        self.writing[i].fetch_add(1, Ordering::Relaxed);
        let reply = tokio::time::timeout(
            self.command_timeout,
            self.connections[i]
                .clone()
                .pipeline::<Vec<redis::Value>>(&pipeline),
        )
        .await;
        self.writing[i].fetch_sub(1, Ordering::Relaxed);
        let mut replies = self.classified(command, reply)?;
        let unexpected = |cause: String| RedisError::Command { command, cause };
        match replies.pop() {
            Some(redis::Value::Int(acked)) => self.counters.waited(wait, acked),
            other => return Err(unexpected(format!("WAIT answered {other:?}"))),
        }
        let reply = match (single, replies.pop()) {
            (true, Some(reply)) => reply,
            (true, None) => return Err(unexpected("no reply before WAIT's".into())),
            (false, last) => {
                replies.extend(last);
                redis::Value::Array(replies)
            }
        };
        redis::from_redis_value(reply).map_err(|e| unexpected(e.to_string()))
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

/// `connecting`, given at most `limit`, its failure in `connect_error`'s words.
async fn within<T>(
    connecting: BoxFuture<'_, redis::RedisResult<T>>,
    limit: Duration,
    connect_error: &impl Fn(String) -> RedisError,
) -> Result<T, RedisError> {
    tokio::time::timeout(limit, connecting)
        .await
        .map_err(|_| connect_error(format!("no answer within {limit:?}")))?
        .map_err(|e| connect_error(e.to_string()))
}

/// A reconnecting multiplexed connection to one server.
async fn single(url: &str, settings: &RedisSettings) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    ConnectionManager::new_with_config(client, manager_config(settings)).await
}

fn manager_config(settings: &RedisSettings) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.reply_timeout()))
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
        .response_timeout(settings.reply_timeout())
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
                .write("SET NX PX", vec![set(key, value, ttl, true, false)])
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
                self.write("SET NX PX GET", vec![set(key, value, ttl, true, true)])
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
            let (state, created): (Option<Vec<u8>>, Option<String>) = self
                .write(
                    "GET + SET NX PX",
                    vec![
                        redis::cmd("GET").arg(key).clone(),
                        set(key, value, ttl, true, false),
                    ],
                )
                .await?;
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
            self.write("SET PX", vec![set(key, value, ttl, false, false)])
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
