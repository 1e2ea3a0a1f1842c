//! The tansu broker embedded in this process (cargo feature `tansu`): a Kafka-protocol broker
//! with SQLite storage, on a free loopback port, serving from a runtime of its own on a thread
//! of its own until the process exits (tansu has no public shutdown).
//!
//! Only `sqlite://` storage is used: its `memory://` engine loses and duplicates records when a
//! fetch starts inside a stored batch (see `reports/conformance/`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;

/// The tansu release this build embeds (from Cargo.lock, via build.rs).
pub const TANSU_VERSION: &str = env!("IDEMBENCH_TANSU_VERSION");

pub struct Tansu {
    port: u16,
    /// The SQLite file's directory, removed when this is dropped.
    dir: PathBuf,
}

impl Tansu {
    /// Starts the broker and waits until it answers metadata requests.
    pub async fn start() -> Result<Tansu, String> {
        let port = super::free_port().map_err(|e| format!("no free loopback port: {e}"))?;
        // tansu resolves a sqlite:// URL against the current directory (host, then path), and a
        // URL's host is lower-cased: a lower-case directory name in the current directory.
        let name = format!(
            "idembench-tansu-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let dir = std::env::current_dir()
            .map_err(|e| format!("no current directory: {e}"))?
            .join(&name);
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let storage = url::Url::parse(&format!("sqlite:\u{2f}/{name}/tansu.db"))
            .map_err(|e| e.to_string())?;
        let listener =
            url::Url::parse(&format!("tcp:\u{2f}/127.0.0.1:{port}")).map_err(|e| e.to_string())?;
        let (failed, failure) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("tansu".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Runtime::new() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = failed.send(format!("cannot start tansu's runtime: {e}"));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let built = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
                        .node_id(1)
                        .cluster_id("idembench")
                        .incarnation_id(uuid::Uuid::new_v4())
                        .advertised_listener(listener.clone())
                        .storage(storage)
                        .listener(listener)
                        .silent(true)
                        .build()
                        .await;
                    let outcome = match built {
                        Ok(mut broker) => broker.serve(tokio::time::Instant::now()).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = outcome {
                        let _ = failed.send(format!("tansu stopped: {e:?}"));
                    }
                });
            })
            .map_err(|e| format!("cannot start tansu's thread: {e}"))?;
        let tansu = Tansu { port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(error) = failure.try_recv() {
                return Err(error);
            }
            if super::kafka::kafka_answers(&tansu.bootstrap_servers()).await {
                return Ok(tansu);
            }
            if Instant::now() > deadline {
                return Err("tansu did not answer within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the embedded broker as the stack's Kafka.
pub(super) async fn start(stack: &mut super::Stack) -> Result<(), super::StackError> {
    let tansu = Tansu::start()
        .await
        .map_err(|cause| stack.fail(super::Service::Kafka, cause))?;
    stack.connections.kafka_brokers = tansu.bootstrap_servers();
    stack.info.kafka_version = Some(format!("tansu {TANSU_VERSION}"));
    stack.tansu = Some(tansu);
    super::say(
        stack.quiet,
        "kafka    is the tansu broker embedded in this process (cargo feature tansu): fine for trying idembench out; results for an ADR should be taken against Apache Kafka",
    );
    Ok(())
}
