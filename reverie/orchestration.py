"""What the Prefect flow needs and that is not Prefect: the stage order from dvc.yaml, the
`dvc repro` command line, and params overrides written the way `dvc exp run -S` writes them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from .settings import load_params

STAGE_ORDER = ("generate", "validate", "base", "tune", "evaluate", "chance", "report")


def planned_stages(params_path: str | Path = "params.yaml", dvc_yaml: str | Path = "dvc.yaml") -> list[str]:
    """The DVC stage names in dependency order; matrix stages expand per variant and seed
    (DVC names them `tune@<variant>-<seed>`)."""
    params = load_params(params_path)
    declared = (yaml.safe_load(Path(dvc_yaml).read_text()) or {}).get("stages", {})
    names = []
    for stage in STAGE_ORDER:
        if stage not in declared:
            continue
        if "matrix" in declared[stage]:
            names += [f"{stage}@{v}-{s}" for v in params.tune.variants for s in params.tune.seeds]
        else:
            names.append(stage)
    return names


def apply_overrides(overrides: dict, params_path: str | Path = "params.yaml") -> None:
    """Writes `key.path: value` overrides into params.yaml, keeping its comments and layout,
    as `dvc exp run -S` does; validated first, so a typo changes nothing."""
    if not overrides:
        return
    load_params(params_path, overrides)  # raises ParamsError naming the bad key
    from ruamel.yaml import YAML

    ryaml = YAML()
    ryaml.preserve_quotes = True
    path = Path(params_path)
    data = ryaml.load(path.read_text())
    for dotted, value in overrides.items():
        node = data
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    from .io import atomic_path

    with atomic_path(path) as tmp, tmp.open("w") as f:
        ryaml.dump(data, f)


def repro_command(stage: str) -> list[str]:
    return [sys.executable, "-m", "dvc", "repro", "--single-item", stage]


def stage_environment(extra: dict | None = None) -> dict:
    """The stages' `python` must be this interpreter (the project's venv) even when the venv
    is not activated: its bin folder goes first on PATH."""
    import os

    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, **(extra or {}))
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def run_streaming(cmd: list[str], on_line, env=None, cwd=None) -> tuple[int, list[str]]:
    """Runs a command, handing each output line to `on_line`; returns the code and the tail."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=env, cwd=cwd)
    tail: list[str] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        # progress bars redraw with carriage returns: keep the last state of each line
        line = raw.rstrip("\n").split("\r")[-1].rstrip()
        if not line:
            continue
        on_line(line)
        tail = (tail + [line])[-30:]
    return proc.wait(), tail


REMOTE_NAME = "reverie"


def remote_commands(url: str) -> list[list[str]]:
    """Registers the remote named in params (project-local DVC config) and pushes every
    cached output to it, so a teammate's `dvc pull` gets the same data and models."""
    return [[sys.executable, "-m", "dvc", "remote", "add", "--local", "--force", "--default", REMOTE_NAME, url],
            [sys.executable, "-m", "dvc", "push", "--remote", REMOTE_NAME]]
