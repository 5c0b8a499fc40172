//! Strict, name-tracked weight loading (candle's `vb.pp("norm1")` idea).
//!
//! A [`Loader`] wraps a [`WeightFile`] and a key prefix. Modules ask a [`VarPath`] for their
//! tensors by dotted name and expected shape; [`Loader::finish`] then reports any tensor under
//! the prefix that no module asked for.

use super::WeightFile;
use crate::error::{Error, Result};
use crate::tensor::Element;
use std::cell::RefCell;
use std::collections::BTreeSet;

/// Loads weights by name from one file, remembering which names were used.
pub struct Loader<'a> {
    file: &'a WeightFile,
    prefix: String,
    ignore: Box<dyn Fn(&str) -> bool + 'a>,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> Loader<'a> {
    /// `prefix` is prepended to every name (e.g. `"decoder."`, or `""`).
    pub fn new(file: &'a WeightFile, prefix: &str) -> Self {
        Loader {
            file,
            prefix: prefix.to_string(),
            ignore: Box::new(|_| false),
            used: RefCell::default(),
        }
    }

    /// Keys for which `ignore` returns true are never reported as unexpected
    /// (e.g. the `input.*` / `output*` tensors of golden files).
    pub fn with_ignore(mut self, ignore: impl Fn(&str) -> bool + 'a) -> Self {
        self.ignore = Box::new(ignore);
        self
    }

    pub fn root(&self) -> VarPath<'_, 'a> {
        VarPath {
            loader: self,
            path: String::new(),
        }
    }

    /// Errors with [`Error::UnexpectedWeight`] if a tensor under the prefix was never loaded.
    pub fn finish(&self) -> Result<()> {
        let used = self.used.borrow();
        for name in self.file.names() {
            if name.starts_with(&self.prefix) && !(self.ignore)(name) && !used.contains(name) {
                let shape = self
                    .file
                    .info(name)
                    .map(|i| i.shape.clone())
                    .unwrap_or_default();
                return Err(Error::UnexpectedWeight {
                    path: self.file.path().to_path_buf(),
                    name: name.to_string(),
                    shape,
                });
            }
        }
        Ok(())
    }

    /// True if the file has a tensor at the module-relative `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.file.info(&format!("{}{name}", self.prefix)).is_some()
    }

    fn get<T: Element>(&self, name: &str, expected: &[usize]) -> Result<Vec<T>> {
        let key = format!("{}{name}", self.prefix);
        let path = self.file.path().to_path_buf();
        let info = self.file.info(&key).ok_or_else(|| Error::MissingWeight {
            path: path.clone(),
            name: key.clone(),
            expected: expected.to_vec(),
        })?;
        if info.shape != expected {
            return Err(Error::WeightShape {
                path,
                name: key,
                expected: expected.to_vec(),
                got: info.shape.clone(),
            });
        }
        let (_, data) = self.file.read::<T>(&key)?;
        self.used.borrow_mut().insert(key);
        Ok(data)
    }
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
        let path = if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        };
        VarPath {
            loader: self.loader,
            path,
        }
    }

    /// Loads tensor `self.name`, which must have exactly the shape `expected`.
    pub fn get<T: Element>(&self, name: &str, expected: &[usize]) -> Result<Vec<T>> {
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
