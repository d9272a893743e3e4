"""What a difference between two variants is worth, and what the miniature could have seen.

- `two_level_draws` / `two_level_means`: the hierarchical bootstrap of a paired difference:
  each replicate draws the paired seeds with replacement, then, for each drawn seed, the eval
  images with replacement; both runs of a seed are scored on the same drawn images.
- `bootstrap_weights` / `resampled`: the bootstrap over eval images alone (one set of image
  weights shared by every run it scores), for a run against the reference answerers.
- `bootstrap_p_value` (two-sided) and `one_sided_p_value`: counted with one replicate's worth
  added on each side, so a p-value is never 0.
- `holm`: Holm's step-down correction over one family of comparisons.
- `minimum_detectable_difference`: the paired difference a test of that family detects at 80 %
  power, from the observed seed-to-seed spread of the paired differences.
- `t_interval`: the descriptive Student-t interval over seeds."""
from __future__ import annotations

import math
import statistics

import numpy as np


def t_interval(values: list[float], level: float = 0.95) -> list[float] | None:
    """Student-t interval of the mean; None below two values (no spread to measure)."""
    if len(values) < 2:
        return None
    from scipy.special import stdtrit  # Student t's quantile function; scipy.stats takes twice as long to import

    mean = statistics.fmean(values)
    half = float(stdtrit(len(values) - 1, 0.5 + level / 2)) * statistics.stdev(values) / math.sqrt(len(values))
    return [mean - half, mean + half]


def bootstrap_weights(images: int, replicates: int, seed: int) -> np.ndarray:
    """(replicates x images) multinomial counts: each row one eval set drawn with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(images, np.full(images, 1.0 / images), size=replicates).astype(float)


def resampled(value, components: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The metric on every resampled eval set (a row of `weights`)."""
    totals = weights @ components
    return np.array([value(row) for row in totals])


def two_level_draws(seeds: int, images: int, replicates: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The two-level bootstrap's draws, from one generator in this order: (replicates x seeds)
    indices into the paired seeds (each replicate draws `seeds` of them with replacement), then
    (replicates x seeds x images) multinomial image weights, one eval set per drawn seed."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, seeds, size=(replicates, seeds))
    weights = rng.multinomial(images, np.full(images, 1.0 / images), size=(replicates, seeds))
    return picks, weights.astype(np.float32)  # counts up to `images`: exact in float32, half the memory


def two_level_means(value, components: list[np.ndarray], picks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per replicate, the mean over its drawn seeds of the metric of that seed's run
    (`components[picks[b, j]]`) on that draw's images (`weights[b, j]`). The difference of two
    runs' means under the same draws is the replicate's paired difference."""
    flat, which = weights.reshape(-1, weights.shape[-1]), picks.reshape(-1)
    out = np.zeros(which.shape)
    for index, comps in enumerate(components):
        drawn = np.flatnonzero(which == index)
        if drawn.size:
            totals = flat[drawn] @ comps.astype(np.float32)
            out[drawn] = [value(row) for row in totals.astype(float)]
    return out.reshape(picks.shape).mean(axis=1)


def bootstrap_interval(samples: np.ndarray, level: float = 0.95) -> list[float]:
    """The percentile interval."""
    low, high = np.quantile(samples, [0.5 - level / 2, 0.5 + level / 2])
    return [float(low), float(high)]


TIE = 1e-12  # a resampled difference this close to zero is a tie that float rounding moved


def _ties_at_zero(differences: np.ndarray) -> np.ndarray:
    differences = np.asarray(differences, dtype=float)
    return np.where(np.abs(differences) <= TIE, 0.0, differences)


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided: twice the smaller share of resampled differences on either side of zero
    (at least one replicate's worth, so an all-positive bootstrap never reports p = 0). A
    difference within `TIE` of zero counts on both sides."""
    differences = _ties_at_zero(differences)
    n = len(differences)
    below = (np.sum(differences <= 0) + 1) / (n + 1)
    above = (np.sum(differences >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def one_sided_p_value(differences: np.ndarray) -> float:
    """One-sided, for "the difference is above zero": the share of resampled differences at or
    below zero, with one replicate's worth added (never 0)."""
    return float((np.sum(differences <= 0) + 1) / (len(differences) + 1))


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down, kept monotone)."""
    order = sorted(p_values, key=p_values.get)
    m = len(order)
    adjusted, running = {}, 0.0
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[key]))
        adjusted[key] = running
    return adjusted


def minimum_detectable_difference(sd: float, n: int, family: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest paired difference a two-sided test at the first Holm step (alpha / family)
    detects with the given power, by the normal approximation:
    (z_{1 - alpha / (2 family)} + z_{power}) * sd / sqrt(n)."""
    z = statistics.NormalDist().inv_cdf
    return (z(1 - alpha / (2 * family)) + z(power)) * sd / math.sqrt(n)
