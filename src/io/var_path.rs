//! Strict, name-tracked weight loading (candle's `vb.pp("norm1")` idea).
//!
//! A [`Loader`] wraps a [`WeightFile`] and a key prefix. Modules ask a [`VarPath`] for their
//! tensors by dotted name and expected shape; [`Loader::finish`] then reports any tensor under
//! the prefix that no module asked for.

use super::WeightFile;
use crate::error::{Error, Result};
use crate::tensor::{Element, SplitMix64};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ops::Deref;
use std::sync::Arc;

/// A loaded parameter tensor: owned, or read in place from a memory-mapped file.
pub enum Param<T> {
    Owned(Vec<T>),
    Mapped { file: Arc<WeightFile>, name: String },
}

impl<T: Element> Deref for Param<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Param::Owned(v) => v,
            // Mapped is only built after `view` succeeded, and the file is immutable.
            Param::Mapped { file, name } => file.view::<T>(name).expect("mapped view checked at load"),
        }
    }
}

impl<T> Param<T> {
    /// For a memory-mapped parameter, drops its resident pages from this process
    /// ([`WeightFile::release`]); the next use maps them again. Owned ones stay as they are.
    pub fn release(&self) {
        if let Param::Mapped { file, name } = self {
            file.release(name);
        }
    }
}

/// Tensors made by a random loader: (name, shape, f32 values).
pub type MadeTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Where a [`Loader`] takes tensors from.
enum Source<'a> {
    File(&'a WeightFile),
    /// Shared files (one, or the shards of a checkpoint) whose f32 tensors are used in place
    /// (memory-mapped, not copied).
    Shared(Vec<Arc<WeightFile>>),
    /// Deterministic random weights, recorded as they are made (see [`Loader::random`]).
    Random {
        seed: u64,
        made: RefCell<MadeTensors>,
        /// Bytes the made tensors and their copies handed out may take (see `random_with_budget`).
        budget: u64,
    },
}

/// Maps a module path to the name stored in a file.
type Rename<'a> = Box<dyn Fn(&str) -> String + 'a>;

/// Loads weights by name from one file, remembering which names were used.
pub struct Loader<'a> {
    source: Source<'a>,
    prefix: String,
    ignore: Box<dyn Fn(&str) -> bool + 'a>,
    rename: Option<Rename<'a>>,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> Loader<'a> {
    /// `prefix` is prepended to every name (e.g. `"decoder."`, or `""`).
    pub fn new(file: &'a WeightFile, prefix: &str) -> Self {
        Loader {
            source: Source::File(file),
            prefix: prefix.to_string(),
            ignore: Box::new(|_| false),
            rename: None,
            used: RefCell::default(),
        }
    }

    /// A loader whose f32 tensors stay memory-mapped: the modules keep `file` alive and read
    /// the weights in place (other dtypes, or f64 compute, are converted into owned copies).
    pub fn shared(file: Arc<WeightFile>, prefix: &str) -> Loader<'static> {
        Self::shards(vec![file], prefix)
    }

    /// [`Loader::shared`] over the shards of one checkpoint: each tensor is looked up in the
    /// shard that holds it (names must be unique across shards).
    pub fn shards(files: Vec<Arc<WeightFile>>, prefix: &str) -> Loader<'static> {
        Loader {
            source: Source::Shared(files),
            prefix: prefix.to_string(),
            ignore: Box::new(|_| false),
            rename: None,
            used: RefCell::default(),
        }
    }

    /// The files tensors come from (none for random weights).
    fn files(&self) -> Vec<&WeightFile> {
        match &self.source {
            Source::File(f) => vec![*f],
            Source::Shared(fs) => fs.iter().map(|f| f.as_ref()).collect(),
            Source::Random { .. } => Vec::new(),
        }
    }

    /// The file holding tensor `key`.
    fn file_of(&self, key: &str) -> Option<&WeightFile> {
        self.files().into_iter().find(|f| f.info(key).is_some())
    }

    /// A loader that makes up weights: every requested tensor gets deterministic pseudo-random
    /// values from `seed` and its name, scaled so activations stay O(1) through a decoder
    /// (convs ~ U(-sqrt(3/fan_in), +), GroupNorm affine near (1, 0), SpatialNorm scale near 1).
    /// [`Loader::take_random`] returns what was made, e.g. to save it as a weights file.
    pub fn random(seed: u64) -> Loader<'static> {
        Self::random_with_budget(seed, u64::MAX)
    }

    /// [`Loader::random`] refusing, with [`Error::TooLarge`] and before allocating it, a tensor
    /// that would bring the made tensors plus the copies handed out over `budget` bytes.
    pub fn random_with_budget(seed: u64, budget: u64) -> Loader<'static> {
        Loader {
            source: Source::Random { seed, made: RefCell::default(), budget },
            prefix: String::new(),
            ignore: Box::new(|_| false),
            rename: None,
            used: RefCell::default(),
        }
    }

    /// The tensors a random loader made: (name, shape, f32 values), in request order.
    pub fn take_random(&self) -> MadeTensors {
        match &self.source {
            Source::Random { made, .. } => made.take(),
            _ => Vec::new(),
        }
    }

    /// Keys for which `ignore` returns true are never reported as unexpected
    /// (e.g. the `input.*` / `output*` tensors of golden files).
    pub fn with_ignore(mut self, ignore: impl Fn(&str) -> bool + 'a) -> Self {
        self.ignore = Box::new(ignore);
        self
    }

    /// Maps every module path (e.g. `up.3.block.0.conv1.conv.weight`) to the name stored in the
    /// file (before the prefix is added), for checkpoints that name the same tree differently.
    pub fn with_rename(mut self, rename: impl Fn(&str) -> String + 'a) -> Self {
        self.rename = Some(Box::new(rename));
        self
    }

    fn key(&self, name: &str) -> String {
        match &self.rename {
            Some(r) => format!("{}{}", self.prefix, r(name)),
            None => format!("{}{name}", self.prefix),
        }
    }

    pub fn root(&self) -> VarPath<'_, 'a> {
        VarPath { loader: self, path: String::new() }
    }

    /// Errors with [`Error::UnexpectedWeight`] if a tensor under the prefix was never loaded.
    pub fn finish(&self) -> Result<()> {
        let used = self.used.borrow();
        for file in self.files() {
            Self::finish_file(file, &self.prefix, &self.ignore, &used)?;
        }
        Ok(())
    }

    fn finish_file(
        file: &WeightFile,
        prefix: &str,
        ignore: &dyn Fn(&str) -> bool,
        used: &BTreeSet<String>,
    ) -> Result<()> {
        for name in file.names() {
            if name.starts_with(prefix) && !ignore(name) && !used.contains(name) {
                let shape = file.info(name).map(|i| i.shape.clone()).unwrap_or_default();
                return Err(Error::UnexpectedWeight {
                    path: file.path().to_path_buf(),
                    name: name.to_string(),
                    shape,
                });
            }
        }
        Ok(())
    }

    /// True if the file has a tensor at the module-relative `name`.
    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Random { .. } => true,
            _ => self.file_of(&self.key(name)).is_some(),
        }
    }

    fn get<T: Element>(&self, name: &str, expected: &[usize]) -> Result<Param<T>> {
        let key = self.key(name);
        if let Source::Random { seed, made, budget } = &self.source {
            let per_elem = (4 + std::mem::size_of::<T>()) as u128;
            let so_far: u128 = made.borrow().iter().map(|(_, _, d)| d.len() as u128).sum();
            let numel = expected.iter().map(|&d| d as u128).product::<u128>();
            let total = (so_far + numel) * per_elem;
            if total > *budget as u128 {
                return Err(Error::TooLarge {
                    what: format!("random weights: tensor `{key}` {expected:?}"),
                    reason: format!(
                        "it would bring the weights to {} MiB or more, over the {} MiB of memory available",
                        total >> 20,
                        budget >> 20
                    ),
                });
            }
            let data = random_weight(*seed, &key, expected)?;
            let out = data.iter().map(|&v| T::from_f32(v)).collect();
            made.borrow_mut().push((key, expected.to_vec(), data));
            return Ok(Param::Owned(out));
        }
        let Some(file) = self.file_of(&key) else {
            let files = self.files();
            let path = match files.as_slice() {
                [one] => one.path().to_path_buf(),
                many => many
                    .first()
                    .and_then(|f| f.path().parent())
                    .map(|d| d.join(format!("({} shards)", many.len())))
                    .unwrap_or_default(),
            };
            return Err(Error::MissingWeight { path, name: key, expected: expected.to_vec() });
        };
        let path = file.path().to_path_buf();
        let info = file.info(&key).expect("file_of found the key");
        if info.shape != expected {
            return Err(Error::WeightShape {
                path,
                name: key,
                expected: expected.to_vec(),
                got: info.shape.clone(),
            });
        }
        self.used.borrow_mut().insert(key.clone());
        if let Source::Shared(files) = &self.source
            && let Some(shared) = files.iter().find(|f| std::ptr::eq(f.as_ref(), file))
            && shared.view::<T>(&key).is_some()
        {
            return Ok(Param::Mapped { file: shared.clone(), name: key });
        }
        let (_, data) = file.read::<T>(&key)?;
        Ok(Param::Owned(data))
    }
}

/// The values [`Loader::random`] gives tensor `name` of `shape`: independent of request order.
fn random_weight(seed: u64, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let h = name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3));
    let mut rng = SplitMix64(seed ^ h);
    let n: usize = shape.iter().product();
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    let is_weight = name.ends_with(".weight");
    let (center, spread) = if name.contains("norm_layer.") {
        if is_weight { (1.0, 0.1) } else { (0.0, 0.1) }
    } else if name.contains("conv_y.") {
        if is_weight { (0.0, 0.2 / (fan_in as f32).sqrt()) } else { (1.0, 0.1) }
    } else if name.contains("conv_b.") {
        if is_weight { (0.0, 0.2 / (fan_in as f32).sqrt()) } else { (0.0, 0.1) }
    } else if is_weight {
        (0.0, (3.0 / fan_in as f32).sqrt())
    } else {
        (0.0, 0.05)
    };
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| Error::TooLarge {
        what: format!("random weight `{name}` {shape:?}"),
        reason: format!("cannot allocate {} MiB", n.saturating_mul(4) >> 20),
    })?;
    out.extend((0..n).map(|_| center + spread * rng.uniform()));
    Ok(out)
}

/// A dotted position in the module tree, e.g. `up.1.block.0.norm1`.
#[derive(Clone)]
pub struct VarPath<'l, 'a> {
    loader: &'l Loader<'a>,
    path: String,
}

impl<'l, 'a> VarPath<'l, 'a> {
    /// The child path `self.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let path = if self.path.is_empty() { name.to_string() } else { format!("{}.{name}", self.path) };
        VarPath { loader: self.loader, path }
    }

    /// Loads tensor `self.name`, which must have exactly the shape `expected`.
    pub fn get<T: Element>(&self, name: &str, expected: &[usize]) -> Result<Param<T>> {
        self.loader.get(&self.pp(name).path, expected)
    }

    /// True if the file holds tensor `self.name`.
    pub fn contains(&self, name: &str) -> bool {
        self.loader.contains(&self.pp(name).path)
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}
