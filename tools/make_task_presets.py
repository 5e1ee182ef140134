#!/usr/bin/env python3
"""Writes the zero-shot presets of the eight-task multi-task benchmark
(SUN397, Cars, RESISC45, EuroSAT, SVHN, GTSRB, MNIST, DTD) that `dawin
zeroshot --classes TASK --templates TASK` ships (data/classes/TASK.txt,
data/templates/TASK.txt):

    python3 tools/make_task_presets.py TASK_VECTORS_REPO FUSION_BENCH_REPO

Each REPO may be a work tree or a bare repository (read with `git show
HEAD:path`; the commit goes into each file's header).
Both from FusionBench's fusion_bench/tasks/clip_classification/
(github.com/tanganke/fusion_bench, MIT), which lists the class names as
literals in the label order those datasets use (task_vectors derives some
from the dataset files at run time). The templates must equal task_vectors'
src/datasets/templates.py (github.com/mlfoundations/task_vectors), the
ones task arithmetic, AdaMerging and the official DaWin multi-task code use
(checked; the script stops where they differ).
"""
import ast
import os
import subprocess
import sys

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
# dawin's preset name: (task_vectors template variable, FusionBench module)
TASKS = {
    "sun397": ("sun397_template", "sun397"),
    "cars": ("cars_template", "stanford_cars"),
    "resisc45": ("resisc45_template", "resisc45"),
    "eurosat": ("eurosat_template", "eurosat"),
    "svhn": ("svhn_template", "svhn"),
    "gtsrb": ("gtsrb_template", "gtsrb"),
    "mnist": ("mnist_template", "mnist"),
    "dtd": ("dtd_template", "dtd"),
}


def show(repo, path):
    run = lambda *a: subprocess.run(["git", "-C", repo, *a], check=True, capture_output=True, text=True).stdout
    return run("show", f"HEAD:{path}"), run("rev-parse", "HEAD").strip()


def assigned(source, name):
    """The value node assigned to `name` at a module's top level."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == name for t in node.targets):
            return node.value
    raise ValueError(f"no top-level {name}")


def template_text(lam):
    """`lambda c: f'...{c}...'` as the text with `{}` where c goes."""
    body = lam.body
    if isinstance(body, ast.Constant):
        return body.value
    parts = []
    for v in body.values:
        if isinstance(v, ast.Constant):
            parts.append(v.value)
        elif isinstance(v, ast.FormattedValue) and getattr(v.value, "id", "") == lam.args.args[0].arg:
            parts.append("{}")
        else:
            raise ValueError(f"unexpected template part {ast.dump(v)}")
    return "".join(parts)


def templates(source, name):
    return [template_text(l) for l in assigned(source, name).elts]


def write(path, header, lines):
    for l in lines:
        if "\n" in l or not l.strip():
            raise ValueError(f"{path}: an entry that is not one line: {l!r}")
    with open(path, "w") as f:
        f.write(header + "\n".join(lines) + "\n")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    tv_repo, fb_repo = sys.argv[1:]
    tv_src, tv_commit = show(tv_repo, "src/datasets/templates.py")
    for task, (var, module) in TASKS.items():
        fb_src, fb_commit = show(fb_repo, f"fusion_bench/tasks/clip_classification/{module}.py")
        names = ast.literal_eval(assigned(fb_src, "classnames"))
        temps = templates(tv_src, var)
        if temps != templates(fb_src, "templates"):
            raise ValueError(f"{task}: task_vectors' and FusionBench's templates differ")
        write(os.path.join(DATA, "classes", f"{task}.txt"),
              f"# {task}: the {len(names)} class names of the multi-task benchmark's {task} head, in label order\n"
              f"# From FusionBench (github.com/tanganke/fusion_bench, MIT), commit {fb_commit},\n"
              f"# fusion_bench/tasks/clip_classification/{module}.py classnames; written by tools/make_task_presets.py.\n",
              names)
        write(os.path.join(DATA, "templates", f"{task}.txt"),
              f"# {task}: {len(temps)} prompt template(s), {{}} = the class name\n"
              f"# From FusionBench (github.com/tanganke/fusion_bench, MIT), commit {fb_commit},\n"
              f"# fusion_bench/tasks/clip_classification/{module}.py templates, equal to task_vectors' {var}\n"
              f"# (github.com/mlfoundations/task_vectors, commit {tv_commit}); written by tools/make_task_presets.py.\n",
              temps)
        print(f"{task}: {len(names)} classes, {len(temps)} templates")


if __name__ == "__main__":
    main()
