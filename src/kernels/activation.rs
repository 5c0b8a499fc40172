//! The activation that follows a norm. Upstream's decoders always use SiLU; diffusers'
//! `CogVideoXResnetBlock3D` takes any `get_activation` name (diffusers/models/activations.py
//! `ACT2CLS`: swish, silu, mish, gelu, relu), while its `conv_act` after `norm_out` stays SiLU.

use crate::tensor::Element;
use serde::{Deserialize, Serialize};

/// An element-wise activation, each written as PyTorch computes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    /// No activation (a norm applied on its own).
    #[serde(skip)]
    Identity,
    /// `y / (1 + exp(-y))` (`torch.nn.SiLU`; diffusers also calls it "swish").
    #[default]
    #[serde(alias = "swish")]
    Silu,
    /// `max(y, 0)`, NaN kept (`torch.nn.ReLU`).
    Relu,
    /// The exact GELU `y / 2 * (1 + erf(y / sqrt 2))` (`torch.nn.GELU()`, approximate="none").
    Gelu,
    /// `y * tanh(log1p(exp(y)))` (`torch.nn.Mish`).
    Mish,
}

impl Act {
    /// The names diffusers' `get_activation` accepts (it lower-cases its argument first).
    pub const DIFFUSERS_NAMES: [&'static str; 5] = ["swish", "silu", "mish", "gelu", "relu"];

    /// The activation diffusers' `get_activation(name)` builds; `None` if it raises.
    pub fn from_diffusers(name: &str) -> Option<Act> {
        match name.to_lowercase().as_str() {
            "swish" | "silu" => Some(Act::Silu),
            "mish" => Some(Act::Mish),
            "gelu" => Some(Act::Gelu),
            "relu" => Some(Act::Relu),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Act::Identity => "identity",
            Act::Silu => "silu",
            Act::Relu => "relu",
            Act::Gelu => "gelu",
            Act::Mish => "mish",
        }
    }

    /// The activation of one value.
    #[inline]
    pub fn apply<T: Element>(self, y: T) -> T {
        match self {
            Act::Identity => y,
            Act::Silu => y / (T::ONE + (-y).exp()),
            // `y < 0` is false for NaN, so NaN passes through as in PyTorch.
            Act::Relu => {
                if y < T::ZERO {
                    T::ZERO
                } else {
                    y
                }
            }
            Act::Gelu => {
                let half = T::from_f64(0.5);
                y * half * (T::ONE + (y * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf())
            }
            Act::Mish => y * y.exp().ln_1p().tanh(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_values_match_their_definitions() {
        // GELU(1) = 0.5 * (1 + erf(1/sqrt 2)) = 0.8413447460685429 (Phi(1)).
        assert!((Act::Gelu.apply(1.0f64) - 0.841_344_746_068_542_9).abs() < 1e-15);
        // Mish(1) = tanh(ln(1 + e)) = 0.8650983882673103.
        assert!((Act::Mish.apply(1.0f64) - 0.865_098_388_267_310_3).abs() < 1e-15);
        assert_eq!(Act::Relu.apply(-2.0f32), 0.0);
        assert!(Act::Relu.apply(f32::NAN).is_nan());
        assert_eq!(Act::Mish.apply(100.0f32), 100.0);
        assert_eq!(Act::from_diffusers("Swish"), Some(Act::Silu));
        assert_eq!(Act::from_diffusers("tanh"), None);
    }
}
