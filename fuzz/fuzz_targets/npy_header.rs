//! `.npy` headers: magic, version, length field, dict (dtype, order, shape).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vocml_core::io::npy::{data_bytes, parse_header};

fuzz_target!(|data: &[u8]| {
    if let Ok((dtype, shape, offset)) = parse_header(data) {
        assert!(offset <= data.len());
        let _ = data_bytes(dtype, &shape);
    }
});
