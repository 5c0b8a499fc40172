//! Kernels: slices in, slices out. The only home of `unsafe` besides the mmap in `io/`.
//!
//! Every fast kernel has a plain twin in [`reference`] with the same contract, and a proptest
//! comparing the two. The instruction set is detected once ([`isa`]); `MOVQ_ISA=scalar` forces
//! the reference kernels (used by CI to test the fallback path).

pub mod activation;
pub mod attention;
pub mod bf16;
#[cfg(target_arch = "aarch64")]
pub mod bf16_neon;
pub mod bf16_panels;
pub mod conv3d;
mod frame_repeats;
pub mod gemm;
pub mod group_norm;
pub mod input_norm;
pub mod params;
pub mod peak;
pub mod reference;
pub mod resample;
pub mod scratch;
pub mod simd;
pub mod vol2col;
pub mod winograd;
pub mod winograd4;
pub mod winograd_panels;
pub mod winograd_tiles;
pub mod winograd_weight_blocks;
pub mod winograd_weights;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

use crate::tensor::Element;
pub use activation::Act;
use std::sync::OnceLock;
use winograd_panels::PanelArgs;
use winograd_tiles::{InputRowArgs, OutputRowArgs};

/// The instruction set the f32 element-wise kernels use, chosen once per process.
/// (Matrix products always go through the `gemm` crate, which dispatches on its own.)
#[derive(Clone, Copy, Debug)]
pub enum Isa {
    /// Plain Rust: the reference kernels.
    Scalar,
    /// The generic kernels of [`simd`] on the widest vector set the CPU runs.
    Vector(simd::Vector),
}

/// The values `MOVQ_ISA` takes: `scalar` forces the reference kernels, `avx2` caps x86 at AVX2.
pub const ISA_ENV_VALUES: [&str; 2] = ["scalar", "avx2"];

impl Isa {
    /// Detects the best supported ISA, as `MOVQ_ISA` permits (values: [`ISA_ENV_VALUES`]; the
    /// CLI refuses others before this runs).
    pub fn detect() -> Isa {
        let env = std::env::var("MOVQ_ISA").ok().filter(|v| !v.is_empty());
        if env.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("scalar")) {
            return Isa::Scalar;
        }
        Isa::Vector(simd::Vector::detect(env.as_deref()))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Vector(v) => v.name(),
        }
    }
}

/// The values `MOVQ_CONV` takes ([`params::conv_algo`]).
pub const CONV_ENV_VALUES: [&str; 3] = ["winograd", "im2col", "winograd4"];

/// Refuses values of movq's environment variables that would otherwise fall back to the
/// default silently: `MOVQ_ISA` ([`ISA_ENV_VALUES`]), `MOVQ_CONV` ([`CONV_ENV_VALUES`]); empty
/// means unset. Every decode checks this first.
pub fn check_env() -> crate::Result<()> {
    crate::error::env_choice("MOVQ_ISA", &ISA_ENV_VALUES)?;
    crate::error::env_choice("MOVQ_CONV", &CONV_ENV_VALUES)?;
    Ok(())
}

/// The process-wide ISA choice.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(Isa::detect)
}

/// Element types with kernels: `f32` uses the SIMD kernels of [`isa`], `f64` the reference ones
/// (the f64 mode is the precision reference, not the fast path).
pub trait Float: Element + scratch::Pooled {
    /// Sum of `x` accumulated in f64.
    fn sum_f64(x: &[Self]) -> f64;
    /// Sum of `(x - mean)^2` accumulated in f64.
    fn sum_sq_dev_f64(x: &[Self], mean: f64) -> f64;
    /// See [`reference::norm_apply`].
    fn norm_apply(buf: &mut [Self], a: Self, b: Self, modulation: Option<(&[Self], &[Self])>, act: Act);
    /// `row *= scale`; returns the row's largest value in f64 (NaN ignored; -inf if empty).
    fn scale_max(row: &mut [Self], scale: Self) -> f64;
    /// `row = exp(row - m)`; returns the sum of the new row in f64.
    fn exp_sum(row: &mut [Self], m: Self) -> f64;
    /// out[2i] = out[2i + 1] = src[i]. out: (2 * src.len(),)
    fn double_row(out: &mut [Self], src: &[Self]);
    /// See [`winograd_tiles::input_row`].
    fn winograd_input_row(a: InputRowArgs<'_, Self>) {
        winograd_tiles::input_row(a)
    }
    /// See [`winograd_tiles::output_row`].
    fn winograd_output_row(a: OutputRowArgs<'_, Self>) {
        winograd_tiles::output_row(a)
    }
    /// The tile-panel width `mr` when the Winograd gemms run on packed panels
    /// ([`winograd_panels`]); `None`: on the `gemm` crate.
    fn winograd_panel_width() -> Option<usize> {
        None
    }
    /// See [`winograd_panels::panel_product`].
    fn winograd_panel_product(a: PanelArgs<'_, Self>) {
        winograd_panels::panel_product(a)
    }
    /// See [`bf16_panels::pack_tile_pair`]. The bf16 dot-product kernels run on f32 only: the
    /// conv ops refuse other element types before a kernel is reached.
    fn bf16_pack_pair(_: &mut [&mut [Self]], _: usize, _: &[Self], _: Option<&[Self]>, _: usize, _: usize) {
        unreachable!("bf16 dot products on {}", Self::NAME)
    }
    /// See [`bf16_panels::pack_weights_bf16`] (f32 only).
    fn bf16_pack_weights(_: &mut [Self], _: &[Self], _: (usize, usize, usize), _: usize) {
        unreachable!("bf16 dot products on {}", Self::NAME)
    }
    /// The f32 whose bits are `b` (bf16 channel-pair slots; f32 only).
    fn from_f32_bits(_: u32) -> Self {
        unreachable!("bf16 dot products on {}", Self::NAME)
    }
    /// See [`bf16_panels::Bf16Dot::panel_product`] (f32 only).
    fn bf16_panel_product(_: bf16_panels::Bf16Dot, _: PanelArgs<'_, Self>) {
        unreachable!("bf16 dot products on {}", Self::NAME)
    }
}

impl Float for f64 {
    fn sum_f64(x: &[f64]) -> f64 {
        reference::sum_f64(x)
    }
    fn sum_sq_dev_f64(x: &[f64], mean: f64) -> f64 {
        reference::sum_sq_dev_f64(x, mean)
    }
    fn norm_apply(buf: &mut [f64], a: f64, b: f64, modulation: Option<(&[f64], &[f64])>, act: Act) {
        reference::norm_apply(buf, a, b, modulation, act)
    }
    fn scale_max(row: &mut [f64], scale: f64) -> f64 {
        reference::scale_max(row, scale)
    }
    fn exp_sum(row: &mut [f64], m: f64) -> f64 {
        reference::exp_sum(row, m)
    }
    fn double_row(out: &mut [f64], src: &[f64]) {
        reference::double_row(out, src)
    }
}

impl Float for f32 {
    fn sum_f64(x: &[f32]) -> f64 {
        match isa() {
            Isa::Scalar => reference::sum_f64(x),
            Isa::Vector(v) => v.run(simd::kernels::SumF64 { x, mean: None }),
        }
    }
    fn sum_sq_dev_f64(x: &[f32], mean: f64) -> f64 {
        match isa() {
            Isa::Scalar => reference::sum_sq_dev_f64(x, mean),
            Isa::Vector(v) => v.run(simd::kernels::SumF64 { x, mean: Some(mean) }),
        }
    }
    fn norm_apply(buf: &mut [f32], a: f32, b: f32, modulation: Option<(&[f32], &[f32])>, act: Act) {
        match isa() {
            Isa::Scalar => reference::norm_apply(buf, a, b, modulation, act),
            Isa::Vector(v) => v.run(simd::kernels::NormApply { buf, a, b, modulation, act }),
        }
    }
    fn scale_max(row: &mut [f32], scale: f32) -> f64 {
        match isa() {
            Isa::Scalar => reference::scale_max(row, scale),
            Isa::Vector(v) => v.run(simd::kernels::ScaleMax { row, scale }) as f64,
        }
    }
    fn exp_sum(row: &mut [f32], m: f32) -> f64 {
        match isa() {
            Isa::Scalar => reference::exp_sum(row, m),
            Isa::Vector(v) => v.run(simd::kernels::ExpSum { row, m }),
        }
    }
    fn double_row(out: &mut [f32], src: &[f32]) {
        match isa() {
            Isa::Scalar => reference::double_row(out, src),
            Isa::Vector(v) => v.run(simd::kernels::DoubleRow { out, src }),
        }
    }
    fn winograd_input_row(a: InputRowArgs<'_, f32>) {
        match isa() {
            Isa::Scalar => winograd_tiles::input_row(a),
            Isa::Vector(v) => v.run(winograd_tiles::InputRow(a)),
        }
    }
    fn winograd_output_row(a: OutputRowArgs<'_, f32>) {
        match isa() {
            Isa::Scalar => winograd_tiles::output_row(a),
            Isa::Vector(v) => v.run(winograd_tiles::OutputRow(a)),
        }
    }
    /// Packed panels on a vector ISA; the scalar reference and one-lane CPUs keep the `gemm`
    /// crate (itself vectorised where it can be).
    fn winograd_panel_width() -> Option<usize> {
        match isa() {
            Isa::Vector(simd::Vector::Lane1) | Isa::Scalar => None,
            Isa::Vector(v) => Some(2 * v.lanes()),
        }
    }
    fn winograd_panel_product(a: PanelArgs<'_, f32>) {
        match isa() {
            Isa::Scalar => winograd_panels::panel_product(a),
            Isa::Vector(v) => v.run(winograd_panels::PanelProduct(a)),
        }
    }
    fn bf16_pack_pair(
        pieces: &mut [&mut [f32]],
        k: usize,
        lo: &[f32],
        hi: Option<&[f32]>,
        n_t: usize,
        mr: usize,
    ) {
        match isa() {
            Isa::Scalar => bf16_panels::pack_tile_pair(pieces, k, lo, hi, n_t, mr),
            Isa::Vector(v) => v.run(bf16_panels::PackTilePair { pieces, k, lo, hi, n_t, mr }),
        }
    }
    fn bf16_pack_weights(dst: &mut [f32], u: &[f32], dims: (usize, usize, usize), ld_u: usize) {
        bf16_panels::pack_weights_bf16(dst, u, dims, ld_u)
    }
    fn from_f32_bits(b: u32) -> f32 {
        f32::from_bits(b)
    }
    fn bf16_panel_product(dot: bf16_panels::Bf16Dot, a: PanelArgs<'_, f32>) {
        dot.panel_product(a)
    }
}
