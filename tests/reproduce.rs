//! One options schema: a run records its options under the names its tool's flags and
//! recipes use, so `train --config <run>/config.json` (or `retrain --config`) makes the same
//! run again, to the same metrics on the same data and seed.

use crate::util::*;
use std::path::{Path, PathBuf};

/// The newest finished run directory under `runs` other than those in `before`.
fn new_run(runs: &Path, before: &[PathBuf]) -> PathBuf {
    std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            !before.contains(p)
                && p.is_dir()
                && !p.ends_with("best")
                && !p.ends_with("feedback")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .expect("a new run")
}

fn entries(runs: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(runs).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

/// Every number of `a` and `b`'s `metrics` equal to 1e-6, and at least one compared.
fn same_metrics(a: &Path, b: &Path) {
    let (ma, mb) = (read_json(&a.join("metrics.json")), read_json(&b.join("metrics.json")));
    let (ma, mb) = (ma["metrics"].as_object().unwrap(), mb["metrics"].as_object().unwrap());
    let mut compared = 0;
    for (k, va) in ma {
        if let Some(x) = va.as_f64() {
            let y = mb[k].as_f64().unwrap_or(f64::NAN);
            assert!((x - y).abs() <= 1e-6, "{k}: {x} then {y} ({} vs {})", a.display(), b.display());
            compared += 1;
        }
    }
    assert!(compared >= 3, "only {compared} metrics compared");
}

/// Trains again from `run`'s config.json into `runs`; returns the new run.
fn train_again(run: &Path, runs: &Path) -> PathBuf {
    let before = entries(runs);
    let o = run_cmd(bin("train").arg("--config").arg(run.join("config.json")).args(["-q", "--threads", "2"]));
    assert!(o.status.success(), "{}", stderr(&o));
    new_run(runs, &before)
}

fn run_cmd(cmd: &mut std::process::Command) -> std::process::Output {
    run(cmd)
}

#[test]
fn a_train_run_is_made_again_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 80, 64);
    let runs = dir.path().join("runs");
    let first = quick_run(
        &data,
        &runs,
        &[
            "--epochs",
            "4",
            "--head",
            "32",
            "--head-dropout",
            "0.1",
            "--rotation",
            "10",
            "--no-flip",
            "--label-smoothing",
            "0.05",
            "--scheduler",
            "cosine",
        ],
    );
    let options = read_json(&first.join("config.json"))["options"].clone();
    // Recorded by flag name, every key, values as the flags take them.
    assert_eq!(options["head"], "32");
    assert_eq!(options["rotation"], 10.0);
    assert_eq!(options["no_flip"], true);
    assert_eq!(options["no_cache"], false);
    assert_eq!(options["label_smoothing"], serde_json::json!([0.05]));
    assert!(options.get("augment").is_none() && options.get("cache_features").is_none());
    let second = train_again(&first, &runs);
    assert_eq!(read_json(&second.join("config.json"))["options"], options, "the same options recorded");
    same_metrics(&first, &second);
    assert_eq!(std::fs::read_to_string(first.join("history.csv")).unwrap().lines().count(), 5);
}

#[test]
fn a_multihead_run_is_made_again_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let shapes = dir.path().join("shapes");
    assert!(run(bin("voc-prep").args(["shapes", "--images", "90", "--size", "32", "--out"]).arg(&shapes)).status.success());
    let data = dir.path().join("pd");
    let labels = shapes.join("labels.csv");
    let o = run(bin("voc-prep").args(["csv", "--task", "multihead", "-q", "--size", "32", "--file"]).arg(&labels).arg("--out").arg(&data));
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = dir.path().join("runs");
    let first = quick_run(&data, &runs, &["--model", "small_cnn", "--epochs", "3", "--lr", "1e-3"]);
    assert_eq!(read_json(&first.join("config.json"))["task"], "multihead");
    let second = train_again(&first, &runs);
    same_metrics(&first, &second);
}

#[test]
fn a_retrain_is_made_again_from_its_config_and_a_train_config_is_not_a_retrain_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let (_data, runs, parent) = best_run(dir.path(), 80, 64, &["--epochs", "3"]);
    let csv = dir.path().join("fixes.csv");
    let img = dir.path().join("voc/JPEGImages/000001.jpg");
    std::fs::write(&csv, format!("path,labels\n{},person;dog\n", img.display())).unwrap();
    let before = entries(&runs);
    let o = run(bin("retrain")
        .args(["-q", "--threads", "2", "--epochs", "3", "--replicate", "2", "--force", "--runs-dir"])
        .arg(&runs)
        .arg("--corrections")
        .arg(&csv));
    assert!(o.status.success(), "{}", stderr(&o));
    let first = new_run(&runs, &before);
    let record = read_json(&first.join("config.json"));
    // What the retrain was given, and apart from it what it inherited from its parent.
    let recorded = record["options"].clone();
    assert_eq!(record["inherited"]["model"], "efficientnet_lite0", "{record}");
    assert!(record.get("retrain_options").is_none() && recorded.get("model").is_none(), "{record}");
    assert_eq!(recorded["from"].as_str().unwrap(), std::fs::canonicalize(&parent).unwrap().to_str().unwrap(), "the parent, not runs/best");
    assert_eq!((recorded["epochs"].as_u64(), recorded["no_replay"].as_bool()), (Some(3), Some(false)));
    let before = entries(&runs);
    let o = run(bin("retrain").arg("--config").arg(first.join("config.json")).args(["-q", "--threads", "2"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let second = new_run(&runs, &before);
    assert_eq!(read_json(&second.join("config.json"))["parent"], read_json(&first.join("config.json"))["parent"]);
    same_metrics(&first, &second);

    // A shipped retrain recipe leaves --corrections to the command line.
    let before = entries(&runs);
    let o = run(bin("retrain")
        .arg("--config")
        .arg(repo_root().join("configs/retrain-gentle.toml"))
        .args(["-q", "--threads", "2", "--force", "--runs-dir"])
        .arg(&runs)
        .arg("--from")
        .arg(&parent)
        .arg("--corrections")
        .arg(&csv));
    assert!(o.status.success(), "{}", stderr(&o));
    let recorded = read_json(&new_run(&runs, &before).join("config.json"))["options"].clone();
    assert_eq!(gentle_recipe_values(&recorded), (Some(true), Some(1), Some(8), Some(1e-4), Some(0.02)));

    let o = run(bin("retrain").arg("--config").arg(parent.join("config.json")));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("a trained run: its options are train's (train --config)"), "{}", stderr(&o));
}

#[test]
fn a_run_written_before_the_schema_is_trained_again_with_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 60, 64);
    let runs = dir.path().join("runs");
    let first = quick_run(&data, &runs, &["--epochs", "2", "--no-channels-last"]);
    // Rewrite its options the way vocml recorded them before the schema.
    let mut cfg = read_json(&first.join("config.json"));
    let o = cfg["options"].clone();
    cfg["options"] = serde_json::json!({
        "data": o["data"], "model": o["model"], "weights": null, "epochs": o["epochs"], "batch_size": o["batch_size"],
        "lr": o["lr"], "patience": o["patience"], "fine_tune_blocks": 0, "fine_tune_epochs": 5, "fine_tune_lr": 1e-5,
        "augment": {"rotation_degrees": 15.0, "hflip": true, "brightness": 0.2}, "image_size": null,
        "cache_features": true, "aug_views": o["aug_views"], "pos_weight": false, "seed": 42, "runs_dir": o["runs_dir"],
        "scheduler": "constant", "plateau_factor": 0.2, "plateau_patience": 2, "tta": false,
        "speed": {"channels_last": false, "bf16": false}
    });
    std::fs::write(first.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    // It still loads for scoring ...
    let img = dir.path().join("voc/JPEGImages/000001.jpg");
    let o = run(bin("predict").arg("--run").arg(&first).args(["-q", "--format", "jsonl"]).arg(&img));
    assert!(o.status.success(), "{}", stderr(&o));
    // ... and trains again, recorded in the current schema.
    let second = train_again(&first, &runs);
    let options = read_json(&second.join("config.json"))["options"].clone();
    assert_eq!((options["no_cache"].as_bool(), options["no_channels_last"].as_bool()), (Some(false), Some(true)));
    same_metrics(&first, &second);
}

#[test]
fn a_config_json_that_is_not_a_trained_run_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ensemble = write(
        "ensemble.json",
        r#"{"kind": "ensemble", "members": ["a", "b"], "tta": true, "classes": ["x"], "image_size": 64, "resize": "stretch", "created": "now", "tool_version": "0.1.0"}"#,
    );
    let cases = [
        (write("unknown.json", r#"{"tool": "nope"}"#), "unknown.json: not a valid run config: unknown run kind"),
        (write("broken.json", "{ not json"), "broken.json: not a valid run config"),
        (ensemble, "an ensemble records no training options"),
    ];
    for (file, want) in cases {
        let o = run(bin("train").arg("--config").arg(&file).args(["--runs-dir"]).arg(dir.path().join("runs")));
        assert_eq!(o.status.code(), Some(1), "{}", file.display());
        assert!(stderr(&o).contains(want), "{}: {}", file.display(), stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
    }
    assert!(!dir.path().join("runs").exists(), "a refused config left a runs directory");
}
