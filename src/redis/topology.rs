//! Which Redis a URL names. `redis://` (or `rediss://`, `unix://`) is one server;
//! `redis-cluster://[user:password@]host:port[,host:port...]` is a Redis Cluster, the nodes given
//! as seeds (the client learns the rest, and follows MOVED and ASK). Both clients accept both,
//! behind `RedisOps`; strategies never learn which.

use serde::{Deserialize, Serialize};

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
}

/// A Redis address, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// One server's URL.
    Standalone(String),
    /// Seed nodes' URLs (`redis://...` each, with the cluster URL's credentials).
    Cluster(Vec<String>),
}

impl Address {
    pub fn parse(url: &str) -> Result<Address, String> {
        let Some(rest) = url.strip_prefix("redis-cluster://") else {
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
            .map(|host| format!("redis://{credentials}{host}"))
            .collect();
        if nodes.is_empty() {
            return Err(
                "a redis-cluster:// URL names at least one node: redis-cluster://host:port[,host:port]"
                    .into(),
            );
        }
        Ok(Address::Cluster(nodes))
    }

    pub fn topology(&self) -> RedisTopology {
        match self {
            Address::Standalone(_) => RedisTopology::Standalone,
            Address::Cluster(_) => RedisTopology::Cluster,
        }
    }

    /// Every node URL named (the one server, or the seeds).
    pub fn nodes(&self) -> Vec<String> {
        match self {
            Address::Standalone(url) => vec![url.clone()],
            Address::Cluster(nodes) => nodes.clone(),
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
    }
}
