//! Per-kernel profiling. Each executor times its ops (CUDA events on the GPU,
//! wall clock on `cpu` and `emu`); every op file states its work as a
//! [`Cost`], so the table can show achieved throughput against the device's
//! peak (the roofline).

use std::collections::BTreeMap;
use std::fmt::Write;

/// The work of one op call: floating-point operations and the bytes it must
/// move to and from memory at least (each input read once, each output
/// written once).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Cost {
    pub flops: f64,
    pub bytes: f64,
}

impl Cost {
    /// An elementwise op over `elems` f32 values touching `arrays` arrays of
    /// that length (reads plus writes), with `flops_per_elem` each.
    pub fn elementwise(elems: usize, arrays: usize, flops_per_elem: f64) -> Cost {
        Cost {
            flops: elems as f64 * flops_per_elem,
            bytes: (elems * arrays * 4) as f64,
        }
    }
}

/// Host timestamps for the synchronous executors (`cpu`, `emu`), where a
/// kernel has finished when its call returns.
#[derive(Default)]
pub struct WallClock(std::cell::RefCell<Vec<std::time::Instant>>);

impl WallClock {
    pub fn mark(&self) -> usize {
        let mut m = self.0.borrow_mut();
        m.push(std::time::Instant::now());
        m.len() - 1
    }
    pub fn elapsed_ms(&self, start: usize, end: usize) -> f64 {
        let m = self.0.borrow();
        (m[end] - m[start]).as_secs_f64() * 1e3
    }
    pub fn reset(&self) {
        self.0.borrow_mut().clear();
    }
}

/// One timed op call.
#[derive(Clone, Debug)]
pub struct Record {
    pub op: &'static str,
    pub ms: f64,
    pub cost: Cost,
    /// Ran on tensor cores: its roof is the bf16 tensor peak.
    pub tensor_core: bool,
    /// Extra shared-memory wavefronts, where the device counts them.
    pub bank_conflicts: Option<u64>,
}

/// Peak throughput of a device, for the roofline column.
#[derive(Clone, Debug)]
pub struct Peak {
    /// f32 FLOP/s (fused multiply-add counted as two).
    pub flops: f64,
    /// Dense bf16 tensor-core FLOP/s (f32 accumulation), where known.
    pub tensor_flops: Option<f64>,
    /// DRAM bytes/s.
    pub bytes: f64,
    /// How the figures were derived, for the report.
    pub source: String,
}

impl Peak {
    /// Fraction of the roofline a call reached: achieved FLOP/s over the
    /// roof at the op's arithmetic intensity, min(peak, intensity·bandwidth).
    pub fn fraction(&self, cost: Cost, ms: f64) -> Option<f64> {
        self.fraction_under(self.flops, cost, ms)
    }

    /// The same against the bf16 tensor-core roof.
    pub fn fraction_tensor(&self, cost: Cost, ms: f64) -> Option<f64> {
        self.fraction_under(self.tensor_flops?, cost, ms)
    }

    fn fraction_under(&self, flops: f64, cost: Cost, ms: f64) -> Option<f64> {
        if ms <= 0.0 || (cost.flops <= 0.0 && cost.bytes <= 0.0) {
            return None;
        }
        let secs = ms / 1e3;
        if cost.flops <= 0.0 {
            return Some(cost.bytes / secs / self.bytes);
        }
        let roof = if cost.bytes > 0.0 {
            flops.min(cost.flops / cost.bytes * self.bytes)
        } else {
            flops
        };
        Some(cost.flops / secs / roof)
    }
}

/// Calls of one op added up.
#[derive(Clone, Debug, Default)]
pub struct OpStats {
    pub calls: usize,
    pub total_ms: f64,
    pub min_ms: f64,
    pub cost: Cost,
    pub tensor_core: bool,
    pub bank_conflicts: Option<u64>,
}

pub fn aggregate(records: &[Record]) -> BTreeMap<&'static str, OpStats> {
    let mut by_op: BTreeMap<&'static str, OpStats> = BTreeMap::new();
    for r in records {
        let s = by_op.entry(r.op).or_insert(OpStats {
            min_ms: f64::INFINITY,
            ..OpStats::default()
        });
        s.calls += 1;
        s.total_ms += r.ms;
        s.min_ms = s.min_ms.min(r.ms);
        s.cost.flops += r.cost.flops;
        s.cost.bytes += r.cost.bytes;
        s.tensor_core |= r.tensor_core;
        if let Some(c) = r.bank_conflicts {
            *s.bank_conflicts.get_or_insert(0) += c;
        }
    }
    by_op
}

/// The `--profile` table: calls, total ms, mean µs, achieved GB/s and
/// TFLOP/s, and % of the roofline where the device's peak is known; sorted
/// by total time.
pub fn table(records: &[Record], peak: Option<&Peak>, device: &str) -> String {
    let by_op = aggregate(records);
    let mut rows: Vec<(&str, &OpStats)> = by_op.iter().map(|(k, v)| (*k, v)).collect();
    rows.sort_by(|a, b| b.1.total_ms.total_cmp(&a.1.total_ms));
    let total: f64 = rows.iter().map(|r| r.1.total_ms).sum();
    let mut s = String::new();
    // Bank conflicts are shown only where the device counted them (emu).
    let counted = rows.iter().any(|r| r.1.bank_conflicts.is_some());
    let _ = writeln!(s, "per-kernel profile on {device}");
    let _ = write!(
        s,
        "{:<16} {:>7} {:>10} {:>6} {:>10} {:>8} {:>8} {:>7}",
        "op", "calls", "total ms", "%time", "mean µs", "GB/s", "TFLOP/s", "%roof"
    );
    let _ = writeln!(s, "{}", if counted { "  bank conflicts/call" } else { "" });
    for (op, st) in rows {
        let secs = st.total_ms / 1e3;
        let roof = peak
            .and_then(|p| {
                if st.tensor_core {
                    p.fraction_tensor(st.cost, st.total_ms)
                } else {
                    p.fraction(st.cost, st.total_ms)
                }
            })
            .map_or("-".to_string(), |f| format!("{:.1}", 100.0 * f));
        let _ = write!(
            s,
            "{:<16} {:>7} {:>10.3} {:>6.1} {:>10.1} {:>8.1} {:>8.3} {:>7}",
            op,
            st.calls,
            st.total_ms,
            100.0 * st.total_ms / total.max(1e-12),
            1e3 * st.total_ms / st.calls as f64,
            st.cost.bytes / secs.max(1e-12) / 1e9,
            st.cost.flops / secs.max(1e-12) / 1e12,
            roof
        );
        let bank = match st.bank_conflicts {
            Some(c) if counted => format!("  {:>19.1}", c as f64 / st.calls as f64),
            _ if counted => format!("  {:>19}", "-"),
            _ => String::new(),
        };
        let _ = writeln!(s, "{bank}");
    }
    let _ = writeln!(s, "{:<16} {:>7} {:>10.3}", "total", "", total);
    if counted {
        let _ = writeln!(
            s,
            "bank conflicts: extra shared-memory wavefronts per call (the emulator's bank model)"
        );
    }
    match peak {
        Some(p) => {
            let _ = writeln!(
                s,
                "peak: {:.3} TFLOP/s f32, {:.0} GB/s ({})",
                p.flops / 1e12,
                p.bytes / 1e9,
                p.source
            );
        }
        None => {
            let _ = writeln!(s, "(no peak figures for this device: %roof not shown)");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roofline_picks_the_binding_limit() {
        let p = Peak {
            flops: 100e12,
            tensor_flops: Some(400e12),
            bytes: 1e12,
            source: String::new(),
        };
        // 1 GB in 1 ms is 1 TB/s: the whole bandwidth roof.
        let copy = Cost {
            flops: 0.0,
            bytes: 1e9,
        };
        assert!((p.fraction(copy, 1.0).unwrap() - 1.0).abs() < 1e-12);
        // Intensity 1000 FLOP/byte is compute bound: 50 TFLOP/s is half.
        let gemm = Cost {
            flops: 50e9,
            bytes: 50e6,
        };
        assert!((p.fraction(gemm, 1.0).unwrap() - 0.5).abs() < 1e-12);
        // Intensity 10 FLOP/byte: the roof is 10 TFLOP/s.
        let mid = Cost {
            flops: 5e9,
            bytes: 5e8,
        };
        assert!((p.fraction(mid, 1.0).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn table_sums_calls_per_op() {
        let r = |op, ms| Record {
            op,
            ms,
            cost: Cost::elementwise(1000, 3, 1.0),
            tensor_core: false,
            bank_conflicts: None,
        };
        let t = table(&[r("lerp", 1.0), r("gemm", 3.0), r("lerp", 2.0)], None, "x");
        let lerp = t.lines().find(|l| l.starts_with("lerp")).unwrap();
        let cols: Vec<&str> = lerp.split_whitespace().collect();
        assert_eq!(cols[1], "2");
        assert_eq!(cols[2], "3.000");
        // gemm has the larger total, so it is listed first.
        assert!(t.find("gemm").unwrap() < t.find("lerp").unwrap());
        assert!(
            !t.contains("bank conflicts"),
            "not counted, not shown:\n{t}"
        );
    }

    #[test]
    fn table_shows_bank_conflicts_per_call_where_counted() {
        let r = |op, c| Record {
            op,
            ms: 1.0,
            cost: Cost::elementwise(1000, 3, 1.0),
            tensor_core: false,
            bank_conflicts: c,
        };
        let t = table(
            &[r("gemm", Some(30)), r("gemm", Some(10)), r("add", None)],
            None,
            "x",
        );
        let last = |op: &str| {
            let l = t.lines().find(|l| l.starts_with(op)).unwrap();
            l.split_whitespace().last().unwrap().to_string()
        };
        assert_eq!(last("gemm"), "20.0", "{t}");
        assert_eq!(last("add"), "-", "{t}");
        assert!(
            t.lines().nth(1).unwrap().ends_with("bank conflicts/call"),
            "{t}"
        );
    }
}
