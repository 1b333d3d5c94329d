//! Opt-in tier on the real data in ../shared (skipped, with a message, when absent).

mod util;

use util::*;

#[test]
fn voc2007_train_imagesets_counts_match_the_official_lists() {
    let Some(shared) = shared_dir() else { return };
    let voc = shared.join("data/voc2007-train/VOCdevkit/VOC2007");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pd");
    let o = run(bin("voc-prep")
        .arg("--voc-root").arg(&voc).arg("--out").arg(&out)
        .args(["-q", "--labels", "imagesets", "--image-set", "train", "--size", "64"]));
    assert!(o.status.success());
    let m = read_json(&out.join("manifest.json"));
    let total: u64 = ["train", "val", "test"].iter().map(|s| m["splits"][s]["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 1323);
    for (class, n) in [("person", 1025), ("chair", 224), ("dog", 203), ("sofa", 111)] {
        let sum: u64 = ["train", "val", "test"].iter().map(|s| m["splits"][s]["per_class"][class].as_u64().unwrap()).sum();
        assert_eq!(sum, n, "{class}");
    }
    let skipped = m["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["id"], "009623");
    assert_eq!(skipped[0]["reason"], "missing image file");
    assert!(stderr(&o).contains("009623"));
}
