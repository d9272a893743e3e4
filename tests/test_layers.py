"""The layers the README's Layout section draws, read from the source (ast, nothing imported):

    flows/  --(dvc repro only)-->  stages/  -->  reverie/
    inside reverie: evaluation -> student -> world; teachers -> data_import, never back;
    vocab, io, settings, tracking under all of them."""
import ast
from pathlib import Path

from tests.conftest import ROOT


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function, relative ones resolved."""
    package = module_name(path).split(".")
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
    return out


def graph(folder: str, packages: bool = True) -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted((ROOT / folder).rglob("*.py"))
            if packages or p.name != "__init__.py"}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def offenders(folder: str, importer: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for module, targets in graph(folder).items():
        if within(module, importer):
            bad = sorted(t for t in targets if any(within(t, f) for f in forbidden))
            if bad:
                found[module] = bad
    return found


def test_the_import_reader_resolves_relative_imports(tmp_path):
    assert "reverie.world" in imports(ROOT / "reverie/evaluation/suites.py")
    assert "reverie.evaluation.scoring" in imports(ROOT / "reverie/evaluation/suites.py")
    assert "reverie.stage" in imports(ROOT / "stages/generate.py")


def test_stages_and_flows_use_the_library_and_the_library_uses_neither():
    for folder in ("stages", "flows"):
        for module, targets in graph(folder, packages=False).items():
            assert any(within(t, "reverie") for t in targets), f"{module} does not use reverie"
    assert offenders("reverie", "reverie", ("stages", "flows")) == {}


def test_flows_drive_stages_through_dvc_only_and_stages_run_no_flow():
    assert offenders("flows", "flows", ("stages",)) == {}
    assert offenders("stages", "stages", ("flows",)) == {}


def test_evaluation_needs_world_and_student_not_generation_teachers_or_tuning():
    assert offenders("reverie", "reverie.evaluation",
                     ("reverie.generate", "reverie.teachers", "reverie.tune", "reverie.fanout")) == {}


def test_teachers_may_use_data_import_but_data_import_never_the_teachers():
    assert offenders("reverie", "reverie.data_import", ("reverie.teachers",)) == {}


def test_the_vocabulary_depends_on_nothing():
    assert offenders("reverie", "reverie.vocab", ("reverie",)) == {}


def test_the_data_layer_never_imports_the_student_package():
    assert offenders("reverie", "reverie.data_import", ("reverie.student",)) == {}
    assert offenders("reverie", "reverie.conversations", ("reverie.student",)) == {}
