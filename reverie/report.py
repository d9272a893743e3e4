"""The ablation table: variants as rows, benchmarks as columns, mean and standard deviation
over seeds, and each variant's per-seed difference against the baseline."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from .io import atomic_path, write_json, write_text

VARIANT_ORDER = ("response", "pos", "neg", "pos_neg")
COLUMNS = [
    ("pope.random.f1", "POPE rand F1"),
    ("pope.popular.f1", "POPE pop F1"),
    ("pope.adversarial.f1", "POPE adv F1"),
    ("pope.mean_f1", "POPE mean F1"),
    ("mme.score", "MME score"),
    ("mmbench.circular_accuracy", "MMBench circ"),
    ("short_answer.accuracy", "Short ans"),
    ("reasoning.accuracy", "Reasoning"),
]


def collect(eval_dir: str | Path, tune_dir: str | Path | None = None) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(Path(eval_dir).glob("*-s*.json")):
        variant, seed = path.stem.rsplit("-s", 1)
        metrics = json.loads(path.read_text())
        if tune_dir and (Path(tune_dir) / path.name).exists():
            tune = json.loads((Path(tune_dir) / path.name).read_text())
            metrics["tune"] = {k: tune.get(k) for k in ("train_loss", "response_loss", "rationale_loss", "tokens_per_s",
                                                         "padding_fraction", "train_seconds", "tokens", "heldout_yes_no_accuracy")}
        runs.setdefault(variant, {})[int(seed)] = metrics
    return runs


def ablation(runs: dict[str, dict[int, dict]], baseline: str = "response") -> dict:
    table = {}
    for variant in [v for v in VARIANT_ORDER if v in runs] + sorted(set(runs) - set(VARIANT_ORDER)):
        seeds = runs[variant]
        row = {"seeds": sorted(seeds)}
        for key, _ in COLUMNS:
            values = [seeds[s][key] for s in sorted(seeds) if key in seeds[s]]
            if not values:
                continue
            cell = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "per_seed": {str(s): seeds[s][key] for s in sorted(seeds) if key in seeds[s]}}
            if baseline in runs and variant != baseline:
                diffs = {str(s): seeds[s][key] - runs[baseline][s][key]
                         for s in sorted(seeds) if s in runs[baseline] and key in seeds[s] and key in runs[baseline][s]}
                cell["diff_vs_baseline"] = diffs
                if diffs:
                    cell["diff_mean"] = statistics.fmean(diffs.values())
            row[key] = cell
        table[variant] = row
    return {"baseline": baseline, "columns": [k for k, _ in COLUMNS], "variants": table}


def _fmt(key: str, value: float) -> str:
    return f"{value:.1f}" if key == "mme.score" else f"{value:.3f}"


def markdown(result: dict) -> str:
    cols = [(k, label) for k, label in COLUMNS if any(k in r for r in result["variants"].values())]
    lines = ["| variant | seeds | " + " | ".join(label for _, label in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for variant, row in result["variants"].items():
        cells = []
        for key, _ in cols:
            c = row.get(key)
            cells.append("" if c is None else f"{_fmt(key, c['mean'])} ± {_fmt(key, c['std'])}")
        lines.append(f"| {variant} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    lines += ["", f"Per-seed difference against `{result['baseline']}` (mean over seeds; positive is better):", "",
              "| variant | " + " | ".join(label for _, label in cols) + " |", "|---|" + "---|" * len(cols)]
    for variant, row in result["variants"].items():
        if variant == result["baseline"]:
            continue
        cells = []
        for key, _ in cols:
            c = row.get(key, {})
            cells.append(f"{c['diff_mean']:+.3f}" if "diff_mean" in c else "")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_charts(result: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [(k, label) for k, label in COLUMNS if any(k in r for r in result["variants"].values())]
    variants = list(result["variants"])
    fig, axes = plt.subplots(1, len(cols), figsize=(2.6 * len(cols), 3.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], cols):
        means = [result["variants"][v].get(key, {}).get("mean", 0.0) for v in variants]
        stds = [result["variants"][v].get(key, {}).get("std", 0.0) for v in variants]
        ax.bar(range(len(variants)), means, yerr=stds, capsize=3, color=["#888", "#4a90d9", "#d9844a", "#5cb85c"][: len(variants)])
        ax.set_xticks(range(len(variants)), variants, rotation=30)
        ax.set_title(label, fontsize=9)
        low = min(m - s for m, s in zip(means, stds)) if means else 0
        ax.set_ylim(max(0, low * 0.95), None)
    fig.suptitle("Reflective tuning ablation (mean ± std over seeds)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def loss_curves(loss_dir: str | Path, path: str | Path) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted(Path(loss_dir).glob("*.csv"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for f in files:
        with f.open() as handle:
            rows = list(csv.DictReader(handle))
        steps = [int(r["step"]) for r in rows]
        axes[0].plot(steps, [float(r["response_loss"]) for r in rows], label=f.stem, lw=1)
        rat = [float(r["rationale_loss"]) for r in rows]
        if any(v == v for v in rat):
            axes[1].plot(steps, rat, label=f.stem, lw=1)
    axes[0].set_title("response-token loss")
    axes[1].set_title("rationale-token loss")
    for ax in axes:
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
        else:  # response-only runs have no rationale tokens: an empty panel, and no legend to draw
            ax.text(0.5, 0.5, "no run with rationale tokens", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_report(eval_dir, tune_dir, loss_dir, out_dir, baseline: str = "response") -> dict:
    out_dir = Path(out_dir)
    runs = collect(eval_dir, tune_dir)
    if not runs:
        raise FileNotFoundError(f"no evaluation metrics under {eval_dir}")
    result = ablation(runs, baseline)
    result["tune"] = {v: {str(s): m.get("tune") for s, m in seeds.items()} for v, seeds in runs.items()}
    table = markdown(result)
    write_json(out_dir / "ablation.json", result)
    bar_charts(result, out_dir / "ablation.png")
    if loss_dir and Path(loss_dir).exists():
        loss_curves(loss_dir, out_dir / "loss_curves.png")
    rows = []
    for variant, row in result["variants"].items():
        for key in result["columns"]:
            if key in row:
                rows.append({"variant": variant, "metric": key, "mean": row[key]["mean"]})
    write_text(out_dir / "ablation.csv", "variant,metric,mean\n" + "".join(f"{r['variant']},{r['metric']},{r['mean']}\n" for r in rows))
    write_text(out_dir / "report.md", "# REVERIE ablation\n\n" + table +
               "\n![ablation](ablation.png)\n\n![loss curves](loss_curves.png)\n")
    result["markdown"] = table
    return result
