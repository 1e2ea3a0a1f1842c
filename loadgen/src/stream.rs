//! The seeded trade stream: which logical trades exist and which get extra copies.
//!
//! Everything here is a pure function of [`StreamSpec`] (seed included), so two runs with the
//! same spec produce the same trades and the same duplicates. Time is not decided here: the
//! producer turns slots into intended send times.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::trade::{Side, Trade};

/// What the stream looks like. Serialized into `result.json` as part of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// Logical trades (unique trade ids).
    pub trades: u64,
    /// Distinct accounts; the Kafka key, so they spread trades over partitions.
    pub accounts: u32,
    /// Distinct instruments per account.
    pub instruments: u32,
    /// Fraction of logical trades that get one extra copy, 0.0..=1.0.
    pub duplicate_rate: f64,
    /// Fraction of those extra copies sent late (after `late_duplicate_delay_ms`) instead of
    /// right after the original, 0.0..=1.0.
    pub late_duplicate_share: f64,
    /// How long after its original's intended send time a late copy is sent.
    pub late_duplicate_delay_ms: u64,
    /// Zipf exponent of the account distribution; 0 is uniform, 1.0 is heavily skewed.
    pub key_skew: f64,
    /// Size of each message value; at least the 50-byte trade encoding.
    pub payload_bytes: usize,
    pub seed: u64,
    /// Fraction of logical trades followed by a message that is not a trade (a poison pill
    /// the processor must count and skip), 0.0..=1.0.
    #[serde(default)]
    pub malformed_rate: f64,
}

impl Default for StreamSpec {
    fn default() -> Self {
        StreamSpec {
            trades: 10_000,
            accounts: 1_000,
            instruments: 20,
            duplicate_rate: 0.1,
            late_duplicate_share: 0.0,
            late_duplicate_delay_ms: 1_000,
            key_skew: 0.0,
            payload_bytes: 256,
            seed: 1,
            malformed_rate: 0.0,
        }
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum SpecError {
    #[error("--trades must be at least 1")]
    NoTrades,
    #[error("--accounts and --instruments must be at least 1")]
    NoKeys,
    #[error("--{name} is {value}, but must be between 0.0 and 1.0")]
    NotAFraction { name: &'static str, value: f64 },
    #[error("--key-skew is {0}, but must be 0 (uniform) or a positive Zipf exponent")]
    BadSkew(f64),
}

impl StreamSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.trades == 0 {
            return Err(SpecError::NoTrades);
        }
        if self.accounts == 0 || self.instruments == 0 {
            return Err(SpecError::NoKeys);
        }
        for (name, value) in [
            ("duplicate-rate", self.duplicate_rate),
            ("late-duplicate-share", self.late_duplicate_share),
            ("malformed-rate", self.malformed_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SpecError::NotAFraction { name, value });
            }
        }
        if !(self.key_skew >= 0.0 && self.key_skew.is_finite()) {
            return Err(SpecError::BadSkew(self.key_skew));
        }
        Ok(())
    }

    /// Generates the plan: every logical trade, and for each its extra copy if it has one.
    pub fn plan(&self) -> Result<Plan, SpecError> {
        self.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let zipf = (self.key_skew > 0.0)
            .then(|| Zipf::new(f64::from(self.accounts), self.key_skew).expect("validated"));
        let mut trades = Vec::with_capacity(usize::try_from(self.trades).unwrap_or(0));
        let mut extra = Vec::with_capacity(trades.capacity());
        let mut malformed_after = Vec::new();
        for index in 0..self.trades {
            let account = match &zipf {
                // Zipf yields 1..=n as f64.
                Some(zipf) => (zipf.sample(&mut rng) as u32).clamp(1, self.accounts) - 1,
                None => rng.random_range(0..self.accounts),
            };
            let trade = Trade {
                trade_id: index + 1,
                account,
                instrument: rng.random_range(0..self.instruments),
                side: if rng.random_bool(0.5) {
                    Side::Buy
                } else {
                    Side::Sell
                },
                copy: 0,
                quantity: rng.random_range(1..=1_000),
                price: rng.random_range(1_000_000..=2_000_000),
                intended_send_us: 0,
                sent_us: 0,
            };
            let copy = if rng.random_bool(self.duplicate_rate) {
                if rng.random_bool(self.late_duplicate_share) {
                    ExtraCopy::Late
                } else {
                    ExtraCopy::Immediate
                }
            } else {
                ExtraCopy::None
            };
            trades.push(trade);
            extra.push(copy);
            // Drawn only when asked for, so a spec without poison pills keeps its stream.
            if self.malformed_rate > 0.0 && rng.random_bool(self.malformed_rate) {
                malformed_after.push(index as usize);
            }
        }
        Ok(Plan {
            trades,
            extra,
            malformed_after,
        })
    }
}

/// Whether a logical trade is sent once more, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraCopy {
    None,
    /// Right after the original, same partition.
    Immediate,
    /// `late_duplicate_delay_ms` after the original's intended send time.
    Late,
}

#[derive(Clone, Debug)]
pub struct Plan {
    /// Indexed by `trade_id - 1`.
    pub trades: Vec<Trade>,
    pub extra: Vec<ExtraCopy>,
    /// Indexes of the trades after which a malformed message is sent, ascending.
    pub malformed_after: Vec<usize>,
}

impl Plan {
    /// Messages the plan sends: originals plus extra copies.
    pub fn planned_messages(&self) -> u64 {
        self.trades.len() as u64
            + self.extra.iter().filter(|c| **c != ExtraCopy::None).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let spec = StreamSpec {
            trades: 500,
            ..StreamSpec::default()
        };
        let a = spec.plan().unwrap();
        let b = spec.plan().unwrap();
        assert_eq!(a.trades, b.trades);
        assert_eq!(a.extra, b.extra);
        let c = StreamSpec { seed: 2, ..spec }.plan().unwrap();
        assert_ne!(a.trades, c.trades);
    }

    #[test]
    fn duplicate_rate_is_honoured_within_sampling_noise() {
        let spec = StreamSpec {
            trades: 20_000,
            duplicate_rate: 0.25,
            late_duplicate_share: 0.5,
            ..StreamSpec::default()
        };
        let plan = spec.plan().unwrap();
        let dups = plan.extra.iter().filter(|c| **c != ExtraCopy::None).count();
        let late = plan.extra.iter().filter(|c| **c == ExtraCopy::Late).count();
        // 20 000 draws at p = 0.25: standard deviation ≈ 61, so ±400 is > 6σ.
        assert!((4_600..=5_400).contains(&dups), "{dups}");
        assert!(
            (dups / 2 - 300..=dups / 2 + 300).contains(&late),
            "{late} of {dups}"
        );
        assert_eq!(plan.planned_messages(), 20_000 + dups as u64);
    }

    #[test]
    fn zero_duplicate_rate_sends_each_trade_once() {
        let plan = StreamSpec {
            duplicate_rate: 0.0,
            ..StreamSpec::default()
        }
        .plan()
        .unwrap();
        assert!(plan.extra.iter().all(|c| *c == ExtraCopy::None));
    }

    #[test]
    fn skew_concentrates_accounts() {
        let skewed = StreamSpec {
            key_skew: 1.2,
            trades: 10_000,
            ..StreamSpec::default()
        }
        .plan()
        .unwrap();
        let hottest = skewed.trades.iter().filter(|t| t.account == 0).count();
        let uniform = StreamSpec {
            trades: 10_000,
            ..StreamSpec::default()
        }
        .plan()
        .unwrap();
        let uniform_hottest = uniform.trades.iter().filter(|t| t.account == 0).count();
        assert!(
            hottest > 10 * uniform_hottest.max(1),
            "{hottest} vs {uniform_hottest}"
        );
        assert!(skewed.trades.iter().all(|t| t.account < 1_000));
    }

    #[test]
    fn poison_pills_do_not_change_the_trades() {
        let clean = StreamSpec::default().plan().unwrap();
        let poisoned = StreamSpec {
            malformed_rate: 0.1,
            ..StreamSpec::default()
        }
        .plan()
        .unwrap();
        assert!(clean.malformed_after.is_empty());
        assert!(
            (800..=1_200).contains(&poisoned.malformed_after.len()),
            "{}",
            poisoned.malformed_after.len()
        );
        // The draws interleave, so trades differ after the first pill; the count and ids do not.
        assert_eq!(clean.trades.len(), poisoned.trades.len());
    }

    #[test]
    fn bad_specs_name_the_flag() {
        let err = StreamSpec {
            duplicate_rate: 1.5,
            ..StreamSpec::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("--duplicate-rate"), "{err}");
        assert_eq!(
            StreamSpec {
                trades: 0,
                ..StreamSpec::default()
            }
            .validate(),
            Err(SpecError::NoTrades)
        );
    }
}
