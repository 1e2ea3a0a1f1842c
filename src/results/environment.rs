//! Where a run ran: the machine, the OS and the build, for `result.json` and the reports.
//! Read from Linux's /proc and /etc; anything unreadable is "unknown", never an error.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Environment {
    pub os: String,
    pub kernel: String,
    pub cpu_model: String,
    /// CPUs this process may use.
    pub cpus: usize,
    pub memory_gib: f64,
    pub idembench_version: String,
    /// The commit the binary was built from (uncommitted changes are not detected).
    pub git_commit: String,
    /// The Kafka protocol does not report a broker's version: this is `IDEMBENCH_KAFKA_VERSION`
    /// when set (`scripts/idembench` sets it for the broker `scripts/services` runs).
    pub kafka_version: Option<String>,
    /// Where the services came from (`--stack`): each `external`, `child` or `docker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<crate::config::StackInfo>,
}

impl Environment {
    pub fn read() -> Environment {
        let file = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let os = file("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        let kernel = file("/proc/sys/kernel/osrelease").trim().to_string();
        let cpu_model = file("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory_kib: f64 = file("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Environment {
            os,
            kernel: if kernel.is_empty() {
                "unknown".into()
            } else {
                kernel
            },
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            idembench_version: crate::versions::IDEMBENCH.into(),
            git_commit: crate::versions::GIT_COMMIT.into(),
            kafka_version: std::env::var("IDEMBENCH_KAFKA_VERSION")
                .ok()
                .filter(|v| !v.is_empty()),
            stack: None,
        }
    }

    /// Records the stack; a broker the stack started knows its own release.
    pub fn with_stack(mut self, stack: Option<crate::config::StackInfo>) -> Environment {
        if let Some(version) = stack.as_ref().and_then(|s| s.kafka_version.clone()) {
            self.kafka_version = Some(version);
        }
        self.stack = stack;
        self
    }
}

/// CPU time and peak memory, from `getrusage`.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Usage {
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    /// Peak resident set size (of the largest process, for children).
    pub peak_rss_mib: f64,
}

impl Usage {
    /// This process so far.
    pub fn this_process() -> Usage {
        Usage::of(libc::RUSAGE_SELF)
    }

    /// CPU time since `start` (peak RSS stays the process's own peak).
    pub fn since(self, start: Usage) -> Usage {
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        Usage {
            cpu_user_seconds: round(self.cpu_user_seconds - start.cpu_user_seconds),
            cpu_system_seconds: round(self.cpu_system_seconds - start.cpu_system_seconds),
            peak_rss_mib: self.peak_rss_mib,
        }
    }

    /// Every child process that has ended and been waited for.
    pub fn children() -> Usage {
        Usage::of(libc::RUSAGE_CHILDREN)
    }

    fn of(who: libc::c_int) -> Usage {
        // SAFETY: getrusage writes one `rusage` into the zeroed value we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            return Usage::default();
        }
        let seconds = |t: libc::timeval| {
            ((t.tv_sec as f64 + t.tv_usec as f64 / 1e6) * 1000.0).round() / 1000.0
        };
        Usage {
            cpu_user_seconds: seconds(usage.ru_utime),
            cpu_system_seconds: seconds(usage.ru_stime),
            // Linux reports ru_maxrss in KiB.
            peak_rss_mib: (usage.ru_maxrss as f64 / 1024.0 * 10.0).round() / 10.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_is_described() {
        let env = Environment::read();
        assert!(env.cpus >= 1);
        assert!(env.memory_gib > 0.0);
        assert_ne!(env.kernel, "unknown");
        let usage = Usage::this_process();
        assert!(usage.peak_rss_mib > 1.0, "{usage:?}");
    }
}
