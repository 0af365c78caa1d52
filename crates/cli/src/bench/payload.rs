//! The bench payload: the send time and a sequence number in the first 16 bytes (little
//! endian), zero padding after. The receiver computes end-to-end latency from the send time;
//! publisher and subscriber run on the same machine, so they share the wall clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes at the front of every bench payload: send time (ns since the Unix epoch) and sequence.
pub(crate) const HEADER_LEN: usize = 16;

/// Writes the header into the first [`HEADER_LEN`] bytes of `payload`.
///
/// `payload` is at least [`HEADER_LEN`] long (the CLI refuses smaller sizes).
pub(crate) fn stamp(payload: &mut [u8], sent_at_ns: u64, seq: u64) {
    payload[..8].copy_from_slice(&sent_at_ns.to_le_bytes());
    payload[8..HEADER_LEN].copy_from_slice(&seq.to_le_bytes());
}

/// Reads `(sent_at_ns, seq)` back; `None` when the payload is too short to be ours.
pub(crate) fn read(payload: &[u8]) -> Option<(u64, u64)> {
    let sent = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(payload.get(8..HEADER_LEN)?.try_into().ok()?);
    Some((sent, seq))
}

/// Latency in microseconds; a receive time before the send time (clock stepped back) is 0,
/// not a wrapped huge number.
pub(crate) fn latency_us(sent_at_ns: u64, received_at_ns: u64) -> u64 {
    received_at_ns.saturating_sub(sent_at_ns) / 1_000
}

/// Nanoseconds since the Unix epoch (wall clock: comparable across processes).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_and_read_round_trip_and_leave_padding_alone() {
        let mut p = vec![0xAAu8; 32];
        stamp(&mut p, 0x0102_0304_0506_0708, 42);
        assert_eq!(&p[..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(read(&p), Some((0x0102_0304_0506_0708, 42)));
        assert!(p[HEADER_LEN..].iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn short_payload_is_not_ours() {
        assert_eq!(read(&[0; 15]), None);
        assert_eq!(read(&[0; 16]), Some((0, 0)));
    }

    #[test]
    fn latency_is_in_microseconds_and_never_negative() {
        assert_eq!(latency_us(1_000_000, 3_500_000), 2_500);
        assert_eq!(latency_us(5_000, 1_000), 0);
    }
}
