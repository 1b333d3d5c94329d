//! ViT-B/16 as in torchvision's `vision_transformer.py`, with its parameter names
//! (`conv_proj`, `class_token`, `encoder.pos_embedding`,
//! `encoder.layers.encoder_layer_N.{ln_1, self_attention, ln_2, mlp.0, mlp.3}`, `encoder.ln`,
//! `heads.head`). Features: the class token after the final LayerNorm (768). Inputs other
//! than 224x224 get the position embeddings resized bicubically, as torchvision's
//! `interpolate_embeddings` does when fine-tuning at another size.

use super::net::BackboneNet;
use tch::{nn, nn::Module, Tensor};

const PATCH: i64 = 16;
const WIDTH: i64 = 768;
const HEADS: i64 = 12;
const DEPTH: usize = 12;
const MLP: i64 = 3072;
const GRID: i64 = 14;

fn layer_norm(p: nn::Path) -> nn::LayerNorm {
    nn::layer_norm(p, vec![WIDTH], nn::LayerNormConfig { eps: 1e-6, ..Default::default() })
}

/// `nn.MultiheadAttention(768, 12, batch_first=True)` in eval mode (self-attention, no mask).
#[derive(Debug)]
struct SelfAttention {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: nn::Linear,
}

impl SelfAttention {
    fn new(p: nn::Path) -> Self {
        SelfAttention {
            in_proj_weight: p.var("in_proj_weight", &[3 * WIDTH, WIDTH], nn::Init::Uniform { lo: -0.05, up: 0.05 }),
            in_proj_bias: p.var("in_proj_bias", &[3 * WIDTH], nn::Init::Const(0.0)),
            out_proj: nn::linear(&p / "out_proj", WIDTH, WIDTH, Default::default()),
        }
    }
}

impl Module for SelfAttention {
    fn forward(&self, xs: &Tensor) -> Tensor {
        // The batch size stays -1 in shapes, so a traced graph (ONNX export) keeps it dynamic.
        let l = xs.size()[1];
        let heads = |t: &Tensor| t.view([-1, l, HEADS, WIDTH / HEADS]).transpose(1, 2);
        let qkv = xs.linear(&self.in_proj_weight, Some(&self.in_proj_bias)).chunk(3, -1);
        let (q, k, v) = (heads(&qkv[0]), heads(&qkv[1]), heads(&qkv[2]));
        let scale = 1.0 / ((WIDTH / HEADS) as f64).sqrt();
        let attn = (q.matmul(&k.transpose(-2, -1)) * scale).softmax(-1, q.kind());
        self.out_proj.forward(&attn.matmul(&v).transpose(1, 2).reshape([-1, l, WIDTH]))
    }
}

/// torchvision's `EncoderBlock`: pre-norm attention and MLP, each with a residual.
#[derive(Debug)]
struct EncoderBlock {
    ln_1: nn::LayerNorm,
    self_attention: SelfAttention,
    ln_2: nn::LayerNorm,
    mlp_0: nn::Linear,
    mlp_3: nn::Linear,
}

impl EncoderBlock {
    fn new(p: &nn::Path) -> Self {
        EncoderBlock {
            ln_1: layer_norm(p / "ln_1"),
            self_attention: SelfAttention::new(p / "self_attention"),
            ln_2: layer_norm(p / "ln_2"),
            mlp_0: nn::linear(p / "mlp" / 0, WIDTH, MLP, Default::default()),
            mlp_3: nn::linear(p / "mlp" / 3, MLP, WIDTH, Default::default()),
        }
    }
}

impl Module for EncoderBlock {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let x = self.self_attention.forward(&self.ln_1.forward(xs)) + xs;
        let y = self.mlp_3.forward(&self.mlp_0.forward(&self.ln_2.forward(&x)).gelu("none"));
        x + y
    }
}

/// ViT-B/16 backbone.
#[derive(Debug)]
pub struct VitB16 {
    conv_proj: nn::Conv2D,
    class_token: Tensor,
    pos_embedding: Tensor,
    layers: Vec<EncoderBlock>,
    ln: nn::LayerNorm,
    head: Option<nn::Linear>,
}

impl VitB16 {
    pub fn new(p: &nn::Path, imagenet_head: bool) -> Self {
        let enc = p / "encoder";
        let conv_proj = nn::conv2d(p / "conv_proj", 3, WIDTH, PATCH, nn::ConvConfig { stride: PATCH, ..Default::default() });
        VitB16 {
            conv_proj,
            class_token: p.var("class_token", &[1, 1, WIDTH], nn::Init::Const(0.0)),
            pos_embedding: enc.var("pos_embedding", &[1, GRID * GRID + 1, WIDTH], nn::Init::Randn { mean: 0.0, stdev: 0.02 }),
            layers: (0..DEPTH).map(|i| EncoderBlock::new(&(&enc / "layers" / format!("encoder_layer_{i}")))).collect(),
            ln: layer_norm(&enc / "ln"),
            head: imagenet_head.then(|| nn::linear(p / "heads" / "head", WIDTH, 1000, Default::default())),
        }
    }

    /// Position embeddings for an `h` x `w` patch grid (resized from 14 x 14 if needed).
    fn positions(&self, h: i64, w: i64) -> Tensor {
        if h == GRID && w == GRID {
            return self.pos_embedding.shallow_clone();
        }
        let cls = self.pos_embedding.narrow(1, 0, 1);
        let grid = self.pos_embedding.narrow(1, 1, GRID * GRID).reshape([1, GRID, GRID, WIDTH]).permute([0, 3, 1, 2]);
        let resized = grid.upsample_bicubic2d([h, w], true, None, None).permute([0, 2, 3, 1]).reshape([1, h * w, WIDTH]);
        Tensor::cat(&[cls, resized], 1)
    }
}

impl BackboneNet for VitB16 {
    fn features(&self, xs: &Tensor) -> Tensor {
        let patches = self.conv_proj.forward(xs);
        let (h, w) = (patches.size()[2], patches.size()[3]);
        let tokens = patches.flatten(2, 3).transpose(1, 2);
        // The class token broadcast over the batch without reading its size (kept dynamic
        // when traced).
        let class_tokens = tokens.narrow(1, 0, 1).zeros_like() + &self.class_token;
        let x = Tensor::cat(&[class_tokens, tokens], 1) + self.positions(h, w);
        let x = self.layers.iter().fold(x, |h, l| l.forward(&h));
        self.ln.forward(&x).select(1, 0)
    }

    fn imagenet_classifier(&self) -> Option<&dyn Module> {
        self.head.as_ref().map(|l| l as &dyn Module)
    }

    fn block_prefixes(&self) -> Vec<String> {
        (0..DEPTH).map(|i| format!("encoder.layers.encoder_layer_{i}.")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn other_input_sizes_resize_the_position_grid() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = VitB16::new(&vs.root(), false);
        assert_eq!(net.positions(GRID, GRID).size(), [1, 197, WIDTH]);
        let resized = net.positions(10, 12);
        assert_eq!(resized.size(), [1, 121, WIDTH]);
        // The class token's embedding is kept; the grid's corners stay (align_corners).
        let same = |a: Tensor, b: Tensor| (a - b).abs().max().double_value(&[]) < 1e-5;
        assert!(same(resized.narrow(1, 0, 2), net.pos_embedding.narrow(1, 0, 2)));
        let xs = Tensor::rand([1, 3, 160, 192], (Kind::Float, Device::Cpu));
        assert_eq!(tch::no_grad(|| net.features(&xs)).size(), [1, WIDTH]);
    }
}
