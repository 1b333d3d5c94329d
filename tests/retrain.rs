//! Integration tests of `retrain`: corrections learned, replay against forgetting, the
//! feedback store, and safe promotion.

use crate::util::*;
use std::path::{Path, PathBuf};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    runs: PathBuf,
    parent: PathBuf,
}

/// Names of the finished runs in `runs` (not hidden, not `best`), sorted.
fn finished_runs(runs: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(runs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "best" && n != "feedback")
        .collect();
    names.sort();
    names
}

/// A synthetic dataset and a parent run pointed to by runs/best.
fn fixture(images: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let data = prepared(&root, images, 96);
    let runs = root.join("runs");
    let parent = quick_run(&data, &runs, &["--epochs", "10"]);
    vocml_core::run::point_best(&runs, &parent).unwrap();
    Fixture { _dir: dir, root, data, runs, parent }
}

fn truth(root: &Path, id: &str) -> Vec<&'static str> {
    let xml = std::fs::read_to_string(root.join(format!("voc/Annotations/{id}.xml"))).unwrap();
    ["person", "chair", "dog", "sofa"].into_iter().filter(|c| xml.contains(&format!("<name>{c}</name>"))).collect()
}

/// Images of the test split the parent gets wrong (up to `n`), with their true labels.
fn wrong_images(f: &Fixture, n: usize) -> Vec<(PathBuf, Vec<&'static str>)> {
    let m = read_json(&f.data.join("manifest.json"));
    let ids: Vec<String> = m["splits"]["test"]["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
    let files: Vec<PathBuf> = ids.iter().map(|id| f.root.join(format!("voc/JPEGImages/{id}.jpg"))).collect();
    let o = run(bin("predict").args(["-q", "--format", "jsonl", "--run", f.parent.to_str().unwrap()]).args(&files));
    let mut out = Vec::new();
    for (line, id) in stdout(&o).lines().zip(&ids) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut got: Vec<&str> = v["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        got.sort();
        let mut want = truth(&f.root, id);
        want.sort();
        if got != want && out.len() < n {
            out.push((f.root.join(format!("voc/JPEGImages/{id}.jpg")), truth(&f.root, id)));
        }
    }
    out
}

fn write_csv(path: &Path, rows: &[(PathBuf, Vec<&str>)]) {
    let mut s = String::from("path,labels\n");
    for (p, l) in rows {
        s += &format!("{},{}\n", p.display(), l.join(";"));
    }
    std::fs::write(path, s).unwrap();
}

fn retrain(f: &Fixture, csv: &Path, extra: &[&str]) -> std::process::Output {
    run(bin("retrain")
        .args(["-q", "--threads", "2", "--runs-dir", f.runs.to_str().unwrap(), "--corrections", csv.to_str().unwrap()])
        .args(extra))
}

#[test]
fn corrected_images_are_predicted_right_and_the_store_accumulates() {
    let f = fixture(200);
    let wrong = wrong_images(&f, 4);
    assert!(wrong.len() >= 2, "the parent should get some test images wrong");
    let (first, second) = wrong.split_at(wrong.len() / 2);
    let csv1 = f.root.join("c1.csv");
    write_csv(&csv1, first);
    let o = retrain(&f, &csv1, &["--force"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("promoted to runs/best"), "{}", stdout(&o));
    let best = f.runs.join("best");
    let summary = read_json(&best.join("retrain.json"));
    assert_eq!(summary["corrected_right_after"].as_u64().unwrap() as usize, first.len(), "{summary}");
    assert_eq!(summary["corrected_right_before"], 0);
    // predict with runs/best now gives the corrected labels.
    for (path, want) in first {
        let o = run(bin("predict").args(["-q", "--format", "jsonl", "--run", best.to_str().unwrap()]).arg(path));
        let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        let mut got: Vec<&str> = v["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        got.sort();
        let mut want = want.clone();
        want.sort();
        assert_eq!(got, want, "{}", path.display());
    }
    let cfg = read_json(&best.join("config.json"));
    assert_eq!(cfg["parent"].as_str().unwrap(), std::fs::canonicalize(&f.parent).unwrap().to_str().unwrap());
    assert_eq!(cfg["corrections_sha256"].as_str().unwrap().len(), 64);
    for file in ["config.json", "history.csv", "metrics.json", "classes.json", "model.safetensors", "thresholds.json"] {
        assert!(best.join(file).is_file(), "{file}");
    }
    assert_eq!(std::fs::read_to_string(best.join("history.csv")).unwrap().lines().count(), 31);
    let th = read_json(&best.join("thresholds.json"));
    assert_eq!((th["rule"].as_str(), th["why"].as_str()), (Some("shrunk"), Some("the parent's rule")));

    // A second retrain learns from both files' corrections.
    let csv2 = f.root.join("c2.csv");
    write_csv(&csv2, second);
    let o = retrain(&f, &csv2, &["--force", "--epochs", "3"]);
    assert!(o.status.success());
    let summary = read_json(&f.runs.join("best/retrain.json"));
    assert_eq!(summary["corrections_used"].as_u64().unwrap() as usize, wrong.len());
    assert_eq!(summary["corrections_new"].as_u64().unwrap() as usize, second.len());
    let store = std::fs::read_to_string(f.runs.join("feedback/corrections.jsonl")).unwrap();
    assert_eq!(store.lines().count(), wrong.len());
}

#[test]
fn replay_protects_validation_and_no_replay_can_degrade_it() {
    let f = fixture(200);
    // Misleading corrections: real objects marked as "none of the classes".
    let m = read_json(&f.data.join("manifest.json"));
    let ids: Vec<String> = m["splits"]["test"]["ids"].as_array().unwrap().iter().take(4).map(|v| v.as_str().unwrap().into()).collect();
    let rows: Vec<(PathBuf, Vec<&str>)> = ids.iter().map(|id| (f.root.join(format!("voc/JPEGImages/{id}.jpg")), vec![])).collect();
    let csv = f.root.join("c.csv");
    write_csv(&csv, &rows);
    let harsh = ["--lr", "3e-3", "--feedback-dir"];
    let o = retrain(&f, &csv, &[&harsh[..], &[f.root.join("fb1").to_str().unwrap(), "--no-replay"]].concat());
    assert!(o.status.success());
    assert!(stdout(&o).contains("NOT promoted"), "{}", stdout(&o));
    let no_replay = newest_retrain(&f.runs);
    let o = retrain(&f, &csv, &[&harsh[..], &[f.root.join("fb2").to_str().unwrap(), "--replay-ratio", "3"]].concat());
    assert!(o.status.success());
    let with_replay = newest_retrain(&f.runs);
    let score = |r: &Path| read_json(&r.join("retrain.json"));
    let (a, b) = (score(&no_replay), score(&with_replay));
    let parent = a["parent_val_macro_f1"].as_f64().unwrap();
    let (fa, fb) = (a["new_val_macro_f1"].as_f64().unwrap(), b["new_val_macro_f1"].as_f64().unwrap());
    assert!(fa < parent - 0.2, "no replay should forget: parent {parent}, new {fa}");
    assert!(fb > fa + 0.2, "replay should protect validation: {fb} vs {fa}");
    // runs/best never moved to a rejected run.
    let best = std::fs::read_link(f.runs.join("best")).unwrap();
    assert_ne!(best, PathBuf::from(no_replay.file_name().unwrap()));
}

fn newest_retrain(runs: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("_retrain"))
        .collect();
    v.sort();
    v.pop().unwrap()
}

#[test]
fn bad_corrections_are_clear_errors() {
    let f = fixture(60);
    let img = f.root.join("voc/JPEGImages/000001.jpg");
    let cases = [
        (format!("path,labels\n{},unicorn\n", img.display()), "unknown class \"unicorn\""),
        (format!("path,labels\n{},dog\n{},person\n", img.display(), img.display()), "listed twice"),
        ("path,labels\nnope.jpg,dog\n".to_string(), "cannot use image"),
        ("file,label\n".to_string(), "header"),
        (format!("path,labels\n{},dog,person\n", img.display()), "3 fields, expected 2"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let csv = f.root.join(format!("bad{i}.csv"));
        std::fs::write(&csv, text).unwrap();
        let o = retrain(&f, &csv, &[]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains(want), "case {i}: {}", stderr(&o));
    }
    let csv = f.root.join("ok.csv");
    std::fs::write(&csv, format!("path,labels\n{},dog\n", img.display())).unwrap();
    for (key, value) in [("replay_ratio", "-1"), ("replay_ratio", "NaN"), ("tolerance", "-0.5"), ("lr", "0")] {
        let flag = format!("--{}", key.replace('_', "-"));
        let o = retrain(&f, &csv, &[&format!("{flag}={value}")]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: a usage error");
        assert!(stderr(&o).contains(&format!("{key} {value}")), "{flag} {value}: {}", stderr(&o));
    }
    assert!(!f.runs.join("feedback/corrections.jsonl").exists(), "rejected corrections reached the store");
}

#[test]
fn killed_retrain_and_concurrent_predict_are_safe() {
    let f = fixture(120);
    let img = f.root.join("voc/JPEGImages/000001.jpg");
    let csv = f.root.join("c.csv");
    std::fs::write(&csv, format!("path,labels\n{},dog\n", img.display())).unwrap();

    // SIGKILL while the new run is being staged (its hidden directory exists): runs/best must
    // still point at the run it pointed at, and no half-written run may be visible.
    let best = f.runs.join("best");
    let mut killed_while_staging = false;
    for _ in 0..10 {
        let before = std::fs::read_link(&best).unwrap();
        let finished_before = finished_runs(&f.runs);
        let mut child = bin("retrain")
            .args(["-q", "--force", "--epochs", "1", "--replicate", "2", "--runs-dir", f.runs.to_str().unwrap(), "--corrections"])
            .arg(&csv)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let staging = wait_for(std::time::Duration::from_secs(60), || {
            let staged = std::fs::read_dir(&f.runs).unwrap().flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with('.') && n.contains("_retrain.tmp-")
            });
            (staged || child.try_wait().unwrap().is_some()).then_some(staged)
        });
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        if staging == Some(true) && status.code().is_none() {
            killed_while_staging = true;
            assert_eq!(std::fs::read_link(&best).unwrap(), before, "runs/best moved by a killed retrain");
            assert_eq!(finished_runs(&f.runs), finished_before, "a killed retrain left a visible run");
            break;
        }
    }
    assert!(killed_while_staging, "never caught a retrain while it staged its run");
    let o = run(bin("predict").args(["-q", "--run", best.to_str().unwrap()]).arg(&img));
    assert!(o.status.success());

    // predict keeps working while retrains promote new runs.
    let runs = f.runs.clone();
    let img2 = img.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut n = 0;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            let o = run(bin("predict").args(["-q", "--run", runs.join("best").to_str().unwrap()]).arg(&img2));
            assert!(o.status.success(), "predict failed during promotion: {}", stderr(&o));
            n += 1;
        }
        n
    });
    for _ in 0..3 {
        assert!(retrain(&f, &csv, &["--force", "--epochs", "2", "--replicate", "2"]).status.success());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.join().unwrap() >= 1);
}

#[test]
fn the_feedback_store_joins_a_prepared_training_split_for_the_next_train() {
    let f = fixture(80);
    let m = read_json(&f.data.join("manifest.json"));
    let test_ids: Vec<String> = m["splits"]["test"]["ids"].as_array().unwrap().iter().take(3).map(|v| v.as_str().unwrap().into()).collect();
    let rows: Vec<(PathBuf, Vec<&str>)> =
        test_ids.iter().map(|id| (f.root.join(format!("voc/JPEGImages/{id}.jpg")), truth(&f.root, id))).collect();
    let csv = f.root.join("c.csv");
    write_csv(&csv, &rows);
    assert!(retrain(&f, &csv, &["--epochs", "1"]).status.success());
    let store = f.runs.join("feedback");

    let feedback = |base: &Path, out: &Path| {
        run(bin("voc-prep").args(["feedback", "-q", "--base"]).arg(base).arg("--feedback").arg(&store).arg("--out").arg(out))
    };
    let fb1 = f.root.join("fb1");
    let o = feedback(&f.data, &fb1);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("added 3 corrections"), "{}", stdout(&o));
    let base_train = m["splits"]["train"]["count"].as_u64().unwrap() as usize;
    let m1 = read_json(&fb1.join("manifest.json"));
    assert_eq!(m1["splits"]["train"]["count"].as_u64().unwrap() as usize, base_train + 3);
    assert_eq!((m1["feedback"]["added"].as_u64(), m1["feedback"]["replaced"].as_u64()), (Some(3), Some(0)));
    assert_eq!(m1["splits"]["val"], m["splits"]["val"]);
    assert_eq!(m1["splits"]["test"], m["splits"]["test"]);
    for name in ["X_val.npy", "y_val.npy", "X_test.npy", "y_test.npy"] {
        assert_eq!(std::fs::read(f.data.join(name)).unwrap(), std::fs::read(fb1.join(name)).unwrap(), "{name}");
    }
    let open = |dir: &Path, name: &str| vocml_core::io::npy::NpyArray::open(&dir.join(name)).unwrap();
    let (bx, nx) = (open(&f.data, "X_train.npy"), open(&fb1, "X_train.npy"));
    let first: Vec<usize> = (0..base_train).collect();
    assert_eq!(bx.gather_rows(&first).unwrap(), nx.gather_rows(&first).unwrap(), "the base's rows come first, unchanged");
    let ids: Vec<&str> = m1["splits"]["train"]["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(ids[base_train..].iter().all(|id| id.starts_with("feedback:")), "{ids:?}");
    let y = open(&fb1, "y_train.npy").to_f32_vec().unwrap();
    let classes = ["person", "chair", "dog", "sofa"];
    for (k, (_, want)) in rows.iter().enumerate() {
        let row = &y[(base_train + k) * 4..(base_train + k + 1) * 4];
        let got: Vec<&str> = classes.iter().zip(row).filter(|(_, &v)| v == 1.0).map(|(c, _)| *c).collect();
        assert_eq!(&got, want, "row {k}");
    }
    let o = run(bin("train").arg("--data").arg(&fb1).arg("--runs-dir").arg(f.root.join("runs-fb")).args([
        "-q",
        "--threads",
        "2",
        "--epochs",
        "1",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));

    // A later correction of the same image replaces its row when the store joins fb1 again.
    write_csv(&csv, &[(rows[0].0.clone(), vec![])]);
    assert!(retrain(&f, &csv, &["--epochs", "1"]).status.success());
    let fb2 = f.root.join("fb2");
    let o = feedback(&fb1, &fb2);
    assert!(o.status.success(), "{}", stderr(&o));
    let m2 = read_json(&fb2.join("manifest.json"));
    assert_eq!(m2["splits"]["train"]["count"].as_u64().unwrap() as usize, base_train + 3);
    assert_eq!((m2["feedback"]["added"].as_u64(), m2["feedback"]["replaced"].as_u64()), (Some(3), Some(3)));
    let y2 = open(&fb2, "y_train.npy").to_f32_vec().unwrap();
    assert_eq!(&y2[(base_train + 2) * 4..(base_train + 3) * 4], &[0.0; 4], "the relabelled image is last, with no class");

    // Bad input: one line, nothing written.
    let empty = f.root.join("empty-store");
    std::fs::create_dir(&empty).unwrap();
    let bad = f.root.join("bad");
    let foreign = f.root.join("foreign-store");
    std::fs::create_dir(&foreign).unwrap();
    let line = r#"{"source":"cat.jpg","sha256":"00","labels":["cat"],"added":"2026-12-03T00:00:00+00:00"}"#;
    std::fs::write(foreign.join("corrections.jsonl"), format!("{line}\n")).unwrap();
    let damaged = f.root.join("damaged-store");
    std::fs::create_dir(&damaged).unwrap();
    std::fs::write(damaged.join("corrections.jsonl"), format!("{{not json\n{line}\n")).unwrap();
    let with_store =
        |dir: &Path| run(bin("voc-prep").args(["feedback", "--base"]).arg(&f.data).arg("--feedback").arg(dir).arg("--out").arg(&bad));
    for (o, want) in [
        (with_store(&foreign), "names \"cat\", not a class of"),
        (with_store(&damaged), "corrections.jsonl:1: damaged record"),
        (
            run(bin("voc-prep").args(["feedback", "--base"]).arg(&f.data).arg("--feedback").arg(&empty).arg("--out").arg(&bad)),
            "holds no corrections",
        ),
        (
            run(bin("voc-prep").args(["feedback", "--base"]).arg(f.root.join("voc")).arg("--feedback").arg(&store).arg("--out").arg(&bad)),
            "manifest.json",
        ),
        (feedback(&f.data, &f.data), "would delete the input"),
    ] {
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
    assert!(!bad.exists());
    assert!(f.data.join("X_train.npy").is_file());
}

#[test]
fn the_gate_judges_on_the_test_split_without_the_corrections_and_names_a_next_step_that_runs() {
    let f = fixture(80);
    let m = read_json(&f.data.join("manifest.json"));
    let tests = m["splits"]["test"]["count"].as_u64().unwrap();
    let ids: Vec<String> = m["splits"]["test"]["ids"].as_array().unwrap().iter().take(2).map(|v| v.as_str().unwrap().into()).collect();
    let rows: Vec<(PathBuf, Vec<&str>)> =
        ids.iter().map(|id| (f.root.join(format!("voc/JPEGImages/{id}.jpg")), truth(&f.root, id))).collect();
    let csv = f.root.join("c.csv");
    write_csv(&csv, &rows);
    let tta_parent = quick_run(&f.data, &f.runs, &["--epochs", "5", "--tta"]);
    let o = retrain(&f, &csv, &["--epochs", "2", "--from", tta_parent.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let outcome = read_json(&newest_retrain(&f.runs).join("retrain.json"));
    let gate = &outcome["gate"];
    // The corrected test photos are left out; the rest are scored with their mirrors (TTA).
    assert_eq!(
        (gate["split"].as_str(), gate["images"].as_u64(), gate["excluded"].as_u64()),
        (Some("test"), Some(tests - 2), Some(2)),
        "{outcome}"
    );
    let reason = outcome["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("on {} test images (with flip TTA; 2 that are corrections left out)", tests - 2)), "{reason}");
    let change = gate["after"].as_f64().unwrap() - gate["before"].as_f64().unwrap();
    assert_eq!(outcome["promoted"].as_bool(), Some(change >= -0.02), "{outcome}");
    assert!(gate["low"].as_f64().unwrap() <= change && change <= gate["high"].as_f64().unwrap(), "{gate}");
    assert_eq!(outcome["validation"]["split"], "val");
    assert!(stdout(&o).contains("next: "), "{}", stdout(&o));

    // Two corrections are too few for a small update: the next step folds them into the data and
    // trains the parent's recipe again, and its commands run as given.
    let next = outcome["next_step"].as_str().unwrap();
    assert!(next.starts_with("with 2 corrections a small update gains little"), "{next}");
    let commands = next.split_once("train again: ").unwrap().1;
    for command in commands.split(" && ") {
        let words: Vec<&str> = command.split_whitespace().collect();
        let quiet: &[&str] = if words[0] == "train" { &["-q", "--threads", "2"] } else { &["-q"] };
        let o = run(bin(words[0]).args(&words[1..]).args(quiet));
        assert!(o.status.success(), "{command}: {}", stderr(&o));
    }
    let fed = PathBuf::from(format!("{}-feedback", f.data.display()));
    let grown = read_json(&fed.join("manifest.json"))["splits"]["train"]["count"].as_u64().unwrap();
    assert_eq!(grown, m["splits"]["train"]["count"].as_u64().unwrap() + 2);

    // Data without a test split: the gate falls back to validation and says what that means.
    let no_test = f.root.join("no-test");
    let o = run(bin("voc-prep").arg("--voc-root").arg(f.root.join("voc")).arg("--out").arg(&no_test).args([
        "-q",
        "--size",
        "96",
        "--split",
        "0.7,0.3,0",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = retrain(
        &f,
        &csv,
        &["--epochs", "1", "--data", no_test.to_str().unwrap(), "--feedback-dir", f.root.join("fb-no-test").to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let outcome = read_json(&newest_retrain(&f.runs).join("retrain.json"));
    assert_eq!(outcome["gate"]["split"], "val", "{outcome}");
    assert!(
        outcome["reason"].as_str().unwrap().contains("validation images (no test split: the parent was early-stopped on these"),
        "{outcome}"
    );
}
