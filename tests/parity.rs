//! Parity with Python torchvision: a randomly initialised model saved from torchvision gives
//! the same eval-mode outputs in Rust (max abs diff < 1e-4), and its keys load exactly.

use crate::util::*;
use std::process::Command;
use vocml_core::model::weights::load_into;
use vocml_core::model::BackboneKind;

fn parity(kind: BackboneKind) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("parity.safetensors");
    let st = Command::new(python()).arg(repo_root().join("scripts/export_parity.py")).arg(kind.name()).arg(&file).status().unwrap();
    assert!(st.success(), "export_parity.py failed (is torchvision installed? run `make setup`)");
    let all = tch::Tensor::read_safetensors(&file).unwrap();
    let mut model = Vec::new();
    let (mut input, mut output) = (None, None);
    for (k, v) in all {
        match k.as_str() {
            "input" => input = Some(v),
            "output" => output = Some(v),
            _ => model.push((k.trim_start_matches("model.").to_string(), v)),
        }
    }
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = kind.build(&vs.root(), true);
    let report = load_into(&vs, model, &file, &[], &[]).unwrap();
    assert!(report.ignored.iter().all(|k| k.ends_with("num_batches_tracked")), "{:?}", report.ignored);
    let got = tch::no_grad(|| net.imagenet_logits(&input.unwrap()));
    let diff = (got - output.unwrap()).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "{}: max abs diff {diff}", kind.name());
}

#[test]
fn convnext_tiny_matches_torchvision() {
    parity(BackboneKind::ConvnextTiny);
}

/// The real EfficientNet-Lite checkpoint installed by `make setup`, against an independent
/// PyTorch model of it (scripts/export_lite_parity.py): features and ImageNet logits, with
/// BatchNorm as it is and folded into the convolutions (as training and inference run it).
fn lite_parity(kind: BackboneKind, n: u32) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lite.safetensors");
    let st = Command::new(python()).arg(repo_root().join("scripts/export_lite_parity.py")).arg(n.to_string()).arg(&file).status().unwrap();
    assert!(st.success(), "export_lite_parity.py failed (run `make setup`)");
    let want: std::collections::HashMap<String, tch::Tensor> = tch::Tensor::read_safetensors(&file).unwrap().into_iter().collect();
    let weights = repo_root().join(format!(".venv/vocml-weights/{}.safetensors", kind.name()));
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = kind.build(&vs.root(), true);
    let tensors = vocml_core::model::weights::read_checkpoint(&weights).unwrap();
    let report = load_into(&vs, tensors, &weights, &[], &[]).unwrap();
    assert!(report.ignored.iter().all(|k| k.ends_with("num_batches_tracked")), "{:?}", report.ignored);
    let x = &want["input"];
    for folded in [false, true] {
        if folded {
            vs.freeze();
            vocml_core::model::fold_frozen_batchnorm(net.as_ref());
        }
        let (f, y) = tch::no_grad(|| (net.features(x), net.imagenet_logits(x)));
        let df = (f - &want["features"]).abs().max().double_value(&[]);
        let dy = (y - &want["logits"]).abs().max().double_value(&[]);
        assert!(df < 1e-4 && dy < 1e-3, "{} (folded {folded}): features max abs diff {df}, logits {dy}", kind.name());
    }
}

#[test]
fn efficientnet_lite0_matches_its_checkpoint_in_pytorch() {
    lite_parity(BackboneKind::EfficientnetLite0, 0);
}

#[test]
fn efficientnet_lite1_matches_its_checkpoint_in_pytorch() {
    lite_parity(BackboneKind::EfficientnetLite1, 1);
}

#[test]
fn efficientnet_lite2_matches_its_checkpoint_in_pytorch() {
    lite_parity(BackboneKind::EfficientnetLite2, 2);
}

#[test]
fn mobilenet_v2_matches_torchvision() {
    parity(BackboneKind::MobilenetV2);
}

#[test]
fn efficientnet_b0_matches_torchvision() {
    parity(BackboneKind::EfficientnetB0);
}

#[test]
fn resnet50_matches_torchvision() {
    parity(BackboneKind::Resnet50);
}

#[test]
fn resnet18_matches_torchvision() {
    parity(BackboneKind::Resnet18);
}

#[test]
fn vgg16_matches_torchvision() {
    parity(BackboneKind::Vgg16);
}

#[test]
fn googlenet_matches_torchvision() {
    parity(BackboneKind::Googlenet);
}

#[test]
fn vit_b_16_matches_torchvision() {
    parity(BackboneKind::VitB16);
}

/// Grad-CAM maps of a randomly initialised torchvision backbone and a random head equal the
/// Python reference computed with autograd (scripts/export_gradcam.py) within 1e-4.
fn grad_cam_parity(kind: BackboneKind) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gradcam.safetensors");
    let st = Command::new(python()).arg(repo_root().join("scripts/export_gradcam.py")).arg(kind.name()).arg(&file).status().unwrap();
    assert!(st.success(), "export_gradcam.py failed");
    let (mut model, mut head) = (Vec::new(), Vec::new());
    let (mut input, mut cams) = (None, None);
    for (k, v) in tch::Tensor::read_safetensors(&file).unwrap() {
        match k.as_str() {
            "input" => input = Some(v),
            "cams" => cams = Some(v),
            h if h.starts_with("head.") => head.push((h.to_string(), v)),
            m => model.push((m.trim_start_matches("model.").to_string(), v)),
        }
    }
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = kind.build(&vs.root(), true);
    load_into(&vs, model, &file, &[], &[]).unwrap();
    let hvs = tch::nn::VarStore::new(tch::Device::Cpu);
    let h = vocml_core::model::head::Head::new(
        &(hvs.root() / "head"),
        kind.feature_dim(),
        4,
        &vocml_core::model::head::HeadLayout::default_mlp(),
    );
    load_into(&hvs, head, &file, &[], &[]).unwrap();
    let got = vocml_core::model::grad_cam::grad_cam(net.as_ref(), &h, &input.unwrap(), &[0, 1, 2, 3]).unwrap();
    let want = cams.unwrap();
    assert_eq!(got.size(), want.size());
    let diff = (got - want).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "{}: Grad-CAM max abs diff {diff}", kind.name());
}

#[test]
fn grad_cam_of_mobilenet_v2_matches_autograd() {
    grad_cam_parity(BackboneKind::MobilenetV2);
}

#[test]
fn grad_cam_of_efficientnet_b0_matches_autograd() {
    grad_cam_parity(BackboneKind::EfficientnetB0);
}

#[test]
fn grad_cam_of_resnet18_matches_autograd() {
    grad_cam_parity(BackboneKind::Resnet18);
}

#[test]
fn grad_cam_of_vgg16_matches_autograd() {
    grad_cam_parity(BackboneKind::Vgg16);
}

#[test]
fn grad_cam_of_googlenet_matches_autograd() {
    grad_cam_parity(BackboneKind::Googlenet);
}
