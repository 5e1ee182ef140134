//! A restricted unpickler: it rebuilds the values a PyTorch checkpoint's
//! `data.pkl` holds (dicts, lists, tuples, numbers, strings, tensors) and
//! never runs code. Globals are resolved against a short allow-list; any
//! other global is refused by name, or, when the caller asks for records
//! (pickled whole modules), kept as an inert class name whose objects only
//! record their constructor arguments and state.
//!
//! Every opcode consumes at least one byte and every length is checked
//! against the bytes left, so memory stays proportional to the input.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A storage reference from a persistent id: `('storage', type, key,
/// location, numel)`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    /// The storage class name, e.g. `FloatStorage`.
    pub kind: String,
    /// The archive entry under `data/`.
    pub key: String,
    pub numel: u64,
}

/// A tensor view over a storage, as `_rebuild_tensor_v2` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    /// In elements of the storage's dtype.
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

/// What the allow-list lets a global be.
#[derive(Clone, Debug, PartialEq)]
pub enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    /// A storage type (`torch.FloatStorage`), named inside persistent ids.
    StorageType(String),
    /// `_codecs.encode(text, 'latin1')`: how protocol 2 pickles bytes
    /// (kept inert: no tensor data travels this way).
    CodecsEncode,
    /// `torch.storage._load_from_bytes(b)`: a storage pickled inside a plain
    /// pickle (`pickle.dump(model)`), `b` in torch's legacy format.
    LoadFromBytes,
    /// A class kept as an inert name (records mode only).
    Class(String),
}

pub type Shared<T> = Rc<RefCell<T>>;

/// An inert object of a class that is never run: what built it and the
/// state BUILD gave it.
#[derive(Debug)]
pub struct Record {
    pub class: String,
    pub args: Value,
    pub state: Value,
}

#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    /// Bytes as a span of the unpickled buffer (never copied).
    Bytes(std::ops::Range<usize>),
    Tuple(Rc<[Value]>),
    List(Shared<Vec<Value>>),
    Dict(Shared<Vec<(Value, Value)>>),
    Global(Global),
    Storage(StorageRef),
    Tensor(Rc<TensorRef>),
    Record(Shared<Record>),
}

/// Dropping a value frees its containers from a work list, not by
/// recursion: a pickle can nest lists millions deep in a few megabytes.
impl Drop for Value {
    fn drop(&mut self) {
        let mut work = Vec::new();
        take_children(self, &mut work);
        while let Some(mut v) = work.pop() {
            take_children(&mut v, &mut work);
        }
    }
}

/// Moves the children of `v` into `out` when `v` holds the last reference
/// to its container (otherwise dropping it frees nothing below).
fn take_children(v: &mut Value, out: &mut Vec<Value>) {
    match v {
        Value::List(l) => {
            if let Some(c) = Rc::get_mut(l) {
                out.append(c.get_mut());
            }
        }
        Value::Dict(d) => {
            if let Some(c) = Rc::get_mut(d) {
                for (k, x) in c.get_mut().drain(..) {
                    out.push(k);
                    out.push(x);
                }
            }
        }
        Value::Tuple(t) => {
            if let Some(t) = Rc::get_mut(t) {
                out.extend(t.iter_mut().map(|x| std::mem::replace(x, Value::None)));
            }
        }
        Value::Record(r) => {
            if let Some(c) = Rc::get_mut(r) {
                let r = c.get_mut();
                out.push(std::mem::replace(&mut r.args, Value::None));
                out.push(std::mem::replace(&mut r.state, Value::None));
            }
        }
        _ => {}
    }
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Record(_) => "object",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// The identity of a container (shared by every reference to it), for
    /// walks that must enter each one once.
    pub fn container_id(&self) -> Option<usize> {
        match self {
            Value::Tuple(t) => Some(Rc::as_ptr(t) as *const u8 as usize),
            Value::List(l) => Some(Rc::as_ptr(l) as *const u8 as usize),
            Value::Dict(d) => Some(Rc::as_ptr(d) as *const u8 as usize),
            Value::Record(r) => Some(Rc::as_ptr(r) as *const u8 as usize),
            _ => None,
        }
    }

    fn as_items(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(t) => Some(t.to_vec()),
            Value::List(l) => Some(l.borrow().clone()),
            _ => None,
        }
    }
}

/// Whether globals outside the allow-list are refused or kept as records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Globals {
    Strict,
    Records,
}

/// Why a pickle could not be read.
#[derive(Debug, PartialEq)]
pub enum PickleError {
    /// A global outside the allow-list (module.name).
    Refused(String),
    /// A global no checkpoint has a reason to name, refused even as a record.
    Dangerous(String),
    /// In records mode, a global that is not a class: a function that a
    /// pickle would call, refused by name although dawin never calls it.
    NotAClass(String),
    Malformed {
        at: usize,
        msg: String,
    },
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PickleError::Refused(g) => write!(
                f,
                "the pickle names the global `{g}`, which is not on dawin's allow-list"
            ),
            PickleError::Dangerous(g) => write!(
                f,
                "the pickle names `{g}`, a function that runs code or touches the system: no checkpoint needs it, so the file is refused (dawin never runs it)"
            ),
            PickleError::NotAClass(g) => write!(
                f,
                "the pickle names `{g}`, which is not a class: from pickled modules dawin reads only classes (as inert records, never run) and tensors, so the file is refused"
            ),
            PickleError::Malformed { at, msg } => write!(f, "damaged pickle at byte {at}: {msg}"),
        }
    }
}

/// At most this many nested containers in the value being returned (a
/// state dict is 2-5 deep; the bound keeps recursion on the data finite).
pub const MAX_DEPTH: usize = 256;

/// At most this many values built by one pickle, and visited by one walk
/// over its result. A ViT-L checkpoint, pickled module and all, builds
/// about 10⁵; the bound refuses a crafted file before it costs minutes.
pub const MAX_VALUES: usize = 20_000_000;

enum Item {
    Mark,
    V(Value),
}

struct Machine<'a> {
    /// The whole buffer (storages inside it are addressed absolutely).
    all: &'a [u8],
    /// The pickle being read: `all[base..]`.
    data: &'a [u8],
    base: usize,
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u32, Value>,
    globals: Globals,
    /// Storages whose bytes are in `all` (legacy format), by key.
    storages: Storages,
    /// Values pushed so far, against [`MAX_VALUES`].
    built: usize,
}

/// Storage bytes found in the buffer itself, by storage key.
pub type Storages = HashMap<String, std::ops::Range<usize>>;

impl<'a> Machine<'a> {
    fn new(all: &'a [u8], base: usize, globals: Globals) -> Self {
        Machine {
            all,
            data: &all[base..],
            base,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
            globals,
            storages: Storages::new(),
            built: 0,
        }
    }
}

/// Unpickles `data` (protocols 0-5, the opcodes checkpoints use).
pub fn load(data: &[u8], globals: Globals) -> Result<Value, PickleError> {
    Ok(load_with_storages(data, globals)?.0)
}

/// [`load`], with the storages found in the buffer (those of
/// `_load_from_bytes`).
pub fn load_with_storages(data: &[u8], globals: Globals) -> Result<(Value, Storages), PickleError> {
    let mut m = Machine::new(data, 0, globals);
    let v = m.run()?;
    Ok((v, m.storages))
}

/// Whether `data` starts with torch's legacy-format magic number pickle
/// (0x1950a86a20f9469cfc6c as a protocol-2 LONG1).
pub fn is_legacy(data: &[u8]) -> bool {
    data.starts_with(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")
}

/// Reads torch's legacy format at `all[start..end]`: magic, protocol
/// version and system-info pickles, the object pickle (storages by
/// persistent id), the list of storage keys, then each storage as an
/// 8-byte element count and its raw bytes. Returns the object and where
/// each storage's bytes are in `all`.
pub fn load_legacy(
    all: &[u8],
    range: std::ops::Range<usize>,
    globals: Globals,
) -> Result<(Value, Storages), PickleError> {
    let bad = |at: usize, msg: &str| PickleError::Malformed {
        at,
        msg: msg.to_string(),
    };
    let region = &all[..range.end];
    let mut at = range.start;
    let next = |g: Globals, at: &mut usize| -> Result<(Value, Storages), PickleError> {
        let mut m = Machine::new(region, *at, g);
        let v = m.run()?;
        *at += m.pos;
        Ok((v, m.storages))
    };
    for _ in 0..3 {
        next(Globals::Strict, &mut at)?; // magic, protocol version, sys info
    }
    let (root, mut storages) = next(globals, &mut at)?;
    let (keys, _) = next(Globals::Strict, &mut at)?;
    let Some(keys) = keys.as_items() else {
        return Err(bad(at, "legacy storage key list is not a list"));
    };
    let mut sizes = HashMap::new();
    collect_storage_sizes(&root, &mut sizes)?;
    for k in keys {
        let Some(k) = k.as_str().map(str::to_string) else {
            return Err(bad(at, "legacy storage key is not a string"));
        };
        if range.end - at < 8 {
            return Err(bad(at, "truncated legacy storage header"));
        }
        let n = u64::from_le_bytes(all[at..at + 8].try_into().expect("8 bytes"));
        at += 8;
        let es = sizes.get(&k).copied().unwrap_or(1) as u64;
        let len = n
            .checked_mul(es)
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l <= range.end - at)
            .ok_or_else(|| bad(at, "legacy storage runs past the end"))?;
        storages.insert(k, at..at + len);
        at += len;
    }
    Ok((root, storages))
}

/// Element sizes of the storages a value names, by key.
fn collect_storage_sizes(
    root: &Value,
    out: &mut HashMap<String, usize>,
) -> Result<(), PickleError> {
    visit_once(root, |v| match v {
        Value::Storage(s) => {
            out.insert(s.key.clone(), storage_elem_size(&s.kind));
        }
        Value::Tensor(t) => {
            out.insert(t.storage.key.clone(), storage_elem_size(&t.storage.kind));
        }
        _ => {}
    })
}

/// Calls `f` on every value reachable from `root`, entering each container
/// once however many times it is referenced: the memo lets a pickle share
/// objects, so n lists each naming the previous one twice are 2ⁿ paths but
/// n containers. Refuses past [`MAX_VALUES`] visits.
pub fn visit_once(root: &Value, mut f: impl FnMut(&Value)) -> Result<(), PickleError> {
    let mut seen = std::collections::HashSet::new();
    let mut work = vec![root.clone()];
    let mut visits = 0usize;
    while let Some(v) = work.pop() {
        visits += 1;
        if visits > MAX_VALUES {
            return Err(PickleError::Malformed {
                at: 0,
                msg: format!("the pickled value has more than {MAX_VALUES} parts"),
            });
        }
        f(&v);
        let Some(id) = v.container_id() else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        match &v {
            Value::Tuple(t) => work.extend(t.iter().cloned()),
            Value::List(l) => work.extend(l.borrow().iter().cloned()),
            Value::Dict(d) => d.borrow().iter().for_each(|(k, x)| {
                work.push(k.clone());
                work.push(x.clone());
            }),
            Value::Record(r) => {
                let r = r.borrow();
                work.push(r.args.clone());
                work.push(r.state.clone());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Bytes per element of a torch storage class (1 if unknown: the caller
/// refuses unknown kinds by name).
pub fn storage_elem_size(kind: &str) -> usize {
    match kind {
        "DoubleStorage" | "LongStorage" => 8,
        "FloatStorage" | "IntStorage" => 4,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        _ => 1,
    }
}

type R<T> = Result<T, PickleError>;

impl<'a> Machine<'a> {
    fn bad<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(PickleError::Malformed {
            at: self.pos,
            msg: msg.into(),
        })
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if n > self.data.len() - self.pos {
            return self.bad(format!(
                "needs {n} bytes, {} left (truncated file?)",
                self.data.len() - self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> R<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn len(&mut self, width: usize) -> R<usize> {
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(self.take(width)?);
        let n = u64::from_le_bytes(b);
        usize::try_from(n).or_else(|_| self.bad("length does not fit in memory"))
    }

    fn line(&mut self) -> R<&'a str> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return self.bad("unterminated text line");
        };
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).or_else(|_| self.bad("text line is not UTF-8"))
    }

    fn text(&mut self, n: usize) -> R<Value> {
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(Value::Str(s.into())),
            Err(_) => self.bad("string is not UTF-8"),
        }
    }

    fn push(&mut self, v: Value) {
        self.built += 1;
        self.stack.push(Item::V(v));
    }

    fn pop(&mut self) -> R<Value> {
        match self.stack.pop() {
            Some(Item::V(v)) => Ok(v),
            Some(Item::Mark) => self.bad("unexpected mark"),
            None => self.bad("stack underflow"),
        }
    }

    fn top(&mut self) -> R<&mut Value> {
        match self.stack.last_mut() {
            Some(Item::V(v)) => Ok(v),
            _ => Err(PickleError::Malformed {
                at: self.pos,
                msg: "empty stack".into(),
            }),
        }
    }

    /// Everything above the topmost mark, which is removed.
    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let Some(m) = self.stack.iter().rposition(|i| matches!(i, Item::Mark)) else {
            return self.bad("no mark on the stack");
        };
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|i| match i {
                Item::V(v) => v,
                Item::Mark => unreachable!("mark above the topmost mark"),
            })
            .collect())
    }

    fn memo_get(&mut self, k: u32) -> R<()> {
        match self.memo.get(&k) {
            Some(v) => {
                let v = v.clone();
                self.push(v);
                Ok(())
            }
            None => self.bad(format!("memo key {k} was never stored")),
        }
    }

    fn memo_put(&mut self, k: u32) -> R<()> {
        let v = match self.stack.last() {
            Some(Item::V(v)) => v.clone(),
            _ => return self.bad("nothing to memoize"),
        };
        self.memo.insert(k, v);
        Ok(())
    }

    /// A storage from `_load_from_bytes`: the legacy blob at `r`, its
    /// bytes recorded under a key unique to this blob.
    fn storage_from_bytes(&mut self, r: std::ops::Range<usize>) -> R<Value> {
        let (v, storages) = load_legacy(self.all, r.clone(), Globals::Strict)?;
        let Value::Storage(s) = &v else {
            return self.bad("_load_from_bytes does not hold a storage");
        };
        let mut s = s.clone();
        let Some(bytes) = storages.get(&s.key) else {
            return self.bad("_load_from_bytes: storage data missing");
        };
        s.key = format!("inline@{}", r.start);
        self.storages.insert(s.key.clone(), bytes.clone());
        Ok(Value::Storage(s))
    }

    fn run(&mut self) -> R<Value> {
        loop {
            let op = self.u8()?;
            if op == b'.' {
                return self.pop();
            }
            self.step(op)?;
            if self.built > MAX_VALUES {
                return self.bad(format!(
                    "the pickle builds more than {MAX_VALUES} values; no checkpoint needs that many"
                ));
            }
        }
    }

    /// One opcode other than STOP, by family.
    fn step(&mut self, op: u8) -> R<()> {
        match op {
            0x80 | 0x95 | b'(' | b'0' | b'1' | b'2' => self.framing_op(op),
            b'N' | 0x88 | 0x89 | b'J' | b'K' | b'M' | 0x8a | 0x8b | b'I' | b'L' | b'G' | b'F' => {
                self.number_op(op)
            }
            b'X' | 0x8c | 0x8d | b'T' | b'U' | b'B' | b'C' | 0x8e | 0x96 => self.string_op(op),
            b')'
            | b't'
            | 0x85..=0x87
            | b']'
            | b'l'
            | b'}'
            | b'd'
            | 0x8f
            | 0x90
            | 0x91
            | b'a'
            | b'e'
            | b's'
            | b'u' => self.collection_op(op),
            b'p' | b'q' | b'r' | 0x94 | b'g' | b'h' | b'j' => self.memo_op(op),
            b'c' | 0x93 | b'R' | 0x81 | 0x92 | b'b' | b'Q' | b'i' | b'o' => self.object_op(op),
            _ => self.bad(format!("unsupported opcode 0x{op:02x}")),
        }
    }

    /// The protocol header, frames, marks and stack shuffles.
    fn framing_op(&mut self, op: u8) -> R<()> {
        match op {
            0x80 => {
                let p = self.u8()?;
                if p > 5 {
                    return self.bad(format!("pickle protocol {p} is newer than 5"));
                }
            }
            0x95 => {
                self.take(8)?;
            }
            b'(' => self.stack.push(Item::Mark),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.push(v);
            }
            _ => return self.bad(format!("opcode 0x{op:02x} is not one of this family")),
        }
        Ok(())
    }

    /// None, booleans, integers and floats.
    fn number_op(&mut self, op: u8) -> R<()> {
        match op {
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'J' => {
                let v = i32::from_le_bytes(self.le()?);
                self.push(Value::Int(v as i64))
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v as i64))
            }
            b'M' => {
                let v = u16::from_le_bytes(self.le()?);
                self.push(Value::Int(v as i64))
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    self.u8()? as usize
                } else {
                    self.len(4)?
                };
                let v = self.long(n)?;
                self.push(v)
            }
            b'I' | b'L' => {
                let l = self.line()?.trim_end_matches('L');
                let v = match l {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    _ => match l.parse::<i64>() {
                        Ok(i) => Value::Int(i),
                        Err(_) => return self.bad(format!("bad integer {l:?}")),
                    },
                };
                self.push(v)
            }
            b'G' => {
                let v = f64::from_be_bytes(self.le()?);
                self.push(Value::Float(v))
            }
            b'F' => {
                let l = self.line()?;
                match l.parse::<f64>() {
                    Ok(f) => self.push(Value::Float(f)),
                    Err(_) => return self.bad(format!("bad float {l:?}")),
                }
            }
            _ => return self.bad(format!("opcode 0x{op:02x} is not one of this family")),
        }
        Ok(())
    }

    /// Text and byte strings.
    fn string_op(&mut self, op: u8) -> R<()> {
        match op {
            b'X' => {
                let n = self.len(4)?;
                let v = self.text(n)?;
                self.push(v)
            }
            0x8c => {
                let n = self.u8()? as usize;
                let v = self.text(n)?;
                self.push(v)
            }
            0x8d => {
                let n = self.len(8)?;
                let v = self.text(n)?;
                self.push(v)
            }
            b'T' | b'U' | b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'U' | b'C' => self.u8()? as usize,
                    0x8e => self.len(8)?,
                    _ => self.len(4)?,
                };
                let start = self.pos;
                let b = self.take(n)?;
                let v = match std::str::from_utf8(b) {
                    // BINSTRING is Python 2's str: text when it decodes.
                    Ok(s) if matches!(op, b'T' | b'U') => Value::Str(s.into()),
                    _ => Value::Bytes(self.base + start..self.base + start + n),
                };
                self.push(v)
            }
            _ => return self.bad(format!("opcode 0x{op:02x} is not one of this family")),
        }
        Ok(())
    }

    /// Tuples, lists, sets and dicts, and adding to them.
    fn collection_op(&mut self, op: u8) -> R<()> {
        match op {
            b')' => self.push(Value::Tuple(Rc::from(Vec::new()))),
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items.into()))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.push(Value::Tuple(items.into()))
            }
            b']' => self.push(Value::List(Default::default())),
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Value::List(Rc::new(RefCell::new(items))))
            }
            b'}' => self.push(Value::Dict(Default::default())),
            b'd' => {
                let items = self.pop_mark()?;
                let d = self.pairs(items)?;
                self.push(Value::Dict(Rc::new(RefCell::new(d))))
            }
            0x8f => self.push(Value::List(Default::default())), // EMPTY_SET as a list
            0x90 => {
                let items = self.pop_mark()?;
                self.extend_list(items)?
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items.into()))
            }
            b'a' => {
                let v = self.pop()?;
                self.extend_list(vec![v])?
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?
            }
            _ => return self.bad(format!("opcode 0x{op:02x} is not one of this family")),
        }
        Ok(())
    }

    /// The memo: storing and fetching earlier values.
    fn memo_op(&mut self, op: u8) -> R<()> {
        match op {
            b'p' => {
                let l = self.line()?;
                match l.parse::<u32>() {
                    Ok(k) => self.memo_put(k)?,
                    Err(_) => return self.bad(format!("bad memo key {l:?}")),
                }
            }
            b'q' => {
                let k = self.u8()? as u32;
                self.memo_put(k)?
            }
            b'r' => {
                let k = u32::from_le_bytes(self.le()?);
                self.memo_put(k)?
            }
            0x94 => {
                let k = self.memo.len() as u32;
                self.memo_put(k)?
            }
            b'g' => {
                let l = self.line()?;
                match l.parse::<u32>() {
                    Ok(k) => self.memo_get(k)?,
                    Err(_) => return self.bad(format!("bad memo key {l:?}")),
                }
            }
            b'h' => {
                let k = self.u8()? as u32;
                self.memo_get(k)?
            }
            b'j' => {
                let k = u32::from_le_bytes(self.le()?);
                self.memo_get(k)?
            }
            _ => return self.bad(format!("opcode 0x{op:02x} is not one of this family")),
        }
        Ok(())
    }

    /// Globals (from the allow-list), calls, BUILD and persistent ids.
    fn object_op(&mut self, op: u8) -> R<()> {
        match op {
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let g = self.global(module, name)?;
                self.push(g)
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(m), Some(n)) = (module.as_str(), name.as_str()) else {
                    return self.bad("STACK_GLOBAL needs two strings");
                };
                let g = self.global(m, n)?;
                self.push(g)
            }
            b'R' => {
                let args = self.pop()?;
                let f = self.pop()?;
                let v = self.call(f, args)?;
                self.push(v)
            }
            0x81 => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let v = self.call(cls, args)?;
                self.push(v)
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let v = self.call(cls, args)?;
                self.push(v)
            }
            b'b' => {
                let state = self.pop()?;
                self.build(state)?
            }
            // INST (module, name, then the arguments above a mark) and OBJ
            // (the class and its arguments above a mark): a global called,
            // which `global` refuses by name unless it is an inert class.
            b'i' => {
                let module = self.line()?;
                let name = self.line()?;
                let g = self.global(module, name)?;
                let args = self.pop_mark()?;
                let v = self.call(g, Value::Tuple(args.into()))?;
                self.push(v)
            }
            b'o' => {
                let mut items = self.pop_mark()?.into_iter();
                let Some(cls) = items.next() else {
                    return self.bad("OBJ without a class");
                };
                let v = self.call(cls, Value::Tuple(items.collect::<Vec<_>>().into()))?;
                self.push(v)
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = self.persistent(pid)?;
                self.push(v)
            }
            _ => return self.bad(format!("opcode 0x{op:02x} is not one of this family")),
        }
        Ok(())
    }

    fn long(&mut self, n: usize) -> R<Value> {
        let b = self.take(n)?;
        if n > 8 {
            // Only the legacy magic number is this long; its value is unused.
            return Ok(Value::None);
        }
        if n == 0 {
            return Ok(Value::Int(0));
        }
        let neg = b[n - 1] & 0x80 != 0;
        let mut full = if neg { [0xffu8; 8] } else { [0u8; 8] };
        full[..n].copy_from_slice(b);
        Ok(Value::Int(i64::from_le_bytes(full)))
    }

    fn pairs(&self, items: Vec<Value>) -> R<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            return self.bad("odd number of dict items");
        }
        let mut it = items.into_iter();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn extend_list(&mut self, items: Vec<Value>) -> R<()> {
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            // APPENDS on a record (a list subclass): keep the items inert.
            Value::Record(_) => Ok(()),
            other => {
                let k = other.kind();
                self.bad(format!("APPEND on a {k}"))
            }
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> R<()> {
        let pairs = self.pairs(items)?;
        match self.top()? {
            Value::Dict(d) => {
                d.borrow_mut().extend(pairs);
                Ok(())
            }
            Value::Record(_) => Ok(()),
            other => {
                let k = other.kind();
                self.bad(format!("SETITEM on a {k}"))
            }
        }
    }

    fn global(&self, module: &str, name: &str) -> R<Value> {
        let full = format!("{module}.{name}");
        let g = match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                Global::RebuildParameter
            }
            ("torch", n) if n.ends_with("Storage") => Global::StorageType(n.to_string()),
            ("_codecs", "encode") => Global::CodecsEncode,
            ("torch.storage", "_load_from_bytes") => Global::LoadFromBytes,
            _ if dangerous(module, name) => return Err(PickleError::Dangerous(full)),
            _ if self.globals == Globals::Records && inert_class(module, name) => {
                Global::Class(full)
            }
            _ if self.globals == Globals::Records => return Err(PickleError::NotAClass(full)),
            _ => return Err(PickleError::Refused(full)),
        };
        Ok(Value::Global(g))
    }

    fn call(&mut self, f: Value, args: Value) -> R<Value> {
        let Value::Global(g) = &f else {
            return self.bad(format!("call of a {}", f.kind()));
        };
        let g = g.clone();
        let Some(a) = args.as_items() else {
            return self.bad("call arguments are not a tuple");
        };
        match g {
            Global::OrderedDict => Ok(Value::Dict(Default::default())),
            Global::RebuildTensor => self.rebuild_tensor(&a),
            Global::RebuildParameter => match a.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => self.bad("_rebuild_parameter without a tensor"),
            },
            Global::CodecsEncode => Ok(Value::None),
            Global::LoadFromBytes => match a.first() {
                Some(Value::Bytes(r)) => self.storage_from_bytes(r.clone()),
                _ => self.bad("_load_from_bytes without bytes"),
            },
            Global::StorageType(n) => self.bad(format!("call of storage type {n}")),
            Global::Class(class) => Ok(Value::Record(Rc::new(RefCell::new(Record {
                class,
                args: Value::Tuple(a.into()),
                state: Value::None,
            })))),
        }
    }

    fn rebuild_tensor(&self, a: &[Value]) -> R<Value> {
        let (Some(Value::Storage(s)), Some(off), Some(size), Some(stride)) = (
            a.first(),
            a.get(1).and_then(Value::as_int),
            a.get(2).and_then(Value::as_items),
            a.get(3).and_then(Value::as_items),
        ) else {
            return self.bad("_rebuild_tensor arguments are not (storage, offset, size, stride)");
        };
        let ints = |v: Vec<Value>| -> Option<Vec<u64>> {
            v.iter()
                .map(|x| x.as_int().and_then(|i| u64::try_from(i).ok()))
                .collect()
        };
        let (Some(shape), Some(stride), Ok(offset)) =
            (ints(size), ints(stride), u64::try_from(off))
        else {
            return self.bad("negative tensor size, stride or offset");
        };
        if shape.len() != stride.len() {
            return self.bad("tensor size and stride differ in length");
        }
        Ok(Value::Tensor(Rc::new(TensorRef {
            storage: s.clone(),
            offset,
            shape,
            stride,
        })))
    }

    fn build(&mut self, state: Value) -> R<()> {
        match self.top()? {
            Value::Record(r) => {
                r.borrow_mut().state = state;
                Ok(())
            }
            // OrderedDict's `_metadata`, a tensor's hooks state: not needed.
            Value::Dict(_) | Value::Tensor(_) | Value::List(_) => Ok(()),
            other => {
                let k = other.kind();
                self.bad(format!("BUILD on a {k}"))
            }
        }
    }

    fn persistent(&self, pid: Value) -> R<Value> {
        let Some(t) = pid.as_items() else {
            return self.bad("persistent id is not a tuple");
        };
        match t.as_slice() {
            [
                Value::Str(tag),
                Value::Global(Global::StorageType(kind)),
                key,
                _loc,
                numel,
                ..,
            ] if &**tag == "storage" && t.len() <= 6 => {
                let key = match key {
                    Value::Str(s) => s.to_string(),
                    Value::Int(i) => i.to_string(),
                    _ => return self.bad("storage key is not a string"),
                };
                let Some(numel) = numel.as_int().and_then(|n| u64::try_from(n).ok()) else {
                    return self.bad("storage size is not a count");
                };
                Ok(Value::Storage(StorageRef {
                    kind: kind.clone(),
                    key,
                    numel,
                }))
            }
            _ => self.bad("persistent id is not ('storage', type, key, location, numel)"),
        }
    }
}

/// Whether a global may stand in a pickled module as an inert record: a
/// class by Python's naming convention (`Linear`, `OrderedDict`), or one
/// of the few lowercase types and constants a module's state holds
/// (`set`, `torch.device`, `torch.float32`), and TorchScript's typed-list
/// builders (`torch.jit._pickle.build_intlist`, kept as records of their
/// lists). Other functions (`timeit.timeit`) are not, since a pickle names
/// them only to call them.
fn inert_class(module: &str, name: &str) -> bool {
    let builtin = matches!(module, "builtins" | "__builtin__");
    name.starts_with(|c: char| c.is_ascii_uppercase())
        || (module == "torch.jit._pickle"
            && (name.starts_with("build_") || name == "restore_type_tag"))
        || (builtin
            && matches!(
                name,
                "set" | "frozenset" | "slice" | "complex" | "bytearray" | "range" | "object"
            ))
        || (module == "torch" && (name == "device" || name == "dtype" || torch_dtype(name)))
}

/// `torch.<name>` is a dtype constant (`torch.float32`, `torch.bfloat16`).
fn torch_dtype(name: &str) -> bool {
    matches!(
        name,
        "float16"
            | "float32"
            | "float64"
            | "bfloat16"
            | "half"
            | "float"
            | "double"
            | "uint8"
            | "int8"
            | "int16"
            | "int32"
            | "int64"
            | "bool"
            | "long"
            | "int"
    )
}

/// Globals that run code or reach the system: refused even as records.
fn dangerous(module: &str, name: &str) -> bool {
    let root = module.split('.').next().unwrap_or(module);
    matches!(
        root,
        "os" | "posix"
            | "nt"
            | "subprocess"
            | "sys"
            | "shutil"
            | "socket"
            | "runpy"
            | "importlib"
            | "pickle"
            | "_pickle"
            | "marshal"
            | "ctypes"
            | "pty"
            | "webbrowser"
            | "code"
            | "pdb"
    ) || (matches!(module, "builtins" | "__builtin__")
        && matches!(
            name,
            "eval" | "exec" | "compile" | "open" | "getattr" | "setattr" | "__import__" | "input"
        ))
        || (module == "torch" && name == "load")
        || name == "system"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memoized_dict_is_shared() {
        // {}, memo 0, 'a' -> 1 set, then get memo 0: the filled dict.
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s0h\x00.";
        let v = load(p, Globals::Strict).unwrap();
        let Value::Dict(d) = &v else { panic!() };
        assert_eq!(d.borrow().len(), 1);
    }

    #[test]
    fn unknown_global_is_refused_by_name() {
        let p = b"\x80\x02cargparse\nNamespace\n).";
        assert_eq!(
            load(p, Globals::Strict).unwrap_err(),
            PickleError::Refused("argparse.Namespace".into())
        );
        assert!(load(p, Globals::Records).is_ok());
        let evil = b"cos\nsystem\n(S'true'\ntR.";
        assert_eq!(
            load(evil, Globals::Records).unwrap_err(),
            PickleError::Dangerous("os.system".into())
        );
    }

    #[test]
    fn deep_nesting_drops_without_recursion() {
        // ] q0, then repeatedly: ] q1 a 0 h1 (append a new list, descend).
        let mut p = b"\x80\x02]q\x00".to_vec();
        for _ in 0..500_000 {
            p.extend_from_slice(b"]q\x01a0h\x01");
        }
        p.extend_from_slice(b"0h\x00.");
        let v = load(&p, Globals::Strict).unwrap();
        assert!(matches!(v, Value::List(_)));
        drop(v);
    }

    /// 100 lists, each holding the previous one twice: 2¹⁰⁰ paths through
    /// 100 containers. The legacy reader's storage search enters each once.
    #[test]
    fn shared_lists_are_walked_as_a_graph() {
        let mut p = b"\x80\x02]q\x00".to_vec();
        for i in 1..100u8 {
            p.extend_from_slice(&[b'(', b'h', i - 1, b'h', i - 1, b'l', b'q', i]);
        }
        p.push(b'.');
        let v = load(&p, Globals::Strict).unwrap();
        let mut visits = 0;
        visit_once(&v, |_| visits += 1).unwrap();
        assert!(visits < 300, "{visits} visits");
        // As the legacy format's object: magic, protocol, system info, the
        // object, then an empty storage key list.
        let mut legacy =
            b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.K\x01.}.".to_vec();
        legacy.extend_from_slice(&p);
        legacy.extend_from_slice(b"].");
        let t = std::time::Instant::now();
        load_legacy(&legacy, 0..legacy.len(), Globals::Strict).unwrap();
        assert!(t.elapsed().as_secs() < 5);
    }

    /// Under records, a function is refused by name (it is not a class);
    /// INST and OBJ name the global they would call.
    #[test]
    fn records_accept_classes_only() {
        let timeit = b"ctimeit\ntimeit\n(S'x'\ntR.";
        assert_eq!(
            load(timeit, Globals::Records).unwrap_err(),
            PickleError::NotAClass("timeit.timeit".into())
        );
        assert!(load(b"c__builtin__\nset\n(]tR.", Globals::Records).is_ok());
        let d = load(
            b"ctorch\ndevice\n(X\x03\x00\x00\x00cputR.",
            Globals::Records,
        );
        assert!(d.is_ok(), "{d:?}");
        let inst = b"(X\x04\x00\x00\x00trueios\nsystem\n.";
        assert_eq!(
            load(inst, Globals::Records).unwrap_err(),
            PickleError::Dangerous("os.system".into())
        );
        let inst = b"(X\x01\x00\x00\x00xitimeit\ntimeit\n.";
        assert_eq!(
            load(inst, Globals::Records).unwrap_err(),
            PickleError::NotAClass("timeit.timeit".into())
        );
        let obj = b"(cargparse\nNamespace\no.";
        assert!(load(obj, Globals::Records).is_ok());
        assert_eq!(
            load(obj, Globals::Strict).unwrap_err(),
            PickleError::Refused("argparse.Namespace".into())
        );
    }

    #[test]
    fn negative_long_and_truncation() {
        let v = load(b"\x8a\x02\x00\xff.", Globals::Strict).unwrap();
        assert!(matches!(v, Value::Int(-256)));
        assert!(load(b"X\xff\xff\xff\x7fab", Globals::Strict).is_err());
    }
}
