//! Link-time set-up for the binaries: rpaths to the libtorch directory that torch-sys built
//! against (the project's venv), absolute and relative to the binary, so the binaries run
//! with no LD_LIBRARY_PATH. Only libtorch's CPU part is linked: the CUDA part is loaded at
//! run time where a GPU driver exists (`vocml_core::device`). `voc-prep` does not load
//! libtorch at all (it starts in milliseconds). Shared by every crate of the workspace
//! (`include!`d by `crates/serve/build.rs`, which also compiles the gRPC protocol).

use std::path::Path;

#[allow(dead_code)]
fn main() {
    link_setup();
}

/// The rpaths to libtorch.
pub fn link_setup() {
    shared_data_cfg();
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    // The workspace root: this package's directory, or two levels up for crates/core.
    let root =
        Path::new(&manifest_dir).ancestors().find(|p| p.join("Cargo.lock").exists()).unwrap_or(Path::new(&manifest_dir)).to_path_buf();
    if let Ok(rel) = Path::new(&dir).strip_prefix(&root) {
        // Binaries live in target/<profile>/, test binaries in target/<profile>/deps/.
        println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../../{}", rel.display());
        println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../../../{}", rel.display());
    }
}

/// Sets `cfg(vocml_shared_data)` when `../shared/data` (the real-data test tier) exists beside
/// the workspace; the tests that need it are compiled as ignored otherwise. Where it exists a
/// change in it reruns this script; a `../shared` that appears later is seen on the next
/// build of a fresh checkout (or after `touch crates/cli/build.rs`): watching a missing path
/// would rebuild everything on every build.
fn shared_data_cfg() {
    println!("cargo:rustc-check-cfg=cfg(vocml_shared_data)");
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let Some(root) = Path::new(&manifest_dir).ancestors().find(|p| p.join("Cargo.lock").exists()) else { return };
    let shared = root.join("../shared/data");
    if shared.is_dir() {
        println!("cargo:rerun-if-changed={}", shared.display());
        println!("cargo:rustc-cfg=vocml_shared_data");
    }
}
