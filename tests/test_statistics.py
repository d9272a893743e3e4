"""The report's statistics against hand-computed figures and an independent scorer."""
import math
import random

import numpy as np
import pytest

from reverie.evaluation.per_image import METRICS, image_components
from reverie.evaluation.run import headline
from reverie.evaluation.scoring import score_predictions
from reverie.statistics import (bootstrap_p_value, bootstrap_weights, holm, mcnemar_p_value, resampled,
                                t_interval)


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


def test_mcnemar_exact_by_hand():
    # 8 discordant pairs, all one way: 2 * 0.5**8
    assert mcnemar_p_value(8, 0) == pytest.approx(2 * 0.5 ** 8)
    # 5 vs 3: P(X <= 3) for Bin(8, 1/2) = (1 + 8 + 28 + 56) / 256, doubled
    assert mcnemar_p_value(5, 3) == pytest.approx(2 * 93 / 256)
    assert mcnemar_p_value(0, 0) == 1.0


def test_bootstrap_p_value_counts_both_sides():
    assert bootstrap_p_value(np.array([0.1] * 99)) == pytest.approx(2 * 1 / 100)
    assert bootstrap_p_value(np.array([-1.0, 1.0] * 50)) == 1.0


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
    for key, metric in METRICS.items():
        assert metric.value(components[key].sum(axis=0)) == pytest.approx(expected[key]), key


def test_resampling_one_image_many_times_scores_that_image_alone():
    rows = random_rows(5)
    images, components = image_components(rows)
    only_third = np.zeros((1, len(images)))
    only_third[0, 3] = 5  # the eval set "image 3, five times"
    alone = headline(score_predictions([r for r in rows if r["image"] == images[3]]))
    for key in ("pope.random.accuracy", "mmbench.circular_accuracy", "short_answer.accuracy", "mme.score"):
        assert resampled(METRICS[key].value, components[key], only_third)[0] == pytest.approx(alone[key]), key
