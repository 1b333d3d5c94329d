//! Integration tests of the real `voc-prep` binary on generated data.

use crate::util::*;
use serde_json::Value;
use std::path::Path;
use vocml_core::io::npy::{DType, NpyArray};

fn prep(voc: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    run(bin("voc-prep").arg("--voc-root").arg(voc).arg("--out").arg(out).arg("-q").args(extra))
}

fn ids(m: &Value, split: &str) -> Vec<String> {
    m["splits"][split]["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn y_rows(out: &Path, split: &str) -> Vec<Vec<f32>> {
    let y = NpyArray::open(&out.join(format!("y_{split}.npy"))).unwrap();
    let c = y.shape()[1];
    y.to_f32_vec().unwrap().chunks(c).map(|r| r.to_vec()).collect()
}

#[test]
fn synthetic_dataset_prepares_with_consistent_arrays_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let voc = dir.path().join("voc");
    synth(&voc, 120, 3);
    let out = dir.path().join("pd");
    let o = prep(&voc, &out, &[]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("images"), "{}", stdout(&o));
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["classes"], serde_json::json!(["person", "chair", "dog", "sofa"]));
    let mut all = Vec::new();
    for split in ["train", "val", "test"] {
        let x = NpyArray::open(&out.join(format!("X_{split}.npy"))).unwrap();
        let n = m["splits"][split]["count"].as_u64().unwrap() as usize;
        assert_eq!(x.shape(), &[n, 224, 224, 3]);
        assert_eq!(x.dtype(), DType::U8);
        let y = y_rows(&out, split);
        assert_eq!(y.len(), n);
        // Labels agree with the XML of each id, and every kept image has a target class.
        for (id, row) in ids(&m, split).iter().zip(&y) {
            let xml = std::fs::read_to_string(voc.join(format!("Annotations/{id}.xml"))).unwrap();
            for (c, class) in ["person", "chair", "dog", "sofa"].iter().enumerate() {
                let has = xml.contains(&format!("<name>{class}</name>"));
                assert_eq!(row[c] == 1.0, has, "{id} {class}");
            }
            assert!(row.iter().any(|&v| v == 1.0));
        }
        // Per-class counts in the manifest match the arrays.
        for (c, class) in ["person", "chair", "dog", "sofa"].iter().enumerate() {
            let count = y.iter().filter(|r| r[c] == 1.0).count() as u64;
            assert_eq!(m["splits"][split]["per_class"][class].as_u64().unwrap(), count);
            assert!(count > 0, "class {class} missing from {split} (stratification)");
        }
        all.extend(ids(&m, split));
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "splits overlap");
}

#[test]
fn split_is_deterministic_and_seed_dependent() {
    let dir = tempfile::tempdir().unwrap();
    let voc = dir.path().join("voc");
    synth(&voc, 80, 1);
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    assert!(prep(&voc, &a, &["--seed", "5"]).status.success());
    assert!(prep(&voc, &b, &["--seed", "5"]).status.success());
    assert!(prep(&voc, &c, &["--seed", "6"]).status.success());
    let (ma, mb, mc) = (read_json(&a.join("manifest.json")), read_json(&b.join("manifest.json")), read_json(&c.join("manifest.json")));
    assert_eq!(ma["splits"], mb["splits"]);
    assert_ne!(ids(&ma, "train"), ids(&mc, "train"));
    assert_eq!(std::fs::read(a.join("X_val.npy")).unwrap(), std::fs::read(b.join("X_val.npy")).unwrap());
}

#[test]
fn everything_to_test_f32_small_size_and_all_classes() {
    let dir = tempfile::tempdir().unwrap();
    let voc = dir.path().join("voc");
    synth(&voc, 40, 2);
    let out = dir.path().join("pd");
    let o = prep(&voc, &out, &["--split", "0,0,1", "--dtype", "f32", "--size", "32", "--classes", "all", "--resize", "letterbox"]);
    assert!(o.status.success());
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["classes"].as_array().unwrap().len(), 20);
    assert_eq!(m["splits"]["train"]["count"], 0);
    let xt = NpyArray::open(&out.join("X_train.npy")).unwrap();
    assert_eq!(xt.shape(), &[0, 32, 32, 3]);
    let x = NpyArray::open(&out.join("X_test.npy")).unwrap();
    assert_eq!(x.dtype(), DType::F32);
    let v = x.to_f32_vec().unwrap();
    assert!(v.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(v.iter().any(|&p| p > 0.5));
    // Letterbox padding (gray 114) sits in the top-left corner of wide synthetic images.
    assert!((v[0] - 114.0 / 255.0).abs() < 1e-6, "{}", v[0]);
    // car and bird are among the 20 classes and appear; aeroplane never does.
    let y = y_rows(&out, "test");
    let col = |name: &str| m["classes"].as_array().unwrap().iter().position(|c| c == name).unwrap();
    assert!(y.iter().any(|r| r[col("car")] == 1.0));
    assert!(y.iter().all(|r| r[col("aeroplane")] == 0.0));
}

#[test]
fn numpy_loads_our_arrays_and_we_load_numpys() {
    let dir = tempfile::tempdir().unwrap();
    let voc = dir.path().join("voc");
    synth(&voc, 30, 4);
    let out = dir.path().join("pd");
    assert!(prep(&voc, &out, &["--size", "48"]).status.success());
    let x = NpyArray::open(&out.join("X_train.npy")).unwrap();
    let ours: u64 = x.read_all().unwrap().iter().map(|&b| b as u64).sum();
    let got = python_eval(&format!(
        "import numpy as np; x=np.load(r'{}'); y=np.load(r'{}'); print(x.shape, x.dtype, int(x.astype(np.uint64).sum()), y.dtype, y.shape)",
        out.join("X_train.npy").display(),
        out.join("y_train.npy").display()
    ));
    assert_eq!(got, format!("({}, 48, 48, 3) uint8 {ours} float32 ({}, 4)", x.rows(), x.rows()));

    let a = dir.path().join("a.npy");
    let b = dir.path().join("b.npy");
    let c = dir.path().join("c.npy");
    python_eval(&format!(
        "import numpy as np; np.save(r'{}', np.arange(24, dtype=np.float32).reshape(2,3,4)); \
         np.save(r'{}', np.arange(10, dtype=np.uint8)); \
         np.lib.format.write_array(open(r'{}','wb'), np.ones((3,2), np.float32), version=(2,0))",
        a.display(),
        b.display(),
        c.display()
    ));
    let fa = NpyArray::open(&a).unwrap();
    assert_eq!(fa.shape(), &[2, 3, 4]);
    assert_eq!(fa.to_f32_vec().unwrap(), (0..24).map(|v| v as f32).collect::<Vec<_>>());
    let fb = NpyArray::open(&b).unwrap();
    assert_eq!(fb.shape(), &[10]);
    assert_eq!(fb.read_all().unwrap(), (0..10).collect::<Vec<u8>>());
    assert_eq!(NpyArray::open(&c).unwrap().to_f32_vec().unwrap(), vec![1.0; 6]);
}

#[test]
fn imagesets_labels_and_difficult_options() {
    let dir = tempfile::tempdir().unwrap();
    let v = TinyVoc::new(&dir.path().join("voc"));
    v.add("a", &[("dog", false)]).add("b", &[("dog", true)]).add("c", &[("person", false)]);
    v.write_set("train", "a\nb\nc\n");
    v.write_set("dog_train", "a  1\nb  0\nc -1\n");
    v.write_set("person_train", "a -1\nb -1\nc  1\n");
    let classes = ["--classes", "dog,person", "--split", "0,0,1"];
    let out = dir.path().join("o1");
    assert!(prep(&v.root, &out, &[&classes[..], &["--labels", "imagesets", "--image-set", "train"]].concat()).status.success());
    assert_eq!(ids(&read_json(&out.join("manifest.json")), "test"), vec!["a", "c"]);
    assert_eq!(y_rows(&out, "test"), vec![vec![1.0, 0.0], vec![0.0, 1.0]]);

    let out = dir.path().join("o2");
    let args = [&classes[..], &["--labels", "imagesets", "--image-set", "train", "--difficult-as-positive"]].concat();
    assert!(prep(&v.root, &out, &args).status.success());
    assert_eq!(ids(&read_json(&out.join("manifest.json")), "test"), vec!["a", "b", "c"]);

    // Annotations: difficult objects count unless --ignore-difficult.
    let out = dir.path().join("o3");
    assert!(prep(&v.root, &out, &classes).status.success());
    assert_eq!(ids(&read_json(&out.join("manifest.json")), "test"), vec!["a", "b", "c"]);
    let out = dir.path().join("o4");
    assert!(prep(&v.root, &out, &[&classes[..], &["--ignore-difficult"]].concat()).status.success());
    assert_eq!(ids(&read_json(&out.join("manifest.json")), "test"), vec!["a", "c"]);
    // --keep-empty keeps b as an all-negative row.
    let out = dir.path().join("o5");
    assert!(prep(&v.root, &out, &[&classes[..], &["--ignore-difficult", "--keep-empty"]].concat()).status.success());
    assert_eq!(y_rows(&out, "test")[1], vec![0.0, 0.0]);

    // imagesets without --image-set is a clear error.
    let o = prep(&v.root, &dir.path().join("o6"), &["--labels", "imagesets"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("needs --image-set"), "{}", stderr(&o));
}

#[test]
fn bad_images_are_skipped_counted_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let v = TinyVoc::new(&dir.path().join("voc"));
    for id in ["good1", "good2", "empty", "trunc", "text", "png", "nofile"] {
        v.add_xml(id, &[("dog", false)]);
    }
    v.add_jpeg("good1", [10, 20, 30]);
    v.add_jpeg("good2", [40, 50, 60]);
    v.write_image("empty", b"");
    let full = TinyVoc::jpeg_bytes([1, 2, 3]);
    v.write_image("trunc", &full[..full.len() * 2 / 3]);
    v.write_image("text", b"this is not an image\n");
    let mut png = Vec::new();
    image::RgbaImage::from_pixel(20, 20, image::Rgba([0, 0, 255, 128]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    v.write_image("png", &png);
    v.write_set("train", "good1\ngood2\nempty\ntrunc\ntext\npng\nnofile\nghost\n");
    let out = dir.path().join("pd");
    let o = prep(&v.root, &out, &["--split", "0,0,1", "--image-set", "train"]);
    assert!(o.status.success());
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(ids(&m, "test"), vec!["good1", "good2", "png"]);
    let reasons: std::collections::BTreeMap<String, String> = m["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s["reason"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert_eq!(reasons["empty"], "empty file");
    assert!(reasons["trunc"].contains("truncated"));
    assert!(reasons["text"].contains("not an image"));
    assert_eq!(reasons["nofile"], "missing image file");
    assert_eq!(reasons["ghost"], "missing annotation file");
    let err = stderr(&o);
    assert!(err.contains("skipped 5 inputs"), "{err}");
}

#[test]
fn malformed_xml_fails_with_position_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let v = TinyVoc::new(&dir.path().join("voc"));
    v.add("ok", &[("dog", false)]);
    v.add_jpeg("bad", [0, 0, 0]);
    std::fs::write(v.root.join("Annotations/bad.xml"), "<annotation>\n<object><name>dog</nam>\n</annotation>").unwrap();
    let out = dir.path().join("pd");
    // An earlier good output must survive a failed run untouched.
    assert!(prep(&v.root, &out, &["--skip-bad", "--split", "0,0,1"]).status.success());
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    let o = prep(&v.root, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad.xml:2:"), "{err}");
    assert!(err.contains("--skip-bad"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error expected: {err}");
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "staging directory left behind: {leftovers:?}");
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["skipped"][0]["id"], "bad");
}

#[test]
fn usage_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let v = TinyVoc::new(&dir.path().join("voc"));
    v.add("a", &[("dog", false)]);
    let o = prep(&v.root, &dir.path().join("o"), &["--classes", "dog,unicorn"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown class \"unicorn\""), "{}", stderr(&o));
    let o = prep(&dir.path().join("nope"), &dir.path().join("o"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no such directory"));
    let o = prep(&v.root, &dir.path().join("o"), &["--split", "0.5,0.5"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(bin("voc-prep").arg("--no-such-flag"));
    assert_eq!(o.status.code(), Some(2));
    let o = run(bin("voc-prep").arg("--help"));
    assert!(stdout(&o).contains("Examples:"));
}

#[test]
fn refuses_to_replace_foreign_directory_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let v = TinyVoc::new(&dir.path().join("voc"));
    v.add("a", &[("dog", false)]);
    let out = dir.path().join("precious");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("thesis.tex"), "keep me").unwrap();
    let o = prep(&v.root, &out, &["--split", "0,0,1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"));
    assert_eq!(std::fs::read_to_string(out.join("thesis.tex")).unwrap(), "keep me");
    assert!(prep(&v.root, &out, &["--split", "0,0,1", "--force"]).status.success());
    assert!(out.join("manifest.json").exists() && !out.join("thesis.tex").exists());
}

#[test]
fn interrupted_run_leaves_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let voc = dir.path().join("voc");
    synth(&voc, 600, 9);
    let out = dir.path().join("pd");
    let child = bin("voc-prep")
        .arg("--voc-root")
        .arg(&voc)
        .arg("--out")
        .arg(&out)
        .args(["-q", "--size", "384", "--dtype", "f32"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the output is being staged, then interrupt.
    wait_for(std::time::Duration::from_secs(20), || staging_of(dir.path(), "pd", child.id())).expect("voc-prep never started staging");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out_put = child.wait_with_output().unwrap();
    assert_eq!(out_put.status.code(), Some(130), "{}", stderr(&out_put));
    assert!(stderr(&out_put).contains("interrupted"));
    assert!(!out.exists(), "interrupted run left {}", out.display());
    let stray: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn folds_test_every_image_once_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let voc = dir.path().join("voc");
    synth(&voc, 60, 3);
    let mut tested: Vec<String> = Vec::new();
    let mut everyone: Option<Vec<String>> = None;
    for i in 1..=3 {
        let out = dir.path().join(format!("fold{i}"));
        let o = run(bin("voc-prep").arg("--voc-root").arg(&voc).arg("--out").arg(&out).args([
            "-q",
            "--size",
            "32",
            "--fold",
            &format!("{i}/3"),
        ]));
        assert!(o.status.success(), "{}", stderr(&o));
        let m = read_json(&out.join("manifest.json"));
        assert_eq!(m["split"]["fold"], serde_json::json!({"index": i, "of": 3}));
        let ids = |s: &str| m["splits"][s]["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>();
        let mut all: Vec<String> = ["train", "val", "test"].iter().flat_map(|s| ids(s)).collect();
        all.sort();
        assert!(ids("val").len() * 4 < ids("train").len(), "val is a small share of the rest");
        match &everyone {
            Some(e) => assert_eq!(&all, e, "every fold holds the same images"),
            None => everyone = Some(all),
        }
        tested.extend(ids("test"));
    }
    tested.sort();
    assert_eq!(Some(tested), everyone, "over the folds, every image is tested exactly once");
    let o = run(bin("voc-prep").arg("--voc-root").arg(&voc).arg("--out").arg(dir.path().join("bad")).args(["-q", "--fold", "4/3"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected I/K"), "{}", stderr(&o));
}
