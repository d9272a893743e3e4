"""A plan before the first GPU-hour: what a profile will train and how long it will take, without
training (`python -m flows.pipeline --profile P --plan`).

Per stage: samples, optimizer steps and tokens (the numbers `reverie.tuning` will use: the same
step budget, the same variants' step shares) and the estimated wall time from a throughput that
is measured (the metrics of an earlier run in this workspace, or `benchmarks.gpu_step --write`)
or declared (`plan.tokens_per_s`). For the whole DAG: the node time and the share of device-time
left idle, from the flow's own placement (`StageQueue`, driven by a simulated clock). The last
line printed is one JSON object."""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from .orchestration import Plan, StageQueue, device_needs
from .vocab import VARIANT_SPECS, run_name


@dataclass
class StageEstimate:
    stage: str
    devices: int
    seconds: float
    samples: int = 0
    steps: int = 0
    tokens: int = 0
    source: str = ""


def _count_lines(path: Path) -> int | None:
    return sum(1 for line in path.open() if line.strip()) if path.exists() else None


def _median_metric(folder: Path, key: str) -> float | None:
    values = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        value = json.loads(path.read_text()).get(key)
        if isinstance(value, (int, float)) and value > 0:
            values.append(float(value))
    return statistics.median(values) if values else None


def data_counts(params, root: Path) -> tuple[dict, dict]:
    """(counts, where each came from): train records, mix conversations, instruction-mix questions."""
    plan = params.plan
    counts, sources = {}, {}
    counted = _count_lines(root / "data/split/train.jsonl")
    if plan.records is not None:
        counts["records"], sources["records"] = plan.records, "declared (plan.records)"
    elif counted is not None:
        counts["records"], sources["records"] = counted, "counted (data/split/train.jsonl)"
    else:
        # the synthetic world: questions per image over the train images, before quality filtering
        counts["records"] = params.world.train_images * params.generate.questions_per_image
        sources["records"] = "estimated (world.train_images x generate.questions_per_image)"
    mix = params.tune.mix
    if plan.mix_conversations is not None:
        available, sources["mix"] = plan.mix_conversations, "declared (plan.mix_conversations)"
    elif mix.path and (root / mix.path).exists():
        available, sources["mix"] = len(json.loads((root / mix.path).read_text())), f"counted ({mix.path})"
    else:
        available, sources["mix"] = 0, "none (tune.mix.path unset or absent)"
    counts["mix"] = 0 if not mix.path and plan.mix_conversations is None else \
        (min(available, mix.count) if mix.count is not None else round(mix.fraction * available))
    # one-skill questions about the train scenes; only a world with scene graphs has them
    scenes = params.generate.teacher == "scene_graph"
    counts["instructions"] = round(params.tune.instruction_mix * counts["records"]) if scenes else 0
    return counts, sources


def tokens_per_sample(params, root: Path) -> tuple[float, str]:
    """Mean tokens of one training sample, and where the figure came from."""
    if params.plan.tokens_per_sample is not None:
        return params.plan.tokens_per_sample, "declared (plan.tokens_per_sample)"
    measured = []
    for path in sorted((root / "metrics/tune").glob("*.json")) if (root / "metrics/tune").exists() else []:
        m = json.loads(path.read_text())
        if m.get("tokens_per_s") and m.get("train_seconds") and m.get("steps"):
            measured.append(m["tokens_per_s"] * m["train_seconds"] / (m["steps"] * params.tune.batch_size))
    if measured:
        return statistics.median(measured), "measured (metrics/tune/*.json)"
    if params.tune.max_length:
        return float(params.tune.max_length), "tune.max_length (an upper bound)"
    raise ValueError("no sample length to plan with: set plan.tokens_per_sample (or tune.max_length), "
                     "or run the pipeline once here")


def throughput(params, root: Path) -> tuple[float, str]:
    """Training tokens per second per device, and where the figure came from."""
    plan = params.plan
    if plan.tokens_per_s is not None:
        return plan.tokens_per_s, "declared (plan.tokens_per_s)"
    if plan.throughput_file and (root / plan.throughput_file).exists():
        measured = json.loads((root / plan.throughput_file).read_text())
        per_device = measured["tokens_per_s"] / max(1, measured.get("devices", 1))
        return per_device, f"measured ({plan.throughput_file}: benchmarks.gpu_step on {measured.get('device', '?')})"
    measured = _median_metric(root / "metrics/tune", "tokens_per_s")
    if measured:
        return measured / max(1, params.tune.launch.processes), "measured (median of metrics/tune/*.json)"
    raise ValueError("no throughput to plan with: set plan.tokens_per_s, or write one with "
                     "`python -m benchmarks.gpu_step --write " + (plan.throughput_file or "FILE") + "`, "
                     "or run the pipeline once here")


def stage_estimates(params, root: Path, stages: list[str]) -> tuple[list[StageEstimate], dict]:
    from .tuning import step_budget

    plan, tune = params.plan, params.tune
    counts, sources = data_counts(params, root)
    per_device, throughput_source = throughput(params, root)
    per_sample, sample_source = tokens_per_sample(params, root)
    needs = device_needs(params, stages)
    base_steps = step_budget(counts["records"], counts["mix"] + counts["instructions"], tune.epochs, tune.batch_size)
    measured_eval = _median_metric(root / "metrics/eval", "answer_seconds")
    measured_base = None
    if (root / "metrics/base.json").exists():
        measured_base = json.loads((root / "metrics/base.json").read_text()).get("train_seconds")
    out = []
    for name in stages:
        kind, _, item = name.partition("@")
        devices = needs.get(name, 0)
        if kind == "tune":
            variant, seed = item.rsplit("-", 1)
            steps = max(1, round(base_steps * VARIANT_SPECS[variant].step_share))
            samples = steps * tune.batch_size
            tokens = round(samples * per_sample)
            seconds = tokens / (per_device * max(1, devices)) if tokens else 0.0
            out.append(StageEstimate(name, devices, seconds + plan.stage_seconds, samples, steps, tokens,
                                     f"{run_name(variant, int(seed))}: tokens / ({per_device:.0f} tokens/s x {max(1, devices)})"))
        elif kind == "evaluate":
            seconds = plan.eval_seconds if plan.eval_seconds is not None else measured_eval
            out.append(StageEstimate(name, devices, (seconds or 0.0) + plan.stage_seconds,
                                     source="declared (plan.eval_seconds)" if plan.eval_seconds is not None
                                     else "measured (metrics/eval)" if measured_eval else "unknown: 0"))
        elif kind == "base":
            seconds = plan.base_seconds if plan.base_seconds is not None else measured_base
            out.append(StageEstimate(name, devices, (seconds or 0.0) + plan.stage_seconds,
                                     source="declared (plan.base_seconds)" if plan.base_seconds is not None
                                     else "measured (metrics/base.json)" if measured_base else "unknown: 0"))
        else:
            out.append(StageEstimate(name, devices, plan.stage_seconds, source="declared (plan.stage_seconds)"))
    context = {"counts": counts, "count_sources": sources, "tokens_per_s_per_device": per_device,
               "throughput_source": throughput_source, "steps_per_main_variant": base_steps,
               "tokens_per_sample": per_sample, "tokens_per_sample_source": sample_source}
    return out, context


def simulate(steps: Plan, estimates: list[StageEstimate], parallel: int, devices: list[str],
             cpus: int = 1) -> dict:
    """The flow's own placement (StageQueue) on a clock: node time, busy and idle device-time."""
    by_name = {e.stage: e for e in estimates}
    queue = StageQueue(steps, parallel, cpus, devices, {e.stage: e.devices for e in estimates})
    clock, ends, starts, busy = 0.0, {}, {}, 0.0
    while not queue.done():
        for name, _ in queue.start():
            starts[name] = clock
            ends[name] = clock + by_name[name].seconds
            busy += by_name[name].seconds * len(queue.held[name])
        if not queue.running:
            raise RuntimeError("the placement cannot start any stage: " + ", ".join(queue.waiting[:3]))
        name = min(queue.running, key=lambda n: (ends[n], n))
        clock = ends[name]
        queue.finish(name)
    capacity = clock * len(devices)
    return {"node_seconds": clock, "busy_device_seconds": busy,
            "idle_share": (1 - busy / capacity) if capacity else 0.0, "starts": starts}


def profile_dag(root: Path, overrides: dict) -> tuple[list[str], dict[str, frozenset[str]]]:
    """The stages and edges DVC would build with `overrides` applied (a profile's matrix of variants
    and seeds), asked of DVC in a scratch copy of dvc.yaml and params.yaml: the workspace's
    params.yaml is not written, and nothing needs to exist yet."""
    import shutil
    import tempfile

    from dvc.repo import Repo

    from .orchestration import apply_overrides, stage_graph

    with tempfile.TemporaryDirectory(prefix="reverie-plan-") as tmp:
        scratch = Path(tmp)
        for name in ("dvc.yaml", "params.yaml"):
            shutil.copy(root / name, scratch / name)
        apply_overrides(overrides, scratch / "params.yaml")
        (scratch / ".venv").mkdir()  # dvc.yaml's vars: the interpreter's name does not change the DAG
        (scratch / ".venv" / "run-make-install.yaml").write_text("python: python\n")
        import logging

        quiet = logging.getLogger("dvc.repo.init")
        level = quiet.level
        quiet.setLevel(logging.WARNING)  # "Initialized DVC repository." is not the plan's
        try:
            Repo.init(str(scratch), no_scm=True).close()
        finally:
            quiet.setLevel(level)
        with Repo(str(scratch)) as repo:
            names, upstream = stage_graph(repo.index.graph)
    return list(names.values()), upstream


def make_plan(params, root: str | Path = ".", overrides: dict | None = None) -> dict:
    """The plan of every stage of the DAG (DVC's order and edges, all to run: a plan of the whole run)."""
    root = Path(root)
    stages, upstream = profile_dag(root, overrides or {})
    steps = Plan(tuple(stages), frozenset(stages), upstream or {})
    estimates, context = stage_estimates(params, root, stages)
    devices = list(params.orchestration.devices)
    placement = simulate(steps, estimates, params.orchestration.parallel_stages, devices)
    gpu_seconds = sum(e.seconds * e.devices for e in estimates) if devices else 0.0
    return {"stages": [asdict(e) | {"start_hours": placement["starts"][e.stage] / 3600} for e in estimates],
            "devices": devices, "parallel_stages": params.orchestration.parallel_stages,
            "gpu_hours": gpu_seconds / 3600, "node_hours": placement["node_seconds"] / 3600,
            "idle_share": placement["idle_share"] if devices else None, **context}


def describe(result: dict) -> str:
    """The plan as a reader wants it: a table per stage, then the totals; the JSON line last."""
    lines = ["| stage | devices | samples | optimizer steps | tokens | start (h) | hours |", "|---|---|---|---|---|---|---|"]
    for s in result["stages"]:
        lines.append(f"| {s['stage']} | {s['devices']} | {s['samples']:,} | {s['steps']:,} | {s['tokens']:,} | "
                     f"{s['start_hours']:.2f} | {s['seconds'] / 3600:.2f} |")
    counts = result["counts"]
    lines += ["", f"train records {counts['records']:,} ({result['count_sources']['records']}); mix "
              f"{counts['mix']:,} ({result['count_sources']['mix']}); instruction-mix questions {counts['instructions']:,}",
              f"optimizer steps per main variant: {result['steps_per_main_variant']:,}; "
              f"{result['tokens_per_sample']:,.0f} tokens per sample, {result['tokens_per_sample_source']}",
              f"throughput: {result['tokens_per_s_per_device']:,.0f} training tokens/s per device, "
              f"{result['throughput_source']}"]
    if result["devices"]:
        lines.append(f"on {len(result['devices'])} device(s) ({', '.join(result['devices'])}), up to "
                     f"{result['parallel_stages']} stage(s) at once: {result['gpu_hours']:,.1f} GPU-hours, "
                     f"{result['node_hours']:,.1f} node-hours, {result['idle_share']:.1%} of the device-time idle")
    else:
        lines.append(f"no devices declared (orchestration.devices): {result['node_hours']:,.2f} hours on this machine")
    summary = {k: result[k] for k in ("gpu_hours", "node_hours", "idle_share", "devices",
                                      "tokens_per_s_per_device", "throughput_source", "tokens_per_sample")}
    summary["stages"] = {s["stage"]: {k: s[k] for k in ("devices", "samples", "steps", "tokens")}
                         | {"hours": round(s["seconds"] / 3600, 4)} for s in result["stages"]}
    return "\n".join(lines) + "\n" + json.dumps(summary, sort_keys=False)
