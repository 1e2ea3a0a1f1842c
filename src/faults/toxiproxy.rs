//! Toxiproxy, the standard fault proxy, for the network faults (`net-latency`, `net-timeout`,
//! `net-reset-peer`, `net-bandwidth`): the run puts a proxy between the processor and Redis
//! (or Postgres) and, for each fault's window, adds a toxic to it. Like the outage relay it
//! belongs to the run's fault plan, not to the services: the run starts the server as a child
//! process on a free loopback port (`scripts/services install` builds it with `go install`), or
//! uses the one `IDEMBENCH_TOXIPROXY_URL` names. Its REST API is small enough to speak HTTP/1.1
//! over a socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::spawn::{Spawner, free_port};

/// A Toxiproxy server the run talks to (and stops, if it started it).
pub struct Toxiproxy {
    api: String,
    server: Option<Server>,
}

/// A server this run started, from a [`Spawner`] it keeps: an async task's runtime thread may
/// retire mid-run, and `PR_SET_PDEATHSIG` would take the server with it.
struct Server {
    child: std::process::Child,
    _spawner: Spawner,
}

impl std::fmt::Debug for Toxiproxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Toxiproxy({})", self.api)
    }
}

/// Where `scripts/services install` puts the server.
fn binary() -> Option<PathBuf> {
    let dir = std::env::var_os("IDEMBENCH_TOXIPROXY_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/idembench/toxiproxy"))
        })?;
    let server = dir.join("server");
    if server.is_file() {
        return Some(server);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("toxiproxy-server"))
            .find(|p| p.is_file())
    })
}

impl Toxiproxy {
    /// The server `IDEMBENCH_TOXIPROXY_URL` names (`host:port` of its API), or one started
    /// here on a free loopback port, answering within `timeout`.
    pub async fn start(timeout: Duration) -> Result<Toxiproxy, String> {
        if let Ok(api) = std::env::var("IDEMBENCH_TOXIPROXY_URL") {
            let api = api
                .trim_start_matches("http:\u{2f}/")
                .trim_end_matches('/')
                .to_string();
            let proxy = Toxiproxy { api, server: None };
            proxy.request("GET", "/version", None).await.map_err(|e| {
                format!(
                    "the Toxiproxy at IDEMBENCH_TOXIPROXY_URL={} does not answer: {e}",
                    proxy.api
                )
            })?;
            return Ok(proxy);
        }
        let server = binary().ok_or(
            "Toxiproxy is not installed (the network faults need it): run `scripts/services install`, which builds it with `go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0`, or set IDEMBENCH_TOXIPROXY_URL to a running one",
        )?;
        let port = free_port().map_err(|e| format!("no free port for Toxiproxy: {e}"))?;
        let mut command = Command::new(&server);
        command
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let spawner = Spawner::default();
        let child = spawner
            .spawn_owned(command)
            .map_err(|e| format!("cannot start Toxiproxy ({}): {e}", server.display()))?;
        let proxy = Toxiproxy {
            api: format!("127.0.0.1:{port}"),
            server: Some(Server {
                child,
                _spawner: spawner,
            }),
        };
        let deadline = Instant::now() + timeout.max(Duration::from_secs(5));
        while proxy.request("GET", "/version", None).await.is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "Toxiproxy ({}) did not answer on {}",
                    server.display(),
                    proxy.api
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(proxy)
    }

    /// A proxy named `name` to `upstream` (`host:port`) on a free loopback port; returns
    /// where it listens.
    pub async fn proxy(&self, name: &str, upstream: &str) -> Result<SocketAddr, String> {
        let body = serde_json::json!({
            "name": name,
            "listen": "127.0.0.1:0",
            "upstream": upstream,
            "enabled": true,
        });
        let reply = self.request("POST", "/proxies", Some(body)).await?;
        let listen = reply["listen"]
            .as_str()
            .ok_or_else(|| format!("Toxiproxy answered no listen address: {reply}"))?;
        listen
            .parse()
            .map_err(|e| format!("Toxiproxy's listen address {listen:?}: {e}"))
    }

    /// Adds `toxic` (`{name, type, stream, attributes}`) to proxy `name`.
    pub async fn add_toxic(&self, name: &str, toxic: serde_json::Value) -> Result<(), String> {
        self.request("POST", &format!("/proxies/{name}/toxics"), Some(toxic))
            .await
            .map(drop)
    }

    pub async fn remove_toxic(&self, name: &str, toxic: &str) -> Result<(), String> {
        self.request("DELETE", &format!("/proxies/{name}/toxics/{toxic}"), None)
            .await
            .map(drop)
    }

    /// Enables or disables proxy `name`; disabling closes its connections at once, dropping
    /// whatever a toxic still held.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), String> {
        self.update(name, serde_json::json!({ "enabled": enabled }))
            .await
    }

    /// Changes proxy `name`'s `fields` (`upstream`, `enabled`); its toxics stay.
    pub async fn update(&self, name: &str, fields: serde_json::Value) -> Result<(), String> {
        self.request("POST", &format!("/proxies/{name}"), Some(fields))
            .await
            .map(drop)
    }

    pub async fn delete_proxy(&self, name: &str) -> Result<(), String> {
        self.request("DELETE", &format!("/proxies/{name}"), None)
            .await
            .map(drop)
    }

    /// One HTTP/1.1 request (`Connection: close`); the JSON body of a 2xx reply (`null` when
    /// empty), or the status and body of any other.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(&self.api).await?;
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                self.api,
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body.as_bytes()).await?;
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).await?;
            Ok::<_, std::io::Error>(reply)
        };
        let reply = tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .map_err(|_| format!("Toxiproxy at {} did not answer {method} {path}", self.api))?
            .map_err(|e| format!("Toxiproxy at {}: {e}", self.api))?;
        let reply = String::from_utf8_lossy(&reply);
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("Toxiproxy sent no HTTP status: {head:?}"))?;
        // A chunked body would be framed; Toxiproxy sends Content-Length bodies.
        if !(200..300).contains(&status) {
            return Err(format!(
                "Toxiproxy {method} {path}: {status} {}",
                body.trim()
            ));
        }
        if body.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(body).map_err(|e| format!("Toxiproxy {method} {path}: {e}: {body}"))
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
    }
}
