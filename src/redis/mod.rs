//! The Redis seam: the few operations idempotency strategies need, behind one trait, with one
//! implementation per client library ([`redis_rs`] and [`fred_client`]).
//!
//! Strategies hold an `Arc<dyn RedisOps>` and never learn which library serves it. Futures are
//! boxed so the client can be chosen at run time; one allocation per command is noise next to a
//! network round trip.

pub mod admin;
pub mod fred_client;
pub mod redis_rs;
pub mod topology;

pub use topology::{MaxmemoryPolicy, RedisPersistence, RedisTopology};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

/// The value an idempotency key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    Processing,
    Done,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Processing => "PROCESSING",
            KeyState::Done => "DONE",
        }
    }

    /// A bulk-string reply: nil (no key) or a state.
    fn from_reply(reply: Option<Vec<u8>>) -> Result<Option<KeyState>, RedisError> {
        reply.map(|value| KeyState::parse(&value)).transpose()
    }

    fn parse(value: &[u8]) -> Result<KeyState, RedisError> {
        match value {
            b"PROCESSING" => Ok(KeyState::Processing),
            b"DONE" => Ok(KeyState::Done),
            other => Err(RedisError::UnexpectedValue(
                String::from_utf8_lossy(other).into_owned(),
            )),
        }
    }
}

/// Something went wrong talking to Redis. "Key already claimed" is not an error: it is the
/// `false` of [`RedisOps::set_nx_px`].
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("cannot connect to Redis at {address}: {cause}")]
    Connect { address: String, cause: String },
    #[error("Redis {command} timed out after {timeout:?}")]
    Timeout {
        command: &'static str,
        timeout: Duration,
    },
    #[error("Redis {command} failed: {cause}")]
    Command {
        command: &'static str,
        cause: String,
    },
    #[error("an idempotency key holds {0:?}, which is neither PROCESSING nor DONE")]
    UnexpectedValue(String),
}

/// Which client serves the strategies, for `result.json`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ClientInfo {
    pub name: String,
    pub version: String,
    pub connections: usize,
}

/// Counters every client keeps, reported in `result.json` instead of crashing the run.
#[derive(Debug, Default)]
pub struct ClientCounters {
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Reconnections: fred's reconnect events; for redis-rs, the dropped-connection errors
    /// after which its ConnectionManager reconnects (it reports nothing else).
    pub reconnects: Arc<AtomicU64>,
    /// Behind Sentinels: connections that moved to a new primary after a failover.
    pub primaries_followed: Arc<AtomicU64>,
    /// Writes whose `WAIT` ([`WaitReplicas`]) saw fewer replicas acknowledge than asked.
    pub wait_short: AtomicU64,
}

/// [`ClientCounters`] read at one moment; summed over processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CounterValues {
    pub errors: u64,
    pub timeouts: u64,
    pub reconnects: u64,
    #[serde(default)]
    pub primaries_followed: u64,
    #[serde(default)]
    pub wait_short: u64,
}

impl CounterValues {
    pub fn add(&mut self, other: CounterValues) {
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.reconnects += other.reconnects;
        self.primaries_followed += other.primaries_followed;
        self.wait_short += other.wait_short;
    }
}

impl ClientCounters {
    pub fn values(&self) -> CounterValues {
        CounterValues {
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            primaries_followed: self.primaries_followed.load(Ordering::Relaxed),
            wait_short: self.wait_short.load(Ordering::Relaxed),
        }
    }

    /// Counts a `WAIT` that saw `acked` replicas where `wait` asked for more.
    fn waited(&self, wait: WaitReplicas, acked: i64) {
        if acked < i64::from(wait.replicas) {
            self.wait_short.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count<T>(&self, result: &Result<T, RedisError>) {
        match result {
            Err(RedisError::Timeout { .. }) => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
        }
    }
}

/// The operations strategies need. Keys and values are the strategy's; TTLs are in ms on the wire.
pub trait RedisOps: Send + Sync {
    /// `GET key`: the state, or `None` when the key does not exist (never set, or expired).
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyState>, RedisError>>;

    /// `SET key value NX PX ttl`: `true` if this call created the key, `false` if it existed.
    fn set_nx_px<'a>(
        &'a self,
        key: &'a str,
        value: KeyState,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, RedisError>>;

    /// `SET key value NX PX ttl GET` (Redis ≥ 7.0): check and claim in one round trip.
    /// `None` when this call created the key; otherwise the state the key already held.
    fn set_nx_px_get<'a>(
        &'a self,
        key: &'a str,
        value: KeyState,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<KeyState>, RedisError>>;

    /// `GET key` and `SET key value NX PX ttl` sent together in one pipeline (one round trip,
    /// two commands): the state `GET` saw, and whether `SET NX` created the key.
    fn get_then_set_nx_px<'a>(
        &'a self,
        key: &'a str,
        value: KeyState,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(Option<KeyState>, bool), RedisError>>;

    /// `SET key value PX ttl`, unconditionally.
    fn set_px<'a>(
        &'a self,
        key: &'a str,
        value: KeyState,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), RedisError>>;

    fn info(&self) -> ClientInfo;

    fn counters(&self) -> &ClientCounters;
}

/// The client libraries a run can use.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::EnumMessage,
    Serialize,
    serde::Deserialize,
)]
#[strum(serialize_all = "kebab-case")]
pub enum RedisClientKind {
    #[serde(rename = "redis-rs")]
    RedisRs,
    #[serde(rename = "fred")]
    Fred,
}

impl RedisClientKind {
    pub fn name(self) -> &'static str {
        match self {
            RedisClientKind::RedisRs => "redis-rs",
            RedisClientKind::Fred => "fred",
        }
    }
}

/// How to reach Redis and how patient to be.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub url: String,
    pub connections: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// `--redis-wait-replicas`: every write is followed, on its connection, by `WAIT`.
    pub wait: Option<WaitReplicas>,
}

/// `WAIT replicas timeout` after each write, on the connection that sent it, so the write
/// returns only once that many replicas acknowledged it (or the timeout passed: Redis then
/// answers how many did; a short count is not an error — the write happened — but is counted
/// as `wait_short`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitReplicas {
    pub replicas: u32,
    pub timeout: Duration,
}

impl RedisSettings {
    /// The command timeout a client applies: the configured one, plus a `WAIT`'s own.
    fn reply_timeout(&self) -> Duration {
        self.command_timeout + self.wait.map_or(Duration::ZERO, |w| w.timeout)
    }
}

/// Connects the chosen client, failing within `connect_timeout` if Redis does not answer.
pub async fn connect(
    kind: RedisClientKind,
    settings: &RedisSettings,
) -> Result<Arc<dyn RedisOps>, RedisError> {
    Ok(match kind {
        RedisClientKind::RedisRs => Arc::new(redis_rs::RedisRs::connect(settings).await?),
        RedisClientKind::Fred => Arc::new(fred_client::Fred::connect(settings).await?),
    })
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
