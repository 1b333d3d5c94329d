//! The command-line contract of every binary: bad usage exits 2 with one clear line naming
//! the flag, `--help` and `--version` work, and `--generate` prints completions and man pages
//! from the same flag definitions.

use crate::util::*;

const TOOLS: [&str; 8] = ["voc-prep", "train", "evaluate", "predict", "retrain", "export", "serve", "vocml-bench"];

/// Runs `tool args` and checks exit 2 with an error line naming `expect`.
fn usage_error(tool: &str, args: &[&str], expect: &str) {
    let o = run(bin(tool).args(args));
    assert_eq!(o.status.code(), Some(2), "{tool} {args:?}: {}", stderr(&o));
    let err = stderr(&o);
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("error:") && first.contains(expect), "{tool} {args:?}: first line {first:?}");
    assert!(o.stdout.is_empty(), "{tool} {args:?} wrote to stdout");
}

#[test]
fn bad_values_are_usage_errors() {
    usage_error("train", &["--model", "foo"], "--model");
    usage_error("train", &["--models", "mobilenet_v2,foo"], "--models");
    usage_error("train", &["--models", ","], "--models");
    usage_error("train", &["--scheduler", "linear"], "--scheduler");
    usage_error("train", &["--epochs", "-3"], "-3");
    usage_error("evaluate", &["--metric", "f2"], "--metric");
    usage_error("evaluate", &["--split", "holdout"], "--split");
    usage_error("predict", &["--shard", "5/4", "x.jpg"], "--shard");
    usage_error("predict", &["--shard", "x", "x.jpg"], "--shard");
    usage_error("predict", &["--threshold", "-0.5", "x.jpg"], "--threshold");
    usage_error("predict", &["--threshold", "1.5", "x.jpg"], "--threshold");
    usage_error("predict", &["--format", "xml", "x.jpg"], "--format");
    usage_error("voc-prep", &["--voc-root", "v", "--split", "0.5,0.6"], "--split");
    usage_error("voc-prep", &["--voc-root", "v", "--labels", "boxes"], "--labels");
    usage_error("voc-prep", &["--voc-root", "v", "--image-set", "holdout"], "--image-set");
    usage_error("vocml-bench", &["--model", "nope"], "--model");
    usage_error("retrain", &["--no-such-flag"], "--no-such-flag");
    usage_error("export", &["--format", "tflite"], "--format");
    usage_error("serve", &["--grpc-addr", "localhost"], "--grpc-addr");
    usage_error("serve", &["--http_port", "70000"], "--http-port");
    usage_error("serve", &["--model-name", "a/b"], "--model-name");
    usage_error("serve", &["--model_dir", "x", "--run", "y"], "--model-dir");
}

#[test]
fn serve_model_dir_must_hold_a_run_or_runs() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(bin("serve").arg("--model-dir").arg(dir.path()));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("neither a run directory (config.json) nor a runs directory (best)"), "{}", stderr(&o));
}

#[test]
fn every_tool_has_help_and_version() {
    for tool in TOOLS {
        let o = run(bin(tool).arg("--help"));
        assert!(o.status.success() && stdout(&o).contains("Usage:"), "{tool} --help");
        let o = run(bin(tool).arg("--version"));
        assert_eq!(stdout(&o).trim(), format!("{tool} {}", env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn generate_prints_completions_and_man_pages() {
    for tool in TOOLS {
        let man = run(bin(tool).args(["--generate", "man"]));
        assert!(man.status.success(), "{tool}: {}", stderr(&man));
        let text = stdout(&man);
        assert!(text.contains(&format!(".TH {tool} 1")) && text.contains(".SH OPTIONS"), "{tool} man page");
        let bash = stdout(&run(bin(tool).args(["--generate", "complete-bash"])));
        assert!(bash.contains(&format!("complete -F _{}", tool.replace('-', "__"))), "{tool} bash completion");
        let zsh = stdout(&run(bin(tool).args(["--generate", "complete-zsh"])));
        assert!(zsh.starts_with(&format!("#compdef {tool}")), "{tool} zsh completion");
        let fish = stdout(&run(bin(tool).args(["--generate", "complete-fish"])));
        assert!(fish.contains(&format!("complete -c {tool}")), "{tool} fish completion");
    }
    let models = stdout(&run(bin("train").args(["--generate", "complete-bash"])));
    assert!(models.contains("efficientnet_lite0") && models.contains("smaller_vggnet"), "backbone names complete");
    let o = run(bin("predict").args(["--generate", "powershell"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("complete-bash"), "{}", stderr(&o));
}

#[test]
fn the_readme_and_the_contract_tests_list_the_binaries_the_build_makes() {
    let manifest: toml::Table = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap().parse().unwrap();
    let bins: Vec<&str> = manifest["bin"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    let mut sorted = bins.clone();
    sorted.sort_unstable();
    let mut tools = TOOLS.to_vec();
    tools.sort_unstable();
    assert_eq!(sorted, tools, "TOOLS differs from the [[bin]] sections of Cargo.toml");
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let listed: Vec<&str> = bins.iter().copied().filter(|b| readme.contains(&format!("| `{b}` |"))).collect();
    assert_eq!(listed.len(), bins.len() - 1, "the README's tool table lists {listed:?} of {bins:?} (all but vocml-bench)");
    let words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    assert!(readme.contains(&format!("{} small tools", words[listed.len()])), "the README's tool count");
    assert!(readme.contains(&format!("makes {} binaries", words[bins.len()])), "the README's binary count");
}

/// libtorch's CUDA part is loaded only where the NVIDIA driver's `libcuda.so.1` loads and
/// the device is not `cpu` (a stand-in driver library here): `--device auto` then still runs
/// on the CPU of a machine without a GPU, and `--device cuda` is one clear error.
#[test]
fn the_cuda_library_is_loaded_only_where_a_driver_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, run_dir) = best_run(dir.path(), 16, 32, &["--epochs", "1"]);
    let photo = std::fs::read_dir(dir.path().join("voc/JPEGImages")).unwrap().next().unwrap().unwrap().path();
    let driver = dir.path().join("driver");
    std::fs::create_dir(&driver).unwrap();
    let source = driver.join("stand_in.c");
    std::fs::write(&source, "int vocml_stand_in_driver;\n").unwrap();
    let cc = run(std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(driver.join("libcuda.so.1")).arg(&source));
    assert!(cc.status.success(), "cc: {}", stderr(&cc));
    // The torch wheel's lib folder (.venv/lib/python3.X/site-packages/torch/lib).
    let has_cuda_part = std::fs::read_dir(repo_root().join(".venv/lib"))
        .unwrap()
        .any(|e| e.unwrap().path().join("site-packages/torch/lib/libtorch_cuda.so").is_file());
    let predict = |device: &str, with_driver: bool| {
        let mut cmd = bin("predict");
        cmd.args(["-q", "--engine", "torch", "--device", device, "--run"]).arg(&run_dir).arg(&photo).env("LD_DEBUG", "files");
        if with_driver {
            cmd.env("LD_LIBRARY_PATH", &driver);
        }
        let o = run(&mut cmd);
        let cuda_loaded = stderr(&o).contains("file=libtorch_cuda.so");
        (o, cuda_loaded)
    };
    for device in ["auto", "cpu"] {
        let (o, loaded) = predict(device, false);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!loaded, "--device {device} without a driver loaded libtorch_cuda");
    }
    let (o, loaded) = predict("cpu", true);
    assert!(o.status.success() && !loaded, "--device cpu loaded libtorch_cuda");
    let (o, loaded) = predict("auto", true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 2, "a header and the photo's row: {}", stdout(&o));
    assert_eq!(loaded, has_cuda_part, "with a driver, libtorch_cuda is loaded where the torch wheel has it");
    let (o, _) = predict("cuda", true);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("predict: error: --device cuda: no CUDA device is available"), "{}", stderr(&o));
}
