#!/usr/bin/env python3
"""Writes the label-space files under data/label-spaces/ from a clone of
WiSE-FT (github.com/mlfoundations/wise-ft, MIT), the source the official
DaWin code takes them from:

    python3 tools/make_label_spaces.py PATH/TO/wise-ft [COMMIT]

PATH may be a work tree or a bare repository (files are read with
`git show COMMIT:path`). Output:
  imagenet-a.txt          the 200 ImageNet-1k indices ImageNet-A keeps
  imagenet-r.txt          the 200 ImageNet-1k indices ImageNet-R keeps
  objectnet.txt           113 lines, one per ObjectNet class in the order of
                          its sorted folder names (the label order), listing
                          the ImageNet-1k indices max-pooled into it
  objectnet-folders.txt   the 113 folder names, in the same order
"""
import ast
import json
import os
import subprocess
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "label-spaces")


def show(repo, commit, path):
    return subprocess.run(["git", "-C", repo, "show", f"{commit}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def class_sublist(source):
    """The CLASS_SUBLIST literal of a WiSE-FT dataset module."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CLASS_SUBLIST" for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError("no CLASS_SUBLIST")


def objectnet(repo, commit):
    meta = "src/datasets/objectnet_metadata/"
    folder_of = {v: k for k, v in json.loads(show(repo, commit, meta + "folder_to_objectnet_label.json")).items()}
    to_imagenet = json.loads(show(repo, commit, meta + "objectnet_to_imagenet_1k.json"))
    pytorch_of = {v: int(k) for k, v in json.loads(show(repo, commit, meta + "pytorch_to_imagenet_2012_id.json")).items()}
    names = show(repo, commit, meta + "imagenet_to_label_2012_v2").splitlines()
    index_of_name = {n.strip(): pytorch_of[i] for i, n in enumerate(names)}
    groups = {folder_of[o]: [index_of_name[n] for n in inet.split("; ")] for o, inet in to_imagenet.items()}
    folders = sorted(groups)
    return folders, [groups[f] for f in folders]


def header(what, repo_commit, source):
    return (f"# {what}\n# From WiSE-FT (github.com/mlfoundations/wise-ft, MIT), commit {repo_commit},\n"
            f"# {source}; written by tools/make_label_spaces.py.\n")


def main():
    repo = sys.argv[1]
    commit = sys.argv[2] if len(sys.argv) > 2 else "HEAD"
    full = subprocess.run(["git", "-C", repo, "rev-parse", commit], check=True, capture_output=True,
                          text=True).stdout.strip()
    os.makedirs(OUT, exist_ok=True)
    for name in ["imagenet_a", "imagenet_r"]:
        sub = class_sublist(show(repo, full, f"src/datasets/{name}.py"))
        assert len(sub) == 200 and sub == sorted(set(sub)), name
        label = name.replace("_", "-")
        with open(os.path.join(OUT, f"{label}.txt"), "w") as f:
            f.write(header(f"{label}: the 200 ImageNet-1k class indices it keeps (labels index this list)",
                           full, f"src/datasets/{name}.py CLASS_SUBLIST"))
            for i in range(0, 200, 20):
                f.write(", ".join(str(x) for x in sub[i:i + 20]) + "\n")
    folders, groups = objectnet(repo, full)
    assert len(folders) == 113
    with open(os.path.join(OUT, "objectnet.txt"), "w") as f:
        f.write(header("objectnet: 113 classes (sorted folder names), each the max over these ImageNet-1k indices",
                       full, "src/datasets/objectnet.py get_metadata() over objectnet_metadata/"))
        for folder, g in zip(folders, groups):
            f.write(" ".join(str(x) for x in g) + f"  # {folder}\n")
    with open(os.path.join(OUT, "objectnet-folders.txt"), "w") as f:
        f.write(header("objectnet: the 113 image folders evaluated (the rest of ObjectNet's 313 are skipped)",
                       full, "src/datasets/objectnet_metadata/folder_to_objectnet_label.json"))
        f.write("\n".join(folders) + "\n")


if __name__ == "__main__":
    main()
