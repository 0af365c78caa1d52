#![no_main]

use libfuzzer_sys::fuzz_target;
use thingmq_codec::ProtocolVersion;

fuzz_target!(|data: &[u8]| {
    thingmq_codec_fuzz::decode_loop(data, ProtocolVersion::V5);
});
