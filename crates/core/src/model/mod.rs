//! Models: ImageNet backbones whose variable names mirror their checkpoints one-to-one,
//! the multi-label head, and checkpoint loading with key and shape checks.

pub mod backbone;
pub mod efficientnet_b0;
pub mod efficientnet_lite0;
pub mod head;
pub mod layers;
pub mod mobilenet_v2;
pub mod resnet50;
pub mod weights;

pub use backbone::{BackboneKind, BackboneNet, Normalization};
