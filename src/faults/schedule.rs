//! When the timed faults are due. Kills are decided here and carried out by the fleet of
//! processor processes.

use std::time::{Duration, Instant};

/// When the next SIGKILL is due: each `kill_at_ms` once, and every `kill_every_ms` while
/// production runs.
pub struct KillSchedule {
    at: std::collections::VecDeque<Instant>,
    every: Option<Duration>,
    next_periodic: Option<Instant>,
}

impl KillSchedule {
    pub fn new(plan: &super::FaultPlan, started: Instant) -> KillSchedule {
        let mut at: Vec<u64> = plan.kill_at_ms.clone();
        at.sort_unstable();
        let every = plan.kill_every_ms.map(Duration::from_millis);
        KillSchedule {
            at: at
                .into_iter()
                .map(|ms| started + Duration::from_millis(ms))
                .collect(),
            every,
            next_periodic: every.map(|every| started + every),
        }
    }

    /// True (once) when a kill is due now.
    pub fn due(&mut self, producing: bool) -> bool {
        let now = Instant::now();
        if self.at.front().is_some_and(|at| *at <= now) {
            self.at.pop_front();
            return true;
        }
        match (self.next_periodic, self.every) {
            (Some(next), Some(every)) if producing && next <= now => {
                self.next_periodic = Some(next + every);
                true
            }
            _ => false,
        }
    }
}
