//! Checkpoint files in safetensors format, through the loader every tool uses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("vocml-fuzz-{}.safetensors", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(scratch(), data).unwrap();
    let _ = vocml_core::model::weights::read_checkpoint(scratch());
});
