//! The seam between the faults that kill and restart services and whoever started them: the
//! stack implements [`ServiceControl`] for the processes it owns. A run against servers it did
//! not start has no control, and refuses those faults before it begins.

/// One service process the stack owns (a Redis node or Sentinel, a Kafka broker, the
/// Postgres postmaster), or one it only measures (left running by `idembench services up`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceNode {
    /// `redis`, `postgres` or `kafka`.
    pub service: &'static str,
    /// What it is: `redis`, `redis-sentinel`, `postgres`, `kafka`.
    pub role: &'static str,
    /// The address it serves: `127.0.0.1:PORT`.
    pub address: String,
    /// Its pid now (`None` while a fault holds it down).
    pub pid: Option<u32>,
    /// Whether the stack can kill and start it (its own child, not a long-lived service).
    pub owned: bool,
}

/// CPU a killed process had used, read before it was reaped (its tree is gone from /proc).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spent {
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
}

pub trait ServiceControl: Send + Sync + std::fmt::Debug {
    /// Every process of every service, as it stands.
    fn nodes(&self) -> Vec<ServiceNode>;

    /// SIGKILLs the owned process serving `address` and reaps it.
    fn kill(&self, address: &str) -> Result<(), String>;

    /// Starts the process that served `address` again, with the command it first ran.
    fn restart(&self, address: &str) -> Result<(), String>;

    /// Sends `signal` (SIGSTOP, SIGCONT) to the owned process serving `address`.
    fn signal(&self, address: &str, signal: i32) -> Result<(), String>;

    /// CPU of the processes of `service` that faults killed, so far.
    fn spent(&self, service: &str) -> Spent;

    /// Cuts the lagging replication link from the Redis primary at `primary`, if there is
    /// one (`--redis-replication-lag-ms`), dropping the writes still on their way to the
    /// replica; returns its lag.
    fn cut_replication<'a>(
        &'a self,
        primary: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<u64>, String>> {
        let _ = primary;
        Box::pin(async { Ok(None) })
    }

    /// After a failover that cut it: the lagging link forwards to the new `primary`, and
    /// `replica` replicates through it; false where there is no such link.
    fn relink_replication<'a>(
        &'a self,
        primary: &'a str,
        replica: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<bool, String>> {
        let _ = (primary, replica);
        Box::pin(async { Ok(false) })
    }
}
