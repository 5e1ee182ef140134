//! The emulator's own checks: deliberately broken kernels must each be
//! caught with a message that points at the fault, and the collective
//! operations must follow the PTX rules, including the tensor-core fragment
//! layouts (checked on hand-computed cases) and cp.async visibility.

use dawin::device::emu::{Arg, Emu, EmuOptions, parse};
use dawin::device::{Dims, Gpu};

fn emu_with(file: &str) -> Emu {
    let path = crate::common::repo_root().join("tests/kernels").join(file);
    let src = std::fs::read_to_string(&path).unwrap();
    Emu::new(&[(file, src.as_str())], EmuOptions::default()).unwrap()
}

/// Launches with the emulator's own signature spelled out.
fn launch(
    emu: &Emu,
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    args: &[Arg],
) -> dawin::Result<()> {
    let dims = Dims {
        grid,
        block,
        shared_bytes: shared,
    };
    emu.launch(kernel, dims, args)
}

fn fault(emu: &Emu, kernel: &str, block: [u32; 3], args: &[Arg]) -> String {
    let e = launch(emu, kernel, [1, 1, 1], block, 0, args)
        .expect_err("the broken kernel must be caught");
    e.to_string()
}

/// Line number of the first line of `file` containing `needle`.
fn line_of(file: &str, needle: &str) -> usize {
    let src = std::fs::read_to_string(crate::common::repo_root().join("tests/kernels").join(file))
        .unwrap();
    src.lines()
        .position(|l| l.trim_start().starts_with(needle))
        .unwrap()
        + 1
}

#[test]
fn off_by_one_store_is_out_of_bounds() {
    let emu = emu_with("off_by_one_store.ptx");
    let out = emu.alloc(32 * 4).unwrap();
    let msg = fault(
        &emu,
        "off_by_one_store",
        [64, 1, 1],
        &[Arg::U64(out), Arg::U32(32)],
    );
    let line = line_of("off_by_one_store.ptx", "st.global.f32");
    assert!(msg.contains("outside every allocation"), "{msg}");
    assert!(
        msg.contains("thread (32,0,0)") && msg.contains(&format!("ptx line {line}:")),
        "{msg}"
    );
}

#[test]
fn missing_bar_before_shared_read_is_caught() {
    let emu = emu_with("missing_bar.ptx");
    let out = emu.alloc(32 * 4).unwrap();
    let msg = fault(&emu, "missing_bar", [32, 1, 1], &[Arg::U64(out)]);
    let line = line_of("missing_bar.ptx", "ld.shared.f32");
    assert!(
        msg.contains("missing bar.sync") || msg.contains("race"),
        "{msg}"
    );
    assert!(msg.contains(&format!("ptx line {line}:")), "{msg}");
}

#[test]
fn missing_bar_is_a_race_when_the_reader_runs_later() {
    // Thread order reversed by a 2-thread block where thread 1 writes the
    // byte thread 0 already read: the write-after-read race is named.
    let src = r#"
.version 7.0
.target sm_80
.address_size 64
.visible .entry war(.param .u64 out)
{
    .reg .pred %p<2>;
    .reg .b32 %r<3>;
    .reg .f32 %f<3>;
    .reg .b64 %rd<3>;
    .shared .align 4 .b8 buf[8];
    mov.u32 %r1, %tid.x;
    mov.u64 %rd1, buf;
    mov.f32 %f1, 0f3F800000;
    setp.eq.u32 %p1, %r1, 0;
    @%p1 st.shared.f32 [%rd1], %f1;
    bar.sync 0;
    @%p1 ld.shared.f32 %f2, [%rd1];
    @!%p1 st.shared.f32 [%rd1], %f1;
    ret;
}
"#;
    let emu = Emu::new(&[("war.ptx", src)], EmuOptions::default()).unwrap();
    let msg = fault(&emu, "war", [2, 1, 1], &[Arg::U64(0)]);
    assert!(
        msg.contains("race") && msg.contains("after a read"),
        "{msg}"
    );
}

#[test]
fn barrier_inside_a_branch_is_caught() {
    let emu = emu_with("bar_in_branch.ptx");
    let out = emu.alloc(32 * 4).unwrap();
    let msg = fault(&emu, "bar_in_branch", [32, 1, 1], &[Arg::U64(out)]);
    let line = line_of("bar_in_branch.ptx", "bar.sync");
    assert!(
        msg.contains("bar.sync reached by only 16 of 32 threads"),
        "{msg}"
    );
    assert!(msg.contains(&format!("ptx line {line}:")), "{msg}");
}

#[test]
fn shuffle_from_an_exited_lane_is_caught() {
    let emu = emu_with("shfl_exited.ptx");
    let out = emu.alloc(32 * 4).unwrap();
    let msg = fault(&emu, "shfl_exited", [32, 1, 1], &[Arg::U64(out)]);
    let line = line_of("shfl_exited.ptx", "shfl.sync");
    assert!(msg.contains("which has exited"), "{msg}");
    assert!(msg.contains(&format!("ptx line {line}:")), "{msg}");
}

#[test]
fn uninitialised_reads_bounds_alignment_and_deadlock() {
    let emu = emu_with("checks.ptx");
    let out = emu.alloc(64).unwrap();
    let msg = fault(&emu, "uninit_reg", [1, 1, 1], &[Arg::U64(out)]);
    assert!(
        msg.contains("read of register %f1 before any write"),
        "{msg}"
    );
    let msg = fault(&emu, "uninit_shared", [1, 1, 1], &[Arg::U64(out)]);
    assert!(
        msg.contains("shared byte 8 before any thread wrote it"),
        "{msg}"
    );
    let msg = fault(&emu, "shared_oob", [1, 1, 1], &[Arg::U64(out)]);
    assert!(msg.contains("beyond the 64 bytes declared"), "{msg}");
    let msg = fault(
        &emu,
        "misaligned",
        [1, 1, 1],
        &[Arg::U64(out), Arg::U64(out)],
    );
    assert!(msg.contains("misaligned 16-byte Global load"), "{msg}");
    let msg = fault(&emu, "deadlock", [32, 1, 1], &[Arg::U64(out)]);
    assert!(msg.contains("deadlock"), "{msg}");
    // Wrong argument types are refused before anything runs.
    let msg = fault(
        &emu,
        "shfl_modes",
        [32, 1, 1],
        &[Arg::U64(out), Arg::F32(1.0), Arg::U32(31)],
    );
    assert!(msg.contains("argument `b`"), "{msg}");
}

fn shfl(emu: &Emu, b: u32, c: u32) -> Vec<Vec<u32>> {
    let out = emu.alloc(4 * 32 * 4).unwrap();
    launch(
        emu,
        "shfl_modes",
        [1, 1, 1],
        [32, 1, 1],
        0,
        &[Arg::U64(out), Arg::U32(b), Arg::U32(c)],
    )
    .unwrap();
    let mut bytes = vec![0u8; 4 * 32 * 4];
    Gpu::read(emu, out, &mut bytes).unwrap();
    let v: Vec<u32> = bytemuck::cast_slice(&bytes).to_vec();
    v.chunks(32).map(|c| c.to_vec()).collect()
}

#[test]
fn shuffle_modes_follow_the_ptx_rules() {
    let emu = emu_with("checks.ptx");
    let val = |lane: u32| lane * 10 + 7;
    // Full-warp forms (c = 0x1f for down/bfly/idx; up uses clamp 0).
    let [_, down, bfly, idx] = <[Vec<u32>; 4]>::try_from(shfl(&emu, 1, 0x1f)).unwrap();
    assert_eq!(down[0], val(1));
    assert_eq!(down[30], val(31));
    assert_eq!(down[31], val(31), "last lane keeps its own value");
    assert_eq!(
        (bfly[0], bfly[1], bfly[6], bfly[7]),
        (val(1), val(0), val(7), val(6))
    );
    assert!(idx.iter().all(|&v| v == val(1)), "idx broadcasts lane b");
    let up = &shfl(&emu, 3, 0)[0];
    assert_eq!(
        (up[0], up[2], up[3], up[31]),
        (val(0), val(2), val(0), val(28))
    );
    // Width-8 segments: c = ((32 - 8) << 8) | clamp.
    let seg = shfl(&emu, 2, (24 << 8) | 0x1f);
    let (down, idx) = (&seg[1], &seg[3]);
    assert_eq!(idx[13], val(10), "idx is segment-relative");
    assert_eq!(idx[31], val(26));
    assert_eq!(down[13], val(15));
    assert_eq!(down[14], val(14), "down does not cross the segment end");
    let up = &shfl(&emu, 2, 24 << 8)[0];
    assert_eq!(
        (up[9], up[10]),
        (val(9), val(8)),
        "up does not cross the segment start"
    );
}

#[test]
fn unknown_instructions_are_parse_errors_naming_the_line() {
    let src = ".version 7.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n    .reg .b32 %r<2>;\n    frobnicate.b32 %r1, %r1;\n    ret;\n}\n";
    let e = parse::parse(src).unwrap_err();
    assert_eq!(e.line, 7, "{e}");
    assert!(
        e.msg.contains("unsupported instruction `frobnicate.b32`"),
        "{e}"
    );
    let e =
        parse::parse(&src.replace("frobnicate.b32 %r1, %r1", "add.u32 %r1, %r9, 1")).unwrap_err();
    assert!(e.msg.contains("undeclared register `%r9`"), "{e}");
}

#[test]
fn every_project_kernel_parses() {
    for (file, src) in dawin::ops::PTX_MODULES {
        let m = parse::parse(src).unwrap_or_else(|e| panic!("{file}: {e}"));
        let stem = file.trim_end_matches(".ptx");
        assert!(
            m.kernels.iter().any(|k| k.name == stem),
            "{file} must define `{stem}`"
        );
        assert!(m.target.starts_with("sm_80"), "{file}: target {}", m.target);
    }
}

#[test]
fn results_do_not_depend_on_block_order() {
    use dawin::exec::{Executor, PtxExec};
    use dawin::ops::gemm::{Gemm, GemmShape};
    let (m, n, k) = (130, 70, 37);
    let a = crate::common::data(1, m * k, 1.0);
    let b = crate::common::data(2, n * k, 1.0);
    let run = |seed: Option<u64>| {
        let ex = PtxExec::new(
            Emu::new(
                dawin::ops::PTX_MODULES,
                EmuOptions {
                    shuffle_blocks: seed,
                    ..EmuOptions::default()
                },
            )
            .unwrap(),
        );
        let ex: &dyn Executor = &ex;
        let c = ex.alloc(m * n).unwrap();
        let (a, b) = (ex.upload(&a).unwrap(), ex.upload(&b).unwrap());
        let shape = GemmShape { m, n, k };
        ex.run(Gemm {
            a: *a,
            b: *b,
            bias: None,
            c: *c,
            shape,
        })
        .unwrap();
        ex.download(*c).unwrap()
    };
    let base = run(None);
    for seed in [1, 2, 3] {
        assert_eq!(run(Some(seed)), base);
    }
}

#[test]
fn dynamic_shared_memory_is_sized_by_the_launch() {
    let emu = emu_with("checks.ptx");
    let out = emu.alloc(64 * 4).unwrap();
    launch(
        &emu,
        "dynamic_shared",
        [1, 1, 1],
        [64, 1, 1],
        256,
        &[Arg::U64(out)],
    )
    .unwrap();
    let mut bytes = vec![0u8; 256];
    Gpu::read(&emu, out, &mut bytes).unwrap();
    let v: &[u32] = bytemuck::cast_slice(&bytes);
    assert!(
        v.iter().enumerate().all(|(t, &x)| x == 63 - t as u32),
        "{v:?}"
    );
    // Too little dynamic memory for 64 threads is an out-of-bounds access.
    let e = launch(
        &emu,
        "dynamic_shared",
        [1, 1, 1],
        [64, 1, 1],
        128,
        &[Arg::U64(out)],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("beyond the 128 bytes declared"),
        "{e}"
    );
}

// ---- tensor-core and async-copy instructions (tests/kernels/tensor_core.ptx)

fn bf16(x: f32) -> u32 {
    half::bf16::from_f32(x).to_bits() as u32
}

fn f16(x: f32) -> u32 {
    half::f16::from_f32(x).to_bits() as u32
}

fn put_u32(emu: &Emu, v: &[u32]) -> u64 {
    let a = emu.alloc(v.len() * 4).unwrap();
    Gpu::write(emu, a, bytemuck::cast_slice(v)).unwrap();
    a
}

fn get_u32(emu: &Emu, a: u64, n: usize) -> Vec<u32> {
    let mut v = vec![0u32; n];
    Gpu::read(emu, a, bytemuck::cast_slice_mut(&mut v)).unwrap();
    v
}

/// Runs one warp of `mma_bf16`/`mma_f16` on per-lane fragment registers;
/// returns each lane's four f32 results.
/// (row, column) of a lane's four C/D registers in the m16n8 tile, for
/// g = lane / 4, t = lane % 4, written out from the PTX ISA's figure
/// (independently of the emulator's own table).
fn c_positions(g: usize, t: usize) -> [(usize, usize); 4] {
    [
        (g, 2 * t),
        (g, 2 * t + 1),
        (g + 8, 2 * t),
        (g + 8, 2 * t + 1),
    ]
}

fn mma(kernel: &str, a: &[u32; 128], b: &[u32; 64], c: &[f32; 128]) -> Vec<[f32; 4]> {
    let emu = emu_with("tensor_core.ptx");
    let c_bits: Vec<u32> = c.iter().map(|v| v.to_bits()).collect();
    let (pa, pb, pc) = (put_u32(&emu, a), put_u32(&emu, b), put_u32(&emu, &c_bits));
    let pd = emu.alloc(128 * 4).unwrap();
    let args = [Arg::U64(pa), Arg::U64(pb), Arg::U64(pc), Arg::U64(pd)];
    launch(&emu, kernel, [1, 1, 1], [32, 1, 1], 0, &args).unwrap();
    get_u32(&emu, pd, 128)
        .chunks(4)
        .map(|q| [0, 1, 2, 3].map(|i| f32::from_bits(q[i])))
        .collect()
}

#[test]
fn mma_fragments_match_hand_computed_cases() {
    // One nonzero in A and one in B, placed by the PTX ISA tables: lane 5
    // (g = 1, t = 1) register 1 holds A row g+8 = 9, columns 2t, 2t+1 = 2, 3;
    // lane 13 (g = 3, t = 1) register 0 holds B rows k = 2, 3 of column 3.
    // So D[9][3] = A[9][2]·B[2][3] + A[9][3]·B[3][3], which lane 5 holds in
    // register 3 (row g+8, column 2t+1).
    for (kernel, pack) in [("mma_bf16", bf16 as fn(f32) -> u32), ("mma_f16", f16)] {
        let mut a = [0u32; 128];
        let mut b = [0u32; 64];
        let mut c = [0f32; 128];
        a[5 * 4 + 1] = pack(1.0) | pack(-2.0) << 16; // A[9][2] = 1, A[9][3] = -2
        b[13 * 2] = pack(7.0) | pack(0.5) << 16; // B[2][3] = 7, B[3][3] = 0.5
        c[6 * 4 + 1] = 1.5; // lane 6 (g 1, t 2) reg 1: C[1][5]
        let d = mma(kernel, &a, &b, &c);
        for (lane, regs) in d.iter().enumerate() {
            for (r, &v) in regs.iter().enumerate() {
                let want = match (lane, r) {
                    (5, 3) => 1.0 * 7.0 + -2.0 * 0.5,
                    (6, 1) => 1.5,
                    _ => 0.0,
                };
                assert_eq!(v, want, "{kernel}: lane {lane} register {r}");
            }
        }
        // A's upper k half lives in registers 2 and 3, B's in register 1:
        // lane 0 reg 2 = A[0][8..9], lane 0 reg 1 of B = B[8..9][0].
        let (mut a, mut b) = ([0u32; 128], [0u32; 64]);
        a[2] = pack(3.0) | pack(0.0) << 16;
        b[1] = pack(-4.0) | pack(100.0) << 16;
        let d = mma(kernel, &a, &b, &[0.0; 128]);
        assert_eq!(d[0][0], -12.0, "{kernel}: D[0][0] from k = 8");
        let total: f32 = d.iter().flatten().map(|v| v.abs()).sum();
        assert_eq!(total, 12.0, "{kernel}: nothing else is touched");
    }
}

#[test]
fn mma_computes_the_full_product_with_f32_accumulation() {
    // Independent packer written from the ISA tables; values are distinct
    // and asymmetric so any misplaced element changes the product.
    let av = |i: usize, k: usize| ((i * 16 + k) % 23) as f32 * 0.25 - 2.0;
    let bv = |k: usize, j: usize| ((k * 8 + j) % 19) as f32 * 0.125 - 1.0 + k as f32 / 64.0;
    let cv = |i: usize, j: usize| (i * 8 + j) as f32 * 0.01;
    let (mut a, mut b, mut c) = ([0u32; 128], [0u32; 64], [0f32; 128]);
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        let pair = |i: usize, k: usize| bf16(av(i, k)) | bf16(av(i, k + 1)) << 16;
        a[lane * 4] = pair(g, 2 * t);
        a[lane * 4 + 1] = pair(g + 8, 2 * t);
        a[lane * 4 + 2] = pair(g, 2 * t + 8);
        a[lane * 4 + 3] = pair(g + 8, 2 * t + 8);
        b[lane * 2] = bf16(bv(2 * t, g)) | bf16(bv(2 * t + 1, g)) << 16;
        b[lane * 2 + 1] = bf16(bv(2 * t + 8, g)) | bf16(bv(2 * t + 9, g)) << 16;
        for (r, (i, j)) in c_positions(g, t).into_iter().enumerate() {
            c[lane * 4 + r] = cv(i, j);
        }
    }
    let d = mma("mma_bf16", &a, &b, &c);
    let round = |x: f32| half::bf16::from_f32(x).to_f32();
    for (lane, d_lane) in d.iter().enumerate() {
        let (g, t) = (lane / 4, lane % 4);
        for (r, (i, j)) in c_positions(g, t).into_iter().enumerate() {
            let want: f64 = (0..16)
                .map(|k| round(av(i, k)) as f64 * round(bv(k, j)) as f64)
                .sum::<f64>()
                + cv(i, j) as f64;
            let got = d_lane[r] as f64;
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "D[{i}][{j}] = {got}, want {want}"
            );
        }
    }
}

/// `ldmatrix_modes` on four matrices whose element (m, r, c) is
/// 1000·m + 10·r + c; lane l points at row `rows[l]`.
fn ldmatrix(mode: u32, rows: &[u32; 32]) -> Vec<[u32; 4]> {
    let emu = emu_with("tensor_core.ptx");
    let mut src = vec![0u16; 256];
    for (i, v) in src.iter_mut().enumerate() {
        let (m, r, c) = (i / 64, (i / 8) % 8, i % 8);
        *v = (1000 * m + 10 * r + c) as u16;
    }
    let psrc = emu.alloc(512).unwrap();
    Gpu::write(&emu, psrc, bytemuck::cast_slice(&src)).unwrap();
    let prows = put_u32(&emu, rows);
    let out = emu.alloc(32 * 16).unwrap();
    let args = [
        Arg::U64(psrc),
        Arg::U64(prows),
        Arg::U64(out),
        Arg::U32(mode),
    ];
    launch(&emu, "ldmatrix_modes", [1, 1, 1], [32, 1, 1], 0, &args).unwrap();
    get_u32(&emu, out, 128)
        .chunks(4)
        .map(|q| [q[0], q[1], q[2], q[3]])
        .collect()
}

#[test]
fn ldmatrix_bank_conflicts_are_counted() {
    let emu = emu_with("tensor_core.ptx");
    let psrc = emu.alloc(512).unwrap();
    let out = emu.alloc(32 * 16).unwrap();
    let run = |rows: &[u32; 32]| {
        let before = emu.ldmatrix_conflicts();
        let args = [
            Arg::U64(psrc),
            Arg::U64(put_u32(&emu, rows)),
            Arg::U64(out),
            Arg::U32(0),
        ];
        launch(&emu, "ldmatrix_modes", [1, 1, 1], [32, 1, 1], 0, &args).unwrap();
        emu.ldmatrix_conflicts() - before
    };
    // Consecutive 16-byte rows: 8 different bank groups per matrix.
    let rows: [u32; 32] = std::array::from_fn(|l| l as u32);
    assert_eq!(run(&rows), 0);
    // Rows 128 bytes apart all hit banks 0-3: 4 distinct rows (each given
    // twice, which broadcasts) cost 4 wavefronts, 3 extra, in each of the 4
    // matrices.
    let rows: [u32; 32] = std::array::from_fn(|l| (l / 8 * 8 + (l % 4) * 8) as u32 % 32);
    assert_eq!(run(&rows), 4 * 3);
}

#[test]
fn ldmatrix_distributes_rows_and_transposes() {
    let pair = |lo: u32, hi: u32| lo | hi << 16;
    let el = |m: u32, r: u32, c: u32| 1000 * m + 10 * r + c;
    // Lanes 8j..8j+7 point at the rows of matrix j, in reverse row order,
    // so the address each lane supplies matters.
    let mut rows = [0u32; 32];
    for (l, r) in rows.iter_mut().enumerate() {
        *r = (l / 8 * 8 + 7 - l % 8) as u32;
    }
    let x4 = ldmatrix(0, &rows);
    // Lane 6, register 1: matrix 1, row 6>>2 = 1 as supplied by lane 8+1,
    // which points at stored row 6; columns 2·(6&3) = 4, 5.
    assert_eq!(x4[6][1], pair(el(1, 6, 4), el(1, 6, 5)));
    assert_eq!(x4[0][0], pair(el(0, 7, 0), el(0, 7, 1)));
    assert_eq!(x4[31][3], pair(el(3, 0, 6), el(3, 0, 7)));
    // .trans: lane l register j holds column l>>2, rows 2(l&3), 2(l&3)+1
    // of matrix j as addressed (row i of matrix j is stored row 7-i).
    let tr = ldmatrix(1, &rows);
    assert_eq!(tr[6][1], pair(el(1, 7 - 4, 1), el(1, 7 - 5, 1)));
    assert_eq!(tr[31][3], pair(el(3, 7 - 6, 7), el(3, 7 - 7, 7)));
    // .x2 uses lanes 0..15 only, .x1 lanes 0..7.
    let x2 = ldmatrix(2, &rows);
    assert_eq!((x2[6][1], x2[6][2]), (x4[6][1], 0));
    let mut rows1 = rows;
    rows1[8..].fill(31); // ignored by .x1
    let x1 = ldmatrix(3, &rows1);
    assert_eq!((x1[31][0], x1[31][1]), (x4[31][0], 0));
}

#[test]
fn cvt_pack_puts_the_first_operand_in_the_upper_half() {
    let emu = emu_with("tensor_core.ptx");
    let out = emu.alloc(20).unwrap();
    let args = [Arg::U64(out), Arg::F32(1.0), Arg::F32(-2.5)];
    launch(&emu, "cvt_pack", [1, 1, 1], [1, 1, 1], 0, &args).unwrap();
    let v = get_u32(&emu, out, 5);
    assert_eq!(v[0], bf16(1.0) << 16 | bf16(-2.5), "bf16x2: {:#x}", v[0]);
    assert_eq!(v[1], f16(1.0) << 16 | f16(-2.5), "f16x2: {:#x}", v[1]);
    assert_eq!(
        (v[2], v[3]),
        (bf16(-2.5), bf16(1.0)),
        "mov unpack: first = low"
    );
    assert_eq!(v[4], bf16(-2.5) << 16 | bf16(1.0), "mov pack: first = low");
    // Round to nearest even, not truncation: 1 + 2^-8 + 2^-9 rounds up.
    let x = 1.0 + 2f32.powi(-8) + 2f32.powi(-9);
    let args = [Arg::U64(out), Arg::F32(x), Arg::F32(0.0)];
    launch(&emu, "cvt_pack", [1, 1, 1], [1, 1, 1], 0, &args).unwrap();
    assert_eq!(get_u32(&emu, out, 1)[0] >> 16, 0x3f81);
}

fn cp_async_src(emu: &Emu, threads: usize) -> (u64, Vec<u32>) {
    let words: Vec<u32> = (0..threads as u32 * 4).map(|i| 0x1000 + i).collect();
    (put_u32(emu, &words), words)
}

#[test]
fn cp_async_lands_at_the_wait_and_zero_fills() {
    let emu = emu_with("tensor_core.ptx");
    let (src, words) = cp_async_src(&emu, 64);
    let out = emu.alloc(64 * 16).unwrap();
    for valid in [16u32, 6, 0] {
        let args = [Arg::U64(src), Arg::U64(out), Arg::U32(valid)];
        launch(&emu, "cp_async_ok", [1, 1, 1], [64, 1, 1], 0, &args).unwrap();
        let got = get_u32(&emu, out, 64 * 4);
        for t in 0..64 {
            let from = (t + 1) % 64;
            let mut want = [0u8; 16];
            let bytes: &[u8] = bytemuck::cast_slice(&words[from * 4..from * 4 + 4]);
            want[..valid as usize].copy_from_slice(&bytes[..valid as usize]);
            let got_t: &[u8] = bytemuck::cast_slice(&got[t * 4..t * 4 + 4]);
            assert_eq!(got_t, want, "thread {t}, src-size {valid}");
        }
    }
}

#[test]
fn cp_async_misuse_is_caught() {
    let emu = emu_with("tensor_core.ptx");
    let (src, _) = cp_async_src(&emu, 32);
    let out = emu.alloc(32 * 16).unwrap();
    let args = [Arg::U64(src), Arg::U64(out)];
    let msg = fault(&emu, "cp_async_early_read", [32, 1, 1], &args);
    assert!(
        msg.contains("this thread's cp.async to it is in flight") && msg.contains("thread (0,0,0)"),
        "{msg}"
    );
    let msg = fault(&emu, "cp_async_no_bar", [32, 1, 1], &args);
    // Thread 0 runs first, so it finds its neighbour's bytes not yet there.
    assert!(
        msg.contains("missing bar.sync") && msg.contains("thread (0,0,0)"),
        "{msg}"
    );
    let line = line_of(
        "tensor_core.ptx",
        "ld.shared.v4.b32    {%r4, %r5, %r6, %r7}, [%rd6+1024]",
    );
    let msg = fault(&emu, "cp_async_wait_too_few", [32, 1, 1], &args);
    assert!(
        msg.contains("in flight") && msg.contains(&format!("ptx line {line}:")),
        "{msg}"
    );
}

#[test]
fn tensor_core_instructions_outside_the_subset_are_parse_errors() {
    let k = |body: &str| {
        format!(
            ".version 7.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{{\n    .reg .b32 %r<12>;\n    .reg .f32 %f<8>;\n    .reg .b64 %rd<2>;\n    {body};\n    ret;\n}}\n"
        )
    };
    for (body, want) in [
        (
            "mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%f0,%f1,%f2,%f3}, {%r0,%r1}, {%r2}, {%f4,%f5,%f6,%f7}",
            "only mma.sync",
        ),
        (
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f0,%f1,%f2,%f3}, {%r0,%r1,%r2,%r3}, {%r4,%r5,%r6}, {%f4,%f5,%f6,%f7}",
            "operand 3",
        ),
        (
            "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r0,%r1}, [%rd1]",
            "4 destination registers",
        ),
        (
            "cp.async.cg.shared.global [%rd0], [%rd1], 8",
            "exactly 16 bytes",
        ),
        ("cp.async.wait_group %r1", "immediate"),
    ] {
        let e = parse::parse(&k(body)).unwrap_err();
        assert!(e.msg.contains(want), "`{body}`: {e}");
        assert_eq!(e.line, 9, "{e}");
    }
}

#[test]
fn cvt_to_bf16_rounds_to_nearest_even_from_f32() {
    // Just above the midpoint of bf16 0x3f00 and 0x3f01, and the ties.
    let emu = Emu::new(dawin::ops::PTX_MODULES, EmuOptions::default()).unwrap();
    let x = [0x3f00_8006u32, 0x3f00_8000, 0x3f01_8000, 0xbf00_8001];
    let want = [0x3f01u16, 0x3f00, 0x3f02, 0xbf01];
    let px = put_u32(&emu, &x);
    let py = emu.alloc(8).unwrap();
    let args = [Arg::U64(px), Arg::U64(py), Arg::U32(4)];
    launch(&emu, "cast_bf16", [1, 1, 1], [32, 1, 1], 0, &args).unwrap();
    let mut got = [0u16; 4];
    Gpu::read(&emu, py, bytemuck::cast_slice_mut(&mut got)).unwrap();
    assert_eq!(got, want);
}

/// Extra wavefronts of one warp's shared load of `width` bytes per lane at
/// byte offsets `offs` (`shared_banks.ptx`).
fn shared_load_conflicts(width: u32, offs: &[u32; 32]) -> u64 {
    let emu = Emu::new(
        &[(
            "shared_banks.ptx",
            include_str!("../kernels/shared_banks.ptx"),
        )],
        EmuOptions {
            bank_conflicts: true,
            ..EmuOptions::default()
        },
    )
    .unwrap();
    let out = emu.alloc(32 * 4).unwrap();
    let args = [
        Arg::U64(put_u32(&emu, offs)),
        Arg::U64(out),
        Arg::U32(width),
    ];
    launch(&emu, "shared_banks", [1, 1, 1], [32, 1, 1], 0, &args).unwrap();
    // Each lane read the word at its offset.
    let got = get_u32(&emu, out, 32);
    for (l, &o) in offs.iter().enumerate() {
        assert_eq!(got[l], o / 4, "lane {l}");
    }
    emu.shared_conflicts()
}

/// Hand-counted cases of the bank model: 32 four-byte banks, one distinct
/// word per bank per wavefront, equal words broadcast, and 8- and 16-byte
/// requests served in phases of 16 and 8 lanes.
#[test]
fn shared_bank_conflicts_are_counted() {
    let lanes = |f: fn(u32) -> u32| -> [u32; 32] { std::array::from_fn(|l| f(l as u32)) };
    // 4-byte: consecutive words, one wavefront; stride 2 words, 2-way;
    // stride 32 words, 32-way; everyone at one word broadcasts.
    assert_eq!(shared_load_conflicts(4, &lanes(|l| 4 * l)), 0);
    assert_eq!(shared_load_conflicts(4, &lanes(|l| 8 * l)), 1);
    assert_eq!(shared_load_conflicts(4, &lanes(|l| 128 * l)), 31);
    assert_eq!(shared_load_conflicts(4, &lanes(|_| 64)), 0);
    // Two lanes per word of the first 16 words: broadcast, no conflict.
    assert_eq!(shared_load_conflicts(4, &lanes(|l| 4 * (l / 2))), 0);
    // 8-byte: consecutive, 2 phases of 128 bytes; lanes 256 bytes apart put
    // 16 distinct rows on banks 0-1 in each phase: 15 extra per phase.
    assert_eq!(shared_load_conflicts(8, &lanes(|l| 8 * l)), 0);
    assert_eq!(shared_load_conflicts(8, &lanes(|l| 256 * l)), 2 * 15);
    // 16-byte: consecutive, 4 phases; 128 bytes apart, 8 rows on banks 0-3
    // per phase: 7 extra in each of the 4 phases.
    assert_eq!(shared_load_conflicts(16, &lanes(|l| 16 * l)), 0);
    assert_eq!(
        shared_load_conflicts(16, &lanes(|l| 128 * (l % 32) % 4096)),
        4 * 7
    );
    // A row pad of 16 bytes (144-byte rows) spreads those 8 rows over the
    // banks again.
    assert_eq!(
        shared_load_conflicts(16, &lanes(|l| 144 * (l % 8) + 1152 * (l / 8))),
        0
    );
}
