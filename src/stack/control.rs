//! The processes a stack started, shared between the stack (which stops them when it is
//! dropped) and the faults of a run (which kill, pause and restart them through
//! [`ServiceControl`]). A restart runs the command the process first ran, read back from its
//! `Command`, in the same directories: a Kafka node finds its log again, a Redis node without
//! persistence comes back empty.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Service, User, spawn};
use crate::faults::control::{ServiceControl, ServiceNode, Spent};

/// A child process and how to start it again.
pub(super) struct Running {
    pub(super) service: Service,
    pub(super) role: &'static str,
    /// `127.0.0.1:PORT`, the address it serves.
    pub(super) address: String,
    /// `None` while a fault holds it down.
    pub(super) child: Option<Child>,
    /// The signal that shuts the program down quickly (Postgres: SIGINT, a fast shutdown).
    pub(super) stop_signal: libc::c_int,
    respawn: Respawn,
}

/// What a process was started with.
#[derive(Clone)]
struct Respawn {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)>,
    dir: Option<PathBuf>,
    log: PathBuf,
    user: Option<User>,
    detached: bool,
}

impl Respawn {
    fn of(command: &Command, log: &std::path::Path, user: Option<User>, detached: bool) -> Respawn {
        Respawn {
            program: command.get_program().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
            envs: command
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
                .collect(),
            dir: command.get_current_dir().map(PathBuf::from),
            log: log.to_path_buf(),
            user,
            detached,
        }
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        spawn(&mut command, &self.log, self.user, self.detached)
    }
}

/// The stack's children, and the CPU of those that faults killed.
#[derive(Clone, Default)]
pub(super) struct Children {
    inner: Arc<Mutex<Inner>>,
    spawner: crate::spawn::Spawner,
}

#[derive(Default)]
struct Inner {
    running: Vec<Running>,
    spent: std::collections::BTreeMap<&'static str, Spent>,
}

impl std::fmt::Debug for Children {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Children({} processes)", self.lock().running.len())
    }
}

impl Children {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("not poisoned")
    }

    /// Starts `command` and keeps it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        &self,
        command: &mut Command,
        log: &std::path::Path,
        user: Option<User>,
        detached: bool,
        service: Service,
        role: &'static str,
        port: u16,
        stop_signal: libc::c_int,
    ) -> std::io::Result<u32> {
        let respawn = Respawn::of(command, log, user, detached);
        // From the spawner's thread too: a stack may be provisioned from any task.
        let first = respawn.clone();
        let child = self.spawner.spawn(Box::new(move || first.spawn()))?;
        let pid = child.id();
        self.lock().running.push(Running {
            service,
            role,
            address: format!("127.0.0.1:{port}"),
            child: Some(child),
            stop_signal,
            respawn,
        });
        Ok(pid)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lock().running.is_empty()
    }

    /// Forgets them (long-lived services outlive the stack).
    pub(super) fn clear(&self) {
        self.lock().running.clear();
    }

    /// The exit status of a process of `service` that ended by itself, if one did.
    pub(super) fn exited(&self, service: Service) -> Option<std::process::ExitStatus> {
        self.lock()
            .running
            .iter_mut()
            .filter(|r| r.service == service)
            .find_map(|r| r.child.as_mut()?.try_wait().ok().flatten())
    }

    /// The services' names, newest first.
    pub(super) fn names(&self) -> Vec<&'static str> {
        self.lock()
            .running
            .iter()
            .rev()
            .map(|r| r.service.name())
            .collect()
    }

    /// Stops every process, newest first, each with its quick shutdown signal and SIGKILL after
    /// 15 s.
    pub(super) fn stop_all(&self) {
        let mut inner = self.lock();
        while let Some(running) = inner.running.pop() {
            let Some(mut child) = running.child else {
                continue;
            };
            // SAFETY: kill on the pid of a child we have not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, running.stop_signal) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl ServiceControl for Children {
    fn nodes(&self) -> Vec<ServiceNode> {
        self.lock()
            .running
            .iter()
            .map(|r| ServiceNode {
                service: r.service.name(),
                role: r.role,
                address: r.address.clone(),
                pid: r.child.as_ref().map(Child::id),
                owned: true,
            })
            .collect()
    }

    fn kill(&self, address: &str) -> Result<(), String> {
        let mut inner = self.lock();
        let running = find(&mut inner.running, address)?;
        let service = running.service.name();
        let Some(mut child) = running.child.take() else {
            return Err(format!("{address} is already down"));
        };
        let _ = child.kill();
        // A killed process stays in /proc until it is reaped: read what it used first.
        let mut status = None;
        for _ in 0..100 {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            let zombie =
                std::fs::read_to_string(format!("/proc/{}/stat", child.id())).is_ok_and(|stat| {
                    stat.rsplit(')')
                        .next()
                        .is_some_and(|s| s.trim_start().starts_with('Z'))
                });
            if zombie {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let used = super::usage::sample(&[child.id()]);
        if status.is_none() {
            let _ = child.wait();
        }
        let spent = inner.spent.entry(service).or_default();
        spent.cpu_user_seconds += used.cpu_user_seconds;
        spent.cpu_system_seconds += used.cpu_system_seconds;
        Ok(())
    }

    fn restart(&self, address: &str) -> Result<(), String> {
        let mut inner = self.lock();
        let running = find(&mut inner.running, address)?;
        if running.child.is_some() {
            return Err(format!("{address} is running; kill it first"));
        }
        let respawn = running.respawn.clone();
        let child = self
            .spawner
            .spawn(Box::new(move || respawn.spawn()))
            .map_err(|e| format!("cannot start {address} again: {e}"))?;
        running.child = Some(child);
        Ok(())
    }

    fn signal(&self, address: &str, signal: i32) -> Result<(), String> {
        let mut inner = self.lock();
        let running = find(&mut inner.running, address)?;
        let Some(child) = &running.child else {
            return Err(format!("{address} is down"));
        };
        // SAFETY: kill on the pid of a child we have not yet reaped.
        match unsafe { libc::kill(child.id() as libc::pid_t, signal) } {
            0 => Ok(()),
            _ => Err(format!(
                "signal {signal} to {address}: {}",
                std::io::Error::last_os_error()
            )),
        }
    }

    fn spent(&self, service: &str) -> Spent {
        self.lock().spent.get(service).copied().unwrap_or_default()
    }
}

fn find<'a>(running: &'a mut [Running], address: &str) -> Result<&'a mut Running, String> {
    running
        .iter_mut()
        .find(|r| r.address == address)
        .ok_or_else(|| format!("no process of this stack serves {address}"))
}

/// What a run gets: the stack's children, and the long-lived services it only measures.
#[derive(Clone)]
pub struct StackControl {
    children: Children,
    adopted: Vec<ServiceNode>,
    replication: Option<Arc<super::redis::ReplicationLink>>,
}

impl std::fmt::Debug for StackControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackControl")
            .field("children", &self.children)
            .field("adopted", &self.adopted)
            .field(
                "replication",
                &self.replication.as_ref().map(|r| r.primary()),
            )
            .finish()
    }
}

impl StackControl {
    pub(super) fn new(
        children: Children,
        adopted: Vec<ServiceNode>,
        replication: Option<Arc<super::redis::ReplicationLink>>,
    ) -> StackControl {
        StackControl {
            children,
            adopted,
            replication,
        }
    }
}

impl ServiceControl for StackControl {
    fn nodes(&self) -> Vec<ServiceNode> {
        let mut nodes = self.children.nodes();
        nodes.extend(self.adopted.iter().cloned());
        nodes
    }

    fn kill(&self, address: &str) -> Result<(), String> {
        self.children.kill(address)
    }

    fn restart(&self, address: &str) -> Result<(), String> {
        self.children.restart(address)
    }

    fn signal(&self, address: &str, signal: i32) -> Result<(), String> {
        self.children.signal(address, signal)
    }

    fn spent(&self, service: &str) -> Spent {
        self.children.spent(service)
    }

    fn cut_replication<'a>(
        &'a self,
        primary: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Option<u64>, String>> {
        Box::pin(async move {
            match &self.replication {
                Some(link) if link.primary() == primary => {
                    link.cut().await?;
                    Ok(Some(link.lag_ms()))
                }
                _ => Ok(None),
            }
        })
    }

    fn relink_replication<'a>(
        &'a self,
        primary: &'a str,
        replica: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            match &self.replication {
                Some(link) => link.relink(primary, replica).await.map(|()| true),
                None => Ok(false),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    /// PR_SET_PDEATHSIG kills a child when the thread that spawned it ends: a process started
    /// (or restarted, by a fault from an async task) on a thread that then ends must live on.
    #[test]
    fn processes_started_from_threads_that_end_outlive_them() {
        let children = Children::default();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleep.log");
        let starter = children.clone();
        std::thread::spawn(move || {
            starter
                .start(
                    Command::new("sleep").arg("30"),
                    &log,
                    None,
                    false,
                    Service::Redis,
                    "redis",
                    1,
                    libc::SIGTERM,
                )
                .unwrap();
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let first = children.nodes()[0].pid.unwrap();
        assert!(
            alive(first),
            "the child died with the thread that started it"
        );
        let restarter = children.clone();
        std::thread::spawn(move || {
            restarter.kill("127.0.0.1:1").unwrap();
            restarter.restart("127.0.0.1:1").unwrap();
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let second = children.nodes()[0].pid.unwrap();
        assert_ne!(first, second);
        assert!(!alive(first), "the killed process is reaped");
        assert!(
            alive(second),
            "the restarted child died with the thread that restarted it"
        );
        children.stop_all();
        assert!(!alive(second));
    }
}
