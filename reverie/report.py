"""The ablation report: variants as rows, benchmarks as columns, what chance is on each, and
what each difference against the baseline is worth.

Read through the base check and the baseline's POPE answers first: a baseline that does not
see (POPE accuracy under `report.min_baseline_pope_accuracy`, or a yes-ratio outside
`report.baseline_yes_ratio`) makes the whole comparison void, said at the top of the report
and in `ablation.json` (`void`, `void_reason`)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from .evaluation.per_image import METRICS, POPE_SPLITS, image_components
from .io import atomic_path, read_jsonl, write_json, write_text
from .statistics import (bootstrap_interval, bootstrap_p_value, bootstrap_weights, holm, mcnemar_p_value,
                         resampled, t_interval)
from .vocab import VARIANTS, parse_run_name, run_name

VARIANT_ORDER = VARIANTS
COLUMNS = [
    ("pope.random.f1", "POPE rand F1"),
    ("pope.popular.f1", "POPE pop F1"),
    ("pope.adversarial.f1", "POPE adv F1"),
    ("pope.mean_f1", "POPE mean F1"),
    ("mme.score", "MME-4 (max 800)"),
    ("mme.perception.score", "MME perception (max 2000)"),
    ("mme.cognition.score", "MME cognition (max 800)"),
    ("mmbench.circular_accuracy", "MMBench circ"),
    ("scienceqa.accuracy", "ScienceQA-IMG"),
    ("short_answer.accuracy", "Short ans"),
    ("reasoning.accuracy", "Reasoning"),
]
MME_MAX = {"mme.score": 800, "mme.perception.score": 2000, "mme.cognition.score": 800}
# the real benchmarks' breakdowns (per MME subtask, per MMBench category and l2-category)
DETAIL_PREFIXES = ("mme.", "mmbench.category.", "mmbench.l2_category.")
POPE_DETAIL = [f"pope.{split}.{what}" for split in POPE_SPLITS for what in ("accuracy", "yes_ratio")]
REFERENCES = (("always_yes", "always yes"), ("blind_prior", "blind prior"))
MME_NOTE = ("MME-4 sums four subtasks of 200 points (accuracy + accuracy+, in %): existence is asked the way "
            "the student was taught; count, position and colour are yes/no phrasings it never saw in training, "
            "so they test transfer.")


def collect(eval_dir: str | Path, tune_dir: str | Path | None = None,
            predictions_dir: str | Path | None = None) -> dict[str, dict[int, dict]]:
    """Per variant and seed: the eval metrics, the tune summary and (when the predictions are
    there) the per-image counts every resampled statistic is built from."""
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(Path(eval_dir).glob("*-s*.json")):
        variant, seed = parse_run_name(path.stem)
        metrics = json.loads(path.read_text())
        if tune_dir and (Path(tune_dir) / path.name).exists():
            tune = json.loads((Path(tune_dir) / path.name).read_text())
            metrics["tune"] = {k: tune.get(k) for k in ("train_loss", "response_loss", "rationale_loss", "tokens_per_s",
                                                         "padding_fraction", "train_seconds", "tokens",
                                                         "heldout_yes_no_accuracy", "environment")}
        predictions = Path(predictions_dir) / f"{path.stem}.jsonl" if predictions_dir else None
        if predictions and predictions.exists():
            rows = read_jsonl(predictions)
            metrics["images"], metrics["components"] = image_components(rows)
            metrics["pope_correct"] = {r["qid"]: _pope_right(r) for r in rows if r["benchmark"] == "pope"}
        runs.setdefault(variant, {})[int(seed)] = metrics
    return runs


def _pope_right(row: dict) -> bool:
    from .evaluation.scoring import pope_yes

    return pope_yes(row["answer"]) == (row["label"] == "yes")


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _p_value_over_seeds(diffs: list[float]) -> float | None:
    if len(diffs) < 2:
        return None
    if statistics.stdev(diffs) == 0:
        return 1.0 if statistics.fmean(diffs) == 0 else 0.0
    from scipy.stats import ttest_1samp

    return float(ttest_1samp(diffs, 0.0).pvalue)


def ablation(runs: dict[str, dict[int, dict]], baseline: str = "response", replicates: int = 1000,
             seed: int = 0) -> dict:
    """Per variant and metric: mean, std, a t interval over seeds and the per-seed values; per
    variant against the baseline: the paired difference with a t interval over seeds and a
    bootstrap interval over eval images (the same resampled images for both runs of a seed),
    their p-values, McNemar's test on the POPE answers, and Holm's correction per metric."""
    variants = [v for v in VARIANT_ORDER if v in runs] + sorted(set(runs) - set(VARIANT_ORDER))
    keys = [k for k, _ in COLUMNS] + POPE_DETAIL
    weights = _shared_weights(runs, replicates, seed)
    table: dict[str, dict] = {}
    for variant in variants:
        seeds = runs[variant]
        row: dict = {"seeds": sorted(seeds)}
        for key in keys:
            values = [seeds[s][key] for s in sorted(seeds) if key in seeds[s]]
            if not values:
                continue
            mean, std = _mean_std(values)
            cell = {"mean": mean, "std": std, "ci95": t_interval(values),
                    "per_seed": {str(s): seeds[s][key] for s in sorted(seeds) if key in seeds[s]}}
            if variant != baseline and baseline in runs:
                cell.update(_against_baseline(key, seeds, runs[baseline], weights))
            row[key] = cell
        table[variant] = row
    for key, _ in COLUMNS:  # the family of one metric: every variant against the baseline
        tested = {v: table[v][key]["p_value"] for v in variants
                  if key in table[v] and table[v][key].get("p_value") is not None}
        for variant, adjusted in holm(tested).items():
            cell = table[variant][key]
            cell["p_holm"] = adjusted
            images_p = cell.get("p_value_images")
            cell["significant"] = adjusted < 0.05 and (images_p is None or images_p < 0.05)
    return {"baseline": baseline, "columns": [k for k, _ in COLUMNS], "variants": table,
            "bootstrap_replicates": replicates if weights is not None else 0,
            "eval_images": int(weights.shape[1]) if weights is not None else None,
            "pope_f1_standard_error": _pope_standard_errors(runs, weights)}


def _shared_weights(runs: dict[str, dict[int, dict]], replicates: int, seed: int) -> np.ndarray | None:
    """One set of resampled eval sets for every run: runs that answered other images cannot be
    paired, and then no bootstrap is made."""
    image_lists = [m["images"] for seeds in runs.values() for m in seeds.values() if "images" in m]
    if not image_lists or any(images != image_lists[0] for images in image_lists) or \
            len(image_lists) != sum(len(s) for s in runs.values()):
        return None
    return bootstrap_weights(len(image_lists[0]), replicates, seed)


def _against_baseline(key: str, seeds: dict[int, dict], base: dict[int, dict], weights: np.ndarray | None) -> dict:
    paired = [s for s in sorted(seeds) if s in base and key in seeds[s] and key in base[s]]
    if not paired:
        return {}
    diffs = [seeds[s][key] - base[s][key] for s in paired]
    out = {"diff_per_seed": {str(s): d for s, d in zip(paired, diffs)}, "diff_mean": statistics.fmean(diffs),
           "diff_ci95": t_interval(diffs), "p_value": _p_value_over_seeds(diffs)}
    if weights is not None and key in METRICS and all(key in seeds[s].get("components", {}) and
                                                      key in base[s].get("components", {}) for s in paired):
        value = METRICS[key].value
        resampled_diffs = np.mean([resampled(value, seeds[s]["components"][key], weights)
                                   - resampled(value, base[s]["components"][key], weights) for s in paired], axis=0)
        out["diff_ci95_bootstrap"] = bootstrap_interval(resampled_diffs)
        out["p_value_images"] = bootstrap_p_value(resampled_diffs)
    if key.startswith("pope.") and key.endswith(".accuracy") and all("pope_correct" in seeds[s] for s in paired):
        split = key.split(".")[1]
        only_variant = only_base = 0
        for s in paired:
            for qid, right in seeds[s]["pope_correct"].items():
                if f"-{split}-" in qid and qid in base[s]["pope_correct"]:
                    other = base[s]["pope_correct"][qid]
                    only_variant += right and not other
                    only_base += other and not right
        out["mcnemar"] = {"only_variant_right": only_variant, "only_baseline_right": only_base,
                          "p_value": mcnemar_p_value(only_variant, only_base)}
    return out


def _pope_standard_errors(runs: dict[str, dict[int, dict]], weights: np.ndarray | None) -> dict | None:
    """Per split, the median over runs of the bootstrap standard error of the POPE F1."""
    if weights is None:
        return None
    out = {}
    for split in POPE_SPLITS:
        key = f"pope.{split}.f1"
        errors = [float(np.std(resampled(METRICS[key].value, m["components"][key], weights), ddof=1))
                  for seeds in runs.values() for m in seeds.values() if key in m.get("components", {})]
        if errors:
            out[split] = statistics.median(errors)
    return out


def verdict(result: dict, base_check: dict | None, min_accuracy: float, yes_ratio: tuple[float, float]) -> str | None:
    """Why the comparison cannot be read as a result, or None when it can."""
    reasons = []
    if base_check and base_check.get("passed") is False:
        reasons.append(f"the base student failed its check ({base_check.get('failure')})")
    row = result["variants"].get(result["baseline"])
    if row is None:
        return f"the baseline `{result['baseline']}` was not evaluated"
    accuracy = [row[f"pope.{s}.accuracy"]["mean"] for s in POPE_SPLITS if f"pope.{s}.accuracy" in row]
    ratios = [row[f"pope.{s}.yes_ratio"]["mean"] for s in POPE_SPLITS if f"pope.{s}.yes_ratio" in row]
    if not accuracy:
        return f"the baseline `{result['baseline']}` has no POPE scores"
    acc = statistics.fmean(accuracy)
    if acc < min_accuracy:
        reasons.append(f"the baseline `{result['baseline']}` answers POPE at accuracy {acc:.3f}, below "
                       f"report.min_baseline_pope_accuracy = {min_accuracy}")
    if not ratios:
        reasons.append(f"the baseline `{result['baseline']}` has no POPE yes-ratio, so an always-yes answerer "
                       "cannot be ruled out")
        return "; ".join(reasons)
    ratio = statistics.fmean(ratios)
    if not yes_ratio[0] <= ratio <= yes_ratio[1]:
        reasons.append(f"the baseline `{result['baseline']}` says yes to {ratio:.1%} of POPE questions, outside "
                       f"report.baseline_yes_ratio = [{yes_ratio[0]}, {yes_ratio[1]}]")
    return "; ".join(reasons) or None


def void_reason(report_dir: str | Path) -> str | None:
    """The reason a written report is void, or None (also when there is no report yet)."""
    path = Path(report_dir) / "ablation.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result.get("void_reason") if result.get("void") else None


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if key.startswith("mme.") else f"{value:.3f}"


def _interval(key: str, ci: list[float] | None) -> str:
    return f"[{_fmt(key, ci[0])}, {_fmt(key, ci[1])}]" if ci else "n/a"


def markdown(result: dict) -> str:
    cols = [(k, label) for k, label in COLUMNS if any(k in r for r in result["variants"].values())]
    lines = []
    if result.get("void"):
        lines += [f"> **VOID: this comparison measures nothing.** {result['void_reason'][0].upper()}"
                  f"{result['void_reason'][1:]}.", ""]
    base = result.get("base_check")
    if base and "heldout_existence_accuracy" in base:
        lines += [f"Base student: held-out existence accuracy {base['heldout_existence_accuracy']:.3f} "
                  f"(yes-ratio {base['heldout_yes_ratio']:.2f}); the same questions on shuffled images "
                  f"{base['shuffled_image_accuracy']:.3f}; descriptions name "
                  f"{base.get('description_kind_recall', float('nan')):.0%} of the objects' kinds, "
                  f"{base.get('description_object_recall', float('nan')):.0%} at the right position.", ""]
    seeds = max((len(r["seeds"]) for r in result["variants"].values()), default=0)
    lines += [f"## Headline: mean ± std over {seeds} seed(s)", "",
              "| variant | seeds | " + " | ".join(label for _, label in cols) + " |",
              "|---|---|" + "---|" * len(cols)]
    for variant, row in result["variants"].items():
        cells = [f"{_fmt(k, row[k]['mean'])} ± {_fmt(k, row[k]['std'])}" if k in row else "" for k, _ in cols]
        lines.append(f"| {variant} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    for name, label in REFERENCES:
        ref = (result.get("reference") or {}).get(name)
        if ref:
            lines.append(f"| *{label}* | – | " + " | ".join(_fmt(k, ref.get(k)) for k, _ in cols) + " |")
    lines += ["", "*always yes* answers \"yes\" to everything; *blind prior* never sees an eval image and gives the "
              "answer each question most often has on the train scenes. " + (MME_NOTE if any(k == "mme.score" for k, _ in cols) else ""), ""]
    lines += _pope_detail(result)
    lines += _real_detail(result)
    lines += _differences(result, cols)
    env = result.get("environment")
    if env:
        lines += ["", "## Environment", "",
                  ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + f" (requirements.lock {env['lock']})"]
        if env.get("mixed"):
            lines.append(f"**The runs came from different environments**: {env['mixed']}")
    return "\n".join(lines) + "\n"


def _pope_detail(result: dict) -> list[str]:
    se = result.get("pope_f1_standard_error") or {}
    lines = ["## POPE in detail (mean over seeds)", "",
             "| variant | split | F1 | accuracy | yes-ratio | unparseable |", "|---|---|---|---|---|---|"]
    for variant, row in result["variants"].items():
        for split in POPE_SPLITS:
            if f"pope.{split}.f1" not in row:
                continue
            unparseable = (result.get("unparseable", {}).get(variant) or {}).get(f"pope.{split}")
            lines.append(f"| {variant} | {split} | {row[f'pope.{split}.f1']['mean']:.3f} | "
                         f"{row[f'pope.{split}.accuracy']['mean']:.3f} | {row[f'pope.{split}.yes_ratio']['mean']:.3f} | "
                         f"{'' if unparseable is None else f'{unparseable:.1f}'} |")
    for name, label in REFERENCES:
        ref = (result.get("reference") or {}).get(name) or {}
        for split in POPE_SPLITS:
            if f"pope.{split}.f1" in ref:
                lines.append(f"| *{label}* | {split} | {ref[f'pope.{split}.f1']:.3f} | {ref[f'pope.{split}.accuracy']:.3f} "
                             f"| {ref[f'pope.{split}.yes_ratio']:.3f} | |")
    if se:
        lines += ["", f"Standard error of a run's POPE F1 (bootstrap over {result.get('eval_images')} eval images, "
                  "median over runs): " + ", ".join(f"{s} {v:.4f}" for s, v in se.items()) + "."]
    return lines + [""]


def _real_detail(result: dict) -> list[str]:
    """The real benchmarks' breakdowns, mean over seeds: MME per subtask, MMBench per category
    and l2-category. Nothing for the synthetic suites (their MME subtasks are in the table)."""
    detail = result.get("detail") or {}
    keys = sorted({k for row in detail.values() for k in row})
    if not keys:
        return []
    variants = list(detail)
    lines = ["## Real benchmarks in detail (mean over seeds)", "",
             "| metric | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(key, detail[v].get(key)) for v in variants) + " |")
    return lines + [""]


def _details(runs: dict[str, dict[int, dict]]) -> dict:
    """Per variant, the mean over seeds of each breakdown metric of a real benchmark."""
    out = {}
    for variant, seeds in runs.items():
        values: dict[str, list[float]] = {}
        for m in seeds.values():
            if "mme.perception.score" not in m and "mme.cognition.score" not in m and \
                    not any(k.startswith("mmbench.category.") for k in m):
                continue
            for key, value in m.items():
                if key.startswith(DETAIL_PREFIXES) and isinstance(value, (int, float)):
                    values.setdefault(key, []).append(value)
        out[variant] = {k: statistics.fmean(v) for k, v in values.items()}
    return out if any(out.values()) else {}


def _differences(result: dict, cols: list[tuple[str, str]]) -> list[str]:
    baseline = result["baseline"]
    lines = [f"## Against `{baseline}`, paired by seed", "",
             "| variant | metric | difference | 95% CI over seeds (t) | 95% CI over eval images (bootstrap) "
             "| p (t, seeds) | p (Holm) | p (images) | significant |", "|---|---|---|---|---|---|---|---|---|"]
    significant = []
    for variant, row in result["variants"].items():
        if variant == baseline:
            continue
        for key, label in cols:
            c = row.get(key) or {}
            if "diff_mean" not in c:
                continue

            def p(name):
                return "" if c.get(name) is None else f"{c[name]:.3g}"

            lines.append(f"| {variant} | {label} | {c['diff_mean']:+.3f} | {_interval(key, c.get('diff_ci95'))} | "
                         f"{_interval(key, c.get('diff_ci95_bootstrap'))} | {p('p_value')} | {p('p_holm')} | "
                         f"{p('p_value_images')} | {'yes' if c.get('significant') else 'no'} |")
            if c.get("significant"):
                significant.append(f"`{variant}` on {label} ({c['diff_mean']:+.3f})")
    lines += ["", "A difference is called significant when the paired t-test over seeds, Holm-corrected over the "
              "variants compared on that metric, and the paired bootstrap over eval images both give p < 0.05."]
    lines.append("Significant: " + ("; ".join(significant) + "." if significant else
                                    f"none: no variant differs from `{baseline}` beyond what seeds and the eval "
                                    "sample explain."))
    mcnemar = [(v, k, row[k]["mcnemar"]) for v, row in result["variants"].items() for k in POPE_DETAIL
               if "mcnemar" in row.get(k, {})]
    if mcnemar:
        lines += ["", "McNemar's exact test on POPE answers (pooled over seeds): " + "; ".join(
            f"{v} {k.split('.')[1]}: {m['only_variant_right']} vs {m['only_baseline_right']}, p = {m['p_value']:.3g}"
            for v, k, m in mcnemar) + "."]
    return lines


def bar_charts(result: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [(k, label) for k, label in COLUMNS if any(k in r for r in result["variants"].values())]
    variants = list(result["variants"])
    fig, axes = plt.subplots(1, len(cols), figsize=(2.7 * len(cols), 3.4), squeeze=False)
    references = result.get("reference") or {}
    for ax, (key, label) in zip(axes[0], cols):
        means = [result["variants"][v].get(key, {}).get("mean", 0.0) for v in variants]
        stds = [result["variants"][v].get(key, {}).get("std", 0.0) for v in variants]
        ax.bar(range(len(variants)), means, yerr=stds, capsize=3,
               color=["#888", "#4a90d9", "#d9844a", "#5cb85c"][: len(variants)] or None)
        for (name, ref_label), style in zip(REFERENCES, ("--", ":")):
            if key in references.get(name, {}):
                ax.axhline(references[name][key], color="#c0392b", linestyle=style, lw=1, label=ref_label)
        ax.set_xticks(range(len(variants)), variants, rotation=30)
        ax.set_title(label, fontsize=9)
        ax.set_ylim(0, MME_MAX.get(key, 1.0))  # from zero: chance is part of the picture
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=7)
    fig.suptitle("Reflective tuning ablation (mean ± std over seeds; red: chance)")
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


def _environment(runs: dict[str, dict[int, dict]]) -> dict | None:
    envs = {run_name(v, s): (m.get("tune") or {}).get("environment") for v, seeds in runs.items() for s, m in seeds.items()}
    envs = {k: e for k, e in envs.items() if e}
    if not envs:
        return None
    first = next(iter(envs.values()))
    mixed = sorted({k for e in envs.values() for k in e if e.get(k) != first.get(k)})
    return {"versions": {k: v for k, v in first.items() if k != "lock"}, "lock": first.get("lock"),
            "mixed": ", ".join(mixed) if mixed else None}


def _unparseable(runs: dict[str, dict[int, dict]]) -> dict:
    """Mean over seeds of the unparseable answers per POPE split and benchmark."""
    out: dict[str, dict] = {}
    for variant, seeds in runs.items():
        counts: dict[str, list[float]] = {}
        for m in seeds.values():
            scores = m.get("scores", {})
            for split in POPE_SPLITS:
                if split in scores.get("pope", {}):
                    counts.setdefault(f"pope.{split}", []).append(scores["pope"][split].get("unparseable", 0))
            for name in ("mme", "mmbench", "scienceqa"):
                if "unparseable" in scores.get(name, {}) or name == "mme" and name in scores:
                    value = scores[name].get("unparseable")
                    if value is None:  # MME counts them per subtask
                        value = sum(t.get("unparseable", 0) for t in scores[name].values() if isinstance(t, dict))
                    counts.setdefault(name, []).append(value)
        out[variant] = {k: statistics.fmean(v) for k, v in counts.items()}
    return out


def write_report(eval_dir, tune_dir, loss_dir, out_dir, settings, predictions_dir=None, chance_path=None,
                 base_metrics_path=None) -> dict:
    """`settings`: the params' report section (baseline, thresholds, bootstrap size)."""
    out_dir = Path(out_dir)
    runs = collect(eval_dir, tune_dir, predictions_dir)
    if not runs:
        raise FileNotFoundError(f"no evaluation metrics under {eval_dir}")
    result = ablation(runs, settings.baseline, settings.bootstrap_replicates, settings.bootstrap_seed)
    result["reference"] = json.loads(Path(chance_path).read_text()) if chance_path and Path(chance_path).exists() else None
    base_check = json.loads(Path(base_metrics_path).read_text()) if base_metrics_path and Path(base_metrics_path).exists() else None
    result["base_check"] = {k: v for k, v in (base_check or {}).items()
                            if k.startswith(("heldout_", "shuffled_", "description_", "passed", "failure"))} or None
    result["unparseable"] = _unparseable(runs)
    detail = _details(runs)
    if detail:  # only with real benchmarks: the synthetic report stays as it was
        result["detail"] = detail
    result["environment"] = _environment(runs)
    reason = verdict(result, result["base_check"], settings.min_baseline_pope_accuracy, tuple(settings.baseline_yes_ratio))
    result["void"], result["void_reason"] = reason is not None, reason
    result["tune"] = {v: {str(s): m.get("tune") for s, m in seeds.items()} for v, seeds in runs.items()}
    table = markdown(result)
    write_json(out_dir / "ablation.json", result)
    bar_charts(result, out_dir / "ablation.png")
    if loss_dir and Path(loss_dir).exists():
        loss_curves(loss_dir, out_dir / "loss_curves.png")
    rows = [{"variant": v, "metric": k, "mean": row[k]["mean"]}
            for v, row in result["variants"].items() for k in result["columns"] if k in row]
    write_text(out_dir / "ablation.csv", "variant,metric,mean\n" + "".join(f"{r['variant']},{r['metric']},{r['mean']}\n" for r in rows))
    write_text(out_dir / "report.md", "# REVERIE ablation\n\n" + table +
               "\n![ablation](ablation.png)\n\n![loss curves](loss_curves.png)\n")
    result["markdown"] = table
    return result
