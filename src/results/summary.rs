//! The short human summary printed at the end of a run: a pure function of the result.

use super::{RunResult, Status};

impl RunResult {
    /// The short human summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let c = &self.correctness;
        let t = &self.throughput;
        let e2e = &self.latency_us.end_to_end_from_intended;
        let sent = &self.latency_us.end_to_end_from_sent;
        let status = match self.status {
            Status::Complete => String::new(),
            Status::Partial => format!(
                "  PARTIAL RUN: {}\n",
                self.partial_reason.as_deref().unwrap_or("stopped early")
            ),
        };
        let identity = if c.identity_holds {
            "holds"
        } else {
            "VIOLATED"
        };
        format!(
            "idembench {run} — strategy {strategy} on {client}\n{status}\
             \x20 stream       {unique} trades, {copies} copies sent ({extra} duplicates), {partitions} partitions\n\
             \x20 throughput   produced {produced:.0} msg/s, processed {processed:.0} msg/s (offered {offered})\n\
             \x20 end-to-end   from intended send: p50 {p50}  p99 {p99}  p99.9 {p999}  max {max}\n\
             \x20              from actual send:   p50 {sp50}  p99 {sp99}  p99.9 {sp999}  max {smax}\n\
             \x20 correctness  exactly_once {once}  lost {lost}  double_applied {double} (extra_effects {extra_effects})\n\
             \x20              caught_by_constraint {caught}  duplicates_suppressed {suppressed}  malformed {malformed}\n\
             \x20              positions {positions} checked, {mismatched} differ from the ledger\n\
             {kafka}{faults}{cpu}\
             \x20 audit        exactly_once + lost + double_applied = {sum} of produced_unique {unique}: {identity}\n\
             \x20 oracle       predicted lost {plost}, double_applied {pdouble}: {mismatches}\n",
            run = self.run_id,
            strategy = self.strategy,
            client = if self.clients.redis.is_some() {
                self.redis_client.as_str()
            } else {
                "no Redis"
            },
            unique = c.produced_unique,
            copies = c.copies_sent,
            extra = c.copies_sent.saturating_sub(c.produced_unique),
            partitions = self.services.kafka.partitions,
            produced = t.produced_per_second,
            processed = t.processed_per_second,
            offered = if t.offered_rate > 0.0 {
                format!("{:.0} msg/s", t.offered_rate)
            } else {
                "unthrottled".into()
            },
            p50 = ms(e2e.p50),
            p99 = ms(e2e.p99),
            p999 = ms(e2e.p999),
            max = ms(e2e.max),
            sp50 = ms(sent.p50),
            sp99 = ms(sent.p99),
            sp999 = ms(sent.p999),
            smax = ms(sent.max),
            once = c.exactly_once,
            lost = c.lost,
            double = c.double_applied,
            extra_effects = c.extra_effects,
            caught = c.caught_by_constraint,
            suppressed = c.duplicates_suppressed,
            malformed = self.processor.counts.malformed,
            positions = c.positions_checked,
            mismatched = c.positions_mismatched,
            sum = c.exactly_once + c.lost + c.double_applied,
            plost = bounds(self.oracle.predicted.lost),
            pdouble = bounds(self.oracle.predicted.double_applied),
            mismatches = match self.oracle.mismatches {
                0 => "agrees with the audit".to_string(),
                n => format!("{n} MISMATCH(ES) with the audit"),
            },
            cpu = self.cpu_line() + self.memory_line().as_str(),
            kafka = self.kafka_lines(),
            faults = if !self.faults.log.is_empty() {
                let points: Vec<String> = self
                    .faults
                    .by_point
                    .iter()
                    .map(|(p, n)| format!("{n} {p}"))
                    .collect();
                let missing = match self.processor.killed_measurement_windows {
                    0 => String::new(),
                    n => format!(
                        "\n               latencies and processor counts miss up to 1 s before each of {n} kill(s); the audit misses nothing"
                    ),
                };
                format!(
                    "  faults       {} injected ({}), {} restarts, {} redeliveries{missing}\n{}",
                    self.faults.log.len(),
                    points.join(", "),
                    self.processor.restarts,
                    self.processor.redeliveries,
                    self.recovery_lines()
                )
            } else {
                String::new()
            },
        )
    }
}

impl RunResult {
    /// kafka-transactions: the effects topic's audit and stage one's transactions.
    fn kafka_lines(&self) -> String {
        let mut lines = String::new();
        if let Some(k) = &self.correctness.kafka {
            lines += &format!(
                "  kafka        {} committed effects: exactly_once {}  lost {}  doubled {}; aborted records {}; trades with more rows than committed effects {}\n",
                k.committed.records,
                k.committed.exactly_once,
                k.committed.lost,
                k.committed.doubled,
                k.aborted_records,
                k.aborted_reached_postgres
            );
        }
        if let Some(t) = &self.kafka_transactions {
            lines += &format!(
                "  transactions {} ({:.0}/s, {:.2} msg each), begin to commit p50 {}  p99 {}; stage one end to end p50 {}  p99 {}\n",
                t.transactions,
                t.transactions_per_second,
                t.messages_per_transaction,
                ms(t.transaction_us.p50),
                ms(t.transaction_us.p99),
                ms(t.stage_one_end_to_end_us.p50),
                ms(t.stage_one_end_to_end_us.p99)
            );
            lines += &format!(
                "  commit_transaction p50 {}  p99 {}; aborted {} (group fenced {}), producers fenced {} (replaced {}, unanswered {}), rewound {}, starts below committed {}\n",
                ms(t.transaction_commit_us.p50),
                ms(t.transaction_commit_us.p99),
                t.aborts.transactions_aborted,
                t.aborts.group_fenced,
                t.aborts.producers_fenced,
                t.aborts.producers_replaced,
                t.aborts.producers_unanswered,
                t.aborts.rewound_messages,
                t.aborts.starts_below_committed
            );
        }
        lines
    }

    /// One line per fault that lasts (the first five): when, how long, and the recovery.
    fn recovery_lines(&self) -> String {
        let s = |ms: Option<u64>| {
            ms.map_or("never".to_string(), |ms| {
                format!("{:.1} s", ms as f64 / 1000.0)
            })
        };
        self.faults
            .recovery
            .iter()
            .take(5)
            .map(|r| {
                format!(
                    "               {} at {:.1} s{}: healed {}, committing again {}, drained {}\n",
                    r.kind.name(),
                    r.at_ms as f64 / 1000.0,
                    r.target
                        .as_deref()
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default(),
                    s(r.healed_after_ms),
                    s(r.committed_again_after_ms),
                    s(r.drained_after_ms),
                )
            })
            .collect()
    }

    /// `  memory       peak RSS 167 MiB; state per trade: audit 2 B, business store 1 B, ledger 1 B`.
    fn memory_line(&self) -> String {
        let r = &self.resources;
        if r.state_bytes_per_trade.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = r
            .state_bytes_per_trade
            .iter()
            .map(|(holder, bytes)| format!("{} {bytes} B", holder.replace('_', " ")))
            .collect();
        format!(
            "  memory       peak RSS {:.0} MiB; state per trade: {}\n",
            r.this_process.peak_rss_mib,
            parts.join(", ")
        )
    }

    /// `  cpu / msg    idembench 612 µs  redis 48 µs …`, and the services not measured.
    fn cpu_line(&self) -> String {
        let r = &self.resources;
        if r.cpu_us_per_message.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = r
            .cpu_us_per_message
            .iter()
            .map(|(part, us)| format!("{part} {us:.0} µs"))
            .collect();
        let unmeasured: Vec<&str> = r.services_unmeasured.keys().map(String::as_str).collect();
        let unmeasured = match unmeasured.is_empty() {
            true => String::new(),
            false => format!("  (not measured: {})", unmeasured.join(", ")),
        };
        format!("  cpu / msg    {}{unmeasured}\n", parts.join("  "))
    }
}

fn bounds(b: crate::check::oracle::Bounds) -> String {
    match b.max {
        Some(max) if max == b.min => b.min.to_string(),
        Some(max) => format!("{}..={max}", b.min),
        None => format!(">= {}", b.min),
    }
}

/// Microseconds shown as milliseconds with sensible precision.
pub fn ms(micros: u64) -> String {
    let millis = micros as f64 / 1000.0;
    if millis < 10.0 {
        format!("{millis:.2} ms")
    } else if millis < 100.0 {
        format!("{millis:.1} ms")
    } else {
        format!("{millis:.0} ms")
    }
}
