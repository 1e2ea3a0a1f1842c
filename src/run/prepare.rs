//! Phase 1: reach every service first, concurrently, so a missing one fails fast and by name;
//! then create the run's own topic, schema and key prefix, and remove them at the end.

use std::sync::Arc;
use std::time::Duration;

use super::{RunError, db_error, kafka_error, redis_error, say};
use crate::config::{RunConfig, RunNames};
use crate::db::{Db, DbSettings};
use crate::kafka::{Admin, ClusterInfo};
use crate::redact::redact_url;
use crate::redis::{self as redis_seam, RedisOps, RedisSettings};
use crate::results::{KafkaService, RedisService, ServiceVersion, Services};

/// The services of a run, reached.
pub(super) struct Reached {
    pub admin: Admin,
    pub cluster: ClusterInfo,
    /// The audit's (and, without an outage relay, the processor's) pool.
    pub db: Db,
    /// The strategies' client, where the strategy uses Redis.
    pub redis: Option<Arc<dyn RedisOps>>,
    pub postgres_version: String,
    pub redis_version: Option<String>,
    /// Each partition's leader once the topic exists.
    pub leaders: Vec<crate::kafka::PartitionLeader>,
    /// Redis's primaries (one for a standalone server), redacted.
    pub redis_nodes: Vec<String>,
    /// `evicted_keys` when the run started.
    pub evicted_at_start: Option<u64>,
}

pub(super) async fn reach(config: &RunConfig, names: &RunNames) -> Result<Reached, RunError> {
    let timeout = config.connect_timeout();
    let connections = &config.connections;
    let db_settings = DbSettings {
        url: connections.postgres_url.clone(),
        connections: config.postgres_connections,
        connect_timeout: timeout,
    };
    let redis_settings = RedisSettings {
        url: connections.redis_url.clone(),
        connections: config.redis_connections,
        connect_timeout: timeout,
        command_timeout: Duration::from_secs(2),
        // The in-process processor uses this client.
        wait: (config.redis_wait_replicas > 0).then(|| crate::redis::WaitReplicas {
            replicas: config.redis_wait_replicas,
            timeout: Duration::from_millis(config.redis_wait_timeout_ms),
        }),
    };
    let uses_redis = config.strategy.capabilities().uses_redis;
    let (kafka, db, redis) = tokio::join!(
        Admin::connect(&connections.kafka_brokers, timeout),
        Db::connect(&db_settings, &names.schema),
        async {
            if uses_redis {
                redis_seam::connect(config.redis_client, &redis_settings)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        },
    );
    let (admin, cluster) = kafka.map_err(kafka_error)?;
    let db = db.map_err(db_error)?;
    let redis = redis.map_err(redis_error)?;
    let postgres_version = db.server_version().await.map_err(db_error)?;
    let (redis_version, redis_nodes) = match &redis {
        Some(_) => (
            Some(
                redis_seam::admin::server_version(&connections.redis_url, timeout)
                    .await
                    .map_err(redis_error)?,
            ),
            redis_seam::admin::primaries(&connections.redis_url, timeout)
                .await
                .map_err(redis_error)?
                .iter()
                .map(|node| redact_url(node))
                .collect(),
        ),
        None => (None, Vec::new()),
    };
    let evicted_at_start = match &redis {
        Some(_) => redis_seam::admin::evicted_keys(&connections.redis_url, timeout)
            .await
            .ok(),
        None => None,
    };
    Ok(Reached {
        admin,
        cluster,
        db,
        redis,
        postgres_version,
        redis_version,
        leaders: Vec::new(),
        redis_nodes,
        evicted_at_start,
    })
}

impl Reached {
    /// One line naming what was reached, for the start of a run.
    pub fn describe(&self, config: &RunConfig) -> String {
        format!(
            "kafka {} ({} broker(s)), postgres {}, redis {}",
            redact_url(&config.connections.kafka_brokers),
            self.cluster.brokers,
            self.postgres_version,
            self.redis_version.as_deref().unwrap_or("unused")
        )
    }

    /// The run's own topic and schema (its keys need no creating).
    pub async fn create(&mut self, config: &RunConfig, names: &RunNames) -> Result<(), RunError> {
        self.admin
            .create_topic(
                &names.topic,
                config.partitions,
                config.replication_factor,
                config.min_insync_replicas,
            )
            .await
            .map_err(kafka_error)?;
        if config.strategy.capabilities().kafka_transactions {
            self.admin
                .create_topic(
                    &names.effects_topic(),
                    config.partitions,
                    config.replication_factor,
                    config.min_insync_replicas,
                )
                .await
                .map_err(kafka_error)?;
        }
        self.leaders = self
            .admin
            .leaders(&names.topic, config.partitions)
            .await
            .map_err(kafka_error)?;
        self.db.prepare(config.unique_constraint).await?;
        Ok(())
    }

    /// Removes the run's topic, schema and keys unless asked to keep them, whatever happened.
    pub async fn clean_up(&self, config: &RunConfig, names: &RunNames) {
        if config.keep_state {
            say(
                config,
                format!(
                    "kept topic {}{}, schema {} and keys {}*",
                    names.topic,
                    match config.strategy.capabilities().kafka_transactions {
                        true => format!(" (and {})", names.effects_topic()),
                        false => String::new(),
                    },
                    names.schema,
                    names.key_prefix
                ),
            );
        } else {
            if let Err(error) = self.admin.delete_topic(&names.topic).await {
                tracing::warn!(%error, "could not delete the run's topic");
            }
            if config.strategy.capabilities().kafka_transactions
                && let Err(error) = self.admin.delete_topic(&names.effects_topic()).await
            {
                tracing::warn!(%error, "could not delete the run's effects topic");
            }
            if let Err(error) = self.db.drop_schema().await {
                tracing::warn!(%error, "could not drop the run's schema");
            }
            if self.redis.is_some()
                && let Err(error) = redis_seam::admin::delete_keys(
                    &config.connections.redis_url,
                    &names.key_prefix,
                    config.connect_timeout(),
                )
                .await
            {
                tracing::warn!(%error, "could not delete the run's Redis keys");
            }
        }
        self.db.close().await;
    }

    /// `services` in result.json: addresses redacted.
    pub fn services(&self, config: &RunConfig, names: &RunNames) -> Services {
        let connections = &config.connections;
        Services {
            kafka: KafkaService {
                brokers: redact_url(&connections.kafka_brokers),
                broker_count: self.cluster.brokers,
                topic: names.topic.clone(),
                partitions: config.partitions,
                replication_factor: config.replication_factor,
                min_insync_replicas: config.min_insync_replicas,
                leaders: self.leaders.clone(),
            },
            redis: self.redis_version.clone().map(|version| RedisService {
                url: redact_url(&connections.redis_url),
                version,
                topology: config.redis_topology,
                nodes: self.redis_nodes.clone(),
                // Filled in by the caller, from the assembly's count.
                evicted_keys: None,
            }),
            postgres: ServiceVersion {
                url: redact_url(&connections.postgres_url),
                version: self.postgres_version.clone(),
            },
        }
    }
}
