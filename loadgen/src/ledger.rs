//! What was produced: every logical trade and how many of its copies the broker acknowledged.
//!
//! The audit compares this with what landed in Postgres. Only acknowledged copies count as
//! sent: a copy the broker never took cannot be a duplicate the processor had to catch.

use std::collections::HashMap;

use crate::stream::Plan;
use crate::trade::Trade;

#[derive(Clone, Debug)]
pub struct Ledger {
    /// Indexed by `trade_id - 1`, as in the plan.
    pub trades: Vec<Trade>,
    /// Copies of each trade acknowledged by the broker (0, 1 or 2).
    pub copies_acked: Vec<u8>,
    /// Copies that the broker refused or that timed out.
    pub copies_failed: u64,
    /// Malformed (non-trade) messages the broker acknowledged.
    pub malformed_acked: u64,
}

impl Ledger {
    pub fn new(plan: &Plan) -> Ledger {
        Ledger {
            trades: plan.trades.clone(),
            copies_acked: vec![0; plan.trades.len()],
            copies_failed: 0,
            malformed_acked: 0,
        }
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

    /// The acknowledged trade with this id, if any.
    pub fn produced(&self, trade_id: u64) -> Option<&Trade> {
        let i = usize::try_from(trade_id.checked_sub(1)?).ok()?;
        (*self.copies_acked.get(i)? > 0).then(|| &self.trades[i])
    }

    /// Each (account, instrument) position as it must be if every produced trade applied once.
    pub fn expected_positions(&self) -> HashMap<(u32, u32), i64> {
        let mut positions = HashMap::new();
        for (trade, copies) in self.trades.iter().zip(&self.copies_acked) {
            if *copies > 0 {
                *positions
                    .entry((trade.account, trade.instrument))
                    .or_insert(0) += trade.signed_quantity();
            }
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
        assert!(ledger.produced(2).is_none());
        assert!(ledger.produced(0).is_none());
        assert_eq!(ledger.produced(3).unwrap().trade_id, 3);
        let expected: i64 = [&plan.trades[0], &plan.trades[2]]
            .iter()
            .map(|t| t.signed_quantity())
            .sum();
        assert_eq!(ledger.expected_positions().values().sum::<i64>(), expected);
    }
}
