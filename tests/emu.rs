//! The emulator's own checks: deliberately broken kernels must each be
//! caught with a message that points at the fault, and the collective
//! operations must follow the PTX rules.

mod common;

use dawin::emu::{Arg, Emu, EmuOptions, parse};
use dawin::gpu::Gpu;

fn emu_with(file: &str) -> Emu {
    let path = format!("{}/tests/kernels/{file}", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path).unwrap();
    Emu::new(&[(file, src.as_str())], EmuOptions::default()).unwrap()
}

fn fault(emu: &Emu, kernel: &str, block: [u32; 3], args: &[Arg]) -> String {
    let e = emu
        .launch(kernel, [1, 1, 1], block, 0, args)
        .expect_err("the broken kernel must be caught");
    e.to_string()
}

/// Line number of the first line of `file` containing `needle`.
fn line_of(file: &str, needle: &str) -> usize {
    let src = std::fs::read_to_string(format!(
        "{}/tests/kernels/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
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
    emu.launch(
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
    for (file, src) in dawin::ptx::MODULES {
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
    use dawin::exec::{Executor, ptx::PtxExec};
    use dawin::ops::gemm::GemmShape;
    let (m, n, k) = (130, 70, 37);
    let a = common::data(1, m * k, 1.0);
    let b = common::data(2, n * k, 1.0);
    let run = |seed: Option<u64>| {
        let ex = PtxExec::new(
            Emu::new(
                dawin::ptx::MODULES,
                EmuOptions {
                    shuffle_blocks: seed,
                    ..EmuOptions::default()
                },
            )
            .unwrap(),
        );
        let c = ex.alloc(m * n).unwrap();
        ex.gemm(
            ex.upload(&a).unwrap(),
            ex.upload(&b).unwrap(),
            None,
            c,
            GemmShape { m, n, k },
        )
        .unwrap();
        ex.download(c).unwrap()
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
    emu.launch(
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
    let e = emu
        .launch(
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
