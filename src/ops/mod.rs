//! Tensor-level operations: validate shapes, allocate outputs, call kernels. No `unsafe`.

pub mod attention;
pub mod blend;
pub mod conv;
pub mod norm;
pub mod resample;

use crate::error::Result;
use crate::kernels::Float;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// a += b elementwise (the residual connection). Shapes must match.
pub fn add_inplace<T: Float>(a: &mut Tensor<T>, b: &Tensor<T>) -> Result<()> {
    b.expect_shape("residual add", a.shape())?;
    a.data_mut().par_chunks_mut(1 << 16).zip(b.data().par_chunks(1 << 16)).for_each(|(x, y)| {
        x.iter_mut().zip(y).for_each(|(x, &y)| *x += y);
    });
    Ok(())
}
