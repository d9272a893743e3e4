"""The headline metrics rebuilt from per-image sums, so that they can be resampled.

Every headline metric of `run.headline` is a function of counts that add up over eval
images (POPE's confusion counts, MME's right answers and all-right images, MMBench's
circularly-right questions, ...). `image_components` turns a run's saved predictions into one
row of such counts per eval image; `METRICS[key].value` turns any (weighted) sum of rows back
into the metric. With every image counted once the value equals the scorer's, which the tests
check; with bootstrap weights it gives the metric on a resampled eval set, paired across runs
that answered the same images (reverie/statistics.py)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .loaders import MME_COGNITION, MME_PERCEPTION
from .scoring import mme_label, parse_choice, pope_yes, reasoning_correct, scienceqa_choice, short_answer_correct

POPE_SPLITS = ("random", "popular", "adversarial")
MME_SUBTASKS = ("existence", "count", "position", "color")


def _f1(tp: float, fp: float, fn: float) -> float:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _pope_counts(rows: list[dict]) -> list[float]:
    """tp, fp, fn, tn per split, in POPE_SPLITS order."""
    out = []
    for split in POPE_SPLITS:
        tp = fp = fn = tn = 0
        for r in rows:
            if r.get("split") != split:
                continue
            said_yes, is_yes = pope_yes(r["answer"]), r["label"] == "yes"
            tp += said_yes and is_yes
            fp += said_yes and not is_yes
            fn += not said_yes and is_yes
            tn += not said_yes and not is_yes
        out += [tp, fp, fn, tn]
    return out


def _mme_task_counts(rows: list[dict], subtasks: tuple[str, ...]) -> list[float]:
    """Per subtask: right answers, questions, images with every answer right, images."""
    out = []
    for task in subtasks:
        mine = [r for r in rows if r.get("subtask") == task]
        right = [mme_label(r["answer"]) == r["label"].lower() for r in mine]
        out += [sum(right), len(right), float(bool(mine) and all(right)), float(bool(mine))]
    return out


def _mme_counts(rows: list[dict]) -> list[float]:
    """The synthetic MME-4's subtasks (its rows carry no `group`)."""
    return _mme_task_counts([r for r in rows if not r.get("group")], MME_SUBTASKS)


def _mme_group_counts(group: str, subtasks: tuple[str, ...]) -> Callable[[list[dict]], list[float]]:
    """The real MME's perception or cognition subtasks (its rows carry their `group`)."""
    return lambda rows: _mme_task_counts([r for r in rows if r.get("group") == group], subtasks)


def _circular_counts(rows: list[dict]) -> list[float]:
    """Questions of this image right in every rotation, and questions."""
    by_question: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        by_question[r["question_id"]].append(parse_choice(r["answer"], r["options"]) == r["label"])
    return [sum(all(v) for v in by_question.values()), len(by_question)]


def _right_counts(correct: Callable[[dict], bool]) -> Callable[[list[dict]], list[float]]:
    return lambda rows: [sum(correct(r) for r in rows), len(rows)]


@dataclass(frozen=True)
class Metric:
    benchmark: str
    counts: Callable[[list[dict]], list[float]]  # one image's rows of this benchmark -> its counts
    value: Callable[[np.ndarray], float]  # summed counts -> the metric


def _pope_split(split: str, what: str) -> Callable[[np.ndarray], float]:
    i = 4 * POPE_SPLITS.index(split)

    def value(c: np.ndarray) -> float:
        tp, fp, fn, tn = c[i:i + 4]
        n = tp + fp + fn + tn
        if what == "f1":
            return _f1(tp, fp, fn)
        if what == "accuracy":
            return (tp + tn) / n if n else 0.0
        return (tp + fp) / n if n else 0.0  # yes_ratio

    return value


def _pope_mean_f1(c: np.ndarray) -> float:
    present = [i for i in range(len(POPE_SPLITS)) if c[4 * i:4 * i + 4].sum() > 0]
    return sum(_f1(*c[4 * i:4 * i + 3]) for i in present) / len(present) if present else 0.0


def _mme_score(c: np.ndarray) -> float:
    """Summed over the subtasks in `c` (four counts each): 100 * (acc + acc+) per subtask."""
    total = 0.0
    for i in range(len(c) // 4):
        right, n, all_right, images = c[4 * i:4 * i + 4]
        if n:
            total += 100 * (right / n + all_right / images)
    return total


def _ratio(c: np.ndarray) -> float:
    return c[0] / c[1] if c[1] else 0.0


METRICS: dict[str, Metric] = {
    **{f"pope.{split}.{what}": Metric("pope", _pope_counts, _pope_split(split, what))
       for split in POPE_SPLITS for what in ("f1", "accuracy", "yes_ratio")},
    "pope.mean_f1": Metric("pope", _pope_counts, _pope_mean_f1),
    "mme.score": Metric("mme", _mme_counts, _mme_score),
    "mme.perception.score": Metric("mme", _mme_group_counts("perception", MME_PERCEPTION), _mme_score),
    "mme.cognition.score": Metric("mme", _mme_group_counts("cognition", MME_COGNITION), _mme_score),
    "mmbench.circular_accuracy": Metric("mmbench", _circular_counts, _ratio),
    "scienceqa.accuracy": Metric("scienceqa", _right_counts(lambda r: scienceqa_choice(r["answer"], len(r["options"]))
                                                            == r["label"]), _ratio),
    "short_answer.accuracy": Metric("short_answer", _right_counts(lambda r: short_answer_correct(r["answer"], r["label"])), _ratio),
    "reasoning.accuracy": Metric("reasoning", _right_counts(reasoning_correct), _ratio),
}


def image_components(rows: list[dict], keys: list[str] | None = None) -> tuple[list[str], dict[str, np.ndarray]]:
    """The eval images (sorted) and, per metric key whose benchmark the rows hold, an
    (images x counts) array of each image's counts."""
    by_benchmark: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_benchmark[r["benchmark"]][r["image"]].append(r)
    images = sorted({r["image"] for r in rows})
    out: dict[str, np.ndarray] = {}
    cache: dict[tuple[str, int], np.ndarray] = {}
    for key in keys or list(METRICS):
        metric = METRICS[key]
        per_image = by_benchmark.get(metric.benchmark)
        if not per_image:
            continue
        token = (metric.benchmark, id(metric.counts))
        if token not in cache:
            width = len(metric.counts([]))
            cache[token] = np.array([metric.counts(per_image[im]) if im in per_image else [0.0] * width
                                     for im in images], dtype=float)
        out[key] = cache[token]
    return images, out
