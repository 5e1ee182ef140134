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
and the zero-shot prompt data `dawin zeroshot` ships (data/classes/,
data/templates/):
  classes/imagenet.txt          the 1000 ImageNet class names of CLIP/WiSE-FT
  templates/openai-imagenet.txt OpenAI's 80 ImageNet templates, `{}` = class
  templates/simple.txt          "a photo of a {}."
"""
import ast
import json
import os
import subprocess
import sys

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
OUT = os.path.join(DATA, "label-spaces")


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
    prompts(repo, full)


def literal(source, name):
    """The list literal assigned to `name`, lambdas rendered with `{}`."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == name for t in node.targets):
            items = node.value.elts
            if all(isinstance(e, ast.Lambda) for e in items):
                return [eval(compile(ast.Expression(e), name, "eval"))("{}") for e in items]
            return ast.literal_eval(node.value)
    raise ValueError(f"no {name}")


def prompts(repo, full):
    classes = literal(show(repo, full, "src/datasets/imagenet_classnames.py"), "openai_classnames")
    assert len(classes) == 1000 and all("\n" not in c for c in classes)
    os.makedirs(os.path.join(DATA, "classes"), exist_ok=True)
    os.makedirs(os.path.join(DATA, "templates"), exist_ok=True)
    with open(os.path.join(DATA, "classes", "imagenet.txt"), "w") as f:
        f.write(header("imagenet: the 1000 class names of CLIP's zero-shot ImageNet classifier, in label order",
                       full, "src/datasets/imagenet_classnames.py openai_classnames"))
        f.write("\n".join(classes) + "\n")
    for name, src, var in [("openai-imagenet", "openai_imagenet_template", "openai_imagenet_template"),
                           ("simple", "simple_template", "simple_template")]:
        t = literal(show(repo, full, f"src/templates/{src}.py"), var)
        assert all(x.count("{}") == 1 for x in t), name
        with open(os.path.join(DATA, "templates", f"{name}.txt"), "w") as f:
            f.write(header(f"{name}: {len(t)} prompt template(s), {{}} = the class name",
                           full, f"src/templates/{src}.py {var}"))
            f.write("\n".join(t) + "\n")


if __name__ == "__main__":
    main()
