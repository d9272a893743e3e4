"""Every command in the README works as written: in a clone where the pipeline has run, from a
shell that has activated nothing. Commands that need what a test cannot have carry a visible
marker at the end of their line."""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

MARKERS = ("[needs a GPU]", "[needs the network]", "[needs real data]", "[runs until Ctrl-C]", "[runs the tests]")
# how a README command may start: the project's Makefile or its interpreter's tools, never a bare
# `python` or `dvc` (in a shell without the venv those are the system's, or nothing)
ENTRY = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:make\s|\.venv/bin/)")


def readme_commands(text: str) -> list[tuple[str, str | None]]:
    """(command, marker or None) for each line of each ```bash block."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            out.append((line, next((m for m in MARKERS if line.endswith(m)), None)))
    return out


def test_the_reader_finds_commands_and_markers():
    text = "```bash\nmake run   # all\n# a note\nmake serve  # servers [runs until Ctrl-C]\n```\n```\nnot run\n```\n"
    assert readme_commands(text) == [("make run   # all", None), ("make serve  # servers [runs until Ctrl-C]", "[runs until Ctrl-C]")]


def test_every_readme_command_uses_the_project_and_says_what_it_cannot_run_here():
    commands = readme_commands((ROOT / "README.md").read_text())
    assert len(commands) >= 8
    for command, marker in commands:
        assert ENTRY.match(command), f"README command does not work without an activated venv: {command}"
        assert "<" not in command.split("#")[0], f"README command with a placeholder: {command}"
    assert [c for c, m in commands if m == "[runs the tests]"] == [c for c, _ in commands if c.startswith("make test")]
    assert any(c.startswith("make run") and m is None for c, m in commands)


def clean_shell() -> dict:
    """A shell that has activated nothing: no venv on PATH, none named."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if p and Path(p).resolve() != Path(venv_bin).resolve())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PREFECT_API_URL", "PREFECT_HOME",
                                                             "MLFLOW_TRACKING_URI", "OMP_NUM_THREADS")}
    return env | {"PATH": path}


def installed() -> bool:
    stamp = Path(sys.prefix) / ".installed"
    return stamp.exists() and all(stamp.stat().st_mtime >= (ROOT / f).stat().st_mtime
                                  for f in ("Makefile", "requirements.lock", "pyproject.toml"))


@pytest.fixture(scope="session")
def readme_project(repro_project, tmp_path_factory):
    """A copy of the project after its pipeline ran, with what a clone has besides: the Makefile and
    the install's inputs (their times kept, so `make` finds the venv installed, as after `make run`)."""
    project, _ = repro_project
    copy = tmp_path_factory.mktemp("readme") / "clone"
    shutil.copytree(project, copy, symlinks=True)
    for name in ("Makefile", "requirements.lock", "pyproject.toml", "prefect.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    return copy


def run(command: str, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=clean_shell() | (env or {}), capture_output=True,
                          text=True, timeout=timeout)


def test_every_readme_command_runs_as_written(readme_project, prefect_harness):
    if not installed():
        pytest.skip("the venv is older than Makefile, requirements.lock or pyproject.toml: `make install` first "
                    "(a README `make` command would reinstall it)")
    from prefect.settings import PREFECT_API_URL

    commands = [c for c, marker in readme_commands((ROOT / "README.md").read_text()) if marker is None]
    # the session's Prefect server stands in for a `make serve` running beside the shell (the flow
    # then uses it, as the README says, instead of starting a temporary one per command)
    served = {"PREFECT_API_URL": PREFECT_API_URL.value()}
    took = []
    for command in commands:
        start = time.monotonic()
        done = run(command, readme_project, env=served)
        took.append(f"{time.monotonic() - start:5.1f} s  rc {done.returncode}  {command.split('#')[0].strip()}")
        # the flow ends non-zero when the report is void, as the tiny config's is (a student trained
        # for seconds does not see): the command worked, the comparison it printed is void
        void = "the comparison is VOID" in done.stderr and "## Headline" in done.stdout
        assert done.returncode == 0 or void, \
            f"`{command}` failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    # after them all, DVC has nothing left to do
    again = run(".venv/bin/dvc repro", readme_project)
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout[-2000:]
    print("\nREADME commands as written:\n" + "\n".join(took))


def test_a_missing_interpreter_stops_dvc_before_it_removes_an_output(readme_project):
    model = readme_project / "models/response-s0"
    before = sorted(p.name for p in model.iterdir())
    venv = readme_project / ".venv"
    venv.rename(readme_project / "venv-away")
    try:
        # DVC installed elsewhere (here: this interpreter's), the project's venv absent
        done = subprocess.run([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "tune@response-0"],
                              cwd=readme_project, env=clean_shell(), capture_output=True, text=True)
    finally:
        (readme_project / "venv-away").rename(venv)
    assert done.returncode != 0
    assert ".venv/run-make-install.yaml" in done.stderr + done.stdout
    assert sorted(p.name for p in model.iterdir()) == before


def test_a_one_line_edit_of_a_module_a_stage_runs_makes_that_stage_stale(readme_project):
    records = readme_project / "reverie/records.py"
    original = records.read_text()
    records.write_text(original + "# a one-line edit\n")
    try:
        status = run(".venv/bin/dvc status", readme_project)
    finally:
        records.write_text(original)
    assert status.returncode == 0
    changed = [line.rstrip(":") for line in status.stdout.splitlines() if line and not line.startswith((" ", "\t"))]
    assert "validate" in changed and "modified:           reverie/records.py" in status.stdout, status.stdout
    assert "Data and pipelines are up to date" in run(".venv/bin/dvc status", readme_project).stdout
