//! Test harness: temp directories, the real binaries, and small hand-built VOC trees.
#![allow(dead_code)]

pub mod mlflow;
pub mod server;
pub mod slurm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's Python (numpy, torch), installed by `make setup`.
pub fn python() -> PathBuf {
    let p = repo_root().join(".venv/bin/python");
    assert!(p.exists(), "{} missing: run `make setup` first", p.display());
    p
}

/// `../shared` beside the checkout: the opt-in real-data tier. Tests that use it carry
/// `#[cfg_attr(not(vocml_shared_data), ignore = ...)]` (the build script sets the cfg when it
/// exists), so they only run where it does.
pub fn shared_dir() -> PathBuf {
    let p = repo_root().join("../shared");
    assert!(p.join("data").is_dir(), "{} missing: this test needs the real-data tier", p.display());
    p
}

/// A command for one of the project's binaries.
pub fn bin(name: &str) -> Command {
    let path = match name {
        "voc-prep" => env!("CARGO_BIN_EXE_voc-prep"),
        "train" => env!("CARGO_BIN_EXE_train"),
        "evaluate" => env!("CARGO_BIN_EXE_evaluate"),
        "predict" => env!("CARGO_BIN_EXE_predict"),
        "retrain" => env!("CARGO_BIN_EXE_retrain"),
        "vocml-bench" => env!("CARGO_BIN_EXE_vocml-bench"),
        "serve" => env!("CARGO_BIN_EXE_serve"),
        "export" => env!("CARGO_BIN_EXE_export"),
        other => panic!("unknown binary {other}"),
    };
    let mut c = Command::new(path);
    c.env_remove("LD_LIBRARY_PATH");
    c
}

/// Runs a command and returns its output, printing stderr on failure for diagnosis.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn binary");
    if !out.status.success() {
        eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    out
}

/// A retrain run's recorded `options` (what it was given) as the keys a gentle recipe sets: replay_all,
/// replicate, epochs, lr, tolerance.
pub fn gentle_recipe_values(recorded: &serde_json::Value) -> (Option<bool>, Option<u64>, Option<u64>, Option<f64>, Option<f64>) {
    let r = recorded;
    (r["replay_all"].as_bool(), r["replicate"].as_u64(), r["epochs"].as_u64(), r["lr"].as_f64(), r["tolerance"].as_f64())
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs Python code with the venv's interpreter and returns its stdout (panics on failure).
pub fn python_eval(code: &str) -> String {
    let out = Command::new(python()).arg("-c").arg(code).output().expect("run python");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Generates the synthetic dataset into `dir` (cached per process by the caller's dir).
pub fn synth(dir: &Path, images: usize, seed: u64) {
    let out = run(bin("voc-prep").args(["synth", "-q", "--images", &images.to_string(), "--seed", &seed.to_string(), "--out"]).arg(dir));
    assert!(out.status.success());
}

/// A hand-built VOC tree for precise label and bad-input tests.
pub struct TinyVoc {
    pub root: PathBuf,
}

impl TinyVoc {
    pub fn new(root: &Path) -> Self {
        for d in ["Annotations", "JPEGImages", "ImageSets/Main"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        TinyVoc { root: root.to_path_buf() }
    }

    /// Writes an XML with `(class, difficult)` objects and a matching JPEG.
    pub fn add(&self, id: &str, objects: &[(&str, bool)]) -> &Self {
        self.add_xml(id, objects);
        self.add_jpeg(id, [100, 150, 200]);
        self
    }

    pub fn add_xml(&self, id: &str, objects: &[(&str, bool)]) {
        let mut s = format!("<annotation><filename>{id}.jpg</filename>");
        for (name, difficult) in objects {
            s += &format!("<object><name>{name}</name><difficult>{}</difficult></object>", *difficult as u8);
        }
        s += "</annotation>";
        std::fs::write(self.root.join(format!("Annotations/{id}.xml")), s).unwrap();
    }

    pub fn jpeg_bytes(colour: [u8; 3]) -> Vec<u8> {
        let img = image::RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([colour[0].wrapping_add(x as u8), colour[1].wrapping_add(y as u8), colour[2]])
        });
        let mut buf = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90).encode_image(&img).unwrap();
        buf
    }

    pub fn add_jpeg(&self, id: &str, colour: [u8; 3]) {
        self.write_image(id, &Self::jpeg_bytes(colour));
    }

    pub fn write_image(&self, id: &str, bytes: &[u8]) {
        std::fs::write(self.root.join(format!("JPEGImages/{id}.jpg")), bytes).unwrap();
    }

    pub fn write_set(&self, name: &str, text: &str) {
        std::fs::write(self.root.join(format!("ImageSets/Main/{name}.txt")), text).unwrap();
    }
}

/// A prepared synthetic dataset (voc-prep output) at `dir/pd`, small images for speed.
pub fn prepared(dir: &Path, images: usize, size: u32) -> PathBuf {
    let voc = dir.join("voc");
    synth(&voc, images, 11);
    let out = dir.join("pd");
    let o = run(bin("voc-prep").arg("--voc-root").arg(&voc).arg("--out").arg(&out).args(["-q", "--size", &size.to_string()]));
    assert!(o.status.success());
    out
}

/// The single run directory under `runs`.
pub fn only_run(runs: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(runs).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

/// Trains a quick model on `data` into `runs` and returns its run directory.
pub fn quick_run(data: &Path, runs: &Path, extra: &[&str]) -> PathBuf {
    let before: Vec<PathBuf> = std::fs::read_dir(runs).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    let o = run(bin("train")
        .arg("--data")
        .arg(data)
        .arg("--runs-dir")
        .arg(runs)
        .args(["-q", "--threads", "2", "--epochs", "20", "--lr", "3e-3", "--patience", "20", "--aug-views", "1"])
        .args(extra));
    assert!(o.status.success());
    std::fs::read_dir(runs).unwrap().map(|e| e.unwrap().path()).find(|p| !before.contains(p) && p.is_dir()).unwrap()
}

/// A prepared synthetic dataset (`images` at `size` px) and a quick run trained on it with
/// `extra` flags and promoted to `runs/best`: (data, runs, run).
pub fn best_run(root: &Path, images: usize, size: u32, extra: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let data = prepared(root, images, size);
    let runs = root.join("runs");
    let run_dir = quick_run(&data, &runs, extra);
    vocml_core::run::point_best(&runs, &run_dir).unwrap();
    (data, runs, run_dir)
}

/// The hidden staging entry of output `name` in `dir` written by process `pid`
/// (`.<name>.tmp-<pid>-<host>`), if it exists.
pub fn staging_of(dir: &Path, name: &str, pid: u32) -> Option<PathBuf> {
    let prefix = format!(".{name}.tmp-{pid}-");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
}

/// Polls `probe` every millisecond until it gives a value or `limit` passes (then `None`).
pub fn wait_for<T>(limit: std::time::Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = probe() {
            return Some(v);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    None
}
