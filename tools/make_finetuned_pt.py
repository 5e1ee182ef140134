#!/usr/bin/env python3
"""A stand-in "fine-tuned" model as a PyTorch .pt state dict, from a CLIP
checkpoint folder, with no torch needed: the folder's image tower
(`vision_model.*`, `visual_projection.weight`) moved by a small seeded
perturbation, plus a `classification_head` of C classes, written in the
zip format torch.save uses (stored entries, 64-byte aligned, an
OrderedDict of f32 tensors rebuilt by torch._utils._rebuild_tensor_v2).
Like a real fine-tuned .pt, it carries no metadata: heads and act must come
from elsewhere. The README quickstart's test runs on it.

Usage: tools/make_finetuned_pt.py CLIP_FOLDER CLASSES OUT.pt
"""
import collections
import json
import pickle
import struct
import sys
import types
import zipfile


def read_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    data = b[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        lo, hi = t["data_offsets"]
        raw = data[lo:hi]
        fmt = {"F32": "f", "F16": "e"}[t["dtype"]]
        count = len(raw) // struct.calcsize(fmt)
        out[name] = (t["shape"], list(struct.unpack(f"<{count}{fmt}", raw)))
    return out


class Lcg:
    """A seeded uniform source in [-1, 1), the same on every machine."""

    def __init__(self, seed):
        self.s = seed

    def next(self):
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) % 2**64
        return (self.s >> 11) / 2**52 - 1.0


# The globals torch.save's pickle names, as stand-ins pickle can reference.
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, torch_utils


class FloatStorage:
    pass


def _rebuild_tensor_v2(*args):
    raise RuntimeError("a stand-in: only pickled, never called")


FloatStorage.__module__ = "torch"
_rebuild_tensor_v2.__module__ = "torch._utils"
torch.FloatStorage = FloatStorage
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class StorageRef:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class TensorRef:
    def __init__(self, key, shape):
        self.key, self.shape = key, tuple(shape)

    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        numel = acc
        return (_rebuild_tensor_v2,
                (StorageRef(self.key, numel), 0, self.shape, tuple(stride), False,
                 collections.OrderedDict()))


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


def write_torch_zip(path, tensors):
    """tensors: name -> (shape, values); written as torch.save writes them."""
    state = collections.OrderedDict()
    blobs = []
    for k, (name, (shape, values)) in enumerate(tensors.items()):
        state[name] = TensorRef(str(k), shape)
        blobs.append((str(k), struct.pack(f"<{len(values)}f", *values)))
    pkl = __import__("io").BytesIO()
    TorchPickler(pkl, protocol=2).dump(state)
    entries = [("archive/data.pkl", pkl.getvalue()), ("archive/byteorder", b"little")]
    entries += [(f"archive/data/{key}", blob) for key, blob in blobs]
    entries += [("archive/version", b"3\n")]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, blob in entries:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            # Pad the local header's extra field so the data is 64-byte aligned.
            offset = z.fp.tell() + 30 + len(name.encode())
            pad = (-(offset + 4)) % 64
            info.extra = struct.pack("<HH", 0xCAFE, pad) + b"\0" * pad
            z.writestr(info, blob)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    folder, classes, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    src = read_safetensors(f"{folder}/model.safetensors")
    rng = Lcg(2026)
    tensors = collections.OrderedDict()
    for name in sorted(src):
        if not (name.startswith("vision_model.") or name == "visual_projection.weight"):
            continue
        shape, values = src[name]
        tensors[name] = (shape, [v + 0.02 * rng.next() for v in values])
    embed = src["visual_projection.weight"][0][0]
    tensors["classification_head.weight"] = (
        [classes, embed], [rng.next() for _ in range(classes * embed)])
    tensors["classification_head.bias"] = ([classes], [0.0] * classes)
    write_torch_zip(out, tensors)


if __name__ == "__main__":
    main()
