"""Serves the pipeline as a deployment with the cron schedule from params.yaml.

Needs a running Prefect server (`prefect server start`, PREFECT_API_URL pointing at it):
the temporary server of a plain run does not fire schedules."""
from __future__ import annotations

import argparse

from flows.pipeline import pipeline
from reverie.settings import load_params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", default="reverie-scheduled")
    p.add_argument("--cron", default=None, help="override orchestration.cron")
    args = p.parse_args()
    settings = load_params().orchestration
    pipeline.serve(name=args.name, cron=args.cron or settings.cron, tags=["reverie"],
                   description="REVERIE pipeline: dvc stages generate -> report, on a schedule")


if __name__ == "__main__":
    main()
