"""The layers the README's Layout section draws, read from the source (ast, nothing imported,
by `reverie.code_deps.imports`, the reader dvc.yaml's code deps come from).

Every module of reverie/, stages/ and flows/ has a numbered layer (LAYERS). A module imports
modules of its own layer, without a cycle, and of the layers below, never one above; no import,
at the top or inside a function, closes a cycle. The README's picture is `picture()`, verbatim.
Only imports count: a module another one runs by name (`python -m flows.generate_fanout`) is a
process of its own."""
import re
from pathlib import Path

from reverie.code_deps import imports as code_imports
from reverie.code_deps import module_name
from tests.conftest import ROOT

FOLDERS = ("reverie", "stages", "flows")
# bottom to top; short names: `student.train` is reverie.student.train, stages and flows keep theirs
LAYERS: list[tuple[str, list[str]]] = [
    ("core", ["vocab", "io", "environment", "statistics"]),
    ("settings", ["settings", "tracking"]),
    ("data", ["world", "records", "conversations", "data_import", "quality", "release", "annotations"]),
    ("benchmarks", ["evaluation.scoring", "evaluation.forms", "evaluation.suites", "evaluation.chance",
                    "evaluation.loaders", "evaluation.answer_files", "evaluation.per_image"]),
    ("student", ["student.samples", "student.model", "student.vision", "student.curriculum", "student.batching",
                 "student.train"]),
    ("evaluation", ["evaluation.decode", "evaluation.perception", "evaluation.run", "evaluation.rescore",
                    "evaluation.heldout_check"]),
    ("teachers", ["teachers.protocol", "teachers.judge", "teachers.parsing", "teachers.scene_graph",
                  "teachers.annotated"]),
    ("chat transport", ["teachers.cache", "teachers.chat_messages", "teachers.chat_limits", "teachers.chat_transport",
                        "teachers.batch"]),
    ("chat teachers", ["teachers.chat_steps", "teachers.openai_compat", "teachers.local_vlm", "teachers.preview"]),
    ("operations", ["workspace", "warm", "launch", "stage", "orchestration", "services", "code_deps", "compare"]),
    ("steps", ["generate", "fanout", "validate", "training_run", "base_step", "tuning", "report", "plan"]),
    ("stages", ["stages.generate", "stages.validate", "stages.base", "stages.tune", "stages.evaluate",
                "stages.chance", "stages.report"]),
    ("flows", ["flows.generate_fanout", "flows.pipeline", "flows.serve"]),
]


def full_name(short: str) -> str:
    return short if short.split(".")[0] in ("stages", "flows") else f"reverie.{short}"


def short_name(module: str) -> str:
    return module.removeprefix("reverie.")


def layer_of() -> dict[str, int]:
    return {full_name(m): number for number, (_, modules) in enumerate(LAYERS) for m in modules}


def picture() -> str:
    """LAYERS as the README draws them: top to bottom, one line per layer, the modules of one
    package in a layer in braces (`student.{model,train}`)."""
    width = max(len(name) for name, _ in LAYERS) + 1
    lines = [f"{'layer':<{3 + width}}modules: each imports its own layer (no cycle) and the layers below"]
    for number, (name, modules) in reversed(list(enumerate(LAYERS))):
        groups: dict[str, list[str]] = {}
        for m in modules:
            package, _, leaf = m.rpartition(".")
            groups.setdefault(package, []).append(leaf)
        words = list(groups.pop("", []))
        words += [f"{p}.{{{','.join(ls)}}}" if len(ls) > 1 else f"{p}.{ls[0]}" for p, ls in groups.items()]
        lines.append(f"{number:>2} {name:<{width}}{' '.join(words)}")
    return "\n".join(lines) + "\n"


def sources(packages: bool = True) -> dict[str, Path]:
    return {module_name(p): p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))
            if packages or p.name != "__init__.py"}


def imports(path: Path) -> set[str]:
    """What `path` imports (not what it runs by name)."""
    return code_imports(path, ROOT, by_name=False)


def graph(folder: str, packages: bool = True) -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted((ROOT / folder).rglob("*.py"))
            if packages or p.name != "__init__.py"}


def module_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports; a package (its `__init__`) is left out: it
    imports nothing (test_packages_import_nothing), so it can close no cycle."""
    modules = sources(packages=False)
    return {m: {t for t in imports(p) if t in modules and t != m} for m, p in modules.items()}


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


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules, the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target, path)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_the_import_reader_resolves_relative_imports(tmp_path):
    assert "reverie.world" in imports(ROOT / "reverie/evaluation/suites.py")
    assert "reverie.evaluation.scoring" in imports(ROOT / "reverie/evaluation/suites.py")
    assert "reverie.stage" in imports(ROOT / "stages/generate.py")
    # a module run by name is another process: dvc.yaml's deps count it, the layers do not
    assert "flows.generate_fanout" not in imports(ROOT / "stages/generate.py")
    assert "flows.generate_fanout" in code_imports(ROOT / "stages/generate.py")


def test_every_module_has_a_layer_and_every_layer_entry_is_a_module():
    modules = set(sources(packages=False))
    assigned = [full_name(m) for _, ms in LAYERS for m in ms]
    assert sorted(modules - set(assigned)) == [], "modules without a layer in tests/test_layers.py LAYERS"
    assert sorted(set(assigned) - modules) == [], "LAYERS names modules that do not exist"
    assert len(assigned) == len(set(assigned)), "a module in two layers"


def test_packages_import_nothing():
    packages = {m: p for m, p in sources().items() if p.name == "__init__.py"}
    assert set(packages) == {"reverie", "reverie.evaluation", "reverie.student", "reverie.teachers", "stages", "flows"}
    assert {m: sorted(imports(p)) for m, p in packages.items() if imports(p)} == {}


def test_no_module_imports_a_higher_layer():
    layer = layer_of()  # a module without a layer: test_every_module_has_a_layer_... names it
    upward = sorted(f"{short_name(m)} ({LAYERS[layer[m]][0]}) -> {short_name(t)} ({LAYERS[layer[t]][0]})"
                    for m, targets in module_graph().items() if m in layer
                    for t in targets if t in layer and layer[t] > layer[m])
    assert upward == []


def test_there_is_no_import_cycle():
    assert find_cycle(module_graph()) is None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_readme_draws_the_layers_this_test_checks():
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```\n(.*?)^```$", layout, re.S | re.M)
    assert picture() in blocks, "README.md's Layout section must hold picture() in a plain ``` block:\n" + picture()


def test_stages_and_flows_use_the_library_and_the_library_uses_neither():
    for folder in ("stages", "flows"):
        for module, targets in graph(folder, packages=False).items():
            assert any(within(t, "reverie") for t in targets), f"{module} does not use reverie"
    assert offenders("reverie", "reverie", ("stages", "flows")) == {}


def test_flows_drive_stages_through_dvc_only_and_stages_run_no_flow_in_process():
    assert offenders("flows", "flows", ("stages",)) == {}
    assert offenders("stages", "stages", ("flows",)) == {}


def test_evaluation_needs_world_and_student_not_generation_teachers_or_tuning():
    assert offenders("reverie", "reverie.evaluation",
                     ("reverie.generate", "reverie.teachers", "reverie.tuning", "reverie.base_step",
                      "reverie.training_run", "reverie.fanout")) == {}


def test_teachers_may_use_data_import_but_data_import_never_the_teachers():
    assert offenders("reverie", "reverie.data_import", ("reverie.teachers",)) == {}


def test_the_vocabulary_depends_on_nothing():
    assert offenders("reverie", "reverie.vocab", ("reverie",)) == {}


def test_the_data_layer_never_imports_the_student_package():
    assert offenders("reverie", "reverie.data_import", ("reverie.student",)) == {}
    assert offenders("reverie", "reverie.conversations", ("reverie.student",)) == {}
