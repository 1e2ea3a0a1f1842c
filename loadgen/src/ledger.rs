//! What was produced: every logical trade and how many of its copies the broker acknowledged.
//!
//! The audit compares this with what landed in Postgres. Only acknowledged copies count as
//! sent: a copy the broker never took cannot be a duplicate the processor had to catch.

use std::collections::HashMap;

use crate::stream::Plan;
use crate::trade::Trade;

/// One byte per logical trade: the plan draws the trades again from its seed when the audit
/// needs them, so a 20-million-trade ledger is 20 MB.
#[derive(Clone, Debug)]
pub struct Ledger {
    plan: Plan,
    /// Copies of each trade acknowledged by the broker (0, 1 or 2), indexed by `trade_id - 1`.
    pub copies_acked: Vec<u8>,
    /// Copies that the broker refused or that timed out.
    pub copies_failed: u64,
    /// Malformed (non-trade) messages the broker acknowledged.
    pub malformed_acked: u64,
}

impl Ledger {
    pub fn new(plan: &Plan) -> Ledger {
        Ledger {
            plan: plan.clone(),
            copies_acked: vec![0; usize::try_from(plan.trades()).expect("trades fit in memory")],
            copies_failed: 0,
            malformed_acked: 0,
        }
    }

    /// The plan whose trades this ledger counts.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn record_ack(&mut self, trade_id: u64) {
        let slot = &mut self.copies_acked[index(trade_id)];
        *slot = slot.saturating_add(1);
    }

    /// Logical trades of which at least one copy reached the broker.
    pub fn produced_unique(&self) -> u64 {
        self.copies_acked.iter().filter(|c| **c > 0).count() as u64
    }

    /// Every acknowledged copy, originals included.
    pub fn copies_sent(&self) -> u64 {
        self.copies_acked.iter().map(|c| u64::from(*c)).sum()
    }

    /// Logical trades that reached the broker more than once.
    pub fn trades_with_extra_copies(&self) -> u64 {
        self.copies_acked.iter().filter(|c| **c > 1).count() as u64
    }

    /// Acknowledged copies of the trade with this id (0 for an id the plan does not hold).
    pub fn copies(&self, trade_id: u64) -> u8 {
        trade_id
            .checked_sub(1)
            .and_then(|i| self.copies_acked.get(usize::try_from(i).ok()?))
            .copied()
            .unwrap_or(0)
    }

    /// Whether at least one copy of the trade with this id reached the broker.
    pub fn is_produced(&self, trade_id: u64) -> bool {
        self.copies(trade_id) > 0
    }

    /// Every planned trade in id order, with its acknowledged copies (drawn again from the
    /// plan's seed: one pass costs about as much as generating the stream).
    pub fn trades(&self) -> impl Iterator<Item = (Trade, u8)> + '_ {
        self.plan
            .iter()
            .zip(&self.copies_acked)
            .map(|(planned, copies)| (planned.trade, *copies))
    }

    /// The trades at least one copy of which reached the broker, in id order.
    pub fn produced(&self) -> impl Iterator<Item = Trade> + '_ {
        self.trades()
            .filter(|(_, copies)| *copies > 0)
            .map(|(trade, _)| trade)
    }

    /// Bytes the ledger allocated: one per planned trade.
    pub fn heap_bytes(&self) -> usize {
        self.copies_acked.capacity()
    }

    /// Each (account, instrument) position as it must be if every produced trade applied once.
    pub fn expected_positions(&self) -> HashMap<(u32, u32), i64> {
        let mut positions = HashMap::new();
        for trade in self.produced() {
            *positions
                .entry((trade.account, trade.instrument))
                .or_insert(0) += trade.signed_quantity();
        }
        positions
    }
}

fn index(trade_id: u64) -> usize {
    usize::try_from(trade_id - 1).expect("trade ids start at 1 and fit in memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamSpec;

    #[test]
    fn counts_follow_acks() {
        let plan = StreamSpec {
            trades: 3,
            ..StreamSpec::default()
        }
        .plan()
        .unwrap();
        let mut ledger = Ledger::new(&plan);
        ledger.record_ack(1);
        ledger.record_ack(1);
        ledger.record_ack(3);
        assert_eq!(ledger.produced_unique(), 2);
        assert_eq!(ledger.copies_sent(), 3);
        assert_eq!(ledger.trades_with_extra_copies(), 1);
        assert!(!ledger.is_produced(2));
        assert!(!ledger.is_produced(0));
        assert!(!ledger.is_produced(4));
        assert!(ledger.is_produced(3));
        assert_eq!((ledger.copies(1), ledger.copies(2)), (2, 0));
        let ids: Vec<u64> = ledger.produced().map(|t| t.trade_id).collect();
        assert_eq!(ids, [1, 3]);
        let planned: Vec<_> = plan.iter().map(|p| p.trade).collect();
        assert_eq!(ledger.trades().map(|(t, _)| t).collect::<Vec<_>>(), planned);
        let expected: i64 = [&planned[0], &planned[2]]
            .iter()
            .map(|t| t.signed_quantity())
            .sum();
        assert_eq!(ledger.expected_positions().values().sum::<i64>(), expected);
    }
}
