"""The plan before the run (`flows.pipeline --plan`): the numbers tuning will use, the flow's own
placement on a clock, and the 7B profile's node on 8 GPUs."""
import hashlib
import json
import subprocess
import sys

from reverie.orchestration import Plan
from reverie.plan import StageEstimate, simulate
from tests.conftest import ROOT


def test_the_simulated_placement_gives_node_time_and_idle_share():
    steps = Plan(("a", "b", "c"), frozenset("abc"), {"c": frozenset({"a"})})
    estimates = [StageEstimate("a", 1, 10.0), StageEstimate("b", 1, 5.0), StageEstimate("c", 2, 4.0)]
    placed = simulate(steps, estimates, parallel=4, devices=["0", "1"])
    # a and b side by side; c needs both devices: it waits for a (its upstream) and for b
    assert placed["starts"] == {"a": 0.0, "b": 0.0, "c": 10.0}
    assert placed["node_seconds"] == 14.0 and placed["busy_device_seconds"] == 23.0
    assert abs(placed["idle_share"] - (1 - 23 / 28)) < 1e-12


def test_a_gpu_step_file_is_the_measured_throughput(tmp_path):
    from reverie.plan import throughput
    from reverie.settings import load_params

    (tmp_path / "step.json").write_text(json.dumps({"tokens_per_s": 5200.0, "devices": 1, "device": "NVIDIA H100"}))
    params = load_params(ROOT / "params.yaml", {"plan.throughput_file": "step.json"})
    assert throughput(params, tmp_path) == (5200.0, "measured (step.json: benchmarks.gpu_step on NVIDIA H100)")
    declared = load_params(ROOT / "params.yaml", {"plan.throughput_file": "step.json", "plan.tokens_per_s": 4000})
    assert throughput(declared, tmp_path) == (4000, "declared (plan.tokens_per_s)")


def plan_json(cwd, *args) -> tuple[str, dict]:
    done = subprocess.run([sys.executable, "-m", "flows.pipeline", "--plan", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(done.stdout.strip().splitlines()[-1])


def test_the_7b_profile_on_8_gpus_leaves_at_most_a_tenth_idle_and_writes_nothing():
    from reverie.orchestration import profile_overrides
    from reverie.settings import load_params
    from reverie.tuning import step_budget
    from reverie.vocab import VARIANT_SPECS

    before = hashlib.sha256((ROOT / "params.yaml").read_bytes()).hexdigest()
    text, plan = plan_json(ROOT, "--profile", "configs/llava-1.5-7b.yaml")
    assert hashlib.sha256((ROOT / "params.yaml").read_bytes()).hexdigest() == before
    assert {"stages", "gpu_hours", "node_hours", "idle_share"} <= set(plan)
    assert plan["devices"] == [str(i) for i in range(8)] and plan["idle_share"] <= 0.10
    params = load_params(ROOT / "params.yaml", profile_overrides(ROOT / "configs/llava-1.5-7b.yaml"))
    tunes = {name: s for name, s in plan["stages"].items() if name.startswith("tune@")}
    assert len(tunes) == len(params.tune.variants) * len(params.tune.seeds)
    budget = step_budget(params.plan.records, params.plan.mix_conversations, params.tune.epochs, params.tune.batch_size)
    for name, stage in tunes.items():
        variant = name.split("@")[1].rsplit("-", 1)[0]
        assert stage["steps"] == round(budget * VARIANT_SPECS[variant].step_share), name
        assert stage["tokens"] == round(stage["samples"] * params.plan.tokens_per_sample) and stage["devices"] == 1
    hours = sum(s["hours"] * s["devices"] for s in plan["stages"].values())
    assert abs(hours - plan["gpu_hours"]) < 0.01 * plan["gpu_hours"]
    assert plan["node_hours"] >= plan["gpu_hours"] / 8
    assert "4,900 training tokens/s per device, declared (plan.tokens_per_s)" in text


def test_after_a_run_the_plan_measures_its_throughput_in_the_workspace(repro_project):
    project, _ = repro_project
    text, plan = plan_json(project)
    assert plan["throughput_source"] == "measured (median of metrics/tune/*.json)" and plan["tokens_per_s_per_device"] > 0
    assert plan["idle_share"] is None and plan["gpu_hours"] == 0 and plan["node_hours"] > 0
    assert set(plan["stages"]) >= {"base", "tune@response-0", "evaluate@pos_neg-0", "chance", "report"}
