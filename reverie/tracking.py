"""MLflow: one run per (variant, seed) in one experiment; the store is named in params.

mlflow is imported where used (about 3 s). A relative SQLite URI is resolved against the
project root so that runs from DVC, Prefect and the UI land in one store.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

RUN_ID_FILE = "mlflow_run.json"
# What kind of experiment this is, as MLflow 3 records it (its UI's "Machine learning", as against
# "GenAI apps & agents"): an experiment without the tag is opened as a GenAI one ("Traces 0").
# MLflow 3.17's bundled UI opens by its own workflow switch instead (`?workflowType=machine_learning`
# in the address, or the switch's last setting in that browser), so run links add that too.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
SUPERSEDED_TAG = "reverie.superseded"  # on a run that a later run of the same name replaced: that run's id
ENDED = ("FINISHED", "FAILED", "KILLED")
UI_WORKFLOW = "workflowType=machine_learning"


def tracking_uri(uri: str, root: str | Path = ".") -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((Path(root) / uri[len(prefix):]).resolve())
    return uri


def flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def git_commit(root: str | Path = ".") -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_hash(path: str | Path) -> str:
    """The md5 that DVC records for a stage output, read from dvc.lock (or computed)."""
    import hashlib

    path = Path(path)
    lock = Path("dvc.lock")
    if lock.exists():
        import yaml

        # libyaml's loader: the pure-Python one took 2 s of every tune stage on the default's dvc.lock
        data = yaml.load(lock.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        for stage in (data.get("stages") or {}).values():
            for out in stage.get("outs", []) or []:
                if Path(out.get("path", "")) == path and out.get("md5"):
                    return out["md5"]
    h = hashlib.md5()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def use_tracking_uri(uri: str) -> None:
    """Points this process's MLflow at `uri` and nothing else: `mlflow.set_tracking_uri` also
    exports MLFLOW_TRACKING_URI, which every later child process (DVC stages started from this
    one) would inherit and prefer over its own params."""
    import mlflow

    inherited = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if inherited is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = inherited


def mark_experiment_kind(experiment) -> None:
    """Tags `experiment` (an mlflow Experiment) as a machine-learning one, unless it already
    says what it is: also the experiments of stores made before the tag was set."""
    if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
        from mlflow import MlflowClient

        MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def named_runs(experiment: str, run_name: str, condition: str = "") -> list:
    """The runs named `run_name` in `experiment` (newest first), that also meet `condition`."""
    import mlflow

    where = f"tags.mlflow.runName = '{run_name}'" + (f" and {condition}" if condition else "")
    return mlflow.search_runs(experiment_names=[experiment], output_format="list", filter_string=where)


def supersede(experiment: str, run_name: str, run_id: str) -> list[str]:
    """Marks the ended runs named `run_name`, other than `run_id` and not yet marked, as
    superseded by `run_id` (kept, with their metrics and artifacts); their ids."""
    from mlflow import MlflowClient

    client = MlflowClient()
    older = [run.info.run_id for run in named_runs(experiment, run_name)
             if run.info.run_id != run_id and run.info.status in ENDED and SUPERSEDED_TAG not in run.data.tags]
    for old in older:
        client.set_tag(old, SUPERSEDED_TAG, run_id)
    return older


class RunLogger:
    """A thin wrapper so training code calls one object and never imports mlflow itself.

    A run is one (variant, seed) (or `base`, or a generation) by its name. Started without a
    `run_id`, it continues the newest unfinished run of that name (a crashed stage resumed),
    or else starts a new one, which supersedes the older ended runs of that name: they keep
    their history and get the tag `reverie.superseded` = the new run's id, and `reverie.compare`
    leaves them out. Started with a `run_id` (evaluate logging into its tune run), it opens that
    run and marks nothing."""

    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict, run_id: str | None = None):
        import mlflow

        self.mlflow = mlflow
        use_tracking_uri(uri)
        mark_experiment_kind(mlflow.set_experiment(experiment))
        new = False
        if run_id is None:
            existing = [run for run in named_runs(experiment, run_name, "attributes.status != 'FINISHED'")
                        if SUPERSEDED_TAG not in run.data.tags]
            run_id = existing[0].info.run_id if existing else None  # a resumed run continues its MLflow run
            new = run_id is None
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=tags)
        self.run_id = self.run.info.run_id
        if new:
            supersede(experiment, run_name, self.run_id)

    def log_params(self, params: dict) -> None:
        flat = {k: (json.dumps(v) if isinstance(v, (list, tuple)) else v) for k, v in flatten(params).items()}
        current = self.mlflow.get_run(self.run_id).data.params
        self.mlflow.log_params({k: v for k, v in flat.items() if k not in current})

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        clean = {k: float(v) for k, v in flatten(metrics).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
        if clean:
            self.mlflow.log_metrics(clean, step=step)

    def log_dataset(self, path: str | Path, name: str, context: str = "training") -> None:
        import pandas as pd
        from mlflow.data.pandas_dataset import from_pandas

        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        frame = pd.DataFrame.from_records(rows)[["id", "image", "question", "correct_answer", "question_type"]]
        digest = dvc_hash(Path(path).parent)
        dataset = from_pandas(frame, source=local_source(path), name=name, digest=digest[:36])
        self.mlflow.log_input(dataset, context=context, tags={"dvc_md5": digest})
        self.mlflow.set_tag("dataset.dvc_md5", digest)

    def log_artifacts(self, path: str | Path, artifact_path: str) -> None:
        self.mlflow.log_artifacts(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: dict) -> None:
        self.mlflow.set_tags(tags)

    def end(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)


def local_source(path: str | Path):
    """The MLflow dataset source of a local file. MLflow registers its local-file source class
    twice (for the URI schemes '' and 'file'), so resolving a plain path through its registry
    warns that the path "can be interpreted in multiple ways"; both are the same class of
    source, so this takes the one the registry would (the last registered) without asking."""
    from mlflow.data.dataset_source_registry import get_registered_sources

    local = [source for source in get_registered_sources() if source._can_resolve(str(path))]
    return local[-1]._resolve(str(path))


def ui_address(params) -> str:
    """Where the MLflow UI of the project's store is: the tracking server itself when the store
    is one, otherwise the one `make serve` and `make mlflow-ui` start (orchestration.host and
    orchestration.mlflow_port)."""
    uri = tracking_uri(params.project.mlflow_tracking_uri)
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return f"http://{params.orchestration.host}:{params.orchestration.mlflow_port}"


def run_links(params, run_ids: list[str]) -> dict[str, str | None]:
    """The MLflow UI page of each run, in the experiment the run is in (None for a run the
    store does not have, e.g. after the store was changed), in the UI's machine-learning view."""
    import mlflow
    from mlflow.exceptions import MlflowException

    use_tracking_uri(tracking_uri(params.project.mlflow_tracking_uri))
    ui = ui_address(params)
    links: dict[str, str | None] = {}
    for run_id in run_ids:
        try:
            experiment = mlflow.get_run(run_id).info.experiment_id
        except MlflowException:
            links[run_id] = None
            continue
        links[run_id] = f"{ui}/#/experiments/{experiment}/runs/{run_id}?{UI_WORKFLOW}"
    return links


def experiment_link(ui: str, experiment: str, timeout: float = 2.0) -> str | None:
    """The experiment in the MLflow UI at `ui` (a running server, asked over its REST API),
    opened on its runs table; None when the server does not answer or has no such experiment yet.
    Seen in a browser: MLflow 3.17's UI opens an experiment on the GenAI overview ("Traces 0")
    whatever its kind tag says, unless the address asks for the machine-learning view."""
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode({"experiment_name": experiment})
    try:
        with urllib.request.urlopen(f"{ui}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=timeout) as r:
            found = json.loads(r.read())["experiment"]["experiment_id"]
    except (OSError, ValueError, KeyError):
        return None
    return f"{ui}/#/experiments/{found}?{UI_WORKFLOW}"


def prefect_tags() -> dict:
    """Ties an MLflow run to the Prefect flow run that started the stage, when there is one."""
    flow_run = os.environ.get("REVERIE_PREFECT_FLOW_RUN_ID")
    return {"prefect.flow_run_id": flow_run} if flow_run else {}


def project_run(params, run_name: str, tags: dict, run_id: str | None = None) -> RunLogger:
    """A run in the project's store and experiment (from params, or MLFLOW_TRACKING_URI), tagged
    with the git commit, the installed versions of the key packages (`env.*`) and the Prefect
    flow run: every stage logs through this."""
    from .environment import environment

    versions = {f"env.{name}": version for name, version in environment().items()}
    return RunLogger(tracking_uri(params.project.mlflow_tracking_uri), params.project.mlflow_experiment, run_name,
                     tags | {"git_commit": git_commit()} | versions | prefect_tags(), run_id)
