//! Shared body of the decode fuzz targets.

use bytes::BytesMut;
use thingmq_codec::{decode, encode, encoded_len, ProtocolVersion};

/// Decodes packets from `data` until the input runs out or is rejected. Every packet that
/// decodes must re-encode to exactly `encoded_len` bytes and decode back to itself.
pub fn decode_loop(data: &[u8], version: ProtocolVersion) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = decode(&mut buf, version, u32::MAX) {
        let mut out = BytesMut::new();
        encode(&packet, version, &mut out).expect("a decoded packet must re-encode");
        assert_eq!(out.len(), encoded_len(&packet, version), "encoded_len disagrees");
        let again = decode(&mut out, version, u32::MAX);
        assert_eq!(again, Ok(Some(packet)), "re-encoded packet decodes differently");
        assert!(out.is_empty(), "re-encoded packet has trailing bytes");
    }
}
