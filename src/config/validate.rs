//! [`RunConfig::validate`]: every rule a run's settings must meet, checked before any service
//! is probed or started. Each error names the settings it concerns, so a scenario file's error
//! can point at the line that set one of them.

use super::RunConfig;
use crate::strategy::StrategyKind;

/// A setting (or a combination) a run cannot carry out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
    /// The settings concerned, as scenario keys (the flags' names with underscores).
    pub settings: Vec<&'static str>,
}

fn fail(settings: &[&'static str], message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError {
        message: message.into(),
        settings: settings.to_vec(),
    })
}

/// The crash points every strategy's flow can name (not a Kafka transaction's), for messages.
fn untransactional_points() -> String {
    crate::faults::CrashPoint::ALL
        .iter()
        .filter(|p| !p.transactional())
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl RunConfig {
    /// Checks every rule; the first broken one is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_stream()?;
        self.validate_strategy()?;
        self.validate_processor()?;
        self.validate_topology()?;
        self.validate_faults()?;
        if let Some(out) = &self.out
            && out.join("result.json").exists()
        {
            return fail(
                &[],
                format!(
                    "{} already holds a result.json; runs never overwrite each other — pass another --out",
                    out.display()
                ),
            );
        }
        Ok(())
    }

    fn validate_stream(&self) -> Result<(), ConfigError> {
        if let Err(error) = self.stream.validate() {
            use idembench_loadgen::stream::SpecError;
            let settings: &[&'static str] = match &error {
                SpecError::NoTrades => &["trades"],
                SpecError::NoKeys => &["accounts", "instruments"],
                SpecError::NotAFraction { name, .. } => match *name {
                    "duplicate-rate" => &["duplicate_rate"],
                    "late-duplicate-share" => &["late_duplicate_share"],
                    _ => &["malformed_rate"],
                },
                SpecError::BadSkew(_) => &["key_skew"],
            };
            return fail(settings, error.to_string());
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return fail(
                &["rate"],
                "--rate must be 0 (unthrottled) or a positive number of messages per second",
            );
        }
        if self.warm_up_ms > 0 && self.rate == 0.0 {
            return fail(
                &["warm_up_ms", "rate"],
                "--warm-up-ms needs an offered --rate: without a schedule there is no intended send time to cut at",
            );
        }
        Ok(())
    }

    fn validate_strategy(&self) -> Result<(), ConfigError> {
        let can = self.strategy.capabilities();
        if self.no_business_write {
            if !can.business_write_optional {
                return fail(
                    &["no_business_write", "strategies"],
                    "--no-business-write isolates Redis's idempotency cost: use it with --strategy redis-only, redis-only-atomic or none (the other strategies' idempotency is the database write)",
                );
            }
            if self.processes > 0 {
                return fail(
                    &["no_business_write", "processes"],
                    "--no-business-write keeps the effects in this process's memory: it cannot be combined with --processes",
                );
            }
            if self.crash_plan.db_outage_at_ms.is_some() || !self.crash_plan.slow_trades.is_empty()
            {
                return fail(
                    &["no_business_write", "db_outage_at_ms", "slow_trades"],
                    "--no-business-write has no database transaction to cut or slow: drop --db-outage-at-ms / --slow-trades",
                );
            }
        }
        if self.redis_pipeline && !can.claims_in_two_steps {
            return fail(
                &["redis_pipeline", "strategies"],
                "--redis-pipeline pipelines the GET and SET NX PX of a two-step claim: use it with --strategy redis-only, dual-db-first or dual-redis-first (redis-only-atomic already claims in one command)",
            );
        }
        if self.batch_size == 0 {
            return fail(&["batch_size"], "--batch-size must be at least 1");
        }
        if self.batch_size > 1 && !can.batches {
            return fail(
                &["batch_size", "strategies"],
                format!(
                    "--batch-size {} does not apply to {}: only {} batch their transactions",
                    self.batch_size,
                    self.strategy.name(),
                    names(|kind| kind.capabilities().batches)
                ),
            );
        }
        if self.in_flight == 0 {
            return fail(&["in_flight"], "--in-flight must be at least 1");
        }
        if self.in_flight > 1 && can.stores_offsets {
            return fail(
                &["in_flight", "strategies"],
                format!(
                    "--in-flight above 1 does not apply to {}: it stores each partition's next offset in the business transaction, so its messages must finish in offset order",
                    self.strategy.name()
                ),
            );
        }
        if self.processor_threads > 0 {
            if can.stores_offsets || can.kafka_transactions {
                return fail(
                    &["processor_threads", "strategies"],
                    format!(
                        "--processor-threads does not apply to {}: its rebalance resumes at offsets it keeps, a blocking lookup a current-thread runtime cannot make (drop --processor-threads)",
                        self.strategy.name()
                    ),
                );
            }
            if self.commit_mode == crate::processor::CommitMode::Sync {
                return fail(
                    &["processor_threads", "commit_mode"],
                    "--commit-mode sync blocks its thread for each commit's round trip, and on --processor-threads that stops every task on the thread (the dispatcher's too): use --commit-mode async or interval, or drop --processor-threads",
                );
            }
            if self.processor_threads > self.workers.max(1) {
                return fail(
                    &["processor_threads", "workers"],
                    format!(
                        "--processor-threads {} exceeds the {} worker(s): each thread runs whole workers, so the extra ones would sit idle holding connections (use at most --workers)",
                        self.processor_threads,
                        self.workers.max(1)
                    ),
                );
            }
            if self.processes > 0 {
                return fail(
                    &["processor_threads", "processes"],
                    "--processor-threads places the in-process processor's tasks: it cannot be combined with --processes",
                );
            }
        }
        if self.transaction_interval_ms > 0 {
            if !can.kafka_transactions {
                return fail(
                    &["transaction_interval_ms", "strategies"],
                    format!(
                        "--transaction-interval-ms keeps a Kafka transaction open to gather messages: it applies to kafka-transactions, not {}",
                        self.strategy.name()
                    ),
                );
            }
            if self.batch_size < 2 {
                return fail(
                    &["transaction_interval_ms", "batch_size"],
                    "--transaction-interval-ms gathers up to --batch-size messages per transaction, and --batch-size is 1: give the most a transaction may hold (--batch-size 100, say)",
                );
            }
        }
        if self.processing_ttl_ms == 0 || self.done_ttl_ms == 0 {
            return fail(
                &["processing_ttl_ms", "done_ttl_ms"],
                "--processing-ttl-ms and --done-ttl-ms must be positive",
            );
        }
        Ok(())
    }

    /// [`RunConfig::validate`], and what `--stack mode` will start must be able to carry the
    /// run: a stack that always starts its own Kafka starts `kafka_nodes` brokers.
    pub fn validate_on(&self, mode: crate::config::StackMode) -> Result<(), ConfigError> {
        self.validate()?;
        let always_starts = matches!(
            mode,
            crate::config::StackMode::Embedded | crate::config::StackMode::Docker
        );
        self.replicas_fit(always_starts)?;
        if mode == crate::config::StackMode::External
            && let Some(flag) = self.redis_stack_setting()
        {
            return fail(
                &[flag, "stack"],
                format!(
                    "--{} sets up a Redis this run starts, and --stack external starts none: run with --stack embedded",
                    flag.replace('_', "-")
                ),
            );
        }
        if mode == crate::config::StackMode::External && self.redis_maxmemory.is_some() {
            return fail(
                &["redis_maxmemory", "stack"],
                "--redis-maxmemory sets the limit of a Redis this run starts, and --stack external starts none: run with --stack embedded",
            );
        }
        if mode == crate::config::StackMode::External
            && let Some(fault) = self
                .crash_plan
                .schedule
                .iter()
                .find(|f| f.kind.needs_stack())
        {
            return fail(
                &["fault", "stack"],
                format!(
                    "{} kills and restarts a service, and --stack external starts none: run with --stack embedded",
                    fault.kind.name()
                ),
            );
        }
        Ok(())
    }

    /// Where the stack starts Kafka (`stack_starts_kafka`), it starts `kafka_nodes` brokers,
    /// and a topic cannot have more replicas than that.
    fn replicas_fit(&self, stack_starts_kafka: bool) -> Result<(), ConfigError> {
        if stack_starts_kafka && self.replication_factor as usize > self.kafka_nodes {
            return fail(
                &["replication_factor", "kafka_nodes"],
                format!(
                    "--replication-factor {} needs at least that many brokers: add --kafka-nodes {}",
                    self.replication_factor, self.replication_factor
                ),
            );
        }
        Ok(())
    }

    /// The first setting of the Redis the stack starts that differs from its default
    /// (`--redis-persistence`, `--redis-replication-lag-ms`).
    fn redis_stack_setting(&self) -> Option<&'static str> {
        if self.redis_persistence != crate::redis::RedisPersistence::None {
            Some("redis_persistence")
        } else if self.redis_replication_lag_ms.is_some() {
            Some("redis_replication_lag_ms")
        } else {
            None
        }
    }

    /// The replication knobs: a lagging link exists only behind Sentinels the stack starts,
    /// and `WAIT` needs replicas to wait for.
    fn validate_replication(&self) -> Result<(), ConfigError> {
        let started = self.stack.as_ref().map(|stack| stack.redis);
        if let Some(lag) = self.redis_replication_lag_ms {
            if self.redis_topology != crate::redis::RedisTopology::Sentinel {
                return fail(
                    &["redis_replication_lag_ms", "redis_topology"],
                    "--redis-replication-lag-ms puts the replica's link to its primary through a proxy, which only --redis-topology sentinel allows (a cluster's replicas reach their primary at the address its clients use): add --redis-topology sentinel",
                );
            }
            if lag == 0 || lag > 60_000 {
                return fail(
                    &["redis_replication_lag_ms"],
                    "--redis-replication-lag-ms must be between 1 and 60000",
                );
            }
        }
        if let Some(flag) = self.redis_stack_setting()
            && started.is_some_and(|origin| origin != crate::config::Origin::Child)
        {
            return fail(
                &[flag, "stack"],
                format!(
                    "--{} sets up a Redis this run starts, and this run did not start Redis (one answered at its address, or was given): run with --stack embedded",
                    flag.replace('_', "-")
                ),
            );
        }
        if self.redis_wait_replicas > 0 {
            if self.redis_wait_timeout_ms == 0 {
                return fail(
                    &["redis_wait_timeout_ms"],
                    "--redis-wait-timeout-ms 0 would make WAIT block until the replicas answer, however long: give a bound in ms",
                );
            }
            if self.redis_topology == crate::redis::RedisTopology::Standalone
                && started == Some(crate::config::Origin::Child)
            {
                return fail(
                    &["redis_wait_replicas", "redis_topology"],
                    "--redis-wait-replicas waits for replicas, and the standalone Redis this run starts has none: add --redis-topology sentinel (or cluster)",
                );
            }
        }
        Ok(())
    }

    fn validate_topology(&self) -> Result<(), ConfigError> {
        // Before the stack ran, the default standalone URL stands for whatever it will start;
        // once it ran (or for a URL the user gave), the URL must name the topology asked for.
        let provisioned = self.stack.is_some();
        if provisioned && self.strategy.capabilities().uses_redis {
            let named = crate::redis::topology::Address::parse(&self.connections.redis_url)
                .map_err(|message| ConfigError {
                    message,
                    settings: vec!["redis_url"],
                })?
                .topology();
            if named != self.redis_topology {
                let (asked, named): (&str, &str) = (self.redis_topology.into(), named.into());
                return fail(
                    &["redis_topology", "redis_url"],
                    format!(
                        "--redis-topology {asked}, but --redis-url names a {named} Redis: give a redis-cluster:\u{2f}/host:port[,host:port] URL for a cluster, a redis:\u{2f}/ one for a single server, or leave the URL at its default so the stack starts the topology"
                    ),
                );
            }
        }
        if let Some(size) = &self.redis_maxmemory {
            let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = size[digits.len()..].to_ascii_lowercase();
            if digits.parse::<u64>().map_or(true, |n| n == 0)
                || !["", "b", "kb", "mb", "gb"].contains(&unit.as_str())
            {
                return fail(
                    &["redis_maxmemory"],
                    format!(
                        "--redis-maxmemory {size:?}: give a size such as 2mb, 512kb or 1048576 (bytes)"
                    ),
                );
            }
            if self
                .stack
                .as_ref()
                .is_some_and(|stack| stack.redis != crate::config::Origin::Child)
            {
                return fail(
                    &["redis_maxmemory", "stack"],
                    "--redis-maxmemory sets the limit of a Redis this run starts, and this run did not start Redis (one answered at its address, or was given): run with --stack embedded",
                );
            }
        }
        self.validate_replication()?;
        if self.kafka_nodes == 0 || self.kafka_nodes > 9 {
            return fail(&["kafka_nodes"], "--kafka-nodes must be between 1 and 9");
        }
        if self.replication_factor < 1 {
            return fail(
                &["replication_factor"],
                "--replication-factor must be at least 1",
            );
        }
        if !(1..=self.replication_factor).contains(&self.min_insync_replicas) {
            return fail(
                &["min_insync_replicas", "replication_factor"],
                format!(
                    "--min-insync-replicas {} must be between 1 and the replication factor ({})",
                    self.min_insync_replicas, self.replication_factor
                ),
            );
        }
        // Brokers the user gave are checked when the topic is created.
        let starts_kafka = self
            .stack
            .as_ref()
            .is_some_and(|stack| stack.kafka != crate::config::Origin::External);
        self.replicas_fit(starts_kafka || self.kafka_nodes > 1)?;
        Ok(())
    }

    fn validate_processor(&self) -> Result<(), ConfigError> {
        if self.partitions == 0 || self.partitions > 10_000 {
            return fail(&["partitions"], "--partitions must be between 1 and 10000");
        }
        if self.workers == 0 {
            return fail(&["workers"], "--workers must be at least 1");
        }
        if self.session_timeout_ms < 1_000 {
            return fail(
                &["session_timeout_ms"],
                "--session-timeout-ms must be at least 1000 (brokers refuse less than group.min.session.timeout.ms, 6000 by default)",
            );
        }
        if self.redis_connections == 0 || self.postgres_connections == 0 {
            return fail(
                &["redis_connections"],
                "--redis-connections and --postgres-connections must be at least 1",
            );
        }
        Ok(())
    }

    fn validate_faults(&self) -> Result<(), ConfigError> {
        let plan = &self.crash_plan;
        if !(0.0..=1.0).contains(&plan.rate) {
            return fail(&["crash_rate"], "--crash-rate must be between 0.0 and 1.0");
        }
        if plan.points.is_empty() && (plan.rate > 0.0 || !plan.trade_ids.is_empty()) {
            return fail(
                &["crash_rate", "crash_trades", "crash_at"],
                format!(
                    "--crash-rate and --crash-trades need --crash-at POINT[,POINT] ({})",
                    crate::faults::CrashPoint::ALL.map(|p| p.name()).join(", ")
                ),
            );
        }
        // A strategy whose flow has no such step never reaches a point (db-only never claims),
        // but the transactional points name steps no other strategy has: refuse them there.
        let transactional = self.strategy.capabilities().kafka_transactions;
        if !transactional && let Some(point) = plan.points.iter().find(|p| p.transactional()) {
            return fail(
                &["crash_at", "strategies"],
                format!(
                    "--crash-at {} is a point of a Kafka transaction, which only the kafka-transactions strategy runs; for {} choose one of {}",
                    point.name(),
                    self.strategy.name(),
                    untransactional_points()
                ),
            );
        }
        if transactional {
            self.transactional_faults()?;
        }
        let kills = !plan.kill_at_ms.is_empty() || plan.kill_every_ms.is_some();
        if self.processes == 0 && kills {
            return fail(
                &["kill_at_ms", "kill_every_ms", "processes"],
                "--kill-at-ms and --kill-every-ms kill processor processes: add --processes N (N ≥ 1; 2 or more for a rebalance onto survivors)",
            );
        }
        if self.processes > 0 && !plan.points.is_empty() {
            return fail(
                &["crash_at", "processes"],
                "--crash-at crashes a processor inside this process; with --processes use --kill-at-ms or --kill-every-ms (SIGKILL)",
            );
        }
        if plan.slow_trades.is_empty() != (plan.slow_ms == 0) {
            return fail(
                &["slow_trades", "slow_ms"],
                "--slow-trades and --slow-ms go together: which trades, and how much slower (ms)",
            );
        }
        if plan.kill_every_ms == Some(0) {
            return fail(&["kill_every_ms"], "--kill-every-ms must be positive");
        }
        self.validate_schedule()
    }

    /// kafka-transactions runs on Apache Kafka only; every fault applies to it (crash points in
    /// this process, kills and pauses of processor processes, service faults, slow trades in
    /// its sink's business transaction).
    fn transactional_faults(&self) -> Result<(), ConfigError> {
        if self
            .stack
            .as_ref()
            .is_some_and(|stack| stack.kafka == crate::config::Origin::InProcess)
        {
            return fail(
                &["stack", "strategies"],
                "kafka-transactions needs Kafka's transactions and read_committed, which the embedded tansu broker is not checked to have: run it on Apache Kafka (--stack embedded or auto without the tansu feature, or --kafka-brokers)",
            );
        }
        Ok(())
    }

    /// Each `--fault` (`[[scenario.fault]]`): a kind a schedule may hold, a period longer than
    /// the fault, and what the kind needs — processor processes to kill, a Redis topology with
    /// a replica to fail over to, and services this run's stack started and may kill.
    fn validate_schedule(&self) -> Result<(), ConfigError> {
        use crate::faults::FaultKind;
        for fault in &self.crash_plan.schedule {
            let kind = fault.kind.name();
            if !FaultKind::SCHEDULED.contains(&fault.kind) {
                let kinds: Vec<&str> = FaultKind::SCHEDULED.iter().map(|k| k.name()).collect();
                return fail(
                    &["fault"],
                    format!(
                        "a fault schedule cannot hold {kind}; it may hold: {} (crashes have --crash-at, slow trades --slow-trades)",
                        kinds.join(", ")
                    ),
                );
            }
            if fault
                .every_ms
                .is_some_and(|every| every <= fault.duration().as_millis() as u64)
            {
                return fail(
                    &["fault"],
                    format!(
                        "{kind}: every_ms must be longer than the fault lasts ({} ms)",
                        fault.duration().as_millis()
                    ),
                );
            }
            if fault.kind == FaultKind::ZombieConsumer {
                if self.processes < 2 {
                    return fail(
                        &["fault", "processes"],
                        "zombie-consumer pauses one processor process while another takes its partitions: add --processes 2 (or more)",
                    );
                }
                let point = match fault.stop_point() {
                    Ok(point) => point,
                    Err(error) => return fail(&["fault"], error),
                };
                if let Some(point) = point
                    && point.transactional()
                    && !self.strategy.capabilities().kafka_transactions
                {
                    return fail(
                        &["fault", "strategy"],
                        format!(
                            "zombie-consumer:{}: a point of a Kafka transaction, which {} never reaches; choose one of {}",
                            point.name(),
                            self.strategy.name(),
                            untransactional_points()
                        ),
                    );
                }
                if fault.duration().as_millis() as u64 <= self.session_timeout_ms {
                    return fail(
                        &["fault", "session_timeout_ms"],
                        format!(
                            "zombie-consumer: the pause ({} ms) must outlast --session-timeout-ms ({}), or the group never moves its partitions",
                            fault.duration().as_millis(),
                            self.session_timeout_ms
                        ),
                    );
                }
            }
            if fault.kind == FaultKind::ProducerStall {
                if !self.strategy.capabilities().kafka_transactions {
                    return fail(
                        &["fault", "strategy"],
                        "producer-stall stalls the transactional producers of --strategy kafka-transactions; this strategy has none",
                    );
                }
                if self.processes > 0 {
                    return fail(
                        &["fault", "processes"],
                        "producer-stall reaches the producers of an in-process processor only: drop --processes",
                    );
                }
                if fault.target.is_some() {
                    return fail(
                        &["fault"],
                        "producer-stall takes no :TARGET (it stalls every lane that reaches send_offsets while it lasts)",
                    );
                }
            }
            if fault.kind == FaultKind::ProcessKill && self.processes == 0 {
                return fail(
                    &["fault", "processes"],
                    "process-kill kills processor processes: add --processes N (2 or more for a rebalance onto survivors)",
                );
            }
            if fault.kind.through_proxy() {
                match fault.link() {
                    "redis" if self.redis_topology != crate::redis::RedisTopology::Standalone => {
                        return fail(
                            &["fault", "redis_topology"],
                            format!(
                                "{kind} on Redis needs a standalone Redis: a cluster's or Sentinels' replies name the nodes themselves, so the client would go around the proxy"
                            ),
                        );
                    }
                    "redis" => {}
                    "postgres" if self.crash_plan.schedules(FaultKind::DbOutage) => {
                        return fail(
                            &["fault"],
                            format!(
                                "{kind} on Postgres and db-outage both reroute the processor's Postgres link: use one per run"
                            ),
                        );
                    }
                    "postgres" => {}
                    other => {
                        return fail(
                            &["fault"],
                            format!(
                                "{kind}: target {other:?} is not a link the proxy can cut; give redis or postgres"
                            ),
                        );
                    }
                }
            }
            if fault.kind == FaultKind::RedisFailover
                && self.redis_topology == crate::redis::RedisTopology::Standalone
            {
                return fail(
                    &["fault", "redis_topology"],
                    "redis-failover needs a replica to promote: add --redis-topology sentinel (or cluster)",
                );
            }
            if fault.kind.needs_stack() && self.stack.is_some() {
                self.stack_owns(fault)?;
            }
        }
        Ok(())
    }

    /// Whether the stack that provisioned this run started the service `fault` kills.
    fn stack_owns(&self, fault: &crate::faults::ScheduledFault) -> Result<(), ConfigError> {
        use crate::faults::FaultKind;
        let service = match fault.kind {
            FaultKind::KafkaBrokerKill => "kafka",
            _ => "redis",
        };
        let owned: Vec<String> = self
            .services
            .iter()
            .flat_map(|services| services.nodes())
            .filter(|node| node.owned && node.service == service)
            .map(|node| node.address)
            .collect();
        if owned.is_empty() {
            return fail(
                &["fault", "stack"],
                format!(
                    "{} kills and restarts {service}, which this run did not start (it answered at its address, or was given): run with --stack embedded, or stop the long-lived services (scripts/services down) so --stack auto starts its own",
                    fault.kind.name()
                ),
            );
        }
        if let Some(target) = &fault.target
            && !owned.contains(target)
        {
            return fail(
                &["fault"],
                format!(
                    "{}: target {target} is none of the {service} processes this run started ({})",
                    fault.kind.name(),
                    owned.join(", ")
                ),
            );
        }
        Ok(())
    }
}

/// The strategies that have a capability, as a list for an error message.
fn names(has: impl Fn(StrategyKind) -> bool) -> String {
    let names: Vec<&str> = <StrategyKind as strum::VariantArray>::VARIANTS
        .iter()
        .copied()
        .filter(|kind| has(*kind))
        .map(StrategyKind::name)
        .collect();
    names.join(", ")
}
