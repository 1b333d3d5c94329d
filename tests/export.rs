//! `export`: every backbone and task type as an ONNX file that ONNX Runtime runs like
//! `predict` (probabilities within 1e-4, the same labels), read by a script that knows only
//! the file (scripts/onnx_predict.py), and one clear error with nothing written on bad input.

use crate::util::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vocml_core::model::BackboneKind;

/// Test images at exactly `size` px: the rows of the prepared `X_test.npy`, as PNG files, so
/// `predict` and the ONNX script decode the same pixels without resizing.
fn test_images(data: &Path, dir: &Path) -> PathBuf {
    let x = vocml_core::io::npy::NpyArray::open(&data.join("X_test.npy")).unwrap();
    let (n, h, w) = (x.shape()[0].min(6), x.shape()[1] as u32, x.shape()[2] as u32);
    let pixels = x.read_all().unwrap();
    let row = (h * w * 3) as usize;
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_raw(w, h, pixels[i * row..(i + 1) * row].to_vec()).unwrap();
        img.save(dir.join(format!("{i:02}.png"))).unwrap();
    }
    dir.to_path_buf()
}

/// A random-weight checkpoint of a torchvision-layout backbone (the tests need no download).
fn random_weights(kind: BackboneKind, path: &Path) {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = kind.build(&vs.root(), false);
    vs.save(path).unwrap();
}

fn export(run_dir: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    run(bin("export").arg("--run").arg(run_dir).arg("--out").arg(out).args(extra))
}

/// predict's CSV rows by path: (labels, probabilities).
fn rows(csv: &str) -> HashMap<String, (String, Vec<f64>)> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    assert_eq!(header[..2], ["path", "labels"]);
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            let probs = cells[2..cells.len() - 1].iter().map(|c| c.parse::<f64>().unwrap()).collect();
            (cells[0].to_string(), (cells[1].to_string(), probs))
        })
        .collect()
}

/// Exports `run_dir`, checks the file independently (full onnx.checker, standard domain
/// only, a dynamic batch axis) and scores `images` with the file alone: ONNX Runtime's
/// probabilities equal `predict`'s to 1e-4 and the labels are the same.
fn exported_file_scores_like_predict(run_dir: &Path, images: &Path, export_flags: &[&str], predict_flags: &[&str]) {
    let onnx = run_dir.parent().unwrap().join(format!("{}.onnx", run_dir.file_name().unwrap().to_string_lossy()));
    let o = export(run_dir, &onnx, &[&["-q"], export_flags].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), onnx.to_str().unwrap());
    let check = format!(
        "import onnx\nm = onnx.load('{f}')\nonnx.checker.check_model('{f}', full_check=True)\n\
         print(sorted({{n.domain for n in m.graph.node}}), m.graph.input[0].type.tensor_type.shape.dim[0].dim_param, len(m.graph.initializer) > 0)",
        f = onnx.display()
    );
    assert_eq!(python_eval(&check).trim(), "[''] batch True", "standard operators only, a dynamic batch axis, weights as initializers");

    let want = run(bin("predict").arg("--run").arg(run_dir).args(["-q", "--threads", "2"]).args(predict_flags).arg(images));
    assert!(want.status.success(), "{}", stderr(&want));
    let got = run(std::process::Command::new(python()).arg(repo_root().join("scripts/onnx_predict.py")).arg(&onnx).arg(images));
    assert!(got.status.success(), "{}", stderr(&got));
    let (want, got) = (rows(&stdout(&want)), rows(&stdout(&got)));
    assert_eq!(want.len(), got.len());
    assert!(!want.is_empty());
    for (path, (labels, p)) in &want {
        let (onnx_labels, q) = &got[path];
        let diff = p.iter().zip(q).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff <= 1e-4 + 1e-6, "{}: {path}: max |diff| {diff}: {p:?} vs {q:?}", run_dir.display());
        assert_eq!(labels, onnx_labels, "{path}: {p:?}");
    }
}

/// A multilabel run of `kind` (1 epoch on 32 px synthetic VOC photos) exported and compared.
fn backbone_round_trip(kind: BackboneKind) {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 24, 32);
    let images = test_images(&data, &dir.path().join("images"));
    let mut flags = vec!["--model".to_string(), kind.name().to_string(), "--epochs".into(), "1".into()];
    if !kind.from_scratch() && !kind.embedded_weights() {
        let w = dir.path().join("random.safetensors");
        random_weights(kind, &w);
        flags.extend(["--weights".to_string(), w.to_str().unwrap().to_string()]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let run_dir = quick_run(&data, &dir.path().join("runs"), &flags);
    exported_file_scores_like_predict(&run_dir, &images, &[], &[]);
}

macro_rules! round_trips {
    ($($name:ident: $kind:ident,)*) => {$(
        #[test]
        fn $name() {
            backbone_round_trip(BackboneKind::$kind);
        }
    )*};
}

round_trips! {
    efficientnet_lite0_exports: EfficientnetLite0,
    efficientnet_lite1_exports: EfficientnetLite1,
    efficientnet_lite2_exports: EfficientnetLite2,
    efficientnet_b0_exports: EfficientnetB0,
    mobilenet_v2_exports: MobilenetV2,
    resnet18_exports: Resnet18,
    resnet50_exports: Resnet50,
    vgg16_exports: Vgg16,
    googlenet_exports: Googlenet,
    convnext_tiny_exports: ConvnextTiny,
    vit_b_16_exports: VitB16,
    small_cnn_exports: SmallCnn,
    alexnet_like_exports: AlexnetLike,
    smaller_vggnet_exports: SmallerVggnet,
}

#[test]
fn every_backbone_has_an_export_test() {
    let source = std::fs::read_to_string(repo_root().join("tests/export.rs")).unwrap();
    for kind in BackboneKind::ALL {
        assert!(source.contains(&format!("{}_exports:", kind.name())), "no export test for {}", kind.name());
    }
}

#[test]
fn a_cached_tail_fine_tuned_run_changes_only_its_tail_and_predict_export_and_serve_agree() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 40, 64);
    let images = test_images(&data, &dir.path().join("images"));
    let runs = dir.path().join("runs");
    // A refit keeps its last epoch, so the tuned tail is what the run holds.
    let tuned = ["--refit", "--epochs", "1", "--fine-tune-blocks", "4", "--fine-tune-epochs", "2", "--fine-tune-lr", "1e-3"];
    let o =
        run(bin("train").arg("--data").arg(&data).arg("--runs-dir").arg(&runs).args(["--threads", "2", "--aug-views", "1"]).args(tuned));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("fine-tuning the last 4 blocks from cached activations"), "{}", stderr(&o));
    let run_dir = only_run(&runs);
    let history = std::fs::read_to_string(run_dir.join("history.csv")).unwrap();
    let phases: Vec<&str> = history.lines().skip(1).map(|l| l.split(',').nth(1).unwrap()).collect();
    assert_eq!(phases, ["frozen", "fine-tune", "fine-tune"]);

    // The last three MBConv blocks and the head convolution moved; everything else, BatchNorm
    // statistics included, is still the ImageNet checkpoint.
    let imagenet: HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(repo_root().join(".venv/vocml-weights/efficientnet_lite0.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let trained: HashMap<String, tch::Tensor> =
        tch::Tensor::read_safetensors(run_dir.join("model.safetensors")).unwrap().into_iter().collect();
    let tail = ["_blocks.13.", "_blocks.14.", "_blocks.15.", "_conv_head."];
    let (mut moved, mut kept) = (0, 0);
    for (name, before) in imagenet.iter().filter(|(k, _)| !k.starts_with("_fc.") && !k.ends_with("num_batches_tracked")) {
        let after = trained.get(name).unwrap_or_else(|| panic!("{name} is missing from the run"));
        let diff = (after - before).abs().max().double_value(&[]);
        let trainable = tail.iter().any(|p| name.starts_with(p)) && !name.contains("running_");
        if trainable {
            assert!(diff > 0.0, "{name} was not tuned");
            moved += 1;
        } else {
            assert_eq!(diff, 0.0, "{name} changed");
            kept += 1;
        }
    }
    assert!(moved >= 10 && kept > 100, "{moved} tuned, {kept} kept");
    // The validation scores train recorded are those of the tuned model, as evaluate scores it.
    let o = run(bin("evaluate").arg("--data").arg(&data).arg("--run").arg(&run_dir).args(["--split", "val", "--no-select", "-q"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let (recorded, evaluated) = (read_json(&run_dir.join("metrics.json")), read_json(&run_dir.join("evaluation.json")));
    for key in ["macro_f1", "micro_f1"] {
        let (a, b) = (recorded["metrics"][key].as_f64().unwrap(), evaluated[key].as_f64().unwrap());
        assert!((a - b).abs() < 1e-9, "{key}: train recorded {a}, evaluate found {b}");
    }
    let last_val_loss: f64 = history.lines().last().unwrap().split(',').nth(3).unwrap().parse().unwrap();
    let loss = evaluated["loss"].as_f64().unwrap();
    assert!((last_val_loss - loss).abs() < 2e-6, "val loss: history {last_val_loss}, evaluate {loss}");
    // Multi-scale features fine-tune on pixels, and validate on the tuned backbone too.
    let scaled = dir.path().join("scaled");
    let o =
        run(bin("train").arg("--data").arg(&data).arg("--runs-dir").arg(&scaled).args(["--threads", "2", "--scales", "64,48"]).args(tuned));
    assert!(o.status.success() && !stderr(&o).contains("cached activations"), "{}", stderr(&o));
    let scaled_run = only_run(&scaled);
    let o = run(bin("evaluate").arg("--data").arg(&data).arg("--run").arg(&scaled_run).args(["--split", "val", "--no-select", "-q"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let scaled_history = std::fs::read_to_string(scaled_run.join("history.csv")).unwrap();
    let last_val_loss: f64 = scaled_history.lines().last().unwrap().split(',').nth(3).unwrap().parse().unwrap();
    let loss = read_json(&scaled_run.join("evaluation.json"))["loss"].as_f64().unwrap();
    assert!((last_val_loss - loss).abs() < 2e-6, "multi-scale val loss: history {last_val_loss}, evaluate {loss}");
    // A block count past the backbone's (here usize::MAX) tunes every block: the cache holds the stem's output.
    let all = dir.path().join("all");
    let o = run(bin("train").arg("--data").arg(&data).arg("--runs-dir").arg(&all).args(["--threads", "2", "--epochs", "1"]).args([
        "--fine-tune-blocks",
        "18446744073709551615",
        "--fine-tune-epochs",
        "1",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("fine-tuning the last 17 blocks from cached activations"), "{}", stderr(&o));

    exported_file_scores_like_predict(&run_dir, &images, &[], &[]);
    let want = run(bin("predict").arg("--run").arg(&run_dir).args(["-q", "--threads", "1"]).arg(&images));
    let want = rows(&stdout(&want));
    vocml_core::run::point_best(&runs, &run_dir).unwrap();
    let server = crate::util::server::Server::start(&runs, &[]);
    let path = images.join("00.png");
    let bytes = std::fs::read(&path).unwrap();
    let reply = server.post_form("/predict", &[("files", Some("00.png"), &bytes)], &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let served: Vec<f64> = reply.json()[0]["probabilities"].as_object().unwrap().values().map(|p| p.as_f64().unwrap()).collect();
    let (_, predicted) = &want[path.to_str().unwrap()];
    let diff = served.iter().zip(predicted).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(served.len() == predicted.len() && diff <= 1e-5, "serve {served:?} vs predict {predicted:?}");
}

/// The shapes dataset (colour and shape of each image) imported as `task`, at 32 px.
fn shapes_as(dir: &Path, task: &str) -> PathBuf {
    let src = dir.join("shapes");
    let o = run(bin("voc-prep").args(["shapes", "--images", "90", "--size", "32", "--out"]).arg(&src));
    assert!(o.status.success());
    let out = dir.join(format!("pd-{task}"));
    let args: Vec<String> = match task {
        "multiclass" => vec!["folders".into(), "--root".into(), src.join("images").to_str().unwrap().into()],
        _ => vec!["csv".into(), "--task".into(), task.into(), "--file".into(), src.join("labels.csv").to_str().unwrap().into()],
    };
    let o = run(bin("voc-prep").args(&args).args(["-q", "--size", "32", "--out"]).arg(&out));
    assert!(o.status.success());
    out
}

#[test]
fn multiclass_and_multihead_runs_export_a_softmax_per_head() {
    let dir = tempfile::tempdir().unwrap();
    for (task, model) in [("multiclass", "efficientnet_lite0"), ("multihead", "small_cnn")] {
        let data = shapes_as(dir.path(), task);
        let images = test_images(&data, &dir.path().join(format!("images-{task}")));
        let run_dir = quick_run(&data, &dir.path().join(format!("runs-{task}")), &["--model", model, "--epochs", "2"]);
        exported_file_scores_like_predict(&run_dir, &images, &["--preprocess"], &[]);
        // Each head's probabilities sum to 1 in the file's output.
        let onnx = run_dir.parent().unwrap().join(format!("{}.onnx", run_dir.file_name().unwrap().to_string_lossy()));
        let sums = python_eval(&format!(
            "import json, numpy as np, onnxruntime as ort\ns = ort.InferenceSession('{}')\n\
             g = json.loads(s.get_modelmeta().custom_metadata_map['vocml.label_groups'])\n\
             p = s.run(None, {{'images': np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)}})[0]\n\
             i = 0\nfor h in g:\n    n = len(h['classes']); print(h['name'], np.round(p[:, i:i + n].sum(1), 5).tolist()); i += n",
            onnx.display()
        ));
        let expected: Vec<String> = match task {
            "multiclass" => vec!["class [1.0, 1.0, 1.0]".into()],
            _ => vec!["color [1.0, 1.0, 1.0]".into(), "shape [1.0, 1.0, 1.0]".into()],
        };
        assert_eq!(sums.lines().map(String::from).collect::<Vec<_>>(), expected);
    }
}

#[test]
fn ensembles_and_tta_export_as_one_graph_with_the_runs_contract() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 24, 32);
    let images = test_images(&data, &dir.path().join("images"));
    let runs = dir.path().join("runs");
    let a = quick_run(&data, &runs, &["--epochs", "2"]);
    let b = quick_run(&data, &runs, &["--epochs", "2", "--seed", "7", "--head", "linear"]);
    let o = run(bin("evaluate").arg("--data").arg(&data).arg("--run").arg(&a).arg("--run").arg(&b).args([
        "--ensemble",
        "--tta",
        "-q",
        "--no-select",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let ensemble =
        std::fs::read_dir(&runs).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().ends_with("_ensemble")).unwrap();
    exported_file_scores_like_predict(&ensemble, &images, &[], &[]);
    exported_file_scores_like_predict(&a, &images, &["--tta", "--preprocess"], &["--tta"]);

    // Without --out the file goes into the run, with the run's thresholds and contract.
    let o = run(bin("export").arg("--run").arg(&ensemble));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("matches libtorch"), "{}", stdout(&o));
    let meta = python_eval(&format!(
        "import onnx, json\nm = {{p.key: p.value for p in onnx.load('{}').metadata_props}}\n\
         print(m['vocml.members'], m['vocml.tta'], m['vocml.image_size'], m['vocml.task'], m['vocml.input_dtype'], json.loads(m['vocml.classes']) == json.load(open('{}')))",
        ensemble.join("model.onnx").display(),
        ensemble.join("classes.json").display()
    ));
    assert_eq!(meta.trim(), "2 true 32 multilabel float32 True");
    let thresholds = read_json(&ensemble.join("thresholds.json"));
    let stored = python_eval(&format!(
        "import onnx\nprint({{p.key: p.value for p in onnx.load('{}').metadata_props}}['vocml.thresholds'])",
        ensemble.join("model.onnx").display()
    ));
    let stored: Vec<f64> = serde_json::from_str(stored.trim()).unwrap();
    let want: Vec<f64> = thresholds["thresholds"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(stored.len(), want.len());
    assert!(stored.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6), "{stored:?} vs {want:?}");
}

#[test]
fn bad_export_requests_fail_with_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, run_dir) = best_run(dir.path(), 16, 32, &["--epochs", "1"]);
    let cases: [(Vec<String>, i32, &str); 5] = [
        (vec!["--run".into(), "/no/such/run".into(), "--out".into(), "m.onnx".into()], 1, "cannot open run /no/such/run"),
        (vec!["--run".into(), run_dir.to_str().unwrap().into(), "--format".into(), "tflite".into()], 2, "invalid value 'tflite'"),
        (
            vec!["--run".into(), run_dir.to_str().unwrap().into(), "--out".into(), "/no/such/dir/m.onnx".into()],
            1,
            "the folder /no/such/dir does not exist",
        ),
        (vec!["--run".into(), run_dir.to_str().unwrap().into(), "--out".into(), "/proc/m.onnx".into()], 1, "cannot write in /proc"),
        (vec!["--run".into(), run_dir.to_str().unwrap().into(), "--out".into(), dir.path().to_str().unwrap().into()], 1, "is a directory"),
    ];
    for (args, code, message) in cases {
        let o = run(bin("export").args(&args));
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(message), "{args:?}: {err}");
        if code == 1 {
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        }
    }
    assert!(!dir.path().join("m.onnx").exists());

    // Interrupted: exit 130, no file, no work folder left.
    let out = dir.path().join("late.onnx");
    let child = bin("export").arg("--run").arg(&run_dir).arg("--out").arg(&out).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let work = wait_for(std::time::Duration::from_secs(60), || {
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains(".late.onnx.export-"))
    });
    assert!(work.is_some(), "export never started its work folder");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(!out.exists(), "an interrupted export left {}", out.display());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".late"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Multi-scale runs (`--scales`): libtorch's anti-aliased downsizing becomes opset 18's Resize
/// with `antialias`, the backbone run at both scales is stored once, and the file scores like
/// `predict`.
#[test]
fn multi_scale_runs_export_with_an_antialiased_resize_and_one_copy_of_the_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 24, 48);
    let images = test_images(&data, &dir.path().join("images"));
    let run_dir = quick_run(&data, &dir.path().join("runs"), &["--epochs", "1", "--scales", "48,32"]);
    exported_file_scores_like_predict(&run_dir, &images, &[], &[]);
    let onnx = run_dir.parent().unwrap().join(format!("{}.onnx", run_dir.file_name().unwrap().to_string_lossy()));
    let check = format!(
        "import onnx\nm = onnx.load('{f}')\nr = [n for n in m.graph.node if n.op_type == 'Resize']\n\
         a = {{x.name: x.i for x in r[0].attribute}} if r else {{}}\nprint(m.opset_import[0].version, len(r), a.get('antialias'), a.get('exclude_outside'), len(m.graph.initializer))",
        f = onnx.display()
    );
    let found = python_eval(&check);
    let fields: Vec<&str> = found.split(' ').collect();
    assert_eq!(fields[..4], ["18", "1", "1", "1"], "{found}");
    let single = quick_run(&data, &dir.path().join("runs-single"), &["--epochs", "1"]);
    let out = dir.path().join("single.onnx");
    assert!(export(&single, &out, &["-q"]).status.success());
    let single_count = python_eval(&format!("import onnx\nprint(len(onnx.load('{}').graph.initializer))", out.display()));
    assert_eq!(fields[4], single_count, "the multi-scale file stores its backbone once");
}

/// `--int8`: a QDQ file beside the run (the engine keeps the fp32 `model.onnx`), with the
/// run's contract and `vocml.quantization` in its metadata, standard operators, scored by the
/// file-only script; the fp32 mAP it reports is `evaluate`'s on the same validation split;
/// bad int8 requests are one-line errors that write nothing.
#[test]
fn int8_export_is_calibrated_checked_against_fp32_and_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _, run_dir) = best_run(dir.path(), 24, 32, &["--epochs", "1"]);
    let images = test_images(&data, &dir.path().join("images"));
    let o = run(bin("export").arg("--run").arg(&run_dir).args(["--int8", "--max-map-drop", "1", "--threads", "2"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let file = run_dir.join("model.int8.onnx");
    assert!(file.is_file() && !run_dir.join("model.onnx").exists(), "int8 goes to model.int8.onnx only");
    let out = stdout(&o);
    let line = out.lines().find(|l| l.starts_with("int8: validation mAP")).unwrap_or_else(|| panic!("{out}"));
    let fp32_map: f64 = line.split("(fp32 ").nth(1).and_then(|r| r.split(',').next()).unwrap().parse().unwrap();
    assert!(line.contains("calibrated on"), "{line}");

    let check = format!(
        "import onnx, json\nm = onnx.load('{f}')\nonnx.checker.check_model('{f}', full_check=True)\nmeta = {{p.key: p.value for p in m.metadata_props}}\n\
         q = json.loads(meta['vocml.quantization'])\nops = [n.op_type for n in m.graph.node]\n\
         print(sorted({{n.domain for n in m.graph.node}}), ops.count('QuantizeLinear') > 10, json.loads(meta['vocml.classes']), q['calibration_images'] > 0, q['val_map_fp32'] >= 0)",
        f = file.display()
    );
    assert_eq!(python_eval(&check), "[''] True ['person', 'chair', 'dog', 'sofa'] True True");
    let got = run(std::process::Command::new(python()).arg(repo_root().join("scripts/onnx_predict.py")).arg(&file).arg(&images));
    assert!(got.status.success(), "{}", stderr(&got));
    let got = rows(&stdout(&got));
    assert_eq!(got.len(), std::fs::read_dir(&images).unwrap().count());
    assert!(got.values().all(|(_, p)| p.len() == 4 && p.iter().all(|v| (0.0..=1.0).contains(v))), "{got:?}");

    // The fp32 figure is evaluate's mAP on the validation split, through the same file.
    let o = export(&run_dir, &run_dir.join("model.onnx"), &["-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(bin("evaluate").arg("--data").arg(&data).arg("--run").arg(&run_dir).args([
        "--split",
        "val",
        "--engine",
        "onnx",
        "--no-select",
        "-q",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let evaluated = read_json(&run_dir.join("evaluation.json"))["mAP"].as_f64().unwrap();
    assert!((evaluated - fp32_map).abs() < 1e-4, "evaluate {evaluated} vs the int8 report's fp32 {fp32_map}");

    let other = prepared(&dir.path().join("other"), 12, 48);
    let out = dir.path().join("q.onnx");
    let cases: [(Vec<String>, i32, &str); 4] = [
        (vec!["--int8".into(), "--data".into(), "/no/such/data".into()], 1, "cannot open /no/such/data/X_train.npy"),
        (vec!["--int8".into(), "--data".into(), other.to_str().unwrap().into()], 1, "but the run takes 32x32x3"),
        (vec!["--data".into(), other.to_str().unwrap().into()], 2, "--int8"),
        (vec!["--int8".into(), "--max-map-drop".into(), "1.5".into()], 2, "not an mAP difference between 0 and 1"),
    ];
    for (args, code, message) in cases {
        let o = export(&run_dir, &out, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(message), "{args:?}: {err}");
        if code == 1 {
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        }
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}

/// `--engine`: ONNX Runtime on the run's exported file gives predict's and evaluate's
/// libtorch results (1e-4, same labels); auto picks it once the run is exported; a missing
/// or stale file is one clear error with `--engine onnx`, and auto falls back to libtorch.
#[test]
fn the_onnx_runtime_engine_scores_like_libtorch_and_refuses_stale_files() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _, run_dir) = best_run(dir.path(), 24, 32, &["--epochs", "2"]);
    let images = test_images(&data, &dir.path().join("images"));
    let predict = |engine: &str, extra: &[&str]| {
        run(bin("predict").arg("--run").arg(&run_dir).args(["--threads", "2", "--engine", engine]).args(extra).arg(&images))
    };
    let o = predict("onnx", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("has no model.onnx: run `export --run"), "{}", stderr(&o));

    let o = run(bin("export").arg("--run").arg(&run_dir).arg("-q"));
    assert!(o.status.success(), "{}", stderr(&o));
    let (torch, onnx, auto) = (predict("torch", &[]), predict("onnx", &[]), predict("auto", &[]));
    assert!(stderr(&torch).contains("on libtorch") && stderr(&onnx).contains("on onnxruntime"), "{}", stderr(&onnx));
    assert!(stderr(&auto).contains("on onnxruntime"), "auto uses the exported file: {}", stderr(&auto));
    let (want, got) = (rows(&stdout(&torch)), rows(&stdout(&onnx)));
    assert_eq!(want.len(), got.len());
    for (path, (labels, p)) in &want {
        let (l, q) = &got[path];
        let diff = p.iter().zip(q).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff <= 1e-4 && labels == l, "{path}: {p:?} {labels} vs {q:?} {l}");
    }
    let evaluate = |engine: &str| {
        let o = run(bin("evaluate").arg("--data").arg(&data).arg("--run").arg(&run_dir).args(["-q", "--no-select", "--engine", engine]));
        assert!(o.status.success(), "{}", stderr(&o));
        read_json(&run_dir.join("evaluation.json"))
    };
    let (a, b) = (evaluate("torch"), evaluate("onnx"));
    assert_eq!((a["engine"].as_str(), b["engine"].as_str()), (Some("libtorch"), Some("onnxruntime")));
    assert!((a["mAP"].as_f64().unwrap() - b["mAP"].as_f64().unwrap()).abs() < 1e-6);
    assert!((a["macro_f1"].as_f64().unwrap() - b["macro_f1"].as_f64().unwrap()).abs() < 1e-9);

    // A file exported without TTA does not serve a TTA request: an error with --engine onnx,
    // libtorch (and a note) with auto.
    let o = predict("onnx", &["--tta"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not match its run (the run uses flip TTA, the file does not); export it again"), "{}", stderr(&o));
    let o = predict("auto", &["--tta"]);
    assert!(o.status.success() && stderr(&o).contains("on libtorch (model.onnx not used:"), "{}", stderr(&o));
    // A file that is not ONNX at all.
    std::fs::write(run_dir.join("model.onnx"), b"not onnx").unwrap();
    let o = predict("onnx", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("ONNX Runtime cannot load it"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
}
