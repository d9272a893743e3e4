"""The ablation report: variants as rows, benchmarks as columns, what chance is on each, whether
each column measures its skill, and what each comparison is worth.

Read in this order:
- `collect`: per (variant, seed) run, the eval metrics, the tune summary, and from the saved
  predictions the per-image counts every resampled statistic is built from
  (reverie/evaluation/per_image.py) and how many answers are well-formed
  (reverie/evaluation/forms.py); `collect_references` does the same for the always-yes and
  blind-prior answerers.
- `ablation`: per variant and metric, mean and spread over seeds; per column, its validity,
  judged on the baseline (`column_check`); per comparison of vocab.COMPARISONS, the paired
  difference with a two-level bootstrap (seeds, then eval images) and Holm's correction over
  the comparisons of one metric (`compare`); per metric, the minimum detectable difference
  (`power`); the baseline's POPE random-adversarial gap (`pope_adversarial_gap`).
- `verdict`: why the whole comparison is void (a base student that failed its check, a
  baseline that does not see, a void POPE column), said at the top of the report and in
  `ablation.json` (`void`, `void_reason`). A void report calls nothing significant.
- `markdown`, `bar_charts`, `write_report`: what researchers read."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np

from .evaluation.forms import answer_vocabulary, well_formed
from .evaluation.per_image import METRICS, POPE_SPLITS, image_components
from .evaluation.scoring import choice_text
from .io import atomic_path, read_jsonl, write_json, write_text
from .statistics import (bootstrap_interval, bootstrap_p_value, bootstrap_weights, holm, minimum_detectable_difference,
                         one_sided_p_value, resampled, t_interval, two_level_draws, two_level_means)
from .vocab import COMPARISONS, VARIANT_SPECS, VARIANTS, parse_run_name, run_name

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
POPE_COLUMN = "pope.mean_f1"  # the whole report is void when this column is
MME_MAX = {"mme.score": 800, "mme.perception.score": 2000, "mme.cognition.score": 800}
# the real benchmarks' breakdowns (per MME subtask, per MMBench category and l2-category)
DETAIL_PREFIXES = ("mme.", "mmbench.category.", "mmbench.l2_category.")
POPE_DETAIL = [f"pope.{split}.{what}" for split in POPE_SPLITS for what in ("accuracy", "yes_ratio")]
# the skills a synthetic headline column sums or averages: a column judged valid as a whole can
# still hold a skill the baseline answers no better than the blind prior
SKILLS = [("mme.existence.score", "MME existence (max 200)"), ("mme.count.score", "MME count (max 200)"),
          ("mme.position.score", "MME position (max 200)"), ("mme.color.score", "MME colour (max 200)"),
          ("short_answer.count.accuracy", "Short ans: counts"), ("short_answer.color.accuracy", "Short ans: colours"),
          ("mmbench.category.shape.circular_accuracy", "MMBench shapes (circular)"),
          ("mmbench.category.color.circular_accuracy", "MMBench colours (circular)")]
# MMBench by the right option letter (every rotation): CircularEval needs all four
ANSWER_LETTERS = [(letter, f"mmbench.answer_letter.{letter}.accuracy") for letter in "ABCD"]
REFERENCES = (("always_yes", "always yes"), ("blind_prior", "blind prior"))
ALPHA = 0.05  # every test of the report, after Holm where there is a family
POWER = 0.8  # of the minimum detectable difference
MIN_WELL_FORMED = 0.95  # share of the baseline's answers in their question's form
TUNE_KEYS = ("train_loss", "response_loss", "rationale_loss", "tokens_per_s", "padding_fraction", "train_seconds",
             "tokens", "tokens_by_kind", "steps", "answer_exposures", "heldout_yes_no_accuracy", "environment")
MME_NOTE = ("MME-4 sums four subtasks of 200 points (accuracy + accuracy+, in %): existence, count, position and "
            "colour, each asked as MME asks it (\"Is the number of circles in this image 2?\"), once answered yes and "
            "once no per image.")
CONTROLS_NOTE = [
    "- `pos_neg_shuffled`: `pos_neg` with each record's rationales taken from another image's record: the same "
    "amount of rationale text, none of it about this image. `pos_neg` against it separates what the rationale "
    "says from how much text is trained.",
    "- `response_1x`: the baseline at a third of the steps, as the paper's recipe gives it (the same epochs for "
    "every variant, where `pos_neg` has three samples per record). `response` against it is what the extra "
    "steps alone are worth.",
]


# ---- collecting the runs ----------------------------------------------------------------

def in_column(key: str, row: dict) -> bool:
    """Whether a prediction row is one of the questions of headline column `key`."""
    benchmark, part = (key.split(".") + [""])[:2]
    if row["benchmark"] != benchmark:
        return False
    if benchmark == "pope" and part in POPE_SPLITS:
        return row.get("split") == part
    if benchmark == "mme" and part in ("perception", "cognition"):
        return row.get("group") == part
    return True


def run_figures(rows: list[dict]) -> dict:
    """What the statistics need of one run's saved answers: the eval images (sorted), the
    per-image counts of every metric, and per headline column [well-formed answers, answers]
    (the vocabulary of open answers from this run's own labels)."""
    images, components = image_components(rows)
    vocabulary = answer_vocabulary(rows)
    formed = [well_formed(r, vocabulary) for r in rows]
    counts = {}
    for key, _ in COLUMNS:
        mine = [ok for r, ok in zip(rows, formed) if in_column(key, r)]
        if mine:
            counts[key] = [sum(mine), len(mine)]
    return {"images": images, "components": components, "well_formed": counts}


def collect(eval_dir: str | Path, tune_dir: str | Path | None = None,
            predictions_dir: str | Path | None = None) -> dict[str, dict[int, dict]]:
    """Per variant and seed: the eval metrics, the tune summary and (when the predictions are
    there) `run_figures` of the saved answers."""
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(Path(eval_dir).glob("*-s*.json")):
        variant, seed = parse_run_name(path.stem)
        metrics = json.loads(path.read_text())
        if tune_dir and (Path(tune_dir) / path.name).exists():
            tune = json.loads((Path(tune_dir) / path.name).read_text())
            metrics["tune"] = {k: tune.get(k) for k in TUNE_KEYS}
        predictions = Path(predictions_dir) / f"{path.stem}.jsonl" if predictions_dir else None
        if predictions and predictions.exists():
            metrics.update(run_figures(read_jsonl(predictions)))
        runs.setdefault(variant, {})[int(seed)] = metrics
    return runs


def collect_references(references_dir: str | Path | None) -> dict[str, dict]:
    """`run_figures` of the reference answerers' saved answers (`always_yes.jsonl`,
    `blind_prior.jsonl`), with each metric's value on the whole eval set."""
    out = {}
    for name, _ in REFERENCES:
        path = Path(references_dir) / f"{name}.jsonl" if references_dir else None
        if path and path.exists():
            figures = run_figures(read_jsonl(path))
            figures["values"] = {k: float(METRICS[k].value(c.sum(axis=0))) for k, c in figures["components"].items()}
            out[name] = figures
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _ordered(names) -> list[str]:
    """VARIANT_SPECS order (main variants, then the controls), unknown names after, sorted."""
    return [v for v in VARIANT_ORDER if v in names] + sorted(set(names) - set(VARIANT_ORDER))


def _shared_images(runs: dict[str, dict[int, dict]]) -> list[str] | None:
    """The eval images every run answered, when they all answered the same ones (and every run
    saved its answers); otherwise None, and nothing is resampled."""
    image_lists = [m.get("images") for seeds in runs.values() for m in seeds.values()]
    if not image_lists or any(images is None or images != image_lists[0] for images in image_lists):
        return None
    return image_lists[0]


def _shared_weights(runs: dict[str, dict[int, dict]], replicates: int, seed: int) -> np.ndarray | None:
    """One set of resampled eval sets for every run (and the references): runs that answered
    other images cannot be paired, and then no bootstrap is made."""
    images = _shared_images(runs)
    return None if images is None else bootstrap_weights(len(images), replicates, seed)


# ---- the ablation -------------------------------------------------------------------------

def ablation(runs: dict[str, dict[int, dict]], baseline: str = "response", replicates: int = 1000,
             seed: int = 0, references: dict[str, dict] | None = None) -> dict:
    """Per variant and metric: mean, std, a t interval over seeds and the per-seed values. Per
    headline column: `column_check` on the baseline, with the column's minimum detectable
    difference. Per comparison of vocab.COMPARISONS whose two variants ran: `compare`, Holm's
    correction over the comparisons of each metric, and `significant` (Holm p < 0.05 in a
    valid column of a report whose POPE column is valid). Each comparison against the baseline
    is also copied into the variant's cells (diff_mean, diff_ci95, p_value, p_holm, significant)."""
    variants = _ordered(runs)
    images = _shared_images(runs)
    weights = _shared_weights(runs, replicates, seed)
    present = [k for k, _ in COLUMNS if any(k in m for seeds in runs.values() for m in seeds.values())]
    table: dict[str, dict] = {}
    for variant in variants:
        seeds = runs[variant]
        spec = VARIANT_SPECS.get(variant)
        row: dict = {"seeds": sorted(seeds), "control": bool(spec and spec.control)}
        for key in [k for k, _ in COLUMNS] + POPE_DETAIL:
            values = [seeds[s][key] for s in sorted(seeds) if key in seeds[s]]
            if values:
                mean, std = _mean_std(values)
                row[key] = {"mean": mean, "std": std, "ci95": t_interval(values),
                            "per_seed": {str(s): seeds[s][key] for s in sorted(seeds) if key in seeds[s]}}
        table[variant] = row
    bootstrap = Bootstrap(runs, len(images), replicates, seed) if images else None
    comparisons = [compare(variant, against, runs, present, bootstrap) for variant, against in COMPARISONS
                   if variant in runs and against in runs]
    comparisons = [c for c in comparisons if c["metrics"]]
    checks = {key: column_check(key, runs.get(baseline), baseline, references, images, weights) for key in present}
    powers = {key: power(key, comparisons) for key in present}
    for key in present:
        checks[key]["mde"] = (powers[key] or {}).get("mde")
    result = {"baseline": baseline, "columns": [k for k, _ in COLUMNS], "variants": table,
              "comparisons": comparisons,
              "holm_family": [{"variant": c["variant"], "against": c["against"]} for c in comparisons],
              "column_checks": checks, "power": powers,
              "pope_adversarial_gap": pope_adversarial_gap(runs.get(baseline), weights),
              "bootstrap_replicates": replicates if weights is not None else 0,
              "eval_images": len(images) if images is not None else None,
              "pope_f1_standard_error": _pope_standard_errors(runs, weights),
              "skills": _seed_means(runs.get(baseline), {key: key for key, _ in SKILLS}),
              "answer_letters": _seed_means(runs.get(baseline), dict(ANSWER_LETTERS))}
    settle(result)
    return result


def _seed_means(seed_runs: dict[int, dict] | None, keys: dict[str, str]) -> dict[str, float]:
    """{name: mean over the seeds that have metric `key`} for each name -> key present in a run."""
    out = {}
    for name, key in keys.items():
        values = [m[key] for m in (seed_runs or {}).values() if key in m]
        if values:
            out[name] = statistics.fmean(values)
    return out


class Bootstrap:
    """The two-level bootstrap's draws (one set per number of paired seeds, all from
    `report.bootstrap_seed`), and each run's replicate means under them, kept so that a run
    compared twice on the same seeds is resampled once."""

    def __init__(self, runs: dict[str, dict[int, dict]], images: int, replicates: int, seed: int):
        self.runs, self.images, self.replicates, self.seed = runs, images, replicates, seed
        self._draws: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._means: dict[tuple, np.ndarray] = {}

    def draws(self, seeds: int) -> tuple[np.ndarray, np.ndarray]:
        if seeds not in self._draws:
            self._draws[seeds] = two_level_draws(seeds, self.images, self.replicates, self.seed)
        return self._draws[seeds]

    def means(self, variant: str, seeds: list[int], key: str) -> np.ndarray | None:
        """Per replicate, the mean over the drawn seeds of `variant`'s metric, or None when a
        seed's run has no per-image counts of `key`."""
        token = (variant, tuple(seeds), key)
        if token not in self._means:
            comps = [self.runs[variant][s].get("components", {}).get(key) for s in seeds]
            if key not in METRICS or any(c is None for c in comps):
                return None
            picks, weights = self.draws(len(seeds))
            self._means[token] = two_level_means(METRICS[key].value, comps, picks, weights)
        return self._means[token]


def compare(variant: str, against: str, runs: dict[str, dict[int, dict]], keys: list[str],
            bootstrap: Bootstrap | None) -> dict:
    """`variant` minus `against` on each metric, paired by seed (only the seeds both ran with
    that metric): the per-seed differences, their mean and SD, a t interval over seeds
    (descriptive), and the headline interval and two-sided p-value from the two-level bootstrap."""
    out: dict = {"variant": variant, "against": against,
                 "seeds": sorted(set(runs[variant]) & set(runs[against])), "metrics": {}}
    for key in keys:
        paired = [s for s in out["seeds"] if key in runs[variant][s] and key in runs[against][s]]
        if not paired:
            continue
        diffs = [runs[variant][s][key] - runs[against][s][key] for s in paired]
        cell = {"seeds": paired, "diff_per_seed": {str(s): d for s, d in zip(paired, diffs)},
                "diff_mean": statistics.fmean(diffs), "diff_sd": statistics.stdev(diffs) if len(diffs) > 1 else None,
                "diff_ci95_t": t_interval(diffs), "diff_ci95": None, "p_value": None}
        mine = bootstrap.means(variant, paired, key) if bootstrap else None
        theirs = bootstrap.means(against, paired, key) if bootstrap else None
        if mine is not None and theirs is not None:
            replicates = mine - theirs
            cell["diff_ci95"] = bootstrap_interval(replicates)
            cell["p_value"] = bootstrap_p_value(replicates)
        out["metrics"][key] = cell
    return out


def column_check(key: str, base: dict[int, dict] | None, baseline: str, references: dict[str, dict] | None,
                 images: list[str] | None, weights: np.ndarray | None) -> dict:
    """Whether column `key` measures its skill, judged on the baseline's runs: (a) pooled over
    its seeds, the baseline beats each reference answerer (one-sided paired bootstrap over eval
    images, the same resampled images for every seed and the reference, p < 0.05), and (b) at
    least 95 % of its answers to the column's questions are well-formed. Otherwise the column is
    void, with every failure named in `invalid_reason`."""
    check: dict = {"valid": False, "invalid_reason": None, "mde": None, "well_formed": None,
                   **{f"p_vs_{name}": None for name, _ in REFERENCES}, "baseline_value": None,
                   **{f"{name}_value": None for name, _ in REFERENCES}}
    seeds = sorted(s for s in (base or {}) if key in base[s])
    if not seeds:
        check["invalid_reason"] = f"`{baseline}` has no {key}"
        return check
    check["baseline_value"] = statistics.fmean(base[s][key] for s in seeds)
    failures = []
    counts = [base[s].get("well_formed", {}).get(key) for s in seeds]
    if any(c is None for c in counts):
        failures.append(f"no saved answers of `{baseline}` on every seed, so their form is unchecked")
    else:
        share = sum(c[0] for c in counts) / sum(c[1] for c in counts)
        check["well_formed"] = share
        if share < MIN_WELL_FORMED:
            failures.append(f"only {share:.0%} of `{baseline}`'s answers are well-formed "
                            f"(at least {MIN_WELL_FORMED:.0%} needed)")
    comps = [base[s].get("components", {}).get(key) for s in seeds]
    if key not in METRICS:
        failures.append(f"{key} has no per-image counts (reverie/evaluation/per_image.py), so it cannot be tested "
                        "against chance")
    elif weights is None or any(c is None for c in comps):
        failures.append(f"no per-image counts of `{baseline}` on shared eval images, so it cannot be tested "
                        "against chance")
    else:
        value = METRICS[key].value
        pooled = np.mean([resampled(value, c, weights) for c in comps], axis=0)
        for name, label in REFERENCES:
            ref = (references or {}).get(name) or {}
            if key not in ref.get("components", {}) or ref.get("images") != images:
                failures.append(f"no answers of the {label} answerer to the same questions to test against")
                continue
            reference = ref["values"][key]
            p = one_sided_p_value(pooled - resampled(value, ref["components"][key], weights))
            check[f"p_vs_{name}"], check[f"{name}_value"] = p, reference
            if not p < ALPHA:
                failures.append(f"`{baseline}` does not beat the {label} answerer: "
                                f"{_fmt(key, check['baseline_value'])} vs {_fmt(key, reference)}, p = {p:.3g}")
    check["valid"] = not failures
    check["invalid_reason"] = "; ".join(failures) or None
    return check


def power(key: str, comparisons: list[dict]) -> dict | None:
    """The minimum detectable paired difference of metric `key` at 80 % power, two-sided 0.05
    at the first Holm step over its family (alpha / m): (z_{1 - alpha/(2m)} + z_{0.8}) * SD_d /
    sqrt(n), SD_d the root mean square over the family's comparisons of the SD (ddof 1) of their
    per-seed differences, n the paired seeds (the fewest of the family's comparisons). None
    without a comparison on two seeds or more."""
    cells = [c["metrics"][key] for c in comparisons if key in c["metrics"]]
    spread = [c for c in cells if c["diff_sd"] is not None]
    if not spread:
        return None
    sd = math.sqrt(statistics.fmean(c["diff_sd"] ** 2 for c in spread))
    n = min(len(c["seeds"]) for c in spread)
    return {"mde": minimum_detectable_difference(sd, n, len(cells), ALPHA, POWER), "sd_paired": sd, "seeds": n,
            "family_size": len(cells)}


def pope_adversarial_gap(base: dict[int, dict] | None, weights: np.ndarray | None) -> dict | None:
    """The baseline's POPE random F1 minus its adversarial F1, mean over seeds, with a 95 %
    interval and a one-sided p-value (is adversarial below random) from the bootstrap over eval
    images, the same resampled images for every seed."""
    keys = ("pope.random.f1", "pope.adversarial.f1")
    seeds = sorted(s for s in (base or {}) if all(k in base[s] for k in keys))
    if not seeds:
        return None
    out = {"gap": statistics.fmean(base[s][keys[0]] - base[s][keys[1]] for s in seeds), "ci95": None,
           "p_value": None, "seeds": seeds}
    comps = [base[s].get("components", {}) for s in seeds]
    if weights is not None and all(k in c for c in comps for k in keys):
        gaps = np.mean([resampled(METRICS[keys[0]].value, c[keys[0]], weights)
                        - resampled(METRICS[keys[1]].value, c[keys[1]], weights) for c in comps], axis=0)
        out["ci95"], out["p_value"] = bootstrap_interval(gaps), one_sided_p_value(gaps)
    return out


def pope_void(result: dict) -> bool:
    check = (result.get("column_checks") or {}).get(POPE_COLUMN)
    return check is not None and not check["valid"]


def settle(result: dict, void: bool = False) -> None:
    """Holm over the comparisons of each metric, and what is significant: Holm p < 0.05, in a
    valid column, in a report that is not void (a void POPE column voids it). Each comparison
    against the baseline is copied into its variant's cells."""
    void = void or pope_void(result)
    checks = result.get("column_checks") or {}
    for key in result["columns"]:
        cells = [c["metrics"][key] for c in result["comparisons"] if key in c["metrics"]]
        tested = {i: c["p_value"] for i, c in enumerate(cells) if c["p_value"] is not None}
        adjusted = holm(tested)
        valid = (checks.get(key) or {}).get("valid", False)
        for i, cell in enumerate(cells):
            cell["p_holm"] = adjusted.get(i)
            cell["significant"] = cell["p_holm"] is not None and cell["p_holm"] < ALPHA and valid and not void
    for c in result["comparisons"]:
        if c["against"] != result["baseline"] or c["variant"] not in result["variants"]:
            continue
        row = result["variants"][c["variant"]]
        for key, cell in c["metrics"].items():
            if key in row:
                row[key].update({k: cell[k] for k in ("diff_per_seed", "diff_mean", "diff_ci95", "p_value", "p_holm",
                                                      "significant")})


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


def _cell_mean(row: dict, key: str) -> float | None:
    cell = row.get(key)
    return cell.get("mean") if isinstance(cell, dict) else None


def verdict(result: dict, base_check: dict | None, min_accuracy: float, yes_ratio: tuple[float, float]) -> str | None:
    """Why the comparison cannot be read as a result, or None when it can. A figure the verdict
    needs and does not find is a reason, named, never a crash."""
    reasons = []
    if base_check and base_check.get("passed") is False:
        reasons.append(f"the base student failed its check ({base_check.get('failure')})")
    baseline = result.get("baseline")
    row = (result.get("variants") or {}).get(baseline)
    if row is None:
        return f"the baseline `{baseline}` was not evaluated"
    accuracy = [a for a in (_cell_mean(row, f"pope.{s}.accuracy") for s in POPE_SPLITS) if a is not None]
    ratios = [r for r in (_cell_mean(row, f"pope.{s}.yes_ratio") for s in POPE_SPLITS) if r is not None]
    if not accuracy:
        return "; ".join(reasons + [f"the baseline `{baseline}` has no POPE scores"])
    acc = statistics.fmean(accuracy)
    if acc < min_accuracy:
        reasons.append(f"the baseline `{baseline}` answers POPE at accuracy {acc:.3f}, below "
                       f"report.min_baseline_pope_accuracy = {min_accuracy}")
    if not ratios:
        reasons.append(f"the baseline `{baseline}` has no POPE yes-ratio, so an always-yes answerer "
                       "cannot be ruled out")
    else:
        ratio = statistics.fmean(ratios)
        if not yes_ratio[0] <= ratio <= yes_ratio[1]:
            reasons.append(f"the baseline `{baseline}` says yes to {ratio:.1%} of POPE questions, outside "
                           f"report.baseline_yes_ratio = [{yes_ratio[0]}, {yes_ratio[1]}]")
    check = (result.get("column_checks") or {}).get(POPE_COLUMN)
    if check is None:
        reasons.append(f"the baseline `{baseline}` has no POPE mean F1 ({POPE_COLUMN}), so the POPE column "
                       "cannot be judged")
    elif not check.get("valid"):
        reasons.append(f"the POPE column is void: {check.get('invalid_reason')}")
    return "; ".join(reasons) or None


def void_reason(report_dir: str | Path) -> str | None:
    """The reason a written report is void, or None (also when there is no report yet)."""
    path = Path(report_dir) / "ablation.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result.get("void_reason") if result.get("void") else None


# ---- what researchers read ------------------------------------------------------------------

def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if key.startswith("mme.") else f"{value:.3f}"


def _signed(key: str, value: float) -> str:
    return f"{value:+.1f}" if key.startswith("mme.") else f"{value:+.3f}"


def _interval(key: str, ci: list[float] | None) -> str:
    return f"[{_fmt(key, ci[0])}, {_fmt(key, ci[1])}]" if ci else "n/a"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _present(result: dict) -> list[tuple[str, str]]:
    return [(k, label) for k, label in COLUMNS if any(k in r for r in result["variants"].values())]


def _void_column(result: dict, key: str) -> bool:
    check = (result.get("column_checks") or {}).get(key)
    return check is not None and not check["valid"]


def _header(result: dict, key: str, label: str) -> str:
    return f"{label} (void)" if _void_column(result, key) else label


def _name(result: dict, variant: str) -> str:
    return f"{variant} (control)" if result["variants"].get(variant, {}).get("control") else variant


def markdown(result: dict) -> str:
    cols = _present(result)
    lines = []
    if result.get("void"):
        lines += [f"> **VOID: this comparison measures nothing.** {result['void_reason'][0].upper()}"
                  f"{result['void_reason'][1:]}.", ""]
    base = result.get("base_check")
    if base and "heldout_existence_accuracy" in base:
        theme_fp = base.get("heldout_theme_false_positive_rate")
        tempted = f"; absent kinds of the scene's theme called present {theme_fp:.0%}" if theme_fp is not None else ""
        lines += [f"Base student: held-out existence accuracy {base['heldout_existence_accuracy']:.3f} "
                  f"(yes-ratio {base['heldout_yes_ratio']:.2f}{tempted}); the same questions on shuffled images "
                  f"{base['shuffled_image_accuracy']:.3f}; descriptions name "
                  f"{base.get('description_kind_recall', float('nan')):.0%} of the objects' kinds, "
                  f"{base.get('description_object_recall', float('nan')):.0%} at the right position"
                  + (f"; {choice_text(base)}." if choice_text(base) else "."), ""]
    curve_line = base_curve_text(result.get("base_curve") or [])
    if curve_line:
        lines += [curve_line, ""]
    seeds = max((len(r["seeds"]) for r in result["variants"].values()), default=0)
    lines += [f"## Headline: mean ± std over {seeds} seed(s)", "",
              "| variant | seeds | " + " | ".join(_header(result, k, label) for k, label in cols) + " |",
              "|---|---|" + "---|" * len(cols)]
    for variant, row in result["variants"].items():
        cells = [f"{_fmt(k, row[k]['mean'])} ± {_fmt(k, row[k]['std'])}" if k in row else "" for k, _ in cols]
        lines.append(f"| {_name(result, variant)} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    for name, label in REFERENCES:
        ref = (result.get("reference") or {}).get(name)
        if ref:
            lines.append(f"| *{label}* | – | " + " | ".join(_fmt(k, ref.get(k)) for k, _ in cols) + " |")
    lines += ["", "*always yes* answers \"yes\" to everything; *blind prior* never sees an eval image and gives the "
              "answer each question most often has on the train scenes. A column marked (void) does not measure "
              "its skill (see Validity): nothing in it is called significant. "
              + (MME_NOTE if any(k == "mme.score" for k, _ in cols) else ""), ""]
    lines += _validity(result, cols)
    lines += _skill_lines(result)
    lines += _power_lines(result, cols)
    lines += _pope_detail(result)
    lines += _real_detail(result)
    lines += _differences(result, cols)
    lines += _compute(result)
    env = result.get("environment")
    if env:
        lines += ["", "## Environment", "",
                  ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + f" (requirements.lock {env['lock']})"]
        if env.get("mixed"):
            lines.append(f"**The runs came from different environments**: {env['mixed']}")
    return "\n".join(lines) + "\n"


def _validity(result: dict, cols: list[tuple[str, str]]) -> list[str]:
    checks = result.get("column_checks") or {}
    baseline = result["baseline"]
    lines = [f"## Validity of each column (judged on `{baseline}`)", "",
             f"A column measures its skill only where `{baseline}`, pooled over its seeds, beats both reference "
             f"answerers (one-sided paired bootstrap over eval images, {result.get('bootstrap_replicates') or 'no'} "
             "replicates, the same resampled images for every seed and for the reference, p < 0.05) and at least "
             f"{MIN_WELL_FORMED:.0%} of its answers have the form the question asks for (yes/no, an option letter, "
             "a word its labels use). Otherwise it is void. The whole report is void when the POPE mean F1 "
             "column is.", "",
             f"| column | verdict | `{baseline}` | always yes (p) | blind prior (p) | well-formed | reason |",
             "|---|---|---|---|---|---|---|"]
    for key, label in cols:
        c = checks.get(key)
        if c is None:
            continue
        refs = [f"{_fmt(key, c.get(f'{name}_value'))} ({_p(c.get(f'p_vs_{name}'))})"
                if c.get(f"p_vs_{name}") is not None else "n/a" for name, _ in REFERENCES]
        share = "n/a" if c.get("well_formed") is None else f"{c['well_formed']:.0%}"
        lines.append(f"| {label} | {'valid' if c['valid'] else '**void**'} | {_fmt(key, c.get('baseline_value'))} | "
                     + " | ".join(refs) + f" | {share} | {c.get('invalid_reason') or ''} |")
    return lines + [""]


def _skill_lines(result: dict) -> list[str]:
    """The baseline's skills inside the synthetic columns against the same references, each
    marked where it does not beat the blind prior (descriptive: the test is the column's)."""
    skills = result.get("skills") or {}
    if not skills:
        return []
    refs = result.get("reference") or {}
    baseline = result["baseline"]
    lines = [f"## Skills inside the columns (`{baseline}`, mean over seeds)", "",
             "| skill | " + f"`{baseline}` | " + " | ".join(label for _, label in REFERENCES) + " | |",
             "|---|---|" + "---|" * len(REFERENCES) + "---|"]
    for key, label in SKILLS:
        if key not in skills:
            continue
        prior = (refs.get("blind_prior") or {}).get(key)
        mark = "not above the blind prior" if prior is not None and skills[key] <= prior else ""
        lines.append(f"| {label} | {_fmt(key, skills[key])} | "
                     + " | ".join(_fmt(key, (refs.get(name) or {}).get(key)) for name, _ in REFERENCES) + f" | {mark} |")
    lines += ["", "A column is judged as a whole (Validity above). A skill marked here is one the baseline answers "
              "no better than the blind prior: it has not been learned, so this run does not measure what the "
              "variants do to it.", ""]
    letters = result.get("answer_letters") or {}
    if letters:
        guess = 1 / len(letters)
        lines += [f"MMBench answers of `{baseline}` by the right option letter (share right, every rotation): "
                  + ", ".join(f"{letter} {share:.2f}" + (" (below a guess)" if share < guess else "")
                              for letter, share in letters.items())
                  + ". CircularEval counts a question only when it is right under every letter, so a letter the "
                  "student does not map to its option sinks the column however well it sees.", ""]
    return lines


def _power_lines(result: dict, cols: list[tuple[str, str]]) -> list[str]:
    powers = result.get("power") or {}
    rows = [(key, label, powers[key]) for key, label in cols if powers.get(key)]
    lines = ["## Power: the smallest difference each metric could detect", ""]
    if not rows:
        return lines + ["No comparison has two paired seeds or more: the seed-to-seed spread, and so the power, "
                        "is unknown.", ""]
    lines += ["| metric | MDE (80% power) | SD of paired per-seed differences | paired seeds n | comparisons m |",
              "|---|---|---|---|---|"]
    for key, label, p in rows:
        lines.append(f"| {label} | {_fmt(key, p['mde'])} | {_fmt(key, p['sd_paired'])} | {p['seeds']} | "
                     f"{p['family_size']} |")
    return lines + ["", f"MDE = (z_(1 − α/(2m)) + z_({POWER})) × SD_d / √n, with α = {ALPHA} two-sided at the first Holm "
                    "step (α/m, m the comparisons of the metric), SD_d the root mean square over those comparisons of "
                    "the standard deviation (ddof 1) of their paired per-seed differences, and n the paired seeds. "
                    "Normal quantiles: the test is a bootstrap, so this is its normal approximation. A true "
                    "difference smaller than the MDE is more likely missed than found; training noise (the "
                    "seed-to-seed spread), not the eval sample, sets it.", ""]


def _pope_detail(result: dict) -> list[str]:
    se = result.get("pope_f1_standard_error") or {}
    lines = ["## POPE in detail (mean over seeds)", "",
             "| variant | split | F1 | accuracy | yes-ratio | unparseable |", "|---|---|---|---|---|---|"]
    for variant, row in result["variants"].items():
        for split in POPE_SPLITS:
            if f"pope.{split}.f1" not in row:
                continue
            unparseable = (result.get("unparseable", {}).get(variant) or {}).get(f"pope.{split}")
            figures = [_fmt("pope", _cell_mean(row, f"pope.{split}.{what}")) for what in ("f1", "accuracy", "yes_ratio")]
            lines.append(f"| {variant} | {split} | " + " | ".join(figures) +
                         f" | {'' if unparseable is None else f'{unparseable:.1f}'} |")
    for name, label in REFERENCES:
        ref = (result.get("reference") or {}).get(name) or {}
        for split in POPE_SPLITS:
            if f"pope.{split}.f1" in ref:
                lines.append(f"| *{label}* | {split} | {ref[f'pope.{split}.f1']:.3f} | {ref[f'pope.{split}.accuracy']:.3f} "
                             f"| {ref[f'pope.{split}.yes_ratio']:.3f} | |")
    if se:
        lines += ["", f"Standard error of a run's POPE F1 (bootstrap over {result.get('eval_images')} eval images, "
                  "median over runs): " + ", ".join(f"{s} {v:.4f}" for s, v in se.items()) + "."]
    gap = result.get("pope_adversarial_gap")
    if gap:
        where = (f", 95% CI {_interval('pope', gap['ci95'])}, one-sided p = {_p(gap['p_value'])} that adversarial is "
                 "not below random (bootstrap over eval images, seeds pooled)") if gap.get("ci95") else \
            " (no per-image answers: no interval)"
        lines += ["", f"Hallucination headroom: `{result['baseline']}`'s POPE random F1 minus its adversarial F1, mean "
                  f"over {len(gap['seeds'])} seed(s): {gap['gap']:+.3f}{where}. POPE reports adversarial below "
                  "random for every model it tested; without that gap there is no co-occurrence hallucination to "
                  "mitigate."]
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


def _family_text(result: dict) -> str:
    family = [f"{c['variant']} − {c['against']}" for c in result["comparisons"]]
    return f"Holm over the {len(family)} comparisons of each metric: " + ", ".join(family) + "."


def _differences(result: dict, cols: list[tuple[str, str]]) -> list[str]:
    replicates = result.get("bootstrap_replicates")
    lines = ["## Differences, paired by seed", ""]
    if not result["comparisons"]:
        return lines + ["No comparison of vocab.COMPARISONS has both its variants evaluated.", ""]
    lines += ["| comparison | metric | difference | 95% CI (two-level bootstrap) | p | p (Holm) | significant "
              "| per-seed differences | 95% CI over seeds (t) |", "|---|---|---|---|---|---|---|---|---|"]
    significant = []
    for comp in result["comparisons"]:
        name = f"{comp['variant']} − {comp['against']}"
        for key, label in cols:
            c = comp["metrics"].get(key)
            if c is None:
                continue
            sig = "yes" if c.get("significant") else ("void column" if _void_column(result, key) else "no")
            per_seed = ", ".join(f"s{s} {_signed(key, d)}" for s, d in c["diff_per_seed"].items())
            lines.append(f"| {name} | {label} | {_signed(key, c['diff_mean'])} | {_interval(key, c['diff_ci95'])} | "
                         f"{_p(c['p_value'])} | {_p(c.get('p_holm'))} | {sig} | {per_seed} | "
                         f"{_interval(key, c['diff_ci95_t'])} |")
            if c.get("significant"):
                significant.append(f"{name} on {label} ({_signed(key, c['diff_mean'])})")
    lines += ["", f"Each difference is paired by seed: a comparison uses only the seeds both variants ran. Its interval "
              f"and p-value come from a two-level bootstrap ({replicates} replicates): each replicate draws the "
              "paired seeds with replacement, then for each drawn seed the eval images with replacement, scoring "
              "both runs of that seed on the same drawn images; p is two-sided and counts one replicate's worth on "
              "each side, so it is never 0. " + _family_text(result) + " A difference is called significant when "
              "its Holm-adjusted p < 0.05, its column is valid and the report is not void. The t interval over "
              "seeds is descriptive."]
    lines.append("Significant: " + ("; ".join(significant) + "." if significant else
                                    "none: no comparison differs beyond what seeds and the eval sample explain."))
    return lines + [""]


def _tune_means(result: dict) -> dict[str, dict]:
    out = {}
    for variant, seeds in (result.get("tune") or {}).items():
        summaries = [t for t in seeds.values() if t]
        figures: dict[str, float | None] = {}
        for name, read in (("steps", lambda t: t.get("steps")),
                           ("answer_exposures", lambda t: t.get("answer_exposures")),
                           ("rationale_tokens", lambda t: None if t.get("tokens_by_kind") is None else
                            sum(t["tokens_by_kind"].get(k, 0) for k in ("positive", "negative"))),
                           ("response_loss", lambda t: t.get("response_loss"))):
            values = [v for v in map(read, summaries) if isinstance(v, (int, float)) and v == v]
            figures[name] = statistics.fmean(values) if values else None
        out[variant] = figures
    return out


def _compute(result: dict) -> list[str]:
    """The compute-fairness table, and whether the main variants trained alike."""
    tune = _tune_means(result)
    notes = []
    lines = []
    if any(any(v is not None for v in figures.values()) for figures in tune.values()):
        def show(value, digits=0):
            return "n/a" if value is None else f"{value:,.{digits}f}"

        lines += ["## Compute per variant (mean over seeds)", "",
                  "| variant | optimizer steps | answer turns trained | rationale-sample tokens | response loss |",
                  "|---|---|---|---|---|"]
        for variant in _ordered(tune):
            f = tune[variant]
            lines.append(f"| {_name(result, variant)} | {show(f['steps'])} | {show(f['answer_exposures'])} | "
                         f"{show(f['rationale_tokens'])} | {show(f['response_loss'], 3)} |")
        lines.append("")
    main = [v for v in _ordered(tune) if v in VARIANT_SPECS and not VARIANT_SPECS[v].control]
    alike = []
    for what, name in (("steps", "optimizer steps"), ("answer_exposures", "answer exposures")):
        values = {v: tune[v][what] for v in main}
        if not values or any(x is None for x in values.values()):
            notes.append(f"- The tune metrics do not record the {name} of every main variant: whether they trained "
                         "alike is unchecked.")
        elif len(set(values.values())) > 1:
            notes.append(f"- **The main variants differ in {name}** (" + ", ".join(f"{v} {x:,.0f}" for v, x in
                                                                                 values.items()) +
                         "): their differences mix the rationale with the amount of training.")
        else:
            alike.append(f"the same {name} ({next(iter(values.values())):,.0f})")
    if alike:
        notes.append("- Every main variant trained " + " and ".join(alike) + (
            ": the main variants differ in what they are taught, not in how long or how often they see an answer."
            if len(alike) == 2 else "."))
    return lines + ["## Controls", ""] + CONTROLS_NOTE + notes + [""]


def bar_charts(result: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cols = _present(result)
    variants = list(result["variants"])
    palette = ["#888", "#4a90d9", "#d9844a", "#5cb85c", "#9b59b6", "#c9a227", "#16a085", "#7f8c8d"]
    colours = [palette[i % len(palette)] for i in range(len(variants))]
    controls = [bool(result["variants"][v].get("control")) for v in variants]
    ncols = min(4, len(cols))
    nrows = math.ceil(len(cols) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(2.9, 0.45 * len(variants) + 1.2) * ncols, 3.3 * nrows + 0.6),
                             squeeze=False)
    for ax in axes.flat[len(cols):]:
        ax.set_visible(False)
    references = result.get("reference") or {}
    for ax, (key, label) in zip(axes.flat, cols):
        means = [result["variants"][v].get(key, {}).get("mean", 0.0) for v in variants]
        stds = [result["variants"][v].get(key, {}).get("std", 0.0) for v in variants]
        bars = ax.bar(range(len(variants)), means, yerr=stds, capsize=3, color=colours, edgecolor="black", lw=0.5)
        for bar, control in zip(bars, controls):
            if control:
                bar.set_hatch("///")
                bar.set_alpha(0.6)
        for (name, ref_label), style in zip(REFERENCES, ("--", ":")):
            if key in references.get(name, {}):
                ax.axhline(references[name][key], color="#c0392b", linestyle=style, lw=1, label=ref_label)
        ax.set_xticks(range(len(variants)), variants, rotation=40, ha="right", fontsize=7)
        void = _void_column(result, key)
        ax.set_title(f"{label} (void)" if void else label, fontsize=9, color="#c0392b" if void else "black")
        if void:  # the column does not measure its skill: greyed, not hidden
            ax.set_facecolor("#eeeeee")
        ax.set_ylim(0, MME_MAX.get(key, 1.0))  # from zero: chance is part of the picture
    handles, labels = axes[0][0].get_legend_handles_labels()
    if any(controls):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="///"))
        labels.append("control")
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=7, ncols=len(handles))
    fig.suptitle("Reflective tuning ablation (mean ± std over seeds; red: chance; hatched: controls)", x=0.02,
                 ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
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


def read_base_curve(path: str | Path | None) -> list[dict]:
    """The base check's points during the base's training (stages/base.py --check-curve), numbers
    as floats (None where a figure was not measured); [] without the file or a point."""
    import csv

    if not path or not Path(path).exists():
        return []
    with Path(path).open() as handle:
        rows = list(csv.DictReader(handle))
    return [{k: (v if k == "phase" else int(v) if k == "step" else float(v) if v != "" else None) for k, v in r.items()}
            for r in rows]


def base_curve_text(points: list[dict]) -> str | None:
    """One line: seeing accuracy and the worst letter's multiple-choice accuracy at four steps
    spread over the base's training, and where its skills phase began."""
    if not points:
        return None
    picks = sorted({points[round(i * (len(points) - 1) / 3)]["step"] for i in range(4)})
    at = {p["step"]: p for p in points}

    def series(key: str) -> str:
        return " / ".join("–" if at[s].get(key) is None else f"{at[s][key]:.2f}" for s in picks)

    skills = next((p["step"] for p in points if p["phase"] == "skills"), None)
    return (f"Base check during its training (`plots/base_check.csv`, figure below): seeing accuracy {series('seeing')}"
            f" and multiple choice, worst letter, {series('choice_worst')} at steps "
            f"{' / '.join(map(str, picks))}" + (f" (skills phase from about step {skills})" if skills else "") + ".")


def base_curve_chart(points: list[dict], path: str | Path) -> None:
    """Seeing (left) and multiple choice by right letter (right) against the base's steps, the
    seeing phase shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["step"] for p in points]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharex=True)
    if not points:  # a pretrained base (not trained here), or no plots/base_check.csv
        for ax in axes:
            ax.text(0.5, 0.5, "no base check during training", ha="center", va="center", transform=ax.transAxes)
    lines = ((axes[0], "seeing", "seeing accuracy", "k"), (axes[0], "existence", "existence accuracy", "tab:blue"),
             (axes[0], "shuffled", "shuffled images", "tab:gray"), (axes[0], "theme_fp", "theme kinds called present", "tab:red"),
             (axes[1], "choice", "all", "k"), *((axes[1], f"choice_{x}", f"right letter {x}", c)
                                               for x, c in zip("ABCD", ("tab:blue", "tab:orange", "tab:green", "tab:purple"))))
    for ax, key, label, color in lines:
        values = [p.get(key) for p in points]
        if any(v is not None for v in values):
            ax.plot(steps, [float("nan") if v is None else v for v in values], label=label, color=color,
                    lw=2 if color == "k" else 1)
    seeing_until = max((p["step"] for p in points if p["phase"] == "seeing"), default=None)
    for ax, title in zip(axes, ("held-out existence", "multiple choice (MMBench's form)")):
        if seeing_until:
            ax.axvspan(0, seeing_until, color="0.92", zorder=0, label="seeing phase")
        ax.set_title(title)
        ax.set_xlabel("base step")
        ax.set_ylim(-0.02, 1.02)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
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
                 base_metrics_path=None, references_dir=None, base_curve_path=None) -> dict:
    """`settings`: the params' report section (baseline, thresholds, bootstrap size). The
    reference answerers' saved answers are read from `references_dir`, by default the `chance`
    folder under `predictions_dir` (where the chance stage writes them)."""
    out_dir = Path(out_dir)
    runs = collect(eval_dir, tune_dir, predictions_dir)
    if not runs:
        raise FileNotFoundError(f"no evaluation metrics under {eval_dir}")
    if references_dir is None and predictions_dir is not None:
        references_dir = Path(predictions_dir) / "chance"
    result = ablation(runs, settings.baseline, settings.bootstrap_replicates, settings.bootstrap_seed,
                      collect_references(references_dir))
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
    settle(result, void=result["void"])  # a void report calls nothing significant
    result["tune"] = {v: {str(s): m.get("tune") for s, m in seeds.items()} for v, seeds in runs.items()}
    curve = read_base_curve(base_curve_path)
    result["base_curve"] = curve or None
    table = markdown(result)
    write_json(out_dir / "ablation.json", result)
    bar_charts(result, out_dir / "ablation.png")
    if loss_dir and Path(loss_dir).exists():
        loss_curves(loss_dir, out_dir / "loss_curves.png")
    rows = [{"variant": v, "metric": k, "mean": row[k]["mean"]}
            for v, row in result["variants"].items() for k in result["columns"] if k in row]
    write_text(out_dir / "ablation.csv", "variant,metric,mean\n" + "".join(f"{r['variant']},{r['metric']},{r['mean']}\n" for r in rows))
    base_curve_chart(curve, out_dir / "base_check.png")
    write_text(out_dir / "report.md", "# REVERIE ablation\n\n" + table +
               "\n![ablation](ablation.png)\n\n![loss curves](loss_curves.png)\n" +
               ("\n![base check during its training](base_check.png)\n" if curve else ""))
    result["markdown"] = table
    return result
