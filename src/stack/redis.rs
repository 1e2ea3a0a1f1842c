//! A Redis child process: no persistence, loopback only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{Service, Stack, StackError};

/// Starts `redis-server` on `port` with its files under `root/redis`.
pub(super) async fn start(
    stack: &mut Stack,
    server: &Path,
    root: &Path,
    port: u16,
) -> Result<(), StackError> {
    let dir = root.join("redis");
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("redis.log");
    // No persistence: the run's Redis holds idempotency keys only (as scripts/services).
    stack.start_process(
        Command::new(server)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir),
        &log,
        None,
        Service::Redis,
        libc::SIGTERM,
    )?;
    stack
        .wait_ready(
            Service::Redis,
            &log,
            Duration::from_secs(20),
            || async move { redis_pings(port) },
        )
        .await?;
    stack.connections.redis_url = format!("redis://127.0.0.1:{port}");
    Ok(())
}

fn redis_pings(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}
