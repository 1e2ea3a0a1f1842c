//! The two halves strategies are composed of, so no strategy copies another's steps:
//!
//! - [`RedisKeys`]: the idempotency key in Redis — check and claim (two round trips or one,
//!   skipping or waiting on PROCESSING), mark DONE, read DONE as a cache.
//! - [`transact`]: the Postgres transaction — optionally an inbox row keyed by the trade id
//!   (`ON CONFLICT DO NOTHING`: nothing inserted means already done), the business effects,
//!   and optionally one Redis step just before COMMIT (the design note's Redis-first order).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Incoming, Outcome, RetryPolicy, StageTimes, StrategyError, StrategySettings, timed};
use crate::db::business::{self, BusinessOutcome};
use crate::db::{Db, DbError};
use crate::faults::trace::What;
use crate::faults::{CrashPoint, Faults};
use crate::redis::{KeyState, RedisError, RedisOps};

/// What a redis-only strategy does when it finds a PROCESSING key.
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
#[strum(serialize_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum OnInProgress {
    /// Treat the copy as a duplicate and skip it, as the design note says.
    Skip,
    /// Poll with backoff until the key turns DONE (skip) or expires (claim and process).
    Wait,
}

/// How the key is checked and claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimStyle {
    /// `GET`, then `SET NX PX`: the design note's two round trips, or one pipelined round
    /// trip with `--redis-pipeline` ([`StrategySettings::redis_pipeline`]).
    TwoStep,
    /// `SET NX PX GET`: one round trip, same guarantee.
    Atomic,
}

/// Whether this attempt may go on to the business transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    Skip(Outcome),
}

/// The Redis half.
pub struct RedisKeys {
    redis: Arc<dyn RedisOps>,
    settings: StrategySettings,
}

/// A reply as a timeline shows it.
fn state_reply(state: Option<KeyState>) -> &'static str {
    state.map_or("nil", KeyState::as_str)
}

fn set_reply(created: bool) -> &'static str {
    if created { "OK" } else { "nil (not set)" }
}

impl RedisKeys {
    /// A command that failed through every retry: traced, then the strategy's error.
    fn failed(
        &self,
        key: &str,
        command: &'static str,
        (error, attempts): (RedisError, u32),
    ) -> StrategyError {
        self.traced(key, command, "error");
        StrategyError::Redis(error, attempts)
    }

    pub fn new(redis: Arc<dyn RedisOps>, settings: StrategySettings) -> RedisKeys {
        RedisKeys { redis, settings }
    }

    pub fn key(&self, trade_id: u64) -> String {
        self.settings.key(trade_id)
    }

    fn retry(&self) -> &RetryPolicy {
        &self.settings.retry
    }

    /// Records a command on `key` and its reply in the trade's trace.
    fn traced(&self, key: &str, command: &'static str, reply: &'static str) {
        if let Some(trade_id) = key
            .strip_prefix(self.settings.key_prefix.as_str())
            .and_then(|id| id.parse().ok())
        {
            self.settings
                .faults
                .trace(trade_id, What::Redis { command, reply });
        }
    }

    /// Checks the key and claims it with PROCESSING. Time spent waiting on someone else's
    /// PROCESSING goes to `stages.stalled`; the rest to `stages.claim`.
    pub async fn claim(
        &self,
        key: &str,
        style: ClaimStyle,
        stages: &mut StageTimes,
    ) -> Result<Claim, StrategyError> {
        let ttl = self.settings.processing_ttl;
        let mut stalled_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(2);
        // A PROCESSING key outlives its TTL only if its owner keeps renewing it; past this
        // point the wait gives up and skips.
        let give_up = Instant::now() + ttl + Duration::from_secs(1);
        let decision = loop {
            let step = async {
                match style {
                    // Both commands in one round trip. SET NX decides: it fails whenever GET
                    // found a key (and when someone claimed in between), exactly as in two
                    // steps; a key that expired between the two is claimed, as if GET had run
                    // a moment later.
                    ClaimStyle::TwoStep if self.settings.redis_pipeline => {
                        let (state, created) = self
                            .retry()
                            .run(|| {
                                self.redis
                                    .get_then_set_nx_px(key, KeyState::Processing, ttl)
                            })
                            .await
                            .map_err(|e| self.failed(key, "GET + SET NX PX PROCESSING", e))?;
                        self.traced(key, "GET (pipelined)", state_reply(state));
                        self.traced(key, "SET NX PX PROCESSING (pipelined)", set_reply(created));
                        Ok::<_, StrategyError>(if created {
                            None
                        } else {
                            Some(state.unwrap_or(KeyState::Processing))
                        })
                    }
                    ClaimStyle::TwoStep => match self
                        .retry()
                        .run(|| self.redis.get(key))
                        .await
                        .map_err(|e| self.failed(key, "GET", e))?
                    {
                        Some(state) => {
                            self.traced(key, "GET", state_reply(Some(state)));
                            Ok(Some(state))
                        }
                        None => {
                            self.traced(key, "GET", state_reply(None));
                            let claimed = self
                                .retry()
                                .run(|| self.redis.set_nx_px(key, KeyState::Processing, ttl))
                                .await
                                .map_err(|e| self.failed(key, "SET NX PX PROCESSING", e))?;
                            self.traced(key, "SET NX PX PROCESSING", set_reply(claimed));
                            // Lost the race between GET and SET NX: someone holds it now.
                            Ok(if claimed {
                                None
                            } else {
                                Some(KeyState::Processing)
                            })
                        }
                    },
                    ClaimStyle::Atomic => {
                        let state = self
                            .retry()
                            .run(|| self.redis.set_nx_px_get(key, KeyState::Processing, ttl))
                            .await
                            .map_err(|e| self.failed(key, "SET NX PX GET PROCESSING", e))?;
                        self.traced(key, "SET NX PX GET PROCESSING", state_reply(state));
                        Ok(state)
                    }
                }
            };
            let existing = timed(&mut stages.claim, step).await?;
            match (existing, self.settings.on_in_progress) {
                (None, _) => break Claim::Claimed,
                (Some(KeyState::Done), _) => break Claim::Skip(Outcome::SkippedDone),
                (Some(KeyState::Processing), OnInProgress::Skip) => {
                    break Claim::Skip(Outcome::SkippedInProgress);
                }
                (Some(KeyState::Processing), OnInProgress::Wait) => {
                    stalled_since.get_or_insert_with(Instant::now);
                    if Instant::now() > give_up {
                        break Claim::Skip(Outcome::SkippedInProgress);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
            }
        };
        if let Some(since) = stalled_since {
            stages.stalled = Some(since.elapsed());
        }
        Ok(decision)
    }

    /// `SET key DONE PX done_ttl`, timed as `mark_done`.
    pub async fn mark_done(&self, key: &str, stages: &mut StageTimes) -> Result<(), StrategyError> {
        let duration = self.mark_done_untimed(key).await?;
        stages.mark_done = Some(stages.mark_done.unwrap_or_default() + duration);
        Ok(())
    }

    async fn mark_done_untimed(&self, key: &str) -> Result<Duration, StrategyError> {
        let started = Instant::now();
        let ttl = self.settings.done_ttl;
        self.retry()
            .run(|| self.redis.set_px(key, KeyState::Done, ttl))
            .await
            .map_err(|e| self.failed(key, "SET PX DONE", e))?;
        self.traced(key, "SET PX DONE", "OK");
        Ok(started.elapsed())
    }

    /// True when the key says DONE (a cache read: absence proves nothing).
    pub async fn is_done(&self, key: &str, stages: &mut StageTimes) -> Result<bool, StrategyError> {
        let state = timed(&mut stages.claim, self.retry().run(|| self.redis.get(key)))
            .await
            .map_err(|e| self.failed(key, "GET", e))?;
        self.traced(key, "GET", state_reply(state));
        Ok(state == Some(KeyState::Done))
    }
}

/// What the Postgres transaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Committed: inbox row (if any) and business effects.
    Applied,
    /// The inbox already held this trade id; rolled back.
    AlreadyDone,
    /// The trade id's unique constraint rejected the trade row; rolled back.
    CaughtByConstraint,
}

impl Effect {
    /// How a timeline says it.
    pub fn describe(self) -> &'static str {
        match self {
            Effect::Applied => "committed",
            Effect::AlreadyDone => "rolled back: the inbox already holds the trade",
            Effect::CaughtByConstraint => {
                "rolled back: the unique constraint rejected the trade row"
            }
        }
    }

    /// The outcome a strategy reports for this effect.
    pub fn outcome(self) -> Outcome {
        match self {
            Effect::Applied => Outcome::Applied,
            Effect::AlreadyDone => Outcome::SkippedDone,
            Effect::CaughtByConstraint => Outcome::CaughtByConstraint,
        }
    }
}

/// What goes into the transaction besides the business effects.
#[derive(Clone, Copy)]
pub struct TxShape<'a> {
    /// Insert an inbox row first; a conflict means the trade is done.
    pub inbox: bool,
    /// Keep the partition's next offset in the same transaction; a message below it is a
    /// redelivery and is skipped (db-offsets).
    pub store_offset: bool,
    /// Mark this key DONE after the effects and before COMMIT (Redis-first dual write).
    pub mark_done_before_commit: Option<(&'a RedisKeys, &'a str)>,
}

impl TxShape<'_> {
    pub const EFFECTS_ONLY: TxShape<'static> = TxShape {
        inbox: false,
        store_offset: false,
        mark_done_before_commit: None,
    };
    pub const INBOX: TxShape<'static> = TxShape {
        inbox: true,
        store_offset: false,
        mark_done_before_commit: None,
    };
    pub const OFFSETS: TxShape<'static> = TxShape {
        inbox: false,
        store_offset: true,
        mark_done_before_commit: None,
    };
}

/// The database half as a strategy holds it: where, how patiently, and which crashes to inject.
pub struct DbTx {
    db: Db,
    retry: RetryPolicy,
    faults: Arc<Faults>,
    memory: Option<Arc<crate::db::MemoryEffects>>,
}

impl DbTx {
    pub fn new(db: Db, retry: RetryPolicy, faults: Arc<Faults>) -> DbTx {
        DbTx {
            db,
            retry,
            faults,
            memory: None,
        }
    }

    pub fn with_memory(self, memory: Option<Arc<crate::db::MemoryEffects>>) -> DbTx {
        DbTx { memory, ..self }
    }

    /// [`transact`] for one message, then the `after-db-commit` crash point.
    pub async fn run(
        &self,
        message: &Incoming<'_>,
        shape: TxShape<'_>,
        stages: &mut StageTimes,
    ) -> Result<Effect, StrategyError> {
        if let Some(memory) = &self.memory {
            timed(&mut stages.business, async {
                memory.apply(message.partition, message.trade)
            })
            .await;
            self.faults.trace(
                message.trade.trade_id,
                What::Transaction("applied in memory (--no-business-write)"),
            );
            self.faults
                .at(CrashPoint::AfterDbCommit, message.trade.trade_id)?;
            return Ok(Effect::Applied);
        }
        let effect = transact(&self.db, &self.retry, &self.faults, message, shape, stages).await?;
        self.faults
            .trace(message.trade.trade_id, What::Transaction(effect.describe()));
        if effect == Effect::Applied {
            self.faults
                .at(CrashPoint::AfterDbCommit, message.trade.trade_id)?;
        }
        Ok(effect)
    }

    /// [`transact_batch`], then the `after-db-commit` crash point for each applied message.
    pub async fn run_batch(
        &self,
        batch: &[Incoming<'_>],
        shape: TxShape<'_>,
        stages: &mut StageTimes,
    ) -> Result<Vec<Effect>, StrategyError> {
        if self.memory.is_some() {
            let mut effects = Vec::with_capacity(batch.len());
            for message in batch {
                effects.push(self.run(message, shape, stages).await?);
            }
            return Ok(effects);
        }
        let effects =
            transact_batch(&self.db, &self.retry, &self.faults, batch, shape, stages).await?;
        for (message, effect) in batch.iter().zip(&effects) {
            self.faults
                .trace(message.trade.trade_id, What::Transaction(effect.describe()));
        }
        for (message, effect) in batch.iter().zip(&effects) {
            if *effect == Effect::Applied {
                self.faults
                    .at(CrashPoint::AfterDbCommit, message.trade.trade_id)?;
            }
        }
        Ok(effects)
    }

    /// The `after-claim` crash point, for strategies that claim in Redis first.
    pub fn claimed(&self, trade_id: u64) -> Result<(), StrategyError> {
        Ok(self.faults.at(CrashPoint::AfterClaim, trade_id)?)
    }
}

/// When a claiming strategy marks its key DONE, relative to the database COMMIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoneMark {
    AfterCommit,
    /// The design note's inconsistency example: DONE first, then COMMIT.
    BeforeCommit,
}

/// A strategy that claims the key in Redis, runs one transaction and marks DONE, in a chosen
/// order: redis-only (effects only, DONE after COMMIT; redis-only-atomic claims in one round
/// trip), dual-db-first (with an inbox row, DONE after) and dual-redis-first (with an inbox
/// row, DONE before COMMIT). The order is the design question, so it is a parameter here.
pub struct ClaimedTransaction {
    tx: DbTx,
    keys: RedisKeys,
    style: ClaimStyle,
    inbox: bool,
    done: DoneMark,
}

impl ClaimedTransaction {
    pub fn new(
        tx: DbTx,
        keys: RedisKeys,
        style: ClaimStyle,
        inbox: bool,
        done: DoneMark,
    ) -> ClaimedTransaction {
        ClaimedTransaction {
            tx,
            keys,
            style,
            inbox,
            done,
        }
    }
}

impl super::Strategy for ClaimedTransaction {
    fn process<'a>(
        &'a self,
        message: &'a Incoming<'a>,
        stages: &'a mut StageTimes,
    ) -> futures::future::BoxFuture<'a, Result<Outcome, StrategyError>> {
        Box::pin(async move {
            let trade_id = message.trade.trade_id;
            let key = self.keys.key(trade_id);
            if let Claim::Skip(outcome) = self.keys.claim(&key, self.style, stages).await? {
                return Ok(outcome);
            }
            self.tx.claimed(trade_id)?;
            let shape = TxShape {
                inbox: self.inbox,
                store_offset: false,
                mark_done_before_commit: (self.done == DoneMark::BeforeCommit)
                    .then_some((&self.keys, key.as_str())),
            };
            let effect = self.tx.run(message, shape, stages).await?;
            // DONE after COMMIT; and where it was due before COMMIT but the database already
            // held the effect (so no COMMIT ran), now, to bring Redis in line. A constraint-
            // caught copy also means the effect is there: later copies should skip early.
            if self.done == DoneMark::AfterCommit || effect != Effect::Applied {
                self.keys.mark_done(&key, stages).await?;
            }
            Ok(effect.outcome())
        })
    }
}

/// A strategy that is one Postgres transaction of a given shape and nothing else: `none`
/// (effects only), `db-only` (inbox) and `db-offsets` (stored offsets). Batches run as one
/// transaction; with stored offsets it also tells the processor where partitions resume.
pub struct SingleTransaction {
    tx: DbTx,
    shape: TxShape<'static>,
}

impl SingleTransaction {
    pub fn new(tx: DbTx, shape: TxShape<'static>) -> SingleTransaction {
        SingleTransaction { tx, shape }
    }
}

impl super::Strategy for SingleTransaction {
    fn process<'a>(
        &'a self,
        message: &'a Incoming<'a>,
        stages: &'a mut StageTimes,
    ) -> futures::future::BoxFuture<'a, Result<Outcome, StrategyError>> {
        Box::pin(async move { Ok(self.tx.run(message, self.shape, stages).await?.outcome()) })
    }

    fn process_batch<'a>(
        &'a self,
        batch: &'a [Incoming<'a>],
        stages: &'a mut StageTimes,
    ) -> futures::future::BoxFuture<'a, Result<Vec<Outcome>, StrategyError>> {
        Box::pin(async move {
            let effects = self.tx.run_batch(batch, self.shape, stages).await?;
            Ok(effects.into_iter().map(Effect::outcome).collect())
        })
    }

    fn keeps_offsets(&self) -> bool {
        self.shape.store_offset
    }

    fn resume_offsets<'a>(
        &'a self,
        topic: &'a str,
        partitions: &'a [i32],
    ) -> futures::future::BoxFuture<'a, Result<Vec<(i32, i64)>, StrategyError>> {
        Box::pin(async move {
            if !self.shape.store_offset {
                return Ok(Vec::new());
            }
            business::stored_offsets(&self.tx.db, topic, partitions)
                .await
                .map_err(|error| StrategyError::Db(error, 1))
        })
    }
}

/// Runs one Postgres transaction for one message, retried as a whole when Postgres fails.
async fn transact(
    db: &Db,
    retry: &RetryPolicy,
    faults: &Faults,
    message: &Incoming<'_>,
    shape: TxShape<'_>,
    stages: &mut StageTimes,
) -> Result<Effect, StrategyError> {
    let started = Instant::now();
    let attempt = || async {
        let mut tx = db
            .pool()
            .begin()
            .await
            .map_err(|e| StepError::Db(DbError::query("BEGIN")(e)))?;
        let (effect, keep) = apply_in_tx(&mut tx, message, shape, false).await?;
        // An injected slow business step: the transaction stays open, holding its row locks.
        faults.slow_business(message.trade.trade_id).await;
        if !keep {
            // Nothing to keep: dropping `tx` rolls it back.
            return Ok((effect, None));
        }
        let mut mark_done = None;
        if let Some((keys, key)) = shape
            .mark_done_before_commit
            .filter(|_| effect == Effect::Applied)
        {
            mark_done = Some(
                keys.mark_done_untimed(key)
                    .await
                    .map_err(StepError::Strategy)?,
            );
            // DONE is in Redis, the transaction is not committed: the note's lost-trade window.
            // Returning drops `tx`, which rolls it back, as the death of the process would.
            faults
                .at(CrashPoint::AfterRedisDone, message.trade.trade_id)
                .map_err(|crash| StepError::Strategy(crash.into()))?;
        }
        tx.commit()
            .await
            .map_err(|e| StepError::Db(DbError::query("COMMIT")(e)))?;
        Ok((effect, mark_done))
    };
    let (effect, mark_done) = retry
        .run_unless(attempt, StepError::is_crash)
        .await
        .map_err(StepError::into_strategy_error)?;
    let mut business = started.elapsed();
    if let Some(mark_done) = mark_done {
        business = business.saturating_sub(mark_done);
        stages.mark_done = Some(mark_done);
    }
    stages.business = Some(business);
    Ok(effect)
}

/// Runs one Postgres transaction for a whole batch — one effect per message, in order, with
/// the same per-message semantics as [`transact`] — retried as a whole when Postgres fails.
async fn transact_batch(
    db: &Db,
    retry: &RetryPolicy,
    faults: &Faults,
    batch: &[Incoming<'_>],
    shape: TxShape<'_>,
    stages: &mut StageTimes,
) -> Result<Vec<Effect>, StrategyError> {
    assert!(
        shape.mark_done_before_commit.is_none(),
        "a Redis step inside a batch transaction is not supported"
    );
    let attempt = || async {
        let mut tx = db
            .pool()
            .begin()
            .await
            .map_err(|e| StepError::Db(DbError::query("BEGIN")(e)))?;
        let mut effects = Vec::with_capacity(batch.len());
        for message in batch {
            effects.push(apply_in_tx(&mut tx, message, shape, true).await?.0);
            faults.slow_business(message.trade.trade_id).await;
        }
        tx.commit()
            .await
            .map_err(|e| StepError::Db(DbError::query("COMMIT")(e)))?;
        Ok(effects)
    };
    let effects = timed(&mut stages.business, retry.run(attempt))
        .await
        .map_err(StepError::into_strategy_error)?;
    Ok(effects)
}

/// One message's writes inside an open transaction. Returns the effect and whether the
/// transaction holds anything worth committing.
async fn apply_in_tx(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    message: &Incoming<'_>,
    shape: TxShape<'_>,
    in_batch: bool,
) -> Result<(Effect, bool), StepError> {
    let trade = message.trade;
    if shape.store_offset {
        let next = business::stored_offset(tx, message.topic, message.partition)
            .await
            .map_err(StepError::Db)?;
        if next.is_some_and(|next| message.offset < next) {
            return Ok((Effect::AlreadyDone, false));
        }
    }
    if shape.inbox
        && !business::insert_inbox(tx, trade.trade_id)
            .await
            .map_err(StepError::Db)?
    {
        return Ok((Effect::AlreadyDone, in_batch));
    }
    // A unique-constraint violation aborts a transaction. Where other writes must survive it
    // (the stored offset, or the rest of a batch), the effects run inside a savepoint.
    let contained = shape.store_offset || (in_batch && !shape.inbox);
    let effect = if contained {
        let mut savepoint = sqlx::Acquire::begin(&mut **tx)
            .await
            .map_err(|e| StepError::Db(DbError::query("SAVEPOINT")(e)))?;
        let outcome = business::write_effects(&mut savepoint, trade)
            .await
            .map_err(StepError::Db)?;
        if outcome == BusinessOutcome::Applied {
            savepoint
                .commit()
                .await
                .map_err(|e| StepError::Db(DbError::query("RELEASE SAVEPOINT")(e)))?;
        }
        outcome
    } else {
        business::write_effects(tx, trade)
            .await
            .map_err(StepError::Db)?
    };
    if effect == BusinessOutcome::CaughtByConstraint && !contained {
        if in_batch {
            return Err(StepError::Db(DbError::Invariant(
                "a trade row existed without its inbox row, which aborted a batch transaction",
            )));
        }
        return Ok((Effect::CaughtByConstraint, false));
    }
    if shape.store_offset {
        business::store_offset(tx, message.topic, message.partition, message.offset + 1)
            .await
            .map_err(StepError::Db)?;
    }
    let effect = match effect {
        BusinessOutcome::Applied => Effect::Applied,
        BusinessOutcome::CaughtByConstraint => Effect::CaughtByConstraint,
    };
    Ok((effect, true))
}

/// A failure inside [`transact`]'s retried closure.
#[derive(Debug)]
enum StepError {
    Db(DbError),
    Strategy(StrategyError),
}

impl StepError {
    fn is_crash(&self) -> bool {
        matches!(self, StepError::Strategy(StrategyError::Crash(_)))
    }

    fn into_strategy_error((error, attempts): (StepError, u32)) -> StrategyError {
        match error {
            StepError::Db(error) => StrategyError::Db(error, attempts),
            StepError::Strategy(error) => error,
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Db(e) => e.fmt(f),
            StepError::Strategy(e) => e.fmt(f),
        }
    }
}
