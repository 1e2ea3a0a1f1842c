//! Child processes that live as long as the run, whichever thread asks for them, on loopback
//! ports nothing else takes. Below every module that starts a server: the stack's services
//! and the fault plan's Toxiproxy.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::Mutex;

use rand::Rng;

/// Starts processes from one thread of its own that lives as long as any handle to it.
/// `PR_SET_PDEATHSIG` fires when the *thread* that spawned a child ends, and a child is often
/// (re)started from an async task, whose runtime thread may retire (after a `block_in_place`,
/// or as an idle blocking thread): the child would be SIGKILLed with it, minutes later.
#[derive(Clone)]
pub struct Spawner {
    requests: std::sync::mpsc::Sender<SpawnRequest>,
}

type SpawnRequest = (
    Box<dyn FnOnce() -> std::io::Result<Child> + Send>,
    std::sync::mpsc::Sender<std::io::Result<Child>>,
);

impl Default for Spawner {
    fn default() -> Spawner {
        let (requests, incoming) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("idembench-spawn".into())
            .spawn(move || {
                // Ends when every handle (and so every sender) is gone.
                for (spawn, reply) in incoming {
                    let _ = reply.send(spawn());
                }
            })
            .expect("a thread to start child processes from");
        Spawner { requests }
    }
}

impl Spawner {
    /// Runs `spawn` (which calls [`Command::spawn`]) on the spawner's thread.
    pub fn spawn(
        &self,
        spawn: Box<dyn FnOnce() -> std::io::Result<Child> + Send>,
    ) -> std::io::Result<Child> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.requests
            .send((spawn, reply))
            .map_err(|_| std::io::Error::other("the spawning thread is gone"))?;
        answer
            .recv()
            .map_err(|_| std::io::Error::other("the spawning thread is gone"))?
    }

    /// Spawns `command` on the spawner's thread, killed with SIGKILL if this process dies.
    pub fn spawn_owned(&self, mut command: Command) -> std::io::Result<Child> {
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.spawn(Box::new(move || command.spawn()))
    }
}

/// Ports this process has handed out; none is handed out twice.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Lowest port picked from; below it lie the well-known and registered services people run.
const LOWEST: u16 = 20_000;

/// A loopback port nothing listens on now, for a child to bind. It lies below the kernel's
/// ephemeral range, so no outgoing connection (the run opens thousands) can be given it
/// between this check and the child's bind, and this process never hands it out twice; only
/// another program binding it by number in that window could take it.
pub fn free_port() -> std::io::Result<u16> {
    match pick_below_ephemeral(0) {
        Some(port) => Ok(port),
        // The range is tiny or taken: the kernel's own pick, which an outgoing connection may
        // reuse before the child binds it.
        None => Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()),
    }
}

/// A free port `p` whose `p + offset` is free too, both below the ephemeral range: a Redis
/// Cluster node also listens on its cluster bus, its port + 10000, which [`free_port`] alone
/// may leave inside the ephemeral range for an outgoing connection to take first (CI met it:
/// "bind: Address already in use" on a bus port).
pub fn free_port_with(offset: u16) -> std::io::Result<u16> {
    pick_below_ephemeral(offset).ok_or_else(|| {
        std::io::Error::other(format!(
            "no free pair of loopback ports {offset} apart below the ephemeral range"
        ))
    })
}

/// A random port `p` with `p` and `p + offset` both bindable, below the ephemeral range and
/// never handed out before (both are recorded); `None` when the range is too small or taken.
fn pick_below_ephemeral(offset: u16) -> Option<u16> {
    let below = ephemeral_low().unwrap_or(32_768);
    if below <= LOWEST + offset + 1_000 {
        return None;
    }
    let mut rng = rand::rng();
    let mut handed = HANDED_OUT.lock().expect("port set lock");
    for _ in 0..256 {
        let port = rng.random_range(LOWEST..below - offset);
        let bus = port + offset;
        if !handed.contains(&port)
            && !handed.contains(&bus)
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", bus)).is_ok()
        {
            handed.insert(port);
            handed.insert(bus);
            return Some(port);
        }
    }
    None
}

/// The first port of `net.ipv4.ip_local_port_range`.
fn ephemeral_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_with_its_bus_port_has_both_below_the_ephemeral_range_and_reserved() {
        let below = ephemeral_low().unwrap_or(32_768);
        let port = free_port_with(10_000).unwrap();
        assert!(
            (LOWEST..below).contains(&port) && port + 10_000 < below,
            "{port} + 10000 reaches {below}"
        );
        // Neither is handed out again.
        let handed = HANDED_OUT.lock().unwrap();
        assert!(handed.contains(&port) && handed.contains(&(port + 10_000)));
    }

    #[test]
    fn free_ports_are_distinct_unbound_and_below_the_ephemeral_range() {
        let below = ephemeral_low().unwrap_or(32_768);
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for port in ports {
            assert!(
                (LOWEST..below).contains(&port),
                "{port} outside {LOWEST}..{below}"
            );
            TcpListener::bind(("127.0.0.1", port)).expect("the port is free to bind");
        }
    }

    #[test]
    fn a_child_spawned_from_a_thread_that_ended_lives_on() {
        let spawner = Spawner::default();
        let handle = spawner.clone();
        let mut child = std::thread::spawn(move || {
            let mut command = Command::new("sleep");
            command.arg("30");
            handle.spawn_owned(command).unwrap()
        })
        .join()
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child died with the thread that asked for it"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
