"""The report from files on disk: metrics, tune summaries, saved answers of the students and of
the reference answerers, through `collect`, `ablation`, `verdict` and `write_report`."""
import json
import math
import statistics

import pytest

from reverie.report import ablation, collect, collect_references, verdict, write_report
from reverie.settings import ReportSettings

T_975_2 = 4.302653  # Student's t quantile, 2 degrees of freedom
IMAGES = 40


def pope_rows(right: list[bool], splits=("random",), wrong_answer: str = "flip") -> list[dict]:
    """POPE predictions over images 0..n-1: a yes- and a no-question per image and split,
    both answered right or both wrong (`flip`: the other word; else that answer)."""
    rows = []
    for split in splits:
        for i, ok in enumerate(right):
            for label in ("yes", "no"):
                answer = label if ok else ({"yes": "no", "no": "yes"}[label] if wrong_answer == "flip" else wrong_answer)
                rows.append({"benchmark": "pope", "qid": f"pope-{split}-{i}-{label}", "image": f"im{i}", "split": split,
                             "label": label, "question": "q", "answer": answer})
    return rows


def write_run(root, name: str, rows: list[dict], tune: dict | None = None) -> None:
    from reverie.evaluation.run import headline
    from reverie.evaluation.scoring import score_predictions

    scores = score_predictions(rows)
    for folder in ("eval", "predictions", "tune"):
        (root / folder).mkdir(exist_ok=True)
    (root / "eval" / f"{name}.json").write_text(json.dumps({**headline(scores), "scores": scores}))
    (root / "predictions" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if tune is not None:
        (root / "tune" / f"{name}.json").write_text(json.dumps(tune))


def write_references(root, splits=("random",)) -> None:
    from reverie.evaluation.run import headline
    from reverie.evaluation.scoring import score_predictions

    (root / "predictions" / "chance").mkdir(parents=True, exist_ok=True)
    chance = {}
    for name, answer in (("always_yes", "yes"), ("blind_prior", "no")):
        rows = pope_rows([False] * IMAGES, splits, wrong_answer=answer)
        (root / "predictions" / "chance" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        chance[name] = headline(score_predictions(rows))
    (root / "chance.json").write_text(json.dumps(chance))


@pytest.fixture
def runs(tmp_path):
    # 40 images; the baseline gets 28, 32, 36 right over seeds 0..2, `pos` 36, 40, 40
    for variant, rights in (("response", (28, 32, 36)), ("pos", (36, 40, 40))):
        for seed, k in enumerate(rights):
            write_run(tmp_path, f"{variant}-s{seed}", pope_rows([i < k for i in range(IMAGES)]),
                      {"steps": 400, "answer_exposures": 1200, "tokens_by_kind": {"response": 900, "positive": 300 * (variant == "pos"),
                                                                                "negative": 0},
                       "response_loss": 1.0 + seed / 10, "train_loss": 1.1, "environment": None})
    write_references(tmp_path)
    return tmp_path


def test_collect_keeps_the_tune_figures_the_answers_counts_and_their_form(runs):
    collected = collect(runs / "eval", runs / "tune", runs / "predictions")
    assert sorted(collected) == ["pos", "response"] and sorted(collected["pos"]) == [0, 1, 2]
    run = collected["pos"][1]
    assert run["tune"]["steps"] == 400 and run["tune"]["answer_exposures"] == 1200
    assert run["tune"]["tokens_by_kind"]["positive"] == 300 and run["tune"]["response_loss"] == pytest.approx(1.1)
    assert run["images"] == sorted(f"im{i}" for i in range(IMAGES))
    assert run["components"]["pope.random.f1"].shape == (IMAGES, 12)
    assert run["well_formed"] == {"pope.random.f1": [80, 80], "pope.mean_f1": [80, 80]}
    refs = collect_references(runs / "predictions" / "chance")
    assert refs["always_yes"]["values"]["pope.random.f1"] == pytest.approx(2 / 3)
    assert refs["blind_prior"]["values"]["pope.random.f1"] == 0.0
    assert collect_references(runs / "nowhere") == {} and collect_references(None) == {}


def test_means_intervals_and_paired_differences_by_hand(runs):
    result = ablation(collect(runs / "eval", None, runs / "predictions"), "response", replicates=200,
                      references=collect_references(runs / "predictions" / "chance"))
    base = result["variants"]["response"]["pope.random.accuracy"]
    assert base["mean"] == pytest.approx(0.8) and base["std"] == pytest.approx(0.1)
    assert base["ci95"] == pytest.approx([0.8 - T_975_2 * 0.1 / math.sqrt(3), 0.8 + T_975_2 * 0.1 / math.sqrt(3)])
    pos = result["comparisons"][0]
    assert (pos["variant"], pos["against"]) == ("pos", "response")
    assert "pope.random.accuracy" not in pos["metrics"]  # a detail, not a headline column: no test
    cell = pos["metrics"]["pope.random.f1"]
    # F1 with both questions of an image right or both wrong: tp = k, fp = fn = 40 - k -> F1 = k / 40
    diffs = [0.2, 0.2, 0.1]
    half = T_975_2 * statistics.stdev(diffs) / math.sqrt(3)
    assert cell["diff_mean"] == pytest.approx(statistics.fmean(diffs))
    assert cell["diff_ci95_t"] == pytest.approx([statistics.fmean(diffs) - half, statistics.fmean(diffs) + half])
    # `pos` is right wherever the baseline is, on every seed: no replicate is below zero (a few that draw
    # only images where both agree are at zero)
    low, high = cell["diff_ci95"]
    assert 0 < low <= statistics.fmean(diffs) <= high
    assert 2 / 201 <= cell["p_value"] < 0.05 and cell["significant"] is True
    assert "mcnemar" not in cell and "mcnemar" not in result["variants"]["pos"]["pope.random.accuracy"]
    assert result["pope_f1_standard_error"]["random"] > 0
    assert result["column_checks"]["pope.mean_f1"]["valid"] is True


def test_verdict_voids_a_baseline_that_does_not_see(runs):
    settings = ReportSettings(min_baseline_pope_accuracy=0.85)
    references = collect_references(runs / "predictions" / "chance")
    result = ablation(collect(runs / "eval", None, runs / "predictions"), "response", replicates=100,
                      references=references)
    reason = verdict(result, None, settings.min_baseline_pope_accuracy, settings.baseline_yes_ratio)
    assert "accuracy 0.800" in reason and "report.min_baseline_pope_accuracy = 0.85" in reason
    assert verdict(result, None, 0.75, (0.2, 0.8)) is None
    # an always-yes baseline: right on every yes-question, wrong on every no-question
    for seed in range(3):
        write_run(runs, f"response-s{seed}", pope_rows([False] * IMAGES, wrong_answer="yes"))
    result = ablation(collect(runs / "eval", None, runs / "predictions"), "response", replicates=100,
                      references=references)
    reason = verdict(result, None, 0.4, (0.2, 0.8))
    assert "says yes to 100.0%" in reason and "report.baseline_yes_ratio" in reason
    # and it does not beat the always-yes answerer: the POPE column is void too
    assert "the POPE column is void: `response` does not beat the always yes answerer: 0.667 vs 0.667, p = 1" in reason


def test_a_void_report_says_so_at_the_top_and_in_the_json(runs, tmp_path):
    out = tmp_path / "reports"
    result = write_report(runs / "eval", None, None, out, ReportSettings(min_baseline_pope_accuracy=0.9),
                          runs / "predictions", runs / "chance.json")
    report = (out / "report.md").read_text()
    assert report.splitlines()[2].startswith("> **VOID")
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["void"] is True and "0.9" in saved["void_reason"] and result["void"]
    # a void report calls nothing significant, though `pos` beats the baseline on every resample
    cell = saved["comparisons"][0]["metrics"]["pope.mean_f1"]
    assert cell["p_holm"] < 0.05 and cell["significant"] is False
    assert saved["variants"]["pos"]["pope.mean_f1"]["significant"] is False
    ok = write_report(runs / "eval", None, None, out, ReportSettings(min_baseline_pope_accuracy=0.6), runs / "predictions",
                      runs / "chance.json")
    assert ok["void"] is False and "VOID" not in (out / "report.md").read_text()
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["void_reason"] is None and saved["comparisons"][0]["metrics"]["pope.mean_f1"]["significant"] is True


def test_without_the_reference_answers_the_pope_column_and_so_the_report_is_void(runs, tmp_path):
    result = write_report(runs / "eval", None, None, tmp_path / "reports", ReportSettings(min_baseline_pope_accuracy=0.6),
                          runs / "predictions", references_dir=tmp_path / "no_references")
    assert result["void"] is True
    assert "the POPE column is void: no answers of the always yes answerer" in result["void_reason"]


def count_label(i: int) -> str:
    return "2" if i < 30 else "3"


def full_project(root):
    """Three seeds of `response`, `pos` and the control `response_1x` on POPE random and
    adversarial, counts and colours; the baseline's counts are below the blind prior."""
    def rows(pope_right: int, adversarial_right: int, counts_right: int, colour: str = "red") -> list[dict]:
        out = pope_rows([i < pope_right for i in range(IMAGES)]) + \
            pope_rows([i < adversarial_right for i in range(IMAGES)], ("adversarial",))
        for i in range(IMAGES):
            label = count_label(i)
            out.append({"benchmark": "short_answer", "qid": f"s-{i}", "image": f"im{i}", "category": "count",
                        "label": label, "question": "q",
                        "answer": label if i < counts_right else {"2": "3", "3": "2"}[label]})
            out.append({"benchmark": "short_answer", "qid": f"c-{i}", "image": f"im{i}", "category": "color",
                        "label": "blue" if i % 2 else "red", "question": "q", "answer": colour})
        return out

    for variant, pope, adversarial, counts, steps, exposures in (("response", 36, 28, 16, 300, 900),
                                                                 ("pos", 40, 36, 36, 300, 900),
                                                                 ("response_1x", 32, 24, 12, 100, 300)):
        for seed in range(3):
            write_run(root, f"{variant}-s{seed}", rows(pope - 4 * (seed == 1), adversarial, counts),
                      {"steps": steps, "answer_exposures": exposures, "response_loss": 0.5 + seed / 100,
                       "tokens_by_kind": {"response": 100, "positive": 50 * (variant == "pos"), "negative": 0}})
    from reverie.evaluation.run import headline
    from reverie.evaluation.scoring import score_predictions

    chance = {}
    for name, answer in (("always_yes", "yes"), ("blind_prior", "no")):
        refs = pope_rows([False] * IMAGES, ("random", "adversarial"), wrong_answer=answer)
        for i in range(IMAGES):
            refs.append({"benchmark": "short_answer", "qid": f"s-{i}", "image": f"im{i}", "category": "count",
                         "label": count_label(i), "question": "q", "answer": answer if name == "always_yes" else "2"})
            refs.append({"benchmark": "short_answer", "qid": f"c-{i}", "image": f"im{i}", "category": "color",
                         "label": "blue" if i % 2 else "red", "question": "q",
                         "answer": answer if name == "always_yes" else "red"})
        (root / "predictions" / "chance").mkdir(parents=True, exist_ok=True)
        (root / "predictions" / "chance" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
        chance[name] = headline(score_predictions(refs))
    (root / "chance.json").write_text(json.dumps(chance))


def test_the_written_report_validity_power_gap_compute_and_controls(tmp_path):
    full_project(tmp_path)
    out = tmp_path / "reports"
    write_report(tmp_path / "eval", tmp_path / "tune", None, out, ReportSettings(bootstrap_replicates=200),
                 tmp_path / "predictions", tmp_path / "chance.json")
    saved = json.loads((out / "ablation.json").read_text())
    # the keys ablation.json always had, and the new ones
    assert {"baseline", "columns", "variants", "bootstrap_replicates", "eval_images", "pope_f1_standard_error",
            "reference", "base_check", "unparseable", "environment", "void", "void_reason", "tune"} <= set(saved)
    assert list(saved["variants"]) == ["response", "pos", "response_1x"]
    assert saved["variants"]["response_1x"]["control"] is True
    assert saved["holm_family"] == [{"variant": "pos", "against": "response"},
                                    {"variant": "response", "against": "response_1x"}]
    checks = saved["column_checks"]
    assert set(checks) == {"pope.random.f1", "pope.adversarial.f1", "pope.mean_f1", "short_answer.accuracy"}
    for check in checks.values():
        assert {"valid", "invalid_reason", "mde", "well_formed", "p_vs_always_yes", "p_vs_blind_prior"} <= set(check)
    # counts and colours: the baseline right on 16 + 20 of 80, the blind prior ("2", "red") on 30 + 20, all of
    # them among the blind prior's: no resampled eval set favours the baseline
    short = checks["short_answer.accuracy"]
    assert short["valid"] is False and short["baseline_value"] == pytest.approx(0.45)
    assert short["invalid_reason"] == "`response` does not beat the blind prior answerer: 0.450 vs 0.625, p = 1"
    assert checks["pope.mean_f1"]["valid"] is True and saved["void"] is False
    assert checks["pope.mean_f1"]["mde"] == pytest.approx(saved["power"]["pope.mean_f1"]["mde"])
    assert checks["pope.mean_f1"]["mde"] > 0
    # the baseline's random F1 is 0.9, 0.8, 0.9, its adversarial 0.7: the gap is 0.1667
    gap = saved["pope_adversarial_gap"]
    assert gap["gap"] == pytest.approx(0.5 / 3) and set(gap) >= {"gap", "ci95", "p_value"} and 0 < gap["p_value"] < 1
    text = (out / "report.md").read_text()
    assert "| Short ans (void) |" in text and "| POPE mean F1 |" in text
    assert "## Validity of each column (judged on `response`)" in text
    assert "| Short ans | **void** | 0.450 |" in text and "`response` does not beat the blind prior answerer" in text
    assert "Holm over the 2 comparisons of each metric: pos − response, response − response_1x." in text
    assert "## Power" in text and "| POPE mean F1 | " in text and "z_(1 − α/(2m))" in text and "Normal quantiles" in text
    assert "random F1 minus its adversarial F1" in text and f"{gap['gap']:+.3f}" in text
    assert "| response_1x (control) |" in text
    assert "| response | 300 | 900 | 0 | 0.510 |" in text and "| pos | 300 | 900 | 50 | 0.510 |" in text
    assert "## Controls" in text and "`pos_neg_shuffled`" in text and "`response_1x`" in text
    assert "Every main variant trained the same optimizer steps (300) and the same answer exposures (900): " in text
    assert "McNemar" not in text
    assert (out / "ablation.png").stat().st_size > 1000


def test_main_variants_with_unequal_steps_are_called_out(tmp_path):
    full_project(tmp_path)
    tune = json.loads((tmp_path / "tune" / "pos-s0.json").read_text())
    for seed in range(3):
        (tmp_path / "tune" / f"pos-s{seed}.json").write_text(json.dumps({**tune, "steps": 600}))
    result = write_report(tmp_path / "eval", tmp_path / "tune", None, tmp_path / "reports",
                          ReportSettings(bootstrap_replicates=100), tmp_path / "predictions", tmp_path / "chance.json")
    assert "**The main variants differ in optimizer steps** (response 300, pos 600)" in result["markdown"]
    assert "Every main variant trained the same answer exposures (900)" in result["markdown"]
    assert "differ in answer exposures" not in result["markdown"]
