"""Results do not depend on the route: a stage run by the Prefect flow (forked from its warm
interpreter, beside another stage, OMP_NUM_THREADS at its share of the cores) writes the same
bytes as the same stage run by a plain `dvc repro` (its own process, every core). A CPU run's
weights depend on torch's thread count, so each stage uses the count its params declare."""
import hashlib
import json
from pathlib import Path

import yaml

# the MLflow run a model was logged to differs by route (a run id), nothing else may
ROUTE_RECORDS = {"mlflow_run.json"}


def digests(path: Path) -> dict[str, str]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(f.relative_to(path)) if path.is_dir() else f.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for f in files if f.name not in ROUTE_RECORDS}


def test_tune_and_evaluate_write_the_same_bytes_through_the_flow_and_dvc_repro(repro_project, flow_project,
                                                                              flow_first_run):
    repro, _ = repro_project
    flow = flow_project
    compared = {}
    for out in ("models/base", "models/response-s0", "predictions/response-s0.jsonl"):
        by_repro, by_flow = digests(repro / out), digests(flow / out)
        assert by_repro, out
        assert by_repro == by_flow, (out, {k for k in by_repro.keys() | by_flow.keys() if by_repro.get(k) != by_flow.get(k)})
        compared[out] = hashlib.sha256(json.dumps(by_repro, sort_keys=True).encode()).hexdigest()[:16]
    threads = {}
    for route, root in (("dvc repro", repro), ("flow", flow)):
        threads[route] = {stage: json.loads((root / f"metrics/{stage}.json").read_text())["threads"]
                          for stage in ("base", "tune/response-s0", "eval/response-s0")}
    declared = yaml.safe_load((flow / "params.yaml").read_text())
    expected = {"base": declared["base"]["threads"], "tune/response-s0": declared["tune"]["threads"],
                "eval/response-s0": declared["evaluate"]["threads"]}
    assert threads["flow"] == threads["dvc repro"] == expected
    print(f"\nroute test: outputs {compared}; threads {threads}")
