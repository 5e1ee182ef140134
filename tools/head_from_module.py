#!/usr/bin/env python3
"""Cuts a submodule out of a torch.save'd module, without torch: the
submodule becomes the pickle's root, under a class name you choose, and only
the storages it references are copied. Made for the fixture
tests/fixtures/checkpoints/head_task.pt, the layout of the official
multi-task code's `torch.save(classification_head, 'head_<task>.pt')`:

    python3 tools/head_from_module.py tests/fixtures/checkpoints/wiseft_module.pt \\
        classification_head src.modeling.ClassificationHead tests/fixtures/checkpoints/head_task.pt

Every class the pickle names is replaced by an inert stand-in that keeps its
module and name, so nothing from the file runs and the output names the same
globals (torch's tensor rebuilds, OrderedDict) as the input.
"""
import copyreg
import io
import pickle
import sys
import types
import zipfile

STAND_INS = {}


def stand_in(module, name):
    """A class registered as module.name that records how it was made."""
    if (module, name) in STAND_INS:
        return STAND_INS[(module, name)]
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))

    def new(cls, *args):
        o = object.__new__(cls)
        if args:
            o.args = args
        return o

    def reduce_ex(self, _proto):
        # Made by a call (a tensor rebuild): pickled as that call again.
        # Made by NEWOBJ + BUILD (a module): pickled by its __dict__.
        if list(self.__dict__) == ["args"]:
            return (type(self), self.args)
        return (copyreg.__newobj__, (type(self),), self.__dict__)

    cls = type(name, (), {"__new__": new, "__reduce_ex__": reduce_ex})
    cls.__module__, cls.__qualname__ = module, name
    setattr(sys.modules[module], name, cls)
    STAND_INS[(module, name)] = cls
    return cls


class Storage:
    """A persistent id (a tensor's storage record), kept as it was."""

    def __init__(self, pid):
        self.pid = pid


class Reader(pickle.Unpickler):
    def find_class(self, module, name):
        if module in ("collections", "builtins", "__builtin__"):
            return super().find_class(module, name)
        return stand_in(module, name)

    def persistent_load(self, pid):
        return Storage(pid)


class Writer(pickle.Pickler):
    def __init__(self, f):
        super().__init__(f, protocol=2)
        self.keys = set()

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            self.keys.add(obj.pid[2])
            return obj.pid
        return None


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    src, attr, class_name, dst = sys.argv[1:]
    z = zipfile.ZipFile(src)
    prefix = z.namelist()[0].split("/")[0]
    root = Reader(io.BytesIO(z.read(f"{prefix}/data.pkl"))).load()
    part = root
    for step in attr.split("."):
        part = part.__dict__["_modules"][step]
    module, _, name = class_name.rpartition(".")
    part.__class__ = stand_in(module, name)
    buf = io.BytesIO()
    w = Writer(buf)
    w.dump(part)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        out.writestr("head/data.pkl", buf.getvalue())
        for meta in (".format_version", ".storage_alignment", "byteorder", "version"):
            if f"{prefix}/{meta}" in z.namelist():
                out.writestr(f"head/{meta}", z.read(f"{prefix}/{meta}"))
        for key in sorted(w.keys, key=int):
            out.writestr(f"head/data/{key}", z.read(f"{prefix}/data/{key}"))
    print(f"{dst}: {class_name} from {src}:{attr}, storages {sorted(w.keys, key=int)}")


if __name__ == "__main__":
    main()
