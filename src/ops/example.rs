//! Each op's test example: one call on fixed inputs whose sizes are not
//! tile multiples, and the tolerance every executor must meet against the
//! cpu implementation. The registry lists the examples ([`super::examples`]),
//! so the device-agreement test (`tests/numerics/devices.rs`) learns a new
//! op from its registry line alone.
//!
//! Compiled with the `op-examples` feature, which the tests turn on; a
//! plain build carries none of it.

use super::{Mix, MultiMix, Op};
use crate::buf::{Buf, DType};
use crate::rng::SplitMix;
use half::bf16;

/// Where an example's buffers live: the executor under test, behind the
/// two calls an example needs (ops sit below the executors, so this is a
/// trait rather than `&dyn Executor`).
pub trait Uploader {
    /// A new buffer of `dtype` holding `bytes`, alive as long as the uploader.
    fn upload(&mut self, dtype: DType, bytes: &[u8]) -> Buf;
    /// A new zero-filled buffer of `len` elements.
    fn zeros(&mut self, dtype: DType, len: usize) -> Buf;
}

/// The inputs an example asks for: random values by seed and scale, the
/// same on every executor and every machine.
pub struct ExampleInputs<'a> {
    up: &'a mut dyn Uploader,
}

impl<'a> ExampleInputs<'a> {
    pub fn new(up: &'a mut dyn Uploader) -> Self {
        ExampleInputs { up }
    }

    /// `n` normal values times `scale`, from `seed`.
    pub fn f32(&mut self, n: usize, seed: u64, scale: f32) -> Buf {
        let v = values(n, seed, scale);
        self.up.upload(DType::F32, bytemuck::cast_slice(&v))
    }

    /// [`Self::f32`] rounded to bf16.
    pub fn bf16(&mut self, n: usize, seed: u64, scale: f32) -> Buf {
        let v: Vec<bf16> = values(n, seed, scale)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        self.up.upload(DType::Bf16, bytemuck::cast_slice(&v))
    }

    /// f32 or bf16 values, by `dtype`.
    pub fn of(&mut self, dtype: DType, n: usize, seed: u64, scale: f32) -> Buf {
        match dtype {
            DType::Bf16 => self.bf16(n, seed, scale),
            _ => self.f32(n, seed, scale),
        }
    }

    pub fn i32(&mut self, v: &[i32]) -> Buf {
        self.up.upload(DType::I32, bytemuck::cast_slice(v))
    }

    pub fn u8(&mut self, v: &[u8]) -> Buf {
        self.up.upload(DType::U8, v)
    }

    pub fn zeros(&mut self, dtype: DType, n: usize) -> Buf {
        self.up.zeros(dtype, n)
    }

    /// Per-sample interpolation weights in [0, 1) for `samples` samples of
    /// `rows_per_lambda` rows each.
    pub fn mix(&mut self, samples: usize, rows_per_lambda: usize) -> Mix {
        let v: Vec<f32> = (0..samples)
            .map(|i| (0.13 + 0.37 * i as f32).fract())
            .collect();
        let lambda = self.up.upload(DType::F32, bytemuck::cast_slice(&v));
        Mix {
            lambda,
            rows_per_lambda,
        }
    }

    /// Three task coefficients per sample in [−0.5, 1.5): the paper's
    /// s·T·c_t can exceed 1, and a negative one tests the difference form.
    pub fn multi(&mut self, samples: usize, stride: usize, rows_per_sample: usize) -> MultiMix {
        let v: Vec<f32> = (0..samples * 3)
            .map(|i| (0.13 + 0.37 * i as f32).fract() * 2.0 - 0.5)
            .collect();
        let coef = self.up.upload(DType::F32, bytemuck::cast_slice(&v));
        MultiMix {
            coef,
            sets: 3,
            stride,
            rows_per_sample,
        }
    }
}

fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = SplitMix(seed);
    (0..n).map(|_| scale * r.normal()).collect()
}

/// An op's example, implemented in the op's own file.
pub trait OpExample: Into<Op> + Sized {
    /// The largest difference from the cpu implementation any executor may
    /// show, relative to the output's largest magnitude (0: bit for bit).
    const TOLERANCE: f64;
    /// One call of the op and the view it writes.
    fn example(inputs: &mut ExampleInputs) -> (Self, Buf);
}

/// A registered op's example, as the registry lists it.
#[derive(Clone, Copy)]
pub struct ExampleDef {
    /// The op's name (its file stem in `src/ops/` and `ptx/`).
    pub name: &'static str,
    pub tolerance: f64,
    /// Uploads the inputs and returns the call and its output view.
    pub build: fn(&mut ExampleInputs) -> (Op, Buf),
}

/// The [`ExampleDef`] of op type `T`.
pub fn def<T: OpExample>(name: &'static str) -> ExampleDef {
    ExampleDef {
        name,
        tolerance: T::TOLERANCE,
        build: |inputs| {
            let (op, out) = T::example(inputs);
            (op.into(), out)
        },
    }
}
