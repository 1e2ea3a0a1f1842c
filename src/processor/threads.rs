//! `--processor-threads N`: the processor's tasks on N threads of their own, each a tokio
//! current-thread runtime with its own Redis and Postgres connections, instead of on the
//! process's shared multi-thread runtime.
//!
//! Why: on the shared runtime a worker and the connection task that carries its Redis command
//! may sit on different threads, and every reply wakes a parked thread (PROFILE.md: most of a
//! redis-only message's CPU is the kernel's wake-ups). On a runtime of its own, a worker, its
//! connections and their socket readiness all live on one thread, as in redis-benchmark's event
//! loop: one `epoll_wait` return per round trip, no cross-thread wake-up.
//!
//! What it cannot run: a rebalance callback that blocks on a database lookup (db-offsets and
//! kafka-transactions resume at offsets they keep), since blocking a current-thread runtime
//! would stop the very connection the lookup waits on; validation refuses those.

use std::sync::Arc;

use tokio::runtime::Handle;

use crate::strategy::Strategy;

/// Where a processor's tasks run: one share per runtime. Worker `i` runs on share
/// `i % shares.len()` with that share's strategy (over connections made on its runtime); the
/// dispatcher, the committer and the rebalance callback's context are the first share's.
#[derive(Clone)]
pub struct Placement {
    pub shares: Vec<Share>,
}

/// One runtime of a [`Placement`] and the strategy its workers use.
#[derive(Clone)]
pub struct Share {
    pub runtime: Handle,
    pub strategy: Arc<dyn Strategy>,
}

impl Placement {
    /// Everything on the caller's runtime, over one strategy (the default).
    pub fn here(strategy: Arc<dyn Strategy>) -> Placement {
        Placement {
            shares: vec![Share {
                runtime: Handle::current(),
                strategy,
            }],
        }
    }

    /// The share worker `index` runs on.
    pub fn of_worker(&self, index: usize) -> &Share {
        &self.shares[index % self.shares.len()]
    }

    /// The first share: the dispatcher's, the committer's and the consumer context's.
    pub fn first(&self) -> &Share {
        &self.shares[0]
    }

    /// Refuses a current-thread placement for a processor whose rebalance would block: one
    /// that resumes at offsets its strategy keeps, or runs Kafka `transactions`.
    pub fn check(&self, transactions: bool) -> Result<(), String> {
        let current_thread = self.shares.iter().any(|share| {
            share.runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
        });
        match current_thread && (self.first().strategy.keeps_offsets() || transactions) {
            true => Err("a processor on a current-thread runtime cannot resume at offsets its strategy keeps, nor run Kafka transactions: its rebalance would block the thread its lookup needs".into()),
            false => Ok(()),
        }
    }
}

/// N threads, each driving a current-thread runtime until this is dropped.
pub struct Runtimes {
    handles: Vec<Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Runtimes {
    /// Starts `count` threads named `idembench-processor-N`, each with its own runtime (I/O
    /// and timers enabled), and returns once every runtime exists.
    pub fn start(count: usize) -> Result<Runtimes, String> {
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("idembench-processor-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(runtime.handle().clone()));
                    // Drives every task spawned onto it until the run lets go of it.
                    let _ = runtime.block_on(stop_rx);
                    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                })
                .map_err(|e| format!("cannot start processor thread {index}: {e}"))?;
            let handle = ready_rx
                .recv()
                .map_err(|_| format!("processor thread {index} ended before its runtime started"))?
                .map_err(|e| format!("cannot build processor thread {index}'s runtime: {e}"))?;
            handles.push(handle);
            stops.push(stop_tx);
        }
        Ok(Runtimes { handles, stops })
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for Runtimes {
    /// Lets each thread end its runtime (tasks still on it are dropped within a second); the
    /// threads are not joined, so dropping this never blocks an async caller.
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_runtime_runs_its_tasks_on_its_own_thread() {
        let runtimes = Runtimes::start(2).expect("runtimes");
        let names: Vec<String> = runtimes
            .handles()
            .iter()
            .map(|handle| {
                let task = handle.spawn(async {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    std::thread::current()
                        .name()
                        .unwrap_or_default()
                        .to_string()
                });
                futures::executor::block_on(task).expect("task")
            })
            .collect();
        assert_eq!(names, ["idembench-processor-0", "idembench-processor-1"]);
        for handle in runtimes.handles() {
            assert_eq!(
                handle.runtime_flavor(),
                tokio::runtime::RuntimeFlavor::CurrentThread
            );
        }
    }
}
