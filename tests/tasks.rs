//! The task types beside VOC multi-label, end to end with the real binaries on the embedded
//! shapes dataset (3 colours x 3 shapes): import (class folders, folder names, CSV), train
//! from scratch, evaluate (accuracy, loss, confusion matrices), predict and retrain.

use crate::util::*;
use std::path::{Path, PathBuf};

/// Writes the shapes dataset (270 images, 30 per colour/shape) into `dir/shapes`.
fn shapes(dir: &Path) -> PathBuf {
    let out = dir.join("shapes");
    let o = run(bin("voc-prep").args(["shapes", "--images", "270", "--size", "48", "--out"]).arg(&out));
    assert!(o.status.success());
    out
}

fn import(args: &[&str], out: &Path) -> PathBuf {
    let o = run(bin("voc-prep").args(args).args(["-q", "--size", "32", "--out"]).arg(out));
    assert!(o.status.success());
    out.to_path_buf()
}

fn train_scratch(data: &Path, runs: &Path, model: &str) -> PathBuf {
    quick_run(data, runs, &["--model", model, "--epochs", "15", "--patience", "15", "--lr", "1e-3"])
}

/// Evaluates one run; returns `evaluation.json` and the summary line.
fn evaluate(data: &Path, run_dir: &Path) -> (serde_json::Value, String) {
    let o = run(bin("evaluate").arg("--data").arg(data).arg("--run").arg(run_dir).args(["--threads", "2"]));
    assert!(o.status.success());
    (read_json(&run_dir.join("evaluation.json")), stdout(&o).lines().last().unwrap_or_default().to_string())
}

fn predict_jsonl(run_dir: &Path, images: &[PathBuf], extra: &[&str]) -> Vec<serde_json::Value> {
    let o = run(bin("predict").arg("--run").arg(run_dir).args(["-q", "--format", "jsonl", "--threads", "2"]).args(extra).args(images));
    assert!(o.status.success());
    stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Row sums of `y_<split>.npy`.
fn label_row_sums(data: &Path, split: &str) -> Vec<f64> {
    let code = format!(
        "import numpy as np; print(' '.join(str(v) for v in np.load('{}').sum(axis=1)))",
        data.join(format!("y_{split}.npy")).display()
    );
    python_eval(&code).split_whitespace().map(|v| v.parse().unwrap()).collect()
}

fn corrections(dir: &Path, name: &str, rows: &[(&Path, &str)]) -> PathBuf {
    let p = dir.join(name);
    let body: String = rows.iter().map(|(img, labels)| format!("{},{labels}\n", img.display())).collect();
    std::fs::write(&p, format!("path,labels\n{body}")).unwrap();
    p
}

fn retrain(run_dir: &Path, runs: &Path, csv: &Path, feedback: &Path) -> std::process::Output {
    run(bin("retrain")
        .arg("--from")
        .arg(run_dir)
        .arg("--corrections")
        .arg(csv)
        .arg("--runs-dir")
        .arg(runs)
        .arg("--feedback-dir")
        .arg(feedback)
        .args(["-q", "--threads", "2", "--epochs", "5", "--force"]))
}

#[test]
fn multiclass_from_class_folders_trains_evaluates_predicts_and_retrains() {
    let dir = tempfile::tempdir().unwrap();
    let src = shapes(dir.path());
    let data = import(&["folders", "--root", src.join("images").to_str().unwrap()], &dir.path().join("pd"));
    let m = read_json(&data.join("manifest.json"));
    assert_eq!(m["task"], "multiclass");
    assert_eq!(m["classes"].as_array().unwrap().len(), 9);
    assert_eq!(m["label_groups"][0]["name"], "class");
    assert_eq!(m["classes"][6], "red_circle");
    assert!(label_row_sums(&data, "train").iter().all(|&s| s == 1.0), "one class per image");

    let runs = dir.path().join("runs");
    let run_dir = train_scratch(&data, &runs, "small_cnn");
    let cfg = read_json(&run_dir.join("config.json"));
    assert_eq!(cfg["task"], "multiclass");
    assert_eq!(cfg["monitor"], "accuracy");
    let acc = read_json(&run_dir.join("metrics.json"))["metrics"]["subset_accuracy"].as_f64().unwrap();
    assert!(acc > 0.4, "validation accuracy {acc}: chance is 1/9");

    let (e, summary) = evaluate(&data, &run_dir);
    assert_eq!(e["task"], "multiclass");
    assert!(summary.starts_with("evaluate: small_cnn accuracy = "), "grouped tasks rank by accuracy: {summary}");
    let test_images = e["images"].as_u64().unwrap();
    let confusion = e["groups"][0]["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 9);
    assert!(confusion.iter().all(|r| r.as_array().unwrap().len() == 9));
    let cells: Vec<u64> = confusion.iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap())).collect();
    assert_eq!(cells.iter().sum::<u64>(), test_images);
    let diagonal: u64 = (0..9).map(|i| cells[i * 9 + i]).sum();
    assert!((e["accuracy"].as_f64().unwrap() - diagonal as f64 / test_images as f64).abs() < 1e-9);
    assert!(e["accuracy"].as_f64().unwrap() > 0.3, "test accuracy {}", e["accuracy"]);
    assert!(e["loss"].as_f64().unwrap() > 0.0 && e["loss"].as_f64().unwrap() < 2.197, "loss {} not below chance ln 9", e["loss"]);
    assert!(run_dir.join("confusion.png").is_file());
    assert!(!run_dir.join("thresholds.json").exists(), "arg-max tasks have no thresholds");

    let red_circle = src.join("images/red_circle/0010.png");
    let blue_square = src.join("images/blue_square/0008.png");
    let rows = predict_jsonl(&run_dir, &[red_circle.clone(), blue_square.clone()], &["--top-k", "2"]);
    for r in &rows {
        assert_eq!(r["labels"].as_array().unwrap().len(), 1, "{r}");
        assert_eq!(r["label"], r["labels"][0]);
        let sum: f64 = r["probabilities"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "softmax sums to {sum}");
        assert_eq!(r["top"][0]["class"], r["label"]);
    }
    let o = run(bin("predict").arg("--run").arg(&run_dir).args(["--threshold", "0.3"]).arg(&red_circle));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--threshold applies to multilabel runs"), "{}", stderr(&o));

    let fb = dir.path().join("feedback");
    let bad = corrections(dir.path(), "bad.csv", &[(&red_circle, "red_circle;blue_square")]);
    let o = retrain(&run_dir, &runs, &bad, &fb);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("bad.csv:2") && stderr(&o).contains("exactly 1"), "{}", stderr(&o));
    let good = corrections(dir.path(), "good.csv", &[(&red_circle, "red_circle"), (&blue_square, "blue_square")]);
    let o = retrain(&run_dir, &runs, &good, &fb);
    assert!(o.status.success());
    let new = read_json(&runs.join("best/config.json"));
    assert_eq!(new["task"], "multiclass");
    let outcome = read_json(&runs.join("best/retrain.json"));
    assert_eq!(outcome["monitor"], "accuracy");
    assert_eq!(outcome["corrected_right_after"], 2);
    let rows = predict_jsonl(&runs.join("best"), &[red_circle], &[]);
    assert_eq!(rows[0]["label"], "red_circle");
}

#[test]
fn multilabel_from_folder_names_uses_sigmoid_outputs_and_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let src = shapes(dir.path());
    let data = import(&["folders", "--task", "multilabel", "--root", src.join("images").to_str().unwrap()], &dir.path().join("pd"));
    let m = read_json(&data.join("manifest.json"));
    assert_eq!(m["task"], "multilabel");
    assert_eq!(m["classes"], serde_json::json!(["blue", "circle", "green", "red", "square", "triangle"]));
    assert!(label_row_sums(&data, "train").iter().all(|&s| s == 2.0), "a colour and a shape per image");

    let runs = dir.path().join("runs");
    let run_dir = train_scratch(&data, &runs, "smaller_vggnet");
    let cfg = read_json(&run_dir.join("config.json"));
    assert_eq!(cfg["task"], "multilabel");
    assert_eq!(cfg["head"]["hidden"], serde_json::Value::Null, "smaller_vggnet ends in its own dense layer");
    let f1 = read_json(&run_dir.join("metrics.json"))["metrics"]["macro_f1"].as_f64().unwrap();
    assert!(f1 > 0.6, "validation macro-F1 {f1}");
    let (e, summary) = evaluate(&data, &run_dir);
    assert_eq!(e["task"], "multilabel");
    assert!(summary.starts_with("evaluate: smaller_vggnet macro_f1 = "), "{summary}");
    assert!(e.get("groups").is_none());
    assert!(run_dir.join("thresholds.json").is_file());

    let img = src.join("images/green_triangle/0006.png");
    let o = run(bin("predict").arg("--run").arg(&run_dir).args(["-q", "--top-k", "2", "--threshold", "0.5"]).arg(&img));
    assert!(o.status.success());
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "path,labels,p_blue,p_circle,p_green,p_red,p_square,p_triangle,top,error");
    let cells: Vec<&str> = lines[1].split(',').collect();
    let probs: Vec<f64> = cells[2..8].iter().map(|v| v.parse().unwrap()).collect();
    let over: Vec<&str> =
        ["blue", "circle", "green", "red", "square", "triangle"].iter().zip(&probs).filter(|(_, &p)| p >= 0.5).map(|(c, _)| *c).collect();
    assert_eq!(cells[1], over.join(";"), "labels are the classes at or above 0.5");
    assert_eq!(cells[8].split(';').count(), 2);
    assert!(probs[2] > 0.5, "green not recognised: {probs:?}");
}

#[test]
fn multihead_from_csv_has_a_softmax_and_a_confusion_matrix_per_head() {
    let dir = tempfile::tempdir().unwrap();
    let src = shapes(dir.path());
    let data = import(&["csv", "--task", "multihead", "--file", src.join("labels.csv").to_str().unwrap()], &dir.path().join("pd"));
    let m = read_json(&data.join("manifest.json"));
    assert_eq!(m["task"], "multihead");
    assert_eq!(m["label_groups"][0], serde_json::json!({"name": "color", "classes": ["blue", "green", "red"]}));
    assert_eq!(m["label_groups"][1]["name"], "shape");
    assert_eq!(m["classes"][3], "shape/circle");
    assert!(label_row_sums(&data, "val").iter().all(|&s| s == 2.0), "one class per head");

    let runs = dir.path().join("runs");
    let run_dir = train_scratch(&data, &runs, "small_cnn");
    let (e, _) = evaluate(&data, &run_dir);
    let groups = e["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    for g in groups {
        assert_eq!(g["confusion"].as_array().unwrap().len(), 3);
    }
    let color_acc = groups[0]["accuracy"].as_f64().unwrap();
    assert!(color_acc > 0.8, "colour head accuracy {color_acc}: chance is 1/3");
    assert!(e["accuracy"].as_f64().unwrap() > 0.3, "both heads right {}: chance is 1/9", e["accuracy"]);
    assert!(e["accuracy"].as_f64().unwrap() <= color_acc);
    assert!(run_dir.join("confusion_color.png").is_file() && run_dir.join("confusion_shape.png").is_file());

    let img = src.join("images/red_square/0011.png");
    let rows = predict_jsonl(&run_dir, &[img.clone()], &[]);
    let r = &rows[0];
    let heads = r["heads"].as_object().unwrap();
    assert_eq!(heads.len(), 2);
    assert_eq!(heads["color"], "red");
    let p = r["probabilities"].as_object().unwrap();
    let color_sum: f64 = ["color/blue", "color/green", "color/red"].iter().map(|k| p[*k].as_f64().unwrap()).sum();
    let shape_sum: f64 = ["shape/circle", "shape/square", "shape/triangle"].iter().map(|k| p[*k].as_f64().unwrap()).sum();
    assert!((color_sum - 1.0).abs() < 1e-4 && (shape_sum - 1.0).abs() < 1e-4, "{color_sum} {shape_sum}");

    let fb = dir.path().join("feedback");
    let o = retrain(&run_dir, &runs, &corrections(dir.path(), "one.csv", &[(&img, "red")]), &fb);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("\"shape\" has 0 classes"), "{}", stderr(&o));
    let o = retrain(&run_dir, &runs, &corrections(dir.path(), "both.csv", &[(&img, "red;shape/square")]), &fb);
    assert!(o.status.success());
    assert_eq!(read_json(&runs.join("best/config.json"))["task"], "multihead");
    assert_eq!(predict_jsonl(&runs.join("best"), &[img], &[])[0]["heads"]["shape"], "square");
}

#[test]
fn importers_skip_bad_images_and_refuse_malformed_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = shapes(d);
    // Folder tree: a corrupt image and a text file are skipped and listed.
    std::fs::write(src.join("images/red_circle/broken.png"), b"not a png").unwrap();
    std::fs::write(src.join("images/red_circle/notes.txt"), b"hello").unwrap();
    let data = import(&["folders", "--root", src.join("images").to_str().unwrap()], &d.join("pd"));
    let m = read_json(&data.join("manifest.json"));
    let skipped: Vec<String> = m["skipped"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert!(skipped.contains(&"red_circle/broken.png".to_string()) && skipped.contains(&"red_circle/notes.txt".to_string()), "{skipped:?}");
    let kept = ["train", "val", "test"].iter().map(|s| m["splits"][s]["count"].as_u64().unwrap()).sum::<u64>();
    assert_eq!(kept, 270);

    let prep = |args: &[&str]| run(bin("voc-prep").args(args).args(["-q", "--size", "32", "--out"]).arg(d.join("bad_out")));
    // A class folder without images.
    std::fs::create_dir_all(src.join("images/purple_star")).unwrap();
    let o = prep(&["folders", "--root", src.join("images").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("\"purple_star\" holds no images"), "{}", stderr(&o));
    std::fs::remove_dir(src.join("images/purple_star")).unwrap();

    let csv = |name: &str, body: &str| {
        let p = src.join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_string()
    };
    let cases = [
        ("multihead", csv("short.csv", "path,color,shape\nimages/red_circle/0007.png,red\n"), "short.csv:2: 2 fields, expected 3"),
        (
            "multilabel",
            csv("value.csv", "path,red,circle\nimages/red_circle/0007.png,1,2\n"),
            "value.csv:2: column \"circle\" is \"2\", expected 0 or 1",
        ),
        (
            "multiclass",
            csv("two.csv", "path,color,shape\nimages/red_circle/0007.png,red,circle\n"),
            "a multiclass CSV has one label column",
        ),
        ("multihead", csv("header.csv", "file,color\nimages/red_circle/0007.png,red\n"), "header.csv:1"),
        ("multiclass", csv("one.csv", "path,color\nimages/red_circle/0007.png,red\nimages/red_circle/0016.png,red\n"), "needs at least 2"),
        (
            "multiclass",
            csv("dup.csv", "path,color\nimages/red_circle/0007.png,red\nimages/red_circle/0007.png,blue\n"),
            "dup.csv:3: images/red_circle/0007.png is listed twice",
        ),
    ];
    for (task, file, want) in cases {
        let o = prep(&["csv", "--task", task, "--file", &file]);
        assert_eq!(o.status.code(), Some(1), "{file}");
        assert!(stderr(&o).contains(want), "{file}: {}", stderr(&o));
        assert!(!d.join("bad_out").exists(), "no output on error");
    }
    // A missing image is skipped and listed, like VOC's.
    let ok = csv("missing.csv", "path,color\nimages/red_circle/0010.png,red\nimages/gone.png,blue\nimages/blue_circle/0007.png,blue\nimages/red_square/0011.png,red\nimages/blue_square/0017.png,blue\n");
    let o = prep(&["csv", "--task", "multiclass", "--split", "1,0,0", "--file", &ok]);
    assert!(o.status.success());
    let m = read_json(&d.join("bad_out/manifest.json"));
    assert_eq!(m["splits"]["train"]["count"], 4);
    assert_eq!(m["skipped"][0]["reason"], "missing image file");
}

#[test]
fn from_scratch_models_refuse_weights_and_fine_tuning() {
    let dir = tempfile::tempdir().unwrap();
    let src = shapes(dir.path());
    let data = import(&["folders", "--root", src.join("images").to_str().unwrap()], &dir.path().join("pd"));
    let runs = dir.path().join("runs");
    let cases: [(&[&str], &str); 3] = [
        (&["--model", "alexnet_like", "--weights", "w.safetensors"], "alexnet_like is trained from scratch; --weights"),
        (&["--model", "small_cnn", "--fine-tune-blocks", "2"], "--fine-tune-blocks applies to the ImageNet backbones"),
        (&["--model", "small_cnn", "--pos-weight"], "--pos-weight weights the binary cross-entropy of multilabel tasks"),
    ];
    for (args, want) in cases {
        let o = run(bin("train").arg("--data").arg(&data).arg("--runs-dir").arg(&runs).args(["-q"]).args(args));
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
    assert!(!runs.exists() || std::fs::read_dir(&runs).unwrap().next().is_none());
}
