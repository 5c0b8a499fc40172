//! Which upstream class a checkpoint in upstream / sat naming holds, told by its structure.
//! MOVQDecoder3D and the SAT CogVideoX `ContextParallelDecoder3D` share every tensor name
//! (spec 9), so the names alone cannot tell them apart; what each class can build can:
//! ContextParallelDecoder3D never builds attention or a post_quant_conv (it does take add_conv
//! and resamp_with_conv), and the SAT CogVideoX release is a KL VAE (its encoder's conv_out
//! gives mean and log-variance, 2 x z_channels) where MoVQ is a VQ model.

use crate::model::DecoderClass;
use std::collections::BTreeMap;

/// A class and the structural reason it was chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassChoice {
    pub class: DecoderClass,
    pub reason: String,
}

/// Detects the class of a decoder in upstream naming from every tensor of the checkpoint
/// (full names: `shapes`), the decoder's tensors being those under `prefix`. `None` when the
/// tensors fit both MOVQDecoder3D and ContextParallelDecoder3D.
pub fn detect_upstream_class(shapes: &BTreeMap<String, Vec<usize>>, prefix: &str) -> Option<ClassChoice> {
    let dec = |rest: &str| shapes.get(&format!("{prefix}{rest}"));
    let dec_names = || shapes.keys().filter_map(|k| k.strip_prefix(prefix));
    let choice = |class, reason: String| Some(ClassChoice { class, reason });
    if dec_names().any(|k| k.starts_with("post_quant_conv.")) {
        return choice(
            DecoderClass::NewDecoder3d,
            "it has a post_quant_conv, which only NewDecoder3D builds".into(),
        );
    }
    let movq = |what: String| {
        choice(DecoderClass::MovqDecoder3d, format!("{what}, which ContextParallelDecoder3D never builds"))
    };
    if let Some(k) = dec_names().find(|k| k.contains(".attn.") || k.starts_with("mid.attn")) {
        return movq(format!("it has attention blocks (`{prefix}{k}`)"));
    }
    let z_channels = dec("conv_in.conv.weight").and_then(|s| s.get(1).copied());
    // Outside the decoder: the rest of a whole-VAE file.
    if let Some(k) = shapes.keys().find(|k| k.starts_with("quantize.") || k.starts_with("quantizer.")) {
        return choice(
            DecoderClass::MovqDecoder3d,
            format!("it is a VQ model (`{k}`); the SAT CogVideoX VAE is a KL VAE"),
        );
    }
    let enc_out = shapes.get("encoder.conv_out.conv.weight").and_then(|s| s.first().copied());
    match (enc_out, z_channels) {
        (Some(e), Some(z)) if e == 2 * z => choice(
            DecoderClass::ContextParallelDecoder3d,
            format!(
                "the file holds a KL VAE: encoder.conv_out gives {e} = 2 x z_channels channels (mean and \
                 log-variance, the SAT CogVideoX VAE's DiagonalGaussianRegularizer), and the decoder has \
                 nothing ContextParallelDecoder3D cannot build"
            ),
        ),
        (Some(e), Some(z)) if e == z => choice(
            DecoderClass::MovqDecoder3d,
            format!("the file holds a VQ encoder: encoder.conv_out gives z_channels = {z} channels"),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(extra: &[(&str, Vec<usize>)]) -> BTreeMap<String, Vec<usize>> {
        let mut m: BTreeMap<String, Vec<usize>> = [
            ("decoder.conv_in.conv.weight", vec![64, 4, 3, 3, 3]),
            ("decoder.mid.block_1.norm1.conv_y.conv.weight", vec![64, 4, 1, 1, 1]),
            ("decoder.up.0.block.0.conv1.conv.weight", vec![32, 32, 3, 3, 3]),
            ("decoder.up.1.block.0.conv1.conv.weight", vec![64, 64, 3, 3, 3]),
            ("decoder.up.1.upsample.conv.weight", vec![64, 64, 3, 3]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        m.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        m
    }

    fn class(extra: &[(&str, Vec<usize>)]) -> Option<DecoderClass> {
        detect_upstream_class(&shapes(extra), "decoder.").map(|c| c.class)
    }

    #[test]
    fn kl_vae_is_context_parallel_and_vq_is_movq() {
        assert_eq!(
            class(&[("encoder.conv_out.conv.weight", vec![8, 64, 3, 3, 3])]),
            Some(DecoderClass::ContextParallelDecoder3d)
        );
        assert_eq!(
            class(&[("encoder.conv_out.conv.weight", vec![4, 64, 3, 3, 3])]),
            Some(DecoderClass::MovqDecoder3d)
        );
        assert_eq!(class(&[("quantize.embedding.weight", vec![16, 4])]), Some(DecoderClass::MovqDecoder3d));
    }

    #[test]
    fn what_context_parallel_cannot_build_is_movq() {
        let kl = ("encoder.conv_out.conv.weight", vec![8, 64, 3, 3, 3]);
        assert_eq!(
            class(&[kl.clone(), ("decoder.up.1.attn.0.q.weight", vec![64, 64, 1, 1])]),
            Some(DecoderClass::MovqDecoder3d)
        );
        // add_conv is built by both classes: the KL encoder decides.
        assert_eq!(
            class(&[kl.clone(), ("decoder.mid.block_1.norm1.conv.conv.weight", vec![4, 4, 3, 3, 3])]),
            Some(DecoderClass::ContextParallelDecoder3d)
        );
        assert_eq!(
            class(&[kl, ("decoder.post_quant_conv.conv.weight", vec![4, 4, 3, 3, 3])]),
            Some(DecoderClass::NewDecoder3d)
        );
    }

    #[test]
    fn decoder_only_without_a_telling_feature_is_ambiguous() {
        assert_eq!(class(&[]), None);
    }
}
