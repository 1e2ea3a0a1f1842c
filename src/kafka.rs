//! Kafka administration around a run: is the cluster there, the run's own topic, and its removal.
//! The hot paths (producing, consuming) live in `loadgen` and [`crate::processor`].

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::util::Timeout;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("cannot reach Kafka at {brokers}: {cause}")]
    Unreachable { brokers: String, cause: String },
    #[error("cannot create topic {topic}: {cause}")]
    CreateTopic { topic: String, cause: String },
    #[error("cannot create a Kafka client: {0}")]
    Client(#[source] KafkaError),
}

/// Which broker leads a partition, and which hold its replicas (`services.kafka.leaders`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionLeader {
    pub partition: i32,
    /// The leading broker's id (-1: none).
    pub leader: i32,
    pub replicas: Vec<i32>,
}

/// What the cluster told us about itself, for `result.json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterInfo {
    pub brokers: usize,
    /// The Kafka protocol does not report a broker's release; librdkafka's version is exact.
    pub librdkafka_version: String,
}

fn base_config(brokers: &str, timeout: Duration) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set(
            "socket.connection.setup.timeout.ms",
            timeout.as_millis().to_string(),
        )
        // librdkafka logs every failed connect attempt; the error we return says it once.
        .set("log_level", "3");
    if let Ok(contexts) = std::env::var("IDEMBENCH_RDKAFKA_DEBUG") {
        config.set("debug", contexts).set("log_level", "7");
    }
    config
}

#[derive(Clone)]
pub struct Admin {
    client: std::sync::Arc<AdminClient<DefaultClientContext>>,
    brokers: String,
    timeout: Duration,
}

impl Admin {
    /// Connects and fetches cluster metadata, failing within about `timeout` if no broker answers.
    pub async fn connect(
        brokers: &str,
        timeout: Duration,
    ) -> Result<(Admin, ClusterInfo), KafkaSetupError> {
        let client: AdminClient<DefaultClientContext> = base_config(brokers, timeout)
            .create()
            .map_err(KafkaSetupError::Client)?;
        let admin = Admin {
            client: std::sync::Arc::new(client),
            brokers: brokers.to_string(),
            timeout,
        };
        let brokers_seen = admin.broker_count().await?;
        let (_, librdkafka_version) = rdkafka::util::get_rdkafka_version();
        Ok((
            admin,
            ClusterInfo {
                brokers: brokers_seen,
                librdkafka_version,
            },
        ))
    }

    async fn broker_count(&self) -> Result<usize, KafkaSetupError> {
        let topic = None;
        self.metadata(topic).await.map(|(brokers, _)| brokers)
    }

    /// (brokers, partitions with a leader of `topic`, if asked).
    async fn metadata(&self, topic: Option<String>) -> Result<(usize, usize), KafkaSetupError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let result = tokio::task::spawn_blocking(move || {
            client
                .inner()
                .fetch_metadata(topic.as_deref(), Timeout::After(timeout))
                .map(|metadata| {
                    let leaders = metadata
                        .topics()
                        .iter()
                        .filter(|t| t.error().is_none())
                        .flat_map(|t| t.partitions())
                        .filter(|p| p.leader() >= 0 && p.error().is_none())
                        .count();
                    (metadata.brokers().len(), leaders)
                })
        })
        .await
        .expect("metadata task panicked");
        result.map_err(|e| KafkaSetupError::Unreachable {
            brokers: self.brokers.clone(),
            cause: e.to_string(),
        })
    }

    /// Creates the run's topic — `replication` copies of each partition, of which
    /// `min_insync_replicas` must acknowledge a write (the producer sends with `acks=all`) — and
    /// waits until every partition has a leader.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: usize,
        replication: i32,
        min_insync_replicas: i32,
    ) -> Result<(), KafkaSetupError> {
        let create_error = |cause: String| KafkaSetupError::CreateTopic {
            topic: topic.to_string(),
            cause,
        };
        let partition_count =
            i32::try_from(partitions).map_err(|_| create_error("too many partitions".into()))?;
        let min_insync = min_insync_replicas.to_string();
        let new_topic = NewTopic::new(topic, partition_count, TopicReplication::Fixed(replication))
            .set("min.insync.replicas", &min_insync);
        let options = AdminOptions::new().operation_timeout(Some(Timeout::After(self.timeout)));
        let results = self
            .client
            .create_topics([&new_topic], &options)
            .await
            .map_err(|e| create_error(e.to_string()))?;
        for result in results {
            result.map_err(|(_, code)| create_error(code.to_string()))?;
        }
        let deadline = tokio::time::Instant::now() + self.timeout * 3;
        loop {
            let (_, leaders) = self.metadata(Some(topic.to_string())).await?;
            if leaders == partitions {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(create_error(format!(
                    "only {leaders} of {partitions} partitions have a leader"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Each of the `partitions` partitions of `topic` and the broker id that leads it, in
    /// partition order. Brokers learn a new topic's metadata one after another, so this asks
    /// until one names every partition with a leader (or the timeout, then what it has).
    pub async fn leaders(
        &self,
        topic: &str,
        partitions: usize,
    ) -> Result<Vec<PartitionLeader>, KafkaSetupError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let leaders = self.leaders_once(topic).await?;
            let complete =
                leaders.len() == partitions && leaders.iter().all(|leader| leader.leader >= 0);
            if complete || tokio::time::Instant::now() > deadline {
                return Ok(leaders);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `host:port` of every broker in the cluster's metadata now.
    pub async fn broker_addresses(&self) -> Result<Vec<String>, KafkaSetupError> {
        self.brokers_and_leader(None)
            .await
            .map(|(brokers, _)| brokers)
    }

    /// `host:port` of the broker that leads `partition` of `topic` now (`None`: no leader).
    pub async fn leader_address(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<String>, KafkaSetupError> {
        self.brokers_and_leader(Some((topic.to_string(), partition)))
            .await
            .map(|(_, leader)| leader)
    }

    async fn brokers_and_leader(
        &self,
        partition: Option<(String, i32)>,
    ) -> Result<(Vec<String>, Option<String>), KafkaSetupError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let result = tokio::task::spawn_blocking(move || {
            let topic = partition.as_ref().map(|(topic, _)| topic.as_str());
            client
                .inner()
                .fetch_metadata(topic, Timeout::After(timeout))
                .map(|metadata| {
                    let address = |id: i32| {
                        metadata
                            .brokers()
                            .iter()
                            .find(|b| b.id() == id)
                            .map(|b| format!("{}:{}", b.host(), b.port()))
                    };
                    let leader = partition.as_ref().and_then(|(_, wanted)| {
                        metadata
                            .topics()
                            .iter()
                            .flat_map(|t| t.partitions())
                            .find(|p| p.id() == *wanted && p.leader() >= 0)
                            .and_then(|p| address(p.leader()))
                    });
                    let brokers = metadata
                        .brokers()
                        .iter()
                        .map(|b| format!("{}:{}", b.host(), b.port()))
                        .collect();
                    (brokers, leader)
                })
        })
        .await
        .expect("metadata task panicked");
        result.map_err(|e| KafkaSetupError::Unreachable {
            brokers: self.brokers.clone(),
            cause: e.to_string(),
        })
    }

    async fn leaders_once(&self, topic: &str) -> Result<Vec<PartitionLeader>, KafkaSetupError> {
        let client = self.client.clone();
        let (timeout, name) = (self.timeout, topic.to_string());
        let result = tokio::task::spawn_blocking(move || {
            client
                .inner()
                .fetch_metadata(Some(&name), Timeout::After(timeout))
                .map(|metadata| {
                    let mut leaders: Vec<PartitionLeader> = metadata
                        .topics()
                        .iter()
                        .flat_map(|t| t.partitions())
                        .map(|p| PartitionLeader {
                            partition: p.id(),
                            leader: p.leader(),
                            replicas: p.replicas().to_vec(),
                        })
                        .collect();
                    leaders.sort_by_key(|l| l.partition);
                    leaders
                })
        })
        .await
        .expect("metadata task panicked");
        result.map_err(|e| KafkaSetupError::Unreachable {
            brokers: self.brokers.clone(),
            cause: e.to_string(),
        })
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<(), KafkaSetupError> {
        let options = AdminOptions::new().operation_timeout(Some(Timeout::After(self.timeout)));
        let results = self
            .client
            .delete_topics(&[topic], &options)
            .await
            .map_err(KafkaSetupError::Client)?;
        for result in results {
            result.map_err(|(_, code)| KafkaSetupError::CreateTopic {
                topic: topic.to_string(),
                cause: code.to_string(),
            })?;
        }
        Ok(())
    }
}

/// The load generator's producer context: watches librdkafka's statistics for the moment the
/// idempotent producer holds its producer id, which the Rust API does not expose otherwise.
pub struct ProducerState {
    pid_assigned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl rdkafka::ClientContext for ProducerState {
    /// librdkafka keeps sending statistics for the whole run; once the producer id is known
    /// they are dropped unread, so the measured run does not pay for parsing them.
    fn stats_raw(&self, statistics: &[u8]) {
        use std::sync::atomic::Ordering;
        if self.pid_assigned.load(Ordering::Acquire) {
            return;
        }
        let state: Option<serde_json::Value> = serde_json::from_slice(statistics).ok();
        let idempotence = state
            .as_ref()
            .and_then(|s| s.pointer("/eos/idemp_state"))
            .and_then(|v| v.as_str());
        if idempotence == Some("Assigned") {
            self.pid_assigned.store(true, Ordering::Release);
        }
    }
}

/// The producer and the flag its context raises once it holds a producer id.
pub struct LoadProducer {
    pub producer: FutureProducer<ProducerState>,
    pid_assigned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The load generator's producer: acks from all in-sync replicas, idempotent (so a producer
/// retry never adds a copy the ledger does not know of), batching by `linger_ms`.
pub fn producer(
    brokers: &str,
    linger_ms: u32,
    timeout: Duration,
) -> Result<LoadProducer, KafkaSetupError> {
    let pid_assigned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = base_config(brokers, timeout)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "30000")
        // Only to see the producer id arrive (see `warm_up`); parsing it is cheap.
        .set("statistics.interval.ms", "100")
        .create_with_context(ProducerState {
            pid_assigned: pid_assigned.clone(),
        })
        .map_err(KafkaSetupError::Client)?;
    Ok(LoadProducer {
        producer,
        pid_assigned,
    })
}

/// Waits until the producer can send at once: it has the topic's metadata and its producer id.
/// librdkafka acquires the id behind a 500 ms timer after connecting; messages sent before that
/// wait in its queue, which showed up as a ~450 ms latency tail at the start of every run.
pub async fn warm_up(
    producer: &LoadProducer,
    topic: &str,
    timeout: Duration,
) -> Result<(), KafkaSetupError> {
    let client = producer.producer.clone();
    let topic_name = topic.to_string();
    let unreachable = |cause: String| KafkaSetupError::Unreachable {
        brokers: topic.to_string(),
        cause,
    };
    tokio::task::spawn_blocking(move || {
        rdkafka::producer::Producer::client(&client)
            .fetch_metadata(Some(&topic_name), Timeout::After(timeout))
    })
    .await
    .expect("metadata task panicked")
    .map_err(|e| unreachable(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + timeout;
    while !producer
        .pid_assigned
        .load(std::sync::atomic::Ordering::Acquire)
    {
        if tokio::time::Instant::now() > deadline {
            return Err(unreachable(format!(
                "the idempotent producer got no producer id within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
