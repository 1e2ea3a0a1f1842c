//! The nightly gate's history: `idembench compare --history DIR` keeps each night's gated
//! figures as one file in `DIR` (a directory index: `<utc stamp>.json`, oldest first by name),
//! and shows the trend of each over the last nights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::compare::Comparison;

/// One night: the current side's median of every compared performance figure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Night {
    /// When it was recorded (RFC 3339, UTC).
    pub recorded: String,
    /// The current side as given to `compare`.
    pub current: String,
    pub regressions: usize,
    /// group → metric → the current side's median.
    pub figures: BTreeMap<String, BTreeMap<String, f64>>,
}

/// One figure over the last nights, oldest first (`None` where a night lacked it).
#[derive(Clone, Debug, Serialize)]
pub struct Trend {
    pub group: String,
    pub metric: String,
    pub nights: Vec<Option<f64>>,
}

#[derive(Debug, thiserror::Error)]
#[error("history {path}: {message}")]
pub struct HistoryError {
    pub path: String,
    pub message: String,
}

/// The correctness counts are gated absolutely and kept in each run's result.json; the
/// history holds the figures with a noise threshold.
const COUNTS: [&str; 4] = [
    "lost",
    "double_applied",
    "identity_violations",
    "oracle_mismatches",
];

impl Night {
    pub fn of(comparison: &Comparison, current: &Path, at: std::time::SystemTime) -> Night {
        let mut figures: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for change in comparison
            .changes
            .iter()
            .filter(|c| !COUNTS.contains(&c.metric))
        {
            figures
                .entry(change.group.clone())
                .or_default()
                .insert(change.metric.to_string(), change.current);
        }
        Night {
            recorded: humantime::format_rfc3339_seconds(at).to_string(),
            current: current.display().to_string(),
            regressions: comparison.regressions,
            figures,
        }
    }
}

fn error(path: &Path, message: impl std::fmt::Display) -> HistoryError {
    HistoryError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Writes `night` into `dir` (created if missing) as `<stamp>.json`; a second night in the
/// same second gets a suffix rather than replacing the first.
pub fn record(
    dir: &Path,
    night: &Night,
    at: std::time::SystemTime,
) -> Result<PathBuf, HistoryError> {
    std::fs::create_dir_all(dir).map_err(|e| error(dir, format!("cannot create it: {e}")))?;
    let stamp = crate::config::names::stamp(at);
    let mut file = dir.join(format!("{stamp}.json"));
    let mut n = 1;
    while file.exists() {
        // `_` sorts after the `.` of the first one's name: the order of the nights holds.
        file = dir.join(format!("{stamp}_{n:03}.json"));
        n += 1;
    }
    let text = serde_json::to_string_pretty(night).expect("serializable") + "\n";
    std::fs::write(&file, text).map_err(|e| error(&file, format!("cannot write it: {e}")))?;
    Ok(file)
}

/// The last `last` nights in `dir`, oldest first. A file that is not a night is an error that
/// names it: the history is the gate's evidence, and a silently skipped night would hide one.
pub fn nights(dir: &Path, last: usize) -> Result<Vec<Night>, HistoryError> {
    let entries = std::fs::read_dir(dir).map_err(|e| error(dir, format!("cannot read it: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| error(dir, e))?.path();
        if path.extension().is_some_and(|ext| ext == "json") {
            files.push(path);
        }
    }
    files.sort();
    let skip = files.len().saturating_sub(last);
    files
        .into_iter()
        .skip(skip)
        .map(|file| {
            let text = std::fs::read_to_string(&file).map_err(|e| error(&file, e))?;
            serde_json::from_str(&text).map_err(|e| {
                error(
                    &file,
                    format!("not a night of idembench compare --history ({e}); move it out of the directory"),
                )
            })
        })
        .collect()
}

/// Each figure of the newest night, over `nights`.
pub fn trends(nights: &[Night]) -> Vec<Trend> {
    let Some(newest) = nights.last() else {
        return Vec::new();
    };
    let mut trends = Vec::new();
    for (group, metrics) in &newest.figures {
        for metric in metrics.keys() {
            trends.push(Trend {
                group: group.clone(),
                metric: metric.clone(),
                nights: nights
                    .iter()
                    .map(|night| {
                        night
                            .figures
                            .get(group)
                            .and_then(|m| m.get(metric))
                            .copied()
                    })
                    .collect(),
            });
        }
    }
    trends
}

/// The trend of every figure over the last nights, as `compare` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct History {
    /// When each night was recorded, oldest first.
    pub nights: Vec<String>,
    pub trends: Vec<Trend>,
}

impl History {
    pub fn of(nights: Vec<Night>) -> History {
        History {
            trends: trends(&nights),
            nights: nights.into_iter().map(|night| night.recorded).collect(),
        }
    }

    /// The trends as a table: one row per figure, one column per night (oldest first), and the
    /// newest night's change from the median of the nights before it.
    pub fn render(&self, markdown: bool) -> String {
        let mut out = String::new();
        if self.trends.is_empty() {
            return out;
        }
        let header: Vec<String> = self
            .nights
            .iter()
            .map(|recorded| recorded.get(..10).unwrap_or(recorded).to_string())
            .collect();
        if markdown {
            out.push_str(&format!(
                "\n| group | metric | {} | vs median before |\n|---|---|{}---|\n",
                header.join(" | "),
                "---|".repeat(header.len())
            ));
        } else {
            out.push_str(&format!(
                "\ntrend over the last {} night(s), oldest first ({}):\n",
                self.nights.len(),
                header.join(", ")
            ));
        }
        for trend in &self.trends {
            let cells: Vec<String> = trend
                .nights
                .iter()
                .map(|v| v.map_or("-".into(), |v| format!("{v:.1}")))
                .collect();
            let (before, newest) = trend.nights.split_at(trend.nights.len().saturating_sub(1));
            let before: Vec<f64> = before.iter().flatten().copied().collect();
            let change = match (newest.first().copied().flatten(), before.is_empty()) {
                (Some(now), false) => {
                    let median = super::compare::median(before);
                    if median == 0.0 {
                        "-".to_string()
                    } else {
                        format!("{:+.1} %", (now / median - 1.0) * 100.0)
                    }
                }
                _ => "-".to_string(),
            };
            if markdown {
                out.push_str(&format!(
                    "| {} | {} | {} | {change} |\n",
                    trend.group,
                    trend.metric,
                    cells.join(" | ")
                ));
            } else {
                out.push_str(&format!(
                    "{:<40} {:<22} {}  ({change})\n",
                    trend.group,
                    trend.metric,
                    cells.join(" ")
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn night(day: &str, rate: f64) -> Night {
        Night {
            recorded: format!("2026-12-{day}T02:17:00Z"),
            current: "nightly".into(),
            regressions: 0,
            figures: BTreeMap::from([(
                "capacity: redis-only on redis-rs".to_string(),
                BTreeMap::from([("capacity_per_second".to_string(), rate)]),
            )]),
        }
    }

    #[test]
    fn nights_are_kept_one_file_each_and_read_back_oldest_first_up_to_the_last_n() {
        let dir = tempfile::tempdir().unwrap();
        let base =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000);
        for (i, rate) in [1000.0, 1010.0, 990.0, 800.0].into_iter().enumerate() {
            let at = base + std::time::Duration::from_secs(86_400 * i as u64);
            record(dir.path(), &night(&format!("{:02}", i + 1), rate), at).unwrap();
        }
        // Two in one second: both kept.
        let again = base + std::time::Duration::from_secs(86_400 * 3);
        record(dir.path(), &night("04", 805.0), again).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
        let last = nights(dir.path(), 3).unwrap();
        let rates: Vec<f64> = trends(&last)[0].nights.iter().flatten().copied().collect();
        assert_eq!(rates, vec![990.0, 800.0, 805.0]);
        let four = History::of(nights(dir.path(), 4).unwrap());
        let table = four.render(false);
        // 805 against the median of 1010, 990, 800 (990).
        assert!(table.contains("(-18.7 %)"), "{table}");
    }

    #[test]
    fn a_file_that_is_not_a_night_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.json"), "{}").unwrap();
        let error = nights(dir.path(), 7).unwrap_err().to_string();
        assert!(
            error.contains("notes.json") && error.contains("move it out"),
            "{error}"
        );
    }
}
