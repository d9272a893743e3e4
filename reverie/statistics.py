"""What a difference between two variants is worth: intervals over seeds, a bootstrap over
eval images paired across runs, McNemar's test on POPE answers, and Holm's correction for
the many comparisons of one table."""
from __future__ import annotations

import math
import statistics

import numpy as np


def t_interval(values: list[float], level: float = 0.95) -> list[float] | None:
    """Student-t interval of the mean; None below two values (no spread to measure)."""
    if len(values) < 2:
        return None
    from scipy.stats import t

    mean = statistics.fmean(values)
    half = t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return [mean - half, mean + half]


def bootstrap_weights(images: int, replicates: int, seed: int) -> np.ndarray:
    """(replicates x images) multinomial counts: each row one eval set drawn with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(images, np.full(images, 1.0 / images), size=replicates).astype(float)


def resampled(value, components: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The metric on every resampled eval set."""
    totals = weights @ components
    return np.array([value(row) for row in totals])


def bootstrap_interval(samples: np.ndarray, level: float = 0.95) -> list[float]:
    low, high = np.quantile(samples, [0.5 - level / 2, 0.5 + level / 2])
    return [float(low), float(high)]


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided: twice the smaller share of resampled differences on either side of zero
    (at least one replicate's worth, so an all-positive bootstrap never reports p = 0)."""
    n = len(differences)
    below = (np.sum(differences <= 0) + 1) / (n + 1)
    above = (np.sum(differences >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def mcnemar_p_value(only_first_right: int, only_second_right: int) -> float:
    """Exact two-sided McNemar test: the discordant pairs are a fair coin under the null."""
    from scipy.stats import binomtest

    n = only_first_right + only_second_right
    if n == 0:
        return 1.0
    return float(binomtest(only_first_right, n, 0.5).pvalue)


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down, kept monotone)."""
    order = sorted(p_values, key=p_values.get)
    m = len(order)
    adjusted, running = {}, 0.0
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[key]))
        adjusted[key] = running
    return adjusted
