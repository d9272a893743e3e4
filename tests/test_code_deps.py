"""dvc.yaml's code deps cover, by construction, every file of the project each stage runs."""
from pathlib import Path

import yaml

from reverie import code_deps
from tests.conftest import ROOT


def test_every_stage_depends_on_every_file_it_runs():
    stages = code_deps.stages()
    assert set(stages) >= {"generate", "validate", "base", "tune", "evaluate", "chance", "report"}
    problems = {name: code_deps.missing(stage) for name, stage in stages.items()}
    problems = {name: files for name, files in problems.items() if files}
    assert problems == {}, "stages run files dvc.yaml does not name as deps (`python -m reverie.code_deps --write`): " + \
        "; ".join(f"{name}: {', '.join(files)}" for name, files in problems.items())


def test_the_code_deps_are_exactly_the_generated_ones():
    assert code_deps.differences() == {}, "run `.venv/bin/python -m reverie.code_deps --write`"


def test_the_stages_the_issue_named_have_their_files():
    stages = code_deps.stages()
    assert "reverie/records.py" in code_deps.code_deps(stages["validate"]["cmd"])
    for name in ("base", "tune"):
        files = code_deps.closure(code_deps.stage_entry(stages[name]["cmd"]))
        assert ROOT / "reverie/evaluation/scoring.py" in files and ROOT / "reverie/settings.py" in files


def project(tmp_path: Path, files: dict[str, str], deps: list[str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {
        "cmd": "${python} -m stages.s --out o", "deps": deps + ["data/in"], "outs": ["o"]}}}))
    return tmp_path


CODE = {
    "stages/__init__.py": "",
    "stages/s.py": "from reverie.a import f\nimport subprocess\nsubprocess.run(['python', '-m', 'flows.side'])\n",
    "flows/__init__.py": "",
    "flows/side.py": "",
    "reverie/__init__.py": "",
    "reverie/a.py": "def f():\n    from .pkg import b\n    return b\n",
    "reverie/pkg/__init__.py": "",
    "reverie/pkg/b.py": "from ..c import x\n",
    "reverie/pkg/prompts/q.txt": "a prompt",
    "reverie/c.py": "x = 1\n",
    "reverie/unused.py": "",
}


def test_the_closure_follows_lazy_relative_and_run_by_name_imports(tmp_path):
    root = project(tmp_path, CODE, ["stages/s.py"])
    stage = code_deps.stages(root)["s"]
    assert code_deps.missing(stage, root) == sorted([
        "flows/__init__.py", "flows/side.py", "reverie/__init__.py", "reverie/a.py", "reverie/c.py",
        "reverie/pkg/__init__.py", "reverie/pkg/b.py", "reverie/pkg/prompts", "stages/__init__.py"])
    # a whole package the stage runs folds into its folder (its data too); a code root never does
    assert code_deps.code_deps(stage["cmd"], root) == [
        "flows/__init__.py", "flows/side.py", "reverie/__init__.py", "reverie/a.py", "reverie/c.py",
        "reverie/pkg", "stages/__init__.py", "stages/s.py"]


def test_write_makes_the_deps_complete_and_keeps_the_others(tmp_path):
    root = project(tmp_path, CODE, ["stages/s.py", "reverie/unused.py"])
    assert code_deps.write(root) == ["s"]
    stage = code_deps.stages(root)["s"]
    assert code_deps.missing(stage, root) == [] and "reverie/unused.py" not in stage["deps"]
    assert stage["deps"][-1] == "data/in" and stage["cmd"].startswith("${python}")
    assert code_deps.differences(root) == {} and code_deps.write(root) == []
