"""The ablation maths of the report, one rule at a time, on `runs` tables built by hand.

Every expected figure is worked out by hand (in a comment) or by numpy/scipy called directly
on the hand-written numbers, never by the functions under test. The bootstraps are redrawn
here from numpy's generator in the order reverie/statistics.py documents (seed picks, then
image weights) and scored by an independent vectorised formula."""
import json
import math
import statistics

import numpy as np
import pytest
from scipy.stats import norm, t as student_t

import reverie.report as report
from reverie.evaluation.run import headline
from reverie.evaluation.scoring import score_predictions
from reverie.report import (_mean_std, _pope_standard_errors, _shared_weights, ablation, column_check, compare,
                            run_figures, verdict, void_reason)
from reverie.statistics import (bootstrap_interval, bootstrap_p_value, bootstrap_weights, holm, resampled,
                                t_interval)
from reverie.vocab import COMPARISONS

KEY = "short_answer.accuracy"  # a headline column whose per-image counts are (right, asked)
NO_BOOT = "scienceqa.accuracy"  # a headline column without per-image counts (not in METRICS)
N = 20
IMAGES = [f"im{i:02d}" for i in range(N)]


def hits(right) -> np.ndarray:
    return np.array([float(i in right) for i in range(N)])


def sa_run(right, images: bool = True, components: bool = True, **extra) -> dict:
    """One run's metrics: short-answer accuracy right on the images numbered in `right`, one
    question per image, every answer well-formed."""
    m = {KEY: len(right) / N, **extra}
    if images:
        m["images"] = list(IMAGES)
    if components:
        m["components"] = {KEY: np.stack([hits(right), np.ones(N)], axis=1)}
        m["well_formed"] = {KEY: [N, N]}
    return m


def reference(right) -> dict:
    """A reference answerer right on the images numbered in `right`."""
    return {"images": list(IMAGES), "components": {KEY: np.stack([hits(right), np.ones(N)], axis=1)},
            "values": {KEY: len(right) / N}, "well_formed": {KEY: [N, N]}}


CHANCE = {"always_yes": reference(set()), "blind_prior": reference({0})}  # 0.0 and 0.05


def plain(values: dict[int, float], key: str = NO_BOOT) -> dict[int, dict]:
    return {s: {key: v} for s, v in values.items()}


def comparison(result: dict, variant: str, against: str = "response") -> dict:
    found = [c for c in result["comparisons"] if (c["variant"], c["against"]) == (variant, against)]
    assert len(found) == 1
    return found[0]["metrics"]


# ---- independent bootstraps: numpy's generator drawn by hand -------------------------------

def my_weights(replicates: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multinomial(N, [1.0 / N] * N, size=replicates).astype(float)


def my_accuracy(weights: np.ndarray, right) -> np.ndarray:
    return (weights @ hits(right)) / weights.sum(axis=1)


def my_two_level(variant_rights, base_rights, replicates: int, seed: int) -> np.ndarray:
    """Per replicate: draw k of the k paired seeds, then per drawn seed N images; the mean
    over the drawn seeds of (variant - baseline) accuracy on that seed's drawn images."""
    rng = np.random.default_rng(seed)
    k = len(variant_rights)
    picks = rng.integers(0, k, size=(replicates, k))
    weights = rng.multinomial(N, [1.0 / N] * N, size=(replicates, k)).astype(float)
    v = np.array([hits(r) for r in variant_rights])[picks]  # (replicates, k, N)
    b = np.array([hits(r) for r in base_rights])[picks]
    # every drawn eval set has N images: the difference is an integer count over N * k, exact at a tie
    return ((weights * v).sum(-1) - (weights * b).sum(-1)).sum(axis=1) / (N * k)


def my_two_sided_p(d: np.ndarray) -> float:
    n = len(d)
    return min(1.0, 2 * min((np.sum(d <= 0) + 1) / (n + 1), (np.sum(d >= 0) + 1) / (n + 1)))


def my_one_sided_p(d: np.ndarray) -> float:
    return (np.sum(d <= 0) + 1) / (len(d) + 1)


# ---- _mean_std ---------------------------------------------------------------------------------

def test_mean_std_uses_the_sample_std_and_zero_for_one_value():
    # two values 1 and 3: mean 2, sample std sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2)
    assert _mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    # three values 2, 4, 9: mean 5, sample std sqrt((9 + 1 + 16) / 2) = sqrt(13)
    mean, std = _mean_std([2.0, 4.0, 9.0])
    assert mean == 5.0 and std == pytest.approx(math.sqrt(13))
    assert _mean_std([0.7]) == (0.7, 0.0)


# ---- ablation over seeds: means, stds, intervals, paired differences ------------------------

def test_ablation_cells_by_hand_over_three_seeds():
    runs = {"response": plain({0: 0.5, 1: 0.6, 2: 0.7}), "pos": plain({0: 0.7, 1: 0.7, 2: 0.8}),
            "neg": plain({0: 0.4, 1: 0.7, 2: 0.5})}
    result = ablation(runs, "response", replicates=50)
    assert result["baseline"] == "response" and list(result["variants"]) == ["response", "pos", "neg"]
    base = result["variants"]["response"]
    assert base["seeds"] == [0, 1, 2] and base["control"] is False
    cell = base[NO_BOOT]
    # 0.5, 0.6, 0.7: mean 0.6, sample std 0.1, half-width t(0.975, 2) * 0.1 / sqrt 3
    half = student_t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert cell["mean"] == pytest.approx(0.6) and cell["std"] == pytest.approx(0.1)
    assert cell["ci95"] == pytest.approx([0.6 - half, 0.6 + half])
    assert cell["per_seed"] == {"0": 0.5, "1": 0.6, "2": 0.7}
    # the baseline is not compared with itself
    assert not {"diff_mean", "diff_per_seed", "p_value", "p_holm", "significant"} & set(cell)

    pos = comparison(result, "pos")[NO_BOOT]
    # diffs 0.2, 0.1, 0.1: mean 0.1333, sd 0.0577
    diffs = [0.7 - 0.5, 0.7 - 0.6, 0.8 - 0.7]
    assert pos["seeds"] == [0, 1, 2]
    assert pos["diff_per_seed"] == {"0": pytest.approx(0.2), "1": pytest.approx(0.1), "2": pytest.approx(0.1)}
    assert pos["diff_mean"] == pytest.approx(0.4 / 3)
    assert pos["diff_sd"] == pytest.approx(0.1 / math.sqrt(3))
    half = student_t.ppf(0.975, 2) * statistics.stdev(diffs) / math.sqrt(3)
    assert pos["diff_ci95_t"] == pytest.approx([0.4 / 3 - half, 0.4 / 3 + half])
    neg = comparison(result, "neg")[NO_BOOT]
    assert neg["diff_per_seed"] == {"0": pytest.approx(-0.1), "1": pytest.approx(0.1), "2": pytest.approx(-0.2)}
    # no per-image counts: no bootstrap, no test, nothing significant
    assert pos["diff_ci95"] is None and pos["p_value"] is None and pos["p_holm"] is None
    assert pos["significant"] is False
    assert result["bootstrap_replicates"] == 0 and result["eval_images"] is None
    assert result["pope_f1_standard_error"] is None
    # the comparison against the baseline is copied into the variant's cell
    copied = result["variants"]["pos"][NO_BOOT]
    assert copied["diff_mean"] == pytest.approx(0.4 / 3) and copied["p_value"] is None
    assert copied["significant"] is False and copied["mean"] == pytest.approx(2.2 / 3)


def test_a_single_seed_has_no_spread_no_interval_and_no_power():
    runs = {"response": plain({0: 0.5}), "pos": plain({0: 0.75})}
    result = ablation(runs, "response")
    base = result["variants"]["response"][NO_BOOT]
    assert base["mean"] == 0.5 and base["std"] == 0.0 and base["ci95"] is None
    pos = comparison(result, "pos")[NO_BOOT]
    assert pos["diff_per_seed"] == {"0": 0.25} and pos["diff_mean"] == 0.25
    assert pos["diff_sd"] is None and pos["diff_ci95_t"] is None
    assert result["power"][NO_BOOT] is None and result["column_checks"][NO_BOOT]["mde"] is None


def test_a_variant_with_a_seed_the_baseline_lacks_pairs_only_shared_seeds():
    runs = {"response": plain({0: 0.5, 1: 0.6}), "pos": plain({0: 0.7, 1: 0.9, 2: 0.2})}
    result = ablation(runs, "response")
    cell = result["variants"]["pos"][NO_BOOT]
    assert result["variants"]["pos"]["seeds"] == [0, 1, 2]
    assert cell["per_seed"] == {"0": 0.7, "1": 0.9, "2": 0.2} and cell["mean"] == pytest.approx(0.6)
    # paired seeds 0 and 1 only: diffs 0.2 and 0.3
    pos = comparison(result, "pos")[NO_BOOT]
    assert pos["seeds"] == [0, 1]
    assert pos["diff_per_seed"] == {"0": pytest.approx(0.2), "1": pytest.approx(0.3)}
    assert pos["diff_mean"] == pytest.approx(0.25)


def test_the_two_level_bootstrap_of_a_variant_missing_a_seed_draws_from_the_shared_seeds():
    base = [set(range(5)), set(range(8)), set(range(3))]
    pos = [set(range(9)), set(range(12))]  # seed 2 never ran
    runs = {"response": {s: sa_run(r) for s, r in enumerate(base)},
            "pos": {s: sa_run(r) for s, r in enumerate(pos)}}
    cell = comparison(ablation(runs, "response", replicates=300, seed=4, references=CHANCE), "pos")[KEY]
    d = my_two_level(pos, base[:2], 300, 4)  # two paired seeds: draws of two
    assert cell["seeds"] == [0, 1]
    assert cell["diff_ci95"] == pytest.approx(list(np.quantile(d, [0.025, 0.975])))
    assert cell["p_value"] == pytest.approx(my_two_sided_p(d))


def test_seeds_missing_a_metric_are_left_out_on_either_side():
    runs = {"response": {0: {NO_BOOT: 0.5, "reasoning.accuracy": 0.4}, 1: {NO_BOOT: 0.6, "reasoning.accuracy": 0.5},
                         2: {NO_BOOT: 0.6}},
            "pos": {0: {NO_BOOT: 0.8, "reasoning.accuracy": 0.5}, 1: {NO_BOOT: 0.7}, 2: {NO_BOOT: 0.9}}}
    result = ablation(runs, "response")
    pos = comparison(result, "pos")
    assert pos[NO_BOOT]["diff_per_seed"] == {"0": pytest.approx(0.3), "1": pytest.approx(0.1), "2": pytest.approx(0.3)}
    # reasoning only on seed 0 of `pos` (and seeds 0, 1 of the baseline): one pair, 0.5 - 0.4
    assert result["variants"]["pos"]["reasoning.accuracy"]["per_seed"] == {"0": 0.5}
    assert pos["reasoning.accuracy"]["diff_per_seed"] == {"0": pytest.approx(0.1)}
    assert pos["reasoning.accuracy"]["seeds"] == [0]
    # the baseline lacks the metric on the only seed `pos` has it: nothing to pair
    runs = {"response": {0: {NO_BOOT: 0.5}, 1: {NO_BOOT: 0.6, "reasoning.accuracy": 0.5}},
            "pos": {0: {NO_BOOT: 0.8, "reasoning.accuracy": 0.7}, 1: {NO_BOOT: 0.7}}}
    result = ablation(runs, "response")
    assert "reasoning.accuracy" not in comparison(result, "pos")
    assert result["variants"]["pos"]["reasoning.accuracy"]["per_seed"] == {"0": 0.7}
    assert "diff_mean" not in result["variants"]["pos"]["reasoning.accuracy"]


def test_compare_pairs_seeds_that_both_have_the_metric():
    runs = {"pos": {0: {NO_BOOT: 0.9}, 1: {"other": 1.0}, 3: {NO_BOOT: 0.4}},
            "response": {0: {NO_BOOT: 0.5}, 1: {NO_BOOT: 0.5}, 2: {NO_BOOT: 0.1}, 3: {"other": 0.0}}}
    out = compare("pos", "response", runs, [NO_BOOT, "reasoning.accuracy"], None)
    assert out["variant"] == "pos" and out["against"] == "response" and out["seeds"] == [0, 1, 3]
    assert list(out["metrics"]) == [NO_BOOT]
    cell = out["metrics"][NO_BOOT]
    assert cell["diff_per_seed"] == {"0": pytest.approx(0.4)} and cell["diff_mean"] == pytest.approx(0.4)
    assert cell["diff_ci95_t"] is None and cell["p_value"] is None


# ---- the comparisons: vocab.COMPARISONS, as data ------------------------------------------------

def test_every_comparison_whose_two_variants_ran_in_the_order_of_vocab():
    values = {"response": 0.5, "pos": 0.6, "neg": 0.55, "pos_neg": 0.7, "pos_neg_shuffled": 0.62,
              "response_1x": 0.45, "zeta": 0.1}
    runs = {v: plain({0: x, 1: x + 0.01 * (v == "pos")}) for v, x in values.items()}
    result = ablation(runs, "response")
    assert list(result["variants"]) == ["response", "pos", "neg", "pos_neg", "pos_neg_shuffled", "response_1x", "zeta"]
    assert [result["variants"][v]["control"] for v in result["variants"]] == [False] * 4 + [True, True, False]
    pairs = [(c["variant"], c["against"]) for c in result["comparisons"]]
    assert pairs == list(COMPARISONS) == [("pos", "response"), ("neg", "response"), ("pos_neg", "response"),
                                          ("pos_neg", "pos_neg_shuffled"), ("response", "response_1x")]
    assert result["holm_family"] == [{"variant": v, "against": a} for v, a in pairs]
    assert comparison(result, "pos_neg", "pos_neg_shuffled")[NO_BOOT]["diff_mean"] == pytest.approx(0.08)
    assert comparison(result, "response", "response_1x")[NO_BOOT]["diff_mean"] == pytest.approx(0.05)
    # pos_neg's row carries its comparison against the baseline, not against the control
    assert result["variants"]["pos_neg"][NO_BOOT]["diff_mean"] == pytest.approx(0.2)
    # a control that did not run: its comparison is left out of the family
    del runs["pos_neg_shuffled"]
    result = ablation(runs, "response")
    assert ("pos_neg", "pos_neg_shuffled") not in [(c["variant"], c["against"]) for c in result["comparisons"]]
    assert len(result["holm_family"]) == 4


def test_no_baseline_in_the_runs_leaves_its_comparisons_out():
    runs = {"pos": plain({0: 0.7, 1: 0.8}), "neg": plain({0: 0.4, 1: 0.6})}
    result = ablation(runs, "response")
    assert result["comparisons"] == [] and result["holm_family"] == []
    for variant in ("pos", "neg"):
        assert not {"diff_mean", "p_value", "p_holm", "significant"} & set(result["variants"][variant][NO_BOOT])
    assert result["column_checks"][NO_BOOT]["valid"] is False
    assert result["column_checks"][NO_BOOT]["invalid_reason"] == "`response` has no scienceqa.accuracy"
    assert verdict(result, None, 0.5, (0.2, 0.8)) == "the baseline `response` was not evaluated"


# ---- the two-level bootstrap, Holm and `significant` -------------------------------------------

BASE_RIGHT = set(range(5))


def boot_runs(variant_rights, base_rights=(BASE_RIGHT,) * 3, variant: str = "pos") -> dict:
    return {"response": {s: sa_run(r) for s, r in enumerate(base_rights)},
            variant: {s: sa_run(r) for s, r in enumerate(variant_rights)}}


def test_the_two_level_bootstrap_matches_numpy_and_its_p_is_never_zero():
    # `pos` right on 10 more images every seed: every replicate's difference is above zero
    rights = (set(range(15)),) * 3
    result = ablation(boot_runs(rights), "response", replicates=200, seed=7, references=CHANCE)
    cell = comparison(result, "pos")[KEY]
    d = my_two_level(rights, (BASE_RIGHT,) * 3, 200, 7)
    assert (d > 0).all()
    assert cell["p_value"] == pytest.approx(2 / 201) == pytest.approx(my_two_sided_p(d))
    assert cell["p_value"] > 0 and cell["p_holm"] == pytest.approx(2 / 201)
    assert cell["diff_ci95"] == pytest.approx(list(np.quantile(d, [0.025, 0.975])))
    assert cell["significant"] is True
    assert result["bootstrap_replicates"] == 200 and result["eval_images"] == N


def test_the_seed_level_widens_the_interval_an_image_bootstrap_would_give():
    # per-seed differences +0.45, +0.05, +0.05: images alone (pooled seeds) would be sure, the seeds are not
    rights = (set(range(14)), set(range(6)), set(range(6)))
    cell = comparison(ablation(boot_runs(rights), "response", replicates=400, seed=3, references=CHANCE),
                      "pos")[KEY]
    d = my_two_level(rights, (BASE_RIGHT,) * 3, 400, 3)
    assert cell["p_value"] == pytest.approx(my_two_sided_p(d))
    assert cell["diff_ci95"] == pytest.approx(list(np.quantile(d, [0.025, 0.975])))
    # a replicate that draws seed 1 or 2 three times has a difference of +0.05 at most a few
    # images away from zero: the lower bound sits far below the mean difference of 0.183
    images_only = np.mean([my_accuracy(my_weights(400, 3), r) - my_accuracy(my_weights(400, 3), BASE_RIGHT)
                           for r in rights], axis=0)
    assert cell["diff_ci95"][0] < np.quantile(images_only, 0.025)


def test_holm_over_the_comparisons_of_one_metric_by_hand():
    base = [set(range(8)), set(range(6)), set(range(10))]
    rights = {"pos": [set(range(13)), set(range(12)), set(range(15))],  # clearly above
              "neg": [set(range(9)), set(range(5)), set(range(11))],  # +1, -1, +1 images: a toss-up
              "pos_neg": [set(range(10)), set(range(8)), set(range(12))]}  # +2 images each seed
    runs = {"response": {s: sa_run(r) for s, r in enumerate(base)}}
    for v, rs in rights.items():
        runs[v] = {s: sa_run(r) for s, r in enumerate(rs)}
    result = ablation(runs, "response", replicates=500, seed=2, references=CHANCE)
    p = {v: my_two_sided_p(my_two_level(rs, base, 500, 2)) for v, rs in rights.items()}
    assert p["pos"] < p["pos_neg"] < p["neg"]
    # step-down: 3 p_pos, then max(that, 2 p_pos_neg), then max(that, p_neg)
    first = min(1.0, 3 * p["pos"])
    second = max(first, min(1.0, 2 * p["pos_neg"]))
    third = max(second, p["neg"])
    cells = {v: comparison(result, v)[KEY] for v in rights}
    assert cells["pos"]["p_value"] == pytest.approx(p["pos"])
    assert cells["pos"]["p_holm"] == pytest.approx(first)
    assert cells["pos_neg"]["p_holm"] == pytest.approx(second)
    assert cells["neg"]["p_holm"] == pytest.approx(third)
    for v in rights:
        assert cells[v]["significant"] is (cells[v]["p_holm"] < 0.05)
    assert cells["pos"]["significant"] is True and cells["neg"]["significant"] is False


def test_holm_is_per_metric_and_counts_every_comparison_of_it():
    # short answers: pos and neg against the baseline, a family of two; reasoning: pos only, a family of one
    base = (BASE_RIGHT,) * 3
    runs = boot_runs((set(range(15)),) * 3, base)
    runs["neg"] = {s: sa_run(set(range(6))) for s in range(3)}
    for s in range(3):
        runs["response"][s]["reasoning.accuracy"] = 0.5
        runs["pos"][s]["reasoning.accuracy"] = 0.6
    result = ablation(runs, "response", replicates=100, seed=0, references=CHANCE)
    p_pos = my_two_sided_p(my_two_level((set(range(15)),) * 3, base, 100, 0))  # 2 / 101: all above zero
    p_neg = my_two_sided_p(my_two_level((set(range(6)),) * 3, base, 100, 0))  # one image more each seed: p 0.14
    assert p_pos == pytest.approx(2 / 101) and p_neg > 0.1
    # step-down over two: 2 p_pos, then max(2 p_pos, p_neg)
    assert comparison(result, "pos")[KEY]["p_holm"] == pytest.approx(2 * p_pos)
    assert comparison(result, "neg")[KEY]["p_holm"] == pytest.approx(max(2 * p_pos, p_neg))
    assert result["power"][KEY]["family_size"] == 2
    assert list(comparison(result, "neg")) == [KEY]
    assert result["power"]["reasoning.accuracy"]["family_size"] == 1


def test_significance_needs_holm_strictly_below_five_percent(monkeypatch):
    runs = boot_runs((set(range(15)),) * 3)
    monkeypatch.setattr(report, "holm", lambda p_values: {k: 0.05 for k in p_values})
    cell = comparison(ablation(runs, "response", replicates=50, references=CHANCE), "pos")[KEY]
    assert cell["p_holm"] == 0.05 and cell["significant"] is False
    monkeypatch.setattr(report, "holm", lambda p_values: {k: 0.0499 for k in p_values})
    assert comparison(ablation(runs, "response", replicates=50, references=CHANCE), "pos")[KEY]["significant"] is True


def test_a_p_of_exactly_five_percent_is_not_significant():
    # 39 replicates all above zero: p = 2 * 1 / 40 = 0.05 exactly
    rights = (set(range(15)),) * 3
    cell = comparison(ablation(boot_runs(rights), "response", replicates=39, seed=2, references=CHANCE), "pos")[KEY]
    assert (my_two_level(rights, (BASE_RIGHT,) * 3, 39, 2) > 0).all()
    assert cell["p_value"] == 0.05 and cell["significant"] is False


def test_the_default_bootstrap_is_a_thousand_replicates_drawn_from_seed_zero():
    rights = (set(range(2, 13)),) * 3
    base = (set(range(10)),) * 3
    result = ablation(boot_runs(rights, base))
    assert result["bootstrap_replicates"] == 1000 and result["eval_images"] == N
    d = my_two_level(rights, base, 1000, 0)
    cell = comparison(result, "pos")[KEY]
    assert cell["p_value"] == pytest.approx(my_two_sided_p(d))
    assert cell["diff_ci95"] == pytest.approx(list(np.quantile(d, [0.025, 0.975])))


def test_the_bootstrap_seed_is_passed_on():
    rights = (set(range(2, 13)), set(range(1, 9)), set(range(4, 16)))
    base = (set(range(10)), set(range(3)), set(range(8)))
    for seed in (4, 5):
        cell = comparison(ablation(boot_runs(rights, base), "response", replicates=100, seed=seed), "pos")[KEY]
        d = my_two_level(rights, base, 100, seed)
        assert cell["diff_ci95"] == pytest.approx(list(np.quantile(d, [0.025, 0.975])))
        assert cell["p_value"] == pytest.approx(my_two_sided_p(d))


# ---- every paired statistic pairs by seed ------------------------------------------------------

SEED_BASE = [set(range(2)), set(range(12)), set(range(6))]
SEED_POS = [set(range(5)), set(range(14)), set(range(7))]  # +3, +2, +1 images over its own seed


def seeded(base, pos, labels=(0, 1, 2)) -> dict:
    return {"response": {s: sa_run(r) for s, r in zip(labels, base)},
            "pos": {s: sa_run(r) for s, r in zip(labels, pos)}}


def test_swapping_two_seeds_of_one_variant_changes_every_paired_statistic():
    kept = ablation(seeded(SEED_BASE, SEED_POS), "response", replicates=300, seed=1, references=CHANCE)
    swapped_pos = [SEED_POS[1], SEED_POS[0], SEED_POS[2]]  # pos's seeds 0 and 1 trade labels
    swapped = ablation(seeded(SEED_BASE, swapped_pos), "response", replicates=300, seed=1, references=CHANCE)
    a, b = comparison(kept, "pos")[KEY], comparison(swapped, "pos")[KEY]
    # per seed: +0.15, +0.10, +0.05 paired, +0.60, -0.35, +0.05 once swapped
    assert a["diff_per_seed"] == {"0": pytest.approx(0.15), "1": pytest.approx(0.10), "2": pytest.approx(0.05)}
    assert b["diff_per_seed"] == {"0": pytest.approx(0.60), "1": pytest.approx(-0.35), "2": pytest.approx(0.05)}
    # the mean over seeds cannot tell, the spread and the bootstrap can
    assert a["diff_mean"] == pytest.approx(b["diff_mean"]) == pytest.approx(0.1)
    assert b["diff_sd"] > 5 * a["diff_sd"]
    assert b["diff_ci95"][1] - b["diff_ci95"][0] > 3 * (a["diff_ci95"][1] - a["diff_ci95"][0])
    assert a["p_value"] < 0.05 < b["p_value"]
    assert kept["power"][KEY]["mde"] < swapped["power"][KEY]["mde"]
    d = my_two_level(swapped_pos, SEED_BASE, 300, 1)
    assert b["p_value"] == pytest.approx(my_two_sided_p(d))


def test_a_consistent_relabelling_of_both_variants_changes_nothing():
    kept = ablation(seeded(SEED_BASE, SEED_POS), "response", replicates=300, seed=1, references=CHANCE)
    renamed = ablation(seeded(SEED_BASE, SEED_POS, labels=(3, 7, 11)), "response", replicates=300, seed=1,
                       references=CHANCE)
    a, b = comparison(kept, "pos")[KEY], comparison(renamed, "pos")[KEY]
    assert list(b["diff_per_seed"].values()) == pytest.approx(list(a["diff_per_seed"].values()))
    assert b["seeds"] == [3, 7, 11]
    for k in ("diff_mean", "diff_sd", "diff_ci95", "p_value", "p_holm"):
        assert b[k] == pytest.approx(a[k]), k
    assert renamed["power"][KEY] == pytest.approx(kept["power"][KEY])
    # the same pairs, listed in another order: the per-seed differences are the same pairs
    permuted = ablation(seeded([SEED_BASE[2], SEED_BASE[0], SEED_BASE[1]], [SEED_POS[2], SEED_POS[0], SEED_POS[1]]),
                        "response", replicates=300, seed=1, references=CHANCE)
    c = comparison(permuted, "pos")[KEY]
    assert sorted(c["diff_per_seed"].values()) == pytest.approx(sorted(a["diff_per_seed"].values()))
    assert c["diff_sd"] == pytest.approx(a["diff_sd"]) and c["diff_mean"] == pytest.approx(a["diff_mean"])


def test_runs_on_other_images_keep_their_differences_but_get_no_bootstrap():
    runs = boot_runs((set(range(15)),) * 3)
    runs["pos"][2]["images"] = IMAGES[::-1]
    result = ablation(runs, "response", replicates=50, references=CHANCE)
    cell = comparison(result, "pos")[KEY]
    assert cell["diff_mean"] == pytest.approx(0.5)
    assert cell["diff_ci95"] is None and cell["p_value"] is None and cell["significant"] is False
    assert result["bootstrap_replicates"] == 0 and result["eval_images"] is None
    assert result["pope_f1_standard_error"] is None
    assert "cannot be tested against chance" in result["column_checks"][KEY]["invalid_reason"]


def test_a_metric_without_counts_on_one_side_gets_no_bootstrap():
    runs = boot_runs((set(range(15)),) * 3)
    for m in runs["response"].values():
        del m["components"]
    result = ablation(runs, "response", replicates=50, references=CHANCE)
    assert result["bootstrap_replicates"] == 50
    assert comparison(result, "pos")[KEY]["p_value"] is None
    runs = boot_runs((set(range(15)),) * 3)
    runs["response"][1]["components"] = {"reasoning.accuracy": np.ones((N, 2))}
    assert comparison(ablation(runs, "response", replicates=50, references=CHANCE), "pos")[KEY]["p_value"] is None


# ---- _shared_weights ---------------------------------------------------------------------

def test_shared_weights_are_one_draw_for_every_run():
    runs = boot_runs((set(range(15)),) * 3)
    assert np.array_equal(_shared_weights(runs, 30, 9), my_weights(30, 9))
    assert np.array_equal(_shared_weights({"response": {0: sa_run(BASE_RIGHT)}}, 12, 0), my_weights(12, 0))


def test_no_shared_weights_when_runs_answered_other_images_or_some_run_has_none():
    runs = boot_runs((set(range(15)),) * 3)
    runs["pos"][1]["images"] = IMAGES[:-1] + ["elsewhere"]
    assert _shared_weights(runs, 10, 0) is None
    runs = boot_runs((set(range(15)),) * 3)
    del runs["pos"][2]["images"]
    assert _shared_weights(runs, 10, 0) is None
    assert _shared_weights({"response": {0: {KEY: 0.5}}, "pos": {0: {KEY: 0.6}}}, 10, 0) is None


# ---- per-column validity -------------------------------------------------------------------------

def rows_for(seed_answers: dict) -> list[dict]:
    """Prediction rows over N images: POPE (random split, a yes- and a no-question), one count
    question (label "2" on images 0-11, else "3") and one yes/no reasoning question (label "yes"
    on even images). `seed_answers` maps a question kind to a function (image -> answer)."""
    rows = []
    for i in range(N):
        image = IMAGES[i]
        for label in ("yes", "no"):
            rows.append({"benchmark": "pope", "qid": f"pope-random-{i}-{label}", "image": image, "split": "random",
                         "label": label, "question": "q", "answer": seed_answers["pope"](i, label)})
        rows.append({"benchmark": "short_answer", "qid": f"s-{i}", "image": image, "category": "count",
                     "label": "2" if i < 12 else "3", "question": "q", "answer": seed_answers["short"](i)})
        rows.append({"benchmark": "reasoning", "qid": f"r-{i}", "image": image, "question_type": "yes_no",
                     "reasoning": "existence", "options": None, "label": "yes" if i % 2 == 0 else "no",
                     "question": "q", "answer": seed_answers["reasoning"](i)})
    return rows


def as_run(rows: list[dict]) -> dict:
    return {**headline(score_predictions(rows)), **run_figures(rows)}


def as_reference(rows: list[dict]) -> dict:
    figures = run_figures(rows)
    figures["values"] = headline(score_predictions(rows))
    return figures


def truth(i, label):
    return label


def right_on(k):
    """A count answer right on images below k (the label there), a well-formed wrong count elsewhere."""
    return lambda i: ("2" if i < 12 else "3") if i < k else ("3" if i < 12 else "2")


def yes_no_right(k):
    return lambda i: ("yes" if i % 2 == 0 else "no") if i < k else ("no" if i % 2 == 0 else "yes")


def pope_right_except(wrong):
    return lambda i, label: label if i not in wrong else ("no" if label == "yes" else "yes")


REFERENCE_ROWS = {"always_yes": rows_for({"pope": lambda i, label: "yes", "short": lambda i: "yes",
                                          "reasoning": lambda i: "yes"}),
                  "blind_prior": rows_for({"pope": lambda i, label: "no", "short": lambda i: "2",
                                           "reasoning": lambda i: "no"})}


def references():
    return {name: as_reference(rows) for name, rows in REFERENCE_ROWS.items()}


def table(base_short=8, base_pope_wrong=(1, 15), base_reasoning=16, pos_short=18, base_answers=None):
    """Three seeds each of `response` and `pos`. The baseline answers counts right on images
    0..base_short-1 (the blind prior, answering "2", is right on images 0-11: 0.6)."""
    runs = {"response": {}, "pos": {}}
    for s in range(3):
        runs["response"][s] = as_run(rows_for(base_answers or {
            "pope": pope_right_except(set(base_pope_wrong) | {s}), "short": right_on(base_short),
            "reasoning": yes_no_right(base_reasoning)}))
        runs["pos"][s] = as_run(rows_for({"pope": pope_right_except({s}), "short": right_on(pos_short),
                                          "reasoning": yes_no_right(base_reasoning)}))
    return runs


def test_a_column_below_the_blind_prior_is_void_and_nothing_in_it_is_significant():
    result = ablation(table(), "response", replicates=200, seed=0, references=references())
    checks = result["column_checks"]
    assert set(checks) == {"pope.random.f1", "pope.mean_f1", "short_answer.accuracy", "reasoning.accuracy"}
    short = checks["short_answer.accuracy"]
    # the baseline right on 8 of 20 count questions every seed: 0.400 against the blind prior's 12 of 20,
    # 0.600; images 0-7 are a subset of 0-11, so no resampled eval set favours the baseline: p = (200 + 1) / 201
    assert short["valid"] is False
    assert short["baseline_value"] == pytest.approx(0.4) and short["blind_prior_value"] == pytest.approx(0.6)
    assert short["p_vs_blind_prior"] == 1.0
    assert short["invalid_reason"] == "`response` does not beat the blind prior answerer: 0.400 vs 0.600, p = 1"
    # always-yes says "yes" to a count: right on none; the baseline beats it on every resample with an image 0-7
    w = my_weights(200, 0)
    d = my_accuracy(w, set(range(8))) - 0.0
    assert short["p_vs_always_yes"] == pytest.approx(my_one_sided_p(d))
    assert short["well_formed"] == 1.0
    # pos is right on 18 of 20 every seed: +0.5, p = 2 / 201, but its column is void
    cell = comparison(result, "pos")["short_answer.accuracy"]
    assert cell["diff_mean"] == pytest.approx(0.5) and cell["p_holm"] == pytest.approx(2 / 201)
    assert cell["significant"] is False
    assert result["variants"]["pos"]["short_answer.accuracy"]["significant"] is False
    # the other columns are valid, and a clear POPE gain is significant there
    for key in ("pope.random.f1", "pope.mean_f1", "reasoning.accuracy"):
        assert checks[key]["valid"] is True and checks[key]["invalid_reason"] is None, key
        assert checks[key]["p_vs_always_yes"] < 0.05 and checks[key]["p_vs_blind_prior"] < 0.05
        assert checks[key]["well_formed"] == 1.0
    assert comparison(result, "pos")["pope.mean_f1"]["significant"] is True
    assert verdict(result, None, 0.6, (0.2, 0.8)) is None


def test_the_validity_p_value_resamples_every_seed_and_the_reference_on_the_same_images():
    # reasoning: the baseline right on 12, 14, 16 of 20 yes/no questions over seeds, the blind prior
    # ("no") on the 10 odd images
    runs = {"response": {s: as_run(rows_for({"pope": truth, "short": right_on(20),
                                             "reasoning": yes_no_right(k)})) for s, k in enumerate((12, 14, 16))}}
    check = ablation(runs, "response", replicates=300, seed=6, references=references())["column_checks"]
    w = my_weights(300, 6)
    right = [{i for i in range(k)} for k in (12, 14, 16)]
    pooled = np.mean([my_accuracy(w, r) for r in right], axis=0)
    blind = my_accuracy(w, {i for i in range(N) if i % 2})
    assert check["reasoning.accuracy"]["p_vs_blind_prior"] == pytest.approx(my_one_sided_p(pooled - blind))
    assert check["reasoning.accuracy"]["baseline_value"] == pytest.approx(0.7)


def test_a_baseline_that_answers_out_of_form_voids_the_column():
    # two of twenty reasoning answers per seed are sentences: 90 % well-formed
    def reasoning(i):
        return "Yes, there is one." if i < 2 else yes_no_right(20)(i)

    runs = table(base_answers={"pope": truth, "short": right_on(20), "reasoning": reasoning})
    check = ablation(runs, "response", replicates=100, references=references())["column_checks"]["reasoning.accuracy"]
    assert check["well_formed"] == pytest.approx(0.9)
    assert check["valid"] is False
    assert check["invalid_reason"] == "only 90% of `response`'s answers are well-formed (at least 95% needed)"


def test_a_well_formed_share_of_95_percent_is_enough():
    # one of twenty sentences per seed: 95 %
    def reasoning(i):
        return "Yes, there is one." if i == 0 else yes_no_right(20)(i)

    runs = table(base_answers={"pope": truth, "short": right_on(20), "reasoning": reasoning})
    check = ablation(runs, "response", replicates=100, references=references())["column_checks"]["reasoning.accuracy"]
    assert check["well_formed"] == pytest.approx(0.95) and check["valid"] is True


def test_without_the_references_or_the_answers_a_column_cannot_be_valid():
    result = ablation(table(), "response", replicates=50, references=None)
    reason = result["column_checks"]["reasoning.accuracy"]["invalid_reason"]
    assert reason == ("no answers of the always yes answerer to the same questions to test against; "
                      "no answers of the blind prior answerer to the same questions to test against")
    runs = table()
    for m in runs["response"].values():
        del m["well_formed"]
    check = ablation(runs, "response", replicates=50, references=references())["column_checks"]["reasoning.accuracy"]
    assert check["valid"] is False and "their form is unchecked" in check["invalid_reason"]


def test_a_void_pope_column_voids_the_whole_report():
    # the baseline misses 14 of 20 yes-questions and says no to every no-question: F1 = 2 * 6 / (2 * 6 + 14) = 0.46,
    # below always-yes (2 * 20 / (2 * 20 + 20) = 0.667)
    def pope(i, label):
        return "yes" if label == "yes" and i < 6 else "no"

    runs = table(base_answers={"pope": pope, "short": right_on(20), "reasoning": yes_no_right(20)})
    result = ablation(runs, "response", replicates=100, references=references())
    check = result["column_checks"]["pope.mean_f1"]
    assert check["valid"] is False and check["baseline_value"] == pytest.approx(12 / 26)
    assert check["invalid_reason"].startswith("`response` does not beat the always yes answerer: 0.462 vs 0.667, p = ")
    # no difference anywhere is significant, not even in the valid reasoning column
    assert result["column_checks"]["reasoning.accuracy"]["valid"] is True
    assert not any(cell["significant"] for c in result["comparisons"] for cell in c["metrics"].values())
    assert comparison(result, "pos")["pope.mean_f1"]["p_holm"] < 0.05
    reason = verdict(result, None, 0.5, (0.2, 0.8))
    assert reason.endswith(f"the POPE column is void: {check['invalid_reason']}")


def test_column_check_of_a_column_the_baseline_lacks():
    check = column_check(KEY, {0: {NO_BOOT: 0.5}}, "response", None, None, None)
    assert check["valid"] is False and check["invalid_reason"] == "`response` has no short_answer.accuracy"
    assert column_check(KEY, None, "pos", None, None, None)["invalid_reason"] == "`pos` has no short_answer.accuracy"
    # a run whose saved answers gave no per-image counts of the column cannot be tested, whatever was saved
    check = column_check(NO_BOOT, {0: {NO_BOOT: 0.5, "well_formed": {NO_BOOT: [4, 4]}, "images": IMAGES}}, "response",
                         CHANCE, IMAGES, my_weights(10, 0))
    assert check["well_formed"] == 1.0 and check["invalid_reason"] == (
        "no per-image counts of `response` on shared eval images, so it cannot be tested against chance")


# ---- power ---------------------------------------------------------------------------------------

def test_mde_by_hand_from_the_seed_to_seed_spread_of_the_family():
    runs = {"response": plain({0: 0.5, 1: 0.5, 2: 0.5}),
            "pos": plain({0: 0.7, 1: 0.8, 2: 0.75}),  # diffs 0.2, 0.3, 0.25: sd 0.05
            "neg": plain({0: 0.6, 1: 0.4, 2: 0.7})}  # diffs 0.1, -0.1, 0.2
    result = ablation(runs, "response")
    sd_neg = float(np.std([0.1, -0.1, 0.2], ddof=1))
    sd = math.sqrt((0.05 ** 2 + sd_neg ** 2) / 2)
    # two comparisons: the first Holm step tests at 0.05 / 2, two-sided
    expected = (norm.ppf(1 - 0.05 / 4) + norm.ppf(0.8)) * sd / math.sqrt(3)
    power = result["power"][NO_BOOT]
    assert power["sd_paired"] == pytest.approx(sd) and power["seeds"] == 3 and power["family_size"] == 2
    assert power["mde"] == pytest.approx(expected)
    assert result["column_checks"][NO_BOOT]["mde"] == pytest.approx(expected)
    # a third comparison on two seeds only: m = 3, n = the fewest paired seeds
    runs["pos_neg"] = plain({0: 0.9, 1: 0.6})  # diffs 0.4, 0.1: sd 0.2121
    power = ablation(runs, "response")["power"][NO_BOOT]
    sd = math.sqrt((0.05 ** 2 + sd_neg ** 2 + float(np.std([0.4, 0.1], ddof=1)) ** 2) / 3)
    assert power["family_size"] == 3 and power["seeds"] == 2
    assert power["mde"] == pytest.approx((norm.ppf(1 - 0.05 / 6) + norm.ppf(0.8)) * sd / math.sqrt(2))


# ---- the POPE random-adversarial gap -------------------------------------------------------------

def pope_split_rows(wrong: dict[str, set]) -> list[dict]:
    """A yes- and a no-question per image on the random and adversarial splits; on the images in
    wrong[split] the no-question gets a "yes" (a false positive)."""
    rows = []
    for i in range(N):
        for split in ("random", "adversarial"):
            for label in ("yes", "no"):
                answer = "yes" if label == "yes" or i in wrong[split] else "no"
                rows.append({"benchmark": "pope", "qid": f"pope-{split}-{i}-{label}", "image": IMAGES[i],
                             "split": split, "label": label, "question": "q", "answer": answer})
    return rows


def my_f1_yes_all_right(weights: np.ndarray, fp_images) -> np.ndarray:
    """Every yes-question right (tp = images), false positives on `fp_images`."""
    tp = weights.sum(axis=1)
    fp = weights @ hits(fp_images)
    return 2 * tp / (2 * tp + fp)


def test_the_random_adversarial_gap_by_hand():
    wrong = [{"random": {0}, "adversarial": {0, 1, 2, 3, 4, 5}}, {"random": set(), "adversarial": {2, 9, 11, 13}}]
    runs = {"response": {s: as_run(pope_split_rows(w)) for s, w in enumerate(wrong)}}
    gap = ablation(runs, "response", replicates=300, seed=8)["pope_adversarial_gap"]
    # seed 0: F1 40/41 - 40/46; seed 1: 1 - 40/44
    by_hand = ((40 / 41 - 40 / 46) + (1 - 40 / 44)) / 2
    assert gap["gap"] == pytest.approx(by_hand) and gap["seeds"] == [0, 1]
    w = my_weights(300, 8)
    boot = np.mean([my_f1_yes_all_right(w, x["random"]) - my_f1_yes_all_right(w, x["adversarial"]) for x in wrong],
                   axis=0)
    assert gap["ci95"] == pytest.approx(list(np.quantile(boot, [0.025, 0.975])))
    assert gap["p_value"] == pytest.approx(my_one_sided_p(boot)) and gap["p_value"] > 0
    # without per-image answers: the gap, no interval
    for m in runs["response"].values():
        del m["components"]
    bare = ablation(runs, "response", replicates=50)["pope_adversarial_gap"]
    assert bare["gap"] == pytest.approx(by_hand) and bare["ci95"] is None and bare["p_value"] is None
    assert ablation({"response": plain({0: 0.5})}, "response")["pope_adversarial_gap"] is None


# ---- POPE F1 standard errors ---------------------------------------------------------------

def pope_components(tp_images: int, fp_images: int, fn_images: int) -> np.ndarray:
    """N images, one random-split question each, counted as a tp, fp, fn or tn row."""
    rows = []
    for i in range(N):
        counts = [0.0] * 12
        slot = 0 if i < tp_images else 1 if i < tp_images + fp_images else \
            2 if i < tp_images + fp_images + fn_images else 3
        counts[slot] = 1.0
        rows.append(counts)
    return np.array(rows)


def my_f1_se(comps: np.ndarray, weights: np.ndarray) -> float:
    totals = weights @ comps
    f1 = []
    for tp, fp, fn in totals[:, :3]:
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return float(np.std(f1, ddof=1))


def test_pope_standard_errors_are_the_median_over_runs():
    comps = [pope_components(12, 2, 2), pope_components(5, 5, 5), pope_components(8, 1, 6),
             pope_components(10, 0, 9)]
    runs = {"response": {0: {"images": IMAGES, "components": {"pope.random.f1": comps[0]}},
                         1: {"images": IMAGES, "components": {"pope.random.f1": comps[1]}}},
            "pos": {0: {"images": IMAGES, "components": {"pope.random.f1": comps[2]}},
                    1: {"images": IMAGES, "components": {"pope.random.f1": comps[3]}},
                    2: {"images": IMAGES}}}  # a run without POPE counts adds nothing
    weights = my_weights(80, 0)
    errors = [my_f1_se(c, weights) for c in comps]
    assert len(set(errors)) == 4
    assert _pope_standard_errors(runs, weights) == {"random": pytest.approx(statistics.median(errors))}
    del runs["pos"][1]
    assert _pope_standard_errors(runs, weights) == {"random": pytest.approx(sorted(errors[:3])[1])}
    result = ablation(runs, "response", replicates=80, seed=0)
    assert result["pope_f1_standard_error"] == {"random": pytest.approx(sorted(errors[:3])[1])}
    assert _pope_standard_errors(runs, None) is None


# ---- verdict -------------------------------------------------------------------------------

VALID_POPE = {"pope.mean_f1": {"valid": True, "invalid_reason": None}}


def pope_result(accuracy=(0.8, 0.8, 0.8), yes_ratio=(0.5, 0.5, 0.5), baseline="response", checks=VALID_POPE) -> dict:
    row = {"seeds": [0]}
    for split, acc, ratio in zip(("random", "popular", "adversarial"), accuracy, yes_ratio):
        if acc is not None:
            row[f"pope.{split}.accuracy"] = {"mean": acc}
        if ratio is not None:
            row[f"pope.{split}.yes_ratio"] = {"mean": ratio}
    return {"baseline": baseline, "variants": {baseline: row, "pos": {"seeds": [0]}}, "column_checks": checks}


def test_verdict_passes_a_baseline_that_sees():
    assert verdict(pope_result(), None, 0.6, (0.2, 0.8)) is None
    assert verdict(pope_result(), {"passed": True, "failure": None}, 0.6, (0.2, 0.8)) is None
    assert verdict(pope_result(), {"failure": "unchecked"}, 0.6, (0.2, 0.8)) is None  # no verdict on passing
    assert verdict(pope_result(), {}, 0.6, (0.2, 0.8)) is None


def test_verdict_names_each_missing_figure_and_never_crashes():
    reason = verdict(pope_result(yes_ratio=(None, None, None)), None, 0.6, (0.2, 0.8))
    assert reason == ("the baseline `response` has no POPE yes-ratio, so an always-yes answerer cannot be "
                      "ruled out")
    both = verdict(pope_result(accuracy=(0.5, 0.5, 0.5), yes_ratio=(None, None, None)), None, 0.6, (0.2, 0.8))
    assert both.startswith("the baseline `response` answers POPE at accuracy 0.500") and "no POPE yes-ratio" in both
    # no POPE validity check (no pope.mean_f1): said, not assumed
    assert verdict(pope_result(checks=None), None, 0.6, (0.2, 0.8)) == (
        "the baseline `response` has no POPE mean F1 (pope.mean_f1), so the POPE column cannot be judged")
    # a cell without its mean, and a baseline without MMBench or anything else: no KeyError
    result = pope_result()
    result["variants"]["response"]["pope.popular.accuracy"] = {}
    result["variants"]["response"]["pope.adversarial.yes_ratio"] = None
    assert verdict(result, None, 0.6, (0.2, 0.8)) is None
    assert verdict({"baseline": "response"}, None, 0.6, (0.2, 0.8)) == "the baseline `response` was not evaluated"
    result = {"baseline": "pos", "variants": {"pos": {"seeds": [0, 1], NO_BOOT: {"mean": 0.9}}}}
    assert verdict(result, None, 0.6, (0.2, 0.8)) == "the baseline `pos` has no POPE scores"
    assert verdict(result, {"passed": False, "failure": "blind"}, 0.6, (0.2, 0.8)) == (
        "the base student failed its check (blind); the baseline `pos` has no POPE scores")


def test_verdict_a_void_pope_column_with_its_reason():
    checks = {"pope.mean_f1": {"valid": False, "invalid_reason": "`response` does not beat the blind prior answerer: "
                                                                 "0.283 vs 0.307, p = 0.91"}}
    assert verdict(pope_result(checks=checks), None, 0.6, (0.2, 0.8)) == (
        "the POPE column is void: `response` does not beat the blind prior answerer: 0.283 vs 0.307, p = 0.91")
    # another column void: the report is not
    checks = dict(VALID_POPE, **{"mme.score": {"valid": False, "invalid_reason": "x"}})
    assert verdict(pope_result(checks=checks), None, 0.6, (0.2, 0.8)) is None


def test_verdict_a_failed_base_check_with_its_failure():
    reason = verdict(pope_result(), {"passed": False, "failure": "says yes to everything"}, 0.6, (0.2, 0.8))
    assert reason == "the base student failed its check (says yes to everything)"
    assert verdict(pope_result(), {"passed": False}, 0.6, (0.2, 0.8)) == "the base student failed its check (None)"


def test_verdict_accuracy_below_the_minimum_exact_text():
    # mean over the splits of 0.5, 0.625, 0.75 = 0.625
    reason = verdict(pope_result(accuracy=(0.5, 0.625, 0.75)), None, 0.7, (0.2, 0.8))
    assert reason == ("the baseline `response` answers POPE at accuracy 0.625, below "
                      "report.min_baseline_pope_accuracy = 0.7")


def test_verdict_accuracy_exactly_at_the_minimum_passes():
    assert verdict(pope_result(accuracy=(0.75, 0.75, 0.75)), None, 0.75, (0.2, 0.8)) is None
    assert verdict(pope_result(accuracy=(0.5, 1.0, None)), None, 0.75, (0.2, 0.8)) is None  # mean of two: 0.75


def test_verdict_yes_ratio_outside_exact_text_and_bounds():
    assert verdict(pope_result(yes_ratio=(0.25, 0.25, 0.25)), None, 0.6, (0.25, 0.75)) is None
    assert verdict(pope_result(yes_ratio=(0.75, 0.75, 0.75)), None, 0.6, (0.25, 0.75)) is None
    high = verdict(pope_result(yes_ratio=(0.875, 0.875, 0.875)), None, 0.6, (0.25, 0.75))
    assert high == ("the baseline `response` says yes to 87.5% of POPE questions, outside "
                    "report.baseline_yes_ratio = [0.25, 0.75]")
    low = verdict(pope_result(yes_ratio=(0.125, 0.0, 0.25)), None, 0.6, (0.2, 0.8))
    assert low == ("the baseline `response` says yes to 12.5% of POPE questions, outside "
                   "report.baseline_yes_ratio = [0.2, 0.8]")


def test_verdict_joins_every_reason_with_a_semicolon():
    checks = {"pope.mean_f1": {"valid": False, "invalid_reason": "only 50% of `pos_neg`'s answers are well-formed"}}
    reason = verdict(pope_result(accuracy=(0.5, 0.5, 0.5), yes_ratio=(1.0, 1.0, 1.0), baseline="pos_neg",
                                 checks=checks), {"passed": False, "failure": "blind"}, 0.6, (0.2, 0.8))
    assert reason == ("the base student failed its check (blind); "
                      "the baseline `pos_neg` answers POPE at accuracy 0.500, below "
                      "report.min_baseline_pope_accuracy = 0.6; "
                      "the baseline `pos_neg` says yes to 100.0% of POPE questions, outside "
                      "report.baseline_yes_ratio = [0.2, 0.8]; "
                      "the POPE column is void: only 50% of `pos_neg`'s answers are well-formed")


def test_verdict_without_the_baseline():
    result = pope_result()
    result["baseline"] = "neg"
    assert verdict(result, {"passed": False, "failure": "x"}, 0.6, (0.2, 0.8)) == "the baseline `neg` was not evaluated"


def test_verdict_on_a_real_ablation_table():
    runs = table()
    for s, (a, r) in enumerate(((0.7, 0.5), (0.8, 0.6), (0.9, 0.7))):
        runs["response"][s].update({"pope.random.accuracy": a, "pope.random.yes_ratio": r})
    result = ablation(runs, "response", replicates=100, references=references())
    assert verdict(result, None, 0.75, (0.2, 0.8)) is None  # mean accuracy 0.8, yes-ratio 0.6, POPE valid
    assert verdict(result, None, 0.85, (0.2, 0.8)).startswith("the baseline `response` answers POPE at accuracy 0.800")
    assert "says yes to 60.0%" in verdict(result, None, 0.5, (0.1, 0.5))


# ---- void_reason ---------------------------------------------------------------------------

def test_void_reason_reads_the_written_report(tmp_path):
    assert void_reason(tmp_path) is None  # no report yet
    (tmp_path / "ablation.json").write_text(json.dumps({"void": False, "void_reason": "stale text"}))
    assert void_reason(tmp_path) is None
    (tmp_path / "ablation.json").write_text(json.dumps({"void": True, "void_reason": "the baseline is blind"}))
    assert void_reason(tmp_path) == "the baseline is blind"
    assert void_reason(str(tmp_path)) == "the baseline is blind"
    (tmp_path / "ablation.json").write_text(json.dumps({"void_reason": "no flag"}))
    assert void_reason(tmp_path) is None


# ---- reverie/statistics.py -----------------------------------------------------------------

def test_t_interval_at_other_levels():
    # 1, 2, 3, 6: mean 3, sample sd sqrt(14 / 3)
    values = [1.0, 2.0, 3.0, 6.0]
    sd = math.sqrt(14 / 3)
    for level, q in ((0.95, 0.975), (0.9, 0.95), (0.5, 0.75)):
        half = student_t.ppf(q, 3) * sd / 2
        assert t_interval(values, level) == pytest.approx([3 - half, 3 + half])
    assert t_interval([]) is None
    # two values: one degree of freedom
    assert t_interval([0.0, 2.0]) == pytest.approx([1 - 12.7062047 * 1 / 1, 1 + 12.7062047])


def test_bootstrap_interval_is_the_central_quantiles():
    samples = np.arange(101, dtype=float)  # 0..100: quantile q is 100 q
    assert bootstrap_interval(samples) == pytest.approx([2.5, 97.5])
    assert bootstrap_interval(samples, 0.9) == pytest.approx([5.0, 95.0])
    out = bootstrap_interval(np.array([3.0, 1.0, 2.0]))
    assert all(type(x) is float for x in out)


def test_bootstrap_p_value_by_hand():
    # 1, 1, 1, -1: below (1 + 1) / 5, above (3 + 1) / 5 -> 2 * 0.4
    assert bootstrap_p_value(np.array([1.0, 1.0, 1.0, -1.0])) == pytest.approx(0.8)
    assert bootstrap_p_value(np.array([-1.0, -1.0, -1.0, 1.0])) == pytest.approx(0.8)
    # zeros count on both sides: 0, 1, 1, 1 -> below 2 / 5, above 5 / 5
    assert bootstrap_p_value(np.array([0.0, 1.0, 1.0, 1.0])) == pytest.approx(0.8)
    # nine below zero: below 10 / 10, above 1 / 10 -> 0.2
    assert bootstrap_p_value(-np.ones(9)) == pytest.approx(0.2)
    assert bootstrap_p_value(np.zeros(5)) == 1.0  # capped at one
    assert type(bootstrap_p_value(np.ones(3))) is float


def test_bootstrap_weights_are_numpy_multinomial_draws():
    w = bootstrap_weights(5, 40, seed=11)
    rng = np.random.default_rng(11)
    assert np.array_equal(w, rng.multinomial(5, [0.2] * 5, size=40))
    assert w.dtype == float and w.shape == (40, 5) and (w.sum(axis=1) == 5).all()
    assert not np.array_equal(w, bootstrap_weights(5, 40, seed=12))


def test_resampled_scores_each_weighted_eval_set():
    components = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 2.0]])
    weights = np.array([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    out = resampled(lambda c: c[0] / c[1], components, weights)
    # totals (1, 1), (2, 3), (3, 6), (2, 4)
    assert out == pytest.approx([1.0, 2 / 3, 0.5, 0.5])
    assert isinstance(out, np.ndarray)


def test_holm_caps_at_one_and_keeps_the_order():
    assert holm({}) == {}
    assert holm({"a": 0.02}) == {"a": 0.02}
    # 0.5 x 2 = 1.0 (capped), then max(1.0, 0.6)
    assert holm({"a": 0.5, "b": 0.6}) == {"a": 1.0, "b": 1.0}
    # sorted 0.001, 0.01, 0.02, 0.04 -> x4, x3, x2, x1: 0.004, 0.03, 0.04, 0.04
    assert holm({"d": 0.04, "a": 0.001, "c": 0.02, "b": 0.01}) == pytest.approx(
        {"a": 0.004, "b": 0.03, "c": 0.04, "d": 0.04})
    # a later smaller product is lifted to the running maximum: 0.01 x 3 = 0.03, 0.012 x 2 = 0.024 -> 0.03
    assert holm({"a": 0.01, "b": 0.012, "c": 0.5}) == pytest.approx({"a": 0.03, "b": 0.03, "c": 0.5})


def test_a_skill_below_the_blind_prior_inside_a_valid_column_is_marked():
    """MME-4 can beat the blind prior on existence alone: the skills inside it are listed against
    the same references, and one the baseline answers no better than the blind prior is marked."""
    runs = {"response": {0: {"mme.score": 400.0, "mme.existence.score": 196.0, "mme.color.score": 50.0},
                         1: {"mme.score": 410.0, "mme.existence.score": 200.0, "mme.color.score": 52.0}}}
    result = ablation(runs, "response", replicates=50, seed=0)
    assert result["skills"] == {"mme.existence.score": pytest.approx(198.0), "mme.color.score": pytest.approx(51.0)}
    result["reference"] = {"always_yes": {"mme.existence.score": 50.0, "mme.color.score": 50.0},
                           "blind_prior": {"mme.existence.score": 86.2, "mme.color.score": 82.1}}
    lines = report.markdown(result).splitlines()
    colour = next(line for line in lines if line.startswith("| MME colour"))
    existence = next(line for line in lines if line.startswith("| MME existence"))
    assert colour == "| MME colour (max 200) | 51.0 | 50.0 | 82.1 | not above the blind prior |"
    assert existence == "| MME existence (max 200) | 198.0 | 50.0 | 86.2 |  |"
    # at the prior is not above it; a report without the skills' figures has no such section
    result["skills"]["mme.color.score"] = 82.1
    assert next(line for line in report.markdown(result).splitlines()
                if line.startswith("| MME colour")).endswith("not above the blind prior |")
    assert "Skills inside" not in report.markdown(ablation({"response": plain({0: 0.5})}, "response", replicates=10))


def test_mmbench_answers_by_letter_are_printed_and_a_letter_below_a_guess_is_marked():
    """A student that names the shape but never maps it to option C scores 0 in CircularEval:
    the report prints, per right letter, the baseline's share right (mean over seeds), so that
    a void MMBench column says why."""
    letters = {"A": (0.99, 0.97), "B": (0.0, 0.02), "C": (0.5, 0.7), "D": (0.88, 0.86)}
    runs = {"response": {seed: {"mme.score": 400.0, "mme.existence.score": 196.0,
                                **{f"mmbench.answer_letter.{k}.accuracy": v[seed] for k, v in letters.items()}}
                         for seed in (0, 1)}}
    result = ablation(runs, "response", replicates=20, seed=0)
    assert result["answer_letters"] == pytest.approx({"A": 0.98, "B": 0.01, "C": 0.6, "D": 0.87})
    line = next(line for line in report.markdown(result).splitlines() if line.startswith("MMBench answers of"))
    assert "A 0.98, B 0.01 (below a guess), C 0.60, D 0.87." in line
    # without the letters' figures (a real MMBench scored before them) there is no such line
    del runs["response"][0]["mmbench.answer_letter.A.accuracy"]
    assert "A 0.97" in report.markdown(ablation(runs, "response", replicates=20, seed=0))
    assert "MMBench answers of" not in report.markdown(ablation({"response": {0: {"mme.existence.score": 1.0}}},
                                                                "response", replicates=10))
