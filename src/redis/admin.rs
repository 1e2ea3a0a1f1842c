//! The run's own short-lived Redis connections for what is not a strategy's business: the
//! server's version, and removing the run's keys (cleanup and the injected wipe).

use std::time::Duration;

use crate::redact::redact_url;

/// `INFO server` → `redis_version`, on a short-lived connection of the run's own.
pub async fn server_version(url: &str, timeout: Duration) -> Result<String, super::RedisError> {
    let mut connection = admin_connection(url, timeout).await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .map_err(|e| super::RedisError::Command {
            command: "INFO",
            cause: e.to_string(),
        })?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_string())
}

/// Removes every key of the run (`SCAN MATCH prefix*` + `UNLINK`).
pub async fn delete_keys(
    url: &str,
    prefix: &str,
    timeout: Duration,
) -> Result<u64, super::RedisError> {
    let mut connection = admin_connection(url, timeout).await?;
    let command_error = |command| {
        move |e: redis::RedisError| super::RedisError::Command {
            command,
            cause: e.to_string(),
        }
    };
    let mut cursor: u64 = 0;
    let mut deleted = 0;
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
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .map_err(command_error("UNLINK"))?;
            deleted += n;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(deleted);
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
