"""The prepared GPU check (benchmarks/gpu_check.py): its CPU dry run goes through every step at
the tiny shape (gpu_step, a `dvc repro` of one tiny variant in bf16, batched answers against
batch size 1), and a failing or out-of-budget step still ends in one JSON line with ok false."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.gpu_check import STEPS, Step, StepFailed, run_steps

ROOT = Path(__file__).resolve().parents[1]


def check(*args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", GX_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    lines = result.stdout.strip().splitlines()
    assert lines, f"no stdout:\n{result.stderr[-3000:]}"
    return result, json.loads(lines[-1])


def test_dry_run_passes_every_step_at_the_tiny_shape(tmp_path):
    started = time.perf_counter()
    result, out = check("--dry-run", "--keep", str(tmp_path / "project"))
    wall = time.perf_counter() - started
    assert result.returncode == 0, f"{json.dumps(out, indent=1)[-3000:]}\n{result.stderr[-3000:]}"
    assert len(result.stdout.strip().splitlines()) == 1  # one JSON line on stdout; progress on stderr
    assert out["check"] == "gpu_check" and out["ok"] is True and out["dry_run"] is True
    assert out["torch"] and out["device"] and 0 < out["total_seconds"] <= wall
    assert list(out["steps"]) == list(STEPS) and out["not_run"] == [] and out["failed_step"] is None
    assert all(s["ok"] and s["seconds"] >= 0 for s in out["steps"].values())

    install = out["steps"]["install"]
    assert "dry run" in install["action"] and "--index-url https://download.pytorch.org/whl/cu128" in install["command"]

    step = out["steps"]["gpu_step"]
    assert step["arch"] == "tiny" and step["precision"] == "bf16"
    assert step["tokens_per_s"] > 0 and step["step_seconds_median"] > 0 and step["peak_memory_bytes"] > 0
    assert "mfu" in step  # None on a CPU (no peak FLOPs)

    pipeline = out["steps"]["pipeline"]
    assert pipeline["precision"] == {"base": "bf16", "tune": "bf16", "evaluate": "bf16"}
    assert set(pipeline["stage_seconds"]) == {"generate", "validate", "base", "tune@response-0", "evaluate@response-0"}
    assert all(t > 0 for t in pipeline["stage_seconds"].values())
    evaluation = pipeline["evaluate"]
    assert evaluation["questions"] > 0 and 0 <= evaluation["pope.random.f1"] <= 1 and "mme.score" in evaluation
    assert pipeline["tune"]["tokens_per_s"] > 0 and pipeline["base"]["tokens_per_s"] > 0
    assert (tmp_path / "project" / "metrics" / "eval" / "response-s0.json").exists()

    same = out["steps"]["batch_equivalence"]
    assert same["questions"] > 0 and same["mismatches"] == 0 and same["batch_size"] > 1
    assert all(m["mismatches"] == 0 for m in same["models"].values())
    assert same["models"]["perturbed"]["distinct_answers"] > 1  # the comparison can see a difference
    # the stage's own batched answers (same device and dtype here) equal the batch-1 answers
    assert same["stage_predictions_compared"] == same["questions"] and same["stage_predictions_mismatches"] == 0

    assert out["steps"]["gpu_use"]["devices"] == {"base (train)": "cpu", "tune (train)": "cpu",
                                                  "evaluate (decode)": "cpu"}
    print(f"dry run: {wall:.1f} s wall, steps {({k: v['seconds'] for k, v in out['steps'].items()})}")


def test_a_failing_step_still_prints_one_json_line_with_ok_false():
    result, out = check("--dry-run", "--fail-step", "install", timeout=120)
    assert result.returncode == 1
    assert out["ok"] is False and out["failed_step"] == "install" and out["dry_run"] is True
    assert out["steps"]["install"]["ok"] is False and "--fail-step install" in out["steps"]["install"]["error"]
    assert out["not_run"] == list(STEPS[1:]) and out["total_seconds"] >= 0


def test_the_runner_stops_at_the_first_failure_and_keeps_its_figures():
    ran = []

    def good(ctx):
        ran.append("a")
        return {"figure": 1}

    def bad(ctx):
        ran.append("b")
        raise StepFailed("3 answers differ", {"mismatches": 3})

    def broken(ctx):
        raise ValueError("boom")

    def never(ctx):
        ran.append("c")

    ok, results = run_steps([Step("a", good, 0), Step("b", bad, 0), Step("c", never, 0)], 100, time.time(), {})
    assert not ok and ran == ["a", "b"] and list(results) == ["a", "b"]
    assert results["a"] == {"ok": True, "seconds": results["a"]["seconds"], "figure": 1}
    assert results["b"]["ok"] is False and results["b"]["mismatches"] == 3 and results["b"]["error"] == "3 answers differ"

    ok, results = run_steps([Step("x", broken, 0)], 100, time.time(), {})
    assert not ok and "ValueError: boom" in results["x"]["error"] and "Traceback" in results["x"]["error"]


@pytest.mark.parametrize("spent", [0, 95])
def test_the_budget_stops_before_a_step_that_cannot_finish(spent):
    ran = []
    steps = [Step("short", lambda ctx: ran.append("short"), 1), Step("long", lambda ctx: ran.append("long"), 50)]
    ok, results = run_steps(steps, 100, time.time() - spent, {})
    if spent == 0:
        assert ok and ran == ["short", "long"]
    else:
        assert not ok and ran == ["short"]
        assert results["long"]["skipped"] is True and results["long"]["ok"] is False
        assert "budget" in results["long"]["error"] and "not started" in results["long"]["error"]


class Args:
    dry_run, skip_install, find_links = False, False, None


def test_install_leaves_a_machine_without_a_gpu_as_it_is(monkeypatch):
    import torch

    from benchmarks import gpu_check

    ran = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "gpu_visible", lambda: None)
    monkeypatch.setattr(gpu_check, "run_command", lambda cmd, ctx, **kw: ran.append(cmd))
    with pytest.raises(StepFailed, match="no NVIDIA GPU is visible"):
        gpu_check.step_install({"args": Args()})
    assert ran == []


@pytest.mark.parametrize("first_import_fails", [False, True])
def test_install_runs_the_documented_pip_command_then_asks_for_a_fresh_interpreter(monkeypatch, first_import_fails):
    import torch

    from benchmarks import gpu_check

    ran, probes = [], []

    def probe():
        probes.append(1)
        if first_import_fails and len(probes) == 1:
            return subprocess.CompletedProcess([], 1, "", "ValueError: libcublas.so.*[0-9] not found")
        return subprocess.CompletedProcess([], 0, '{"torch": "2.13.0+cu128", "cuda": true}\n', "")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "gpu_visible", lambda: "GPU 0: NVIDIA H100")
    monkeypatch.setattr(gpu_check, "run_command", lambda cmd, ctx, **kw: ran.append(cmd))
    monkeypatch.setattr(gpu_check, "probe_torch", probe)
    ctx = {"args": Args()}
    figures = gpu_check.step_install(ctx)
    assert ctx["reexec"] is True and figures["torch_installed"] == "2.13.0+cu128"
    first = ran[0]
    assert first[:4] == [sys.executable, "-m", "pip", "install"]
    assert {"--no-deps", "--force-reinstall", "torch==2.13.0", "https://download.pytorch.org/whl/cu128"} <= set(first)
    if first_import_fails:  # the CUDA libraries --no-deps left out are added, nothing reinstalled
        assert len(ran) == 2 and "--no-deps" not in ran[1] and "--force-reinstall" not in ran[1]
        assert "torch==2.13.0" in ran[1] and "dependencies_command" in figures
    else:
        assert len(ran) == 1


def test_after_the_reexec_the_install_report_is_kept(monkeypatch, capsys):
    from benchmarks import gpu_check

    done = {"install": {"ok": True, "seconds": 61.5, "action": "installed"}}
    monkeypatch.setenv("GPU_CHECK_DONE", json.dumps(done))
    monkeypatch.setenv("GPU_CHECK_STARTED", repr(time.time() - 70))
    assert gpu_check.main(["--skip-install", "--fail-step", "gpu_step"]) == 1
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps"]["install"] == done["install"] and out["failed_step"] == "gpu_step"
    assert out["total_seconds"] >= 70 and out["not_run"] == list(STEPS[2:])
