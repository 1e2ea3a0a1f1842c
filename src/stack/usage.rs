//! What the services cost while a run ran: CPU time (and proportional memory) of the process
//! trees the stack started or `idembench services up` left running, from Linux's /proc, or a
//! server's own report where no process is known (Redis `INFO cpu`).
//!
//! A tree is a process and its live descendants; a descendant that ended and was reaped is in
//! its parent's `cutime`/`cstime`, so the difference of two samples counts it once either
//! way (a Postgres backend that closed during the run included).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One sample of the trees rooted at some pids.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TreeSample {
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    /// Live processes in the trees.
    pub processes: usize,
    /// Proportional set size (shared pages split among their users), summed.
    pub pss_mib: f64,
}

/// What one service cost over a run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceUsage {
    /// Where the figures come from: `proc` (the stack's child processes or the pid files of
    /// `idembench services up`) or `redis INFO cpu` (the server's report, every primary).
    pub source: String,
    /// Processes measured at the end (a Postgres backend per connection, a Redis per node).
    pub processes: usize,
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    /// Proportional set size at the end, summed over the processes (`proc` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pss_mib: Option<f64>,
}

impl ServiceUsage {
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_user_seconds + self.cpu_system_seconds
    }

    /// The usage between two samples of the same trees.
    pub fn between(start: TreeSample, end: TreeSample) -> ServiceUsage {
        let round = |x: f64| (x.max(0.0) * 1000.0).round() / 1000.0;
        ServiceUsage {
            source: "proc".into(),
            processes: end.processes,
            cpu_user_seconds: round(end.cpu_user_seconds - start.cpu_user_seconds),
            cpu_system_seconds: round(end.cpu_system_seconds - start.cpu_system_seconds),
            pss_mib: Some((end.pss_mib * 10.0).round() / 10.0),
        }
    }
}

/// One process's line of `/proc/<pid>/stat`, the fields this module reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    ppid: u32,
    /// utime + cutime, and stime + cstime, in clock ticks.
    user_ticks: u64,
    system_ticks: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// itself hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        user_ticks: (field(14)? + field(16)?).max(0) as u64,
        system_ticks: (field(15)? + field(17)?).max(0) as u64,
    })
}

/// The trees rooted at `roots`, now. Pids that are gone count nothing.
pub fn sample(roots: &[u32]) -> TreeSample {
    let mut stats = BTreeMap::new();
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return TreeSample::default();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(stat) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|line| parse_stat(&line))
        else {
            continue;
        };
        children.entry(stat.ppid).or_default().push(pid);
        stats.insert(pid, stat);
    }
    let tree = descendants(roots, &stats, &children);
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut sample = TreeSample::default();
    for pid in &tree {
        let stat = stats[pid];
        sample.cpu_user_seconds += stat.user_ticks as f64 / ticks;
        sample.cpu_system_seconds += stat.system_ticks as f64 / ticks;
        sample.processes += 1;
        sample.pss_mib += pss_kib(*pid) / 1024.0;
    }
    sample
}

/// `roots` that are alive and every live process beneath them.
fn descendants(
    roots: &[u32],
    stats: &BTreeMap<u32, Stat>,
    children: &BTreeMap<u32, Vec<u32>>,
) -> BTreeSet<u32> {
    let mut tree = BTreeSet::new();
    let mut todo: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|pid| stats.contains_key(pid))
        .collect();
    while let Some(pid) = todo.pop() {
        if tree.insert(pid) {
            todo.extend(children.get(&pid).into_iter().flatten().copied());
        }
    }
    tree
}

/// `Pss:` of `/proc/<pid>/smaps_rollup` in KiB (0 where unreadable).
fn pss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Whether `pid` is alive and runs a program whose name (`/proc/<pid>/comm`) is `name`.
pub fn runs(pid: u32, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_a_parenthesised_name_parses_from_the_last_parenthesis() {
        // Fields 3..17 of a real line, behind a name holding ") (".
        let line = "4242 (a) (b) S 17 4242 4242 0 -1 4194560 300 0 0 0 120 30 7 3 20 0 4 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 17,
                user_ticks: 127,
                system_ticks: 33
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_tree_holds_the_live_roots_and_everything_beneath_them() {
        let stat = |ppid| Stat {
            ppid,
            user_ticks: 1,
            system_ticks: 1,
        };
        let stats: BTreeMap<u32, Stat> =
            [(10, stat(1)), (11, stat(10)), (12, stat(11)), (20, stat(1))].into();
        let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (pid, s) in &stats {
            children.entry(s.ppid).or_default().push(*pid);
        }
        let tree = descendants(&[10, 99], &stats, &children);
        assert_eq!(tree.into_iter().collect::<Vec<_>>(), vec![10, 11, 12]);
    }

    #[test]
    fn this_process_is_sampled_and_its_cpu_only_grows() {
        let me = std::process::id();
        let before = sample(&[me]);
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = sample(&[me]);
        assert!(after.processes >= 1, "{after:?}");
        assert!(after.pss_mib > 0.0, "{after:?}");
        let used = ServiceUsage::between(before, after);
        assert!(used.cpu_seconds() > 0.0, "{before:?} → {after:?}");
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(runs(me, comm.trim()));
        assert!(!runs(me, "surely-not-this-program"));
    }
}
