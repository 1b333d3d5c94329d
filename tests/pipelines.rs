//! examples/dvc run by a real DVC (`.venv/dvc`, `make test-tools`) in a temporary git
//! repository: `dvc repro` runs voc-prep -> train -> evaluate -> predict; a second repro runs
//! nothing; one key changed in the recipe (the params file) runs train and what follows only;
//! `dvc metrics show` prints the evaluation's mAP and macro-F1; `dvc params diff` the key.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The stages `dvc repro` ran, from its "Running stage 'NAME'" lines.
fn stages_run(out: &str) -> Vec<String> {
    out.lines().filter_map(|l| l.strip_prefix("Running stage '")?.split('\'').next().map(String::from)).collect()
}

struct Repo {
    dir: PathBuf,
    path: String,
}

impl Repo {
    fn cmd(&self, program: &str, args: &[&str]) -> String {
        let mut c = Command::new(program);
        c.args(args)
            .current_dir(&self.dir)
            .env("PATH", &self.path)
            .env("DVC_NO_ANALYTICS", "1")
            .env("DVC_SITE_CACHE_DIR", self.dir.join(".dvc-site-cache"))
            .env_remove("LD_LIBRARY_PATH");
        let o = c.output().unwrap();
        assert!(o.status.success(), "{program} {args:?}: {}\n{}", stdout(&o), stderr(&o));
        stdout(&o) + &stderr(&o)
    }

    fn dvc(&self, args: &[&str]) -> String {
        self.cmd(repo_root().join(".venv/dvc/bin/dvc").to_str().unwrap(), args)
    }

    fn commit(&self, message: &str) {
        self.cmd("git", &["add", "-A"]);
        self.cmd("git", &["commit", "-q", "-m", message]);
    }
}

fn copy_example(to: &Path) {
    for f in ["dvc.yaml", "recipe.toml", ".gitignore", "Makefile"] {
        std::fs::copy(repo_root().join("examples/dvc").join(f), to.join(f)).unwrap();
    }
}

#[test]
fn the_dvc_example_reruns_only_what_a_recipe_change_touches() {
    let dvc = repo_root().join(".venv/dvc/bin/dvc");
    assert!(dvc.exists(), "{} missing: `make test` installs it (scripts/test_tools.sh)", dvc.display());
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_train")).parent().unwrap().to_path_buf();
    let repo = Repo { dir: dir.path().to_path_buf(), path: format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default()) };
    copy_example(&repo.dir);
    repo.cmd("git", &["init", "-q"]);
    repo.cmd("git", &["config", "user.email", "test@vocml.invalid"]);
    repo.cmd("git", &["config", "user.name", "vocml test"]);
    // The output this test reads (stage lines, `params diff --md`, `metrics show --json`) is
    // DVC 3.67.1's, the version scripts/test_tools.sh installs.
    assert_eq!(repo.dvc(&["--version"]).trim(), "3.67.1", "another DVC in .venv/dvc: `make test-tools` pins 3.67.1");
    repo.dvc(&["init", "-q"]);
    repo.dvc(&["config", "core.analytics", "false"]);
    repo.commit("the example pipeline");

    let first = repo.dvc(&["repro"]);
    assert_eq!(stages_run(&first), ["photos", "prepare", "train", "evaluate", "predict"], "{first}");
    let predictions = std::fs::read_to_string(repo.dir.join("predictions.csv")).unwrap();
    assert_eq!(predictions.lines().count(), 121, "one row per photo and a header");
    assert!(repo.dir.join("model/model.safetensors").is_file() && repo.dir.join("evaluation/pr/person.csv").is_file());
    repo.commit("first repro");

    let second = repo.dvc(&["repro"]);
    assert!(stages_run(&second).is_empty(), "a second repro ran stages: {second}");

    let recipe = std::fs::read_to_string(repo.dir.join("recipe.toml")).unwrap();
    assert!(recipe.contains("\nepochs = 15\n"));
    std::fs::write(repo.dir.join("recipe.toml"), recipe.replace("\nepochs = 15\n", "\nepochs = 12\n")).unwrap();
    let diff = repo.dvc(&["params", "diff", "--md"]);
    let row = diff.lines().find(|l| l.contains("epochs")).unwrap_or_else(|| panic!("no epochs row: {diff}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cells, ["recipe.toml", "epochs", "15", "12"], "{diff}");
    assert_eq!(diff.lines().filter(|l| l.contains("recipe.toml")).count(), 1, "only the changed key: {diff}");

    let third = repo.dvc(&["repro"]);
    assert_eq!(stages_run(&third), ["train", "evaluate", "predict"], "{third}");
    let config = read_json(&repo.dir.join("model/config.json"));
    assert_eq!(config["options"]["epochs"], 12, "the retrained model follows the recipe");

    let file = read_json(&repo.dir.join("evaluation/metrics.json"));
    let shown: serde_json::Value = serde_json::from_str(&repo.dvc(&["metrics", "show", "--json"])).unwrap();
    let metrics = &shown[""]["data"]["evaluation/metrics.json"]["data"];
    for key in ["mAP", "macro_f1"] {
        let v = file[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} {v}");
        assert_eq!(metrics[key].as_f64(), Some(v), "dvc metrics show --json: {shown}");
    }
    let table = repo.dvc(&["metrics", "show"]);
    assert!(table.contains("mAP") && table.contains("macro_f1"), "{table}");
    let plots = repo.dvc(&["plots", "show", "-o", "plots"]);
    let html = std::fs::read_to_string(repo.dir.join("plots/index.html")).unwrap_or_else(|e| panic!("{e}: {plots}"));
    assert!(html.contains("val_macro_f1") && html.contains("precision"), "the training curve and the PR curves");
}

/// The example's Makefile does the same with file targets: a second `make` does nothing.
#[test]
fn the_example_makefile_builds_predictions_and_then_has_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_train")).parent().unwrap().to_path_buf();
    let make = |args: &[&str]| {
        let o = Command::new("make")
            .args(args)
            .arg(format!("BIN={}", bin_dir.display()))
            .current_dir(dir.path())
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("MAKEFLAGS")
            .output()
            .unwrap();
        assert!(o.status.success(), "make: {}{}", stdout(&o), stderr(&o));
        stdout(&o)
    };
    let first = make(&[]);
    assert!(first.contains("/train ") && first.contains("/predict "), "{first}");
    assert_eq!(std::fs::read_to_string(dir.path().join("predictions.csv")).unwrap().lines().count(), 121);
    let second = make(&[]);
    assert!(second.contains("is up to date"), "{second}");
}

/// The fixed outputs one by one: `train --run-dir` replaces a run there and refuses anything
/// else; `evaluate --out` writes the pipeline files and leaves the run and runs/best alone;
/// `predict --thresholds-file` decides with them; `retrain --run-dir` writes its run there
/// without touching runs/best.
#[test]
fn fixed_outputs_are_written_exactly_where_named_and_nothing_else_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = prepared(root, 60, 64);
    let model = root.join("model");
    let train = |extra: &[&str]| {
        run(bin("train")
            .arg("--data")
            .arg(&data)
            .arg("--run-dir")
            .arg(&model)
            .args(["-q", "--epochs", "2", "--runs-dir"])
            .arg(root.join("runs"))
            .args(extra))
    };
    let o = train(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first = std::fs::read(model.join("model.safetensors")).unwrap();
    let o = train(&["--seed", "7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(std::fs::read(model.join("model.safetensors")).unwrap(), first, "the second run replaced the first");
    assert!(!root.join("runs").exists(), "nothing written to the runs directory");
    let leftovers: Vec<_> =
        std::fs::read_dir(root).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let mine = root.join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep").unwrap();
    let o = run(bin("train").arg("--data").arg(&data).arg("--run-dir").arg(&mine).arg("-q"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not a run directory") && mine.join("notes.txt").exists(), "{}", stderr(&o));
    let o = run(bin("train").arg("--data").arg(&data).arg("--run-dir").arg(&mine).args(["--models", "efficientnet_lite0,small_cnn"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let eval = root.join("evaluation");
    let o = run(bin("evaluate").arg("--run").arg(&model).arg("--data").arg(&data).arg("--out").arg(&eval).arg("-q"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!model.join("evaluation.json").exists() && !model.join("thresholds.json").exists(), "the run is left alone");
    assert!(!root.join("best").exists());
    let metrics = read_json(&eval.join("metrics.json"));
    let full = read_json(&eval.join("evaluation.json"));
    assert_eq!(metrics["mAP"], full["mAP"]);
    let rule = full["threshold_rule"].as_str().unwrap().to_string();
    assert_eq!(metrics["macro_f1"], full[rule.as_str()]["macro_f1"], "macro-F1 at the stored rule ({rule})");
    for class in ["person", "chair", "dog", "sofa"] {
        let curve = std::fs::read_to_string(eval.join(format!("pr/{class}.csv"))).unwrap();
        assert!(curve.starts_with("recall,precision\n") && curve.lines().count() > 2, "{curve}");
        assert!(metrics["per_class"][class]["ap"].is_number());
    }
    // A second evaluation replaces the first; one inside the run, or over it, is refused.
    std::fs::write(eval.join("pr/stale.csv"), "recall,precision\n").unwrap();
    let o = run(bin("evaluate").arg("--run").arg(&model).arg("--data").arg(&data).arg("--out").arg(&eval).arg("-q"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!eval.join("pr/stale.csv").exists() && eval.join("pr/dog.csv").exists(), "the directory was replaced whole");
    let o = run(bin("evaluate").arg("--run").arg(&model).arg("--data").arg(&data).arg("--out").arg(model.join("eval")));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is inside --run") && !model.join("eval").exists(), "{}", stderr(&o));
    let o = run(bin("evaluate").arg("--runs-dir").arg(root).arg("--data").arg(&data).arg("--out").arg(&eval));
    assert_eq!(o.status.code(), Some(2), "--out with --runs-dir: {}", stderr(&o));
    let o = run(bin("evaluate").arg("--run").arg(&model).arg("--data").arg(&data).arg("--out").arg(&model));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not an evaluation directory") && model.join("model.safetensors").exists(), "{}", stderr(&o));

    // predict decides with the evaluation's thresholds: extreme ones show it.
    let mut t = read_json(&eval.join("thresholds.json"));
    t["thresholds"] = serde_json::json!([0.0, 0.0, 0.0, 0.0]);
    let zero = root.join("zero.json");
    std::fs::write(&zero, t.to_string()).unwrap();
    let photos = root.join("voc/JPEGImages");
    let o = run(bin("predict").arg("--run").arg(&model).arg("--thresholds-file").arg(&zero).arg("-q").arg(&photos));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).lines().skip(1).all(|l| l.split(',').nth(1) == Some("person;chair;dog;sofa")), "{}", stdout(&o));
    t["classes"] = serde_json::json!(["a", "b", "c", "d"]);
    std::fs::write(&zero, t.to_string()).unwrap();
    let o = run(bin("predict").arg("--run").arg(&model).arg("--thresholds-file").arg(&zero).arg("-q").arg(&photos));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--thresholds-file") && stderr(&o).contains("classes"), "{}", stderr(&o));

    // A link (runs/best) or the run it starts from are no --run-dir.
    let link = root.join("best");
    std::os::unix::fs::symlink(&model, &link).unwrap();
    let o = run(bin("train").arg("--data").arg(&data).arg("--run-dir").arg(&link).arg("-q"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a link") && link.is_symlink(), "{}", stderr(&o));
    let first_photo = std::fs::read_dir(&photos).unwrap().flatten().map(|e| e.path()).min().unwrap();
    std::fs::write(root.join("fix.csv"), format!("path,labels\n{},dog\n", first_photo.display())).unwrap();
    let o = run(bin("retrain").arg("--from").arg(&model).arg("--corrections").arg(root.join("fix.csv")).arg("--run-dir").arg(&model));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("would delete the input") && model.join("model.safetensors").exists(), "{}", stderr(&o));
    let updated = root.join("updated");
    let o = run(bin("retrain")
        .arg("--from")
        .arg(&model)
        .arg("--corrections")
        .arg(root.join("fix.csv"))
        .arg("--data")
        .arg(&data)
        .arg("--runs-dir")
        .arg(root.join("runs"))
        .arg("--run-dir")
        .arg(&updated)
        .args(["--epochs", "1", "--replicate", "1", "-q"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let record = read_json(&updated.join("retrain.json"));
    assert!(record["promoted"].is_boolean(), "{record}");
    assert_eq!(record["run_dir"].as_str().map(PathBuf::from), Some(updated.clone()));
    assert!(!root.join("runs/best").exists(), "runs/best untouched");
}
