//! Integration tests of the real `train` binary on the synthetic dataset.

use crate::util::*;
use std::path::{Path, PathBuf};

fn run_tool(cmd: &mut std::process::Command) -> std::process::Output {
    run(cmd)
}

fn train(data: &Path, runs: &Path, extra: &[&str]) -> std::process::Output {
    run(bin("train").arg("--data").arg(data).arg("--runs-dir").arg(runs).args(["-q", "--threads", "2"]).args(extra))
}

fn history_rows(run: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(run.join("history.csv")).unwrap().lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect()
}

#[test]
fn frozen_training_learns_and_writes_a_complete_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 160, 96);
    let runs = dir.path().join("runs");
    let o = train(&data, &runs, &["--epochs", "25", "--lr", "3e-3", "--patience", "25"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("val macro-F1"));
    let run = only_run(&runs);
    let name = run.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with("_efficientnet_lite0") && name.len() == "YYYYmmdd-HHMMSS_efficientnet_lite0".len(), "{name}");
    for f in ["config.json", "history.csv", "metrics.json", "classes.json", "model.safetensors"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let m = read_json(&run.join("metrics.json"));
    let f1 = m["metrics"]["macro_f1"].as_f64().unwrap();
    // Chance level for 4 independent classes at ~30-50% prevalence is well under 0.5.
    assert!(f1 > 0.8, "validation macro-F1 {f1} not clearly above chance");
    let cfg = read_json(&run.join("config.json"));
    assert_eq!(cfg["options"]["model"], "efficientnet_lite0");
    assert_eq!(cfg["device"], "cpu");
    assert_eq!(cfg["data_manifest_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(read_json(&run.join("classes.json")), serde_json::json!(["person", "chair", "dog", "sofa"]));
    // The saved model loads in Python with torchvision-style names and the head on top.
    let keys = python_eval(&format!(
        "from safetensors import safe_open; f=safe_open(r'{}','pt'); ks=list(f.keys()); print(len(ks), 'head.3.weight' in ks, tuple(f.get_tensor('head.3.weight').shape))",
        run.join("model.safetensors").display()
    ));
    assert_eq!(keys, "249 True (4, 128)");
    // best epoch restore: metrics.json reports the best validation F1 in the history.
    let best = history_rows(&run).iter().map(|r| r[4].parse::<f64>().unwrap()).fold(0.0, f64::max);
    assert!((best - f1).abs() < 1e-4, "best in history {best}, reported {f1}");
}

#[test]
fn early_stopping_stops_after_patience() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 60, 64);
    let runs = dir.path().join("runs");
    // lr 1e-12: the validation F1 never improves after epoch 1, so patience 2 stops at epoch 3.
    let o = train(&data, &runs, &["--epochs", "10", "--lr", "1e-12", "--patience", "2"]);
    assert!(o.status.success());
    let run = only_run(&runs);
    assert_eq!(history_rows(&run).len(), 3);
    assert_eq!(read_json(&run.join("metrics.json"))["best_epoch"], 1);
}

#[test]
fn refit_trains_on_train_and_val_for_exactly_its_epochs_and_decides_at_half() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 60, 64);
    let runs = dir.path().join("runs");
    // The same lr that stops early at patience 2 above runs all 6 epochs as a refit.
    let o = train(&data, &runs, &["--epochs", "6", "--lr", "1e-12", "--patience", "2", "--refit"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = only_run(&runs);
    assert_eq!(history_rows(&run).len(), 6);
    assert_eq!(read_json(&run.join("metrics.json"))["best_epoch"], 6, "a refit keeps its last epoch");
    let m = read_json(&data.join("manifest.json"));
    let cfg = read_json(&run.join("config.json"));
    let count = |s: &str| m["splits"][s]["count"].as_u64().unwrap();
    assert_eq!(cfg["train_images"].as_u64().unwrap(), count("train") + count("val"));
    assert_eq!(cfg["options"]["refit"], true);
    let o = run_tool(bin("evaluate").arg("--data").arg(&data).arg("--run").arg(&run).arg("-q"));
    assert!(o.status.success(), "{}", stderr(&o));
    let th = read_json(&run.join("thresholds.json"));
    assert_eq!((th["rule"].as_str(), th["why"].as_str()), (Some("half"), Some("a refit: its validation images were trained on")));
    let o = train(&data, &runs, &["--refit", "--weight-decay", "0,1e-4"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("refit: a final fit has no validation data"), "{}", stderr(&o));
}

#[test]
fn cached_and_uncached_training_reach_similar_quality_and_fine_tuning_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 120, 64);
    let args = ["--epochs", "15", "--lr", "3e-3", "--patience", "15"];
    let (r1, r2, r3) = (dir.path().join("r1"), dir.path().join("r2"), dir.path().join("r3"));
    assert!(train(&data, &r1, &args).status.success());
    assert!(train(&data, &r2, &[&args[..], &["--no-cache"]].concat()).status.success());
    assert!(train(&data, &r3, &[&args[..], &["--fine-tune-blocks", "2", "--fine-tune-epochs", "2", "--fine-tune-lr", "1e-4"]].concat())
        .status
        .success());
    let f1 = |r: &Path| read_json(&only_run(r).join("metrics.json"))["metrics"]["macro_f1"].as_f64().unwrap();
    let (a, b, c) = (f1(&r1), f1(&r2), f1(&r3));
    assert!(a > 0.6 && b > 0.6, "cached {a}, uncached {b}");
    assert!((a - b).abs() < 0.2, "cached {a} vs uncached {b}");
    let phases: Vec<String> = history_rows(&only_run(&r3)).iter().map(|r| r[1].clone()).collect();
    assert!(phases.contains(&"fine-tune".to_string()), "{phases:?}");
    assert!(c >= a - 1e-9 || c > 0.6, "fine-tuned {c}");
}

/// The column `name` of a run's history.csv.
fn history_column(run: &Path, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("history.csv")).unwrap();
    let k = text.lines().next().unwrap().split(',').position(|c| c == name).unwrap();
    history_rows(run).iter().map(|r| r[k].parse().unwrap()).collect()
}

/// Retrains `run` (into `runs`) on one correction of `img` and returns the new run.
fn retrain_on_one_correction(dir: &Path, run: &Path, runs: &Path, img: &Path) -> PathBuf {
    std::fs::write(dir.join("fix.csv"), format!("path,labels\n{},dog\n", img.display())).unwrap();
    let o = run_tool(
        bin("retrain")
            .arg("--from")
            .arg(run)
            .arg("--corrections")
            .arg(dir.join("fix.csv"))
            .arg("--runs-dir")
            .arg(runs)
            .arg("--feedback-dir")
            .arg(dir.join("feedback"))
            .args(["--epochs", "1", "--replicate", "1", "--force", "-q"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read_dir(runs).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_dir() && p != run).unwrap()
}

fn head_shapes(run: &Path) -> String {
    python_eval(&format!(
        "from safetensors import safe_open; f=safe_open(r'{}','pt'); print(sorted((k, tuple(f.get_tensor(k).shape)) for k in f.keys() if k.startswith('head.') and k.endswith('weight')))",
        run.join("model.safetensors").display()
    ))
}

/// One dataset for every recorded option (long on purpose: each case is a short train run).
#[test]
fn head_weight_decay_monitor_schedule_and_augmentation_are_recorded_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 80, 64);
    let runs = dir.path().join("runs");
    let o = train(
        &data,
        &runs,
        &[
            "--model",
            "efficientnet_lite2",
            "--epochs",
            "4",
            "--patience",
            "4",
            "--lr",
            "3e-3",
            "--head",
            "64,32",
            "--head-dropout",
            "0.3,0.1",
            "--weight-decay",
            "0,0.01",
            "--monitor",
            "map",
            "--scheduler",
            "cosine",
            "--rotation",
            "20",
            "--width-shift",
            "0.1",
            "--height-shift",
            "0.1",
            "--zoom",
            "0.2",
            "--shear",
            "5",
            "--contrast",
            "0.2",
            "--saturation",
            "0.2",
            "--aug-views",
            "1",
            "--label-smoothing",
            "0.1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let run = only_run(&runs);
    assert!(run.to_string_lossy().ends_with("_efficientnet_lite2"));
    let cfg = read_json(&run.join("config.json"));
    assert_eq!(cfg["options"]["label_smoothing"], serde_json::json!([0.1]));
    assert_eq!(cfg["head"], serde_json::json!({"hidden": [64, 32], "dropout": [0.3, 0.1]}));
    let wd = cfg["weight_decay"].as_f64().unwrap();
    assert!(wd == 0.0 || wd == 0.01, "{wd}");
    assert_eq!(cfg["monitor"], "mAP");
    let o = &cfg["options"];
    assert_eq!((o["rotation"].as_f64(), o["zoom"].as_f64(), o["shear"].as_f64()), (Some(20.0), Some(0.2), Some(5.0)));
    assert_eq!(cfg["options"]["scheduler"], "cosine");
    // Cosine decay: 3e-3 in epoch 1, half of it in epoch 3 (of 4).
    let lr = history_column(&run, "lr");
    assert!((lr[0] - 3e-3).abs() < 1e-9 && (lr[2] - 1.5e-3).abs() < 1e-9, "{lr:?}");
    assert_eq!(head_shapes(&run), "[('head.0.weight', (64, 1280)), ('head.3.weight', (32, 64)), ('head.6.weight', (4, 32))]");
    // evaluate and predict build the recorded head.
    let o = run_tool(bin("evaluate").arg("--data").arg(&data).arg("--run").arg(&run).arg("-q"));
    assert!(o.status.success(), "{}", stderr(&o));
    let img = std::fs::read_dir(dir.path().join("voc/JPEGImages")).unwrap().next().unwrap().unwrap().path();
    let o = run_tool(bin("predict").arg("--run").arg(&run).arg("--format").arg("jsonl").arg(&img));
    assert!(o.status.success(), "{}", stderr(&o));
    let row: serde_json::Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(row["probabilities"].as_object().map(|m| m.len()), Some(4), "{row}");
    // A retrain of it keeps (and records) the head.
    let retrained = retrain_on_one_correction(dir.path(), &run, &runs, &img);
    assert_eq!(read_json(&retrained.join("config.json"))["head"], cfg["head"]);
    assert_eq!(head_shapes(&retrained), head_shapes(&run));

    // A linear head: the output layer alone.
    let linear = dir.path().join("linear");
    assert!(train(&data, &linear, &["--epochs", "2", "--head", "linear"]).status.success());
    let run = only_run(&linear);
    let cfg = read_json(&run.join("config.json"));
    assert_eq!(cfg["head"], serde_json::json!({"hidden": null, "dropout": null}));
    // Every option is recorded as the flags take it: no smoothing, a linear head.
    assert_eq!((&cfg["options"]["label_smoothing"], &cfg["options"]["head"]), (&serde_json::json!([]), &serde_json::json!("linear")));
    assert_eq!(head_shapes(&run), "[('head.0.weight', (4, 1280))]");
    assert!(run_tool(bin("evaluate").arg("--data").arg(&data).arg("--run").arg(&run).arg("-q")).status.success());
}

#[test]
fn multi_scale_features_are_recorded_and_used_by_every_tool() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 80, 64);
    let runs = dir.path().join("runs");
    let o = train(&data, &runs, &["--epochs", "2", "--scales", "64,32", "--head", "16", "--tta"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = only_run(&runs);
    let cfg = read_json(&run.join("config.json"));
    assert_eq!(cfg["options"]["scales"], serde_json::json!([64, 32]));
    // The head reads the features of both sizes: 2 x 1280.
    assert_eq!(head_shapes(&run), "[('head.0.weight', (16, 2560)), ('head.3.weight', (4, 16))]");
    let o = run_tool(bin("evaluate").arg("--data").arg(&data).arg("--run").arg(&run).arg("-q"));
    assert!(o.status.success(), "{}", stderr(&o));
    let img = std::fs::read_dir(dir.path().join("voc/JPEGImages")).unwrap().next().unwrap().unwrap().path();
    let explain = dir.path().join("explain");
    let o = run_tool(bin("predict").arg("--run").arg(&run).args(["--format", "jsonl", "--explain"]).arg(&explain).arg(&img));
    assert!(o.status.success(), "{}", stderr(&o));
    let row: serde_json::Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    let p: Vec<f64> = row["probabilities"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).collect();
    assert!(p.len() == 4 && p.iter().all(|v| (0.0..=1.0).contains(v)), "{row}");
    let explained = std::fs::read_to_string(explain.join("explanations.csv")).unwrap();
    assert!(explained.lines().count() >= 2, "{explained}");
    // A retrain inherits the sizes with the head.
    let retrained = retrain_on_one_correction(dir.path(), &run, &runs, &img);
    assert_eq!(read_json(&retrained.join("config.json"))["inherited"]["scales"], serde_json::json!([64, 32]));
    assert_eq!(head_shapes(&retrained), head_shapes(&run));
    assert!(run_tool(bin("evaluate").arg("--data").arg(&data).arg("--run").arg(&retrained).arg("-q")).status.success());
}

#[test]
fn bad_inputs_fail_cleanly_without_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let o = train(&dir.path().join("nope"), &runs, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("manifest.json"), "{}", stderr(&o));

    let data = prepared(dir.path(), 40, 64);
    // Weights of another architecture.
    let o = train(
        &data,
        &runs,
        &["--model", "mobilenet_v2", "--weights", repo_root().join(".venv/vocml-weights/efficientnet_lite0.safetensors").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("missing keys") && err.contains("another model"), "{err}");
    // mobilenet_v2 without weights says how to get them.
    let o = train(&data, &runs, &["--model", "mobilenet_v2"]);
    assert!(stderr(&o).contains("needs --weights"), "{}", stderr(&o));
    let o = train(&data, &runs, &["--model", "resnet9000"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid value 'resnet9000' for '--model"), "{}", stderr(&o));
    // Images too small for the backbones' strides (libtorch would fail mid-network).
    let tiny_dir = tempfile::tempdir().unwrap();
    let tiny = prepared(tiny_dir.path(), 20, 16);
    let o = train(&tiny, &runs, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("16 px images are too small"), "{}", stderr(&o));
    // Wrong shapes: labels that do not match the images.
    std::fs::copy(data.join("y_val.npy"), data.join("y_train.npy")).unwrap();
    let o = train(&data, &runs, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("y_train.npy: shape"), "{}", stderr(&o));
    assert!(!runs.exists() || std::fs::read_dir(&runs).unwrap().count() == 0, "a failed run left a directory");
}

/// One dataset for every recipe case (long on purpose: each case is a short train run).
#[test]
fn config_file_sets_options_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 40, 64);
    let cfg = dir.path().join("recipe.toml");
    std::fs::write(&cfg, "epochs = 2\nbatch_size = 8\nlr = 0.002\nno_augment = true\npos-weight = true\n").unwrap();
    let runs = dir.path().join("r1");
    assert!(train(&data, &runs, &["--config", cfg.to_str().unwrap(), "--patience", "9"]).status.success());
    let opts = read_json(&only_run(&runs).join("config.json"))["options"].clone();
    assert_eq!(opts["epochs"], 2);
    assert_eq!(opts["batch_size"], 8);
    assert_eq!(opts["lr"], 0.002);
    assert_eq!(opts["no_augment"], true);
    assert_eq!(opts["pos_weight"], true);
    assert_eq!(opts["patience"], 9);
    // A flag on the command line overrides the file's value.
    let runs = dir.path().join("r2");
    assert!(train(&data, &runs, &["--config", cfg.to_str().unwrap(), "--epochs", "1"]).status.success());
    assert_eq!(read_json(&only_run(&runs).join("config.json"))["options"]["epochs"], 1);
    // Unknown keys and bad TOML are clear errors.
    std::fs::write(&cfg, "epochz = 2\n").unwrap();
    let o = train(&data, &dir.path().join("r3"), &["--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown key \"epochz\""), "{}", stderr(&o));
    std::fs::write(&cfg, "epochs = \n").unwrap();
    let o = train(&data, &dir.path().join("r3"), &["--config", cfg.to_str().unwrap()]);
    assert!(stderr(&o).contains("not valid TOML"), "{}", stderr(&o));
    // A recipe's input size must match the data's.
    std::fs::write(&cfg, "image_size = 96\n").unwrap();
    let o = train(&data, &dir.path().join("r3"), &["--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("images are 64 px but the recipe asks for 96 px; prepare the data with voc-prep --size 96"),
        "{}",
        stderr(&o)
    );
    assert!(train(&data, &dir.path().join("r4"), &["--config", cfg.to_str().unwrap(), "--image-size", "64", "--epochs", "1"])
        .status
        .success());
    // Every shipped recipe trains (on this small data: its size and backbone overridden);
    // retrain-*.toml are retrain's (tests/reproduce.rs runs them).
    let mut recipes: Vec<PathBuf> = std::fs::read_dir(repo_root().join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with("retrain-"))
        .collect();
    recipes.sort();
    assert!(recipes.len() >= 6, "{recipes:?}");
    for recipe in recipes {
        let runs = dir.path().join(format!("recipe-{}", recipe.file_stem().unwrap().to_string_lossy()));
        let table: toml::Table = std::fs::read_to_string(&recipe).unwrap().parse().unwrap();
        let mut args = vec!["--config", recipe.to_str().unwrap(), "--image-size", "64", "--epochs", "1", "--fine-tune-epochs", "1"];
        if !table.contains_key("models") {
            args.extend(["--model", "efficientnet_lite0"]);
        }
        // Multi-scale recipes: sizes that fit this data.
        if table.contains_key("scales") {
            args.extend(["--scales", "64,48"]);
        }
        let o = train(&data, &runs, &args);
        assert!(o.status.success(), "{}: {}", recipe.display(), stderr(&o));
        let trained: Vec<PathBuf> =
            std::fs::read_dir(&runs).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("config.json").is_file()).collect();
        let models: Vec<&str> =
            table.get("models").and_then(|m| m.as_array()).map_or(vec![], |m| m.iter().map(|v| v.as_str().unwrap()).collect());
        assert_eq!(trained.len(), models.len().max(1), "{}", recipe.display());
        // A recipe value that is one number or one per model (in the recipe's order).
        let number = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)).unwrap();
        let per_model = |v: &toml::Value| -> Vec<f64> { v.as_array().map_or_else(|| vec![number(v)], |a| a.iter().map(number).collect()) };
        for run in &trained {
            let cfg = read_json(&run.join("config.json"));
            let options = &cfg["options"];
            if table.contains_key("scales") {
                assert_eq!(options["scales"], serde_json::json!([64, 48]), "{}", recipe.display());
            }
            if let Some(ls) = table.get("label_smoothing") {
                let values = per_model(ls);
                let i = models.iter().position(|m| options["model"] == *m).unwrap_or(0);
                let want = values.get(i).copied().unwrap_or(values[0]);
                let got = options["label_smoothing"].as_array().and_then(|a| a.first()).and_then(|v| v.as_f64()).unwrap_or(0.0);
                assert_eq!(got, want, "{}: {}", recipe.display(), run.display());
            }
            if let Some(head) = table.get("head").and_then(|h| h.as_str()) {
                let widths: Vec<i64> = head.split(',').map(|w| w.parse().unwrap()).collect();
                assert_eq!(cfg["head"]["hidden"], serde_json::json!(widths), "{}", recipe.display());
            }
            // Recipes that fine-tune the last blocks run that phase.
            let blocks = table.get("fine_tune_blocks").and_then(|b| b.as_integer()).unwrap_or(0);
            assert_eq!(options["fine_tune_blocks"], blocks, "{}", recipe.display());
            let phases: Vec<String> = history_rows(run).iter().map(|r| r[1].clone()).collect();
            assert_eq!(phases.contains(&"fine-tune".to_string()), blocks > 0, "{}: {phases:?}", recipe.display());
        }
    }
}

#[test]
fn channels_last_trains_the_same_model_is_the_cpu_default_and_bf16_needs_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 60, 64);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let common = ["--epochs", "2", "--patience", "5", "--fine-tune-blocks", "2", "--fine-tune-epochs", "1"];
    assert!(train(&data, &a, &[&common[..], &["--no-channels-last"]].concat()).status.success());
    let o = train(&data, &b, &[&common[..], &["--device", "cpu"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let (ha, hb) = (history_rows(&only_run(&a)), history_rows(&only_run(&b)));
    assert_eq!(ha.len(), 3);
    assert_eq!(ha.len(), hb.len());
    for (ra, rb) in ha.iter().zip(&hb) {
        // Same computation in another memory layout: losses agree up to float rounding.
        for col in [2, 3] {
            let (x, y) = (ra[col].parse::<f64>().unwrap(), rb[col].parse::<f64>().unwrap());
            assert!((x - y).abs() < 1e-3, "epoch {} column {col}: {x} vs {y}", ra[0]);
        }
    }
    let cfg = read_json(&only_run(&b).join("config.json"));
    // Recorded as given: neither switch, so channels-last on the CPU (the default) ...
    assert_eq!((cfg["options"]["channels_last"].as_bool(), cfg["options"]["no_channels_last"].as_bool()), (Some(false), Some(false)));
    // ... or refused.
    assert_eq!(read_json(&only_run(&a).join("config.json"))["options"]["no_channels_last"], true);

    let c = dir.path().join("c");
    let o = train(&data, &c, &["--bf16", "--device", "cpu"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bf16 needs a CUDA device"), "{}", stderr(&o));
    assert!(!c.exists() || std::fs::read_dir(&c).unwrap().next().is_none(), "no run may be left");
}

#[test]
fn vocml_bench_times_the_training_step_of_each_case() {
    let o = run(bin("vocml-bench").args([
        "--model",
        "mobilenet_v2",
        "--mode",
        "frozen,fine-tune",
        "--batch-size",
        "2",
        "--images",
        "4",
        "--image-size",
        "32",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--threads",
        "2",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    // Head only: 1280*128+128 + 128*4+4; fine-tune adds torchvision's 2,223,872 feature parameters.
    let trainable: Vec<i64> = lines.iter().map(|l| l["timing"]["trainable_parameters"].as_i64().unwrap()).collect();
    assert_eq!(trainable, [164_484, 164_484 + 2_223_872]);
    for l in &lines {
        assert_eq!(l["timing"]["steps"], 2);
        assert!(l["timing"]["images_per_s"].as_f64().unwrap() > 0.0);
        assert!(l["timing"]["final_loss"].as_f64().unwrap().is_finite());
    }
    // Bad sizes are clean usage errors, not panics inside libtorch.
    for bad in [&["--image-size=-5"][..], &["--images", "1", "--batch-size", "4"]] {
        let o = run(bin("vocml-bench").args(bad).args(["--device", "cpu"]));
        assert!(matches!(o.status.code(), Some(1) | Some(2)), "{bad:?}: {:?}", o.status);
        assert!(stderr(&o).contains("error"), "{}", stderr(&o));
    }
}

#[test]
fn plateau_scheduler_cuts_the_rate_when_validation_loss_stalls() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 60, 64);
    let runs = dir.path().join("r");
    let o = train(
        &data,
        &runs,
        &[
            "--epochs",
            "10",
            "--patience",
            "10",
            "--lr",
            "0.05",
            "--scheduler",
            "plateau",
            "--plateau-patience",
            "0",
            "--plateau-factor",
            "0.5",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let run = only_run(&runs);
    assert_eq!(read_json(&run.join("config.json"))["options"]["scheduler"], "plateau");
    let rows = history_rows(&run);
    assert_eq!(rows.len(), 10);
    let (mut best, mut cuts) = (f64::INFINITY, 0);
    for pair in rows.windows(2) {
        let (val_loss, lr, next_lr): (f64, f64, f64) =
            (pair[0][3].parse().unwrap(), pair[0][7].parse().unwrap(), pair[1][7].parse().unwrap());
        let expected = if val_loss < best * (1.0 - 1e-4) { lr } else { lr * 0.5 };
        best = best.min(val_loss);
        cuts += (next_lr < lr) as usize;
        assert!((next_lr - expected).abs() < 1e-12, "epoch {}: lr {next_lr}, expected {expected}", pair[1][0]);
    }
    assert!(cuts > 0, "lr 0.05 on 60 images should stall at least once: {rows:?}");
    let o = train(&data, &dir.path().join("bad"), &["--scheduler", "linear"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("[possible values: constant, plateau, cosine]"), "{}", stderr(&o));
}
