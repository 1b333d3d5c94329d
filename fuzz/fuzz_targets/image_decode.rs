//! Image bytes (any format the tools accept) through the decode entry with its pixel limit,
//! then the resize to a model input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vocml_core::io::image::{decode_bytes, set_max_pixels, ResizeMode, SquareResizer};

fuzz_target!(|data: &[u8]| {
    set_max_pixels(4_000_000);
    if decode_bytes(data).is_ok() {
        let mut r = SquareResizer::new(32, ResizeMode::Letterbox);
        let _ = r.load_bytes(data).map(|v| assert_eq!(v.len(), r.output_len()));
    }
});
