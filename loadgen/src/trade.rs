//! The trade message and its wire format.
//!
//! One fixed little-endian layout, 50 bytes plus optional padding, so encode and decode cost
//! nothing next to a network round trip and the payload size is exactly what the user asked for:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | magic `0x1D` |
//! | 1 | format version (1) |
//! | 8 | trade id (unique per logical trade) |
//! | 4 | account |
//! | 4 | instrument |
//! | 1 | side (0 buy, 1 sell) |
//! | 1 | copy number (0 = original; for diagnostics only — strategies key on the trade id) |
//! | 4 | quantity |
//! | 8 | price, in 1/10 000 units |
//! | 8 | intended send time, µs since the Unix epoch (open-loop schedule) |
//! | 8 | actual send time, µs since the Unix epoch |
//! | 2 | padding length |
//! | n | padding |

use thiserror::Error;

const MAGIC: u8 = 0x1D;
const VERSION: u8 = 1;
/// Size of an encoded trade without padding.
pub const ENCODED_LEN: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

/// One trade as the processor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trade {
    pub trade_id: u64,
    pub account: u32,
    pub instrument: u32,
    pub side: Side,
    pub copy: u8,
    pub quantity: u32,
    pub price: i64,
    pub intended_send_us: u64,
    pub sent_us: u64,
}

impl Trade {
    /// The quantity as it moves a position: buys add, sells subtract.
    pub fn signed_quantity(&self) -> i64 {
        match self.side {
            Side::Buy => i64::from(self.quantity),
            Side::Sell => -i64::from(self.quantity),
        }
    }

    /// Kafka key: the account, so every trade of one account lands in one partition, in order.
    pub fn key(&self) -> [u8; 4] {
        self.account.to_be_bytes()
    }

    /// Appends the encoding to `out`, padded so the whole message is at least `payload_bytes`.
    pub fn encode_into(&self, payload_bytes: usize, out: &mut Vec<u8>) {
        let pad = payload_bytes
            .saturating_sub(ENCODED_LEN)
            .min(usize::from(u16::MAX));
        out.reserve(ENCODED_LEN + pad);
        out.push(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.trade_id.to_le_bytes());
        out.extend_from_slice(&self.account.to_le_bytes());
        out.extend_from_slice(&self.instrument.to_le_bytes());
        out.push(match self.side {
            Side::Buy => 0,
            Side::Sell => 1,
        });
        out.push(self.copy);
        out.extend_from_slice(&self.quantity.to_le_bytes());
        out.extend_from_slice(&self.price.to_le_bytes());
        out.extend_from_slice(&self.intended_send_us.to_le_bytes());
        out.extend_from_slice(&self.sent_us.to_le_bytes());
        // `pad` was clamped to u16::MAX above.
        out.extend_from_slice(&(pad as u16).to_le_bytes());
        out.resize(out.len() + pad, 0);
    }

    pub fn encode(&self, payload_bytes: usize) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(payload_bytes, &mut out);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Trade, DecodeError> {
        if bytes.len() < ENCODED_LEN {
            return Err(DecodeError::TooShort { len: bytes.len() });
        }
        if bytes[0] != MAGIC {
            return Err(DecodeError::BadMagic { found: bytes[0] });
        }
        if bytes[1] != VERSION {
            return Err(DecodeError::UnknownVersion { found: bytes[1] });
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let side = match bytes[18] {
            0 => Side::Buy,
            1 => Side::Sell,
            other => return Err(DecodeError::BadSide { found: other }),
        };
        let pad = usize::from(u16::from_le_bytes([bytes[48], bytes[49]]));
        if bytes.len() != ENCODED_LEN + pad {
            return Err(DecodeError::BadLength {
                expected: ENCODED_LEN + pad,
                len: bytes.len(),
            });
        }
        Ok(Trade {
            trade_id: u64_at(2),
            account: u32_at(10),
            instrument: u32_at(14),
            side,
            copy: bytes[19],
            quantity: u32_at(20),
            price: i64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")),
            intended_send_us: u64_at(32),
            sent_us: u64_at(40),
        })
    }
}

/// Why a message on the topic is not a trade. The processor counts these and moves on.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message of {len} bytes is shorter than a trade ({ENCODED_LEN} bytes)")]
    TooShort { len: usize },
    #[error("message starts with 0x{found:02x}, not the trade magic 0x1d: not an idembench trade")]
    BadMagic { found: u8 },
    #[error("trade format version {found} is unknown (this build reads version {VERSION})")]
    UnknownVersion { found: u8 },
    #[error("side byte {found} is neither 0 (buy) nor 1 (sell)")]
    BadSide { found: u8 },
    #[error("message is {len} bytes but its padding length says {expected}")]
    BadLength { expected: usize, len: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Trade {
        Trade {
            trade_id: 0x0102_0304_0506_0708,
            account: 42,
            instrument: 7,
            side: Side::Sell,
            copy: 1,
            quantity: 250,
            price: 1_234_500,
            intended_send_us: 1_700_000_000_000_000,
            sent_us: 1_700_000_000_000_123,
        }
    }

    #[test]
    fn round_trips_with_and_without_padding() {
        for payload in [0, ENCODED_LEN, 51, 512, 4096] {
            let bytes = sample().encode(payload);
            assert_eq!(bytes.len(), payload.max(ENCODED_LEN));
            assert_eq!(Trade::decode(&bytes).unwrap(), sample());
        }
    }

    #[test]
    fn rejects_what_is_not_a_trade() {
        assert_eq!(
            Trade::decode(b"hello"),
            Err(DecodeError::TooShort { len: 5 })
        );
        let mut bytes = sample().encode(0);
        bytes[0] = b'{';
        assert_eq!(
            Trade::decode(&bytes),
            Err(DecodeError::BadMagic { found: b'{' })
        );
        let mut bytes = sample().encode(0);
        bytes[18] = 9;
        assert_eq!(
            Trade::decode(&bytes),
            Err(DecodeError::BadSide { found: 9 })
        );
        let mut bytes = sample().encode(60);
        bytes.pop();
        assert_eq!(
            Trade::decode(&bytes),
            Err(DecodeError::BadLength {
                expected: 60,
                len: 59
            })
        );
    }

    #[test]
    fn sells_reduce_positions() {
        assert_eq!(sample().signed_quantity(), -250);
    }
}
