//! Integration tests of `evaluate` and `predict` on the synthetic dataset.

use crate::util::*;
use std::path::{Path, PathBuf};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    runs: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let data = prepared(&root, 140, 96);
    let runs = root.join("runs");
    Fixture { _dir: dir, root, data, runs }
}

fn evaluate(args: &[&str]) -> std::process::Output {
    run(bin("evaluate").args(["--batch-size", "32"]).args(args))
}

#[test]
fn evaluate_writes_metrics_and_thresholds_and_compare_selects_best() {
    let f = fixture();
    let good = quick_run(&f.data, &f.runs, &[]);
    let weak = quick_run(&f.data, &f.runs, &["--epochs", "1", "--lr", "1e-5"]);
    let o = evaluate(&["-q", "--data", f.data.to_str().unwrap(), "--run", good.to_str().unwrap()]);
    assert!(o.status.success());
    let e = read_json(&good.join("evaluation.json"));
    for key in ["macro_f1", "micro_f1", "subset_accuracy", "label_accuracy", "hamming_loss", "mAP", "per_class"] {
        assert!(!e[key].is_null(), "{key} missing");
    }
    let lacc = e["label_accuracy"].as_f64().unwrap();
    assert!((lacc + e["hamming_loss"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert_eq!(e["per_class"].as_array().unwrap().len(), 4);
    assert!(e["mAP"].as_f64().unwrap() > 0.7, "{}", e["mAP"]);
    assert_eq!(e["split"], "test");
    let th = read_json(&good.join("thresholds.json"));
    assert_eq!(th["tuned_on"], "val");
    assert_eq!(th["thresholds"].as_array().unwrap().len(), 4);
    assert!(!f.runs.join("best").exists(), "a single --run must not move runs/best");
    // The default rule: the tuned thresholds shrunk toward 0.5, stored with why.
    assert_eq!((th["rule"].as_str(), th["why"].as_str()), (Some("shrunk"), Some("the run's recipe (thresholds)")));
    assert_eq!(e["threshold_rule"], "shrunk");
    let at = |set: &str| -> Vec<f64> {
        let rows = if set.is_empty() { &e["per_class"] } else { &e[set]["per_class"] };
        rows.as_array().unwrap().iter().map(|c| c["threshold"].as_f64().unwrap()).collect()
    };
    let stored: Vec<f64> = th["thresholds"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(stored, at("shrunk"));
    for ((s, t), h) in at("shrunk").iter().zip(at("tuned")).zip(at("")) {
        assert!((s - 0.5).abs() <= (t - 0.5).abs() + 1e-6 && (s - 0.5) * (t - 0.5) >= 0.0, "shrunk {s} is not between 0.5 and tuned {t}");
        assert_eq!(h, 0.5);
    }
    // --thresholds overrides the recipe: half stores 0.5 for every class, tuned the tuned ones.
    for (rule, expect) in [("half", at("")), ("tuned", at("tuned"))] {
        let o = evaluate(&["-q", "--data", f.data.to_str().unwrap(), "--run", good.to_str().unwrap(), "--thresholds", rule]);
        assert!(o.status.success(), "{}", stderr(&o));
        let th = read_json(&good.join("thresholds.json"));
        let stored: Vec<f64> = th["thresholds"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!((th["rule"].as_str(), th["why"].as_str(), stored), (Some(rule), Some("--thresholds"), expect));
    }
    // A recipe's rule is what evaluate follows without the flag.
    let half = quick_run(&f.data, &f.runs, &["--epochs", "1", "--thresholds", "half"]);
    let o = evaluate(&["-q", "--data", f.data.to_str().unwrap(), "--run", half.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_json(&half.join("thresholds.json"))["rule"], "half");
    std::fs::remove_dir_all(&half).unwrap();

    let o = evaluate(&["-q", "--data", f.data.to_str().unwrap(), "--runs", f.runs.to_str().unwrap()]);
    assert!(o.status.success());
    let best = std::fs::read_link(f.runs.join("best")).unwrap();
    assert_eq!(best, PathBuf::from(good.file_name().unwrap()), "weak run {} chosen", weak.display());
    let csv = std::fs::read_to_string(f.runs.join("comparison.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.starts_with("run,model,tta,macro_f1"));
    assert!(std::fs::read_to_string(f.runs.join("comparison.md")).unwrap().contains("| efficientnet_lite0 |"));
}

#[test]
fn evaluate_refuses_data_with_other_classes_or_size() {
    let f = fixture();
    let r = quick_run(&f.data, &f.runs, &["--epochs", "1"]);
    let voc = f.root.join("voc");
    let other = f.root.join("other");
    assert!(run(bin("voc-prep").arg("--voc-root").arg(&voc).arg("--out").arg(&other).args([
        "-q",
        "--size",
        "96",
        "--classes",
        "dog,person"
    ]))
    .status
    .success());
    let o = evaluate(&["--data", other.to_str().unwrap(), "--run", r.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("do not match the run's classes"), "{}", stderr(&o));
    let big = f.root.join("big");
    assert!(run(bin("voc-prep").arg("--voc-root").arg(&voc).arg("--out").arg(&big).args(["-q", "--size", "64"])).status.success());
    let o = evaluate(&["--data", big.to_str().unwrap(), "--run", r.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("trained at 96 px"), "{}", stderr(&o));
}

fn write_png(path: &Path, img: image::DynamicImage) {
    img.save_with_format(path, image::ImageFormat::Png).unwrap();
}

#[test]
fn predict_scores_folders_with_odd_files_in_both_formats_and_shards() {
    let f = fixture();
    let r = quick_run(&f.data, &f.runs, &[]);
    let imgs = f.root.join("imgs");
    std::fs::create_dir_all(imgs.join("nested/deeper")).unwrap();
    let voc_jpg = |id: &str| f.root.join(format!("voc/JPEGImages/{id}.jpg"));
    std::fs::copy(voc_jpg("000001"), imgs.join("a.jpg")).unwrap();
    std::fs::copy(voc_jpg("000002"), imgs.join("nested/b.JPG")).unwrap();
    std::fs::copy(voc_jpg("000003"), imgs.join("nested/deeper/c.jpeg")).unwrap();
    let rgb = image::open(voc_jpg("000004")).unwrap();
    write_png(&imgs.join("alpha.png"), image::DynamicImage::ImageRgba8(rgb.to_rgba8()));
    write_png(&imgs.join("gray.png"), image::DynamicImage::ImageLuma8(rgb.to_luma8()));
    write_png(&imgs.join("deep16.png"), image::DynamicImage::ImageRgb16(rgb.to_rgb16()));
    let full = std::fs::read(voc_jpg("000005")).unwrap();
    std::fs::write(imgs.join("corrupt.jpg"), &full[..full.len() / 3]).unwrap();
    std::fs::write(imgs.join("text.jpg"), "not an image").unwrap();
    std::fs::write(imgs.join("notes.txt"), "ignored by extension").unwrap();

    let out = f.root.join("pred.csv");
    let o = run(bin("predict").args(["--run", r.to_str().unwrap(), "--top-k", "2", "--output", out.to_str().unwrap()]).arg(&imgs));
    assert!(o.status.success(), "one good image is enough for exit 0");
    assert!(stderr(&o).contains("6 scored, 2 failed, 1 non-image files ignored"), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], vec!["path", "labels", "p_person", "p_chair", "p_dog", "p_sofa", "top", "error"]);
    assert_eq!(rows.len(), 9);
    for row in &rows[1..] {
        assert_eq!(row.len(), 8, "{row:?}");
        let failed = row[0].ends_with("corrupt.jpg") || row[0].ends_with("text.jpg");
        assert_eq!(row[7].is_empty(), !failed, "{row:?}");
        if !failed {
            for p in &row[2..6] {
                let v: f64 = p.parse().unwrap();
                assert!((0.0..=1.0).contains(&v));
            }
        }
    }
    assert!(rows.iter().any(|r| r[0].ends_with("nested/deeper/c.jpeg")));
    let stray: Vec<_> =
        std::fs::read_dir(&f.root).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().contains(".tmp-")).collect();
    assert!(stray.is_empty(), "{stray:?}");

    // JSON lines parse; every class has a probability.
    let o = run(bin("predict").args(["-q", "--format", "jsonl", "--run", r.to_str().unwrap()]).arg(&imgs));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 8);
    let ok: Vec<_> = lines.iter().filter(|l| l["error"].is_null()).collect();
    assert_eq!(ok.len(), 6);
    assert!(ok.iter().all(|l| l["probabilities"].as_object().unwrap().len() == 4));
    assert_eq!(ok[0]["probabilities"].as_object().unwrap().keys().next().unwrap(), "person");

    // Shards cover the inputs exactly once.
    let mut seen: Vec<String> = Vec::new();
    for k in 1..=3 {
        let o = run(bin("predict").args(["-q", "--shard", &format!("{k}/3"), "--run", r.to_str().unwrap()]).arg(&imgs));
        seen.extend(stdout(&o).lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()));
    }
    seen.sort();
    let mut all: Vec<String> = rows[1..].iter().map(|r| r[0].to_string()).collect();
    all.sort();
    assert_eq!(seen, all);

    // --strict fails on any error; nothing scorable fails.
    let o = run(bin("predict").args(["-q", "--strict", "--run", r.to_str().unwrap()]).arg(&imgs));
    assert_eq!(o.status.code(), Some(1));
    let o = run(bin("predict").args(["-q", "--run", r.to_str().unwrap()]).arg(imgs.join("text.jpg")));
    assert_eq!(o.status.code(), Some(1));
    let o = run(bin("predict").args(["-q", "--run", f.root.join("nope").to_str().unwrap()]).arg(&imgs));
    assert!(stderr(&o).contains("not a trained run"));
}

#[test]
fn interrupted_predict_leaves_no_output_file() {
    let f = fixture();
    let r = quick_run(&f.data, &f.runs, &["--epochs", "1"]);
    // Enough files (hard links to the synthetic photos) that scoring is still running when
    // the signal arrives.
    let imgs = f.root.join("many");
    std::fs::create_dir(&imgs).unwrap();
    for e in std::fs::read_dir(f.root.join("voc/JPEGImages")).unwrap() {
        let p = e.unwrap().path();
        for k in 0..20 {
            std::fs::hard_link(&p, imgs.join(format!("{k}_{}", p.file_name().unwrap().to_string_lossy()))).unwrap();
        }
    }
    let out = f.root.join("rows.csv");
    let child = bin("predict")
        .args(["-q", "--batch-size", "4", "--run", r.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .arg(&imgs)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let written = wait_for(std::time::Duration::from_secs(60), || {
        staging_of(&f.root, "rows.csv", child.id()).filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() >= 200))
    });
    let staging = written.expect("predict never started writing rows");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(!out.exists(), "an interrupted predict left {}", out.display());
    assert!(!staging.exists(), "an interrupted predict left its temporary file");
}

#[test]
fn predict_uses_the_same_preprocessing_as_training() {
    // Scoring the test images from their files must give the probabilities evaluate sees
    // on the prepared arrays (same decode, resize and normalisation).
    let f = fixture();
    let r = quick_run(&f.data, &f.runs, &[]);
    let m = read_json(&f.data.join("manifest.json"));
    let ids: Vec<String> = m["splits"]["test"]["ids"].as_array().unwrap().iter().take(5).map(|v| v.as_str().unwrap().to_string()).collect();
    let files: Vec<PathBuf> = ids.iter().map(|id| f.root.join(format!("voc/JPEGImages/{id}.jpg"))).collect();
    let o = run(bin("predict").args(["-q", "--format", "jsonl", "--run", r.to_str().unwrap()]).args(&files));
    let from_files: Vec<Vec<f64>> = stdout(&o)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["probabilities"].as_object().unwrap().values().map(|p| p.as_f64().unwrap()).collect()
        })
        .collect();
    let model = vocml_core::infer::loaded::LoadedModel::load(&r, tch::Device::Cpu).unwrap();
    let manifest = vocml_core::dataset::manifest::Manifest::load(&f.data).unwrap();
    let split = vocml_core::dataset::prepared::SplitData::open(&f.data, "test", &manifest).unwrap();
    let probs = model.probabilities(&split.pixels(&[0, 1, 2, 3, 4]).unwrap());
    for (i, row) in from_files.iter().enumerate() {
        for (k, &p) in row.iter().enumerate() {
            let q = probs.double_value(&[i as i64, k as i64]);
            assert!((p - q).abs() < 1e-5, "image {i} class {k}: {p} vs {q}");
        }
    }
}

/// Probabilities per file from `predict --format jsonl` with `args`.
fn predicted(args: &[&str], files: &[PathBuf]) -> Vec<Vec<f64>> {
    let o = run(bin("predict").args(["-q", "--format", "jsonl"]).args(args).args(files));
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["probabilities"].as_object().unwrap().values().map(|p| p.as_f64().unwrap()).collect()
        })
        .collect()
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn flip_tta_scores_an_image_and_its_mirror_alike_and_follows_the_run_default() {
    let f = fixture();
    let plain = quick_run(&f.data, &f.runs, &[]);
    let with_tta = quick_run(&f.data, &f.runs, &["--tta"]);
    assert_eq!(read_json(&with_tta.join("config.json"))["options"]["tta"], true);
    let imgs = f.root.join("mirror");
    std::fs::create_dir_all(&imgs).unwrap();
    let mut files = Vec::new();
    for id in ["000001", "000002", "000003"] {
        let img = image::open(f.root.join(format!("voc/JPEGImages/{id}.jpg"))).unwrap();
        write_png(&imgs.join(format!("{id}.png")), img.clone());
        write_png(&imgs.join(format!("{id}_mirror.png")), img.fliph());
        files.push(imgs.join(format!("{id}.png")));
        files.push(imgs.join(format!("{id}_mirror.png")));
    }
    let originals: Vec<PathBuf> = files.iter().step_by(2).cloned().collect();
    let mirrors: Vec<PathBuf> = files.iter().skip(1).step_by(2).cloned().collect();
    let p = plain.to_str().unwrap();
    // Without TTA a mirror scores differently; with it, the same (up to resize rounding).
    let (a, b) = (predicted(&["--run", p], &originals), predicted(&["--run", p], &mirrors));
    assert!(max_diff(&a, &b) > 1e-3, "synthetic images are not symmetric");
    let (a, b) = (predicted(&["--run", p, "--tta"], &originals), predicted(&["--run", p, "--tta"], &mirrors));
    assert!(max_diff(&a, &b) < 2e-3, "{}", max_diff(&a, &b));
    // A run trained with --tta uses it by default; --no-tta turns it off.
    let t = with_tta.to_str().unwrap();
    assert!(max_diff(&predicted(&["--run", t], &originals), &predicted(&["--run", t], &mirrors)) < 2e-3);
    assert!(max_diff(&predicted(&["--run", t, "--no-tta"], &originals), &predicted(&["--run", t, "--no-tta"], &mirrors)) > 1e-3);
    // evaluate records it.
    let o = evaluate(&["-q", "--data", f.data.to_str().unwrap(), "--run", p, "--tta"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_json(&plain.join("evaluation.json"))["tta"], true);
}

#[test]
fn an_ensemble_averages_its_members_in_evaluate_and_predict() {
    let f = fixture();
    let a = quick_run(&f.data, &f.runs, &["--seed", "1"]);
    let b = quick_run(&f.data, &f.runs, &["--seed", "2", "--lr", "1e-3"]);
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    let files: Vec<PathBuf> =
        ["000001", "000002", "000003", "000004"].iter().map(|id| f.root.join(format!("voc/JPEGImages/{id}.jpg"))).collect();
    let (pa, pb) = (predicted(&["--run", sa], &files), predicted(&["--run", sb], &files));
    assert!(max_diff(&pa, &pb) > 1e-3, "two seeds gave the same model");
    let mean: Vec<Vec<f64>> = pa.iter().zip(&pb).map(|(x, y)| x.iter().zip(y).map(|(u, v)| (u + v) / 2.0).collect()).collect();
    // On the fly: two --run.
    assert!(max_diff(&predicted(&["--run", sa, "--run", sb], &files), &mean) < 1e-5);

    // Saved by evaluate, evaluated beside its members, usable as a run.
    let o = evaluate(&["-q", "--no-select", "--data", f.data.to_str().unwrap(), "--run", sa, "--run", sb, "--ensemble"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ens = std::fs::read_dir(&f.runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("_ensemble"))
        .expect("ensemble run");
    let cfg = read_json(&ens.join("config.json"));
    assert_eq!(cfg["kind"], "ensemble");
    assert_eq!(cfg["members"].as_array().unwrap().len(), 2);
    assert_eq!(cfg["members"][0], a.file_name().unwrap().to_str().unwrap(), "members inside the runs dir are recorded by name");
    let e = read_json(&ens.join("evaluation.json"));
    assert!(e["model"].as_str().unwrap().starts_with("ensemble(2"), "{}", e["model"]);
    assert!(ens.join("thresholds.json").is_file());
    assert_eq!(std::fs::read_to_string(f.runs.join("comparison.csv")).unwrap().lines().count(), 4);
    let pe = predicted(&["--run", ens.to_str().unwrap(), "--threshold", "0.5"], &files);
    assert!(max_diff(&pe, &mean) < 1e-5);
    // The mean AP of an ensemble is computed on its averaged probabilities, not averaged.
    let (ea, eb) = (read_json(&a.join("evaluation.json")), read_json(&b.join("evaluation.json")));
    assert!(e["mAP"].as_f64().unwrap() >= ea["mAP"].as_f64().unwrap().min(eb["mAP"].as_f64().unwrap()) - 0.05);

    // Members must agree on size; an ensemble cannot be retrained or nested.
    let small = f.root.join("small");
    assert!(run(bin("voc-prep").arg("--voc-root").arg(f.root.join("voc")).arg("--out").arg(&small).args(["-q", "--size", "64"]))
        .status
        .success());
    let c = quick_run(&small, &f.runs, &["--epochs", "1"]);
    let o = run(bin("predict").args(["-q", "--run", sa, "--run", c.to_str().unwrap()]).args(&files));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot be averaged"), "{}", stderr(&o));
    let o = run(bin("predict").args(["-q", "--run", sa, "--run", ens.to_str().unwrap()]).args(&files));
    assert!(stderr(&o).contains("cannot be a member of another ensemble"), "{}", stderr(&o));
    let fixes = f.root.join("fixes.csv");
    std::fs::write(&fixes, format!("path,labels\n{},dog\n", files[0].display())).unwrap();
    let o = run(bin("retrain").arg("--from").arg(&ens).arg("--corrections").arg(&fixes).arg("--runs-dir").arg(&f.runs).arg("-q"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is an ensemble of 2 runs"), "{}", stderr(&o));
    let o = evaluate(&["--data", f.data.to_str().unwrap(), "--run", sa, "--ensemble"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--ensemble needs two or more"), "{}", stderr(&o));
}
