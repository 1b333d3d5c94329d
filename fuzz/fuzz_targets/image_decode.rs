//! Image bytes (any format the tools accept) through the decode entry with its pixel limit,
//! then the resize to a model input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vocml_core::io::image::{decode_bytes, ResizeMode, SquareResizer};

/// The limit the fuzzer decodes under (small, so it spends its time on parsing).
const MAX_PIXELS: u64 = 4_000_000;

fuzz_target!(|data: &[u8]| {
    if decode_bytes(data, MAX_PIXELS).is_ok() {
        let mut r = SquareResizer::new(32, ResizeMode::Letterbox, MAX_PIXELS);
        let _ = r.load_bytes(data).map(|v| assert_eq!(v.len(), r.output_len()));
    }
});
