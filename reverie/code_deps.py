"""Which of the project's files each DVC stage runs, read from the source (ast, nothing imported),
and dvc.yaml's code `deps:` generated from it, so that they are complete by construction.

A stage runs its entry module (`-m stages.X` in its command) and everything that module imports,
at the top or inside a function, transitively, with the `__init__.py` of every package on the
way; a module named as a string (`[sys.executable, "-m", "flows.generate_fanout"]`) runs too.
Data that ships inside a package (`reverie/teachers/prompts/`) goes with the package.

`python -m reverie.code_deps` says which stages' deps differ from their closure; `--write`
rewrites them in dvc.yaml (comments and every non-code dep kept). tests/test_code_deps.py fails,
naming the stage and the file, when a dep is missing."""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_ROOTS = ("reverie", "stages", "flows")
ENTRY = re.compile(r"-m\s+((?:stages|flows)\.[\w.]+)")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_path(name: str, root: Path = ROOT) -> Path | None:
    """The file of an in-repo module or package; None for anything else (a library)."""
    if name.split(".")[0] not in CODE_ROOTS:
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imports(path: Path, root: Path = ROOT, by_name: bool = True) -> set[str]:
    """Every module `path` imports, at the top or inside a function, relative ones resolved, and
    (`by_name`) every in-repo module it names as a string (a module it runs with `-m`)."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import x` names a module
        elif by_name and isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                re.fullmatch(r"(?:stages|flows|reverie)(?:\.\w+)+", node.value):
            out.add(node.value)
    return out


def with_parents(name: str) -> list[str]:
    """`a.b.c` runs `a/__init__`, `a.b/__init__` and `a.b.c`."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(entry: str, root: Path = ROOT) -> set[Path]:
    """The in-repo files that running module `entry` may execute."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        for name in with_parents(todo.pop()):
            path = module_path(name, root)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(imports(path, root))
    return seen


def package_data(files: set[Path]) -> set[Path]:
    """Folders without Python files inside a package the stage runs (prompts, templates)."""
    out = set()
    for package in {f.parent for f in files if f.name == "__init__.py"}:
        for sub in package.iterdir():
            if sub.is_dir() and sub.name != "__pycache__" and not any(sub.rglob("*.py")):
                out.add(sub)
    return out


def folded(paths: set[Path], root: Path = ROOT) -> list[str]:
    """Paths relative to `root`, a folder standing for all of its files when every Python file
    under it (and its data folders) is in `paths`: `reverie/student`, not its seven files."""
    def complete(folder: Path) -> bool:
        pys = [p for p in folder.rglob("*.py") if "__pycache__" not in p.parts]
        return bool(pys) and all(p in paths for p in pys)

    out: set[Path] = set()
    for path in paths:
        best = path
        for parent in path.parents:
            if parent == root or root not in parent.parents:
                break
            if parent.name in CODE_ROOTS and parent.parent == root:
                break  # never a whole code root: reverie/ holds every stage's code
            if complete(parent):
                best = parent
        out.add(best)
    return sorted(str(p.relative_to(root)) for p in out)


def stage_entry(cmd: str) -> str | None:
    found = ENTRY.search(cmd)
    return found.group(1) if found else None


def code_deps(cmd: str, root: Path = ROOT) -> list[str]:
    """The code deps a stage with this command needs, folded."""
    entry = stage_entry(cmd)
    if entry is None:
        return []
    files = closure(entry, root)
    return folded(files | package_data(files), root)


def is_code(dep: str) -> bool:
    return dep.split("/")[0] in CODE_ROOTS


def covered(dep_paths: list[str], file: Path, root: Path = ROOT) -> bool:
    return any(file == root / d or (root / d) in file.parents for d in dep_paths)


def missing(stage: dict, root: Path = ROOT) -> list[str]:
    """The files a stage runs that its deps do not cover."""
    entry = stage_entry(stage.get("cmd", ""))
    if entry is None:
        return []
    deps = [str(d) for d in stage.get("deps", [])]
    files = closure(entry, root)
    files |= package_data(files)
    return sorted(str(f.relative_to(root)) for f in files if not covered(deps, f, root))


def stages(root: Path = ROOT) -> dict:
    import yaml

    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def differences(root: Path = ROOT) -> dict[str, tuple[list[str], list[str]]]:
    """Per stage whose code deps are not exactly the generated ones: (declared, generated)."""
    out = {}
    for name, stage in stages(root).items():
        declared = [str(d) for d in stage.get("deps", []) if is_code(str(d))]
        generated = code_deps(stage.get("cmd", ""), root)
        if declared != generated:
            out[name] = (declared, generated)
    return out


def write(root: Path = ROOT) -> list[str]:
    """Rewrites each stage's code deps in dvc.yaml as generated (first, sorted); keeps the other
    deps, their order and the comments. Returns the stages changed."""
    from ruamel.yaml import YAML

    ryaml = YAML()
    ryaml.preserve_quotes = True
    ryaml.width = 4096
    ryaml.indent(mapping=2, sequence=4, offset=2)
    path = root / "dvc.yaml"
    data = ryaml.load(path.read_text())
    changed = []
    for name, stage in data["stages"].items():
        deps = stage.get("deps")
        generated = code_deps(stage.get("cmd", ""), root)
        if deps is None or [str(d) for d in deps if is_code(str(d))] == generated:
            continue
        first_other = next((i for i, d in enumerate(deps) if not is_code(str(d))), len(deps))
        comments = deps.ca.items.get(first_other - 1) if first_other else None
        for i in reversed(range(len(deps))):
            if is_code(str(deps[i])):
                del deps[i]
        for i, dep in enumerate(generated):
            deps.insert(i, dep)
        if comments is not None:  # a comment that followed the last code dep
            deps.ca.items[len(generated) - 1] = comments
        changed.append(name)
    if changed:
        from .io import atomic_path

        with atomic_path(path) as tmp, tmp.open("w") as f:
            ryaml.dump(data, f)
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps as generated")
    args = p.parse_args(argv)
    if args.write:
        changed = write()
        print("rewrote the code deps of: " + ", ".join(changed) if changed else "dvc.yaml's code deps are as generated")
        return 0
    diff = differences()
    for name, (declared, generated) in diff.items():
        print(f"{name}:\n  add:    {sorted(set(generated) - set(declared))}\n  remove: {sorted(set(declared) - set(generated))}")
    if diff:
        print("run `.venv/bin/python -m reverie.code_deps --write`", file=sys.stderr)
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
