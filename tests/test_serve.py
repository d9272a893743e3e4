"""`make serve` as a user runs it (`python -m reverie.services`), on a project of trivial DVC
stages: the three services start, overlapping runs of the deployment both complete one after
the other, a hand-run `dvc repro` meanwhile is told what holds the workspace, Ctrl-C stops
everything. And `flows.serve` without a server refuses at once."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import dvc, make_project, tiny_params_dict

DEPLOYMENT = "reverie-pipeline/reverie-scheduled"

# like the real stages it goes through reverie.stage; it holds while the file `hold` exists, so
# the test decides how long the first run lasts
STEP = '''import sys, time
from pathlib import Path

import yaml

from reverie.stage import stage

with stage(sys.argv[1]):
    Path(".reverie/gate").mkdir(parents=True, exist_ok=True)
    Path(f".reverie/gate/{sys.argv[1]}.started").write_text("")
    deadline = time.monotonic() + 120
    while Path("hold").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    seed = yaml.safe_load(Path("params.yaml").read_text())["project"]["seed"]
    Path(sys.argv[2]).parent.mkdir(parents=True, exist_ok=True)
    Path(sys.argv[2]).write_text(f"seed {seed}\\n")
'''
# one stage: each flow run costs a process, a `dvc repro` and a stage process, and the test
# needs no more to show runs waiting for each other (tests/test_workspace.py covers a DAG)
DAG = {"stages": {
    "generate": {"cmd": "python step.py generate data/out.txt", "deps": ["step.py"], "params": ["project.seed"],
                 "outs": ["data/out.txt"]},
}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for(what: str, check, timeout_s: float = 120.0, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


def _start(info: dict) -> None:
    """`make serve` (reverie.services) in the project, on free ports; waits for its deployment."""
    project = info["project"]
    prefect_port, mlflow_port = free_port(), free_port()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               # the real services, polled more often than by default so the test takes seconds
               PREFECT_RUNNER_POLL_FREQUENCY="1", PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="1")
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (project / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "reverie.services", "--prefect-port", str(prefect_port),
                             "--mlflow-port", str(mlflow_port)], cwd=project, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{prefect_port}/api"
    info.update(proc=proc, api=api, prefect_port=prefect_port, mlflow_port=mlflow_port, log=project / "serve.log",
                log_file=log)
    wait_for("the deployment", lambda: _deployment(api) or (proc.poll() is not None and _fail(info)), 240, 1.0)


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("served"), tiny_params_dict())
    (project / "dvc.yaml").write_text(yaml.safe_dump(DAG, sort_keys=False))
    (project / "step.py").write_text(STEP)
    info = {"project": project}
    try:
        _start(info)
        yield info
    finally:
        proc = info.get("proc")
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        if info.get("log_file"):
            info["log_file"].close()


@pytest.fixture
def served(services):
    """The module's `make serve`, started again when a test stopped it (the Ctrl-C test): each
    test passes alone and in any order."""
    if services["proc"].poll() is not None:
        services["log_file"].close()
        _start(services)
    return services


def _fail(info):
    raise AssertionError("make serve ended early:\n" + info["log"].read_text())


def _deployment(api: str):
    try:
        with urllib.request.urlopen(f"{api}/deployments/name/{DEPLOYMENT}", timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def client(api: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class Client:
        def __enter__(self):
            self.settings = temporary_settings(updates={PREFECT_API_URL: api})
            self.settings.__enter__()
            self.client = get_client(sync_client=True).__enter__()
            return self.client

        def __exit__(self, *exc):
            self.client.__exit__(*exc)
            self.settings.__exit__(*exc)

    return Client()


def test_make_serve_starts_prefect_mlflow_and_the_deployment(served):
    ui = f"http://127.0.0.1:{served['prefect_port']}"
    # the UI calls the API on the server's own port, and the server's telemetry is off
    assert get_json(f"{ui}/ui-settings")["api_url"] == served["api"]
    assert get_json(f"{served['api']}/admin/settings")["server"]["analytics_enabled"] is False
    with urllib.request.urlopen(f"http://127.0.0.1:{served['mlflow_port']}/health", timeout=5) as response:
        assert response.status == 200
    deployment = _deployment(served["api"])
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * *"]
    printed = served["log"].read_text()
    assert f"Prefect UI: {ui}" in printed and f"MLflow UI:  http://127.0.0.1:{served['mlflow_port']}" in printed
    # the link to an experiment opens its runs table, not MLflow 3's GenAI overview (asked of the server)
    from reverie.tracking import experiment_link

    mlflow_ui = f"http://127.0.0.1:{served['mlflow_port']}"
    assert experiment_link(mlflow_ui, "Default") == f"{mlflow_ui}/#/experiments/0?workflowType=machine_learning"
    assert experiment_link(mlflow_ui, "no-such-experiment") is None
    # the state is the project's own
    assert (served["project"] / ".reverie/prefect").is_dir()


def test_overlapping_runs_both_complete_one_after_the_other(served):
    from prefect.deployments import run_deployment

    project, gate = served["project"], served["project"] / "hold"
    (project / ".reverie/gate/generate.started").unlink(missing_ok=True)  # an earlier test's run left it
    gate.write_text("")
    with client(served["api"]) as c:
        first = run_deployment(DEPLOYMENT, timeout=0, client=c)
        wait_for("the first run's stage", lambda: (project / ".reverie/gate/generate.started").exists())
        # a second run (a manual run while the scheduled one works) with a change to reproduce
        second = run_deployment(DEPLOYMENT, timeout=0, parameters={"overrides": {"project.seed": 1}}, client=c)
        wait_for("the second run to wait for the slot",
                 lambda: c.read_flow_run(second.id).state.name == "AwaitingConcurrencySlot", 60)
        # meanwhile a hand-run `dvc repro` is told which run holds the workspace
        by_hand = dvc(project, "repro", check=False)
        assert by_hand.returncode != 0
        assert f"Prefect flow run '{first.name}'" in by_hand.stdout + by_hand.stderr
        gate.unlink()
        final = {run.id: wait_for(f"run {run.name} to end", lambda run=run: _final(c, run.id), 180)
                 for run in (first, second)}
        assert [final[r.id].state.type.value for r in (first, second)] == ["COMPLETED", "COMPLETED"], \
            [(r.state.name, r.state.message) for r in final.values()]
        assert final[second.id].start_time >= final[first.id].end_time
        history = [s.name for s in c.read_flow_run_states(second.id)]
    assert "AwaitingConcurrencySlot" in history
    # the second run reproduced its change after the first one had finished
    assert (project / "data/out.txt").read_text() == "seed 1\n"
    assert "Running stage" not in dvc(project, "repro").stdout


def _final(c, run_id):
    run = c.read_flow_run(run_id)
    return run if run.state.is_final() else None


def test_ctrl_c_stops_the_three_services_and_cancels_the_run_in_progress(served):
    import sqlite3

    import psutil
    from prefect.deployments import run_deployment

    from reverie.services import port_free
    from reverie.workspace import holder

    proc, project = served["proc"], served["project"]
    started = project / ".reverie/gate/generate.started"
    started.unlink(missing_ok=True)
    (project / "hold").write_text("")
    with client(served["api"]) as c:
        run = run_deployment(DEPLOYMENT, timeout=0, parameters={"overrides": {"project.seed": 2}}, client=c)
    wait_for("the run's stage", started.exists)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 0
    assert port_free("127.0.0.1", served["prefect_port"]) and port_free("127.0.0.1", served["mlflow_port"])
    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if Path(p.cwd()) == project:
                left.append(p.info)
        except (psutil.Error, OSError):
            continue
    assert not left, left  # no server, runner, flow run, dvc or stage process
    assert holder(project) is None and not (project / ".reverie/services.json").exists()
    # the run was cancelled (read from the server's database: the server is gone)
    with sqlite3.connect(project / ".reverie/prefect/prefect.db") as db:
        state = db.execute("select state_type, state_name from flow_run where id = ?", (str(run.id),)).fetchone()
    assert state[0] == "CANCELLED", state
    printed = served["log"].read_text()
    assert "Pausing all deployments" in printed and printed.rstrip().endswith("stopped")


def test_serving_without_a_server_refuses_at_once(tmp_path):
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect"))
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run([sys.executable, "-m", "flows.serve"], cwd=Path(__file__).resolve().parents[1], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "make serve" in result.stderr and "PREFECT_API_URL" in result.stderr
    assert "Traceback" not in result.stderr and "polling" not in result.stdout


def test_the_mlflow_ui_serves_the_store_params_name_and_the_environment_wins(tmp_path, monkeypatch):
    """`make mlflow-ui` and `make serve` start MLflow on project.mlflow_tracking_uri, not a fixed
    mlflow.db; MLFLOW_TRACKING_URI wins, as it does for the stages; an http store is used as is."""
    from reverie.services import addresses, main, mlflow_environment, mlflow_server_command
    from reverie.settings import Params

    data = tiny_params_dict()
    data["project"]["mlflow_tracking_uri"] = "sqlite:///runs/store.db"
    data["orchestration"]["mlflow_port"] = 5123
    params = Params.model_validate(data)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a = addresses(params, tmp_path)
    cmd = mlflow_server_command(a)
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{(tmp_path / 'runs/store.db').resolve()}"
    assert cmd[cmd.index("--port") + 1] == "5123" and a.mlflow_ui == "http://127.0.0.1:5123"
    # MLflow's job runner (eight more processes) stays off unless the environment turns it on
    jobs = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
    assert mlflow_environment({})[jobs] == "false" and mlflow_environment({jobs: "true"})[jobs] == "true"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert addresses(params, tmp_path).store == f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000/")
    served_elsewhere = addresses(params, tmp_path)
    assert not served_elsewhere.starts_mlflow and served_elsewhere.mlflow_ui == "http://tracking.example:5000"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    assert main(["mlflow"]) == 0  # nothing to start: it says where that server's UI is
