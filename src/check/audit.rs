//! The audit: after the stream is drained, compare the ledger (what was produced) with what the
//! business tables hold, and count every logical trade into exactly one class.
//!
//! For each produced trade, `trade_rows` and `outbox_rows` are the rows carrying its id:
//! - `exactly_once`: one of each;
//! - `lost`: none of either — no effect at all;
//! - `double_applied`: more than one of either (`extra_effects` adds up, per trade,
//!   `max(trade_rows, outbox_rows) - 1`: how many times too often its effect landed);
//! - `torn`: anything else (a trade row without an outbox row, or the reverse). One
//!   transaction writes both, so this must be 0; it is counted so the identity below can fail.
//!
//! `exactly_once + lost + double_applied == produced_unique` must hold; rows for ids that were
//! never produced (`unexpected_rows`) and torn trades break it, and the run then fails loudly.
//! Positions are checked twice: against the ledger (`positions_mismatched`, expected when
//! trades were lost or doubled) and against the trade rows themselves (`positions_inconsistent`,
//! which only a torn transaction could make non-zero).

use idembench_loadgen::Ledger;
use serde::Serialize;

use crate::db::Observed;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Correctness {
    pub produced_unique: u64,
    pub copies_sent: u64,
    /// Malformed (non-trade) messages acknowledged by the broker; the processor must count
    /// each as `processor.malformed`.
    pub malformed_sent: u64,
    pub exactly_once: u64,
    pub lost: u64,
    pub double_applied: u64,
    pub extra_effects: u64,
    pub caught_by_constraint: u64,
    pub duplicates_suppressed: u64,
    pub torn: u64,
    pub unexpected_rows: u64,
    pub positions_checked: u64,
    pub positions_mismatched: u64,
    pub positions_inconsistent: u64,
    /// `exactly_once + lost + double_applied == produced_unique`, with nothing torn or unexpected.
    pub identity_holds: bool,
    /// kafka-transactions: the effects topic's audit (the Kafka half).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<crate::check::kafka::KafkaCorrectness>,
}

/// Counts the processor reported, which the database cannot know.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessorCounts {
    pub caught_by_constraint: u64,
    pub duplicates_suppressed: u64,
}

/// The first `limit` trades (by id) that ended lost, and the first `limit` applied twice with
/// their effect count (the larger of trade and outbox rows): the trades whose timelines a
/// result keeps.
pub fn anomalous(
    ledger: &Ledger,
    observed: &Observed,
    limit: usize,
) -> (Vec<u64>, Vec<(u64, u64)>) {
    let (mut lost, mut doubled) = (Vec::new(), Vec::new());
    for (trade_id, rows) in rows_of_produced(ledger, observed) {
        match rows {
            (0, 0) if lost.len() < limit => lost.push(trade_id),
            (r, o) if (r > 1 || o > 1) && doubled.len() < limit => {
                doubled.push((trade_id, r.max(o)))
            }
            _ => {}
        }
        if lost.len() >= limit && doubled.len() >= limit {
            break;
        }
    }
    (lost, doubled)
}

/// Each produced trade (one copy acknowledged or more) with its trade and outbox row counts.
fn rows_of_produced<'a>(
    ledger: &'a Ledger,
    observed: &'a Observed,
) -> impl Iterator<Item = (u64, (u64, u64))> + 'a {
    ledger
        .copies_acked
        .iter()
        .enumerate()
        .filter(|(_, copies)| **copies != 0)
        .map(|(index, _)| {
            let trade_id = index as u64 + 1;
            let rows = (
                observed.trade_rows.get(trade_id),
                observed.outbox_rows.get(trade_id),
            );
            (trade_id, rows)
        })
}

/// Pure: classifies every produced trade. Unit-tested without a database.
pub fn reconcile(ledger: &Ledger, observed: &Observed, processor: ProcessorCounts) -> Correctness {
    let mut c = Correctness {
        produced_unique: ledger.produced_unique(),
        copies_sent: ledger.copies_sent(),
        malformed_sent: ledger.malformed_acked,
        caught_by_constraint: processor.caught_by_constraint,
        duplicates_suppressed: processor.duplicates_suppressed,
        ..Correctness::default()
    };
    for (_, rows) in rows_of_produced(ledger, observed) {
        match rows {
            (1, 1) => c.exactly_once += 1,
            (0, 0) => c.lost += 1,
            (r, o) if r > 1 || o > 1 => {
                c.double_applied += 1;
                c.extra_effects += r.max(o) - 1;
            }
            _ => c.torn += 1,
        }
    }
    c.unexpected_rows = observed
        .trade_rows
        .iter()
        .chain(observed.outbox_rows.iter())
        .filter(|(id, _)| !ledger.is_produced(*id))
        .map(|(_, n)| n)
        .sum();

    let expected = ledger.expected_positions();
    let mut keys: Vec<&(u32, u32)> = expected.keys().chain(observed.positions.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        c.positions_checked += 1;
        let actual = observed.positions.get(key).copied().unwrap_or(0);
        if expected.get(key).copied().unwrap_or(0) != actual {
            c.positions_mismatched += 1;
        }
        if observed
            .positions_from_trade_rows
            .get(key)
            .copied()
            .unwrap_or(0)
            != actual
        {
            c.positions_inconsistent += 1;
        }
    }
    c.identity_holds = c.exactly_once + c.lost + c.double_applied == c.produced_unique
        && c.torn == 0
        && c.unexpected_rows == 0
        && c.positions_inconsistent == 0;
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use idembench_loadgen::StreamSpec;

    fn ledger(trades: u64, acks: &[(u64, u8)]) -> Ledger {
        let plan = StreamSpec {
            trades,
            ..StreamSpec::default()
        }
        .plan()
        .unwrap();
        let mut ledger = Ledger::new(&plan);
        for (id, copies) in acks {
            for _ in 0..*copies {
                ledger.record_ack(*id);
            }
        }
        ledger
    }

    /// Observed state as if each listed trade applied `n` times, consistently.
    fn applied(ledger: &Ledger, times: &[(u64, u64)]) -> Observed {
        let mut observed = Observed::default();
        let trades: Vec<_> = ledger.trades().map(|(trade, _)| trade).collect();
        for (id, n) in times {
            let trade = &trades[(*id - 1) as usize];
            observed.trade_rows.add(*id, *n);
            observed.outbox_rows.add(*id, *n);
            for map in [
                &mut observed.positions,
                &mut observed.positions_from_trade_rows,
            ] {
                *map.entry((trade.account, trade.instrument)).or_insert(0) +=
                    trade.signed_quantity() * *n as i64;
            }
        }
        observed
    }

    #[test]
    fn classifies_every_trade_once() {
        let ledger = ledger(4, &[(1, 1), (2, 2), (3, 1), (4, 2)]);
        let observed = applied(&ledger, &[(1, 1), (2, 3), (4, 1)]);
        let c = reconcile(
            &ledger,
            &observed,
            ProcessorCounts {
                caught_by_constraint: 0,
                duplicates_suppressed: 1,
            },
        );
        assert_eq!((c.produced_unique, c.copies_sent), (4, 6));
        assert_eq!(
            (c.exactly_once, c.lost, c.double_applied, c.extra_effects),
            (2, 1, 1, 2)
        );
        assert!(c.identity_holds);
        assert!(
            c.positions_mismatched >= 1,
            "trade 2 tripled and trade 3 lost must show in positions"
        );
        assert_eq!(c.positions_inconsistent, 0);
    }

    #[test]
    fn unproduced_trades_are_neither_lost_nor_counted() {
        let ledger = ledger(3, &[(1, 1), (3, 1)]);
        let c = reconcile(
            &ledger,
            &applied(&ledger, &[(1, 1), (3, 1)]),
            ProcessorCounts::default(),
        );
        assert_eq!((c.produced_unique, c.exactly_once, c.lost), (2, 2, 0));
        assert_eq!(c.positions_mismatched, 0);
        assert!(c.identity_holds);
    }

    #[test]
    fn torn_and_unexpected_rows_break_the_identity() {
        let ledger = ledger(2, &[(1, 1)]);
        let mut observed = applied(&ledger, &[(1, 1)]);
        observed.outbox_rows = crate::db::TradeCounts::default();
        let c = reconcile(&ledger, &observed, ProcessorCounts::default());
        assert_eq!(c.torn, 1);
        assert!(!c.identity_holds);

        let mut observed = applied(&ledger, &[(1, 1)]);
        observed.trade_rows.add(2, 1);
        let c = reconcile(&ledger, &observed, ProcessorCounts::default());
        assert_eq!(c.unexpected_rows, 1);
        assert!(!c.identity_holds);
    }

    #[test]
    fn a_position_that_disagrees_with_its_trade_rows_is_inconsistent() {
        let ledger = ledger(1, &[(1, 1)]);
        let mut observed = applied(&ledger, &[(1, 1)]);
        for quantity in observed.positions.values_mut() {
            *quantity += 1;
        }
        let c = reconcile(&ledger, &observed, ProcessorCounts::default());
        assert_eq!((c.positions_mismatched, c.positions_inconsistent), (1, 1));
        assert!(!c.identity_holds);
    }
}
