//! The idempotency seam: one trait, one file per strategy.
//!
//! A strategy takes one decoded trade and decides, with Redis and/or Postgres, whether to apply
//! its business effect. What it decided is an [`Outcome`] — a result to count, never an error.
//! Errors are for what went wrong (a store that stayed unreachable through every retry).
//! Strategies see Redis only through [`RedisOps`](crate::redis::RedisOps), never a client type.

pub mod db_authority_redis_cache;
pub mod db_offsets;
pub mod db_only;
pub mod dual_db_first;
pub mod dual_redis_first;
pub mod kafka_transactions;
pub mod none;
pub mod parts;
pub mod redis_only;
pub mod redis_only_atomic;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use idembench_loadgen::Trade;
use serde::Serialize;

use crate::db::{Db, DbError};
use crate::redis::{RedisError, RedisOps};

/// What a strategy did with one copy of a trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The business transaction committed.
    Applied,
    /// The business transaction ran and the unique constraint on the trade id rejected it.
    CaughtByConstraint,
    /// Skipped: the idempotency store said this trade is done.
    SkippedDone,
    /// Skipped: another attempt holds the PROCESSING claim.
    SkippedInProgress,
}

impl Outcome {
    /// How a timeline says it.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::CaughtByConstraint => "caught by the unique constraint",
            Outcome::SkippedDone => "skipped as done",
            Outcome::SkippedInProgress => "skipped as in progress (PROCESSING)",
        }
    }
}

/// Where a message's processing time went, filled by the strategy as it goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    /// Checking and claiming the idempotency key (GET, SET NX).
    pub claim: Option<Duration>,
    /// The business transaction, BEGIN to COMMIT.
    pub business: Option<Duration>,
    /// Marking the key DONE.
    pub mark_done: Option<Duration>,
    /// Waiting behind another attempt's PROCESSING key (`--on-in-progress wait`).
    pub stalled: Option<Duration>,
}

/// Runs `step` and adds its duration to `slot`.
pub async fn timed<T>(slot: &mut Option<Duration>, step: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let value = step.await;
    *slot = Some(slot.unwrap_or_default() + start.elapsed());
    value
}

#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    /// An injected crash: the processor must stop as if killed (not a failure of a store).
    #[error(transparent)]
    Crash(#[from] crate::faults::Crash),
    #[error("{0} (gave up after {1} attempts)")]
    Redis(RedisError, u32),
    #[error("{0} (gave up after {1} attempts)")]
    Db(DbError, u32),
    /// A Kafka transaction failed or was aborted (kafka-transactions); its effects are
    /// invisible at read_committed and its messages are processed again after a restart.
    #[error("{0}")]
    Transaction(String),
}

/// One message as a strategy sees it: the trade and where it sits in Kafka.
#[derive(Clone, Copy, Debug)]
pub struct Incoming<'a> {
    pub trade: &'a Trade,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

pub trait Strategy: Send + Sync {
    /// Processes a batch of messages, in order, returning one outcome each. The default runs
    /// them one at a time; strategies whose cost model changes with batching override it and
    /// use one database transaction for the whole batch, with per-message semantics unchanged.
    fn process_batch<'a>(
        &'a self,
        batch: &'a [Incoming<'a>],
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Vec<Outcome>, StrategyError>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(batch.len());
            for message in batch {
                outcomes.push(self.process(message, stages).await?);
            }
            Ok(outcomes)
        })
    }

    fn process<'a>(
        &'a self,
        message: &'a Incoming<'a>,
        stages: &'a mut StageTimes,
    ) -> BoxFuture<'a, Result<Outcome, StrategyError>>;

    /// Whether this strategy keeps consumer offsets itself, so the processor must ask
    /// [`Strategy::resume_offsets`] where newly assigned partitions resume.
    fn keeps_offsets(&self) -> bool {
        false
    }

    /// The next offset of each of `partitions` as the strategy stored it; partitions it has
    /// no offset for are left out (they resume where Kafka says).
    fn resume_offsets<'a>(
        &'a self,
        _topic: &'a str,
        _partitions: &'a [i32],
    ) -> BoxFuture<'a, Result<Vec<(i32, i64)>, StrategyError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The strategies a run can use. Names are a contract (`--strategy`, `result.json`).
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
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Apply every copy: the baseline that shows what duplicates cost.
    None,
    /// The design note: GET DONE? → SET NX PX PROCESSING → business tx → SET PX DONE.
    RedisOnly,
    /// redis-only with check-and-claim in one round trip (SET NX PX GET).
    RedisOnlyAtomic,
    /// An inbox row in the business transaction; no Redis.
    DbOnly,
    /// Redis claim, business tx with inbox, SET DONE, then COMMIT (the note's inconsistency example).
    DualRedisFirst,
    /// Redis claim, business tx with inbox and COMMIT, then SET DONE.
    DualDbFirst,
    /// The DB inbox decides; Redis only caches DONE to skip duplicates early. No lock.
    DbAuthorityRedisCache,
    /// Kafka's advice for external sinks: partition offsets stored in Postgres in the business
    /// transaction; no inbox, no Redis.
    DbOffsets,
    /// Kafka's exactly-once: each unit's effect records and input offsets in one Kafka
    /// transaction, then a sink at read_committed that writes them to Postgres with its own
    /// offsets in the business transaction (db-offsets on the effects topic).
    KafkaTransactions,
}

impl StrategyKind {
    /// The strategies a matrix runs when none are named: all of them.
    pub const ALL: [StrategyKind; 9] = [
        StrategyKind::None,
        StrategyKind::RedisOnly,
        StrategyKind::RedisOnlyAtomic,
        StrategyKind::DbOnly,
        StrategyKind::DualRedisFirst,
        StrategyKind::DualDbFirst,
        StrategyKind::DbAuthorityRedisCache,
        StrategyKind::DbOffsets,
        StrategyKind::KafkaTransactions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::None => "none",
            StrategyKind::RedisOnly => "redis-only",
            StrategyKind::RedisOnlyAtomic => "redis-only-atomic",
            StrategyKind::DbOnly => "db-only",
            StrategyKind::DualRedisFirst => "dual-redis-first",
            StrategyKind::DualDbFirst => "dual-db-first",
            StrategyKind::DbAuthorityRedisCache => "db-authority-redis-cache",
            StrategyKind::DbOffsets => "db-offsets",
            StrategyKind::KafkaTransactions => "kafka-transactions",
        }
    }

    /// What this strategy is and can do: the one place validation, the oracle, run names and
    /// reports ask.
    pub fn capabilities(self) -> Capabilities {
        let none = Capabilities::default();
        match self {
            StrategyKind::None => Capabilities {
                knows_messages_only: true,
                business_write_optional: true,
                ..none
            },
            StrategyKind::RedisOnly => Capabilities {
                uses_redis: true,
                claims: true,
                claims_in_two_steps: true,
                redis_decides: true,
                business_write_optional: true,
                ..none
            },
            StrategyKind::RedisOnlyAtomic => Capabilities {
                uses_redis: true,
                claims: true,
                redis_decides: true,
                business_write_optional: true,
                ..none
            },
            StrategyKind::DbOnly => Capabilities {
                database_decides: true,
                batches: true,
                ..none
            },
            StrategyKind::DualRedisFirst | StrategyKind::DualDbFirst => Capabilities {
                uses_redis: true,
                claims: true,
                claims_in_two_steps: true,
                ..none
            },
            StrategyKind::DbAuthorityRedisCache => Capabilities {
                uses_redis: true,
                database_decides: true,
                batches: true,
                ..none
            },
            StrategyKind::DbOffsets => Capabilities {
                database_decides: true,
                knows_messages_only: true,
                batches: true,
                stores_offsets: true,
                ..none
            },
            // Its sink is db-offsets, so it decides as db-offsets does: per message, in a
            // transaction (Kafka's, then Postgres's).
            StrategyKind::KafkaTransactions => Capabilities {
                database_decides: true,
                knows_messages_only: true,
                batches: true,
                stores_offsets: true,
                kafka_transactions: true,
                ..none
            },
        }
    }
}

/// What a strategy is and can do, asked instead of matching on [`StrategyKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Talks to Redis (so a run connects a client and names it).
    pub uses_redis: bool,
    /// Decides by a Redis PROCESSING claim, which a crash can strand.
    pub claims: bool,
    /// Claims with GET, then SET NX PX: what `--redis-pipeline` changes.
    pub claims_in_two_steps: bool,
    /// Redis alone decides: nothing in the database transaction checks, so a lost or expired
    /// DONE mark lets a copy apply again.
    pub redis_decides: bool,
    /// The database decides (inbox row or stored offsets) inside the business transaction.
    pub database_decides: bool,
    /// Knows Kafka messages, not trades: a trade published twice applies twice without the
    /// unique constraint.
    pub knows_messages_only: bool,
    /// `--batch-size` changes how it writes (one transaction per polled batch).
    pub batches: bool,
    /// Stores each partition's next offset in the business transaction and resumes from it,
    /// so its messages must finish in offset order (no `--in-flight` above 1).
    pub stores_offsets: bool,
    /// `--no-business-write` applies: its idempotency is not the database write.
    pub business_write_optional: bool,
    /// Consumes, transforms and produces in Kafka transactions, with a sink to Postgres.
    pub kafka_transactions: bool,
}

/// Settings shared by the strategies that use them.
#[derive(Clone, Debug, Serialize)]
pub struct StrategySettings {
    /// Time-to-live of a PROCESSING claim (design note: 5 min).
    pub processing_ttl: Duration,
    /// Time-to-live of a DONE mark (design note: 7 days).
    pub done_ttl: Duration,
    /// Prefix of every idempotency key this run writes.
    pub key_prefix: String,
    /// What redis-only does on a PROCESSING key.
    pub on_in_progress: parts::OnInProgress,
    /// Send a two-step claim's GET and SET NX PX in one pipeline (`--redis-pipeline`).
    pub redis_pipeline: bool,
    pub retry: RetryPolicy,
    /// Crashes to inject at the strategy's own points (after-claim, after-db-commit, ...).
    #[serde(skip)]
    pub faults: Arc<crate::faults::Faults>,
}

impl StrategySettings {
    pub fn key(&self, trade_id: u64) -> String {
        format!("{}{}", self.key_prefix, trade_id)
    }
}

/// How often a step is tried when its store fails, and how long to wait between tries.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// Tries `step` until it succeeds or `attempts` are used up, backing off exponentially.
    /// Retrying one step (never the whole flow) matters: a Redis-only worker that retried from
    /// the top after claiming would find its own PROCESSING key and skip the trade for good.
    pub async fn run<T, E, F, Fut>(&self, step: F) -> Result<T, (E, u32)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        self.run_unless(step, |_| false).await
    }

    /// [`RetryPolicy::run`], except that errors for which `final_error` holds end it at once.
    pub async fn run_unless<T, E, F, Fut>(
        &self,
        mut step: F,
        final_error: impl Fn(&E) -> bool,
    ) -> Result<T, (E, u32)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let mut backoff = self.first_backoff;
        let mut attempt = 1;
        loop {
            match step().await {
                Ok(value) => return Ok(value),
                Err(error) if attempt >= self.attempts || final_error(&error) => {
                    return Err((error, attempt));
                }
                Err(error) => {
                    // One warning per outage a worker meets, not one per attempt.
                    if attempt == 1 {
                        tracing::warn!(%error, "step failed; retrying with backoff");
                    } else {
                        tracing::debug!(%error, attempt, "step failed; retrying in {backoff:?}");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                    attempt += 1;
                }
            }
        }
    }
}

/// Builds the chosen strategy over the stores it needs.
pub fn build(
    kind: StrategyKind,
    settings: StrategySettings,
    db: Db,
    redis: Option<Arc<dyn RedisOps>>,
    memory: Option<Arc<crate::db::MemoryEffects>>,
) -> Arc<dyn Strategy> {
    let tx = parts::DbTx::new(db, settings.retry, settings.faults.clone()).with_memory(memory);
    let keys = || {
        let redis = redis
            .clone()
            .unwrap_or_else(|| panic!("{} needs a Redis client", kind.name()));
        parts::RedisKeys::new(redis, settings.clone())
    };
    match kind {
        StrategyKind::None => Arc::new(none::new(tx)),
        StrategyKind::RedisOnly => Arc::new(redis_only::new(tx, keys())),
        StrategyKind::RedisOnlyAtomic => Arc::new(redis_only_atomic::new(tx, keys())),
        StrategyKind::DbOnly => Arc::new(db_only::new(tx)),
        StrategyKind::DbOffsets => Arc::new(db_offsets::new(tx)),
        // Stage one; its sink is built as db-offsets.
        StrategyKind::KafkaTransactions => Arc::new(kafka_transactions::Transform),
        StrategyKind::DualRedisFirst => Arc::new(dual_redis_first::new(tx, keys())),
        StrategyKind::DualDbFirst => Arc::new(dual_db_first::new(tx, keys())),
        StrategyKind::DbAuthorityRedisCache => Arc::new(
            db_authority_redis_cache::DbAuthorityRedisCache::new(tx, keys()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_the_first_success_and_gives_up_after_the_last_attempt() {
        let policy = RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(15),
        };
        let calls = AtomicU32::new(0);
        let ok: Result<u32, (String, u32)> = policy
            .run(|| async {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n < 2 {
                    Err(format!("fail {n}"))
                } else {
                    Ok(n)
                }
            })
            .await;
        assert_eq!(ok, Ok(2));
        calls.store(0, Ordering::SeqCst);
        let err: Result<u32, (String, u32)> = policy
            .run(|| async { Err(format!("fail {}", calls.fetch_add(1, Ordering::SeqCst) + 1)) })
            .await;
        assert_eq!(err, Err(("fail 3".to_string(), 3)));
    }
}
