//! Models: ImageNet backbones whose variable names mirror their checkpoints one-to-one
//! (one file per torchvision source file),
//! the from-scratch models of the reference comparisons, the classification head, and
//! checkpoint loading with key and shape checks.

pub mod alexnet_like;
pub mod backbone;
pub mod convnext;
pub mod efficientnet_b0;
pub mod efficientnet_lite;
pub mod googlenet;
pub mod grad_cam;
pub mod head;
pub mod layers;
pub mod mobilenet_v2;
pub mod multi_scale;
pub mod net;
pub mod pretrained;
pub mod resnet;
pub mod sequential;
pub mod small_cnn;
pub mod smaller_vggnet;
pub mod vgg;
pub mod vit;
pub mod weights;

pub use backbone::{BackboneKind, Normalization};
pub use net::{fold_frozen_batchnorm, BackboneNet};

use tch::{nn, Tensor};

/// `t` (4-D) with channels-last strides (NHWC in memory, NCHW in shape), as PyTorch's
/// `contiguous(memory_format=torch.channels_last)`.
pub fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Moves every 4-D variable (convolution weights) of `vs` to channels-last memory, so
/// convolutions on channels-last input need no layout conversions.
pub fn to_channels_last(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            if v.dim() == 4 {
                let cl = channels_last(&v);
                v.set_data(&cl);
            }
        }
    });
}
