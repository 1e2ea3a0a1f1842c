//! The names a run gives what it creates on shared services: unique per run, so runs never
//! see each other's topic, group, schema or keys.

use super::RunConfig;

/// A UTC time as run ids and default output directories name it: `20261128t165232z`.
pub fn stamp(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(['-', ':'], "")
        .to_lowercase()
}

/// Names derived from the run id.
#[derive(Clone, Debug)]
pub struct RunNames {
    pub run_id: String,
    pub topic: String,
    pub group: String,
    pub schema: String,
    pub key_prefix: String,
}

impl RunNames {
    pub fn new(config: &RunConfig) -> RunNames {
        let stamp = stamp(std::time::SystemTime::now());
        let suffix: u16 = rand::random();
        // The Redis client is part of the name only where the strategy uses Redis.
        let run_id = if config.strategy.capabilities().uses_redis {
            format!(
                "{stamp}-{}-{}-{suffix:04x}",
                config.strategy.name(),
                config.redis_client.name()
            )
        } else {
            format!("{stamp}-{}-{suffix:04x}", config.strategy.name())
        };
        let snake = run_id.replace('-', "_");
        RunNames {
            topic: format!("idembench.{run_id}"),
            group: format!("idembench.{run_id}"),
            schema: format!("run_{snake}"),
            key_prefix: format!("idembench:{run_id}:trade:"),
            run_id,
        }
    }

    /// kafka-transactions' effects topic: stage one's transactions write it, the sink reads it.
    pub fn effects_topic(&self) -> String {
        format!("{}.effects", self.topic)
    }

    /// The sink's consumer group (kafka-transactions).
    pub fn sink_group(&self) -> String {
        format!("{}.sink", self.group)
    }

    /// The prefix of stage one's transactional ids (one per worker: `{prefix}.{worker}`),
    /// stable across a run's incarnations so a restarted lane fences the dead one.
    pub fn transactional_id(&self) -> String {
        format!("{}.tx", self.group)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stamp_is_the_utc_second_without_separators() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_971_152);
        assert_eq!(super::stamp(at), "20261129t165232z");
    }
}
