//! When the timed faults are due. Kills are decided here and carried out by the fleet of
//! processor processes; every other scheduled fault is a task of its own ([`repeat`]).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{CrashPoint, FaultKind, ScheduledFault};

/// When the next SIGKILL of a processor process is due: each `kill_at_ms` once, every
/// `kill_every_ms` while production runs, and each scheduled `process-kill` at its time and
/// then every `every_ms` while production runs.
pub struct KillSchedule {
    /// (next time, period, what is due): an entry without a period is dropped once it fired.
    entries: Vec<(Instant, Option<Duration>, Due)>,
}

/// What a due entry asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// How long it lasts (a pause).
    pub lasting: Duration,
    /// Where a pause lands (`zombie-consumer@AT+MS:POINT`): the step the process stops itself
    /// at; `None`, wherever the SIGSTOP finds it.
    pub at: Option<CrashPoint>,
}

impl KillSchedule {
    pub fn new(plan: &super::FaultPlan, started: Instant) -> KillSchedule {
        let ms = Duration::from_millis;
        let kill = Due {
            lasting: Duration::ZERO,
            at: None,
        };
        let mut schedule = KillSchedule::of(plan, started, FaultKind::ProcessKill);
        schedule.entries.extend(
            plan.kill_at_ms
                .iter()
                .map(|at| (started + ms(*at), None, kill)),
        );
        if let Some(every) = plan.kill_every_ms.map(ms) {
            schedule.entries.push((started + every, Some(every), kill));
        }
        schedule
    }

    /// When the scheduled faults of `kind` the fleet carries out (`zombie-consumer`) are due.
    pub fn of(plan: &super::FaultPlan, started: Instant, kind: FaultKind) -> KillSchedule {
        let ms = Duration::from_millis;
        KillSchedule {
            entries: plan
                .schedule
                .iter()
                .filter(|f| f.kind == kind)
                .map(|f| {
                    let due = Due {
                        lasting: f.duration(),
                        // Validated with the configuration: a bad point never gets here.
                        at: f.stop_point().ok().flatten(),
                    };
                    (started + ms(f.at_ms), f.every_ms.map(ms), due)
                })
                .collect(),
        }
    }

    /// What is due now, once. A periodic entry fires only while `producing`, and is dropped
    /// once production ended.
    pub fn due(&mut self, producing: bool) -> Option<Due> {
        let now = Instant::now();
        loop {
            let i = self.entries.iter().position(|(next, _, _)| *next <= now)?;
            let (_, every, due) = self.entries[i];
            match every {
                Some(every) if producing => {
                    self.entries[i].0 += every;
                    return Some(due);
                }
                Some(_) => {
                    self.entries.remove(i);
                }
                None => {
                    self.entries.remove(i);
                    return Some(due);
                }
            }
        }
    }
}

/// Runs `inject` for `fault` from now on: at `at_ms`, then every `every_ms` until `produced`
/// is cancelled (a schedule heals before the drain: nothing new starts once production ended).
pub fn repeat<F, Fut>(
    fault: &ScheduledFault,
    produced: CancellationToken,
    mut inject: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (at_ms, every_ms) = (fault.at_ms, fault.every_ms);
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut at = Duration::from_millis(at_ms);
        loop {
            tokio::time::sleep_until(start + at).await;
            inject().await;
            match every_ms {
                Some(every) if !produced.is_cancelled() => at += Duration::from_millis(every),
                _ => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_off_kills_fire_once_and_periodic_ones_only_while_producing() {
        let plan = super::super::FaultPlan {
            kill_at_ms: vec![0],
            schedule: vec![ScheduledFault::parse_flag("process-kill@0/1").unwrap()],
            ..Default::default()
        };
        let mut kills = KillSchedule::new(&plan, Instant::now() - Duration::from_millis(5));
        assert!(
            kills.due(true).is_some(),
            "the periodic entry, while producing"
        );
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            kills.due(false).is_some(),
            "production ended: the periodic entry is dropped, the one-off still fires"
        );
        assert!(kills.due(true).is_none(), "nothing left");
    }

    #[test]
    fn a_zombie_pause_carries_where_it_lands() {
        let plan = super::super::FaultPlan {
            schedule: vec![
                ScheduledFault::parse_flag("zombie-consumer@0+9000:after-produce").unwrap(),
                ScheduledFault::parse_flag("zombie-consumer@0+8000").unwrap(),
            ],
            ..Default::default()
        };
        let mut pauses = KillSchedule::of(
            &plan,
            Instant::now() - Duration::from_millis(5),
            FaultKind::ZombieConsumer,
        );
        let mut due = [pauses.due(true).unwrap(), pauses.due(true).unwrap()];
        due.sort_by_key(|d| d.lasting);
        assert_eq!(due[0].at, None, "no target: wherever the SIGSTOP lands");
        assert_eq!(due[1].at, Some(CrashPoint::AfterProduce));
        assert_eq!(due[1].lasting, Duration::from_millis(9000));
        let bad = ScheduledFault::parse_flag("zombie-consumer@0:after-lunch").unwrap();
        let error = bad.stop_point().unwrap_err();
        assert!(error.contains("after-produce"), "{error}");
        let kill = ScheduledFault::parse_flag("kafka-broker-kill@0:127.0.0.1:9093").unwrap();
        assert_eq!(
            kill.stop_point(),
            Ok(None),
            "a broker's address is no point"
        );
    }
}
