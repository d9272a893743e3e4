"""Serves the pipeline as a deployment: the cron from params.yaml, one run at a time.

`make serve` starts it together with a Prefect server and an MLflow server (reverie/services.py).
On its own it needs a running Prefect server named by PREFECT_API_URL, and refuses at once
without one: the temporary server a plain run starts never fires a schedule.

A run triggered while another is in progress (a manual run, a UI "Run", a schedule shorter than
the pipeline) waits in the state AwaitingConcurrencySlot and starts when the first one ends: the
runs share one DVC workspace."""
from __future__ import annotations

import argparse

NO_SERVER = """flows.serve needs a running Prefect server, and PREFECT_API_URL names none (the temporary
server of a plain run would never fire the schedule). Either
  make serve      # a Prefect server, an MLflow server and this deployment, in one command
or start a server yourself and point at it:
  PREFECT_HOME=$PWD/.reverie/prefect .venv/bin/prefect server start --port 4200
  export PREFECT_API_URL=http://127.0.0.1:4200/api"""


def require_server() -> str:
    """The API URL of a Prefect server that answers, or SystemExit saying how to start one."""
    from prefect.settings import PREFECT_API_URL

    from reverie.services import answers

    url = PREFECT_API_URL.value()
    if not url:
        raise SystemExit(NO_SERVER)
    if not answers(f"{url.rstrip('/')}/health"):
        raise SystemExit(f"no Prefect server answers at PREFECT_API_URL={url}.\n\n" + NO_SERVER)
    return url


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="reverie-scheduled")
    p.add_argument("--cron", default=None, help="override orchestration.cron")
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args()
    require_server()
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from flows.pipeline import pipeline
    from reverie.settings import load_params

    settings = load_params(args.params).orchestration
    # one run at a time: the deployment's runs share this workspace (dvc.lock, outputs, params);
    # ENQUEUE keeps an extra run waiting for the slot rather than cancelling it
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    # stopping pauses the schedule (pause_on_shutdown); serving again resumes it
    pipeline.serve(name=args.name, cron=args.cron or settings.cron, tags=["reverie"], global_limit=one_at_a_time,
                   paused=False, pause_on_shutdown=True,
                   description="REVERIE pipeline: dvc stages generate -> report, on a schedule, one run at a time")


if __name__ == "__main__":
    main()
