"""The report's ablation maths and its verdict, on runs whose figures are set by hand."""
import json
import math
import statistics

import pytest

from reverie.report import ablation, collect, verdict, write_report
from reverie.settings import ReportSettings

T_975_2 = 4.302653  # Student's t quantile, 2 degrees of freedom


def pope_rows(right: list[bool], said_yes_when_wrong: bool = True) -> list[dict]:
    """POPE predictions over images 0..n-1 of the random split: one yes-question per image,
    answered right or wrong."""
    rows = []
    for i, ok in enumerate(right):
        rows.append({"benchmark": "pope", "qid": f"pope-random-{i}-yes", "image": f"im{i}", "split": "random",
                     "label": "yes", "answer": "yes" if ok else "no"})
        rows.append({"benchmark": "pope", "qid": f"pope-random-{i}-no", "image": f"im{i}", "split": "random",
                     "label": "no", "answer": "no" if ok else ("yes" if said_yes_when_wrong else "no")})
    return rows


def write_run(root, name: str, rows: list[dict]) -> None:
    from reverie.evaluation.run import headline
    from reverie.evaluation.scoring import score_predictions

    scores = score_predictions(rows)
    (root / "eval").mkdir(exist_ok=True)
    (root / "predictions").mkdir(exist_ok=True)
    (root / "eval" / f"{name}.json").write_text(json.dumps({**headline(scores), "scores": scores}))
    (root / "predictions" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def runs(tmp_path):
    # 10 images; the baseline gets 6, 7, 8 right over seeds 0..2, `pos` 8, 9, 9
    for variant, rights in (("response", (6, 7, 8)), ("pos", (8, 9, 9))):
        for seed, k in enumerate(rights):
            write_run(tmp_path, f"{variant}-s{seed}", pope_rows([i < k for i in range(10)]))
    return tmp_path


def test_means_intervals_and_paired_differences_by_hand(runs):
    result = ablation(collect(runs / "eval", None, runs / "predictions"), "response", replicates=200)
    base = result["variants"]["response"]["pope.random.accuracy"]
    assert base["mean"] == pytest.approx(0.7) and base["std"] == pytest.approx(0.1)
    assert base["ci95"] == pytest.approx([0.7 - T_975_2 * 0.1 / math.sqrt(3), 0.7 + T_975_2 * 0.1 / math.sqrt(3)])
    pos = result["variants"]["pos"]["pope.random.accuracy"]
    # per-seed differences 0.2, 0.2, 0.1: mean 0.1667, sd 0.0577
    diffs = [0.2, 0.2, 0.1]
    half = T_975_2 * statistics.stdev(diffs) / math.sqrt(3)
    assert pos["diff_mean"] == pytest.approx(statistics.fmean(diffs))
    assert pos["diff_ci95"] == pytest.approx([statistics.fmean(diffs) - half, statistics.fmean(diffs) + half])
    from scipy.stats import ttest_1samp

    assert pos["p_value"] == pytest.approx(ttest_1samp(diffs, 0).pvalue)
    # McNemar on the random split pooled over seeds: `pos` alone right on 2 + 2 + 1 images,
    # two questions each; the baseline alone right on none
    assert pos["mcnemar"]["only_variant_right"] == 10 and pos["mcnemar"]["only_baseline_right"] == 0
    assert pos["mcnemar"]["p_value"] == pytest.approx(2 * 0.5 ** 10)
    # the bootstrap over images stays on the side of the difference it resamples
    low, high = pos["diff_ci95_bootstrap"]
    assert 0 < low <= statistics.fmean(diffs) <= high
    assert result["pope_f1_standard_error"]["random"] > 0


def test_verdict_voids_a_baseline_that_does_not_see(runs, tmp_path):
    settings = ReportSettings(min_baseline_pope_accuracy=0.75)
    result = ablation(collect(runs / "eval", None, runs / "predictions"), "response", replicates=100)
    reason = verdict(result, None, settings.min_baseline_pope_accuracy, settings.baseline_yes_ratio)
    assert "accuracy 0.700" in reason and "report.min_baseline_pope_accuracy = 0.75" in reason
    assert verdict(result, None, 0.6, (0.2, 0.8)) is None
    # an always-yes baseline: right on every yes-question, wrong on every no-question
    for seed in range(3):
        write_run(runs, f"response-s{seed}", [dict(r, answer="yes") for r in pope_rows([True] * 10)])
    result = ablation(collect(runs / "eval", None, runs / "predictions"), "response", replicates=100)
    reason = verdict(result, None, 0.4, (0.2, 0.8))
    assert "says yes to 100.0%" in reason and "report.baseline_yes_ratio" in reason


def test_a_void_report_says_so_at_the_top_and_in_the_json(runs, tmp_path):
    out = tmp_path / "reports"
    result = write_report(runs / "eval", None, None, out, ReportSettings(min_baseline_pope_accuracy=0.9),
                          runs / "predictions")
    report = (out / "report.md").read_text()
    assert report.splitlines()[2].startswith("> **VOID")
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["void"] is True and "0.9" in saved["void_reason"] and result["void"]
    ok = write_report(runs / "eval", None, None, out, ReportSettings(min_baseline_pope_accuracy=0.6), runs / "predictions")
    assert ok["void"] is False and "VOID" not in (out / "report.md").read_text()
    assert json.loads((out / "ablation.json").read_text())["void_reason"] is None
