//! VOC annotation XML.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vocml_core::dataset::voc::annotation::parse_annotation;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(a) = parse_annotation(text) {
            let _ = a.has_class("person", true);
        }
    }
});
