//! The interpreter proper: one launch, block by block, thread by thread.

use super::parse::{
    AddrBase, Cmp, Inst, Kernel, MulMode, Opcode, Operand, Round, ShflMode, Space, Special, Ty,
};
use super::{Arg, EmuOptions, Fault, GlobalMem};
use std::collections::{HashMap, HashSet};

const NONE: u32 = u32::MAX;
const MANY: u32 = u32::MAX - 1;

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Run,
    /// Waiting at the `bar.sync` at this instruction index.
    Bar(u32),
    /// Waiting at the `shfl.sync` at this instruction index, with its inputs.
    Shfl {
        pc: u32,
        val: u32,
        b: u32,
        c: u32,
        mask: u32,
    },
    /// Waiting at the warp-wide `mma.sync`/`ldmatrix` at this index.
    Warp(u32),
    /// Exited at this PTX line.
    Exited(u32),
}

/// One `cp.async` in flight: its bytes land in shared memory at the
/// `cp.async.wait_group` that completes its group, not before.
struct AsyncCopy {
    dst: usize,
    data: Vec<u8>,
}

struct Thread {
    pc: u32,
    regs: Vec<u64>,
    written: Vec<bool>,
    state: State,
    tid: [u32; 3],
    /// Copies issued since the last `cp.async.commit_group`.
    copies_open: Vec<AsyncCopy>,
    /// Committed groups, oldest first.
    copy_groups: std::collections::VecDeque<Vec<AsyncCopy>>,
}

/// Per-block shared memory with initialisation and race tracking per byte.
struct Shared {
    data: Vec<u8>,
    init: Vec<bool>,
    w_thread: Vec<u32>,
    w_epoch: Vec<u32>,
    r_thread: Vec<u32>,
    r_epoch: Vec<u32>,
    /// Thread whose `cp.async` to this byte is still in flight, or NONE.
    pending: Vec<u32>,
}

impl Shared {
    fn new(size: usize) -> Self {
        Shared {
            pending: vec![NONE; size],
            data: vec![0; size],
            init: vec![false; size],
            w_thread: vec![NONE; size],
            w_epoch: vec![0; size],
            r_thread: vec![NONE; size],
            r_epoch: vec![0; size],
        }
    }
}

struct Ctx<'a> {
    k: &'a Kernel,
    grid: [u32; 3],
    block: [u32; 3],
    ctaid: [u32; 3],
    params: &'a [u8],
    shared_base: &'a [usize],
    mem: &'a mut GlobalMem,
    shared: Shared,
    epoch: u32,
    count: u64,
    /// Extra shared-memory wavefronts of ldmatrix (bank conflicts).
    conflicts: u64,
    /// Every shared access of the block, when conflicts are counted.
    banks: Option<BankLog>,
}

/// Shared accesses grouped into warp instructions: lanes of one warp that
/// execute the same instruction for the same n-th time issued it together
/// (threads run one at a time here, so the warp is rebuilt afterwards).
#[derive(Default)]
struct BankLog {
    /// How often each (thread, line) has accessed shared memory.
    seen: HashMap<(u32, u32), u32>,
    requests: HashMap<RequestKey, Vec<LaneAccess>>,
}

/// One warp instruction's shared request: (warp, PTX line, n-th time).
type RequestKey = (u32, u32, u32);
/// One lane's part of a request: (lane, byte address, bytes).
type LaneAccess = (u32, u64, u32);

impl BankLog {
    fn record(&mut self, lin: u32, line: u32, addr: u64, bytes: u32) {
        let n = self.seen.entry((lin, line)).or_insert(0);
        let key = (lin / 32, line, *n);
        *n += 1;
        self.requests
            .entry(key)
            .or_default()
            .push((lin % 32, addr, bytes));
    }

    /// Extra wavefronts over all requests (0 when conflict-free).
    fn conflicts(&self) -> u64 {
        self.requests.values().map(|r| request_conflicts(r)).sum()
    }
}

/// Extra wavefronts of one warp's shared request. Lanes are served in
/// phases of 128 bytes (32 lanes for ≤4-byte accesses, 16 for 8-byte, 8
/// for 16-byte); within a phase, each of the 32 four-byte banks delivers
/// one distinct word per wavefront (equal words broadcast).
fn request_conflicts(lanes: &[LaneAccess]) -> u64 {
    let bytes = lanes.iter().map(|l| l.2).max().unwrap_or(4).max(4);
    let per_phase = 128 / bytes.min(16);
    let mut phases: HashMap<u32, HashMap<u64, HashSet<u64>>> = HashMap::new();
    for &(lane, addr, len) in lanes {
        let banks = phases.entry(lane / per_phase).or_default();
        for word in addr / 4..(addr + len as u64).div_ceil(4) {
            banks.entry(word % 32).or_default().insert(word);
        }
    }
    phases
        .values()
        .map(|banks| banks.values().map(|w| w.len() as u64).max().unwrap_or(1) - 1)
        .sum()
}

/// What a launch did, beyond its results.
#[derive(Clone, Copy, Debug, Default)]
pub struct LaunchStats {
    /// Thread-instructions executed.
    pub instructions: u64,
    /// Extra wavefronts `ldmatrix` needed because rows of one 8×8 matrix
    /// fell in the same banks (0 for a conflict-free layout).
    pub ldmatrix_conflicts: u64,
    /// Extra wavefronts of the other shared accesses (ld/st.shared and
    /// cp.async's shared writes), when `EmuOptions::bank_conflicts` is set.
    pub shared_conflicts: u64,
}

type Res<T> = Result<T, (u32, String)>;

/// Runs a whole launch; returns the number of thread-instructions executed.
pub fn launch(
    k: &Kernel,
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: u32,
    args: &[Arg],
    mem: &mut GlobalMem,
    opts: EmuOptions,
) -> Result<LaunchStats, Fault> {
    let fault0 = |msg: String| Fault {
        kernel: k.name.clone(),
        block: [0; 3],
        thread: [0; 3],
        line: 0,
        msg,
    };
    let threads = block.iter().map(|&b| b as u64).product::<u64>();
    if threads == 0 || threads > 1024 || grid.contains(&0) {
        return Err(fault0(format!(
            "bad launch shape: grid {grid:?}, block {block:?} (1..=1024 threads, non-empty grid)"
        )));
    }
    // Parameters: count and types must match the kernel's signature.
    if args.len() != k.params.len() {
        return Err(fault0(format!(
            "launched with {} arguments, the kernel takes {}",
            args.len(),
            k.params.len()
        )));
    }
    let mut params = vec![0u8; k.param_bytes];
    for (p, a) in k.params.iter().zip(args) {
        let bytes: Vec<u8> = match (p.ty, a) {
            (Ty::U64 | Ty::B64 | Ty::S64, Arg::U64(v)) => v.to_le_bytes().to_vec(),
            (Ty::U32 | Ty::B32 | Ty::S32, Arg::U32(v)) => v.to_le_bytes().to_vec(),
            (Ty::F32, Arg::F32(v)) => v.to_le_bytes().to_vec(),
            _ => {
                return Err(fault0(format!(
                    "argument `{}` is .{:?} but was given {a:?}",
                    p.name, p.ty
                )));
            }
        };
        params[p.offset..p.offset + bytes.len()].copy_from_slice(&bytes);
    }
    // Shared layout: static variables, then the dynamic (extern) array.
    let mut shared_base = Vec::with_capacity(k.shared.len());
    let mut total = 0usize;
    for v in &k.shared {
        total = total.next_multiple_of(v.align.max(1));
        shared_base.push(total);
        total += v.size.unwrap_or(shared_bytes as usize);
    }
    if k.shared.iter().all(|v| v.size.is_some()) && shared_bytes > 0 {
        return Err(fault0(format!(
            "launched with {shared_bytes} bytes of dynamic shared memory but declares no .extern .shared"
        )));
    }
    let mut order: Vec<[u32; 3]> = Vec::new();
    for z in 0..grid[2] {
        for y in 0..grid[1] {
            for x in 0..grid[0] {
                order.push([x, y, z]);
            }
        }
    }
    if let Some(seed) = opts.shuffle_blocks {
        let mut r = crate::rng::SplitMix(seed);
        for i in (1..order.len()).rev() {
            let j = (r.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
    }
    let mut stats = LaunchStats::default();
    for ctaid in order {
        let mut cx = Ctx {
            k,
            grid,
            block,
            ctaid,
            params: &params,
            shared_base: &shared_base,
            mem,
            shared: Shared::new(total),
            epoch: 0,
            count: 0,
            conflicts: 0,
            banks: opts.bank_conflicts.then(BankLog::default),
        };
        let r = run_block(&mut cx);
        stats.instructions += cx.count;
        stats.ldmatrix_conflicts += cx.conflicts;
        stats.shared_conflicts += cx.banks.as_ref().map_or(0, BankLog::conflicts);
        r?;
    }
    Ok(stats)
}

fn run_block(cx: &mut Ctx) -> Result<(), Fault> {
    let [bx, by, bz] = cx.block;
    let n = (bx * by * bz) as usize;
    let nregs = cx.k.regs.len();
    let mut th: Vec<Thread> = (0..n as u32)
        .map(|i| Thread {
            pc: 0,
            regs: vec![0; nregs],
            written: vec![false; nregs],
            state: State::Run,
            tid: [i % bx, (i / bx) % by, i / (bx * by)],
            copies_open: Vec::new(),
            copy_groups: Default::default(),
        })
        .collect();
    let fault = |cx: &Ctx, t: &Thread, line: u32, msg: String| Fault {
        kernel: cx.k.name.clone(),
        block: cx.ctaid,
        thread: t.tid,
        line,
        msg,
    };
    loop {
        for (i, t) in th.iter_mut().enumerate() {
            if t.state == State::Run
                && let Err((line, msg)) = run_thread(cx, t, i as u32)
            {
                return Err(fault(cx, t, line, msg));
            }
        }
        let live = th
            .iter()
            .filter(|t| !matches!(t.state, State::Exited(_)))
            .count();
        if live == 0 {
            return Ok(());
        }
        // Shuffles: a warp's group completes when every lane of its mask waits
        // at the same shfl.sync.
        let mut progressed = false;
        for w in 0..n.div_ceil(32) {
            let lanes = w * 32..((w + 1) * 32).min(n);
            for l in lanes.clone() {
                let State::Shfl { pc, mask, .. } = th[l].state else {
                    continue;
                };
                let lane_ok = |j: usize| matches!(th[j].state, State::Shfl { pc: p, mask: m, .. } if p == pc && m == mask);
                let members: Vec<usize> = (0..32)
                    .filter(|b| mask >> b & 1 == 1)
                    .map(|b| w * 32 + b)
                    .collect();
                if let Some(&bad) = members.iter().find(|&&j| j >= n) {
                    let line = cx.k.insts[pc as usize].line;
                    return Err(fault(
                        cx,
                        &th[l],
                        line,
                        format!(
                            "shfl.sync mask {mask:#x} names lane {} beyond the block",
                            bad - w * 32
                        ),
                    ));
                }
                if let Some(&ex) = members
                    .iter()
                    .find(|&&j| matches!(th[j].state, State::Exited(_)))
                {
                    let line = cx.k.insts[pc as usize].line;
                    return Err(fault(
                        cx,
                        &th[l],
                        line,
                        format!(
                            "shfl.sync mask {mask:#x} includes lane {} which has exited",
                            ex - w * 32
                        ),
                    ));
                }
                if !members.iter().all(|&j| lane_ok(j)) {
                    continue;
                }
                // Everyone is here: compute all results before writing any.
                let mut results = Vec::with_capacity(members.len());
                for &j in &members {
                    let State::Shfl { val, b, c, .. } = th[j].state else {
                        unreachable!()
                    };
                    let lane = (j - w * 32) as u32;
                    let mode = match cx.k.insts[pc as usize].opcode {
                        Opcode::Shfl(m) => m,
                        _ => unreachable!(),
                    };
                    let (src, valid) = shfl_source(mode, lane, b, c);
                    let v = if valid {
                        let sj = w * 32 + src as usize;
                        if mask >> src & 1 == 0 || sj >= n {
                            let line = cx.k.insts[pc as usize].line;
                            return Err(fault(
                                cx,
                                &th[j],
                                line,
                                format!("shfl.sync reads lane {src}, outside the mask {mask:#x}"),
                            ));
                        }
                        match th[sj].state {
                            State::Shfl { val, .. } => val,
                            _ => unreachable!(),
                        }
                    } else {
                        val
                    };
                    results.push((j, v, valid));
                }
                for (j, v, valid) in results {
                    let inst = &cx.k.insts[pc as usize];
                    if let Operand::Reg(d) = inst.args[0] {
                        th[j].regs[d as usize] = v as u64;
                        th[j].written[d as usize] = true;
                    }
                    let _ = valid;
                    th[j].pc = pc + 1;
                    th[j].state = State::Run;
                }
                progressed = true;
            }
        }
        for w in 0..n.div_ceil(32) {
            progressed |= warp_collective(cx, &mut th, w)?;
        }
        if progressed {
            continue;
        }
        // Barrier: every thread of the block must wait at the same bar.sync.
        let at_bar: Vec<usize> = (0..n)
            .filter(|&i| matches!(th[i].state, State::Bar(_)))
            .collect();
        if !at_bar.is_empty() && at_bar.len() == live {
            let State::Bar(pc0) = th[at_bar[0]].state else {
                unreachable!()
            };
            if let Some(&other) = at_bar.iter().find(|&&i| th[i].state != State::Bar(pc0)) {
                let State::Bar(pc1) = th[other].state else {
                    unreachable!()
                };
                return Err(fault(
                    cx,
                    &th[other],
                    cx.k.insts[pc1 as usize].line,
                    format!(
                        "divergent bar.sync: this thread waits here while thread ({},{},{}) waits at line {}",
                        th[at_bar[0]].tid[0],
                        th[at_bar[0]].tid[1],
                        th[at_bar[0]].tid[2],
                        cx.k.insts[pc0 as usize].line
                    ),
                ));
            }
            if live < n {
                let ex = th
                    .iter()
                    .find(|t| matches!(t.state, State::Exited(_)))
                    .unwrap();
                let State::Exited(eline) = ex.state else {
                    unreachable!()
                };
                return Err(fault(
                    cx,
                    &th[at_bar[0]],
                    cx.k.insts[pc0 as usize].line,
                    format!(
                        "bar.sync reached by only {live} of {n} threads: thread ({},{},{}) exited at line {eline} without reaching it",
                        ex.tid[0], ex.tid[1], ex.tid[2]
                    ),
                ));
            }
            cx.epoch += 1;
            for i in at_bar {
                th[i].pc += 1;
                th[i].state = State::Run;
            }
            continue;
        }
        // Nothing can move.
        let stuck = th
            .iter()
            .find(|t| !matches!(t.state, State::Exited(_)))
            .unwrap();
        let pc = match stuck.state {
            State::Bar(p) | State::Warp(p) => p,
            State::Shfl { pc, .. } => pc,
            _ => stuck.pc,
        };
        let summary: Vec<String> = th
            .iter()
            .filter(|t| !matches!(t.state, State::Exited(_)))
            .take(4)
            .map(|t| match t.state {
                State::Bar(p) => format!(
                    "({},{},{}) at bar.sync line {}",
                    t.tid[0], t.tid[1], t.tid[2], cx.k.insts[p as usize].line
                ),
                State::Shfl { pc, mask, .. } => format!(
                    "({},{},{}) at shfl.sync line {} mask {mask:#x}",
                    t.tid[0], t.tid[1], t.tid[2], cx.k.insts[pc as usize].line
                ),
                State::Warp(p) => format!(
                    "({},{},{}) at warp-wide line {}",
                    t.tid[0], t.tid[1], t.tid[2], cx.k.insts[p as usize].line
                ),
                _ => String::new(),
            })
            .collect();
        let line = cx.k.insts[pc as usize].line;
        return Err(fault(
            cx,
            stuck,
            line,
            format!(
                "deadlock: {live} threads wait and none can proceed ({}{})",
                summary.join(", "),
                if live > 4 { ", ..." } else { "" }
            ),
        ));
    }
}

/// Source lane and validity per the PTX rules (docs/design.md §4).
fn shfl_source(mode: ShflMode, lane: u32, b: u32, c: u32) -> (u32, bool) {
    let clamp = c & 0x1f;
    let segmask = (c >> 8) & 0x1f;
    let max_lane = (lane & segmask) | (clamp & !segmask);
    let min_lane = lane & segmask;
    match mode {
        ShflMode::Up => {
            let j = lane as i64 - b as i64;
            (j.max(0) as u32, j >= max_lane as i64)
        }
        ShflMode::Down => {
            let j = lane + b;
            (j, j <= max_lane)
        }
        ShflMode::Bfly => {
            let j = lane ^ b;
            (j, j <= max_lane)
        }
        ShflMode::Idx => {
            let j = min_lane | (b & !segmask);
            (j, j <= max_lane)
        }
    }
}

#[inline]
fn mask_ty(ty: Ty, v: u64) -> u64 {
    match ty.bytes() {
        1 => v & 0xff,
        2 => v & 0xffff,
        4 => v & 0xffff_ffff,
        _ => v,
    }
}

#[inline]
fn f32v(v: u64) -> f32 {
    f32::from_bits(v as u32)
}
#[inline]
fn f32b(v: f32) -> u64 {
    v.to_bits() as u64
}

fn sext(ty: Ty, v: u64) -> i64 {
    match ty.bytes() {
        1 => v as u8 as i8 as i64,
        2 => v as u16 as i16 as i64,
        4 => v as u32 as i32 as i64,
        _ => v as i64,
    }
}

/// Runs one thread until it exits or reaches a collective.
fn run_thread(cx: &mut Ctx, t: &mut Thread, lin: u32) -> Res<()> {
    let insts = &cx.k.insts;
    loop {
        let Some(inst) = insts.get(t.pc as usize) else {
            let line = insts.last().map_or(0, |i| i.line);
            check_no_copies_in_flight(t, line)?;
            t.state = State::Exited(line);
            return Ok(());
        };
        cx.count += 1;
        if let Some((p, neg)) = inst.guard {
            let v = read_reg(t, p, inst.line)? != 0;
            if v == neg {
                t.pc += 1;
                continue;
            }
        }
        match &inst.opcode {
            Opcode::Bra => {
                let Operand::Label(l) = inst.args[0] else {
                    unreachable!()
                };
                t.pc = l;
                continue;
            }
            Opcode::Ret => {
                check_no_copies_in_flight(t, inst.line)?;
                t.state = State::Exited(inst.line);
                return Ok(());
            }
            Opcode::Mma { .. } | Opcode::Ldmatrix { .. } => {
                t.state = State::Warp(t.pc);
                return Ok(());
            }
            Opcode::Bar => {
                t.state = State::Bar(t.pc);
                return Ok(());
            }
            Opcode::Shfl(_) => {
                let val = read(cx, t, lin, &inst.args[1], Ty::B32, inst.line)? as u32;
                let b = read(cx, t, lin, &inst.args[2], Ty::B32, inst.line)? as u32;
                let c = read(cx, t, lin, &inst.args[3], Ty::B32, inst.line)? as u32;
                let mask = read(cx, t, lin, &inst.args[4], Ty::B32, inst.line)? as u32;
                if mask >> (lin % 32) & 1 == 0 {
                    return Err((
                        inst.line,
                        format!(
                            "shfl.sync by lane {} which is not in its own mask {mask:#x}",
                            lin % 32
                        ),
                    ));
                }
                t.state = State::Shfl {
                    pc: t.pc,
                    val,
                    b,
                    c,
                    mask,
                };
                return Ok(());
            }
            _ => exec(cx, t, lin, inst)?,
        }
        t.pc += 1;
    }
}

#[inline]
fn read_reg(t: &Thread, r: u16, line: u32) -> Res<u64> {
    if !t.written[r as usize] {
        return Err((line, format!("read of register #{r} before any write")));
    }
    Ok(t.regs[r as usize])
}

fn reg_name<'a>(cx: &'a Ctx, r: u16) -> &'a str {
    &cx.k.regs[r as usize].0
}

fn read(cx: &Ctx, t: &Thread, lin: u32, o: &Operand, ty: Ty, line: u32) -> Res<u64> {
    Ok(match o {
        Operand::Reg(r) => {
            if !t.written[*r as usize] {
                return Err((
                    line,
                    format!("read of register {} before any write", reg_name(cx, *r)),
                ));
            }
            mask_ty(ty, t.regs[*r as usize])
        }
        Operand::Imm(v) => match ty {
            Ty::F32 => f32b(*v as i64 as f32),
            Ty::F64 => (*v as i64 as f64).to_bits(),
            _ => mask_ty(ty, *v),
        },
        Operand::FImm(f) => match ty {
            Ty::F32 | Ty::B32 | Ty::U32 => f32b(*f as f32),
            Ty::F64 | Ty::B64 => f.to_bits(),
            _ => return Err((line, "float literal for an integer operand".into())),
        },
        Operand::Special(s) => {
            let d = |a: [u32; 3], i: u8| a[i as usize] as u64;
            match s {
                Special::Tid(i) => d(t.tid, *i),
                Special::Ntid(i) => d(cx.block, *i),
                Special::Ctaid(i) => d(cx.ctaid, *i),
                Special::Nctaid(i) => d(cx.grid, *i),
                Special::LaneId => (lin % 32) as u64,
                Special::WarpId => (lin / 32) as u64,
            }
        }
        Operand::Symbol(i) => cx.shared_base[*i as usize] as u64,
        _ => return Err((line, format!("operand {o:?} cannot be read as a value"))),
    })
}

#[inline]
fn write(t: &mut Thread, o: &Operand, ty: Ty, v: u64, line: u32) -> Res<()> {
    match o {
        Operand::Reg(r) => {
            t.regs[*r as usize] = mask_ty(ty, v);
            t.written[*r as usize] = true;
            Ok(())
        }
        Operand::Sink => Ok(()),
        _ => Err((line, format!("cannot write to {o:?}"))),
    }
}

fn float_bin(
    ty: Ty,
    a: u64,
    b: u64,
    f32op: fn(f32, f32) -> f32,
    f64op: fn(f64, f64) -> f64,
) -> u64 {
    match ty {
        Ty::F64 => f64op(f64::from_bits(a), f64::from_bits(b)).to_bits(),
        _ => f32b(f32op(f32v(a), f32v(b))),
    }
}

fn exec(cx: &mut Ctx, t: &mut Thread, lin: u32, inst: &Inst) -> Res<()> {
    let ty = inst.ty;
    let l = inst.line;
    let a = &inst.args;
    let rd = |cx: &Ctx, t: &Thread, i: usize, ty: Ty| read(cx, t, lin, &a[i], ty, l);
    match &inst.opcode {
        Opcode::Mov => match (&a[0], &a[1]) {
            // `mov.b32 %r, {%lo, %hi}`: the first element is the low bits.
            (_, Operand::Vector(parts)) => {
                let bits = ty.bytes() * 8 / parts.len();
                let mut v = 0u64;
                for (k, r) in parts.iter().enumerate() {
                    let part = read(cx, t, lin, &Operand::Reg(*r), ty, l)?;
                    v |= (part & ((1u64 << bits) - 1)) << (k * bits);
                }
                write(t, &a[0], ty, v, l)
            }
            (Operand::Vector(parts), _) => {
                let bits = ty.bytes() * 8 / parts.len();
                let v = rd(cx, t, 1, ty)?;
                for (k, r) in parts.iter().enumerate() {
                    let part = (v >> (k * bits)) & ((1u64 << bits) - 1);
                    let rty = cx.k.regs[*r as usize].1;
                    write(t, &Operand::Reg(*r), rty, part, l)?;
                }
                Ok(())
            }
            _ => {
                let v = rd(cx, t, 1, ty)?;
                write(t, &a[0], ty, v, l)
            }
        },
        Opcode::Cvta => {
            let v = rd(cx, t, 1, ty)?;
            write(t, &a[0], ty, v, l)
        }
        Opcode::Add
        | Opcode::Sub
        | Opcode::Min
        | Opcode::Max
        | Opcode::And
        | Opcode::Or
        | Opcode::Xor
        | Opcode::Div { .. }
        | Opcode::Rem => {
            let (x, y) = (rd(cx, t, 1, ty)?, rd(cx, t, 2, ty)?);
            let v = if ty.is_float() {
                match inst.opcode {
                    Opcode::Add => float_bin(ty, x, y, |p, q| p + q, |p, q| p + q),
                    Opcode::Sub => float_bin(ty, x, y, |p, q| p - q, |p, q| p - q),
                    // PTX min/max return the non-NaN operand.
                    Opcode::Min => float_bin(ty, x, y, f32::min, f64::min),
                    Opcode::Max => float_bin(ty, x, y, f32::max, f64::max),
                    Opcode::Div { .. } => float_bin(ty, x, y, |p, q| p / q, |p, q| p / q),
                    _ => return Err((l, format!("{:?} on a float type", inst.opcode))),
                }
            } else {
                let signed = ty.is_signed();
                let (sx, sy) = (sext(ty, x), sext(ty, y));
                match inst.opcode {
                    Opcode::Add => x.wrapping_add(y),
                    Opcode::Sub => x.wrapping_sub(y),
                    Opcode::Min if signed => sx.min(sy) as u64,
                    Opcode::Max if signed => sx.max(sy) as u64,
                    Opcode::Min => x.min(y),
                    Opcode::Max => x.max(y),
                    Opcode::And => x & y,
                    Opcode::Or => x | y,
                    Opcode::Xor => x ^ y,
                    Opcode::Div { .. } | Opcode::Rem if y == 0 => {
                        return Err((l, "integer division by zero".into()));
                    }
                    Opcode::Div { .. } if signed => sx.wrapping_div(sy) as u64,
                    Opcode::Rem if signed => sx.wrapping_rem(sy) as u64,
                    Opcode::Div { .. } => x / y,
                    Opcode::Rem => x % y,
                    _ => unreachable!(),
                }
            };
            write(t, &a[0], ty, v, l)
        }
        Opcode::Mul(mode) => {
            let (x, y) = (rd(cx, t, 1, ty)?, rd(cx, t, 2, ty)?);
            let (v, dty) = mul(ty, *mode, x, y);
            write(t, &a[0], dty, v, l)
        }
        Opcode::Mad(mode) => {
            let (x, y) = (rd(cx, t, 1, ty)?, rd(cx, t, 2, ty)?);
            let (p, dty) = mul(ty, *mode, x, y);
            let z = rd(cx, t, 3, dty)?;
            let v = if ty.is_float() {
                float_bin(ty, p, z, |p, q| p + q, |p, q| p + q)
            } else {
                p.wrapping_add(z)
            };
            write(t, &a[0], dty, v, l)
        }
        Opcode::Fma => {
            let (x, y, z) = (rd(cx, t, 1, ty)?, rd(cx, t, 2, ty)?, rd(cx, t, 3, ty)?);
            let v = match ty {
                Ty::F64 => f64::from_bits(x)
                    .mul_add(f64::from_bits(y), f64::from_bits(z))
                    .to_bits(),
                _ => f32b(f32v(x).mul_add(f32v(y), f32v(z))),
            };
            write(t, &a[0], ty, v, l)
        }
        Opcode::Rcp { .. }
        | Opcode::Sqrt { .. }
        | Opcode::Rsqrt
        | Opcode::Ex2
        | Opcode::Lg2
        | Opcode::Abs
        | Opcode::Neg
        | Opcode::Not => {
            let x = rd(cx, t, 1, ty)?;
            let v = if ty.is_float() {
                let f = |g: fn(f64) -> f64| -> u64 {
                    match ty {
                        Ty::F64 => g(f64::from_bits(x)).to_bits(),
                        _ => f32b(g(f32v(x) as f64) as f32),
                    }
                };
                match inst.opcode {
                    Opcode::Rcp { .. } => f(|v| 1.0 / v),
                    Opcode::Sqrt { .. } => f(f64::sqrt),
                    Opcode::Rsqrt => f(|v| 1.0 / v.sqrt()),
                    Opcode::Ex2 => f(f64::exp2),
                    Opcode::Lg2 => f(f64::log2),
                    Opcode::Abs => f(f64::abs),
                    Opcode::Neg => f(|v| -v),
                    _ => return Err((l, "not on a float type".into())),
                }
            } else {
                match inst.opcode {
                    Opcode::Abs => sext(ty, x).unsigned_abs(),
                    Opcode::Neg => (sext(ty, x)).wrapping_neg() as u64,
                    Opcode::Not => !x,
                    _ => return Err((l, format!("{:?} on an integer type", inst.opcode))),
                }
            };
            write(t, &a[0], ty, v, l)
        }
        Opcode::Shl | Opcode::Shr => {
            let x = rd(cx, t, 1, ty)?;
            let s = rd(cx, t, 2, Ty::U32)? as u32;
            let bits = ty.bytes() as u32 * 8;
            let v = match inst.opcode {
                Opcode::Shl => {
                    if s >= bits {
                        0
                    } else {
                        x << s
                    }
                }
                _ if ty.is_signed() => (sext(ty, x) >> s.min(bits - 1)) as u64,
                _ => {
                    if s >= bits {
                        0
                    } else {
                        x >> s
                    }
                }
            };
            write(t, &a[0], ty, v, l)
        }
        Opcode::Setp(c) => {
            let (x, y) = (rd(cx, t, 1, ty)?, rd(cx, t, 2, ty)?);
            let v = if ty.is_float() {
                let (p, q) = match ty {
                    Ty::F64 => (f64::from_bits(x), f64::from_bits(y)),
                    _ => (f32v(x) as f64, f32v(y) as f64),
                };
                let un = p.is_nan() || q.is_nan();
                match c {
                    Cmp::Eq => !un && p == q,
                    Cmp::Ne => !un && p != q,
                    Cmp::Lt => !un && p < q,
                    Cmp::Le => !un && p <= q,
                    Cmp::Gt => !un && p > q,
                    Cmp::Ge => !un && p >= q,
                    Cmp::Equ => un || p == q,
                    Cmp::Neu => un || p != q,
                    Cmp::Ltu => un || p < q,
                    Cmp::Leu => un || p <= q,
                    Cmp::Gtu => un || p > q,
                    Cmp::Geu => un || p >= q,
                    Cmp::Num => !un,
                    Cmp::Nan => un,
                }
            } else {
                let ord = if ty.is_signed() {
                    sext(ty, x).cmp(&sext(ty, y))
                } else {
                    x.cmp(&y)
                };
                use std::cmp::Ordering::*;
                match c {
                    Cmp::Eq => ord == Equal,
                    Cmp::Ne => ord != Equal,
                    Cmp::Lt => ord == Less,
                    Cmp::Le => ord != Greater,
                    Cmp::Gt => ord == Greater,
                    Cmp::Ge => ord != Less,
                    _ => return Err((l, "unordered comparison on integers".into())),
                }
            };
            write(t, &a[0], Ty::Pred, v as u64, l)
        }
        Opcode::Selp => {
            let p = rd(cx, t, 3, Ty::Pred)? != 0;
            let v = if p {
                rd(cx, t, 1, ty)?
            } else {
                rd(cx, t, 2, ty)?
            };
            write(t, &a[0], ty, v, l)
        }
        Opcode::Cvt { dst, src, rnd } => {
            let x = rd(cx, t, 1, *src)?;
            let v =
                cvt(*dst, *src, *rnd, x).ok_or((l, format!("unsupported cvt .{dst:?}.{src:?}")))?;
            write(t, &a[0], *dst, v, l)
        }
        Opcode::Ld { space, vec } => {
            let n = *vec as usize;
            let size = ty.bytes();
            let addr = address(cx, t, lin, &a[1], l)?;
            let mut vals = [0u64; 4];
            load(cx, *space, addr, size, n, lin, l, &mut vals)?;
            match &a[0] {
                Operand::Vector(rs) => {
                    for (k, r) in rs.iter().enumerate() {
                        write(t, &Operand::Reg(*r), ty, vals[k], l)?;
                    }
                    Ok(())
                }
                o => write(t, o, ty, vals[0], l),
            }
        }
        Opcode::St { space, vec } => {
            let n = *vec as usize;
            let size = ty.bytes();
            let addr = address(cx, t, lin, &a[0], l)?;
            let mut vals = [0u64; 4];
            match &a[1] {
                Operand::Vector(rs) => {
                    for (k, r) in rs.iter().enumerate() {
                        vals[k] = read(cx, t, lin, &Operand::Reg(*r), ty, l)?;
                    }
                }
                o => vals[0] = read(cx, t, lin, o, ty, l)?,
            }
            store(cx, *space, addr, size, n, lin, l, &vals)
        }
        Opcode::CvtPack { dst } => {
            let (hi, lo) = (rd(cx, t, 1, Ty::F32)?, rd(cx, t, 2, Ty::F32)?);
            let half = |v: u64| -> u64 {
                let x = f32v(v);
                if *dst == Ty::Bf16x2 {
                    half::bf16::from_f32(x).to_bits() as u64
                } else {
                    half::f16::from_f32(x).to_bits() as u64
                }
            };
            write(t, &a[0], Ty::B32, (half(hi) << 16) | half(lo), l)
        }
        Opcode::CpAsync => cp_async(cx, t, lin, inst),
        Opcode::CpAsyncCommit => {
            let open = std::mem::take(&mut t.copies_open);
            t.copy_groups.push_back(open);
            Ok(())
        }
        Opcode::CpAsyncWait { all } => {
            let keep = if *all {
                let open = std::mem::take(&mut t.copies_open);
                t.copy_groups.push_back(open);
                0
            } else {
                rd(cx, t, 0, Ty::U32)? as usize
            };
            // Landing bytes is not a request of this warp: the cp.async
            // was counted when issued.
            let banks = cx.banks.take();
            let r = land_copies(cx, t, keep, lin, l);
            cx.banks = banks;
            r
        }
        Opcode::Bra
        | Opcode::Ret
        | Opcode::Bar
        | Opcode::Shfl(_)
        | Opcode::Mma { .. }
        | Opcode::Ldmatrix { .. } => {
            unreachable!("handled by run_thread")
        }
    }
}

/// Completes all but the newest `keep` committed cp.async groups of `t`.
fn land_copies(cx: &mut Ctx, t: &mut Thread, keep: usize, lin: u32, l: u32) -> Res<()> {
    while t.copy_groups.len() > keep {
        for c in t.copy_groups.pop_front().unwrap_or_default() {
            for b in c.dst..c.dst + c.data.len() {
                cx.shared.pending[b] = NONE;
            }
            let mut vals = [0u64; 4];
            for (k, w) in c.data.chunks(4).enumerate() {
                vals[k] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as u64;
            }
            let addr = (None, c.dst as u64);
            store(cx, Space::Shared, addr, 4, c.data.len() / 4, lin, l, &vals)?;
        }
    }
    Ok(())
}

fn mul(ty: Ty, mode: MulMode, x: u64, y: u64) -> (u64, Ty) {
    if ty.is_float() {
        return (float_bin(ty, x, y, |p, q| p * q, |p, q| p * q), ty);
    }
    let signed = ty.is_signed();
    let bits = ty.bytes() * 8;
    let wide = |v: i128| v as u128;
    let full: u128 = if signed {
        wide(sext(ty, x) as i128 * sext(ty, y) as i128)
    } else {
        x as u128 * y as u128
    };
    match mode {
        MulMode::Lo => (full as u64, ty),
        MulMode::Hi => ((full >> bits) as u64, ty),
        MulMode::Wide => {
            let dty = match ty {
                Ty::S32 => Ty::S64,
                Ty::U32 => Ty::U64,
                Ty::S16 => Ty::S32,
                _ => Ty::U32,
            };
            (full as u64, dty)
        }
    }
}

fn round_f(v: f64, rnd: Round) -> f64 {
    match rnd {
        Round::Rni | Round::Rn => v.round_ties_even(),
        Round::Rzi | Round::Rz | Round::None => v.trunc(),
        Round::Rmi | Round::Rm => v.floor(),
        Round::Rpi | Round::Rp => v.ceil(),
    }
}

fn cvt(dst: Ty, src: Ty, rnd: Round, x: u64) -> Option<u64> {
    let sf = |v: u64| -> f64 {
        match src {
            Ty::F32 => f32v(v) as f64,
            Ty::F64 => f64::from_bits(v),
            Ty::F16 => half::f16::from_bits(v as u16).to_f64(),
            Ty::Bf16 => half::bf16::from_bits(v as u16).to_f64(),
            _ => unreachable!(),
        }
    };
    Some(match (dst.is_float(), src.is_float()) {
        (true, true) => {
            let v = sf(x);
            match dst {
                Ty::F32 => f32b(v as f32),
                Ty::F64 => v.to_bits(),
                // Narrowing to 16 bits only from f32 (or 16-bit) sources:
                // half's f64 paths do not round to nearest in every case
                // (0x3f008006 as f64 → 0x3f00, not 0x3f01), and going
                // through f32 would round twice.
                Ty::Bf16 if src != Ty::F64 => half::bf16::from_f32(v as f32).to_bits() as u64,
                Ty::F16 if src != Ty::F64 => half::f16::from_f32(v as f32).to_bits() as u64,
                _ => return None,
            }
        }
        (false, true) => {
            // Float to integer saturates; NaN gives 0.
            let v = sf(x);
            if v.is_nan() {
                0
            } else {
                let r = round_f(v, rnd);
                let bits = dst.bytes() * 8;
                if dst.is_signed() {
                    let lo = -(2f64.powi(bits as i32 - 1));
                    let hi = 2f64.powi(bits as i32 - 1) - 1.0;
                    mask_ty(dst, r.clamp(lo, hi) as i64 as u64)
                } else {
                    let hi = 2f64.powi(bits as i32) - 1.0;
                    r.clamp(0.0, hi) as u64
                }
            }
        }
        (true, false) => {
            let v = if src.is_signed() {
                sext(src, x) as f64
            } else {
                x as f64
            };
            match dst {
                Ty::F32 => f32b(v as f32),
                Ty::F64 => v.to_bits(),
                _ => return None,
            }
        }
        (false, false) => {
            if src.is_signed() {
                mask_ty(dst, sext(src, x) as u64)
            } else {
                mask_ty(dst, x)
            }
        }
    })
}

fn address(cx: &Ctx, t: &Thread, lin: u32, o: &Operand, l: u32) -> Res<(Option<AddrBase>, u64)> {
    match o {
        Operand::Addr(AddrBase::Reg(r), off) => {
            let b = read(cx, t, lin, &Operand::Reg(*r), Ty::U64, l)?;
            Ok((None, b.wrapping_add(*off as u64)))
        }
        Operand::Addr(AddrBase::Shared(i), off) => {
            Ok((None, (cx.shared_base[*i as usize] as i64 + off) as u64))
        }
        Operand::Addr(b @ AddrBase::Param(i), off) => {
            let p = &cx.k.params[*i as usize];
            Ok((Some(*b), (p.offset as i64 + off) as u64))
        }
        _ => Err((l, format!("{o:?} is not an address"))),
    }
}

#[allow(clippy::too_many_arguments)]
fn load(
    cx: &mut Ctx,
    space: Space,
    (_, addr): (Option<AddrBase>, u64),
    size: usize,
    n: usize,
    lin: u32,
    l: u32,
    out: &mut [u64; 4],
) -> Res<()> {
    let total = size * n;
    if addr % total as u64 != 0 {
        return Err((
            l,
            format!("misaligned {total}-byte {space:?} load at address {addr:#x}"),
        ));
    }
    let get = |bytes: &[u8]| -> u64 {
        let mut b = [0u8; 8];
        b[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(b)
    };
    match space {
        Space::Param => {
            let a = addr as usize;
            if a + total > cx.params.len() {
                return Err((
                    l,
                    format!(
                        "param load at offset {a} beyond the {} parameter bytes",
                        cx.params.len()
                    ),
                ));
            }
            for (k, o) in out.iter_mut().enumerate().take(n) {
                *o = get(&cx.params[a + k * size..a + (k + 1) * size]);
            }
        }
        Space::Global => {
            let (i, off) = cx.mem.find(addr, total).ok_or_else(|| {
                (
                    l,
                    format!(
                        "global load of {total} bytes at {addr:#x} is outside every allocation"
                    ),
                )
            })?;
            let d = &cx.mem.allocs[i].1;
            for (k, o) in out.iter_mut().enumerate().take(n) {
                *o = get(&d[off + k * size..off + (k + 1) * size]);
            }
        }
        Space::Shared => {
            if let Some(b) = &mut cx.banks {
                b.record(lin, l, addr, total as u32);
            }
            let a = addr as usize;
            let sh = &mut cx.shared;
            if a + total > sh.data.len() {
                return Err((
                    l,
                    format!(
                        "shared load of {total} bytes at offset {a} beyond the {} bytes declared",
                        sh.data.len()
                    ),
                ));
            }
            for b in a..a + total {
                if sh.pending[b] != NONE {
                    return Err((l, in_flight_msg("read", b, sh.pending[b], lin)));
                }
                if !sh.init[b] {
                    return Err((
                        l,
                        format!(
                            "read of shared byte {b} before any thread wrote it (a missing bar.sync?)"
                        ),
                    ));
                }
                if sh.w_epoch[b] == cx.epoch && sh.w_thread[b] != lin && sh.w_thread[b] != NONE {
                    return Err((
                        l,
                        format!(
                            "shared-memory race on byte {b}: read by thread {lin} after a write by thread {} with no bar.sync between",
                            sh.w_thread[b]
                        ),
                    ));
                }
                if sh.r_epoch[b] != cx.epoch || sh.r_thread[b] == NONE {
                    sh.r_epoch[b] = cx.epoch;
                    sh.r_thread[b] = lin;
                } else if sh.r_thread[b] != lin {
                    sh.r_thread[b] = MANY;
                }
            }
            for (k, o) in out.iter_mut().enumerate().take(n) {
                *o = get(&sh.data[a + k * size..a + (k + 1) * size]);
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn store(
    cx: &mut Ctx,
    space: Space,
    (_, addr): (Option<AddrBase>, u64),
    size: usize,
    n: usize,
    lin: u32,
    l: u32,
    vals: &[u64; 4],
) -> Res<()> {
    let total = size * n;
    if addr % total as u64 != 0 {
        return Err((
            l,
            format!("misaligned {total}-byte {space:?} store at address {addr:#x}"),
        ));
    }
    match space {
        Space::Global => {
            let (i, off) = cx.mem.find(addr, total).ok_or_else(|| {
                (
                    l,
                    format!(
                        "global store of {total} bytes at {addr:#x} is outside every allocation"
                    ),
                )
            })?;
            let d = &mut cx.mem.allocs[i].1;
            for (k, v) in vals.iter().enumerate().take(n) {
                d[off + k * size..off + (k + 1) * size].copy_from_slice(&v.to_le_bytes()[..size]);
            }
        }
        Space::Shared => {
            if let Some(b) = &mut cx.banks {
                b.record(lin, l, addr, total as u32);
            }
            let a = addr as usize;
            let sh = &mut cx.shared;
            if a + total > sh.data.len() {
                return Err((
                    l,
                    format!(
                        "shared store of {total} bytes at offset {a} beyond the {} bytes declared",
                        sh.data.len()
                    ),
                ));
            }
            for b in a..a + total {
                if sh.pending[b] != NONE {
                    return Err((l, in_flight_msg("write", b, sh.pending[b], lin)));
                }
                if sh.w_epoch[b] == cx.epoch && sh.w_thread[b] != lin && sh.w_thread[b] != NONE {
                    return Err((
                        l,
                        format!(
                            "shared-memory race on byte {b}: written by threads {} and {lin} with no bar.sync between",
                            sh.w_thread[b]
                        ),
                    ));
                }
                if sh.r_epoch[b] == cx.epoch && sh.r_thread[b] != NONE && sh.r_thread[b] != lin {
                    return Err((
                        l,
                        format!(
                            "shared-memory race on byte {b}: written by thread {lin} after a read by another thread with no bar.sync between"
                        ),
                    ));
                }
                sh.w_epoch[b] = cx.epoch;
                sh.w_thread[b] = lin;
                sh.init[b] = true;
            }
            for (k, v) in vals.iter().enumerate().take(n) {
                sh.data[a + k * size..a + (k + 1) * size].copy_from_slice(&v.to_le_bytes()[..size]);
            }
        }
        Space::Param => return Err((l, "store to param space".into())),
    }
    Ok(())
}

fn in_flight_msg(what: &str, b: usize, owner: u32, lin: u32) -> String {
    if owner == lin {
        format!(
            "{what} of shared byte {b} while this thread's cp.async to it is in flight \
             (cp.async.wait_group must complete its group first)"
        )
    } else {
        format!(
            "{what} of shared byte {b} while thread {owner}'s cp.async to it is in flight \
             (it needs cp.async.wait_group in thread {owner}, then bar.sync)"
        )
    }
}

fn check_no_copies_in_flight(t: &Thread, line: u32) -> Res<()> {
    let n = t.copies_open.len() + t.copy_groups.iter().map(Vec::len).sum::<usize>();
    if n > 0 {
        return Err((
            line,
            format!("thread exits with {n} cp.async copies never waited for (cp.async.wait_group)"),
        ));
    }
    Ok(())
}

/// `cp.async [dst], [src], size{, src_size}`: reads global memory now, holds
/// the bytes (zero-filled past `src_size`) until the group is waited for.
fn cp_async(cx: &mut Ctx, t: &mut Thread, lin: u32, inst: &Inst) -> Res<()> {
    let l = inst.line;
    let a = &inst.args;
    let (_, dst) = address(cx, t, lin, &a[0], l)?;
    let (_, src) = address(cx, t, lin, &a[1], l)?;
    let Operand::Imm(size) = a[2] else {
        unreachable!("checked by the parser")
    };
    let size = size as usize;
    let src_size = match a.get(3) {
        Some(o) => read(cx, t, lin, o, Ty::U32, l)? as usize,
        None => size,
    };
    if src_size > size {
        return Err((
            l,
            format!("cp.async src-size {src_size} exceeds the copy size {size}"),
        ));
    }
    if dst % size as u64 != 0 || src % size as u64 != 0 {
        return Err((
            l,
            format!("misaligned {size}-byte cp.async: shared offset {dst:#x}, global {src:#x}"),
        ));
    }
    let dst = dst as usize;
    if dst + size > cx.shared.data.len() {
        return Err((
            l,
            format!(
                "cp.async of {size} bytes to shared offset {dst} beyond the {} bytes declared",
                cx.shared.data.len()
            ),
        ));
    }
    let mut data = vec![0u8; size];
    if src_size > 0 {
        let (i, off) = cx.mem.find(src, src_size).ok_or_else(|| {
            (
                l,
                format!("cp.async reads {src_size} bytes at {src:#x}, outside every allocation"),
            )
        })?;
        data[..src_size].copy_from_slice(&cx.mem.allocs[i].1[off..off + src_size]);
    }
    for b in dst..dst + size {
        if cx.shared.pending[b] != NONE {
            return Err((
                l,
                format!(
                    "two cp.async copies in flight to shared byte {b} (threads {} and {lin})",
                    cx.shared.pending[b]
                ),
            ));
        }
        cx.shared.pending[b] = lin;
    }
    if let Some(b) = &mut cx.banks {
        b.record(lin, l, dst as u64, size as u32);
    }
    t.copies_open.push(AsyncCopy { dst, data });
    Ok(())
}

/// Lane registers of one warp-wide op, each read as a .b32.
fn lane_regs(
    cx: &Ctx,
    th: &[Thread],
    base: usize,
    o: &Operand,
    line: u32,
) -> Result<Vec<[u32; 4]>, (usize, u32, String)> {
    let Operand::Vector(rs) = o else {
        unreachable!("checked by the parser")
    };
    let mut out = vec![[0u32; 4]; 32];
    for (lane, v) in out.iter_mut().enumerate() {
        let j = base + lane;
        for (k, r) in rs.iter().enumerate() {
            v[k] = read(cx, &th[j], j as u32, &Operand::Reg(*r), Ty::B32, line)
                .map_err(|(l, m)| (j, l, m))? as u32;
        }
    }
    Ok(out)
}

/// Shared-memory wavefronts for 8 16-byte rows: the most distinct rows that
/// share a 4-bank group (32 banks of 4 bytes; equal addresses broadcast).
fn ldmatrix_wavefronts(rows: &[u64; 8]) -> u64 {
    let mut distinct: Vec<u64> = rows.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let mut per_group = [0u64; 8];
    for a in distinct {
        per_group[((a / 16) % 8) as usize] += 1;
    }
    per_group.into_iter().max().unwrap_or(1).max(1)
}

/// (row, column) of each of a lane's four C/D registers in the m16n8 tile:
/// g = lane / 4, t = lane % 4 (PTX ISA, mma.m16n8k16 fragments).
fn c_fragment(lane: usize) -> [(usize, usize); 4] {
    let (g, t) = (lane >> 2, lane & 3);
    [
        (g, 2 * t),
        (g, 2 * t + 1),
        (g + 8, 2 * t),
        (g + 8, 2 * t + 1),
    ]
}

/// Runs warp `w`'s `mma.sync`/`ldmatrix` once all 32 lanes wait at it.
fn warp_collective(cx: &mut Ctx, th: &mut [Thread], w: usize) -> Result<bool, Fault> {
    let n = th.len();
    let base = w * 32;
    let lanes = base..(base + 32).min(n);
    let Some(first) = lanes
        .clone()
        .find(|&j| matches!(th[j].state, State::Warp(_)))
    else {
        return Ok(false);
    };
    let State::Warp(pc) = th[first].state else {
        unreachable!()
    };
    let inst = &cx.k.insts[pc as usize];
    let line = inst.line;
    let fault = |cx: &Ctx, j: usize, line: u32, msg: String| Fault {
        kernel: cx.k.name.clone(),
        block: cx.ctaid,
        thread: th[j].tid,
        line,
        msg,
    };
    if lanes.len() < 32 {
        return Err(fault(
            cx,
            first,
            line,
            format!(
                "warp-wide instruction in a partial warp of {} threads (the block size must be a multiple of 32)",
                lanes.len()
            ),
        ));
    }
    if let Some(ex) = lanes
        .clone()
        .find(|&j| matches!(th[j].state, State::Exited(_)))
    {
        return Err(fault(
            cx,
            first,
            line,
            format!(
                "warp-wide .sync.aligned instruction while lane {} has exited",
                ex - base
            ),
        ));
    }
    if !lanes.clone().all(|j| matches!(th[j].state, State::Warp(_))) {
        return Ok(false);
    }
    if let Some(j) = lanes.clone().find(|&j| th[j].state != State::Warp(pc)) {
        let State::Warp(other) = th[j].state else {
            unreachable!()
        };
        return Err(fault(
            cx,
            j,
            cx.k.insts[other as usize].line,
            format!(
                "divergent .aligned warp instruction: lane {} waits here while lane {} waits at line {line}",
                j - base,
                first - base
            ),
        ));
    }
    let err = |cx: &Ctx, (j, l, m): (usize, u32, String)| fault(cx, j, l, m);
    let mut results = vec![[0u32; 4]; 32];
    let dst = match &inst.opcode {
        Opcode::Mma { ab } => {
            let av = lane_regs(cx, th, base, &inst.args[1], line).map_err(|e| err(cx, e))?;
            let bv = lane_regs(cx, th, base, &inst.args[2], line).map_err(|e| err(cx, e))?;
            let cv = lane_regs(cx, th, base, &inst.args[3], line).map_err(|e| err(cx, e))?;
            let elem = |bits: u32, hi: bool| -> f64 {
                let h = if hi { bits >> 16 } else { bits & 0xffff } as u16;
                match ab {
                    Ty::Bf16 => half::bf16::from_bits(h).to_f64(),
                    _ => half::f16::from_bits(h).to_f64(),
                }
            };
            // Scatter the fragments into whole matrices (docs/design.md §4 layouts).
            let mut am = [[0f64; 16]; 16];
            let mut bm = [[0f64; 8]; 16];
            let mut cm = [[0f64; 8]; 16];
            for lane in 0..32 {
                let (g, t4) = (lane >> 2, lane & 3);
                for (r, (row, col)) in [
                    (g, 2 * t4),
                    (g + 8, 2 * t4),
                    (g, 2 * t4 + 8),
                    (g + 8, 2 * t4 + 8),
                ]
                .into_iter()
                .enumerate()
                {
                    am[row][col] = elem(av[lane][r], false);
                    am[row][col + 1] = elem(av[lane][r], true);
                }
                for (r, k) in [2 * t4, 2 * t4 + 8].into_iter().enumerate() {
                    bm[k][g] = elem(bv[lane][r], false);
                    bm[k + 1][g] = elem(bv[lane][r], true);
                }
                for (r, (row, col)) in c_fragment(lane).into_iter().enumerate() {
                    cm[row][col] = f32::from_bits(cv[lane][r]) as f64;
                }
            }
            for (lane, out) in results.iter_mut().enumerate() {
                for (r, (row, col)) in c_fragment(lane).into_iter().enumerate() {
                    let dot: f64 = (0..16).map(|k| am[row][k] * bm[k][col]).sum();
                    out[r] = ((dot + cm[row][col]) as f32).to_bits();
                }
            }
            &inst.args[0]
        }
        Opcode::Ldmatrix { num, trans } => {
            // Lanes 8j..8j+7 give the row addresses of matrix j.
            let mut mats = [[[0u16; 8]; 8]; 4];
            for (j, mat) in mats.iter_mut().enumerate().take(*num as usize) {
                // Each matrix is one shared-memory wavefront when its 8 rows
                // (16 bytes = 4 banks each) use 8 different bank groups.
                let mut rows = [0u64; 8];
                for (r, row) in mat.iter_mut().enumerate() {
                    let lane = base + 8 * j + r;
                    let lin = lane as u32;
                    let addr = address(cx, &th[lane], lin, &inst.args[1], line)
                        .map_err(|(l, m)| fault(cx, lane, l, m))?;
                    rows[r] = addr.1;
                    let mut vals = [0u64; 4];
                    load(cx, Space::Shared, addr, 4, 4, lin, line, &mut vals)
                        .map_err(|(l, m)| fault(cx, lane, l, m))?;
                    for (e, v) in row.iter_mut().enumerate() {
                        *v = (vals[e / 2] >> (16 * (e % 2))) as u16;
                    }
                }
                cx.conflicts += ldmatrix_wavefronts(&rows) - 1;
            }
            for (lane, out) in results.iter_mut().enumerate() {
                let (r, c) = (lane >> 2, 2 * (lane & 3));
                for (j, mat) in mats.iter().enumerate().take(*num as usize) {
                    let (lo, hi) = if *trans {
                        (mat[c][r], mat[c + 1][r])
                    } else {
                        (mat[r][c], mat[r][c + 1])
                    };
                    out[j] = lo as u32 | (hi as u32) << 16;
                }
            }
            &inst.args[0]
        }
        _ => unreachable!("only mma and ldmatrix wait as a warp"),
    };
    let regs: Vec<u16> = match dst {
        Operand::Vector(v) => v.clone(),
        Operand::Reg(r) => vec![*r],
        _ => unreachable!("checked by the parser"),
    };
    for (lane, out) in results.iter().enumerate() {
        let t = &mut th[base + lane];
        for (k, r) in regs.iter().enumerate() {
            let rty = cx.k.regs[*r as usize].1;
            write(t, &Operand::Reg(*r), rty, out[k] as u64, line).map_err(|(l, m)| Fault {
                kernel: cx.k.name.clone(),
                block: cx.ctaid,
                thread: t.tid,
                line: l,
                msg: m,
            })?;
        }
        t.pc = pc + 1;
        t.state = State::Run;
    }
    cx.count += 32;
    Ok(true)
}
