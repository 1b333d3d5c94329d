//! The interface every backbone network implements. Most state only their feature map,
//! ImageNet classifier, blocks and convolution + BatchNorm pairs; pooling the map into
//! features and the ImageNet logits are written once here.

use super::layers::ConvBn;
use tch::nn::Module;
use tch::Tensor;

/// A backbone network: pooled features, and ImageNet logits when built with its classifier.
pub trait BackboneNet: Send + std::fmt::Debug {
    /// The last convolutional feature map `[N, C, h, w]`, the map `features` pools (what
    /// Grad-CAM explains); `None` for backbones without one here.
    fn feature_map(&self, xs: &Tensor) -> Option<Tensor> {
        let _ = xs;
        None
    }
    /// Global-average-pooled features, `[N, feature_dim]`, from normalised `[N, 3, H, W]`
    /// input: the pooled [`feature_map`](Self::feature_map), unless a backbone says otherwise.
    fn features(&self, xs: &Tensor) -> Tensor {
        let map = self.feature_map(xs).expect("a backbone without a feature map defines its features");
        map.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
    /// Features in training mode (`train`: BatchNorm batch statistics and dropout) for the
    /// models trained from scratch; the ImageNet backbones keep BatchNorm in eval mode.
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let _ = train;
        self.features(xs)
    }
    /// Features the head sees after the pooled [`feature_map`](Self::feature_map) (those of
    /// the other sizes of a multi-scale backbone); `None` when the pooled map is all.
    fn extra_features(&self, xs: &Tensor) -> Option<Tensor> {
        let _ = xs;
        None
    }
    /// Whether [`trunk`](Self::trunk) and [`tail_features`](Self::tail_features) split this
    /// backbone before its last `tail_blocks` blocks.
    fn splits_before(&self, tail_blocks: usize) -> bool {
        let _ = tail_blocks;
        false
    }
    /// The activations the last `tail_blocks` of [`block_prefixes`](Self::block_prefixes)
    /// start from (the frozen trunk's output, what cached-tail fine-tuning caches); `None`
    /// where this backbone cannot be split there.
    fn trunk(&self, xs: &Tensor, tail_blocks: usize) -> Option<Tensor> {
        let _ = (xs, tail_blocks);
        None
    }
    /// Pooled features of the last `tail_blocks` blocks run on [`trunk`](Self::trunk)
    /// activations: `tail_features(trunk(x, t), t) == features(x)` up to float rounding.
    fn tail_features(&self, trunk: &Tensor, tail_blocks: usize) -> Option<Tensor> {
        let _ = (trunk, tail_blocks);
        None
    }
    /// The 1000-class ImageNet classifier on the features, when built with it.
    fn imagenet_classifier(&self) -> Option<&dyn Module> {
        None
    }
    /// ImageNet logits `[N, 1000]`; panics if built without the classifier.
    fn imagenet_logits(&self, xs: &Tensor) -> Tensor {
        self.imagenet_classifier().expect("built without the ImageNet classifier").forward(&self.features(xs))
    }
    /// Variable-name prefixes of the backbone's blocks, input to output; fine-tuning
    /// unfreezes the last N of them.
    fn block_prefixes(&self) -> Vec<String>;
    /// Every convolution + BatchNorm pair, for [`fold_frozen_batchnorm`].
    fn conv_bns(&self) -> Vec<&ConvBn> {
        Vec::new()
    }
}

/// Folds BatchNorm into the convolution of every pair whose parameters are frozen and
/// unfolds the trainable ones. Call after loading weights and whenever what is trainable
/// changes; the output is the same up to float rounding, the frozen part runs faster.
pub fn fold_frozen_batchnorm(net: &dyn BackboneNet) {
    for cb in net.conv_bns() {
        if cb.is_trainable() {
            cb.unfold();
        } else {
            cb.fold();
        }
    }
}
