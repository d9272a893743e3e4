"""The flow's warm interpreter (reverie.warm): a stage command runs in a child forked from it,
with the command's streams, arguments, exit code and signals, the project's code imported fresh,
and the same numbers as in its own process; anything it cannot serve runs as before."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reverie.orchestration import stage_environment
from reverie.warm import CHILD_ENV, SOCKET_ENV, environment_difference, thread_count, warm_server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets, fork: Linux")

PROBE = '''
"""A stage entry point that says where it ran."""
import json, os, sys, time
from reverie.stage import stage

MARKER = "{marker}"


def main():
    with stage("probe"):
        mode = sys.argv[1] if len(sys.argv) > 1 else ""
        if mode == "sleep":
            print("sleeping", os.getpid(), flush=True)
            time.sleep(60)
        threads = None
        if mode == "torch":
            import torch
            threads = torch.get_num_threads()
            torch.manual_seed(0)
            layer = torch.nn.Linear(64, 64)
            opt = torch.optim.SGD(layer.parameters(), lr=0.1)
            for _ in range(20):
                x = torch.randn(256, 64)
                loss = (layer(x).tanh() ** 2).mean()
                opt.zero_grad(); loss.backward(); opt.step()
            threads = [threads, layer.weight.detach().numpy().tobytes().hex()[:4000]]
        print(json.dumps({{"child": os.environ.get("{child}"), "pid": os.getpid(), "ppid": os.getppid(),
                          "argv": sys.argv[1:], "cwd": os.getcwd(), "marker": MARKER, "threads": threads,
                          "main": __name__, "path0": sys.path[0]}}))
        print("to stderr", file=sys.stderr)
        if mode.isdigit():
            sys.exit(int(mode))
        if mode == "raise":
            raise RuntimeError("a stage bug")


if __name__ == "__main__":
    main()
'''


def stage_env(extra: dict | None = None) -> dict:
    """The stages' environment, without pytest's marker of the current test (which changes from
    setup to call: a server started in a fixture would refuse every command as different) and
    without thread variables left by whatever ran before (each test names its own)."""
    env = {k: v for k, v in stage_environment().items()
           if k not in ("PYTEST_CURRENT_TEST", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return env | (extra or {})


def write_probe(root: Path, marker: str) -> None:
    (root / "stages").mkdir(exist_ok=True)
    (root / "stages" / "__init__.py").write_text("")
    (root / "stages" / "probe.py").write_text(PROBE.format(marker=marker, child=CHILD_ENV))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("warmproject")
    write_probe(root, "first")
    return root


@pytest.fixture(scope="module")
def server(project):
    """A warm server preloading torch (the numbers test needs it; the others do not care)."""
    cwd = os.getcwd()
    os.chdir(project)
    try:
        with warm_server(stage_env(), project / "warm.log", modules=["torch"], wait_ready=True) as env:
            yield env
    finally:
        os.chdir(cwd)


def probe(project: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    run_env = stage_env(env)
    return subprocess.run([sys.executable, "-m", "stages.probe", *args], cwd=project, env=run_env,
                          capture_output=True, text=True, timeout=timeout)


def said(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_stage_command_runs_in_a_child_of_the_server_with_its_streams_and_exit_code(project, server):
    result = probe(project, "7", env=server)
    assert result.returncode == 7, result.stderr
    out = said(result)
    assert out["child"] == "1", result.stderr
    assert out["ppid"] != os.getpid()  # the server's child, not the command's own process
    assert out["argv"] == ["7"] and out["cwd"] == str(project) and out["main"] == "__main__"
    assert out["path0"] == str(project)  # as `python -m` sets it
    assert "to stderr" in result.stderr and "[warm]" not in result.stderr
    ok = probe(project, env=server)
    assert ok.returncode == 0 and said(ok)["child"] == "1"
    assert said(ok)["pid"] != out["pid"]  # one child per command
    log = (project / "warm.log").read_text()
    assert f"served: stages.probe 7 (pid {out['pid']})" in log and "[warm] ready" in log


def test_an_exception_in_the_stage_gives_its_traceback_and_exit_1(project, server):
    result = probe(project, "raise", env=server)
    assert result.returncode == 1
    assert "RuntimeError: a stage bug" in result.stderr and "Traceback" in result.stderr
    assert said(result)["child"] == "1"


def test_the_project_code_is_imported_fresh_for_each_stage(project, server):
    write_probe(project, "edited")
    try:
        out = said(probe(project, env=server))
        assert out["child"] == "1" and out["marker"] == "edited"
    finally:
        write_probe(project, "first")
    assert said(probe(project, env=server))["marker"] == "first"


@pytest.mark.parametrize("threads", [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},  # as the flow sets them
                                     {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
                                     {"OMP_NUM_THREADS": "2"}, {}, {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "1"}],
                         ids=["1-1", "2-2", "omp2", "unset", "omp2-mkl1"])
def test_torch_threads_and_numbers_are_those_of_the_commands_own_process(project, server, threads):
    warm = said(probe(project, "torch", env=server | threads))
    alone = said(probe(project, "torch", env=threads))
    assert warm["child"] == "1" and alone["child"] is None
    assert warm["threads"][0] == alone["threads"][0] and warm["threads"][1] == alone["threads"][1]
    assert thread_count(threads, 7) == int(threads.get("MKL_NUM_THREADS", threads.get("OMP_NUM_THREADS", 7)))


def test_a_command_whose_environment_differs_runs_in_its_own_process(project, server):
    result = probe(project, env=server | {"HF_HOME": "/elsewhere"})
    assert result.returncode == 0
    assert said(result)["child"] is None
    assert "[warm] environment differs from the warm interpreter's in HF_HOME" in result.stderr
    assert "refused: stages.probe: environment differs from the warm interpreter's in HF_HOME" \
        in (project / "warm.log").read_text()
    # per-stage variables (threads, DVC's) do not count
    assert environment_difference({"A": "1"}, {"A": "1", "OMP_NUM_THREADS": "1", "DVC_STAGE": "x"}) is None
    assert "A" in environment_difference({"A": "1"}, {"A": "2"})


def test_without_a_server_the_command_runs_the_stage_itself(project):
    result = probe(project, env={SOCKET_ENV: "@reverie-warm-nobody-listens"})
    assert result.returncode == 0 and said(result)["child"] is None
    assert "[warm] the warm interpreter at @reverie-warm-nobody-listens is not listening" in result.stderr


def _gone(pid: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_command_takes_its_child_with_it(project, server, how):
    proc = subprocess.Popen([sys.executable, "-m", "stages.probe", "sleep"], cwd=project,
                            env=stage_env(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    word, child = proc.stdout.readline().split()
    assert word == "sleeping" and int(child) != proc.pid
    proc.send_signal(how)
    proc.wait(timeout=30)
    assert _gone(int(child)), f"the warm child {child} outlived its command ({how.name})"
    if how == signal.SIGTERM:  # passed on: the child ended, and the command says it failed
        assert proc.returncode != 0


def test_the_server_stops_when_the_flow_that_started_it_is_gone(project):
    flow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    server = subprocess.Popen([sys.executable, "-m", "reverie.warm", "--socket", f"@reverie-warm-test-{flow.pid}",
                               "--parent", str(flow.pid), "--preload", "json"], cwd=project,
                              stdout=subprocess.PIPE, text=True)
    assert "[warm] ready" in server.stdout.readline()
    flow.wait()
    assert server.wait(timeout=30) == 0


def test_a_dvc_stage_runs_warm(project, server, tmp_path):
    """DVC runs the command through a shell and adds its own variables: still served."""
    from tests.conftest import dvc

    root = tmp_path / "dvcproject"
    root.mkdir()
    write_probe(root, "dvc")
    (root / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          probe:
            cmd: python -m stages.probe > said.json
            deps: [stages/probe.py]
            outs: [{said.json: {cache: false}}]
        """))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    repro = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, env=stage_env(server),
                           capture_output=True, text=True)
    assert repro.returncode == 0, repro.stderr
    assert "[warm]" not in repro.stderr + repro.stdout
    out = json.loads((root / "said.json").read_text())
    assert out["child"] == "1" and out["marker"] == "dvc"


def test_the_devices_a_stage_was_placed_on_may_differ_but_a_started_cuda_refuses(monkeypatch):
    import torch

    from reverie.warm import cuda_started

    server = {"PATH": "/bin", "HOME": "/root"}
    assert environment_difference(server, server | {"CUDA_VISIBLE_DEVICES": "3"}) is None
    assert cuda_started() is None  # importing torch starts no CUDA
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert "CUDA was started" in cuda_started()
