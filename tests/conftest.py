import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = {
    "world": {"train_images": 60, "eval_images": 16},
    "generate": {"questions_per_image": 4, "noise_rate": 0.1},
    "validate": {"min_records": 10},
    # far too small to see: the gate is off here, and the report must say the comparison is void
    "base": {"epochs": 2, "batch_size": 16, "checkpoint_every": 5, "vision_epochs": 1, "check_images": 8,
             "describe_check_images": 2, "min_seeing_accuracy": 0.0,
             "model": {"vision_hidden": 32, "text_hidden": 32, "intermediate": 64, "vision_layers": 1,
                       "text_layers": 1, "vocab_size": 300, "vision_heads": 2, "text_heads": 2}},
    "tune": {"variants": ["response", "pos_neg"], "seeds": [0], "epochs": 0.3, "batch_size": 16,
             "quick_eval_images": 4, "lora": {"r": 4, "alpha": 8}},
    "evaluate": {"eval_images": 4, "batch_size": 32, "max_new_tokens": 4},
    "report": {"bootstrap_replicates": 100},
}


@pytest.fixture(autouse=True)
def no_leaked_tracking_uri():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; a test that calls it must not
    point the DVC stages of later tests at its store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def write_photos(folder: Path, count: int, size: tuple[int, int]) -> list[tuple[str, Path]]:
    """`count` plain PNGs of distinct colours, as the (image id, path) pairs a model teacher takes."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.new("RGB", size, (40 * i, 200 - 30 * i, 90)).save(path)
        out.append((f"img{i}", path))
    return out


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def tiny_params_dict(tmp: Path | None = None) -> dict:
    data = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    if tmp is not None:
        data["project"]["mlflow_tracking_uri"] = f"sqlite:///{tmp / 'mlflow.db'}"
    return data


@pytest.fixture
def tiny_params(tmp_path):
    from reverie.settings import Params

    return Params.model_validate(tiny_params_dict(tmp_path))


def make_project(dest: Path, params: dict) -> Path:
    """A runnable copy of the project (code, dvc.yaml, tiny params) in its own git+dvc repo."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("stages", "flows", "mix"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    # evaluate's dependency on the real benchmark files (evaluate.suites.root): its README alone
    (dest / "eval_data").mkdir()
    shutil.copy(ROOT / "eval_data" / "README.md", dest / "eval_data" / "README.md")
    # the library is imported from the installed package; dvc.yaml names its files as deps
    shutil.copytree(ROOT / "reverie", dest / "reverie", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    install_interpreter(dest)
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=dest, check=True, env=env)
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=dest, check=True, env=env)
    return dest


def install_interpreter(project: Path) -> None:
    """What `make install` leaves in a clone for dvc.yaml's stage commands: `.venv` (here the venv
    running the tests) with the vars file naming its interpreter."""
    venv = project / ".venv"
    if sys.prefix != sys.base_prefix:  # a venv, as `make test` runs: the clone's is that one
        venv.symlink_to(sys.prefix, target_is_directory=True)
        python = ".venv/bin/python"
    else:
        venv.mkdir()
        python = sys.executable
    named = venv / "run-make-install.yaml"
    if not named.exists() or python not in named.read_text():
        named.write_text(f"python: {python}\n")


def dvc(project: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(env or {}))
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One Prefect test server for the whole session (tests/test_flow.py, tests/test_fanout.py)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


PARAMS_READS = ".reverie/params_reads"


@pytest.fixture(scope="session")
def repro_project(tmp_path_factory):
    """The whole DAG reproduced once on the tiny config, shared by the end-to-end tests. Each
    stage records the settings it reads in `.reverie/params_reads/` (tests/test_declared_params.py)."""
    project = make_project(tmp_path_factory.mktemp("project"), tiny_params_dict())
    first = dvc(project, "repro", env={"REVERIE_RECORD_READS": str(project / PARAMS_READS)})
    return project, first


@pytest.fixture
def server():
    """The loopback OpenAI-compatible server (tests/chat_server.py), answering fast; a test file
    with a server of its own (test_batch.py) overrides it."""
    from tests.chat_server import ChatServer

    srv = ChatServer(latency_s=0.01).start()
    yield srv
    srv.release()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="session")
def flow_project(tmp_path_factory, prefect_harness):
    """A tiny project for the Prefect flow (tests/test_flow.py, tests/test_routes.py)."""
    params = tiny_params_dict()
    params["tune"]["variants"] = ["response", "pos_neg"]
    # fake device ids: each base/tune@/evaluate@ stage is placed on one of them, the two tune@ runs
    # side by side on both (tests/test_flow.py)
    params["orchestration"]["devices"] = ["0", "1"]
    return make_project(tmp_path_factory.mktemp("flowproject"), params)


def run_flow(project, **kwargs):
    from flows.pipeline import pipeline

    cwd = os.getcwd()
    os.chdir(project)
    try:
        return pipeline(**kwargs)
    finally:
        os.chdir(cwd)


FIRST_WARM_LOG = ".reverie/warm-first-run.log"


@pytest.fixture(scope="session")
def flow_first_run(flow_project):
    """The flow's first run of the whole DAG in `flow_project`, shared by the tests that read it;
    its warm interpreter's log is kept as FIRST_WARM_LOG (a later run writes .reverie/warm.log anew)."""
    state = run_flow(flow_project, return_state=True)
    shutil.copy(flow_project / ".reverie/warm.log", flow_project / FIRST_WARM_LOG)
    return state



def pytest_collection_modifyitems(config, items):
    """REVERIE_TEST_ORDER=reverse runs the suite back to front: every test must pass in any order
    (a test that leans on another's leftovers fails one way round)."""
    if os.environ.get("REVERIE_TEST_ORDER") == "reverse":
        items.reverse()
