//! gather_rows: `out[r] = table[ids[r]] (+ add[r mod add_rows])`, rows of
//! `width`. With `add`, the token embedding of CLIP's text tower (ids into
//! the vocabulary table plus the positional embedding, `add_rows` = context
//! length); without, picking one row per sample (the end-of-text token of
//! each prompt). An id outside the table gives a row of NaN: callers check
//! ids on the host, so such a row means a bug, and NaN cannot pass as a
//! plausible number.

use super::{Addr, Host, OpDef, disjoint, elems, need, on_host, opt_addr};
use crate::buf::{Buf, DType};
use crate::device::{Arg, Dims, Gpu, u32_arg};
use crate::error::Result;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherShape {
    /// Output rows (= ids).
    pub rows: usize,
    pub width: usize,
    /// Rows of `table`: ids must be below it.
    pub table_rows: usize,
    /// Rows of `add`; output row `r` adds row `r mod add_rows`.
    pub add_rows: usize,
}

/// `shape.rows` rows picked from `table` by the i32 `ids`, plus `add`.
#[derive(Clone, Copy, Debug)]
pub struct GatherRows {
    pub table: Buf,
    pub ids: Buf,
    pub add: Option<Buf>,
    pub out: Buf,
    pub shape: GatherShape,
}

pub fn cpu(table: &[f32], ids: &[i32], add: Option<&[f32]>, out: &mut [f32], s: GatherShape) {
    if s.width == 0 {
        return;
    }
    out[..s.rows * s.width]
        .par_chunks_mut(s.width)
        .enumerate()
        .for_each(|(r, o)| {
            let id = ids[r];
            if id < 0 || id as usize >= s.table_rows {
                o.fill(f32::NAN);
                return;
            }
            let src = &table[id as usize * s.width..][..s.width];
            match add {
                Some(a) => {
                    let a = &a[(r % s.add_rows) * s.width..][..s.width];
                    for ((o, t), a) in o.iter_mut().zip(src).zip(a) {
                        *o = t + a;
                    }
                }
                None => o.copy_from_slice(src),
            }
        });
}

impl OpDef for GatherRows {
    fn check(&self) -> Result<()> {
        let op = "gather_rows";
        let s = self.shape;
        need(op, "ids", self.ids, DType::I32, s.rows)?;
        need(
            op,
            "table",
            self.table,
            DType::F32,
            elems(op, &[s.table_rows, s.width])?,
        )?;
        need(
            op,
            "out",
            self.out,
            DType::F32,
            elems(op, &[s.rows, s.width])?,
        )?;
        if let Some(a) = self.add {
            if s.add_rows == 0 {
                return Err(crate::invalid!("gather_rows: `add` needs add_rows ≥ 1"));
            }
            need(op, "add", a, DType::F32, elems(op, &[s.add_rows, s.width])?)?;
        }
        let inputs = [
            ("table", Some(self.table)),
            ("ids", Some(self.ids)),
            ("add", self.add),
        ];
        disjoint(op, ("out", self.out), &inputs)
    }

    fn cost(&self) -> crate::profile::Cost {
        let s = self.shape;
        let reads = if self.add.is_some() { 2.0 } else { 1.0 };
        crate::profile::Cost {
            flops: if self.add.is_some() {
                (s.rows * s.width) as f64
            } else {
                0.0
            },
            bytes: 4.0 * (s.rows * s.width) as f64 * (reads + 1.0) + 4.0 * s.rows as f64,
        }
    }

    fn run_cpu(&self, host: &dyn Host) -> Result<()> {
        let ins = [Some(self.table), Some(self.ids), self.add];
        on_host(host, self.out, &ins, |i, o| {
            cpu(i.f32(0), i.i32(1), i.opt_f32(2), o.f32(), self.shape)
        })
    }

    /// One block of 128 threads per output row.
    fn launch(&self, gpu: &dyn Gpu, at: &Addr) -> Result<()> {
        let s = self.shape;
        if s.rows == 0 || s.width == 0 {
            return Ok(());
        }
        let args = [
            Arg::U64(at(self.table)?),
            Arg::U64(at(self.ids)?),
            Arg::U64(opt_addr(at, self.add)?),
            Arg::U64(at(self.out)?),
            u32_arg("width", s.width)?,
            u32_arg("table rows", s.table_rows)?,
            u32_arg("add rows", s.add_rows.max(1))?,
        ];
        let rows = u32::try_from(s.rows)
            .map_err(|_| crate::invalid!("gather_rows: {} rows exceed one grid", s.rows))?;
        let grid = [rows, 1, 1];
        gpu.launch("gather_rows", Dims::new(grid, [128, 1, 1]), &args)
    }
}

#[cfg(feature = "op-examples")]
impl super::example::OpExample for GatherRows {
    const TOLERANCE: f64 = 1e-6;
    fn example(i: &mut super::example::ExampleInputs) -> (Self, Buf) {
        let shape = GatherShape {
            rows: 3 * 77,
            width: 96,
            table_rows: 500,
            add_rows: 77,
        };
        let ids: Vec<i32> = (0..shape.rows as i32).map(|r| (r * 37) % 500).collect();
        let ids = i.i32(&ids);
        let (table, add) = (i.f32(500 * 96, 1, 1.0), i.f32(77 * 96, 2, 1.0));
        let out = i.zeros(DType::F32, shape.rows * 96);
        (
            GatherRows {
                table,
                ids,
                add: Some(add),
                out,
                shape,
            },
            out,
        )
    }
}
