"""The Prefect flow: the DVC DAG stage by stage, a task per stage, DVC deciding what is
up to date. `python -m flows.pipeline [--variants ..] [--seeds ..] [-S key=value ..]`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from reverie.orchestration import (apply_overrides, planned_stages, remote_commands, repro_command, run_streaming,
                                   stage_environment)


class StageFailed(RuntimeError):
    pass


@task(name="dvc-repro", task_run_name="{stage}", retries=1, retry_delay_seconds=10)
def reproduce(stage: str) -> str:
    """Asks DVC to reproduce one stage; DVC skips it when nothing it depends on changed."""
    logger = get_run_logger()
    env = stage_environment({"REVERIE_PREFECT_FLOW_RUN_ID": str(flow_run.id or "")})
    code, tail = run_streaming(repro_command(stage), logger.info, env=env)
    if code != 0:
        raise StageFailed(f"stage '{stage}' failed (exit {code}):\n" + "\n".join(tail[-15:]))
    skipped = any("didn't change, skipping" in line for line in tail)
    return "skipped" if skipped else "ran"


@task(name="dvc-push", retries=2, retry_delay_seconds=10)
def push(remote: str) -> str:
    """Sends the pipeline's outputs to the team's DVC remote."""
    logger = get_run_logger()
    for cmd in remote_commands(remote):
        code, tail = run_streaming(cmd, logger.info, env=stage_environment())
        if code != 0:
            raise StageFailed(f"dvc {cmd[3]} failed (exit {code}):\n" + "\n".join(tail[-15:]))
    return "pushed"


def publish_artifacts(report_dir: Path = Path("reports")) -> None:
    ablation = report_dir / "ablation.json"
    if not ablation.exists():
        return
    result = json.loads(ablation.read_text())
    rows = []
    for variant, row in result["variants"].items():
        entry = {"variant": variant, "seeds": len(row["seeds"])}
        for key in result["columns"]:
            if key in row:
                entry[key] = f"{row[key]['mean']:.3f} ± {row[key]['std']:.3f}"
        rows.append(entry)
    create_table_artifact(key="ablation-table", table=rows, description="REVERIE ablation: mean ± std over seeds")
    links = ["# Runs", "", f"Report: `{(report_dir / 'report.md').resolve()}`", ""]
    from reverie.settings import load_params
    from reverie.tracking import tracking_uri

    params = load_params()
    links.append(f"MLflow store: `{tracking_uri(params.project.mlflow_tracking_uri)}` "
                 "(open with `make mlflow-ui`, then http://127.0.0.1:5000)")
    links.append("")
    for path in sorted(Path("models").glob("*-s*/mlflow_run.json")):
        info = json.loads(path.read_text())
        links.append(f"- `{info['variant']}` seed {info['seed']}: MLflow run `{info['run_id']}` "
                     f"(http://127.0.0.1:5000/#/experiments/0/runs/{info['run_id']} once the UI runs)")
    create_markdown_artifact(key="ablation-runs", markdown="\n".join(links), description="MLflow runs and report")


@flow(name="reverie-pipeline", log_prints=True)
def pipeline(variants: list[str] | None = None, seeds: list[int] | None = None,
             overrides: dict | None = None) -> dict:
    """Runs generate -> validate -> base -> tune@v-s -> evaluate@v-s -> report through DVC."""
    changes = dict(overrides or {})
    if variants is not None:
        changes["tune.variants"] = list(variants)
    if seeds is not None:
        changes["tune.seeds"] = list(seeds)
    apply_overrides(changes)
    from reverie.settings import load_params

    params = load_params()
    run_stage = reproduce.with_options(retries=params.orchestration.stage_retries)
    outcome = {}
    for stage in planned_stages():
        outcome[stage] = run_stage(stage)
    if params.project.dvc_remote:
        outcome["push"] = push(params.project.dvc_remote)
    publish_artifacts()
    return outcome


def _parse_overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-S expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--variants", nargs="+")
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("-S", "--set-param", action="append", default=[], help="params override, key=value")
    args = p.parse_args()
    outcome = pipeline(args.variants, args.seeds, _parse_overrides(args.set_param))
    print("\n".join(f"  {stage}: {state}" for stage, state in outcome.items()))
    report = Path("reports/report.md")
    if report.exists():
        print("\n" + report.read_text())
    from reverie.report import void_reason

    reason = void_reason(Path("reports"))
    if reason:
        raise SystemExit(f"the comparison is VOID: {reason}")


if __name__ == "__main__":
    main()
