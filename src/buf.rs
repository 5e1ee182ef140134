//! Typed buffer handles. A [`Buf`] names `len` elements of one [`DType`] at
//! `offset` inside an allocation an executor owns; it is a plain `Copy`
//! value, so op arguments and model parameter tables are cheap to pass
//! around. Owning handles that free on drop live in `crate::exec`.

use half::bf16;

/// Element type of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// bfloat16: the tensor-core operands of `--precision bf16`.
    Bf16,
    /// Token ids and other integers.
    I32,
    /// Bytes: RGB pixels before normalisation.
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::Bf16 => 2,
            DType::U8 => 1,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::I32 => "i32",
            DType::U8 => "u8",
        })
    }
}

/// A host element type with its [`DType`].
pub trait Element: bytemuck::Pod {
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}

impl Element for bf16 {
    const DTYPE: DType = DType::Bf16;
}

impl Element for i32 {
    const DTYPE: DType = DType::I32;
}

impl Element for u8 {
    const DTYPE: DType = DType::U8;
}

/// A view of `len` elements of `dtype` at element `offset` inside
/// allocation `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    pub id: u32,
    pub offset: usize,
    pub len: usize,
    pub dtype: DType,
}

impl Buf {
    /// The view of a whole allocation.
    pub fn whole(id: u32, len: usize, dtype: DType) -> Buf {
        Buf {
            id,
            offset: 0,
            len,
            dtype,
        }
    }

    /// A sub-view; panics on an out-of-range request because that is a bug in
    /// the caller (a model layout, a scratch split), never a property of
    /// user input.
    pub fn slice(&self, offset: usize, len: usize) -> Buf {
        assert!(
            offset + len <= self.len,
            "slice {offset}+{len} out of buffer of {}",
            self.len
        );
        Buf {
            offset: self.offset + offset,
            len,
            ..*self
        }
    }

    pub fn bytes(&self) -> usize {
        self.len * self.dtype.size()
    }

    /// Whether two views share any element.
    pub fn overlaps(&self, other: &Buf) -> bool {
        self.id == other.id
            && self.len > 0
            && other.len > 0
            && self.offset < other.offset + other.len
            && other.offset < self.offset + self.len
    }
}

/// Host memory behind a view, typed.
#[derive(Clone, Copy, Debug)]
pub enum Slice<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    I32(&'a [i32]),
    U8(&'a [u8]),
}

/// Mutable host memory behind a view, typed.
#[derive(Debug)]
pub enum SliceMut<'a> {
    F32(&'a mut [f32]),
    Bf16(&'a mut [bf16]),
    I32(&'a mut [i32]),
    U8(&'a mut [u8]),
}

// The accessors below are reached only after an op's `check` has matched
// every buffer's dtype, so a mismatch is a bug in the op's code.
const CHECKED: &str = "dtype checked by the op's `check`";

impl<'a> Slice<'a> {
    pub fn f32(self) -> &'a [f32] {
        match self {
            Slice::F32(s) => s,
            _ => unreachable!("{CHECKED}"),
        }
    }

    pub fn bf16(self) -> &'a [bf16] {
        match self {
            Slice::Bf16(s) => s,
            _ => unreachable!("{CHECKED}"),
        }
    }

    pub fn i32(self) -> &'a [i32] {
        match self {
            Slice::I32(s) => s,
            _ => unreachable!("{CHECKED}"),
        }
    }

    pub fn u8(self) -> &'a [u8] {
        match self {
            Slice::U8(s) => s,
            _ => unreachable!("{CHECKED}"),
        }
    }
}

impl<'a> SliceMut<'a> {
    pub fn f32(self) -> &'a mut [f32] {
        match self {
            SliceMut::F32(s) => s,
            _ => unreachable!("{CHECKED}"),
        }
    }

    pub fn bf16(self) -> &'a mut [bf16] {
        match self {
            SliceMut::Bf16(s) => s,
            _ => unreachable!("{CHECKED}"),
        }
    }
}
