//! A Postgres outage without touching Postgres: the processor's connections go through a
//! loopback TCP relay that the run can cut. A cut closes every relayed connection at once (as a
//! crashed or restarted server would: in-flight statements and COMMITs get no answer) and
//! refuses new ones until it is restored. Postgres itself, other runs sharing it, and the run's
//! own audit (which connects directly) are unaffected, so this works against any server.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The relay's state: `up`, and a generation that each cut increments.
#[derive(Clone, Copy, Debug)]
struct State {
    up: bool,
    generation: u64,
}

pub struct Relay {
    local: SocketAddr,
    state: Arc<watch::Sender<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on 127.0.0.1 (a free port) and relays each connection to `upstream`.
    pub async fn start(upstream: String) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let (state, _) = watch::channel(State {
            up: true,
            generation: 0,
        });
        let state = Arc::new(state);
        let accept = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let now = *state.borrow();
                    if !now.up {
                        // Refused: closed before a byte is exchanged.
                        drop(inbound);
                        continue;
                    }
                    let mut changes = state.subscribe();
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let mut inbound = inbound;
                        let cut = async {
                            loop {
                                if changes.changed().await.is_err() {
                                    return;
                                }
                                if changes.borrow().generation != now.generation {
                                    return;
                                }
                            }
                        };
                        // Either side closing, or a cut, ends the relay; dropping both streams
                        // closes both connections.
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut => {}
                        }
                    });
                }
            }
        });
        Ok(Relay {
            local,
            state,
            accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.up = false;
            s.generation += 1;
        });
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.state.send_modify(|s| s.up = true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `url` with its host and port replaced by `via`; and the `host:port` it named.
pub fn reroute(url: &str, via: SocketAddr) -> Result<String, String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    parsed
        .set_host(Some(&via.ip().to_string()))
        .map_err(|e| format!("cannot set the host: {e}"))?;
    parsed
        .set_port(Some(via.port()))
        .map_err(|()| "cannot set the port".to_string())?;
    Ok(parsed.to_string())
}

/// The `host:port` a Postgres URL names (port 5432 when it names none).
pub fn address_of(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("a Postgres outage needs a TCP host in --postgres-url, not a socket path")?;
    Ok(format!("{host}:{}", parsed.port().unwrap_or(5432)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls_are_rerouted_with_their_credentials() {
        let via: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let url = "postgres://u:secret@db.example:6543/idembench?sslmode=disable";
        assert_eq!(address_of(url).unwrap(), "db.example:6543");
        assert_eq!(
            reroute(url, via).unwrap(),
            "postgres://u:secret@127.0.0.1:40000/idembench?sslmode=disable"
        );
        assert_eq!(
            address_of("postgres://u@localhost/db").unwrap(),
            "localhost:5432"
        );
    }

    /// A local echo server stands in for Postgres: the relay is plain TCP.
    #[tokio::test]
    async fn a_cut_closes_connections_and_refuses_until_restored() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let relay = Relay::start(echo_addr.to_string()).await.unwrap();
        let mut client = TcpStream::connect(relay.local_addr()).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        relay.cut();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            client.read_to_end(&mut rest),
        )
        .await
        .expect("the cut closes the connection");
        assert!(read.map(|n| n == 0).unwrap_or(true));

        let mut refused = TcpStream::connect(relay.local_addr()).await.unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), refused.read(&mut buf))
            .await
            .expect("closed at once");
        assert!(n.map(|n| n == 0).unwrap_or(true), "no byte while down");

        relay.restore();
        let mut again = TcpStream::connect(relay.local_addr()).await.unwrap();
        again.write_all(b"pong").await.unwrap();
        again.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}
