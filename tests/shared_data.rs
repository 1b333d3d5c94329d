//! Opt-in tier on the real data in ../shared: compiled as ignored tests when it is absent,
//! so the runner reports them as ignored rather than passed.

use crate::util::*;

#[test]
#[cfg_attr(not(vocml_shared_data), ignore = "needs ../shared (real VOC photos); absent here")]
fn voc2007_train_imagesets_counts_match_the_official_lists() {
    let shared = shared_dir();
    let voc = shared.join("data/voc2007-train/VOCdevkit/VOC2007");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pd");
    let o = run(bin("voc-prep").arg("--voc-root").arg(&voc).arg("--out").arg(&out).args([
        "-q",
        "--labels",
        "imagesets",
        "--image-set",
        "train",
        "--size",
        "64",
    ]));
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

/// Top-1 ImageNet class of each sample photo with a backbone and its ImageNet head.
fn imagenet_top1(kind: vocml_core::model::BackboneKind, weights: &std::path::Path) -> Vec<(String, i64)> {
    use vocml_core::io::image::{decode_file, ResizeMode, SquareResizer};
    use vocml_core::tensor::{normalize, to_unit_nchw};
    let shared = shared_dir();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = kind.build(&vs.root(), true);
    let tensors = vocml_core::model::weights::read_checkpoint(weights).unwrap();
    vocml_core::model::weights::load_into(&vs, tensors, weights, &[], &[]).unwrap();
    let mut out = Vec::new();
    for name in ["pig.jpg", "plane.jpg", "ios_dog.jpg"] {
        let img = decode_file(&shared.join("data/imagenet-samples").join(name), vocml_core::io::image::DEFAULT_MAX_PIXELS).unwrap();
        let mut r = SquareResizer::new(224, ResizeMode::Stretch, vocml_core::io::image::DEFAULT_MAX_PIXELS);
        let mut buf = vec![0u8; r.output_len()];
        r.resize_into(&img, &mut buf).unwrap();
        let px = tch::Tensor::from_slice(&buf).view([1, 224, 224, 3]);
        let x = normalize(&to_unit_nchw(&px, tch::Device::Cpu), &kind.normalization());
        let logits = tch::no_grad(|| net.imagenet_logits(&x));
        out.push((name.to_string(), logits.argmax(-1, false).int64_value(&[0])));
    }
    out
}

#[test]
#[cfg_attr(not(vocml_shared_data), ignore = "needs ../shared (real VOC photos); absent here")]
fn imagenet_samples_top1_with_real_checkpoints() {
    let shared = shared_dir();
    let expected = [341, 404, 258];
    use vocml_core::model::BackboneKind;
    let lite = |kind: BackboneKind| repo_root().join(format!(".venv/vocml-weights/{}.safetensors", kind.name()));
    let mnv2 = shared.join("weights/mobilenet_v2_qnnpack_dequant.safetensors");
    let checkpoints = [
        (BackboneKind::EfficientnetLite0, lite(BackboneKind::EfficientnetLite0)),
        (BackboneKind::EfficientnetLite1, lite(BackboneKind::EfficientnetLite1)),
        (BackboneKind::EfficientnetLite2, lite(BackboneKind::EfficientnetLite2)),
        (BackboneKind::MobilenetV2, mnv2),
    ];
    for (kind, w) in checkpoints {
        let got = imagenet_top1(kind, &w);
        let classes: Vec<i64> = got.iter().map(|g| g.1).collect();
        assert_eq!(classes, expected, "{kind:?}: {got:?}");
    }
}
