//! The classification head: hidden layers Linear -> ReLU -> Dropout, then the output Linear,
//! named like PyTorch's `nn.Sequential` (`head.0`, `head.3`, `head.6`, ...). The default is
//! one hidden layer of 128 units with dropout 0.2 (`head.0`, `head.3`); a linear head
//! (logistic regression on the features) is the output layer alone (`head.0`), which is also
//! what follows the from-scratch models' own dense layers. Outputs logits; the task turns
//! them into probabilities (sigmoid per class, or softmax per label group).

use anyhow::{bail, Result};
use tch::{nn, nn::Module, Tensor};

/// Width of the default hidden layer.
pub const HIDDEN: i64 = 128;
/// Dropout probability after the default hidden layer.
pub const DROPOUT: f64 = 0.2;
/// Widest hidden layer a head may ask for.
pub const MAX_WIDTH: i64 = 16384;

/// The head's shape: hidden widths, each followed by ReLU and its dropout probability.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadLayout {
    pub hidden: Vec<i64>,
    pub dropout: Vec<f64>,
}

impl HeadLayout {
    /// Dense(128) -> ReLU -> Dropout(0.2): the references' head.
    pub fn default_mlp() -> Self {
        HeadLayout { hidden: vec![HIDDEN], dropout: vec![DROPOUT] }
    }

    /// No hidden layer: a linear classifier on the features.
    pub fn linear() -> Self {
        HeadLayout { hidden: Vec::new(), dropout: Vec::new() }
    }

    /// Hidden widths with their dropouts; `dropout` empty means 0.2 after each layer, one value
    /// applies to every layer, otherwise one per layer.
    pub fn new(hidden: Vec<i64>, dropout: Vec<f64>) -> Result<Self> {
        let dropout = match dropout.len() {
            0 => vec![DROPOUT; hidden.len()],
            1 => vec![dropout[0]; hidden.len()],
            _ => dropout,
        };
        let layout = HeadLayout { hidden, dropout };
        layout.validate()?;
        Ok(layout)
    }

    /// Checks widths, probabilities and that they pair up.
    pub fn validate(&self) -> Result<()> {
        if let Some(w) = self.hidden.iter().find(|w| !(1..=MAX_WIDTH).contains(*w)) {
            bail!("head width {w}: expected 1..={MAX_WIDTH} units");
        }
        if let Some(p) = self.dropout.iter().find(|p| !(p.is_finite() && (0.0..1.0).contains(*p))) {
            bail!("head dropout {p}: expected a probability in [0, 1)");
        }
        if self.dropout.len() != self.hidden.len() {
            bail!("{} head dropout values for {} hidden layers: give one, or one per layer", self.dropout.len(), self.hidden.len());
        }
        Ok(())
    }

    /// `512,256 / 0.4,0.3`-style description; `linear` without hidden layers.
    pub fn describe(&self) -> String {
        if self.hidden.is_empty() {
            return "linear".into();
        }
        let join = |v: Vec<String>| v.join(",");
        format!(
            "{} / dropout {}",
            join(self.hidden.iter().map(|w| w.to_string()).collect()),
            join(self.dropout.iter().map(|p| p.to_string()).collect())
        )
    }
}

/// The head's layers.
#[derive(Debug)]
pub struct Head {
    hidden: Vec<(nn::Linear, f64)>,
    out: nn::Linear,
}

impl Head {
    /// Builds the head under `p` (use `root / "head"`) from `features` inputs to `classes`
    /// logits with the given hidden layers.
    pub fn new(p: &nn::Path, features: i64, classes: i64, layout: &HeadLayout) -> Self {
        let mut width = features;
        let mut hidden = Vec::new();
        for (i, (&w, &drop)) in layout.hidden.iter().zip(&layout.dropout).enumerate() {
            hidden.push((nn::linear(p / (3 * i), width, w, Default::default()), drop));
            width = w;
        }
        let out = nn::linear(p / (3 * layout.hidden.len()), width, classes, Default::default());
        Head { hidden, out }
    }

    /// Logits `[N, C]`; dropout is active only when `train`.
    pub fn forward_t(&self, features: &Tensor, train: bool) -> Tensor {
        let mut h = features.shallow_clone();
        for (fc, drop) in &self.hidden {
            h = fc.forward(&h).relu().dropout(*drop, train);
        }
        self.out.forward(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_named_like_a_pytorch_sequential() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let layout = HeadLayout::new(vec![512, 256], vec![0.4, 0.3]).unwrap();
        let head = Head::new(&(vs.root() / "head"), 1280, 4, &layout);
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(names, ["head.0.bias", "head.0.weight", "head.3.bias", "head.3.weight", "head.6.bias", "head.6.weight"]);
        assert_eq!(vs.variables()["head.3.weight"].size(), [256, 512]);
        assert_eq!(head.forward_t(&Tensor::zeros([2, 1280], (tch::Kind::Float, tch::Device::Cpu)), true).size(), [2, 4]);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        Head::new(&(vs.root() / "head"), 1280, 4, &HeadLayout::linear());
        assert_eq!(vs.variables()["head.0.weight"].size(), [4, 1280]);
    }

    #[test]
    fn dropout_values_pair_with_layers() {
        assert_eq!(HeadLayout::new(vec![512, 256], vec![]).unwrap().dropout, [0.2, 0.2]);
        assert_eq!(HeadLayout::new(vec![512, 256], vec![0.5]).unwrap().dropout, [0.5, 0.5]);
        let err = HeadLayout::new(vec![512, 256, 64], vec![0.4, 0.3]).unwrap_err().to_string();
        assert!(err.contains("2 head dropout values for 3 hidden layers"), "{err}");
        assert!(HeadLayout::new(vec![0], vec![]).unwrap_err().to_string().contains("head width 0"));
        assert!(HeadLayout::new(vec![64], vec![1.0]).unwrap_err().to_string().contains("head dropout 1"));
    }
}
