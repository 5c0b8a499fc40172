//! The resnet shortcut's in-place pointwise conv (`conv3d_owned`) with bf16 products: the
//! consumed input is rounded in place instead of in a copy, and the result is bitwise that of
//! `conv3d` (which rounds copies of input and weights), under the emulated switch and under a
//! decoder's own scope.

use movq::kernels::params::{Conv3dParams, with_bf16_products};
use movq::ops::conv::{ConvInput, ConvLayer, conv3d, conv3d_owned};
use movq::tensor::{Shape, Tensor};

fn vals(k: usize, salt: u32) -> Vec<f32> {
    (0..k).map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ salt) as f32 / u32::MAX as f32 - 0.5).collect()
}

#[test]
fn bf16_pointwise_in_place_is_bitwise_conv3d() {
    // The decoders' shortcut shape (256 -> 128 channels), two samples, several column blocks.
    let (c_in, c_out) = (256, 128);
    let shape = Shape::new(2, c_in, 3, 64, 96);
    let p = Conv3dParams::plain(c_in, c_out, (1, 1, 1));
    let (w, b) = (vals(c_out * c_in, 7), vals(c_out, 9));
    let layer =
        ConvLayer { op: "shortcut", weight: &w, bias: &b, params: &p, transformed: None, nearest_2x: false };
    let x = Tensor::from_vec(shape, vals(shape.numel().unwrap(), 5)).unwrap();
    let run = |bf16: bool| {
        with_bf16_products(bf16, || {
            let want = conv3d(&layer, ConvInput::plain(&x)).unwrap();
            let got = conv3d_owned(&layer, x.clone()).unwrap();
            (want, got)
        })
    };
    let (want, got) = run(true);
    assert_eq!(got.shape(), want.shape());
    assert!(got.data() == want.data(), "bf16: the in-place shortcut differs from conv3d");
    // The operands were rounded: the f32 result differs.
    let (f32_want, f32_got) = run(false);
    assert!(f32_got.data() == f32_want.data());
    assert!(f32_want.data() != want.data(), "bf16 products gave the f32 result");
}
