"""What every stage entry point shares: environment, params, and a clean exit on bad input."""
from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from .environment import quiet_environment
from .io import DataFileError
from .settings import ParamsError, ReadRecorder, load_params
from .warm import delegate
from .workspace import WorkspaceBusy, refuse_if_held


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    return p


@contextmanager
def stage(name: str):
    """Runs a stage body; a params error, an unreadable data file or a failed gate ends the
    process with its message (which names the key, or the file and line), not a traceback. A
    stage started while a flow run holds the workspace, by anyone but that flow run (a hand-run
    `dvc repro`), stops before any work, saying which run holds it."""
    quiet_environment()
    delegate()  # into a child of the flow's warm interpreter, when it started one (reverie.warm)
    try:
        refuse_if_held()
        yield
        # The process ends here, and its objects with it. Interpreter shutdown otherwise walks
        # the millions of objects torch, transformers and mlflow created in cyclic-GC passes:
        # seconds of every stage process, in 25 processes of the default pipeline
        # (docs/results.md). atexit handlers (MLflow's, the params read recorder) still run;
        # memory goes back to the OS.
        gc.freeze()
    except WorkspaceBusy as exc:
        print(f"[{name}] {exc}", file=sys.stderr)
        sys.exit(3)
    except ParamsError as exc:
        print(f"[{name}] {exc}", file=sys.stderr)
        sys.exit(2)
    except (StageFailed, DataFileError) as exc:
        print(f"[{name}]{VERDICT_MARK}{exc}", file=sys.stderr)
        sys.exit(1)


class StageFailed(RuntimeError):
    """A stage that ran but whose result must not be trusted downstream."""


class StageVerdict(StageFailed):
    """A stage that ran to its end and refused its own result (a gate, a bad data file): run
    again on the same inputs it gives the same verdict, so the flow does not retry it."""


VERDICT_MARK = " FAILED: "  # "[base] FAILED: heldout_seeing_accuracy ...": what a stage prints for a verdict


def verdict_in(lines: list[str]) -> str | None:
    """The verdict line a stage printed among `lines` (DVC's output of it), or None: it crashed,
    was killed or timed out, which a retry may get past."""
    return next((line.strip() for line in lines if re.search(r"\[[\w@.\-]+\]" + re.escape(VERDICT_MARK), line)), None)


def compute(threads: int, launch=None, module: str | None = None) -> dict:
    """A torch stage's compute, as its params declare it: under its launcher (this process becomes
    the launcher of the same command, reverie/launch.py), with its threads whatever the route (the
    flow's OMP_NUM_THREADS, a plain `dvc repro`'s every core) gave the process, on the devices the
    flow placed it on. Returns what it used, for the stage's metrics."""
    from .launch import DEVICES_ENV, relaunch

    if launch is not None:
        relaunch(launch, module)
    import torch

    torch.set_num_threads(threads)
    return {"threads": torch.get_num_threads(), "devices": os.environ.get(DEVICES_ENV, "")}


RECORD_READS_ENV = "REVERIE_RECORD_READS"


def params_from(args):
    """The stage's params. With REVERIE_RECORD_READS set to a folder (the declared-params test
    sets it), every setting the stage reads is recorded, and written at exit to
    `<folder>/<DVC stage name>.json` for the test to hold against dvc.yaml's `params:`."""
    params = load_params(args.params)
    folder = os.environ.get(RECORD_READS_ENV)
    if not folder:
        return params
    recorder = ReadRecorder(params)
    name = os.environ.get("DVC_STAGE") or Path(sys.argv[0]).stem

    def write() -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.json").write_text(json.dumps(sorted(recorder.reads), indent=1))

    atexit.register(write)
    return recorder
