"""What the base step and the tuning of a variant share: which process of a distributed run is
the main one, its MLflow logger (a silent one in the others) and the training loop's settings."""
from __future__ import annotations

import os

from .tracking import RunLogger, project_run


def is_main_process() -> bool:
    """Under torchrun / accelerate launch every process runs the stage; one of them logs and
    saves. RANK is set by both launchers (absent: a single process)."""
    return int(os.environ.get("RANK", "0")) == 0


class SilentLogger:
    """The MLflow logger of the processes that are not the main one."""

    run_id = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def run_logger(params, name: str, tags: dict, run_id: str | None = None) -> RunLogger:
    if not is_main_process():
        return SilentLogger()
    return project_run(params, name, tags, run_id)


def loop_settings(section) -> dict:
    """The training loop's keys of a `base` or `tune` section (settings.LoopSettings) for TrainConfig."""
    return {"micro_batch_size": section.micro_batch_size, "precision": section.precision,
            "gradient_checkpointing": section.gradient_checkpointing, "max_length": section.max_length}
