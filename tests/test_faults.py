"""Crashes and bad input: nothing half-written is trusted, nothing is lost, a killed run resumes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from reverie.io import read_jsonl
from reverie.settings import Params
from reverie.validate import validate_records
from tests.conftest import tiny_params_dict


def stage_env():
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def write_params(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_sigkill_during_generate_then_rerun_gives_the_same_data(tmp_path):
    params = tiny_params_dict()
    params["world"].update(train_images=2500, eval_images=200)
    write_params(tmp_path / "params.yaml", params)
    cmd = [sys.executable, "-m", "stages.generate", "--params", str(tmp_path / "params.yaml")]
    root = Path(__file__).resolve().parents[1]

    def run(out: str, kill_after: float | None = None):
        proc = subprocess.Popen(cmd + ["--out", str(tmp_path / out), "--metrics", str(tmp_path / f"{out}.json")],
                                cwd=root, env=stage_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill_after is None:
            assert proc.wait() == 0
            return
        deadline = time.time() + 60
        while not (tmp_path / out / "images" / "train").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    run("killed", kill_after=0.3)
    assert not (tmp_path / "killed" / "records" / "filtered.jsonl").exists()  # nothing half-written to trust
    run("killed")  # the rerun over the remains
    run("clean")
    killed = read_jsonl(tmp_path / "killed" / "records" / "raw.jsonl")
    clean = read_jsonl(tmp_path / "clean" / "records" / "raw.jsonl")
    assert killed == clean
    assert len({r["id"] for r in killed}) == len(killed)  # no duplicate
    assert not list((tmp_path / "killed").rglob("*.tmp"))


def test_a_truncated_jsonl_line_is_quarantined_with_its_reason(tmp_path):
    from reverie.generate import generate_dataset

    params = Params.model_validate(tiny_params_dict())
    generate_dataset(params, tmp_path / "data", progress=False)
    filtered = tmp_path / "data" / "records" / "filtered.jsonl"
    lines = filtered.read_text().splitlines()
    filtered.write_text("\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]) + "\n")
    outcome = validate_records(params.validate_, tmp_path / "data", tmp_path / "split", tmp_path / "reports")
    quarantine = read_jsonl(tmp_path / "split" / "quarantine.jsonl")
    assert outcome.metrics["quarantined"] == 1 and outcome.metrics["records_in"] == len(lines)
    assert quarantine[0]["line"] == len(lines) and "unreadable JSON line" in quarantine[0]["reason"]
    kept = read_jsonl(tmp_path / "split" / "train.jsonl") + read_jsonl(tmp_path / "split" / "eval.jsonl")
    assert len(kept) == len(lines) - 1


def test_sigkill_during_tune_then_rerun_resumes_from_the_checkpoint(repro_project, tmp_path):
    project, _ = repro_project
    work = tmp_path / "project"
    shutil.copytree(project, work, symlinks=True, ignore=shutil.ignore_patterns(".git", "mlflow.db", "mlruns", "mlartifacts"))
    params = yaml.safe_load((work / "params.yaml").read_text())
    # long enough that the kill, half a second after the first checkpoint, comes well before the end
    # (about 300 steps; the rerun trains what is left, not 2,000 steps as at 40 epochs)
    params["tune"].update(epochs=6, checkpoint_every=5, quick_eval_images=2)
    write_params(work / "params.yaml", params)
    cmd = [sys.executable, "-m", "stages.tune", "--variant", "response", "--seed", "7",
           "--out", "models/killed", "--metrics", "metrics/killed.json", "--losses", "plots/killed.csv"]
    proc = subprocess.Popen(cmd, cwd=work, env=stage_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = work / ".reverie" / "checkpoints"
    deadline = time.time() + 120
    while not list(checkpoints.glob("response-s7-*/checkpoint/progress.json")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(checkpoints.glob("response-s7-*/checkpoint/progress.json")), "no checkpoint before the kill"
    assert not (work / "models" / "killed").exists()
    again = subprocess.run(cmd, cwd=work, env=stage_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from step" in again.stdout + again.stderr
    metrics = json.loads((work / "metrics" / "killed.json").read_text())
    assert metrics["steps"] == metrics["total_steps"]
    assert not list(checkpoints.glob("response-s7-*"))  # removed once the model is saved
