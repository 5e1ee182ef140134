//! The project's PTX kernels, embedded once. `ptx/<op>.ptx` is launched by
//! `ops::<op>::launch`, on `emu` and on `cuda` alike.

/// (file name, source) of every kernel module.
pub const MODULES: &[(&str, &str)] = &[
    ("add.ptx", include_str!("../ptx/add.ptx")),
    (
        "add_scaled_diff.ptx",
        include_str!("../ptx/add_scaled_diff.ptx"),
    ),
    ("attention.ptx", include_str!("../ptx/attention.ptx")),
    (
        "attention_bf16.ptx",
        include_str!("../ptx/attention_bf16.ptx"),
    ),
    ("cast_bf16.ptx", include_str!("../ptx/cast_bf16.ptx")),
    ("embed_add.ptx", include_str!("../ptx/embed_add.ptx")),
    ("gelu.ptx", include_str!("../ptx/gelu.ptx")),
    ("gemm.ptx", include_str!("../ptx/gemm.ptx")),
    ("gemm_bf16.ptx", include_str!("../ptx/gemm_bf16.ptx")),
    ("gemm_dual.ptx", include_str!("../ptx/gemm_dual.ptx")),
    (
        "gemm_dual_bf16.ptx",
        include_str!("../ptx/gemm_dual_bf16.ptx"),
    ),
    ("l2_normalize.ptx", include_str!("../ptx/l2_normalize.ptx")),
    ("layernorm.ptx", include_str!("../ptx/layernorm.ptx")),
    ("lerp.ptx", include_str!("../ptx/lerp.ptx")),
    ("lerp_bf16.ptx", include_str!("../ptx/lerp_bf16.ptx")),
    ("patch_embed.ptx", include_str!("../ptx/patch_embed.ptx")),
    ("quick_gelu.ptx", include_str!("../ptx/quick_gelu.ptx")),
    (
        "softmax_entropy.ptx",
        include_str!("../ptx/softmax_entropy.ptx"),
    ),
];
