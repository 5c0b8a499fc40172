//! The tracing hook of the forward pass: a [`Tracer`] sees the output of every module as the
//! forward descends the module tree, under the module's path in upstream naming (`conv_in`,
//! `mid.block_1.norm1`, `up.2.block.0.conv2`, `up.1.upsample`). Renaming to a checkpoint's own
//! naming, cropping and storing are the tracer's business (`crate::trace`).
//!
//! What a traced output is, module by module (the PyTorch module's return value, which a
//! forward hook sees):
//! - a resnet block's `norm1` / `norm2`: the SpatialNorm output before SiLU; `conv1`: the conv
//!   output; `conv2`: the conv output *before* the residual is added; `nin_shortcut`: the
//!   projected input; the block: conv2 + shortcut;
//! - an attention block, an upsampler, `conv_in`, `post_quant_conv`, `conv_out`: their output;
//! - `norm_out`: the SpatialNorm output before SiLU.
//!
//! Without a tracer nothing is computed or allocated for tracing. With one, an output the fused
//! path never forms (a norm's output, conv2 without the residual) is computed apart from the
//! fused path only when the tracer wants it, so the decode's own result is bitwise the same
//! traced or not.

use super::schedule::Call;
use crate::error::Result;
use crate::tensor::Tensor;

/// An observer of module outputs during a decode.
pub trait Tracer<T> {
    /// A decoder call starts: `call` of the decode's calls, `batch` its index among the frame
    /// batches of its clip (or tile). Called before the call's first module.
    fn begin_call(&mut self, call: &Call, batch: usize) {
        let _ = (call, batch);
    }

    /// True if the output of module `path` (upstream naming) is to be recorded; outputs the
    /// fused path does not form are computed only then.
    fn wants(&self, path: &str) -> bool;

    /// The output of module `path`. x: (n, c, d, h, w)
    fn record(&mut self, path: &str, x: &Tensor<T>) -> Result<()>;
}

/// A position in the module tree with the tracer, if any: what a module's forward gets.
pub struct Tap<'a, T> {
    tracer: Option<&'a mut dyn Tracer<T>>,
    path: String,
}

impl<'a, T> Tap<'a, T> {
    /// No tracing.
    pub fn none() -> Self {
        Tap { tracer: None, path: String::new() }
    }

    /// The root of the module tree, observed by `tracer`.
    pub fn root(tracer: Option<&'a mut dyn Tracer<T>>) -> Self {
        Tap { tracer, path: String::new() }
    }

    fn join(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_string() } else { format!("{}.{name}", self.path) }
    }

    /// The child module `name` (a reborrow: one child at a time).
    pub fn pp(&mut self, name: impl std::fmt::Display) -> Tap<'_, T> {
        if self.tracer.is_none() {
            return Tap::none();
        }
        let path = self.join(&name.to_string());
        let tracer = self.tracer.as_mut().map(|t| &mut **t as &mut dyn Tracer<T>);
        Tap { path, tracer }
    }

    /// True if the child `name`'s output is to be recorded.
    pub fn wants(&self, name: &str) -> bool {
        self.tracer.as_deref().is_some_and(|t| t.wants(&self.join(name)))
    }

    /// Records child `name`'s output `x` if wanted.
    pub fn record(&mut self, name: impl std::fmt::Display, x: &Tensor<T>) -> Result<()> {
        if self.tracer.is_none() {
            return Ok(());
        }
        let path = self.join(&name.to_string());
        match self.tracer.as_deref_mut() {
            Some(t) if t.wants(&path) => t.record(&path, x),
            _ => Ok(()),
        }
    }

    /// Records child `name`'s output, computed by `f` only if wanted.
    pub fn record_with(&mut self, name: &str, f: impl FnOnce() -> Result<Tensor<T>>) -> Result<()> {
        if !self.wants(name) {
            return Ok(());
        }
        let x = f()?;
        self.record(name, &x)
    }
}
