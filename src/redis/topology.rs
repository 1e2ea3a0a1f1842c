//! Which Redis a URL names. `redis://` (or `rediss://`, `unix://`) is one server;
//! `redis-cluster://[user:password@]host:port[,host:port...]` is a Redis Cluster, the nodes given
//! as seeds (the client learns the rest, and follows MOVED and ASK);
//! `redis-sentinel://[user:password@]host:port[,host:port...]/SERVICE` is the primary the
//! Sentinels at those addresses name SERVICE (the credentials are the primary's). Both clients
//! accept all three, behind `RedisOps`; strategies never learn which.

use serde::{Deserialize, Serialize};

/// The URL schemes, spelled without `//` in the source so that line-based tools do not read
/// the rest of a line as a comment.
pub const REDIS: &str = "redis:\u{2f}/";
pub const REDIS_CLUSTER: &str = "redis-cluster:\u{2f}/";
pub const REDIS_SENTINEL: &str = "redis-sentinel:\u{2f}/";

/// What `--redis-topology` asks the stack for, and what a URL's scheme says.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::EnumMessage,
    Serialize,
    Deserialize,
)]
#[strum(serialize_all = "kebab-case")]
#[serde(rename_all = "kebab-case")]
pub enum RedisTopology {
    /// One Redis server.
    #[default]
    Standalone,
    /// A Redis Cluster: three primaries, each with a replica, keys spread over 16384 slots.
    Cluster,
    /// A primary with one replica, watched by three Sentinels that promote the replica if the
    /// primary fails.
    Sentinel,
}

/// `maxmemory-policy` of the Redis the stack starts under `--redis-maxmemory`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::EnumMessage,
    Serialize,
    Deserialize,
)]
#[strum(serialize_all = "kebab-case")]
#[serde(rename_all = "kebab-case")]
pub enum MaxmemoryPolicy {
    /// Refuse writes once full (`OOM command not allowed`): Redis's default.
    #[default]
    Noeviction,
    /// Evict the least recently used key, any key.
    AllkeysLru,
    /// Evict the least recently used key among those with a TTL (every key of a run has one).
    VolatileLru,
}

/// What the Redis the stack starts keeps on disk (`--redis-persistence`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
    strum::EnumMessage,
    Serialize,
    Deserialize,
)]
#[strum(serialize_all = "kebab-case")]
#[serde(rename_all = "kebab-case")]
pub enum RedisPersistence {
    /// Nothing: a restarted server is empty (`--save "" --appendonly no`).
    #[default]
    None,
    /// An append-only file fsynced once a second (`--appendonly yes --appendfsync everysec`):
    /// a restarted server reloads it. A killed process loses nothing it wrote (each event
    /// loop writes the file); `everysec` bounds the loss to a second when the machine fails.
    AofEverysec,
}

/// A Redis address, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// One server's URL.
    Standalone(String),
    /// Seed nodes' URLs (`redis://...` each, with the cluster URL's credentials).
    Cluster(Vec<String>),
    /// Sentinels' URLs (`redis://host:port`, no credentials), the service name, and the
    /// credentials (`user:password@`, or empty) for the primary they name.
    Sentinel {
        sentinels: Vec<String>,
        service: String,
        credentials: String,
    },
}

impl Address {
    pub fn parse(url: &str) -> Result<Address, String> {
        if let Some(rest) = url.strip_prefix(REDIS_SENTINEL) {
            return Address::sentinel(rest);
        }
        let Some(rest) = url.strip_prefix(REDIS_CLUSTER) else {
            return Ok(Address::Standalone(url.to_string()));
        };
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.trim_end_matches('/');
        let nodes: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(|host| format!("{REDIS}{credentials}{host}"))
            .collect();
        if nodes.is_empty() {
            return Err(
                "a redis-cluster:\u{2f}/ URL names at least one node: redis-cluster:\u{2f}/host:port[,host:port]"
                    .into(),
            );
        }
        Ok(Address::Cluster(nodes))
    }

    fn sentinel(rest: &str) -> Result<Address, String> {
        let usage = "a redis-sentinel:\u{2f}/ URL names its Sentinels and the service: redis-sentinel:\u{2f}/host:port[,host:port]/SERVICE";
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, rest)) => (format!("{credentials}@"), rest),
            None => (String::new(), rest),
        };
        let (hosts, service) = rest.split_once('/').ok_or(usage)?;
        let service = service.trim_end_matches('/');
        let sentinels: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(|host| format!("{REDIS}{host}"))
            .collect();
        if sentinels.is_empty() || service.is_empty() {
            return Err(usage.into());
        }
        Ok(Address::Sentinel {
            sentinels,
            service: service.to_string(),
            credentials,
        })
    }

    pub fn topology(&self) -> RedisTopology {
        match self {
            Address::Standalone(_) => RedisTopology::Standalone,
            Address::Cluster(_) => RedisTopology::Cluster,
            Address::Sentinel { .. } => RedisTopology::Sentinel,
        }
    }

    /// Every node URL named (the one server, the seeds, or the Sentinels).
    pub fn nodes(&self) -> Vec<String> {
        match self {
            Address::Standalone(url) => vec![url.clone()],
            Address::Cluster(nodes) => nodes.clone(),
            Address::Sentinel { sentinels, .. } => sentinels.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_seeds_with_their_credentials() {
        assert_eq!(
            Address::parse("redis-cluster://:secret@127.0.0.1:7000,127.0.0.1:7001/").unwrap(),
            Address::Cluster(vec![
                "redis://:secret@127.0.0.1:7000".into(),
                "redis://:secret@127.0.0.1:7001".into()
            ])
        );
        assert_eq!(
            Address::parse("redis://127.0.0.1:6379").unwrap(),
            Address::Standalone("redis://127.0.0.1:6379".into())
        );
        assert!(Address::parse("redis-cluster://").is_err());
        assert_eq!(
            Address::parse("redis-sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/idembench")
                .unwrap(),
            Address::Sentinel {
                sentinels: vec![
                    "redis://127.0.0.1:26379".into(),
                    "redis://127.0.0.1:26380".into()
                ],
                service: "idembench".into(),
                credentials: ":pw@".into(),
            }
        );
        assert!(Address::parse("redis-sentinel://127.0.0.1:26379").is_err());
    }
}
