//! Phase 2: build the strategy over its stores, connect the producer (which, being idempotent,
//! obtains its producer id) and start the processor, and wait until the group has assigned it
//! its partitions — before the first message is sent, so neither start-up cost is charged to
//! the first messages' latency.

use std::sync::Arc;
use std::time::Duration;

use super::consumers::Consumers;
use super::prepare::Reached;
use super::{RunError, db_error, kafka_error};
use crate::config::{RunConfig, RunNames};
use crate::db::{Db, MemoryEffects};
use crate::faults::Faults;
use crate::faults::outage::Relay;
use crate::faults::toxiproxy::Toxiproxy;
use crate::kafka::{self, LoadProducer};
use crate::processor::fleet::Fleet;
use crate::processor::member::MemberSpec;
use crate::processor::{Placement, Processor, ProcessorSettings, Progress, Runtimes, Share};
use crate::strategy;

/// What a started run holds while it is supervised.
pub(super) struct Started {
    pub spec: MemberSpec,
    /// Where the in-process processor runs, and over which strategy: the shared runtime, or
    /// each of `threads`' runtimes (a restart after a crash is placed the same way).
    pub placement: Placement,
    pub faults: Arc<Faults>,
    pub progress: Arc<Progress>,
    /// The `--no-business-write` record the audit reads in place of Postgres.
    pub memory: Option<Arc<MemoryEffects>>,
    /// The loopback relay a Postgres outage cuts, when the plan has one.
    pub relay: Option<Arc<Relay>>,
    pub producer: LoadProducer,
    /// The run's admin connection to Kafka (a broker kill asks it for partition 0's leader).
    pub kafka: crate::kafka::Admin,
    /// The Redis client of an in-process processor (through Toxiproxy under a network fault).
    pub redis: Option<Arc<dyn crate::redis::RedisOps>>,
    /// `--processor-threads`: the processor's own runtimes and each one's Redis client (their
    /// counters are the run's).
    pub threads: Option<Threads>,
    /// Toxiproxy and the run's proxies on it (link — `redis` or `postgres` — and name), when
    /// the plan has network faults.
    pub toxiproxy: Option<Proxied>,
    /// kafka-transactions' second stage, on the effects topic.
    pub sink: Option<super::sink::Sink>,
}

/// Toxiproxy and the run's proxies on it: (link, proxy name) each.
pub(super) type Proxied = (Arc<Toxiproxy>, Vec<(String, String)>);

/// `--processor-threads N`: N current-thread runtimes, and on each a strategy over Redis and
/// Postgres connections made from that runtime (so their sockets are its own).
pub(super) struct Threads {
    pub redis: Vec<Arc<dyn crate::redis::RedisOps>>,
    /// Held, never read: last, so the runtimes outlive what runs on them.
    #[expect(dead_code, reason = "held for its Drop, which ends the threads")]
    pub runtimes: Runtimes,
}

/// Starts the runtimes of `--processor-threads` and connects each one's stores from it.
async fn place(
    config: &RunConfig,
    spec: &MemberSpec,
    faults: &Arc<Faults>,
    memory: &Option<Arc<MemoryEffects>>,
    count: usize,
) -> Result<(Threads, Placement), RunError> {
    let runtimes = Runtimes::start(count).map_err(RunError::Processes)?;
    let mut shares = Vec::with_capacity(count);
    let mut clients = Vec::new();
    for runtime in runtimes.handles() {
        let (db_settings, schema) = (spec.db_settings(), spec.schema.clone());
        let redis_settings = spec.redis_settings();
        let (client, uses_redis) = (
            config.redis_client,
            config.strategy.capabilities().uses_redis,
        );
        let connected = runtime
            .spawn(async move {
                let db = Db::connect(&db_settings, &schema).await.map_err(db_error)?;
                let redis = match uses_redis {
                    true => Some(
                        crate::redis::connect(client, &redis_settings)
                            .await
                            .map_err(super::redis_error)?,
                    ),
                    false => None,
                };
                Ok::<_, RunError>((db, redis))
            })
            .await
            .map_err(|e| {
                RunError::Processes(format!("a processor thread's connect task failed: {e}"))
            })?;
        let (db, redis) = connected?;
        let strategy = {
            let _entered = runtime.enter();
            strategy::build(
                config.strategy,
                spec.strategy_settings(faults.clone()),
                db,
                redis.clone(),
                memory.clone(),
            )
        };
        clients.extend(redis);
        shares.push(Share {
            runtime: runtime.clone(),
            strategy,
        });
    }
    let threads = Threads {
        redis: clients,
        runtimes,
    };
    Ok((threads, Placement { shares }))
}

pub(super) async fn start(
    config: &RunConfig,
    names: &RunNames,
    reached: &Reached,
) -> Result<(Started, Consumers), RunError> {
    let timeout = config.connect_timeout();
    let faults = Arc::new(Faults::new(config.crash_plan.clone()));
    let mut spec = member_spec(config, names);
    // A Postgres outage needs the processor's connections to run through a relay it can cut;
    // the audit keeps its direct connection.
    let relay = match config
        .crash_plan
        .schedules(crate::faults::FaultKind::DbOutage)
    {
        false => None,
        true => Some(Arc::new(relay_for(config, &mut spec).await?)),
    };
    // The network faults put Toxiproxy between the processor and Redis or Postgres.
    let toxiproxy = proxies(config, names, &mut spec).await?;
    let proxied = |link: &str| {
        toxiproxy
            .as_ref()
            .is_some_and(|(_, proxies)| proxies.iter().any(|(l, _)| l == link))
    };
    // On `--processor-threads` each thread connects its own; these stay the shared ones.
    let own = config.processor_threads > 0;
    let processor_db = match !own && (relay.is_some() || proxied("postgres")) {
        true => Db::connect(&spec.db_settings(), &names.schema)
            .await
            .map_err(db_error)?,
        false => reached.db.clone(),
    };
    let processor_redis = match !own && proxied("redis") {
        true => Some(
            crate::redis::connect(config.redis_client, &spec.redis_settings())
                .await
                .map_err(super::redis_error)?,
        ),
        false => reached.redis.clone(),
    };
    let memory = config
        .no_business_write
        .then(|| Arc::new(MemoryEffects::new(config.stream.trades)));
    let (threads, placement) = match config.processor_threads {
        0 => {
            let strategy = strategy::build(
                config.strategy,
                spec.strategy_settings(faults.clone()),
                processor_db.clone(),
                processor_redis.clone(),
                memory.clone(),
            );
            (None, Placement::here(strategy))
        }
        count => {
            let (threads, placement) = place(config, &spec, &faults, &memory, count).await?;
            (Some(threads), placement)
        }
    };
    let producer = kafka::producer(&config.connections.kafka_brokers, config.linger_ms, timeout)
        .map_err(kafka_error)?;
    let warm_up = kafka::warm_up(&producer, &names.topic, timeout);
    let progress = Arc::new(Progress::new(config.partitions));
    let mut consumers = start_consumers(config, &spec, &placement, &progress, &faults).await?;
    warm_up.await.map_err(kafka_error)?;
    let assigned = match &mut consumers {
        Consumers::InProcess(processor) => {
            processor.wait_for_assignment(Duration::from_secs(30)).await
        }
        Consumers::Processes(fleet) => fleet
            .wait_for_assignment(Duration::from_secs(30))
            .await
            .map_err(RunError::Processes)?,
    };
    let sink = match config.strategy.capabilities().kafka_transactions {
        // The sink writes Postgres: through the outage relay, when the run cuts it.
        true => match super::sink::Sink::start(config, names, &spec, processor_db).await {
            Ok(sink) => Some(sink),
            Err(error) => {
                consumers.stop().await;
                return Err(error);
            }
        },
        false => None,
    };
    if !assigned {
        if let Some(sink) = sink {
            sink.stop().await;
        }
        consumers.stop().await;
        return Err(RunError::Service {
            error: format!(
                "the consumer group {} got no partitions within 30 s",
                names.group
            ),
            hint: "check the broker's log; a group coordinator must be available".into(),
        });
    }
    let started = Started {
        spec,
        placement,
        faults,
        progress,
        memory,
        relay,
        producer,
        kafka: reached.admin.clone(),
        redis: processor_redis,
        threads,
        toxiproxy,
        sink,
    };
    Ok((started, consumers))
}

/// What a processor is built from, in this process or in a processor process of its own.
fn member_spec(config: &RunConfig, names: &RunNames) -> MemberSpec {
    MemberSpec {
        strategy: config.strategy,
        redis_client: config.redis_client,
        processor: ProcessorSettings {
            brokers: config.connections.kafka_brokers.clone(),
            topic: names.topic.clone(),
            group_id: names.group.clone(),
            partitions: config.partitions,
            workers: config.workers,
            commit_mode: config.commit_mode,
            commit_interval: Duration::from_millis(config.commit_interval_ms.max(1)),
            batch_size: config.batch_size,
            in_flight: config.in_flight,
            queue_depth: 1024,
            close_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_millis(config.session_timeout_ms),
            transactions: config.strategy.capabilities().kafka_transactions.then(|| {
                crate::processor::transactional::TxnSettings {
                    effects_topic: names.effects_topic(),
                    transactional_id: names.transactional_id(),
                    // A crashed incarnation's open transaction is aborted by the restart's
                    // init_transactions (same ids); this bounds it only if no restart comes.
                    transaction_timeout: Duration::from_secs(10),
                    interval: Duration::from_millis(config.transaction_interval_ms),
                }
            }),
        },
        processing_ttl_ms: config.processing_ttl_ms,
        done_ttl_ms: config.done_ttl_ms,
        key_prefix: names.key_prefix.clone(),
        on_in_progress: config.on_in_progress,
        redis_pipeline: config.redis_pipeline,
        redis_wait_replicas: config.redis_wait_replicas,
        redis_wait_timeout_ms: config.redis_wait_timeout_ms,
        schema: names.schema.clone(),
        redis_url: config.connections.redis_url.clone(),
        postgres_url: config.connections.postgres_url.clone(),
        redis_connections: config.redis_connections,
        postgres_connections: config.postgres_connections,
        connect_timeout_ms: config.connect_timeout_ms,
        slow_trades: config.crash_plan.slow_trades.clone(),
        slow_ms: config.crash_plan.slow_ms,
    }
}

/// Starts the outage relay and points the processor's Postgres URL at it.
/// Starts Toxiproxy and a proxy per link the plan's network faults cut, and points the
/// processor's URLs at them (the audit keeps its direct connections).
async fn proxies(
    config: &RunConfig,
    names: &RunNames,
    spec: &mut MemberSpec,
) -> Result<Option<Proxied>, RunError> {
    let mut links: Vec<String> = config
        .crash_plan
        .schedule
        .iter()
        .filter(|f| f.kind.through_proxy())
        .map(|f| f.link().to_string())
        .filter(|link| link != "redis" || config.strategy.capabilities().uses_redis)
        .collect();
    links.sort();
    links.dedup();
    if links.is_empty() {
        return Ok(None);
    }
    let toxiproxy = Toxiproxy::start(config.connect_timeout())
        .await
        .map_err(RunError::Config)?;
    let mut proxies = Vec::new();
    for link in links {
        let url = match link.as_str() {
            "redis" => &mut spec.redis_url,
            _ => &mut spec.postgres_url,
        };
        let upstream = crate::faults::outage::address_of(url).map_err(RunError::Config)?;
        let name = format!("{}-{link}", names.run_id);
        let listen = toxiproxy
            .proxy(&name, &upstream)
            .await
            .map_err(RunError::Config)?;
        *url = crate::faults::outage::reroute(url, listen).map_err(RunError::Config)?;
        proxies.push((link, name));
    }
    Ok(Some((Arc::new(toxiproxy), proxies)))
}

async fn relay_for(config: &RunConfig, spec: &mut MemberSpec) -> Result<Relay, RunError> {
    let url = &config.connections.postgres_url;
    let upstream = crate::faults::outage::address_of(url).map_err(RunError::Config)?;
    let relay = Relay::start(upstream)
        .await
        .map_err(|e| RunError::Processes(format!("cannot start the outage relay: {e}")))?;
    spec.postgres_url =
        crate::faults::outage::reroute(url, relay.local_addr()).map_err(RunError::Config)?;
    Ok(relay)
}

/// The first processor: in this process, or `--processes` processor processes.
pub(super) async fn start_consumers(
    config: &RunConfig,
    spec: &MemberSpec,
    placement: &Placement,
    progress: &Arc<Progress>,
    faults: &Arc<Faults>,
) -> Result<Consumers, RunError> {
    if config.processes == 0 {
        return Ok(Consumers::InProcess(Processor::start_on(
            &spec.processor,
            placement,
            progress.clone(),
            faults.clone(),
        )?));
    }
    let exe = match &config.processor_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().map_err(|e| {
            RunError::Processes(format!("cannot find the idembench executable: {e}"))
        })?,
    };
    Ok(Consumers::Processes(Box::new(
        Fleet::start(exe, spec, config.processes)
            .await
            .map_err(RunError::Processes)?,
    )))
}
