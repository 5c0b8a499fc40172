//! File formats: safetensors (weights, latents, outputs), torch.save checkpoints (weights), npy
//! (latents, outputs), and the watchable outputs (PNG frames, APNG, Y4M).

mod frame_writer;
pub mod json;
mod npy;
pub mod output;
pub mod paths;
mod safetensors;
mod safetensors_header;
mod sink;
mod torch;
mod var_path;
mod video;

pub use frame_writer::{Container, FrameWriter};
pub use npy::{npy_shape, parse_npy, read_npy, write_npy};
pub use safetensors::{TensorInfo, WeightFile, convert_to_safetensors, write_safetensors, write_tensors};
pub use safetensors_header::MAX_HEADER_BYTES;
pub use sink::{OutputSink, SinkOptions};
pub use torch::MAX_PICKLE_BYTES;
pub use var_path::{Loader, Param, VarPath};
pub use video::{
    Chroma, VideoFormat, VideoOptions, VideoWriter, pixel_u8_f32, pixel_u8_f64, rgb8, sample_path, ycbcr,
    yuv_planes,
};

use crate::error::{Error, Result, escape};
use crate::tensor::{Element, Shape, Tensor};
use std::path::Path;

/// Reads a latent tensor: from a `.npy` file, or from a safetensors file (the tensor `key`, or
/// its only tensor when `key` is `None`). The result must be rank 5.
pub fn read_latent<T: Element>(path: &Path, key: Option<&str>) -> Result<Tensor<T>> {
    let is_npy = npy_latent(path, key)?;
    let (name, dims, data) = if is_npy {
        if !npy::npy_is_float(path)? {
            return Err(Error::UnsupportedDtype {
                path: path.into(),
                name: "npy array".into(),
                dtype: "'|u1'".into(),
            });
        }
        let (dims, data) = read_npy::<T>(path)?;
        ("npy array".to_string(), dims, data)
    } else {
        let file = WeightFile::open(path)?;
        let name = latent_name(&file, key)?;
        let (dims, data) = file.read::<T>(&name)?;
        (name, dims, data)
    };
    if dims.len() != 5 {
        return Err(Error::LatentRank { path: path.into(), name, shape: dims });
    }
    if dims.contains(&0) {
        return Err(Error::EmptyLatent { path: path.into(), name, shape: dims });
    }
    let shape = Shape::from_dims(&dims)?;
    Tensor::from_vec(shape, data)
}

/// Whether the latent file is `.npy` (else safetensors); a tensor name is refused for it (an
/// npy file holds one array, so a name would be silently unused).
fn npy_latent(path: &Path, key: Option<&str>) -> Result<bool> {
    let is_npy = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if let (true, Some(k)) = (is_npy, key) {
        let why = format!(
            "a latent key (`{}`) names a tensor of a safetensors file; an .npy file holds one array",
            escape(k)
        );
        return Err(Error::invalid_file(path, why));
    }
    Ok(is_npy)
}

/// The file's tensor names for messages: up to 8, escaped, then "...".
fn listing(file: &WeightFile) -> String {
    let mut names: Vec<String> = file.names().take(9).map(|n| format!("`{}`", escape(n))).collect();
    if names.len() == 9 {
        names[8] = "...".into();
    }
    if names.is_empty() { "nothing".into() } else { names.join(", ") }
}

/// The latent's tensor name in a safetensors file: `key`, or its only tensor.
fn latent_name(file: &WeightFile, key: Option<&str>) -> Result<String> {
    match key {
        Some(k) if file.info(k).is_some() => Ok(k.to_string()),
        Some(k) => Err(Error::invalid_file(
            file.path(),
            format!("no tensor `{}` to read as the latent (it holds {})", escape(k), listing(file)),
        )),
        // The only tensor: with several, which one is the latent is not for movq to guess
        // (the header's order is lost, names sort alphabetically).
        None => {
            let names: Vec<&str> = file.names().take(9).collect();
            match names.as_slice() {
                [one] => Ok(one.to_string()),
                [] => Err(Error::invalid_file(file.path(), "the safetensors file holds no tensor")),
                _ => Err(Error::invalid_file(
                    file.path(),
                    format!("holds several tensors ({}); name the latent's with a latent key", listing(file)),
                )),
            }
        }
    }
}

/// The name and dims of the latent [`read_latent`] would read, from the file's header alone
/// (nothing of the data is read), so that sizes can be checked before any allocation.
pub fn latent_dims(path: &Path, key: Option<&str>) -> Result<(String, Vec<usize>)> {
    if npy_latent(path, key)? {
        return Ok(("npy array".to_string(), npy_shape(path)?));
    }
    let file = WeightFile::open(path)?;
    let name = latent_name(&file, key)?;
    let info = file.info(&name).ok_or_else(|| Error::MissingWeight {
        path: path.into(),
        name: name.clone(),
        expected: vec![],
    })?;
    Ok((name, info.shape.clone()))
}

/// Refuses a latent holding NaN or infinite values ([`Error::NonFiniteLatent`], naming `path`,
/// the count and the first index): decoding would spread them over the whole output.
pub fn check_finite<T: Element>(path: &Path, z: &Tensor<T>) -> Result<()> {
    let Some(i) = z.data().iter().position(|v| !v.is_finite()) else { return Ok(()) };
    let count = z.data()[i..].iter().filter(|v| !v.is_finite()).count();
    Err(Error::NonFiniteLatent { path: path.into(), count, first: z.shape().unravel(i) })
}

/// The hidden temporary `.name.tmp-PID` beside `path`, where an output is built before the
/// rename that makes it appear complete.
pub(crate) fn tmp_sibling(path: &Path) -> Result<std::path::PathBuf> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::io(path, std::io::Error::other("output path has no file name")))?;
    Ok(dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id())))
}

/// Creates the temporary `tmp` of output `path`, never opening an existing file (a stale
/// temporary, or a symbolic link planted under its name, is an error, not truncated).
pub(crate) fn create_tmp(path: &Path, tmp: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(tmp).map_err(|e| {
        let cause = if e.kind() == std::io::ErrorKind::AlreadyExists {
            std::io::Error::other(format!(
                "its temporary {} already exists; remove it if no movq is running",
                tmp.display()
            ))
        } else {
            e
        };
        Error::OutputNotWritable { path: path.into(), cause }
    })
}

/// The error for an output whose temporary (and so the output itself) cannot be created.
pub(crate) fn not_writable(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |cause| Error::OutputNotWritable { path: path.into(), cause }
}

/// Writes a file through `write` into a temporary sibling and renames it to `path` only when
/// everything succeeded; on any error the temporary file is removed and `path` is untouched.
pub fn atomic_write(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    if output::is_stream(path) {
        return Err(Error::OutputNotWritable {
            path: path.into(),
            cause: std::io::Error::other(
                "is a stream (standard output, a named pipe, a device); this output must be a file",
            ),
        });
    }
    let path = &output::resolve(path)?;
    output::check_file_target(path)?;
    let tmp = tmp_sibling(path)?;
    let file = create_tmp(path, &tmp)?;
    let result = (|| {
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
