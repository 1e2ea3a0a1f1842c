//! The run's own short-lived Redis connections for what is not a strategy's business: the
//! server's version, and removing the run's keys (cleanup and the injected wipe).

use super::topology::REDIS;
use std::time::Duration;

use crate::redact::redact_url;

/// `INFO server` → `redis_version`, on a short-lived connection of the run's own (on a
/// cluster, of its first seed node).
pub async fn server_version(url: &str, timeout: Duration) -> Result<String, super::RedisError> {
    let first = primaries(url, timeout).await?.remove(0);
    let info = info(&first, ("server", "INFO"), timeout).await?;
    Ok(field(&info, "redis_version")
        .unwrap_or("unknown")
        .trim()
        .to_string())
}

/// `INFO cpu` summed over the server or every primary: (user seconds, system seconds,
/// servers asked). The server's own CPU since it started, its threads and children included.
pub async fn cpu_seconds(
    url: &str,
    timeout: Duration,
) -> Result<(f64, f64, usize), super::RedisError> {
    let nodes = primaries(url, timeout).await?;
    let (mut user, mut system) = (0.0, 0.0);
    for node in &nodes {
        let info = info(node, ("cpu", "INFO cpu"), timeout).await?;
        let seconds = |name| field(&info, name).and_then(|v| v.trim().parse::<f64>().ok());
        user += seconds("used_cpu_user").unwrap_or(0.0);
        system += seconds("used_cpu_sys").unwrap_or(0.0);
    }
    Ok((user, system, nodes.len()))
}

/// `evicted_keys` of `INFO stats`, summed over the server or every primary: keys Redis
/// removed under `maxmemory` since it started.
pub async fn evicted_keys(url: &str, timeout: Duration) -> Result<u64, super::RedisError> {
    summed(url, ("stats", "INFO stats"), "evicted_keys", timeout).await
}

/// `used_memory` of `INFO memory`, summed over the server or every primary, in bytes.
pub async fn used_memory(url: &str, timeout: Duration) -> Result<u64, super::RedisError> {
    summed(url, ("memory", "INFO memory"), "used_memory", timeout).await
}

/// One numeric field of an `INFO` section, summed over the server or every primary (a field a
/// server does not report counts as 0).
async fn summed(
    url: &str,
    section: (&str, &'static str),
    name: &str,
    timeout: Duration,
) -> Result<u64, super::RedisError> {
    let mut total = 0;
    for node in primaries(url, timeout).await? {
        let info = info(&node, section, timeout).await?;
        total += field(&info, name)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// The keys under `prefix` on every primary, and `MEMORY USAGE` of up to `sample` of them
/// per primary (the first ones `SCAN` returns): (keys, sampled keys, sampled bytes).
pub async fn memory_sample(
    url: &str,
    prefix: &str,
    sample: usize,
    timeout: Duration,
) -> Result<(u64, u64, u64), super::RedisError> {
    let (mut keys, mut sampled, mut bytes) = (0, 0, 0);
    for node in primaries(url, timeout).await? {
        let mut connection = admin_connection(&node, timeout).await?;
        let mut cursor: u64 = 0;
        let mut picked: Vec<String> = Vec::new();
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await
                .map_err(|e| super::RedisError::Command {
                    command: "SCAN",
                    cause: e.to_string(),
                })?;
            keys += found.len() as u64;
            let room = sample.saturating_sub(picked.len());
            picked.extend(found.into_iter().take(room));
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if picked.is_empty() {
            continue;
        }
        let mut pipeline = redis::pipe();
        for key in &picked {
            // SAMPLES 0: every element of an aggregate value (a DONE mark is a string).
            pipeline
                .cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0);
        }
        let usages: Vec<Option<u64>> =
            pipeline.query_async(&mut connection).await.map_err(|e| {
                super::RedisError::Command {
                    command: "MEMORY USAGE",
                    cause: e.to_string(),
                }
            })?;
        for usage in usages.into_iter().flatten() {
            sampled += 1;
            bytes += usage;
        }
    }
    Ok((keys, sampled, bytes))
}

/// `INFO replication` of one server (a `redis://` URL), as the server wrote it.
pub async fn replication(url: &str, timeout: Duration) -> Result<String, super::RedisError> {
    info(url, ("replication", "INFO replication"), timeout).await
}

/// `INFO SECTION` of one server, on a short-lived connection of the run's own;
/// `(section, command)`: the command names the section in an error, as each caller did.
async fn info(
    node: &str,
    (section, command): (&str, &'static str),
    timeout: Duration,
) -> Result<String, super::RedisError> {
    let mut connection = admin_connection(node, timeout).await?;
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut connection)
        .await
        .map_err(|e| super::RedisError::Command {
            command,
            cause: e.to_string(),
        })
}

/// The value of `name:` in an `INFO` reply.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// Removes every key of the run (`SCAN MATCH prefix*` + `UNLINK`), on every primary of a
/// cluster. Returns how many were removed.
pub async fn delete_keys(
    url: &str,
    prefix: &str,
    timeout: Duration,
) -> Result<u64, super::RedisError> {
    let mut deleted = 0;
    for node in primaries(url, timeout).await? {
        deleted += on_node(&node, prefix, timeout, true).await?;
    }
    Ok(deleted)
}

/// How many of the run's keys each primary holds (one entry for a single server).
pub async fn keys_per_primary(
    url: &str,
    prefix: &str,
    timeout: Duration,
) -> Result<Vec<(String, u64)>, super::RedisError> {
    let mut counts = Vec::new();
    for node in primaries(url, timeout).await? {
        let count = on_node(&node, prefix, timeout, false).await?;
        counts.push((redact_url(&node), count));
    }
    Ok(counts)
}

/// The primary that the first answering Sentinel names `service`, as a `redis://` URL with
/// `credentials`.
pub async fn sentinel_primary(
    sentinels: &[String],
    service: &str,
    credentials: &str,
    timeout: Duration,
) -> Result<String, super::RedisError> {
    let mut last_error = None;
    for sentinel in sentinels {
        let asked = async {
            let mut connection = admin_connection(sentinel, timeout).await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(service)
                .query_async::<Option<(String, u16)>>(&mut connection)
                .await
                .map_err(|e| super::RedisError::Command {
                    command: "SENTINEL get-master-addr-by-name",
                    cause: e.to_string(),
                })
        };
        match asked.await {
            Ok(Some((host, port))) => return Ok(format!("{REDIS}{credentials}{host}:{port}")),
            Ok(None) => {
                last_error = Some(super::RedisError::Connect {
                    address: redact_url(sentinel),
                    cause: format!("the Sentinel knows no primary named {service:?}"),
                })
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.expect("a sentinel URL names at least one Sentinel"))
}

/// The server itself, or every primary a cluster's first answering seed lists
/// (`CLUSTER NODES`), as `redis://` URLs with the seeds' credentials.
pub async fn primaries(url: &str, timeout: Duration) -> Result<Vec<String>, super::RedisError> {
    let address =
        super::topology::Address::parse(url).map_err(|cause| super::RedisError::Connect {
            address: redact_url(url),
            cause,
        })?;
    let seeds = match address {
        super::topology::Address::Standalone(url) => return Ok(vec![url]),
        super::topology::Address::Sentinel {
            sentinels,
            service,
            credentials,
        } => {
            return Ok(vec![
                sentinel_primary(&sentinels, &service, &credentials, timeout).await?,
            ]);
        }
        super::topology::Address::Cluster(seeds) => seeds,
    };
    let mut last_error = None;
    for seed in &seeds {
        let listed = async {
            let mut connection = admin_connection(seed, timeout).await?;
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async::<String>(&mut connection)
                .await
                .map_err(|e| super::RedisError::Command {
                    command: "CLUSTER NODES",
                    cause: e.to_string(),
                })
        };
        match listed.await {
            Ok(nodes) => {
                let credentials = seed
                    .strip_prefix(REDIS)
                    .and_then(|rest| rest.rsplit_once('@'))
                    .map(|(credentials, _)| format!("{credentials}@"))
                    .unwrap_or_default();
                return Ok(serving_primaries(&nodes, &credentials));
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.expect("a cluster URL names at least one seed"))
}

/// The primaries of a `CLUSTER NODES` answer that serve slots, as `redis://` URLs with
/// `credentials`. A node that calls itself master but owns no slot (a replica whose new role
/// the seed has not heard of yet, an empty master) holds no keys, so it is left out; so are
/// nodes marked failing.
fn serving_primaries(nodes: &str, credentials: &str) -> Vec<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags: Vec<&str> = fields.get(2)?.split(',').collect();
            let primary = flags.contains(&"master")
                && !flags
                    .iter()
                    .any(|f| matches!(*f, "fail" | "fail?" | "noaddr"));
            // Fields 8 on are the slot ranges (and slots being migrated).
            let serves = fields.len() > 8;
            let host = fields.get(1)?.split('@').next()?;
            (primary && serves).then(|| format!("{REDIS}{credentials}{host}"))
        })
        .collect()
}

/// Counts (or, with `delete`, unlinks one by one: a cluster refuses a multi-key UNLINK across
/// slots) the keys under `prefix` on one node.
async fn on_node(
    node: &str,
    prefix: &str,
    timeout: Duration,
    delete: bool,
) -> Result<u64, super::RedisError> {
    let mut connection = admin_connection(node, timeout).await?;
    let command_error = |command| {
        move |e: redis::RedisError| super::RedisError::Command {
            command,
            cause: e.to_string(),
        }
    };
    let mut cursor: u64 = 0;
    let mut found = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .map_err(command_error("SCAN"))?;
        if delete && !keys.is_empty() {
            let mut pipeline = redis::pipe();
            for key in &keys {
                pipeline.cmd("UNLINK").arg(key);
            }
            let removed: Vec<u64> = pipeline
                .query_async(&mut connection)
                .await
                .map_err(command_error("UNLINK"))?;
            found += removed.iter().sum::<u64>();
        } else {
            found += keys.len() as u64;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(found);
        }
    }
}

async fn admin_connection(
    url: &str,
    timeout: Duration,
) -> Result<redis::aio::MultiplexedConnection, super::RedisError> {
    let connect_error = |cause: String| super::RedisError::Connect {
        address: redact_url(url),
        cause,
    };
    let client = redis::Client::open(url).map_err(|e| connect_error(e.to_string()))?;
    tokio::time::timeout(timeout, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| connect_error(format!("no answer within {timeout:?}")))?
        .map_err(|e| connect_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_primaries_that_serve_slots_are_counted() {
        // A seed's view while one node's switch to replica has not reached it yet: 20923 still
        // says master but owns no slot.
        let nodes = "\
a1 127.0.0.1:20371@30371 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:20923@30923 master - 0 1 2 connected
c3 127.0.0.1:22345@32345 master - 0 1 3 connected 5461-10922
d4 127.0.0.1:21465@31465 master - 0 1 4 connected 10923-16383
e5 127.0.0.1:21466@31466 slave a1 0 1 1 connected
f6 127.0.0.1:21467@31467 master,fail - 0 1 5 disconnected 100
";
        assert_eq!(
            serving_primaries(nodes, "user:pw@"),
            [
                "redis://user:pw@127.0.0.1:20371",
                "redis://user:pw@127.0.0.1:22345",
                "redis://user:pw@127.0.0.1:21465"
            ]
        );
    }
}
