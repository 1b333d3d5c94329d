//! Integration tests of `voc-prep coco` and `voc-prep label-studio` on the synthetic VOC
//! dataset: the same labels per image as the VOC importer, skipped tasks listed, bad exports
//! refused with one line.

use crate::util::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use vocml_core::io::npy::NpyArray;

use vocml_core::dataset::classes::VOC_CLASSES as VOC20;

/// Every image of a prepared directory (all splits): id -> label row.
fn labels_by_id(out: &Path) -> BTreeMap<String, Vec<f32>> {
    let m = read_json(&out.join("manifest.json"));
    let mut all = BTreeMap::new();
    for split in ["train", "val", "test"] {
        let ids = m["splits"][split]["ids"].as_array().unwrap();
        if ids.is_empty() {
            continue;
        }
        let y = NpyArray::open(&out.join(format!("y_{split}.npy"))).unwrap();
        let c = y.shape()[1];
        for (id, row) in ids.iter().zip(y.to_f32_vec().unwrap().chunks(c)) {
            all.insert(id.as_str().unwrap().to_string(), row.to_vec());
        }
    }
    all
}

/// The object names of a VOC XML annotation.
fn object_names(xml: &str) -> Vec<String> {
    xml.split("<object>").skip(1).map(|o| o.split("<name>").nth(1).unwrap().split("</name>").next().unwrap().trim().to_string()).collect()
}

/// COCO instances JSON written from the synthetic VOC's XML (one instance per object).
fn coco_from_voc(voc: &Path) -> Value {
    let mut files: Vec<_> = std::fs::read_dir(voc.join("Annotations")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let (mut images, mut annotations) = (Vec::new(), Vec::new());
    for (i, f) in files.iter().enumerate() {
        let id = f.file_stem().unwrap().to_str().unwrap();
        images.push(json!({"id": i + 1, "file_name": format!("{id}.jpg"), "width": 1, "height": 1}));
        for name in object_names(&std::fs::read_to_string(f).unwrap()) {
            let cat = VOC20.iter().position(|c| *c == name).unwrap() + 1;
            annotations
                .push(json!({"id": annotations.len() + 1, "image_id": i + 1, "category_id": cat, "bbox": [0, 0, 1, 1], "iscrowd": 0}));
        }
    }
    let categories: Vec<Value> = VOC20.iter().enumerate().map(|(i, c)| json!({"id": i + 1, "name": c, "supercategory": "voc"})).collect();
    json!({"images": images, "annotations": annotations, "categories": categories})
}

fn voc_prep(args: &[&str]) -> std::process::Output {
    run(bin("voc-prep").args(args).args(["--size", "32", "--split", "0,0,1", "-q"]))
}

#[test]
fn coco_json_written_from_voc_xml_gives_the_voc_importers_labels() {
    let dir = tempfile::tempdir().unwrap();
    let voc = dir.path().join("voc");
    synth(&voc, 60, 5);
    let coco = dir.path().join("instances.json");
    std::fs::write(&coco, coco_from_voc(&voc).to_string()).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let o = voc_prep(&["--voc-root", voc.to_str().unwrap(), "--classes", "all", "--out", a.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let images = voc.join("JPEGImages");
    let o = voc_prep(&["coco", "--file", coco.to_str().unwrap(), "--images-root", images.to_str().unwrap(), "--out", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_json(&b.join("manifest.json"))["classes"], json!(VOC20));
    let (from_voc, from_coco) = (labels_by_id(&a), labels_by_id(&b));
    assert!(from_voc.len() > 40, "{}", from_voc.len());
    assert_eq!(from_voc, from_coco);

    // --classes picks and orders the columns; images with none of them are left out.
    let c = dir.path().join("c");
    let o = voc_prep(&[
        "coco",
        "--file",
        coco.to_str().unwrap(),
        "--images-root",
        images.to_str().unwrap(),
        "--classes",
        "dog,person",
        "--out",
        c.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let picked = labels_by_id(&c);
    let want: BTreeMap<String, Vec<f32>> =
        from_voc.iter().map(|(id, r)| (id.clone(), vec![r[11], r[14]])).filter(|(_, r)| r.iter().any(|&v| v > 0.5)).collect();
    assert_eq!(picked, want);

    for (body, expect) in [
        ("{\"images\": []}".to_string(), "not COCO instances JSON"),
        (json!({"images": [{"id": 1, "file_name": "000001.jpg"}], "annotations": [{"image_id": 1, "category_id": 99}], "categories": [{"id": 1, "name": "dog"}]}).to_string(), "unknown category_id 99"),
        (json!({"images": [{"id": 1, "file_name": "000001.jpg"}], "annotations": [{"image_id": 7, "category_id": 1}], "categories": [{"id": 1, "name": "dog"}]}).to_string(), "image_id 7, which is not in images"),
    ] {
        std::fs::write(&coco, body).unwrap();
        let o = voc_prep(&["coco", "--file", coco.to_str().unwrap(), "--images-root", images.to_str().unwrap(), "--out", dir.path().join("bad").to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(expect) && stderr(&o).trim().lines().count() == 1, "{}", stderr(&o));
        assert!(!dir.path().join("bad").exists());
    }
}

/// A Label Studio `JSON` export of the synthetic photos labelled with the 4 classes, plus
/// tasks that must be skipped.
fn label_studio_export(truth: &BTreeMap<String, Vec<f32>>) -> Value {
    let classes = ["person", "chair", "dog", "sofa"];
    let mut tasks = Vec::new();
    for (n, (id, row)) in truth.iter().enumerate() {
        let choices: Vec<&str> = classes.iter().zip(row).filter(|(_, &v)| v > 0.5).map(|(c, _)| *c).collect();
        // Half by local-files path, half by a mapped URL; a cancelled annotation before the real one.
        let image =
            if n % 2 == 0 { format!("/data/local-files/?d=JPEGImages/{id}.jpg") } else { format!("https://cdn.test/photos/{id}.jpg") };
        tasks.push(json!({"id": id, "data": {"image": image}, "annotations": [
            {"id": 1, "was_cancelled": true, "result": []},
            {"id": 2, "was_cancelled": false, "result": [{"from_name": "objects", "to_name": "image", "type": "choices", "value": {"choices": choices}}]}
        ]}));
    }
    let annotated = |choices: &[&str]| json!([{"id": 9, "result": [{"from_name": "objects", "to_name": "image", "type": "choices", "value": {"choices": choices}}]}]);
    tasks.push(json!({"id": "unlabelled", "data": {"image": "/data/local-files/?d=JPEGImages/000001.jpg"}, "annotations": []}));
    tasks.push(json!({"id": "elsewhere", "data": {"image": "https://other.test/x.jpg"}, "annotations": annotated(&["dog"])}));
    tasks.push(json!({"id": "gone", "data": {"image": "/data/local-files/?d=JPEGImages/missing.jpg"}, "annotations": annotated(&["dog"])}));
    Value::Array(tasks)
}

#[test]
fn label_studio_export_gives_its_annotations_labels_and_lists_what_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let voc = dir.path().join("voc");
    synth(&voc, 40, 6);
    let truth_dir = dir.path().join("truth");
    let o = voc_prep(&["--voc-root", voc.to_str().unwrap(), "--out", truth_dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let truth = labels_by_id(&truth_dir);
    let export = dir.path().join("export.json");
    std::fs::write(&export, label_studio_export(&truth).to_string()).unwrap();
    let out = dir.path().join("ls");
    let map = format!("https://cdn.test/photos/={}", voc.join("JPEGImages").display());
    let args = ["label-studio", "--file", export.to_str().unwrap(), "--images-root", voc.to_str().unwrap(), "--url-map", &map];
    let o = voc_prep(&[&args[..], &["--classes", "person,chair,dog,sofa", "--out", out.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(labels_by_id(&out), truth);
    let m = read_json(&out.join("manifest.json"));
    let skipped: BTreeMap<String, String> =
        m["skipped"].as_array().unwrap().iter().map(|s| (s["id"].as_str().unwrap().into(), s["reason"].as_str().unwrap().into())).collect();
    assert_eq!(skipped["unlabelled"], "no annotation");
    assert!(skipped["elsewhere"].contains("--url-map"), "{skipped:?}");
    assert_eq!(skipped["gone"], "missing image file");
    assert_eq!(m["source"]["kind"], "label-studio");

    // Without --url-map the URL tasks are skipped, not fetched.
    let o = voc_prep(&[
        "label-studio",
        "--file",
        export.to_str().unwrap(),
        "--images-root",
        voc.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(labels_by_id(&out).len(), truth.len().div_ceil(2));

    let bad = dir.path().join("bad");
    for (body, extra, expect) in [
        (
            json!([{"id": 1, "data": {"image": "a.jpg"}, "annotations": [{"result": [{"type": "labels", "from_name": "x", "value": {}}]}]}]),
            vec![],
            "no annotation has a choices result",
        ),
        (label_studio_export(&truth), vec!["--classes", "person,unicorn"], "no task is labelled \"unicorn\""),
        (label_studio_export(&truth), vec!["--from-name", "colour"], "no choices from <Choices name=\"colour\">"),
        (json!({"tasks": []}), vec![], "not a Label Studio JSON export"),
    ] {
        std::fs::write(&export, body.to_string()).unwrap();
        let o = voc_prep(&[&args[..], &extra[..], &["--out", bad.to_str().unwrap()]].concat());
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(expect) && stderr(&o).trim().lines().count() == 1, "{}", stderr(&o));
        assert!(!bad.exists());
    }
}
