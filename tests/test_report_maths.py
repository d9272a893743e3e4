"""The ablation maths of the report, one rule at a time, on `runs` tables built by hand.

Every expected figure is worked out by hand (in a comment) or by numpy/scipy called directly
on the hand-written numbers, never by the functions under test."""
import json
import math
import statistics

import numpy as np
import pytest
from scipy.stats import binomtest, t as student_t, ttest_1samp

import reverie.report as report
from reverie.report import (_against_baseline, _mean_std, _p_value_over_seeds, _pope_right, _pope_standard_errors,
                            _shared_weights, ablation, verdict, void_reason)
from reverie.statistics import (bootstrap_interval, bootstrap_p_value, bootstrap_weights, holm, mcnemar_p_value,
                                resampled, t_interval)

KEY = "short_answer.accuracy"  # a headline column whose per-image counts are (right, asked)
NO_BOOT = "scienceqa.accuracy"  # a headline column without per-image counts (not in METRICS)
N = 20
IMAGES = [f"im{i:02d}" for i in range(N)]


def sa_run(right, images: bool = True, components: bool = True, **extra) -> dict:
    """One run's metrics: short-answer accuracy right on the images numbered in `right`."""
    m = {KEY: len(right) / N, **extra}
    if images:
        m["images"] = list(IMAGES)
    if components:
        m["components"] = {KEY: np.array([[float(i in right), 1.0] for i in range(N)])}
    return m


def plain(values: dict[int, float], key: str = NO_BOOT) -> dict[int, dict]:
    return {s: {key: v} for s, v in values.items()}


# ---- independent bootstrap: numpy's generator drawn by hand -------------------------------

def my_weights(replicates: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multinomial(N, [1.0 / N] * N, size=replicates).astype(float)


def my_accuracy(weights: np.ndarray, right) -> np.ndarray:
    hits = np.array([float(i in right) for i in range(N)])
    return (weights @ hits) / weights.sum(axis=1)


def my_images_diff(weights, variant_rights, base_rights) -> np.ndarray:
    """Per replicate, the mean over seeds of variant minus baseline accuracy."""
    return np.mean([my_accuracy(weights, v) - my_accuracy(weights, b)
                    for v, b in zip(variant_rights, base_rights)], axis=0)


def my_images_p(d: np.ndarray) -> float:
    n = len(d)
    return min(1.0, 2 * min((np.sum(d <= 0) + 1) / (n + 1), (np.sum(d >= 0) + 1) / (n + 1)))


# ---- _pope_right, _mean_std, _p_value_over_seeds ------------------------------------------

@pytest.mark.parametrize("answer,label,right", [
    ("Yes", "yes", True), ("yes, there is", "yes", True), ("No.", "yes", False), ("There is not", "yes", False),
    ("No, there is none.", "no", True), ("yes", "no", False), ("maybe", "no", False), ("no", "no", True)])
def test_pope_right_compares_the_pope_yes_rule_with_the_label(answer, label, right):
    assert _pope_right({"answer": answer, "label": label}) is right


def test_mean_std_uses_the_sample_std_and_zero_for_one_value():
    # two values 1 and 3: mean 2, sample std sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2)
    assert _mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    # three values 2, 4, 9: mean 5, sample std sqrt((9 + 1 + 16) / 2) = sqrt(13)
    mean, std = _mean_std([2.0, 4.0, 9.0])
    assert mean == 5.0 and std == pytest.approx(math.sqrt(13))
    assert _mean_std([0.7]) == (0.7, 0.0)


def test_p_value_over_seeds_is_a_one_sample_t_test_from_two_diffs_on():
    assert _p_value_over_seeds([]) is None
    assert _p_value_over_seeds([0.3]) is None
    # two diffs 0.1, 0.3: t = 0.2 / (0.1414 / sqrt 2) = 2, df 1: p = 1 - 2 atan(2) / pi
    assert _p_value_over_seeds([0.1, 0.3]) == pytest.approx(1 - 2 * math.atan(2) / math.pi)
    assert _p_value_over_seeds([0.2, 0.2, 0.1]) == pytest.approx(ttest_1samp([0.2, 0.2, 0.1], 0.0).pvalue)
    # a std of exactly one takes the t test too: diffs 0, 1, 2 -> t = 1 / (1 / sqrt 3), df 2
    assert _p_value_over_seeds([0.0, 1.0, 2.0]) == pytest.approx(ttest_1samp([0.0, 1.0, 2.0], 0.0).pvalue)


def test_p_value_over_seeds_without_spread_is_certain():
    assert _p_value_over_seeds([0.0, 0.0]) == 1.0  # no difference at all
    assert _p_value_over_seeds([0.0, 0.0, 0.0]) == 1.0
    assert _p_value_over_seeds([0.25, 0.25, 0.25]) == 0.0  # the same difference every seed
    assert _p_value_over_seeds([1.0, 1.0]) == 0.0
    assert _p_value_over_seeds([-0.5, -0.5]) == 0.0


# ---- ablation over seeds: means, stds, intervals, paired differences ------------------------

def test_ablation_cells_by_hand_over_three_seeds():
    runs = {"response": plain({0: 0.5, 1: 0.6, 2: 0.7}), "pos": plain({0: 0.7, 1: 0.7, 2: 0.8}),
            "neg": plain({0: 0.4, 1: 0.7, 2: 0.5})}
    result = ablation(runs, "response", replicates=50)
    assert result["baseline"] == "response" and list(result["variants"]) == ["response", "pos", "neg"]
    base = result["variants"]["response"]
    assert base["seeds"] == [0, 1, 2]
    cell = base[NO_BOOT]
    # 0.5, 0.6, 0.7: mean 0.6, sample std 0.1, half-width t(0.975, 2) * 0.1 / sqrt 3
    half = student_t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert cell["mean"] == pytest.approx(0.6) and cell["std"] == pytest.approx(0.1)
    assert cell["ci95"] == pytest.approx([0.6 - half, 0.6 + half])
    assert cell["per_seed"] == {"0": 0.5, "1": 0.6, "2": 0.7}
    # the baseline is not compared with itself
    assert not {"diff_mean", "diff_per_seed", "p_value", "p_holm", "significant"} & set(cell)

    pos = result["variants"]["pos"][NO_BOOT]
    # diffs 0.2, 0.1, 0.1: mean 0.1333, sd 0.0577
    diffs = [0.7 - 0.5, 0.7 - 0.6, 0.8 - 0.7]
    assert pos["diff_per_seed"] == {"0": pytest.approx(0.2), "1": pytest.approx(0.1), "2": pytest.approx(0.1)}
    assert pos["diff_mean"] == pytest.approx(0.4 / 3)
    half = student_t.ppf(0.975, 2) * statistics.stdev(diffs) / math.sqrt(3)
    assert pos["diff_ci95"] == pytest.approx([0.4 / 3 - half, 0.4 / 3 + half])
    assert pos["p_value"] == pytest.approx(ttest_1samp(diffs, 0.0).pvalue)
    neg = result["variants"]["neg"][NO_BOOT]
    assert neg["diff_per_seed"] == {"0": pytest.approx(-0.1), "1": pytest.approx(0.1), "2": pytest.approx(-0.2)}
    assert neg["p_value"] == pytest.approx(ttest_1samp([-0.1, 0.1, -0.2], 0.0).pvalue)
    # no per-image counts: no bootstrap anywhere
    assert "diff_ci95_bootstrap" not in pos and "p_value_images" not in pos
    assert result["bootstrap_replicates"] == 0 and result["eval_images"] is None
    assert result["pope_f1_standard_error"] is None


def test_two_seeds_have_a_std_an_interval_and_a_p_value():
    runs = {"response": plain({0: 0.5, 1: 0.7}), "pos": plain({0: 0.6, 1: 1.0})}
    result = ablation(runs, "response")
    base = result["variants"]["response"][NO_BOOT]
    # 0.5, 0.7: std |0.7 - 0.5| / sqrt 2; half-width t(0.975, 1) * std / sqrt 2 = 12.706 * 0.1
    assert base["std"] == pytest.approx(0.2 / math.sqrt(2))
    assert base["ci95"] == pytest.approx([0.6 - student_t.ppf(0.975, 1) * 0.1, 0.6 + student_t.ppf(0.975, 1) * 0.1])
    pos = result["variants"]["pos"][NO_BOOT]
    # diffs 0.1, 0.3: t = 2 on one degree of freedom
    assert pos["p_value"] == pytest.approx(1 - 2 * math.atan(2) / math.pi)
    assert pos["p_holm"] == pytest.approx(1 - 2 * math.atan(2) / math.pi)
    assert pos["significant"] is False


def test_a_single_seed_has_no_spread_no_interval_and_no_test():
    runs = {"response": plain({0: 0.5}), "pos": plain({0: 0.75})}
    result = ablation(runs, "response")
    base = result["variants"]["response"][NO_BOOT]
    assert base["mean"] == 0.5 and base["std"] == 0.0 and base["ci95"] is None
    pos = result["variants"]["pos"][NO_BOOT]
    assert pos["diff_per_seed"] == {"0": 0.25} and pos["diff_mean"] == 0.25
    assert pos["diff_ci95"] is None and pos["p_value"] is None
    assert "p_holm" not in pos and "significant" not in pos


def test_zero_variance_differences_through_the_table():
    runs = {"response": plain({0: 0.5, 1: 0.5, 2: 0.5}), "pos": plain({0: 0.75, 1: 0.75, 2: 0.75}),
            "neg": plain({0: 0.5, 1: 0.5, 2: 0.5})}
    result = ablation(runs, "response")
    pos, neg = result["variants"]["pos"][NO_BOOT], result["variants"]["neg"][NO_BOOT]
    assert pos["p_value"] == 0.0 and neg["p_value"] == 1.0
    # Holm over {0.0, 1.0}: 2 * 0.0 = 0.0, then max(0.0, 1 * 1.0) = 1.0
    assert pos["p_holm"] == 0.0 and neg["p_holm"] == 1.0
    assert pos["significant"] is True and neg["significant"] is False


def test_a_variant_with_a_seed_the_baseline_lacks_pairs_only_shared_seeds():
    runs = {"response": plain({0: 0.5, 1: 0.6}), "pos": plain({0: 0.7, 1: 0.9, 2: 0.2})}
    pos = ablation(runs, "response")["variants"]["pos"]
    assert pos["seeds"] == [0, 1, 2]
    cell = pos[NO_BOOT]
    assert cell["per_seed"] == {"0": 0.7, "1": 0.9, "2": 0.2}
    assert cell["mean"] == pytest.approx(0.6)
    # paired seeds 0 and 1 only: diffs 0.2 and 0.3
    assert cell["diff_per_seed"] == {"0": pytest.approx(0.2), "1": pytest.approx(0.3)}
    assert cell["diff_mean"] == pytest.approx(0.25)
    assert cell["p_value"] == pytest.approx(ttest_1samp([0.2, 0.3], 0.0).pvalue)


def test_seeds_missing_a_metric_are_left_out_on_either_side():
    runs = {"response": {0: {NO_BOOT: 0.5, "reasoning.accuracy": 0.4}, 1: {NO_BOOT: 0.6, "reasoning.accuracy": 0.5},
                         2: {NO_BOOT: 0.6}},
            "pos": {0: {NO_BOOT: 0.8, "reasoning.accuracy": 0.5}, 1: {NO_BOOT: 0.7}, 2: {NO_BOOT: 0.9}}}
    pos = ablation(runs, "response")["variants"]["pos"]
    # NO_BOOT on every seed: diffs 0.3, 0.1, 0.3
    assert pos[NO_BOOT]["diff_per_seed"] == {"0": pytest.approx(0.3), "1": pytest.approx(0.1), "2": pytest.approx(0.3)}
    # reasoning only on seed 0 of `pos` (and seeds 0, 1 of the baseline): one pair, 0.5 - 0.4
    cell = pos["reasoning.accuracy"]
    assert cell["per_seed"] == {"0": 0.5} and cell["std"] == 0.0
    assert cell["diff_per_seed"] == {"0": pytest.approx(0.1)} and cell["p_value"] is None
    # a metric only the baseline has for some seed, none of `pos`'s
    runs["pos"][0].pop("reasoning.accuracy")
    assert "reasoning.accuracy" not in ablation(runs, "response")["variants"]["pos"]
    # the baseline lacks the metric on the only seed `pos` has it: nothing to pair
    runs = {"response": {0: {NO_BOOT: 0.5}, 1: {NO_BOOT: 0.6, "reasoning.accuracy": 0.5}},
            "pos": {0: {NO_BOOT: 0.8, "reasoning.accuracy": 0.7}, 1: {NO_BOOT: 0.7}}}
    cell = ablation(runs, "response")["variants"]["pos"]["reasoning.accuracy"]
    assert cell["per_seed"] == {"0": 0.7} and "diff_mean" not in cell and "p_value" not in cell


def test_against_baseline_pairs_seeds_that_both_have_the_metric():
    seeds = {0: {NO_BOOT: 0.9}, 1: {"other": 1.0}, 3: {NO_BOOT: 0.4}}
    base = {0: {NO_BOOT: 0.5}, 1: {NO_BOOT: 0.5}, 2: {NO_BOOT: 0.1}, 3: {"other": 0.0}}
    out = _against_baseline(NO_BOOT, seeds, base, None)
    assert out["diff_per_seed"] == {"0": pytest.approx(0.4)} and out["diff_mean"] == pytest.approx(0.4)
    assert out["diff_ci95"] is None and out["p_value"] is None
    assert _against_baseline(NO_BOOT, {5: {NO_BOOT: 1.0}}, base, None) == {}


def test_no_baseline_in_the_runs_leaves_every_variant_uncompared():
    runs = {"pos": plain({0: 0.7, 1: 0.8}), "neg": plain({0: 0.4, 1: 0.6})}
    result = ablation(runs, "response")
    for variant in ("pos", "neg"):
        cell = result["variants"][variant][NO_BOOT]
        assert not {"diff_mean", "p_value", "p_holm", "significant"} & set(cell)
    assert verdict(result, None, 0.5, (0.2, 0.8)) == "the baseline `response` was not evaluated"


def test_the_baseline_defaults_to_response_and_other_variants_are_listed_after_the_known_ones():
    runs = {"zeta": plain({0: 0.1, 1: 0.2}), "pos": plain({0: 0.7, 1: 0.8}), "alpha": plain({0: 0.3, 1: 0.3}),
            "response": plain({0: 0.5, 1: 0.6})}
    result = ablation(runs)
    assert result["baseline"] == "response"
    assert list(result["variants"]) == ["response", "pos", "alpha", "zeta"]
    assert result["variants"]["pos"][NO_BOOT]["diff_mean"] == pytest.approx(0.2)
    assert result["columns"] == [k for k, _ in report.COLUMNS]


def test_holm_over_the_variants_of_one_metric_by_hand():
    runs = {"response": plain({0: 0.5, 1: 0.5, 2: 0.5}),
            "pos": plain({0: 0.7, 1: 0.8, 2: 0.75}),  # diffs 0.2, 0.3, 0.25
            "neg": plain({0: 0.6, 1: 0.4, 2: 0.7}),  # diffs 0.1, -0.1, 0.2
            "pos_neg": plain({0: 0.6, 1: 0.7, 2: 0.65})}  # diffs 0.1, 0.2, 0.15
    result = ablation(runs, "response")
    p = {v: ttest_1samp(d, 0.0).pvalue for v, d in
         (("pos", [0.2, 0.3, 0.25]), ("neg", [0.1, -0.1, 0.2]), ("pos_neg", [0.1, 0.2, 0.15]))}
    assert p["pos"] < p["pos_neg"] < p["neg"]
    # step-down: 3 p_pos, then max(that, 2 p_pos_neg), then max(that, p_neg)
    first = min(1.0, 3 * p["pos"])
    second = max(first, min(1.0, 2 * p["pos_neg"]))
    third = max(second, p["neg"])
    cells = {v: result["variants"][v][NO_BOOT] for v in p}
    assert cells["pos"]["p_holm"] == pytest.approx(first)
    assert cells["pos_neg"]["p_holm"] == pytest.approx(second)
    assert cells["neg"]["p_holm"] == pytest.approx(third)
    # 3 * 0.0131 < 0.05; 2 * 0.0351 and 0.53 are not (though 0.0351 alone would be); no images p,
    # so Holm alone decides
    assert first < 0.05 < second and p["pos_neg"] < 0.05
    assert cells["pos"]["significant"] is True
    assert cells["pos_neg"]["significant"] is False and cells["neg"]["significant"] is False


def test_holm_is_per_metric_and_only_over_headline_columns():
    runs = {"response": {s: {NO_BOOT: 0.5, "reasoning.accuracy": 0.5, "pope.random.accuracy": 0.5} for s in (0, 1)},
            "pos": {0: {NO_BOOT: 0.6, "reasoning.accuracy": 0.9, "pope.random.accuracy": 0.7},
                    1: {NO_BOOT: 0.6, "reasoning.accuracy": 0.7, "pope.random.accuracy": 0.6}}}
    pos = ablation(runs, "response")["variants"]["pos"]
    assert pos[NO_BOOT]["p_holm"] == 0.0 and pos[NO_BOOT]["significant"] is True
    # diffs 0.4, 0.2: t = 3 on one degree of freedom
    assert pos["reasoning.accuracy"]["p_holm"] == pytest.approx(1 - 2 * math.atan(3) / math.pi)
    assert pos["reasoning.accuracy"]["significant"] is False
    # a POPE detail key has a p-value but is no family of the table
    assert pos["pope.random.accuracy"]["p_value"] == pytest.approx(1 - 2 * math.atan(3) / math.pi)
    assert "p_holm" not in pos["pope.random.accuracy"] and "significant" not in pos["pope.random.accuracy"]


def test_significance_needs_holm_strictly_below_five_percent(monkeypatch):
    runs = {"response": plain({0: 0.5, 1: 0.5}), "pos": plain({0: 0.75, 1: 0.75})}
    monkeypatch.setattr(report, "holm", lambda p_values: {k: 0.05 for k in p_values})
    cell = ablation(runs, "response")["variants"]["pos"][NO_BOOT]
    assert cell["p_holm"] == 0.05 and cell["significant"] is False
    monkeypatch.setattr(report, "holm", lambda p_values: {k: 0.0499 for k in p_values})
    assert ablation(runs, "response")["variants"]["pos"][NO_BOOT]["significant"] is True


# ---- the bootstrap over images and what it does to `significant` ---------------------------

BASE_RIGHT = set(range(5))


def boot_runs(variant_rights, base_rights=(BASE_RIGHT,) * 3) -> dict:
    return {"response": {s: sa_run(r) for s, r in enumerate(base_rights)},
            "pos": {s: sa_run(r) for s, r in enumerate(variant_rights)}}


def test_both_p_values_small_is_significant_and_the_bootstrap_matches_numpy():
    # `pos` right on 10 more images every seed: diffs 0.5, 0.5, 0.5 (p 0), every resample > 0
    rights = (set(range(15)),) * 3
    result = ablation(boot_runs(rights), "response", replicates=200, seed=7)
    cell = result["variants"]["pos"][KEY]
    d = my_images_diff(my_weights(200, 7), rights, (BASE_RIGHT,) * 3)
    assert (d > 0).all()
    assert cell["p_value"] == 0.0 and cell["p_holm"] == 0.0
    assert cell["p_value_images"] == pytest.approx(2 / 201) == pytest.approx(my_images_p(d))
    assert cell["diff_ci95_bootstrap"] == pytest.approx(list(np.quantile(d, [0.025, 0.975])))
    assert cell["significant"] is True
    assert result["bootstrap_replicates"] == 200 and result["eval_images"] == N
    assert "p_value_images" not in result["variants"]["response"][KEY]


def test_a_small_seed_p_with_a_large_images_p_is_not_significant():
    # every seed `pos` loses images 0, 1 and wins 10, 11, 12: diff +0.05 each seed (p 0),
    # but over resampled images the sign is a toss-up
    rights = (set(range(2, 13)), ) * 3
    base = (set(range(10)),) * 3
    cell = ablation(boot_runs(rights, base), "response", replicates=300, seed=1)["variants"]["pos"][KEY]
    d = my_images_diff(my_weights(300, 1), rights, base)
    assert cell["p_holm"] == 0.0
    assert cell["p_value_images"] == pytest.approx(my_images_p(d)) and my_images_p(d) > 0.2
    assert cell["diff_ci95_bootstrap"] == pytest.approx(list(np.quantile(d, [0.025, 0.975])))
    assert cell["significant"] is False


def test_a_large_seed_p_with_a_small_images_p_is_not_significant():
    # diffs 0.1, 0.5, 0.1 over seeds: t = 1.75 on 2 df, p = 0.22; `pos` is never worse on any image
    rights = (set(range(7)), set(range(15)), set(range(7)))
    cell = ablation(boot_runs(rights), "response", replicates=200, seed=3)["variants"]["pos"][KEY]
    d = my_images_diff(my_weights(200, 3), rights, (BASE_RIGHT,) * 3)
    assert (d > 0).all()
    assert cell["p_value"] == pytest.approx(ttest_1samp([0.1, 0.5, 0.1], 0.0).pvalue)
    assert cell["p_holm"] == pytest.approx(cell["p_value"]) and cell["p_holm"] > 0.05
    assert cell["p_value_images"] == pytest.approx(2 / 201)
    assert cell["significant"] is False


def test_an_images_p_of_exactly_five_percent_is_not_significant():
    # 39 replicates all above zero: p = 2 * 1 / 40 = 0.05 exactly
    rights = (set(range(15)),) * 3
    cell = ablation(boot_runs(rights), "response", replicates=39, seed=2)["variants"]["pos"][KEY]
    assert (my_images_diff(my_weights(39, 2), rights, (BASE_RIGHT,) * 3) > 0).all()
    assert cell["p_holm"] == 0.0 and cell["p_value_images"] == 0.05
    assert cell["significant"] is False


def test_the_default_bootstrap_is_a_thousand_replicates_drawn_from_seed_zero():
    rights = (set(range(2, 13)),) * 3
    base = (set(range(10)),) * 3
    result = ablation(boot_runs(rights, base))
    assert result["bootstrap_replicates"] == 1000 and result["eval_images"] == N
    d = my_images_diff(my_weights(1000, 0), rights, base)
    cell = result["variants"]["pos"][KEY]
    assert cell["p_value_images"] == pytest.approx(my_images_p(d))
    assert cell["diff_ci95_bootstrap"] == pytest.approx(list(np.quantile(d, [0.025, 0.975])))


def test_the_bootstrap_seed_is_passed_on():
    rights = (set(range(2, 13)),) * 3
    base = (set(range(10)),) * 3
    for seed in (4, 5):
        cell = ablation(boot_runs(rights, base), "response", replicates=100, seed=seed)["variants"]["pos"][KEY]
        d = my_images_diff(my_weights(100, seed), rights, base)
        assert cell["diff_ci95_bootstrap"] == pytest.approx(list(np.quantile(d, [0.025, 0.975])))
        assert cell["p_value_images"] == pytest.approx(my_images_p(d))


def test_no_images_p_means_holm_alone_decides():
    runs = {"response": {s: sa_run(BASE_RIGHT, images=False, components=False) for s in range(3)},
            "pos": {s: sa_run(set(range(15)), images=False, components=False) for s in range(3)}}
    result = ablation(runs, "response", replicates=50)
    cell = result["variants"]["pos"][KEY]
    assert "p_value_images" not in cell and cell["p_holm"] == 0.0 and cell["significant"] is True
    assert result["bootstrap_replicates"] == 0 and result["eval_images"] is None


def test_runs_on_other_images_keep_their_counts_but_get_no_bootstrap():
    runs = boot_runs((set(range(15)),) * 3)
    runs["pos"][2]["images"] = IMAGES[::-1]
    result = ablation(runs, "response", replicates=50)
    cell = result["variants"]["pos"][KEY]
    assert "diff_ci95_bootstrap" not in cell and "p_value_images" not in cell
    assert cell["p_value"] == 0.0 and cell["significant"] is True
    assert result["bootstrap_replicates"] == 0 and result["eval_images"] is None
    assert result["pope_f1_standard_error"] is None


def test_a_metric_without_counts_on_one_side_gets_no_bootstrap():
    # the images are shared (so there are weights), but only `pos` has per-image counts
    runs = boot_runs((set(range(15)),) * 3)
    for m in runs["response"].values():
        del m["components"]
    result = ablation(runs, "response", replicates=50)
    assert result["bootstrap_replicates"] == 50
    assert "p_value_images" not in result["variants"]["pos"][KEY]
    # and the other way round: the baseline has them, `pos` does not
    runs = boot_runs((set(range(15)),) * 3)
    for m in runs["pos"].values():
        del m["components"]
    assert "p_value_images" not in ablation(runs, "response", replicates=50)["variants"]["pos"][KEY]
    # counts of another metric only: the baseline has no KEY counts on one seed
    runs = boot_runs((set(range(15)),) * 3)
    runs["response"][1]["components"] = {"reasoning.accuracy": np.ones((N, 2))}
    assert "p_value_images" not in ablation(runs, "response", replicates=50)["variants"]["pos"][KEY]


def test_metrics_without_per_image_counts_are_not_bootstrapped_even_with_weights():
    runs = boot_runs((set(range(15)),) * 3)
    for variant, value in (("response", 0.5), ("pos", 0.6)):
        for m in runs[variant].values():
            m[NO_BOOT] = value
            m["pope.random.accuracy"] = value  # in METRICS, but no counts in these runs
    result = ablation(runs, "response", replicates=50)
    pos = result["variants"]["pos"]
    assert "p_value_images" in pos[KEY]
    for key in (NO_BOOT, "pope.random.accuracy"):
        assert "p_value_images" not in pos[key] and pos[key]["diff_mean"] == pytest.approx(0.1)


# ---- _shared_weights ---------------------------------------------------------------------

def test_shared_weights_are_one_draw_for_every_run():
    runs = boot_runs((set(range(15)),) * 3)
    w = _shared_weights(runs, 30, 9)
    assert w.shape == (30, N)
    assert np.array_equal(w, my_weights(30, 9))


def test_shared_weights_for_a_single_run():
    w = _shared_weights({"response": {0: sa_run(BASE_RIGHT)}}, 12, 0)
    assert np.array_equal(w, my_weights(12, 0))


def test_no_shared_weights_when_runs_answered_other_images_or_some_run_has_none():
    runs = boot_runs((set(range(15)),) * 3)
    runs["pos"][1]["images"] = IMAGES[:-1] + ["elsewhere"]
    assert _shared_weights(runs, 10, 0) is None
    runs = boot_runs((set(range(15)),) * 3)
    runs["response"][0]["images"] = IMAGES[1:]  # the first run differs from all the others
    assert _shared_weights(runs, 10, 0) is None
    runs = boot_runs((set(range(15)),) * 3)
    del runs["pos"][2]["images"]
    assert _shared_weights(runs, 10, 0) is None
    assert _shared_weights({"response": {0: {KEY: 0.5}}, "pos": {0: {KEY: 0.6}}}, 10, 0) is None


# ---- McNemar per POPE split ----------------------------------------------------------------

def test_mcnemar_counts_per_split_on_the_questions_both_answered():
    def pope(correct: dict) -> dict:
        return {"pope.random.accuracy": 0.5, "pope.popular.accuracy": 0.5, "pope.adversarial.accuracy": 0.5,
                "pope.random.f1": 0.5, "pope_correct": correct}

    base = {0: pope({"pope-random-0-yes": True, "pope-random-0-no": False, "pope-random-1-yes": False,
                     "pope-popular-0-yes": True, "pope-popular-0-no": True, "pope-adversarial-0-yes": False}),
            1: pope({"pope-random-0-yes": False, "pope-random-0-no": False, "pope-popular-0-yes": True})}
    pos = {0: pope({"pope-random-0-yes": True, "pope-random-0-no": True, "pope-random-1-yes": True,
                    "pope-random-7-yes": True,  # the baseline never answered it: left out
                    "pope-popular-0-yes": False, "pope-popular-0-no": False, "pope-adversarial-0-yes": True}),
           1: pope({"pope-random-0-yes": True, "pope-random-0-no": False, "pope-popular-0-yes": True,
                    "pope-popular-9-no": False})}
    out = ablation({"response": base, "pos": pos}, "response")["variants"]["pos"]
    # random: seed 0 `pos` alone right on 0-no and 1-yes, seed 1 on 0-yes; 0-yes of seed 0 both right
    assert out["pope.random.accuracy"]["mcnemar"] == {"only_variant_right": 3, "only_baseline_right": 0,
                                                      "p_value": pytest.approx(2 * 0.5 ** 3)}
    # popular: the baseline alone right on 0-yes and 0-no of seed 0; seed 1 both right
    assert out["pope.popular.accuracy"]["mcnemar"] == {"only_variant_right": 0, "only_baseline_right": 2,
                                                       "p_value": pytest.approx(2 * 0.5 ** 2)}
    # adversarial: one question, `pos` alone right
    assert out["pope.adversarial.accuracy"]["mcnemar"]["only_variant_right"] == 1
    assert out["pope.adversarial.accuracy"]["mcnemar"]["only_baseline_right"] == 0
    assert out["pope.adversarial.accuracy"]["mcnemar"]["p_value"] == 1.0
    assert "mcnemar" not in out["pope.random.f1"]
    # one seed without answers: no McNemar test at all
    del pos[1]["pope_correct"]
    out = ablation({"response": base, "pos": pos}, "response")["variants"]["pos"]
    assert "mcnemar" not in out["pope.random.accuracy"]


def test_mcnemar_p_value_mixed_discordant_pairs():
    seeds = {0: {"pope.random.accuracy": 0.5, "pope_correct": {f"pope-random-{i}-yes": i < 5 for i in range(8)}}}
    base = {0: {"pope.random.accuracy": 0.5, "pope_correct": {f"pope-random-{i}-yes": i >= 3 for i in range(8)}}}
    # pos alone right on 0, 1, 2; the baseline alone on 5, 6, 7; both on 3, 4
    out = _against_baseline("pope.random.accuracy", seeds, base, None)["mcnemar"]
    assert out["only_variant_right"] == 3 and out["only_baseline_right"] == 3 and out["p_value"] == 1.0
    base[0]["pope_correct"] = {f"pope-random-{i}-yes": i == 7 for i in range(8)}
    out = _against_baseline("pope.random.accuracy", seeds, base, None)["mcnemar"]
    # 5 vs 1 discordant: binomial two-sided
    assert (out["only_variant_right"], out["only_baseline_right"]) == (5, 1)
    assert out["p_value"] == pytest.approx(binomtest(5, 6, 0.5).pvalue) == pytest.approx(2 * 7 / 64)


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
    out = _pope_standard_errors(runs, weights)
    assert out == {"random": pytest.approx(statistics.median(errors))}
    # an odd number of runs: the middle one
    del runs["pos"][1]
    assert _pope_standard_errors(runs, weights) == {"random": pytest.approx(sorted(errors[:3])[1])}
    # through the ablation, with the weights it draws itself
    result = ablation(runs, "response", replicates=80, seed=0)
    assert result["pope_f1_standard_error"] == {"random": pytest.approx(sorted(errors[:3])[1])}
    assert _pope_standard_errors(runs, None) is None
    assert _pope_standard_errors({"response": {0: {"images": IMAGES}}}, weights) == {}


# ---- verdict -------------------------------------------------------------------------------

def pope_result(accuracy=(0.8, 0.8, 0.8), yes_ratio=(0.5, 0.5, 0.5), baseline="response") -> dict:
    row = {"seeds": [0]}
    for split, acc, ratio in zip(("random", "popular", "adversarial"), accuracy, yes_ratio):
        if acc is not None:
            row[f"pope.{split}.accuracy"] = {"mean": acc}
        if ratio is not None:
            row[f"pope.{split}.yes_ratio"] = {"mean": ratio}
    return {"baseline": baseline, "variants": {baseline: row, "pos": {"seeds": [0]}}}


def test_verdict_passes_a_baseline_that_sees():
    assert verdict(pope_result(), None, 0.6, (0.2, 0.8)) is None
    assert verdict(pope_result(), {"passed": True, "failure": None}, 0.6, (0.2, 0.8)) is None
    assert verdict(pope_result(), {"failure": "unchecked"}, 0.6, (0.2, 0.8)) is None  # no verdict on passing
    assert verdict(pope_result(), {}, 0.6, (0.2, 0.8)) is None


def test_verdict_a_baseline_without_a_yes_ratio_is_void_not_a_crash():
    reason = verdict(pope_result(yes_ratio=(None, None, None)), None, 0.6, (0.2, 0.8))
    assert reason == ("the baseline `response` has no POPE yes-ratio, so an always-yes answerer cannot be "
                      "ruled out")
    both = verdict(pope_result(accuracy=(0.5, 0.5, 0.5), yes_ratio=(None, None, None)), None, 0.6, (0.2, 0.8))
    assert both.startswith("the baseline `response` answers POPE at accuracy 0.500") and "no POPE yes-ratio" in both


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
    reason = verdict(pope_result(accuracy=(0.5, 0.5, 0.5), yes_ratio=(1.0, 1.0, 1.0), baseline="pos_neg"),
                     {"passed": False, "failure": "blind"}, 0.6, (0.2, 0.8))
    assert reason == ("the base student failed its check (blind); "
                      "the baseline `pos_neg` answers POPE at accuracy 0.500, below "
                      "report.min_baseline_pope_accuracy = 0.6; "
                      "the baseline `pos_neg` says yes to 100.0% of POPE questions, outside "
                      "report.baseline_yes_ratio = [0.2, 0.8]")


def test_verdict_without_the_baseline_or_its_pope_scores():
    result = pope_result()
    result["baseline"] = "neg"
    assert verdict(result, {"passed": False, "failure": "x"}, 0.6, (0.2, 0.8)) == "the baseline `neg` was not evaluated"
    result = {"baseline": "pos", "variants": {"pos": {"seeds": [0, 1], NO_BOOT: {"mean": 0.9}}}}
    assert verdict(result, None, 0.6, (0.2, 0.8)) == "the baseline `pos` has no POPE scores"


def test_verdict_on_a_real_ablation_table():
    runs = {"response": {s: {"pope.random.accuracy": a, "pope.random.yes_ratio": r}
                         for s, (a, r) in enumerate(((0.7, 0.5), (0.8, 0.6), (0.9, 0.7)))}}
    result = ablation(runs, "response")
    assert verdict(result, None, 0.75, (0.2, 0.8)) is None  # mean accuracy 0.8, yes-ratio 0.6
    assert verdict(result, None, 0.85, (0.2, 0.8)).startswith("the baseline `response` answers POPE at accuracy 0.800")
    assert "says yes to 60.0%" in verdict(result, None, 0.5, (0.1, 0.5))


# ---- void_reason ---------------------------------------------------------------------------

def test_void_reason_reads_the_written_report(tmp_path):
    assert void_reason(tmp_path) is None  # no report yet
    (tmp_path / "ablation.json").write_text(json.dumps({"void": False, "void_reason": "stale text"}))
    assert void_reason(tmp_path) is None
    assert void_reason(str(tmp_path)) is None
    (tmp_path / "ablation.json").write_text(json.dumps({"void": True, "void_reason": "the baseline is blind"}))
    assert void_reason(tmp_path) == "the baseline is blind"
    assert void_reason(str(tmp_path)) == "the baseline is blind"
    (tmp_path / "ablation.json").write_text(json.dumps({"void_reason": "no flag"}))
    assert void_reason(tmp_path) is None
    (tmp_path / "elsewhere").mkdir()
    assert void_reason(tmp_path / "elsewhere") is None


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
    assert bootstrap_interval(samples, 0.5) == pytest.approx([25.0, 75.0])
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
    # every image has the same chance: over many draws each gets about one fifth
    many = bootstrap_weights(5, 4000, seed=0)
    assert np.allclose(many.mean(axis=0), 1.0, atol=0.05)


def test_resampled_scores_each_weighted_eval_set():
    components = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 2.0]])
    weights = np.array([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    out = resampled(lambda c: c[0] / c[1], components, weights)
    # totals (1, 1), (2, 3), (3, 6), (2, 4)
    assert out == pytest.approx([1.0, 2 / 3, 0.5, 0.5])
    assert isinstance(out, np.ndarray)


def test_mcnemar_p_value_against_the_binomial_by_hand():
    assert mcnemar_p_value(0, 0) == 1.0
    assert mcnemar_p_value(1, 0) == 1.0  # 2 * 0.5
    assert mcnemar_p_value(0, 3) == pytest.approx(0.25)  # 2 * 0.5 ** 3
    # 6 vs 2: P(X <= 2) for Bin(8, 1/2) = (1 + 8 + 28) / 256, doubled
    assert mcnemar_p_value(6, 2) == pytest.approx(2 * 37 / 256) == pytest.approx(mcnemar_p_value(2, 6))
    assert type(mcnemar_p_value(4, 1)) is float


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
    assert holm({"a": 0.9, "b": 0.8, "c": 0.7}) == {"a": 1.0, "b": 1.0, "c": 1.0}
