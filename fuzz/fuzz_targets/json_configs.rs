//! The JSON files a run and a prepared dataset are read from: `config.json` (the run
//! contract, validated) and `manifest.json`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vocml_core::dataset::manifest::Manifest;
use vocml_core::run::config::RunConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = RunConfig::parse(text) {
            let _ = (cfg.classes().len(), cfg.image_size());
        }
        if let Ok(m) = Manifest::parse(text) {
            let _ = m.task();
        }
    }
});
