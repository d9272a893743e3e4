"""The report's statistics against hand-computed figures and an independent scorer."""
import math
import random

import numpy as np
import pytest

from reverie.evaluation.per_image import METRICS, image_components
from reverie.evaluation.run import headline
from reverie.evaluation.scoring import score_predictions
from reverie.statistics import (bootstrap_p_value, bootstrap_weights, holm, minimum_detectable_difference,
                                one_sided_p_value, resampled, t_interval, two_level_draws, two_level_means)


def test_t_interval_by_hand():
    # mean 2, sample sd 1, n 3: half-width t(0.975, 2) * 1 / sqrt(3) = 4.302653 / 1.732051
    low, high = t_interval([1.0, 2.0, 3.0])
    assert low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert high == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)
    assert t_interval([0.5]) is None


def test_holm_by_hand():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, then max(0.06, 0.04) = 0.06
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


def test_bootstrap_p_value_counts_both_sides():
    assert bootstrap_p_value(np.array([0.1] * 99)) == pytest.approx(2 * 1 / 100)
    assert bootstrap_p_value(np.array([-1.0, 1.0] * 50)) == 1.0


def test_one_sided_p_value_is_never_zero():
    # 99 replicates all above zero: (0 + 1) / 100
    assert one_sided_p_value(np.array([0.1] * 99)) == pytest.approx(1 / 100)
    # zeros count against the claim: 0, 0, 1, 1 -> (2 + 1) / 5
    assert one_sided_p_value(np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(3 / 5)
    assert one_sided_p_value(-np.ones(4)) == 1.0
    assert type(one_sided_p_value(np.ones(3))) is float


def test_minimum_detectable_difference_by_hand():
    from scipy.stats import norm

    # one comparison: (z_0.975 + z_0.8) * sd / sqrt(n) = (1.959964 + 0.841621) * 0.05 / sqrt(3)
    assert minimum_detectable_difference(0.05, 3, 1) == pytest.approx((1.959964 + 0.841621) * 0.05 / math.sqrt(3),
                                                                      rel=1e-6)
    # a family of five: alpha 0.05 / 5, two-sided -> z_(1 - 0.005)
    assert minimum_detectable_difference(0.02, 4, 5) == pytest.approx(
        (norm.ppf(0.995) + norm.ppf(0.8)) * 0.02 / 2)
    assert minimum_detectable_difference(0.02, 4, 5, alpha=0.1, power=0.9) == pytest.approx(
        (norm.ppf(0.99) + norm.ppf(0.9)) * 0.02 / 2)
    assert minimum_detectable_difference(0.0, 3, 5) == 0.0


def test_two_level_draws_are_seed_picks_then_image_weights_from_one_generator():
    picks, weights = two_level_draws(3, 7, 40, seed=5)
    rng = np.random.default_rng(5)
    assert np.array_equal(picks, rng.integers(0, 3, size=(40, 3)))
    assert np.array_equal(weights, rng.multinomial(7, [1 / 7] * 7, size=(40, 3)))
    assert picks.shape == (40, 3) and weights.shape == (40, 3, 7) and (weights.sum(axis=2) == 7).all()
    # every seed is drawn, and the draws of one replicate differ (with replacement)
    assert set(np.unique(picks)) == {0, 1, 2}
    assert any(len(set(row)) < 3 for row in picks)
    again = two_level_draws(3, 7, 40, seed=5)
    assert np.array_equal(again[0], picks) and np.array_equal(again[1], weights)


def test_two_level_means_by_hand():
    # two seeds' runs on three images, accuracy = right / asked
    runs = [np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]),  # seed 0: right on images 0 and 2
            np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])]  # seed 1: right on image 2
    picks = np.array([[0, 0], [1, 0], [1, 1]])
    weights = np.array([[[1, 1, 1], [3, 0, 0]],  # seed 0 on every image: 2/3; seed 0 on image 0: 1
                        [[1, 1, 1], [0, 3, 0]],  # seed 1 on every image: 1/3; seed 0 on image 1: 0
                        [[0, 0, 3], [2, 1, 0]]], dtype=np.float32)  # seed 1 on image 2: 1; on images 0, 1: 0
    out = two_level_means(lambda c: c[0] / c[1], runs, picks, weights)
    assert out == pytest.approx([(2 / 3 + 1) / 2, (1 / 3 + 0) / 2, (1 + 0) / 2])


def test_bootstrap_weights_draw_each_eval_set_of_the_same_size():
    w = bootstrap_weights(7, 50, seed=3)
    assert w.shape == (50, 7) and (w.sum(axis=1) == 7).all()
    assert not np.array_equal(w[0], w[1])
    assert np.array_equal(w, bootstrap_weights(7, 50, seed=3))


def random_rows(seed: int, images: int = 12) -> list[dict]:
    """Predictions of every benchmark with mixed right, wrong and unparseable answers."""
    rng = random.Random(seed)
    rows = []
    for i in range(images):
        image = f"images/eval/{i}.png"
        for split in ("random", "popular", "adversarial"):
            for label in ("yes", "no"):
                rows.append({"benchmark": "pope", "qid": f"pope-{split}-{i}-{label}", "image": image, "split": split,
                             "label": label, "answer": rng.choice(["Yes", "No", "no.", "maybe"])})
        for task in ("existence", "count", "position", "color"):
            for label in ("yes", "no"):
                rows.append({"benchmark": "mme", "qid": f"mme-{task}-{i}-{label}", "image": image, "subtask": task,
                             "label": label, "answer": rng.choice(["yes", "no", "other"])})
        options = ["red", "blue", "green", "white"]
        for r in range(4):
            rows.append({"benchmark": "mmbench", "qid": f"mmb-{i}-r{r}", "image": image, "question_id": f"mmb-{i}",
                         "rotation": r, "options": options[r:] + options[:r], "label": "ABCD"[(0 - r) % 4],
                         "answer": rng.choice(["A", "B", "red", "C"])})
        rows.append({"benchmark": "short_answer", "qid": f"s-{i}", "image": image, "label": "2", "category": "count",
                     "answer": rng.choice(["2", "two", "3"])})
        rows.append({"benchmark": "reasoning", "qid": f"r-{i}", "image": image, "label": "yes", "question_type": "yes_no",
                     "answer": rng.choice(["yes", "no"])})
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_image_sums_give_back_the_scorers_figures(seed):
    rows = random_rows(seed)
    expected = headline(score_predictions(rows))
    images, components = image_components(rows)
    assert len(images) == 12
    shared = [key for key in METRICS if key in expected]
    assert len(shared) == 14  # every synthetic headline figure (POPE 10, MME-4, MMBench, short answers, reasoning); the real MME's groups and ScienceQA are not in these rows
    for key in shared:
        assert METRICS[key].value(components[key].sum(axis=0)) == pytest.approx(expected[key]), key


def test_resampling_one_image_many_times_scores_that_image_alone():
    rows = random_rows(5)
    images, components = image_components(rows)
    only_third = np.zeros((1, len(images)))
    only_third[0, 3] = 5  # the eval set "image 3, five times"
    alone = headline(score_predictions([r for r in rows if r["image"] == images[3]]))
    for key in ("pope.random.accuracy", "mmbench.circular_accuracy", "short_answer.accuracy", "mme.score"):
        assert resampled(METRICS[key].value, components[key], only_third)[0] == pytest.approx(alone[key]), key
