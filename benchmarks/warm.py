"""What the flow's warm interpreter (reverie/warm.py) saves per stage process: the same command
timed in its own process and forked from a warm interpreter, alternating, `--repeats` times each.

Two commands: a start-up probe (a stage entry point that imports what the torch stages import,
then ends) which needs nothing, and, in a project where `make run` has finished, a real
`evaluate` of one student, whose predictions must come out byte-identical both ways. MLflow
writes go to a copy of the project's store (evaluate logs into the student's tune run), not to
the store itself.

`python -m benchmarks.warm [--project .] [--repeats 3] [--threads 1]`; the last line is JSON."""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import timed_command
from reverie.orchestration import stage_environment
from reverie.warm import warm_server

PROBE = '''"""Start-up of a torch stage: its imports and MLflow's store, nothing else."""
from reverie.stage import stage

with stage("probe"):
    import reverie.tuning, reverie.evaluation.run  # noqa: E401,F401
    from transformers import LlavaForConditionalGeneration  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
'''


def project_store(project: Path) -> Path | None:
    """The project's MLflow SQLite file (params' project.mlflow_tracking_uri), or None."""
    from reverie.settings import load_params
    from reverie.tracking import tracking_uri

    uri = tracking_uri(load_params(project / "params.yaml").project.mlflow_tracking_uri, project)
    path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    return path if path is not None and path.exists() else None


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    """A warm command must be served: a refusal would time the command's own process twice."""
    served = ("[warm]", "was not served by the warm interpreter") if env.get("REVERIE_WARM_SOCKET") else None
    return timed_command(cmd, cwd, env, refuse=served)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--project", default=".")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each command (the flow's: 1)")
    p.add_argument("--student", default="response-s0", help="models/<student> to evaluate, when it exists")
    args = p.parse_args()
    project = Path(args.project).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="warm-bench-"))
    (scratch / "warm_probe.py").write_text(PROBE)
    store = project_store(project)
    if store is not None:
        shutil.copy(store, scratch / "mlflow.db")
    env = stage_environment({"MLFLOW_TRACKING_URI": f"sqlite:///{scratch / 'mlflow.db'}",
                             "PYTHONPATH": os.pathsep.join(filter(None, [str(scratch), os.environ.get("PYTHONPATH")]))})
    env.pop("REVERIE_WARM_SOCKET", None)
    commands = {"startup": [sys.executable, "-m", "warm_probe"]}
    student = project / "models" / args.student
    if store is not None and (student / "mlflow_run.json").exists():
        variant, seed = args.student.rsplit("-s", 1)
        commands["evaluate"] = [sys.executable, "-m", "stages.evaluate", "--variant", variant, "--seed", seed,
                                "--model", str(student), "--metrics", str(scratch / "metrics.json"),
                                "--predictions"]
    else:
        print(f"no {student} with its MLflow run in a SQLite store here: timing the start-up probe only "
              "(run `make run` first for a real evaluate)")
    threads = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    cwd = os.getcwd()
    os.chdir(project)
    try:
        with warm_server(env, scratch / "warm.log", wait_ready=True) as warm:
            times: dict[str, dict[str, list[float]]] = {name: {"own": [], "warm": []} for name in commands}
            for name, cmd in commands.items():
                timed(cmd + ([str(scratch / "warmup.jsonl")] if name == "evaluate" else []), project,
                      env | threads | warm)  # untimed: the first child pays for page faults
                for i in range(args.repeats):
                    for how, extra in (("own", {}), ("warm", warm)):
                        out = [str(scratch / f"{how}-{i}.jsonl")] if name == "evaluate" else []
                        times[name][how].append(timed(cmd + out, project, env | threads | extra))
                        print(f"{name} {how} {times[name][how][-1]:.2f} s", flush=True)
    finally:
        os.chdir(cwd)
    result = {"threads": args.threads, "repeats": args.repeats}
    for name, both in times.items():
        own, warm_s = statistics.median(both["own"]), statistics.median(both["warm"])
        result[name] = {"own_process_s": round(own, 2), "warm_child_s": round(warm_s, 2),
                        "saved_s": round(own - warm_s, 2), "speedup": round(own / warm_s, 2)}
    if "evaluate" in commands:
        same = all(filecmp.cmp(scratch / f"own-{i}.jsonl", scratch / f"warm-{i}.jsonl", shallow=False)
                   for i in range(args.repeats))
        result["evaluate"]["same_predictions"] = same
        if not same:
            raise SystemExit(f"the predictions differ between own process and warm child: {scratch}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
