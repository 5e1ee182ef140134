#!/usr/bin/env python3
"""How much PTX a kernel variant shares with the kernel it derives from.

For each pair (base, variant) in ptx/, over non-blank, non-comment lines:
the lines the two have in common in order (difflib's matching blocks), and
those in identical runs of at least 10 lines, the part a shared template
could hold without renaming registers. docs/design.md ("Kernel variants")
quotes its output.

    python3 tools/ptx-shared-lines.py
"""
import difflib
import pathlib

PAIRS = [
    ("gemm", "gemm_dual"),
    ("gemm", "gemm_multi"),
    ("gemm_bf16", "gemm_dual_bf16"),
    ("layernorm", "layernorm_multi"),
    ("embed_add", "embed_add_multi"),
    ("lerp", "lerp_bf16"),
]
PTX = pathlib.Path(__file__).resolve().parent.parent / "ptx"


def code(name):
    lines = (l.strip() for l in (PTX / f"{name}.ptx").read_text().splitlines())
    return [l for l in lines if l and not l.startswith("//")]


print(f"{'variant':<16} {'of':<10} {'lines':>5} {'shared':>7} {'in runs>=10':>12} {'longest':>8}")
for base, variant in PAIRS:
    a, b = code(base), code(variant)
    blocks = difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks()
    shared = sum(bl.size for bl in blocks)
    runs = [bl.size for bl in blocks if bl.size >= 10]
    print(f"{variant:<16} {base:<10} {len(b):>5} {shared:>4} {100 * shared // len(b):>2}% "
          f"{sum(runs):>8} {100 * sum(runs) // len(b):>2}% {max(runs, default=0):>8}")
