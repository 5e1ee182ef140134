//! `cpu`: the reference executor. Every op calls the `cpu` function of its
//! file in `crate::ops`; this file only resolves buffer handles to slices.

use super::{Buf, DualEmbed, DualGemm, DualNorm, Executor};
use crate::error::Result;
use crate::ops::{self, attention::AttentionShape, embed_add::EmbedShape, gemm::GemmShape};
use crate::ops::{layernorm::LayerNormShape, patch_embed::PatchShape};
use std::cell::RefCell;

#[derive(Default)]
pub struct Cpu {
    slots: RefCell<Vec<Option<Vec<f32>>>>,
    marks: crate::profile::WallClock,
    flush: RefCell<Vec<u8>>,
}

impl Cpu {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f(inputs, out)` with the output slice taken out of the arena, so
    /// inputs can be borrowed at the same time. An input that shares the
    /// output's allocation is copied first, which makes aliasing safe.
    fn run(&self, out: Buf, inputs: &[Buf], f: impl FnOnce(&[&[f32]], &mut [f32])) {
        let mut slots = self.slots.borrow_mut();
        let mut storage = slots[out.id as usize]
            .take()
            .expect("use of a freed buffer");
        let copies: Vec<Option<Vec<f32>>> = inputs
            .iter()
            .map(|b| (b.id == out.id).then(|| storage[b.offset..b.offset + b.len].to_vec()))
            .collect();
        let views: Vec<&[f32]> = inputs
            .iter()
            .zip(&copies)
            .map(|(b, copy)| match copy {
                Some(c) => c.as_slice(),
                None => {
                    let s = slots[b.id as usize]
                        .as_ref()
                        .expect("use of a freed buffer");
                    &s[b.offset..b.offset + b.len]
                }
            })
            .collect();
        f(&views, &mut storage[out.offset..out.offset + out.len]);
        drop(views);
        slots[out.id as usize] = Some(storage);
    }
}

impl Executor for Cpu {
    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn alloc(&self, len: usize) -> Result<Buf> {
        let mut slots = self.slots.borrow_mut();
        let id = match slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                slots.push(None);
                slots.len() - 1
            }
        };
        slots[id] = Some(vec![0.0; len]);
        Ok(Buf {
            id: id as u32,
            offset: 0,
            len,
        })
    }

    fn write(&self, dst: Buf, data: &[f32]) -> Result<()> {
        assert_eq!(dst.len, data.len());
        self.run(dst, &[], |_, o| o.copy_from_slice(data));
        Ok(())
    }

    fn download(&self, src: Buf) -> Result<Vec<f32>> {
        let slots = self.slots.borrow();
        let s = slots[src.id as usize]
            .as_ref()
            .expect("use of a freed buffer");
        Ok(s[src.offset..src.offset + src.len].to_vec())
    }

    fn free(&self, buf: Buf) {
        self.slots.borrow_mut()[buf.id as usize] = None;
    }

    fn mark(&self) -> Result<usize> {
        Ok(self.marks.mark())
    }

    fn elapsed_ms(&self, start: usize, end: usize) -> Result<f64> {
        Ok(self.marks.elapsed_ms(start, end))
    }

    fn reset_marks(&self) {
        self.marks.reset()
    }

    /// Streams through 256 MB, more than any CPU's last-level cache.
    fn flush_caches(&self) -> Result<()> {
        let mut v = self.flush.borrow_mut();
        v.resize(256 << 20, 0);
        for x in v.iter_mut().step_by(64) {
            *x = x.wrapping_add(1);
        }
        std::hint::black_box(&*v);
        Ok(())
    }

    fn gemm(&self, a: Buf, b: Buf, bias: Option<Buf>, c: Buf, s: GemmShape) -> Result<()> {
        let mut ins = vec![a, b];
        ins.extend(bias);
        self.run(c, &ins, |i, c| {
            ops::gemm::cpu(i[0], i[1], i.get(2).copied(), c, s)
        });
        Ok(())
    }

    fn gemm_dual(
        &self,
        a: Buf,
        b: Buf,
        bias: Option<Buf>,
        dual: DualGemm,
        c: Buf,
        s: GemmShape,
    ) -> Result<()> {
        // Optional biases go last so the fixed inputs keep their positions.
        let mut ins = vec![a, b, dual.b1, dual.mix.lambda];
        ins.extend(bias);
        ins.extend(dual.bias1);
        self.run(c, &ins, |i, c| {
            let bias0 = bias.map(|_| i[4]);
            let bias1 = dual.bias1.map(|_| i[4 + bias.is_some() as usize]);
            let d = ops::gemm_dual::DualRef {
                b1: i[2],
                bias1,
                lambda: i[3],
                rows_per_lambda: dual.mix.rows_per_lambda,
            };
            ops::gemm_dual::cpu(i[0], i[1], bias0, &d, c, s)
        });
        Ok(())
    }

    fn attention(&self, qkv: Buf, out: Buf, s: AttentionShape) -> Result<()> {
        self.run(out, &[qkv], |i, o| ops::attention::cpu(i[0], o, s));
        Ok(())
    }

    fn layernorm(
        &self,
        x: Buf,
        y: Buf,
        gamma: Buf,
        beta: Buf,
        dual: Option<DualNorm>,
        s: LayerNormShape,
    ) -> Result<()> {
        let mut ins = vec![x, gamma, beta];
        if let Some(d) = dual {
            ins.extend([d.gamma1, d.beta1, d.mix.lambda]);
        }
        self.run(y, &ins, |i, y| {
            let d = dual.map(|d| ops::layernorm::DualRef {
                gamma1: i[3],
                beta1: i[4],
                lambda: i[5],
                rows_per_lambda: d.mix.rows_per_lambda,
            });
            ops::layernorm::cpu(i[0], y, i[1], i[2], d.as_ref(), s)
        });
        Ok(())
    }

    fn gelu(&self, x: Buf) -> Result<()> {
        self.run(x, &[], |_, x| ops::gelu::cpu(x));
        Ok(())
    }

    fn quick_gelu(&self, x: Buf) -> Result<()> {
        self.run(x, &[], |_, x| ops::quick_gelu::cpu(x));
        Ok(())
    }

    fn add(&self, x: Buf, y: Buf) -> Result<()> {
        self.run(y, &[x], |i, y| ops::add::cpu(i[0], y));
        Ok(())
    }

    fn patch_embed(&self, pixels: Buf, out: Buf, s: PatchShape) -> Result<()> {
        self.run(out, &[pixels], |i, o| ops::patch_embed::cpu(i[0], o, s));
        Ok(())
    }

    fn embed_add(
        &self,
        patches: Buf,
        class: Buf,
        pos: Buf,
        dual: Option<DualEmbed>,
        out: Buf,
        s: EmbedShape,
    ) -> Result<()> {
        let mut ins = vec![patches, class, pos];
        if let Some(d) = dual {
            ins.extend([d.class1, d.pos1, d.mix.lambda]);
        }
        self.run(out, &ins, |i, o| {
            let d = dual.map(|d| ops::embed_add::DualRef {
                class1: i[3],
                pos1: i[4],
                lambda: i[5],
                rows_per_lambda: d.mix.rows_per_lambda,
            });
            ops::embed_add::cpu(i[0], i[1], i[2], d.as_ref(), o, s)
        });
        Ok(())
    }

    fn softmax_entropy(
        &self,
        logits: Buf,
        out: Buf,
        rows: usize,
        cols: usize,
        temperature: f32,
    ) -> Result<()> {
        self.run(out, &[logits], |i, o| {
            ops::softmax_entropy::cpu(i[0], o, rows, cols, temperature)
        });
        Ok(())
    }

    fn lerp(&self, out: Buf, w0: Buf, w1: Buf, lambda: f32) -> Result<()> {
        if w0 == out {
            self.run(out, &[w1], |i, o| ops::lerp::cpu_in_place(o, i[0], lambda));
        } else {
            self.run(out, &[w0, w1], |i, o| ops::lerp::cpu(o, i[0], i[1], lambda));
        }
        Ok(())
    }

    fn add_scaled_diff(&self, out: Buf, w0: Buf, w1: Buf, k: f32) -> Result<()> {
        self.run(out, &[w0, w1], |i, o| {
            ops::add_scaled_diff::cpu(o, i[0], i[1], k)
        });
        Ok(())
    }

    fn l2_normalize(&self, x: Buf, y: Buf, rows: usize, width: usize) -> Result<()> {
        self.run(y, &[x], |i, y| ops::l2_normalize::cpu(i[0], y, rows, width));
        Ok(())
    }
}
