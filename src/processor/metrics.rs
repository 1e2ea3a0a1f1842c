//! What a worker measures. Each worker owns one [`WorkerMetrics`] (no locks on the hot path);
//! the processor merges them once, when the workers are done.

use hdrhistogram::Histogram;
use idembench_loadgen::producer::new_histogram;
use serde::Serialize;

use crate::strategy::{Outcome, StageTimes};

#[derive(Clone, Debug)]
pub struct WorkerMetrics {
    /// Completion (offset committed) minus the intended send time, µs.
    pub end_to_end_from_intended_us: Histogram<u64>,
    /// Completion minus the actual send time, µs.
    pub end_to_end_from_sent_us: Histogram<u64>,
    pub claim_us: Histogram<u64>,
    pub business_us: Histogram<u64>,
    pub mark_done_us: Histogram<u64>,
    pub offset_commit_us: Histogram<u64>,
    /// kafka-transactions: `commit_transaction` alone (with the drain of delivery reports
    /// before it), once per transaction.
    pub transaction_commit_us: Histogram<u64>,
    /// End-to-end (from intended send) of the messages sent during the warm-up, kept apart.
    pub warm_up_us: Histogram<u64>,
    pub counts: Counts,
}

/// Per-message outcomes, summed over workers.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Counts {
    /// Messages taken off the topic (trades and malformed ones).
    pub messages: u64,
    pub applied: u64,
    pub caught_by_constraint: u64,
    pub skipped_done: u64,
    pub skipped_in_progress: u64,
    /// Messages that were not trades; counted, logged, and committed past.
    pub malformed: u64,
    /// Total time copies waited behind another attempt's PROCESSING key, µs.
    pub stalled_us: u64,
    /// Copies that waited at all.
    pub stalled_copies: u64,
    /// Messages whose processing finished after their partition had been revoked from (or
    /// reassigned to) this consumer: their effects stand, but their offsets are not committed,
    /// since another member may own the partition by then (a paused consumer waking up).
    #[serde(default)]
    pub stale_completions: u64,
    /// kafka-transactions' aborts and fences.
    #[serde(flatten, default)]
    pub txn: TxnCounts,
}

/// kafka-transactions: how its transactions ended when they did not commit.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TxnCounts {
    /// Transactions aborted (their effects stay invisible at read_committed; their messages
    /// are read again from the committed offsets, in place).
    #[serde(default)]
    pub transactions_aborted: u64,
    /// Of those, aborted because the group coordinator refused the offsets: this member's
    /// generation was gone (a zombie fenced by KIP-447).
    #[serde(default)]
    pub group_fenced: u64,
    /// Transactional producers fenced for good (a newer epoch of their id, or the broker
    /// aborting their timed-out transaction), each replaced by a new one.
    #[serde(default)]
    pub producers_fenced: u64,
    /// Transactional producers replaced after a fatal error (the fenced ones included).
    #[serde(default)]
    pub producers_replaced: u64,
    /// Of those, producers that did not answer a unit within the answer timeout
    /// ([`super::transactional::TxnSettings::answer_timeout`]): fenced and abandoned.
    #[serde(default)]
    pub producers_unanswered: u64,
    /// Messages already read but dropped unprocessed: their partition was rewound after an
    /// abort or had moved to another assignment (they are read again from the committed
    /// offset), or they lay below the committed offset an assignment started under.
    #[serde(default)]
    pub rewound_messages: u64,
    /// Partitions whose assignment started below the group's committed offset (librdkafka
    /// fell back to `auto.offset.reset`); what of each lay below it was dropped unprocessed.
    #[serde(default)]
    pub starts_below_committed: u64,
}

impl TxnCounts {
    fn add(&mut self, other: &TxnCounts) {
        self.transactions_aborted += other.transactions_aborted;
        self.group_fenced += other.group_fenced;
        self.producers_fenced += other.producers_fenced;
        self.producers_replaced += other.producers_replaced;
        self.producers_unanswered += other.producers_unanswered;
        self.rewound_messages += other.rewound_messages;
        self.starts_below_committed += other.starts_below_committed;
    }
}

/// [`WorkerMetrics`] as one processor process reports them to the run that started it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct WireMetrics {
    pub counts: Counts,
    /// Base64 V2+DEFLATE, by the names of [`WorkerMetrics::histograms`].
    pub histograms: std::collections::BTreeMap<String, String>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.messages += other.messages;
        self.applied += other.applied;
        self.caught_by_constraint += other.caught_by_constraint;
        self.skipped_done += other.skipped_done;
        self.skipped_in_progress += other.skipped_in_progress;
        self.malformed += other.malformed;
        self.stalled_us += other.stalled_us;
        self.stalled_copies += other.stalled_copies;
        self.stale_completions += other.stale_completions;
        self.txn.add(&other.txn);
    }

    /// Copies the strategy skipped as duplicates.
    pub fn duplicates_suppressed(&self) -> u64 {
        self.skipped_done + self.skipped_in_progress
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            end_to_end_from_intended_us: new_histogram(),
            end_to_end_from_sent_us: new_histogram(),
            claim_us: new_histogram(),
            business_us: new_histogram(),
            mark_done_us: new_histogram(),
            offset_commit_us: new_histogram(),
            transaction_commit_us: new_histogram(),
            warm_up_us: new_histogram(),
            counts: Counts::default(),
        }
    }
}

fn record(histogram: &mut Histogram<u64>, micros: u64) {
    // Values beyond the histogram's hour-long range saturate rather than vanish.
    histogram.saturating_record(micros.max(1));
}

impl WorkerMetrics {
    pub fn record_outcome(&mut self, outcome: Outcome) {
        let counts = &mut self.counts;
        match outcome {
            Outcome::Applied => counts.applied += 1,
            Outcome::CaughtByConstraint => counts.caught_by_constraint += 1,
            Outcome::SkippedDone => counts.skipped_done += 1,
            Outcome::SkippedInProgress => counts.skipped_in_progress += 1,
        }
    }

    /// Stage durations of one `process` or `process_batch` call.
    pub fn record_stages(&mut self, stages: &StageTimes) {
        let counts = &mut self.counts;
        if let Some(stalled) = stages.stalled {
            counts.stalled_us += stalled.as_micros() as u64;
            counts.stalled_copies += 1;
        }
        for (histogram, stage) in [
            (&mut self.claim_us, stages.claim),
            (&mut self.business_us, stages.business),
            (&mut self.mark_done_us, stages.mark_done),
        ] {
            if let Some(duration) = stage {
                record(histogram, duration.as_micros() as u64);
            }
        }
    }

    /// A message is done. Warm-up messages record only their end-to-end latency, apart.
    pub fn record_completion(
        &mut self,
        warm_up: bool,
        intended_us: u64,
        sent_us: u64,
        done_us: u64,
        commit_us: u64,
    ) {
        if warm_up {
            record(&mut self.warm_up_us, done_us.saturating_sub(intended_us));
            return;
        }
        record(
            &mut self.end_to_end_from_intended_us,
            done_us.saturating_sub(intended_us),
        );
        record(
            &mut self.end_to_end_from_sent_us,
            done_us.saturating_sub(sent_us),
        );
        record(&mut self.offset_commit_us, commit_us);
    }

    /// The histograms by the names `result.json` and the `*.hgrm` files use.
    pub fn histograms(&self) -> [(&'static str, &Histogram<u64>); 8] {
        [
            (
                "end_to_end_from_intended",
                &self.end_to_end_from_intended_us,
            ),
            ("end_to_end_from_sent", &self.end_to_end_from_sent_us),
            ("claim", &self.claim_us),
            ("business", &self.business_us),
            ("mark_done", &self.mark_done_us),
            ("offset_commit", &self.offset_commit_us),
            ("transaction_commit", &self.transaction_commit_us),
            ("warm_up", &self.warm_up_us),
        ]
    }

    /// A form that crosses a process boundary: counts as they are, histograms encoded.
    pub fn to_wire(&self) -> WireMetrics {
        WireMetrics {
            counts: self.counts,
            histograms: self
                .histograms()
                .into_iter()
                .map(|(name, h)| (name.to_string(), crate::hgrm::encode(h)))
                .collect(),
        }
    }

    pub fn from_wire(wire: &WireMetrics) -> Result<WorkerMetrics, String> {
        let mut metrics = WorkerMetrics {
            counts: wire.counts,
            ..WorkerMetrics::default()
        };
        let decode = |name: &str| -> Result<Histogram<u64>, String> {
            let text = wire
                .histograms
                .get(name)
                .ok_or_else(|| format!("the histogram {name} is missing"))?;
            crate::hgrm::decode(text)
        };
        for (histogram, name) in [
            (
                &mut metrics.end_to_end_from_intended_us,
                "end_to_end_from_intended",
            ),
            (&mut metrics.end_to_end_from_sent_us, "end_to_end_from_sent"),
            (&mut metrics.claim_us, "claim"),
            (&mut metrics.business_us, "business"),
            (&mut metrics.mark_done_us, "mark_done"),
            (&mut metrics.offset_commit_us, "offset_commit"),
            (&mut metrics.transaction_commit_us, "transaction_commit"),
            (&mut metrics.warm_up_us, "warm_up"),
        ] {
            histogram
                .add(decode(name)?)
                .map_err(|e| format!("the histogram {name} does not fit: {e:?}"))?;
        }
        Ok(metrics)
    }

    pub fn merge(&mut self, other: &WorkerMetrics) {
        for (mine, theirs) in [
            (
                &mut self.end_to_end_from_intended_us,
                &other.end_to_end_from_intended_us,
            ),
            (
                &mut self.end_to_end_from_sent_us,
                &other.end_to_end_from_sent_us,
            ),
            (&mut self.claim_us, &other.claim_us),
            (&mut self.business_us, &other.business_us),
            (&mut self.mark_done_us, &other.mark_done_us),
            (&mut self.offset_commit_us, &other.offset_commit_us),
            (
                &mut self.transaction_commit_us,
                &other.transaction_commit_us,
            ),
            (&mut self.warm_up_us, &other.warm_up_us),
        ] {
            mine.add(theirs).expect("all histograms share one range");
        }
        self.counts.add(&other.counts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_survive_the_wire() {
        let mut metrics = WorkerMetrics::default();
        metrics.record_completion(false, 1_000, 2_000, 9_000, 250);
        metrics.record_completion(true, 1_000, 2_000, 5_000, 250);
        metrics.record_outcome(Outcome::Applied);
        metrics.counts.messages = 1;
        let json = serde_json::to_string(&metrics.to_wire()).unwrap();
        let back = WorkerMetrics::from_wire(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back.counts, metrics.counts);
        assert_eq!(back.end_to_end_from_intended_us.len(), 1);
        assert_eq!(
            back.end_to_end_from_sent_us.max(),
            metrics.end_to_end_from_sent_us.max()
        );
        assert_eq!(back.offset_commit_us.len(), 1);
        assert_eq!(back.warm_up_us.len(), 1, "warm-up kept apart");
        assert!(back.claim_us.is_empty());
    }
}
