"""The Python module against the `dawin` command line's own outputs on the
fixtures: forward, λ, the interpolated forward, evaluate, zeroshot and
errors; torch tensors in when torch is installed; the README's Python
example as written. Run by tools/python-tests.sh (CI) after `pip install .`.
"""

import json
import os
import pathlib
import re
import struct
import subprocess
import tempfile

import numpy as np
import pytest

import dawin

ROOT = pathlib.Path(__file__).resolve().parents[2]
FX = ROOT / "tests" / "fixtures"


def dawin_bin():
    """The CLI these tests compare with: $DAWIN_BIN, else a built one."""
    if os.environ.get("DAWIN_BIN"):
        return os.environ["DAWIN_BIN"]
    for profile in ["release", "debug"]:
        p = ROOT / "target" / profile / "dawin"
        if p.exists():
            return str(p)
    pytest.skip("no dawin binary: build it or set DAWIN_BIN")


def cli(*args):
    out = subprocess.run([dawin_bin(), *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def read_safetensors(path):
    """name -> ndarray, for the f32/i64 tensors of a safetensors file."""
    b = pathlib.Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8 : 8 + n])
    data = b[8 + n :]
    dtypes = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] not in dtypes:
            continue
        lo, hi = t["data_offsets"]
        out[name] = np.frombuffer(data[lo:hi], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
    return out


@pytest.fixture(scope="module")
def pair():
    return dawin.Model(FX / "dawin_pt.safetensors"), dawin.Model(FX / "dawin_ft.safetensors")


@pytest.fixture(scope="module")
def pixels():
    return read_safetensors(FX / "dawin_data.safetensors")["pixel_values"]


def test_forward_equals_the_cli(tmp_path):
    model, io = FX / "hf_quickgelu.safetensors", FX / "hf_quickgelu.io.safetensors"
    out = tmp_path / "o.safetensors"
    cli("forward", "--model", model, "--input", io, "--out", out)
    want = read_safetensors(out)
    got = dawin.Model(model).forward(read_safetensors(io)["pixel_values"])
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    # And the HF transformers reference the fixture holds, within 1e-4 of its scale.
    ref = read_safetensors(io)["image_embeds"]
    assert np.abs(got["image_embeds"] - ref).max() <= 1e-4 * np.abs(ref).max()


def test_config_says_where_settings_came_from(pair):
    c = pair[0].config
    assert (c["width"], c["layers"], c["heads"], c["classes"]) == (48, 2, 3, 6)
    assert c["settings"]["heads"] == {"value": 3, "source": "metadata"}


def test_lambdas_are_the_papers_formula(pair, pixels):
    z_pt, z_ft = pair[0].forward(pixels)["logits"], pair[1].forward(pixels)["logits"]

    def entropy(z):
        z = z.astype(np.float64)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return -(p * np.log(np.clip(p, 1e-300, None))).sum(1)

    h_pt, h_ft = entropy(z_pt), entropy(z_ft)
    paper = np.exp(-h_ft) / (np.exp(-h_pt) + np.exp(-h_ft))
    lam = dawin.lambdas(z_pt, z_ft)
    np.testing.assert_allclose(lam, paper, atol=1e-6)
    expected = read_safetensors(FX / "dawin_expected.safetensors")
    np.testing.assert_allclose(lam, expected["lambda"], atol=1e-6)


def test_t3_is_its_published_formula(pair, pixels):
    z_pt, z_ft = pair[0].forward(pixels)["logits"], pair[1].forward(pixels)["logits"]

    def probs(z):
        z = z.astype(np.float64)
        p = np.exp(z - z.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)

    p, q = probs(z_pt), probs(z_ft)
    m = (p + q) / 2
    kl = lambda a, b: (a * np.log(a / b)).sum(1)
    js = (kl(p, m) + kl(q, m)) / 2
    weight_pt = 0.1 + 0.7 / (1 + np.exp(-3.0 * js))
    lam = dawin.lambdas(z_pt, z_ft, rule="t3", t3_gamma=3.0, t3_range=(0.1, 0.8))
    np.testing.assert_allclose(lam, 1 - weight_pt, atol=1e-6)
    with pytest.raises(dawin.errors.InvalidInputError):
        dawin.lambdas(z_pt, z_ft, rule="t3", t3_range=(0.8, 0.1))


def test_interpolated_forward_is_each_samples_merged_model(pair, pixels):
    expected = read_safetensors(FX / "dawin_expected.safetensors")
    z = dawin.interpolated_forward(pair[0], pair[1], pixels, expected["lambda"], batch_size=5)
    ref = expected["dawin_logits"]
    assert np.abs(z - ref).max() <= 1e-4 * np.abs(ref).max()


def test_evaluate_equals_dawin_eval(tmp_path):
    args = [FX / "dawin_pt.safetensors", FX / "dawin_ft.safetensors", FX / "dawin_data.safetensors"]
    cli("eval", "--pretrained", args[0], "--finetuned", args[1], "--data", args[2],
        "--out-dir", tmp_path / "cli", "--interp", "bmm:2", "-q")
    want = json.loads((tmp_path / "cli" / "summary.json").read_text())
    got = dawin.evaluate(*args, interp="bmm:2")
    assert got["methods"] == want["methods"]
    assert got["lambda"] == want["lambda"]
    csv = (tmp_path / "cli" / "samples.csv").read_text().splitlines()[1:]
    np.testing.assert_array_equal(got["lambdas"], np.array([float(r.split(",")[4]) for r in csv], np.float32))
    assert list(got["predictions"]["dawin"][:3]) == [int(r.split(",")[6 + list(want["methods"]).index("dawin")]) for r in csv[:3]]
    # No out_dir: nothing written; with one, the CLI's files.
    got = dawin.evaluate(*args, methods=["zeroshot", "dawin"], out_dir=tmp_path / "py", expertise="entropy-offset")
    assert (tmp_path / "py" / "summary.json").exists() and got["expertise"] == "entropy-offset"


def test_progress_warnings_and_ctrl_c(pair):
    data = FX / "dawin_data.safetensors"
    seen = []
    dawin.evaluate(*pair, data, methods="dawin", batch_size=4, progress=lambda *a: seen.append(a))
    assert seen and seen[-1][1] == seen[-1][2] == 16, seen
    with pytest.warns(dawin.DawinWarning, match="same weights"):
        dawin.evaluate(pair[0], pair[0], data, methods="dawin", progress=False)

    def ctrl_c(what, done, total):
        import signal

        signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        dawin.evaluate(*pair, data, methods="dawin", batch_size=2, progress=ctrl_c)
    # The stop was for that run only.
    assert dawin.evaluate(*pair, data, methods="dawin", progress=False)["methods"]["dawin"]["count"] == 16


def test_errors_are_python_exceptions(pair):
    with pytest.raises(FileNotFoundError):
        dawin.Model("/no/such/model.safetensors")
    with pytest.raises(ValueError, match="must both be"):
        dawin.lambdas(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(dawin.DawinError, match="no flag `nonsense`"):
        dawin.evaluate(*pair, FX / "dawin_data.safetensors", nonsense=1)
    with pytest.raises(ValueError, match="reads"):
        pair[0].forward(np.zeros((1, 3, 8, 8), np.float32))


def test_zeroshot_and_tokenize():
    ids = dawin.tokenize(["a photo of a cat."])
    assert ids.shape == (1, 77) and ids[0, 0] == 49406
    m = dawin.zeroshot(FX / "text" / "hf_clip", ["cat", "dog", "bird"], ["a photo of a {}."])
    assert m.config["classes"] == 3


def test_torch_tensors_go_in(pair, pixels):
    torch = pytest.importorskip("torch")
    got = pair[0].forward(torch.from_numpy(pixels.copy()))["logits"]
    np.testing.assert_array_equal(got, pair[0].forward(pixels)["logits"])


def test_the_readme_example_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Python\n.*?```python\n(.*?)```", readme, re.S)
    assert block, "a ```python block under ## Python"
    code = block.group(1)
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)
        exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
