//! What happened to each trade, as it happened: every copy a worker received (partition,
//! offset, which processor incarnation), each Redis command and its reply, what the database
//! transaction did, when the worker finished it. Recorded for every trade into one bounded
//! buffer ([`CAPACITY`] events of at most 64 bytes, so 32 MB at most; each event takes one of
//! 64 shard locks for one push, so workers, which hold different trades, rarely meet); after
//! the audit, the run keeps the timelines of the trades that ended lost or applied twice
//! (`anomalies` in result.json) and drops the rest. `benches/codec.rs` measures what an event costs.
//!
//! The in-process processor records here; processor processes (`--processes`) keep no trace,
//! so their trades' timelines hold only what the run itself saw (the faults).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Events kept at most; past it, events are counted and dropped (`dropped`).
pub const CAPACITY: usize = 500_000;

/// One thing that happened to one trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// µs since the Unix epoch.
    pub at_us: u64,
    pub trade_id: u64,
    /// The processor incarnation (1 for the first; each crash restarts it with the next).
    pub incarnation: u32,
    pub what: What,
}

/// What happened. Every field is plain data, so recording allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// A worker took this copy off the topic.
    Received { partition: i32, offset: i64 },
    /// A Redis command on the trade's key and its reply (`nil`, `DONE`, `PROCESSING`, `OK`,
    /// `not set`, or `error`).
    Redis {
        command: &'static str,
        reply: &'static str,
    },
    /// What the business transaction did: `committed`, `rolled back: inbox row exists`,
    /// `rolled back: unique constraint`, `skipped: offset already stored`.
    Transaction(&'static str),
    /// What the strategy decided for the copy.
    Decided(&'static str),
    /// The worker finished the copy: the partition may commit up to `next_offset` (at once in
    /// `sync` mode, at the next commit tick in `interval` mode).
    Released { partition: i32, next_offset: i64 },
}

// The bound on the buffer's memory in the module doc holds.
const _: () = assert!(std::mem::size_of::<TraceEvent>() <= 64);

/// Shards of the buffer: a trade's events go to shard `trade_id % SHARDS`, so workers (which
/// hold different trades) rarely meet on one lock, and each holds it for one push.
const SHARDS: usize = 64;

#[derive(Debug)]
pub struct Trace {
    shards: Vec<Mutex<Vec<TraceEvent>>>,
    /// Events taken into the buffer so far (the bound is on this, over every shard).
    taken: AtomicU64,
    dropped: AtomicU64,
}

impl Default for Trace {
    fn default() -> Trace {
        Trace {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            taken: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Trace {
    pub fn record(&self, trade_id: u64, incarnation: u32, what: What) {
        if self.taken.fetch_add(1, Ordering::Relaxed) >= CAPACITY as u64 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let event = TraceEvent {
            at_us: crate::faults::now_us(),
            trade_id,
            incarnation,
            what,
        };
        self.shards[(trade_id % SHARDS as u64) as usize]
            .lock()
            .expect("trace lock")
            .push(event);
    }

    /// Every event of the trades `wanted` says, in time order; and how many events were
    /// recorded and dropped in all.
    pub fn of(&self, wanted: impl Fn(u64) -> bool) -> (Vec<TraceEvent>, u64, u64) {
        let mut kept = Vec::new();
        let mut recorded = 0;
        for shard in &self.shards {
            let events = shard.lock().expect("trace lock");
            recorded += events.len() as u64;
            kept.extend(events.iter().filter(|e| wanted(e.trade_id)).copied());
        }
        kept.sort_by_key(|e| e.at_us);
        (kept, recorded, self.dropped.load(Ordering::Relaxed))
    }
}

impl What {
    /// One line for a timeline: `received: partition 0, offset 99`.
    pub fn describe(&self) -> String {
        match self {
            What::Received { partition, offset } => {
                format!("received: partition {partition}, offset {offset}")
            }
            What::Redis { command, reply } => format!("Redis {command} → {reply}"),
            What::Transaction(what) => format!("database transaction {what}"),
            What::Decided(what) => format!("decided: {what}"),
            What::Released {
                partition,
                next_offset,
            } => format!("finished: partition {partition} may commit up to offset {next_offset}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trades_events_come_back_in_order_and_the_bound_counts_what_it_drops() {
        let trace = Trace::default();
        trace.record(
            7,
            1,
            What::Received {
                partition: 0,
                offset: 3,
            },
        );
        trace.record(8, 1, What::Decided("applied"));
        trace.record(
            7,
            1,
            What::Redis {
                command: "GET",
                reply: "nil",
            },
        );
        let (events, recorded, dropped) = trace.of(|id| id == 7);
        assert_eq!((recorded, dropped), (3, 0));
        assert_eq!(events.len(), 2);
        assert!(events[0].at_us <= events[1].at_us);
        assert_eq!(events[1].what.describe(), "Redis GET → nil");
        // Full: the next event is counted, not kept.
        trace.taken.store(CAPACITY as u64, Ordering::Relaxed);
        trace.record(9, 2, What::Decided("applied"));
        let (events, recorded, dropped) = trace.of(|id| id == 9);
        assert!(events.is_empty());
        assert_eq!((recorded, dropped), (3, 1));
    }
}
