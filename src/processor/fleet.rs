//! The run's side of `--processes N`: N processor processes (`idembench process`, see
//! [`crate::processor::member`]) in one consumer group, killed with SIGKILL on the fault plan's schedule
//! and replaced after the restart delay, so partitions move by the broker's own rebalance.
//!
//! The run cannot see inside the children, so it learns where the group stands the way any
//! operator would: from the committed offsets the group coordinator holds. Measurements come
//! from the children's reports: the final one from each child that stopped cleanly, the last
//! one-second snapshot from each killed child.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

use crate::faults::CrashPoint;
use crate::processor::member::{MemberEvent, MemberSpec};
use crate::processor::{ProcessorReport, Progress, WireReport};

/// What the run knows of one child, from its stdout.
#[derive(Debug, Default)]
struct Heard {
    assigned: usize,
    latest: Option<WireReport>,
    finished: Option<WireReport>,
    failed: Option<String>,
    /// It stopped itself at this point (a pause armed with [`Fleet::pause_at`]).
    paused: Option<CrashPoint>,
}

struct Member {
    id: u64,
    /// Which place in the fleet it holds: a replacement takes its killed predecessor's, and
    /// with it the transactional ids (kafka-transactions), so its `init_transactions` aborts
    /// what the dead process left open instead of the broker waiting out its timeout.
    slot: usize,
    child: Child,
    stdin: Option<ChildStdin>,
    heard: Arc<Mutex<Heard>>,
    reader: JoinHandle<()>,
}

pub struct Fleet {
    exe: PathBuf,
    /// Holds the service URLs, so it goes only to a child's stdin (as one JSON line).
    spec: MemberSpec,
    members: Vec<Member>,
    /// Reports of children that are gone.
    gone: ProcessorReport,
    spawned: u64,
    kills: u64,
    pauses: u64,
    /// Killed children whose last second of measurements is missing from the report.
    lost_snapshots: u64,
    offsets: crate::processor::CommittedOffsets,
    stop_timeout: Duration,
    /// Sent to every process, and to replacements when they start.
    warm_up_until_us: Option<u64>,
}

impl Fleet {
    /// Starts `count` processor processes of `exe` in the spec's group.
    pub async fn start(exe: PathBuf, spec: &MemberSpec, count: usize) -> Result<Fleet, String> {
        let offsets = crate::processor::CommittedOffsets::new(&spec.processor)?;
        let mut fleet = Fleet {
            exe,
            spec: spec.clone(),
            members: Vec::new(),
            gone: ProcessorReport::default(),
            spawned: 0,
            kills: 0,
            pauses: 0,
            lost_snapshots: 0,
            offsets,
            stop_timeout: spec.processor.close_timeout + Duration::from_secs(10),
            warm_up_until_us: None,
        };
        for _ in 0..count {
            fleet.spawn().await?;
        }
        Ok(fleet)
    }

    /// Starts one more processor process.
    pub async fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new(&self.exe)
            .arg("process")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start a processor process ({} process): {e}",
                    self.exe.display()
                )
            })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let slot = (0..)
            .find(|slot| self.members.iter().all(|m| m.slot != *slot))
            .expect("a free slot");
        let mut hello = format!(
            "{}\n",
            serde_json::to_string(&self.spec.in_slot(slot)).expect("the spec serializes")
        );
        if let Some(until) = self.warm_up_until_us {
            hello.push_str(&warm_up_line(until));
        }
        stdin
            .write_all(hello.as_bytes())
            .await
            .map_err(|e| format!("cannot hand the processor process its spec: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let heard = Arc::new(Mutex::new(Heard::default()));
        self.spawned += 1;
        let id = self.spawned;
        let reader = tokio::spawn({
            let heard = heard.clone();
            async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut heard = heard.lock().expect("member state lock");
                    match serde_json::from_str::<MemberEvent>(&line) {
                        Ok(MemberEvent::Assigned { partitions }) => heard.assigned = partitions,
                        Ok(MemberEvent::Snapshot { report }) => heard.latest = Some(report),
                        Ok(MemberEvent::Final { report }) => heard.finished = Some(report),
                        Ok(MemberEvent::Failed { error }) => heard.failed = Some(error),
                        Ok(MemberEvent::Pausing { point }) => heard.paused = Some(point),
                        Err(error) => {
                            tracing::warn!(member = id, %error, "unreadable line from a processor process")
                        }
                    }
                }
            }
        });
        self.members.push(Member {
            id,
            slot,
            child,
            stdin: Some(stdin),
            heard,
            reader,
        });
        Ok(())
    }

    /// True when the group has settled: every partition assigned, and every process holding
    /// some (when there are enough partitions to go round). The first process to join takes
    /// every partition until the others join; producing before they did would put a
    /// rebalance, and its replays, into the measurement.
    fn settled(&self) -> bool {
        let shares: Vec<usize> = self
            .members
            .iter()
            .map(|m| m.heard.lock().expect("member state lock").assigned)
            .collect();
        let partitions = self.spec.processor.partitions;
        shares.iter().sum::<usize>() >= partitions
            && (shares.len() > partitions || shares.iter().all(|n| *n > 0))
    }

    /// Waits until the group has settled (see [`Fleet::settled`]), or `timeout` passes.
    pub async fn wait_for_assignment(&mut self, timeout: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + timeout;
        while !self.settled() {
            self.check()?;
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(true)
    }

    /// Tells every process (and later replacements) where the warm-up ends.
    pub async fn set_warm_up_until(&mut self, until_us: u64) {
        self.warm_up_until_us = Some(until_us);
        for member in &mut self.members {
            if let Some(stdin) = &mut member.stdin
                && let Err(error) = stdin.write_all(warm_up_line(until_us).as_bytes()).await
            {
                tracing::warn!(%error, member = member.id, "cannot send the warm-up end");
            }
        }
    }

    /// Fails when a process gave up or died without being killed.
    pub fn check(&mut self) -> Result<(), String> {
        for member in &mut self.members {
            if let Some(error) = &member.heard.lock().expect("member state lock").failed {
                return Err(format!("processor process {} failed: {error}", member.id));
            }
            if let Ok(Some(status)) = member.child.try_wait() {
                return Err(format!(
                    "processor process {} exited on its own ({status}); its errors are above",
                    member.id
                ));
            }
        }
        Ok(())
    }

    /// SIGKILLs one process (round robin over the live ones) and waits until it is gone.
    /// Returns the killed process's number, or `None` when none is running.
    pub async fn kill_one(&mut self) -> Option<u64> {
        if self.members.is_empty() {
            return None;
        }
        let index = (self.kills as usize) % self.members.len();
        let mut member = self.members.remove(index);
        self.kills += 1;
        // tokio's kill is SIGKILL: no handler runs, nothing is flushed or committed.
        if let Err(error) = member.child.kill().await {
            tracing::warn!(%error, member = member.id, "kill failed");
        }
        let _ = member.reader.await;
        let heard = std::mem::take(&mut *member.heard.lock().expect("member state lock"));
        self.lost_snapshots += 1;
        self.keep(heard.latest.as_ref());
        Some(member.id)
    }

    /// SIGSTOPs one process (round robin over the live ones, as kills go); returns its
    /// number. It stays a member until [`Fleet::resume`]: the group moves its partitions once
    /// its session times out.
    pub fn pause_one(&mut self) -> Option<u64> {
        let member = self
            .members
            .get(self.pauses as usize % self.members.len().max(1))?;
        self.pauses += 1;
        signal(member, libc::SIGSTOP).then_some(member.id)
    }

    /// Arms one process (round robin, as [`Fleet::pause_one`]) to stop itself the next time
    /// one of its workers reaches `point`; [`Fleet::take_paused`] tells when it did. Returns
    /// its number.
    pub async fn pause_at(&mut self, point: CrashPoint) -> Option<u64> {
        let count = self.members.len().max(1);
        let member = self.members.get_mut(self.pauses as usize % count)?;
        self.pauses += 1;
        let line = format!(
            "{}\n",
            serde_json::to_string(&crate::processor::member::Command::PauseAt { point })
                .expect("commands serialize")
        );
        let stdin = member.stdin.as_mut()?;
        match stdin.write_all(line.as_bytes()).await {
            Ok(()) => Some(member.id),
            Err(error) => {
                tracing::warn!(%error, member = member.id, "cannot arm the pause");
                None
            }
        }
    }

    /// Whether process `id` stopped itself at its armed point since the last call.
    pub fn take_paused(&self, id: u64) -> Option<CrashPoint> {
        let member = self.members.iter().find(|member| member.id == id)?;
        member
            .heard
            .lock()
            .expect("member state lock")
            .paused
            .take()
    }

    /// SIGCONTs process `id`, if it is still a member.
    pub fn resume(&mut self, id: u64) -> bool {
        self.members
            .iter()
            .find(|member| member.id == id)
            .is_some_and(|member| signal(member, libc::SIGCONT))
    }

    fn keep(&mut self, report: Option<&WireReport>) {
        match report.map(ProcessorReport::from_wire) {
            Some(Ok(report)) => self.gone.add(report),
            Some(Err(error)) => tracing::warn!(%error, "a processor process sent a bad report"),
            // Killed before its first snapshot: it still was an incarnation.
            None => self.gone.incarnations += 1,
        }
    }

    /// Reads the group's committed offsets from the coordinator into `progress`.
    pub async fn observe_committed(&self, progress: &Progress) -> Result<(), String> {
        self.offsets.observe(progress).await
    }

    /// Stops every live process cleanly (end of stdin), waits for their final reports, and
    /// returns everything the fleet measured. A process that does not stop in time is killed.
    pub async fn stop(mut self) -> FleetReport {
        for member in &mut self.members {
            member.stdin = None;
        }
        let members = std::mem::take(&mut self.members);
        for mut member in members {
            match tokio::time::timeout(self.stop_timeout, member.child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(
                        member = member.id,
                        "a processor process did not stop in time; killing it"
                    );
                    let _ = member.child.kill().await;
                }
            }
            let _ = member.reader.await;
            let heard = std::mem::take(&mut *member.heard.lock().expect("member state lock"));
            if heard.finished.is_none() {
                self.lost_snapshots += 1;
            }
            self.keep(heard.finished.as_ref().or(heard.latest.as_ref()));
        }
        FleetReport {
            report: self.gone,
            kills: self.kills,
            processes: self.spawned,
            killed_measurement_windows: self.lost_snapshots,
        }
    }
}

/// What the processes measured, summed.
pub struct FleetReport {
    pub report: ProcessorReport,
    pub kills: u64,
    pub processes: u64,
    /// Processes whose last (up to one second of) measurements died with them.
    pub killed_measurement_windows: u64,
}

fn warm_up_line(until_us: u64) -> String {
    format!(
        "{}\n",
        serde_json::to_string(&crate::processor::member::Command::WarmUpUntil { until_us })
            .expect("commands serialize")
    )
}

/// Sends `signal` to a member's process; false if it is gone.
fn signal(member: &Member, signal: libc::c_int) -> bool {
    let Some(pid) = member.child.id() else {
        return false;
    };
    // SAFETY: kill on the pid of a child we have not reaped (tokio reaps only on wait).
    unsafe { libc::kill(pid as libc::pid_t, signal) == 0 }
}
