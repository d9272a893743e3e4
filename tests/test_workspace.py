"""One run at a time per workspace, and what DVC is asked once: on a DVC project of trivial
stages (seconds, no training)."""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import dvc, make_project, tiny_params_dict

STEP = '''"""A trivial stage that goes through reverie.stage like the real ones."""
import sys
from pathlib import Path

import yaml

from reverie.stage import stage

with stage(sys.argv[1]):
    out = Path(sys.argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    seed = yaml.safe_load(Path("params.yaml").read_text())["project"]["seed"]
    out.write_text(f"{sys.argv[1]} {seed}\\n")
'''

# a -> b, and c on its own
TRIVIAL_DAG = {"stages": {
    "a": {"cmd": "python step.py a out/a.txt", "deps": ["step.py"], "params": ["project.seed"], "outs": ["out/a.txt"]},
    "b": {"cmd": "python step.py b out/b.txt", "deps": ["step.py", "out/a.txt"], "outs": ["out/b.txt"]},
    "c": {"cmd": "python step.py c out/c.txt", "deps": ["step.py"], "params": ["report.baseline"],
          "outs": ["out/c.txt"]},
}}


@pytest.fixture
def trivial_project(tmp_path):
    project = make_project(tmp_path / "p", tiny_params_dict())
    (project / "dvc.yaml").write_text(yaml.safe_dump(TRIVIAL_DAG, sort_keys=False))
    (project / "step.py").write_text(STEP)
    return project


def set_seed(project: Path, seed: int) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["project"]["seed"] = seed
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_is_asked_once_for_the_stale_stages_and_everything_downstream(trivial_project):
    from reverie.orchestration import plan

    fresh = plan(trivial_project)
    assert fresh.order == ("a", "b", "c") and fresh.stale == {"a", "b", "c"}
    assert fresh.upstream == {"a": set(), "b": {"a"}, "c": set()}
    dvc(trivial_project, "repro")
    assert plan(trivial_project).stale == set()
    set_seed(trivial_project, 7)
    # only a's params changed; b is stale because a will rerun, c is not
    stale = plan(trivial_project)
    assert stale.stale == {"a", "b"} and stale.skipped() == ["c"]
    dvc(trivial_project, "repro")
    # an output edited by hand (a's output, b's dependency: DVC hashes it for each) is seen
    (trivial_project / "out/a.txt").write_text("edited\n")
    assert plan(trivial_project).stale == {"a", "b"}


def test_a_hand_run_stage_stops_while_a_flow_run_holds_the_workspace(trivial_project):
    from reverie.workspace import claim, dvc_command, holder_environment

    with claim("Prefect flow run 'brave-owl'", "http://127.0.0.1:4200/runs/flow-run/42",
               root=trivial_project) as token:
        result = dvc(trivial_project, "repro", check=False)
        assert result.returncode != 0
        said = result.stdout + result.stderr
        assert "being reproduced by Prefect flow run 'brave-owl'" in said, said
        assert "http://127.0.0.1:4200/runs/flow-run/42" in said and "then run `dvc repro` again" in said
        assert not (trivial_project / "out/a.txt").exists()
        # the flow run's own stages carry its token and go through
        env = dict(os.environ, **holder_environment(token, "Prefect flow run 'brave-owl'", None),
                   PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        subprocess.run(dvc_command(["repro", "a"]), cwd=trivial_project, env=env, check=True, capture_output=True)
        assert (trivial_project / "out/a.txt").read_text() == "a 0\n"
    # released: a stage started by hand goes through again (checked in this process: a second
    # full `dvc repro` here would cost seconds and show nothing more)
    from reverie.workspace import holder, refuse_if_held

    assert holder(trivial_project) is None
    refuse_if_held(trivial_project)


def test_a_second_claim_waits_for_the_first_and_says_so(tmp_path):
    from reverie.workspace import claim, holder

    said, order = [], []
    with claim("Prefect flow run 'first'", None, root=tmp_path):
        assert holder(tmp_path)["who"] == "Prefect flow run 'first'"

        def second():
            with claim("Prefect flow run 'second'", None, root=tmp_path, on_wait=said.append):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 10
        while not said and time.monotonic() < deadline:
            time.sleep(0.05)
        order.append("first done")
    thread.join(10)
    assert order == ["first done", "second"]
    assert "held by Prefect flow run 'first'" in said[0] and "waiting" in said[0]
    assert holder(tmp_path) is None


def test_dvc_run_for_a_flow_names_the_flow_run_in_its_locks(trivial_project):
    """DVC prints the command line of whoever holds a lock it needs: for the flow's dvc that
    line names the flow run."""
    import json

    from reverie.workspace import LABEL_ENV, dvc_command

    gate = trivial_project / "hold"
    gate.write_text("")
    (trivial_project / "step.py").write_text(
        "import time, pathlib\nwhile pathlib.Path('hold').exists():\n    time.sleep(0.1)\n" + STEP)
    env = dict(os.environ, **{LABEL_ENV: "[Prefect flow run 'calm-fox': wait for it or cancel it] dvc"},
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    flow_dvc = subprocess.Popen(dvc_command(["repro", "--single-item", "a"]), cwd=trivial_project, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lock = trivial_project / ".dvc/tmp/rwlock"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "out/a.txt" not in (lock.read_text() if lock.exists() else ""):
            time.sleep(0.2)
        held = json.loads(lock.read_text())
        assert any("calm-fox" in info["cmd"] for info in held["write"].values())
        result = dvc(trivial_project, "repro", "a", check=False)
        assert result.returncode != 0 and "Prefect flow run 'calm-fox'" in result.stdout + result.stderr
    finally:
        gate.unlink()
        out, _ = flow_dvc.communicate(timeout=60)
    assert flow_dvc.returncode == 0, out


def test_an_interrupted_command_takes_the_processes_it_started_with_it():
    """A flow run cancelled or interrupted mid-stage must not leave `dvc repro` and its stage
    running (they would hold DVC's locks after the workspace is released)."""
    import psutil

    from reverie.orchestration import run_streaming

    starts_a_child = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
                      "'import time; time.sleep(120)']); print(child.pid, flush=True); time.sleep(120)")
    pids = []

    def interrupt(line: str) -> None:
        pids.append(int(line))
        raise KeyboardInterrupt  # what Ctrl-C, or Prefect's cancel, raises in the flow

    with pytest.raises(KeyboardInterrupt):
        run_streaming([sys.executable, "-c", starts_a_child], interrupt)
    assert pids
    child = pids[0]
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
