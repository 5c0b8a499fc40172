//! The kernels' vocabulary: convolution geometry ([`Conv3dParams`], [`TimePad`]), the
//! convolution algorithm choice ([`ConvAlgo`]) and attention geometry ([`AttentionParams`]).
//! A leaf: the fast and reference kernels all read it, and it reads none of them.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// One sample's convolution as the kernels take it: x (c_in, d, h, w) with `dims = (d, h, w)`,
/// weight (c_out, c_in, k_d, k_h, k_w), bias (c_out,), geometry `p`.
pub struct ConvCall<'a, T> {
    pub x: &'a [T],
    pub dims: (usize, usize, usize),
    pub weight: &'a [T],
    pub bias: &'a [T],
    pub p: &'a Conv3dParams,
}

impl<T> Clone for ConvCall<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ConvCall<'_, T> {}

/// What the `pad_d.0` frames in front of the input hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimePad {
    /// Zero frames.
    Zeros,
    /// Copies of frame 0 (CausalConv3d "first").
    ReplicateFirst,
    /// Frames `pad, pad-1, .., 1`, the missing ones (input too short) as zeros (CausalConv3d "reflect").
    Reflect,
}

/// Geometry of a 3D convolution; spatial stride and dilation are 1 (as in every upstream conv).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv3dParams {
    pub c_in: usize,
    pub c_out: usize,
    pub k_d: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_d: usize,
    pub dilation_d: usize,
    /// Frames (before, after) the input.
    pub pad_d: (usize, usize),
    pub pad_h: (usize, usize),
    pub pad_w: (usize, usize),
    pub time_pad: TimePad,
}

impl Conv3dParams {
    /// A convolution without padding and with unit strides.
    pub fn plain(c_in: usize, c_out: usize, k: (usize, usize, usize)) -> Self {
        Conv3dParams {
            c_in,
            c_out,
            k_d: k.0,
            k_h: k.1,
            k_w: k.2,
            stride_d: 1,
            dilation_d: 1,
            pad_d: (0, 0),
            pad_h: (0, 0),
            pad_w: (0, 0),
            time_pad: TimePad::Zeros,
        }
    }

    /// Rows of the im2col matrix: c_in * k_d * k_h * k_w.
    pub fn k_len(&self) -> usize {
        self.c_in * self.k_d * self.k_h * self.k_w
    }

    /// Output (d, h, w) for an input of (d, h, w); `None` if the kernel does not fit the padded
    /// input or a parameter is zero.
    pub fn out_dims(&self, d: usize, h: usize, w: usize) -> Option<(usize, usize, usize)> {
        if self.k_d == 0 || self.k_h == 0 || self.k_w == 0 || self.stride_d == 0 || self.dilation_d == 0 {
            return None;
        }
        let dp = d.checked_add(self.pad_d.0)?.checked_add(self.pad_d.1)?;
        let span_d = self.dilation_d.checked_mul(self.k_d - 1)?.checked_add(1)?;
        let d_out = dp.checked_sub(span_d)? / self.stride_d + 1;
        let h_out = (h.checked_add(self.pad_h.0)?.checked_add(self.pad_h.1)?).checked_sub(self.k_h - 1)?;
        let w_out = (w.checked_add(self.pad_w.0)?.checked_add(self.pad_w.1)?).checked_sub(self.k_w - 1)?;
        if d == 0 || h_out == 0 || w_out == 0 {
            return None;
        }
        Some((d_out, h_out, w_out))
    }

    /// The input frame that time tap `dt` of output frame `t` reads, or `None` for a zero frame.
    pub fn src_frame(&self, t: usize, dt: usize, d: usize) -> Option<usize> {
        let q = t * self.stride_d + dt * self.dilation_d;
        let lo = self.pad_d.0;
        if q >= lo {
            let s = q - lo;
            return (s < d).then_some(s);
        }
        match self.time_pad {
            TimePad::Zeros => None,
            TimePad::ReplicateFirst => Some(0),
            TimePad::Reflect => {
                let s = lo - q;
                (s < d).then_some(s)
            }
        }
    }

    /// True if the spatial taps are 3x3 (what the Winograd kernel handles).
    pub fn has_3x3_taps(&self) -> bool {
        self.k_h == 3 && self.k_w == 3
    }

    /// True for a 1x1x1 conv that reads input position p for output position p.
    pub fn is_pointwise(&self) -> bool {
        self.k_d == 1
            && self.k_h == 1
            && self.k_w == 1
            && self.stride_d == 1
            && self.pad_d == (0, 0)
            && self.pad_h == (0, 0)
            && self.pad_w == (0, 0)
    }
}

/// How convolutions with 3x3 spatial taps are computed (chosen per call by [`ConvAlgo::for_params`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgo {
    /// Winograd F(2x2, 3x3) (2.25x fewer multiplies; the default).
    Winograd,
    /// im2col + gemm: the direct sum, closest to PyTorch's rounding.
    Im2col,
    /// Winograd F(4x4, 3x3) (4x fewer multiplies; opt-in: larger rounding error, see README).
    Winograd4,
}

impl ConvAlgo {
    /// The algorithm that runs `p`: the process-wide choice ([`conv_algo`]) where Winograd
    /// applies (3x3 spatial taps), im2col otherwise. The one place the choice is made.
    pub fn for_params(p: &Conv3dParams) -> ConvAlgo {
        Self::for_params_under(conv_algo(), p)
    }

    /// What [`ConvAlgo::for_params`] picks for `p` under the process-wide choice `chosen`:
    /// both Winograd kernels exist only for 3x3 spatial taps, whatever k_d and the paddings.
    pub fn for_params_under(chosen: ConvAlgo, p: &Conv3dParams) -> ConvAlgo {
        if p.has_3x3_taps() { chosen } else { ConvAlgo::Im2col }
    }

    /// The name `--conv` and `MOVQ_CONV` take, and `movq bench` reports.
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgo::Winograd => "winograd",
            ConvAlgo::Im2col => "im2col",
            ConvAlgo::Winograd4 => "winograd4",
        }
    }
}

static CONV_ALGO: AtomicU8 = AtomicU8::new(0);

/// The process-wide convolution algorithm: [`set_conv_algo`], else `MOVQ_CONV=im2col` or
/// `MOVQ_CONV=winograd4` in the environment, else Winograd.
pub fn conv_algo() -> ConvAlgo {
    match CONV_ALGO.load(Ordering::Relaxed) {
        1 => ConvAlgo::Winograd,
        2 => ConvAlgo::Im2col,
        3 => ConvAlgo::Winograd4,
        _ => {
            let env = std::env::var("MOVQ_CONV").unwrap_or_default();
            let a = [ConvAlgo::Im2col, ConvAlgo::Winograd4]
                .into_iter()
                .find(|a| env.eq_ignore_ascii_case(a.name()))
                .unwrap_or(ConvAlgo::Winograd);
            set_conv_algo(a);
            a
        }
    }
}

/// Selects the convolution algorithm for the whole process.
pub fn set_conv_algo(a: ConvAlgo) {
    let code = match a {
        ConvAlgo::Winograd => 1,
        ConvAlgo::Im2col => 2,
        ConvAlgo::Winograd4 => 3,
    };
    CONV_ALGO.store(code, Ordering::Relaxed);
}

static WEIGHT_CACHE: AtomicBool = AtomicBool::new(true);

/// Whether causal convs that run chunk after chunk (chunked and tiled decodes) keep their
/// Winograd weight transforms for the decoder's lifetime (the default) or recompute them per
/// call into reused scratch (less memory: the transforms are 16/9 of the 3x3x3 weights).
pub fn weight_cache() -> bool {
    WEIGHT_CACHE.load(Ordering::Relaxed)
}

/// Sets [`weight_cache`] for the whole process.
pub fn set_weight_cache(on: bool) {
    WEIGHT_CACHE.store(on, Ordering::Relaxed);
}

static BF16_PRODUCTS: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// A decode's own bf16 settings ([`with_bf16`]): (products, native), over the process-wide ones.
    static BF16_SCOPE: std::cell::Cell<Option<(bool, bool)>> = const { std::cell::Cell::new(None) };
}

/// Whether the convolutions round their gemm operands to bf16 and sum the products in f32
/// (`--precision bf16-emulated`, [`super::bf16`]); off by default. Process-wide, like
/// [`conv_algo`], unless the running thread is inside [`with_bf16_products`] (a decoder with
/// its own setting, `Decoder::emulate_bf16_products`). Read by the conv ops on the thread that
/// runs the module forwards, never by kernel workers (they get it as an argument).
pub fn bf16_products() -> bool {
    BF16_SCOPE.with(|s| s.get()).map_or_else(|| BF16_PRODUCTS.load(Ordering::Relaxed), |s| s.0)
}

/// The process-wide setting alone (what [`bf16_products`] gives outside any scope).
pub fn process_bf16_products() -> bool {
    BF16_PRODUCTS.load(Ordering::Relaxed)
}

/// Sets [`bf16_products`] for the whole process.
pub fn set_bf16_products(on: bool) {
    BF16_PRODUCTS.store(on, Ordering::Relaxed);
}

/// Runs `f` with [`bf16_products`] = `on` and [`bf16_native`] off on this thread
/// ([`with_bf16`]).
pub fn with_bf16_products<R>(on: bool, f: impl FnOnce() -> R) -> R {
    with_bf16(on, false, f)
}

/// Runs `f` with [`bf16_products`] = `products` and [`bf16_native`] = `native` on this thread
/// (restored afterwards, also on panic), whatever the process-wide settings: decoders with
/// different settings can decode at once. Every decode opens one (a rayon worker blocked
/// inside one decode may run another decode's job, which must not inherit the first one's
/// setting).
pub fn with_bf16<R>(products: bool, native: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<(bool, bool)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            BF16_SCOPE.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(BF16_SCOPE.with(|s| s.replace(Some((products, native)))));
    f()
}

static BF16_NATIVE: AtomicBool = AtomicBool::new(false);

/// Whether bf16 products run in the CPU's bf16 dot-product kernels (`--precision bf16`,
/// [`super::bf16_panels`]) where the convolution is Winograd F(2x2, 3x3); effective only
/// together with [`bf16_products`] (other convolutions keep the emulated rounding).
/// Process-wide, unless inside [`with_bf16`] (a decoder's own setting).
pub fn bf16_native() -> bool {
    BF16_SCOPE.with(|s| s.get()).map_or_else(process_bf16_native, |s| s.1)
}

/// The process-wide setting alone (what [`bf16_native`] gives outside any scope).
pub fn process_bf16_native() -> bool {
    BF16_NATIVE.load(Ordering::Relaxed)
}

/// Sets [`bf16_native`] for the whole process.
pub fn set_bf16_native(on: bool) {
    BF16_NATIVE.store(on, Ordering::Relaxed);
}

static RELEASE_WEIGHTS: AtomicBool = AtomicBool::new(true);

/// Whether a conv layer drops its memory-mapped weight pages from the process after each
/// call (the default: they are read again from the page cache on the next call, and then only
/// the layer at work holds its weights resident), or keeps them mapped in for the process's
/// lifetime (`--keep-weights-resident`).
pub fn release_weights() -> bool {
    RELEASE_WEIGHTS.load(Ordering::Relaxed)
}

/// Sets [`release_weights`] for the whole process.
pub fn set_release_weights(on: bool) {
    RELEASE_WEIGHTS.store(on, Ordering::Relaxed);
}

/// Shape of one frame's attention: `c` channels (the head dim), `n_tokens` tokens; q, k and v
/// hold element (ch, token) at `ch * ch_stride + token`.
#[derive(Clone, Copy, Debug)]
pub struct AttentionParams {
    pub c: usize,
    pub n_tokens: usize,
    pub ch_stride: usize,
    pub scale: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Winograd (either tile size) only where the spatial taps are 3x3: never for kh != kw, nor
    /// for 1x1, 5x5, 1x3, 3x5 taps; any k_d.
    #[test]
    fn winograd_only_for_3x3_spatial_taps() {
        for k_d in 1..=5 {
            for k_h in 1..=5 {
                for k_w in 1..=5 {
                    let p = Conv3dParams::plain(2, 2, (k_d, k_h, k_w));
                    for algo in [ConvAlgo::Winograd, ConvAlgo::Winograd4] {
                        let want = if (k_h, k_w) == (3, 3) { algo } else { ConvAlgo::Im2col };
                        assert_eq!(ConvAlgo::for_params_under(algo, &p), want, "{p:?}");
                    }
                    assert_eq!(ConvAlgo::for_params_under(ConvAlgo::Im2col, &p), ConvAlgo::Im2col, "{p:?}");
                }
            }
        }
    }
}
