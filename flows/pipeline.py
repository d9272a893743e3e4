"""The Prefect flow: the DVC DAG stage by stage, DVC deciding what is up to date.
`python -m flows.pipeline [--variants ..] [--seeds ..] [--profile configs/X.yaml] [-S key=value ..]`.

The flow asks DVC once which stages are stale and makes a task that runs `dvc repro` only for
those; the others appear as tasks in the state Skipped. One flow run at a time drives a
workspace (`reverie.workspace`): another waits for it."""
from __future__ import annotations

import argparse
import json
import os
from contextlib import contextmanager
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Completed

from reverie.orchestration import (StageQueue, apply_overrides, available_cpus, device_environment, device_needs, plan,
                                   remote_commands, reproduce, run_streaming, stage_environment)
from reverie.stage import StageFailed, StageVerdict, verdict_in
from reverie.workspace import LABEL_ENV, claim, holder_environment


def retry_unless_verdict(task, task_run, state) -> bool:
    """Prefect's retry condition: a crashed or killed stage is run again, one that refused its
    own result (a gate such as the base's perception check) is not: it would refuse it again."""
    return not isinstance(state.data, StageVerdict)


@task(name="dvc-repro", task_run_name="{stage}", retries=1, retry_delay_seconds=10,
      retry_condition_fn=retry_unless_verdict)
def reproduce_stage(stage: str, holder: dict, threads: int | None = None, devices: tuple[str, ...] = ()) -> str:
    """Asks DVC to reproduce one stage; DVC still skips it when nothing it depends on changed.
    `threads`: OMP_NUM_THREADS, when it shares the cores; `devices`: the only ones it sees."""
    logger = get_run_logger()
    if devices:
        logger.info(f"stage '{stage}' placed on device(s) {','.join(devices)}")
    env = holder | ({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}) \
        | device_environment(devices)
    code, tail = reproduce(stage, logger.info, env=stage_environment(env))
    if code != 0:
        failure = StageVerdict if verdict_in(tail) else StageFailed
        raise failure(f"stage '{stage}' failed (exit {code}):\n" + "\n".join(tail[-15:]))
    skipped = any("didn't change, skipping" in line for line in tail)
    return "skipped" if skipped else "ran"


@task(name="dvc-up-to-date", task_run_name="{stage}")
def up_to_date(stage: str):
    """A stage `dvc status` found up to date: nothing runs, the UI still lists it."""
    return Completed(name="Skipped", message="up to date: dvc status found no change in it or upstream")


@task(name="dvc-push", retries=2, retry_delay_seconds=10)
def push(remote: str) -> str:
    """Sends the pipeline's outputs to the team's DVC remote."""
    logger = get_run_logger()
    for cmd in remote_commands(remote):
        code, tail = run_streaming(cmd, logger.info, env=stage_environment())
        if code != 0:
            raise StageFailed(f"dvc {cmd[3]} failed (exit {code}):\n" + "\n".join(tail[-15:]))
    return "pushed"


def publish_artifacts(params, report_dir: Path = Path("reports")) -> None:
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
    from reverie.tracking import run_links, tracking_uri, ui_address

    runs = [json.loads(path.read_text()) for path in sorted(Path("models").glob("*-s*/mlflow_run.json"))]
    links = run_links(params, [info["run_id"] for info in runs])
    lines = ["# Runs", "", f"Report: `{(report_dir / 'report.md').resolve()}`", "",
             f"MLflow store: `{tracking_uri(params.project.mlflow_tracking_uri)}`, UI at {ui_address(params)} "
             "(`make serve` or `make mlflow-ui` starts it)", ""]
    for info in runs:
        link = links[info["run_id"]]
        where = f"[open in MLflow]({link})" if link else "not in this MLflow store"
        lines.append(f"- `{info['variant']}` seed {info['seed']}: MLflow run `{info['run_id']}`, {where}")
    create_markdown_artifact(key="ablation-runs", markdown="\n".join(lines), description="MLflow runs and report")


def this_run() -> tuple[str, str | None]:
    """How this flow run is named to others who find the workspace busy, and its UI page."""
    from prefect.runtime import deployment
    from prefect.settings import PREFECT_UI_URL

    who = f"Prefect flow run '{flow_run.name}'"
    if deployment.id:
        who += f" of deployment '{flow_run.flow_name}/{deployment.name}'"
    ui = PREFECT_UI_URL.value()
    return who, (f"{ui}/runs/flow-run/{flow_run.id}" if ui and flow_run.id else None)


@flow(name="reverie-pipeline", log_prints=True)
def pipeline(variants: list[str] | None = None, seeds: list[int] | None = None,
             overrides: dict | None = None) -> dict:
    """Runs generate -> validate -> base -> tune@v-s -> evaluate@v-s -> report through DVC."""
    logger = get_run_logger()
    changes = dict(overrides or {})
    if variants is not None:
        changes["tune.variants"] = list(variants)
    if seeds is not None:
        changes["tune.seeds"] = list(seeds)
    who, url = this_run()
    with claim(who, url, on_wait=logger.info) as token:
        apply_overrides(changes)  # params.yaml is the workspace's too: written only while holding it
        from reverie.settings import load_params

        params = load_params()
        holder = holder_environment(token, who, url) | {"REVERIE_PREFECT_FLOW_RUN_ID": str(flow_run.id or "")}
        # started before DVC's status, so that its imports overlap with it and the first stages
        with stage_interpreter(params, holder, logger.info) as warm:
            steps = plan(label=holder[LABEL_ENV], on_wait=logger.info)
            logger.info(f"dvc status: {len(steps.stale)} of {len(steps.order)} stage(s) to reproduce")
            run_stage = reproduce_stage.with_options(retries=params.orchestration.stage_retries)
            for stage in steps.skipped():
                up_to_date(stage)
            ran = run_stale_stages(steps, run_stage, holder | warm, params)
        outcome = {stage: ran.get(stage, "skipped") for stage in steps.order}
        if params.project.dvc_remote:
            outcome["push"] = push(params.project.dvc_remote)
        if "ran" in outcome.values():
            publish_artifacts(params)
        else:
            logger.info("nothing ran: the artifacts published by the last run that changed something stand")
    return outcome


@contextmanager
def stage_interpreter(params, holder: dict, say):
    """With `orchestration.warm_interpreter`, a warm interpreter (reverie.warm) for this run's
    stage processes: the variables that point them at it. A stage that starts before it has
    imported everything (generate, validate) runs in its own process."""
    if not params.orchestration.warm_interpreter:
        yield {}
        return
    from reverie.warm import warm_server

    log = Path(".reverie/warm.log")
    with warm_server(stage_environment(holder), log) as env:
        if env:
            say(f"stage processes fork from a warm interpreter that imported torch, transformers, peft and "
                f"mlflow once (its log: {log})")
        yield env


PLACEMENT_LOG = Path(".reverie/placement.jsonl")


def run_stale_stages(steps, run_stage, holder: dict, params) -> dict:
    """Runs the stale stages, up to `orchestration.parallel_stages` at once in DVC's order, each on
    its own devices of `orchestration.devices` (reverie.orchestration.StageQueue); every start and
    end, with the devices, goes to .reverie/placement.jsonl. After a failure nothing new starts;
    the stages running finish (and free their devices), then the failure is raised."""
    import time

    from prefect.futures import as_completed

    parallel = params.orchestration.parallel_stages
    queue = StageQueue(steps, parallel, available_cpus(), params.orchestration.devices,
                       device_needs(params, list(steps.order)))
    PLACEMENT_LOG.parent.mkdir(parents=True, exist_ok=True)

    def record(event: str, stage: str, devices) -> None:
        with PLACEMENT_LOG.open("a") as log:
            log.write(json.dumps({"t": time.time(), "event": event, "stage": stage, "devices": list(devices),
                                  "flow_run": str(flow_run.id or "")}) + "\n")

    running, outcome, failure = {}, {}, None
    while not queue.done():
        if failure is None:
            for stage, threads in queue.start():
                record("start", stage, queue.held[stage])
                running[stage] = run_stage.submit(stage, holder, threads if parallel > 1 else None, queue.held[stage])
        if not running:
            break
        future = next(iter(as_completed(list(running.values()))))
        stage = next(name for name, f in running.items() if f is future)
        del running[stage]
        record("end", stage, queue.held.get(stage, ()))
        queue.finish(stage)
        try:
            outcome[stage] = future.result()
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
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


@contextmanager
def served_prefect():
    """With no PREFECT_API_URL, the server of this project's running `make serve` when there is
    one: the run shows in its UI, and it saves starting a temporary server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from reverie.services import served_api

    api = None if PREFECT_API_URL.value() else served_api()
    if api is None:
        yield
        return
    print(f"using the Prefect server of `make serve`: {api}")
    os.environ["PREFECT_API_URL"] = api  # and for the processes the stages start (generate's fan-out)
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--variants", nargs="+")
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("-S", "--set-param", action="append", default=[], help="params override, key=value")
    p.add_argument("--profile", help="a params profile (configs/llava-1.5-7b.yaml): its overrides, then -S's")
    p.add_argument("--plan", action="store_true",
                   help="print, without training or writing params.yaml, each stage's samples, steps, tokens and "
                        "estimated hours, and the placement's node time and idle share; the last line is JSON")
    args = p.parse_args()
    from reverie.orchestration import profile_overrides

    overrides = (profile_overrides(args.profile) if args.profile else {}) | _parse_overrides(args.set_param)
    if args.plan:
        from reverie.plan import describe, make_plan
        from reverie.settings import load_params

        overrides |= ({"tune.variants": args.variants} if args.variants else {}) | \
            ({"tune.seeds": args.seeds} if args.seeds else {})
        print(describe(make_plan(load_params("params.yaml", overrides), ".", overrides)))
        return
    with served_prefect():
        outcome = pipeline(args.variants, args.seeds, overrides)
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
