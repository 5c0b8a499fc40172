//! A restricted pickle machine for the `data.pkl` that `torch.save` writes for a state dict
//! (opcodes: CPython `Lib/pickletools.py`; what torch emits: `torch/serialization.py` `_save`,
//! `torch/_utils.py` `_rebuild_tensor_v2`).
//!
//! Nothing is executed. The only callables are the few globals a state dict needs, each
//! interpreted here: `collections.OrderedDict()` builds an empty dict, `_rebuild_tensor_v2` and
//! `_rebuild_tensor` record a tensor's storage, offset, size and stride, and `_rebuild_parameter`
//! passes its tensor through. Storages come from persistent ids
//! `('storage', torch.<Type>Storage, key, location, numel)`. Any other global or opcode is a
//! [`Error::Pickle`] naming it.
//!
//! Objects live in one arena addressed by [`Id`], so shared and even cyclic references (which a
//! hostile file can build with the memo) cost nothing, and nothing here recurses. Stack depth,
//! memo size and object count are capped; every length is checked against the bytes left before
//! anything is allocated for it.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Index of an object in [`Pickle::objects`].
pub(crate) type Id = usize;

// A state dict of N tensors pickles to about 15 N objects, 10 N memo entries and 4 N tensor
// dimensions, on a stack a few dozen deep; these caps are far above that and keep the memory a
// hostile pickle can claim (about 80 bytes per object, 16 per dimension) to a few hundred MB.
pub(crate) const MAX_STACK: usize = 1 << 16;
pub(crate) const MAX_MEMO: usize = 1 << 22;
pub(crate) const MAX_OBJECTS: usize = 1 << 22;
/// Sizes and strides recorded over all tensors: a one-byte BINGET can make a rank-64 tensor.
pub(crate) const MAX_TENSOR_DIMS: usize = 1 << 23;
/// Longest tensor rank accepted (torch's own limit is 64).
pub(crate) const MAX_RANK: usize = 64;

/// The element types of torch's legacy storage classes, by class name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StorageType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageType {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => StorageType::F32,
            "HalfStorage" => StorageType::F16,
            "BFloat16Storage" => StorageType::BF16,
            "DoubleStorage" => StorageType::F64,
            "LongStorage" => StorageType::I64,
            "IntStorage" => StorageType::I32,
            "ShortStorage" => StorageType::I16,
            "CharStorage" => StorageType::I8,
            "ByteStorage" => StorageType::U8,
            "BoolStorage" => StorageType::Bool,
            _ => return None,
        })
    }

    pub(crate) fn size(self) -> usize {
        match self {
            StorageType::F64 | StorageType::I64 => 8,
            StorageType::F32 | StorageType::I32 => 4,
            StorageType::F16 | StorageType::BF16 | StorageType::I16 => 2,
            StorageType::I8 | StorageType::U8 | StorageType::Bool => 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    Storage(StorageType),
}

/// A tensor as `_rebuild_tensor_v2` receives it: sizes and strides in elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TensorRef {
    pub storage: Id,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Object {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits (LONG1/LONG4); only its existence matters.
    BigInt,
    Float(f64),
    Str(String),
    Bytes(usize),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Global(Global),
    Storage {
        dtype: StorageType,
        key: String,
        numel: u64,
    },
    Tensor(TensorRef),
}

/// The result of running a pickle: the object arena and the id of the pickled value.
#[derive(Debug)]
pub(crate) struct Pickle {
    pub objects: Vec<Object>,
    pub root: Id,
    /// Bytes up to and including STOP (the legacy format puts several pickles in a row).
    pub len: usize,
}

impl Pickle {
    /// The string `id` holds, if it is one.
    pub(crate) fn str(&self, id: Id) -> Option<&str> {
        match &self.objects[id] {
            Object::Str(s) => Some(s),
            _ => None,
        }
    }
}

struct Machine<'a> {
    path: &'a Path,
    /// Which pickle of the file this is, for error messages.
    what: &'a str,
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for error messages.
    op_at: usize,
    objects: Vec<Object>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    /// Tensor dimensions recorded so far (see [`MAX_TENSOR_DIMS`]).
    dims: usize,
}

/// Runs the pickle at the start of `data` (`what` of the torch file `path`, e.g. its
/// `data.pkl`) up to its STOP.
pub(crate) fn run(path: &Path, what: &str, data: &[u8]) -> Result<Pickle> {
    let mut m = Machine {
        path,
        what,
        data,
        pos: 0,
        op_at: 0,
        objects: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        dims: 0,
    };
    loop {
        m.op_at = m.pos;
        let op = m.take(1)?[0];
        if op == b'.' {
            let root = m.pop()?;
            return Ok(Pickle { objects: m.objects, root, len: m.pos });
        }
        m.step(op)?;
    }
}

impl<'a> Machine<'a> {
    fn err(&self, reason: impl std::fmt::Display) -> Error {
        Error::Pickle {
            path: self.path.into(),
            reason: format!("{} byte {}: {reason}", self.what, self.op_at),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.data.len() - self.pos {
            return Err(self.err(format!(
                "needs {n} bytes, {} are left (truncated pickle)",
                self.data.len() - self.pos
            )));
        }
        self.pos += n;
        let data: &'a [u8] = self.data;
        Ok(&data[self.pos - n..self.pos])
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn take_len(&mut self, width: usize) -> Result<usize> {
        let mut a = [0u8; 8];
        a[..width].copy_from_slice(self.take(width)?);
        let n = u64::from_le_bytes(a);
        // Anything longer than the rest of the pickle is a lie; `take` reports it.
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn new_object(&mut self, o: Object) -> Result<Id> {
        if self.objects.len() >= MAX_OBJECTS {
            return Err(self.err(format!("more than {MAX_OBJECTS} objects")));
        }
        self.objects.push(o);
        Ok(self.objects.len() - 1)
    }

    fn push_id(&mut self, id: Id) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err(format!("stack deeper than {MAX_STACK}")));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push(&mut self, o: Object) -> Result<()> {
        let id = self.new_object(o)?;
        self.push_id(id)
    }

    fn pop(&mut self) -> Result<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("pop from an empty stack"));
        }
        self.stack.pop().ok_or_else(|| self.err("pop from an empty stack"))
    }

    fn top(&self) -> Result<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("empty stack"));
        }
        Ok(self.stack[self.stack.len() - 1])
    }

    /// The items pushed since the last MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Id>> {
        let m = self.marks.pop().ok_or_else(|| self.err("no MARK to pop to"))?;
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let id = self.top()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return Err(self.err(format!("memo larger than {MAX_MEMO} entries")));
        }
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<()> {
        let id = *self.memo.get(&key).ok_or_else(|| self.err(format!("memo key {key} is not set")))?;
        self.push_id(id)
    }

    fn string(&mut self, width: usize) -> Result<()> {
        let n = self.take_len(width)?;
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| self.err("string is not UTF-8"))?.to_string();
        self.push(Object::Str(s))
    }

    fn global(&mut self, module: &str, name: &str) -> Result<Global> {
        let g = match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch", class) if class.ends_with("Storage") => match StorageType::from_class(class) {
                Some(t) => Global::Storage(t),
                None => {
                    return Err(self.err(format!(
                        "unsupported dtype: storage class `torch.{class}` (supported: Float, Half, \
                         BFloat16, Double, and the integer and bool storages, which are indexed but not read)"
                    )));
                }
            },
            _ => {
                return Err(self.err(format!(
                    "global `{module}.{name}` is not allowed (a state dict needs only OrderedDict, \
                     torch._utils._rebuild_tensor_v2 and torch storage classes; nothing is executed)"
                )));
            }
        };
        Ok(g)
    }

    fn int(&self, id: Id, what: &str) -> Result<i64> {
        match self.objects[id] {
            Object::Int(v) => Ok(v),
            Object::Bool(b) => Ok(b as i64),
            _ => Err(self.err(format!("{what} is not an integer"))),
        }
    }

    fn ints(&self, id: Id, what: &str) -> Result<Vec<u64>> {
        let Object::Tuple(items) = &self.objects[id] else {
            return Err(self.err(format!("{what} is not a tuple")));
        };
        if items.len() > MAX_RANK {
            return Err(self.err(format!("{what} has {} dimensions, more than {MAX_RANK}", items.len())));
        }
        items
            .iter()
            .map(|&i| {
                u64::try_from(self.int(i, what)?)
                    .map_err(|_| self.err(format!("{what} holds a negative value")))
            })
            .collect()
    }

    fn persistent_load(&mut self, pid: Id) -> Result<Object> {
        let Object::Tuple(items) = &self.objects[pid] else {
            return Err(self.err("persistent id is not a tuple"));
        };
        // Copies at most six ids: the tuple may be long, and persistent ids may repeat.
        let (n, items): (usize, Vec<Id>) = (items.len(), items.iter().take(6).copied().collect());
        let &[tag, class, key, _location, numel, ref view @ ..] = items.as_slice() else {
            return Err(self.err(format!("persistent id has {n} fields, not 5")));
        };
        // The legacy format's sixth field describes a view of another storage; torch has
        // written None there since 0.4.
        if view.first().is_some_and(|&v| self.objects[v] != Object::None) {
            return Err(self.err("storage views (legacy format before torch 0.4) are not supported"));
        }
        if self.objects[tag] != Object::Str("storage".into()) {
            return Err(self.err("persistent id is not a ('storage', ...) tuple"));
        }
        let Object::Global(Global::Storage(dtype)) = self.objects[class] else {
            return Err(self.err("persistent id's storage type is not a torch storage class"));
        };
        let Object::Str(key) = &self.objects[key] else {
            return Err(self.err("persistent id's storage key is not a string"));
        };
        let numel =
            u64::try_from(self.int(numel, "storage size")?).map_err(|_| self.err("negative storage size"))?;
        Ok(Object::Storage { dtype, key: key.clone(), numel })
    }

    fn reduce(&mut self, func: Id, args: Id) -> Result<Id> {
        let Object::Global(g) = self.objects[func] else {
            return Err(self.err("REDUCE of something other than an allowed global"));
        };
        let Object::Tuple(a) = &self.objects[args] else {
            return Err(self.err("REDUCE arguments are not a tuple"));
        };
        // Copies at most seven ids (every allowed call takes fewer); `n` is the real count.
        let (n, a): (usize, Vec<Id>) = (a.len(), a.iter().take(7).copied().collect());
        match g {
            Global::OrderedDict if n == 0 => self.new_object(Object::Dict(Vec::new())),
            Global::RebuildTensorV2 | Global::RebuildTensor if a.len() >= 4 => {
                let storage = a[0];
                if !matches!(self.objects[storage], Object::Storage { .. }) {
                    return Err(self.err("tensor storage is not a persistent storage"));
                }
                let offset = u64::try_from(self.int(a[1], "storage offset")?)
                    .map_err(|_| self.err("negative storage offset"))?;
                let size = self.ints(a[2], "tensor size")?;
                let stride = self.ints(a[3], "tensor stride")?;
                if size.len() != stride.len() {
                    return Err(self.err(format!("size {size:?} and stride {stride:?} differ in rank")));
                }
                self.dims += size.len();
                if self.dims > MAX_TENSOR_DIMS {
                    return Err(
                        self.err(format!("tensors with more than {MAX_TENSOR_DIMS} dimensions in all"))
                    );
                }
                self.new_object(Object::Tensor(TensorRef { storage, offset, size, stride }))
            }
            Global::RebuildParameter if !a.is_empty() && matches!(self.objects[a[0]], Object::Tensor(_)) => {
                Ok(a[0])
            }
            g => {
                Err(self.err(format!("call of {g:?} with {} arguments is not a state-dict construction", n)))
            }
        }
    }

    fn step(&mut self, op: u8) -> Result<()> {
        match op {
            0x80 => {
                let proto = self.take(1)?[0];
                if proto > 5 {
                    return Err(self.err(format!("pickle protocol {proto} is newer than 5")));
                }
            }
            // FRAME: a length hint for buffered readers; the opcodes follow inline.
            0x95 => {
                self.take(8)?;
            }
            b'}' => self.push(Object::Dict(Vec::new()))?,
            b']' => self.push(Object::List(Vec::new()))?,
            b')' => self.push(Object::Tuple(Vec::new()))?,
            b'N' => self.push(Object::None)?,
            0x88 => self.push(Object::Bool(true))?,
            0x89 => self.push(Object::Bool(false))?,
            b'(' => {
                if self.marks.len() >= MAX_STACK {
                    return Err(self.err(format!("more than {MAX_STACK} nested MARKs")));
                }
                self.marks.push(self.stack.len());
            }
            b'X' => self.string(4)?,
            0x8c => self.string(1)?,
            0x8d => self.string(8)?,
            b'C' | b'B' | 0x8e => {
                let n = self.take_len(match op {
                    b'C' => 1,
                    b'B' => 4,
                    _ => 8,
                })?;
                self.take(n)?;
                self.push(Object::Bytes(n))?;
            }
            b'J' => {
                let v = i32::from_le_bytes(self.take_array()?);
                self.push(Object::Int(v as i64))?;
            }
            b'K' => {
                let v = self.take(1)?[0];
                self.push(Object::Int(v as i64))?;
            }
            b'M' => {
                let v = u16::from_le_bytes(self.take_array()?);
                self.push(Object::Int(v as i64))?;
            }
            0x8a | 0x8b => {
                let n = self.take_len(if op == 0x8a { 1 } else { 4 })?;
                let b = self.take(n)?;
                let o = if n <= 8 {
                    // Little-endian two's complement, sign-extended from its top byte.
                    let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) { 0xff } else { 0 };
                    let mut a = [fill; 8];
                    a[..n].copy_from_slice(b);
                    Object::Int(i64::from_le_bytes(a))
                } else {
                    Object::BigInt
                };
                self.push(o)?;
            }
            b'G' => {
                let v = f64::from_be_bytes(self.take_array()?);
                self.push(Object::Float(v))?;
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push(Object::Tuple(items))?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.push(Object::Tuple(items))?;
            }
            b'a' => {
                let v = self.pop()?;
                self.extend_list(vec![v])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.extend_dict(vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                if items.len() % 2 != 0 {
                    return Err(self.err("SETITEMS with an odd number of items"));
                }
                self.extend_dict(items)?;
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let id = self.top()?;
                self.push_id(id)?;
            }
            b'q' => {
                let k = self.take(1)?[0] as u32;
                self.memo_put(k)?;
            }
            b'r' => {
                let k = u32::from_le_bytes(self.take_array()?);
                self.memo_put(k)?;
            }
            0x94 => {
                let k = u32::try_from(self.memo.len()).map_err(|_| self.err("memo index overflow"))?;
                self.memo_put(k)?;
            }
            b'h' => {
                let k = self.take(1)?[0] as u32;
                self.memo_get(k)?;
            }
            b'j' => {
                let k = u32::from_le_bytes(self.take_array()?);
                self.memo_get(k)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let g = self.global(&module, &name)?;
                self.push(Object::Global(g))?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Object::Str(module), Object::Str(name)) = (&self.objects[module], &self.objects[name])
                else {
                    return Err(self.err("STACK_GLOBAL of non-strings"));
                };
                let (module, name) = (module.clone(), name.clone());
                let g = self.global(&module, &name)?;
                self.push(Object::Global(g))?;
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                let id = self.reduce(func, args)?;
                self.push_id(id)?;
            }
            // BUILD sets attributes (an OrderedDict's `_metadata`); no tensor data depends on them.
            b'b' => {
                self.pop()?;
                self.top()?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent_load(pid)?;
                self.push(storage)?;
            }
            _ => return Err(self.err(format!("opcode 0x{op:02x} is not allowed in a torch state dict"))),
        }
        Ok(())
    }

    /// A newline-terminated ASCII line (GLOBAL's module and name), at most 256 bytes.
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .take(257)
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("GLOBAL name too long or unterminated"))?;
        let s =
            std::str::from_utf8(&rest[..n]).map_err(|_| self.err("GLOBAL name is not UTF-8"))?.to_string();
        self.pos += n + 1;
        Ok(s)
    }

    fn extend_list(&mut self, items: Vec<Id>) -> Result<()> {
        let top = self.top()?;
        match &mut self.objects[top] {
            Object::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => Err(self.err("APPEND to something other than a list")),
        }
    }

    /// Adds `kv` (keys and values alternating) to the dict on top of the stack; a repeated key
    /// replaces the earlier value, as in Python.
    fn extend_dict(&mut self, kv: Vec<Id>) -> Result<()> {
        let top = self.top()?;
        let pairs = kv.chunks_exact(2).map(|p| (p[0], p[1]));
        match &mut self.objects[top] {
            Object::Dict(d) => {
                d.extend(pairs);
                Ok(())
            }
            _ => Err(self.err("SETITEM on something other than a dict")),
        }
    }
}
