"""Learning works: a tiny world and a tiny student, trained by the base step and the tune stage
as the pipeline trains them, must see held-out images (and fail when the images are shuffled
under the same questions), and the tuned `response` student must beat the blind prior, which
answers from the train scenes without looking, on counts and on colours. A student answering
from priors ("yes" to everything, "2" to every count, "red" to every colour) fails this test."""
import pytest

from tests.conftest import merge, tiny_params_dict

# A world small enough to learn in a few minutes: four kinds in two themes on a 2 x 2 grid of
# 32-pixel images (four image tokens), one to three objects, three colours, nothing in shadow and
# no pixel noise (what is learned here is reading, not seeing through noise). The student is the
# default's shape; its second phase asks mostly colours and counts.
LEARNING = {
    "world": {"image_size": 32, "grid": 2, "kinds": ["circle", "square", "triangle", "star"],
              "colors": ["red", "green", "blue"], "min_objects": 1, "max_objects": 3,
              "themes": [["circle", "square"], ["triangle", "star"]], "faint_rate": 0.0, "noise": 0.0,
              "train_images": 600, "eval_images": 80},
    "generate": {"questions_per_image": 1, "noise_rate": 0.0},
    "base": {"describe_epochs": 0, "epochs": 6, "seeing_epochs": 2, "batch_size": 32, "lr": 0.001, "vision_epochs": 12,
             "probes_per_image": 4, "skills": ["existence", "color", "count", "color"],
             "check_images": 80, "describe_check_images": 0, "min_seeing_accuracy": 0.0, "checkpoint_every": 10_000,
             "check_every": 0,  # the check during training has its own test (test_base_check_curve.py)
             # questions about absent kinds drawn uniformly: this student is to read what is there, not to
             # expect its theme's kinds as the default's does (under the default's rule this base answered
             # "yes" to 99 % of the held-out existence questions)
             "unrelated_negatives": 0.0,
             "model": {"vision_hidden": 128, "text_hidden": 128, "intermediate": 256, "vision_layers": 2,
                       "text_layers": 3, "vocab_size": 512, "vision_heads": 4, "text_heads": 4}},
    "tune": {"epochs": 0.5, "batch_size": 32, "instruction_mix": 1.0, "quick_eval_images": 0,
             "lora": {"r": 8, "alpha": 16}},
    "evaluate": {"eval_images": 80, "batch_size": 64},
}


@pytest.mark.timeout(1200)  # a few minutes on an idle 2-core machine; a loaded one takes several times that
def test_a_tiny_student_sees_and_the_tuned_one_beats_the_blind_prior_on_counts_and_colours(tmp_path):
    from reverie.evaluation.chance import reference_rows
    from reverie.evaluation.run import benchmark_items
    from reverie.evaluation.scoring import score_predictions
    from reverie.generate import generate_dataset
    from reverie.io import write_jsonl
    from reverie.settings import Params
    from reverie.base_step import train_base
    from reverie.tuning import tune_variant

    params = Params.model_validate(merge(tiny_params_dict(tmp_path), LEARNING))
    data = tmp_path / "data"
    result = generate_dataset(params, data, progress=False)
    kept = [r for r in result.raw if r["judge"]["consistent"]]
    write_jsonl(tmp_path / "split" / "train.jsonl", [r for r in kept if r["split"] == "train"])
    write_jsonl(tmp_path / "split" / "eval.jsonl", [r for r in kept if r["split"] == "eval"])
    metrics = train_base(params, data, tmp_path / "split", tmp_path / "base", state_dir=tmp_path / "state",
                         progress=False)
    figures = {k: metrics[k] for k in ("heldout_existence_accuracy", "heldout_yes_ratio", "shuffled_image_accuracy")}
    assert metrics["perception_questions"] == 160
    assert figures["heldout_existence_accuracy"] >= 0.85, figures
    assert 0.35 <= figures["heldout_yes_ratio"] <= 0.65, figures
    assert figures["shuffled_image_accuracy"] <= 0.60, figures

    tune_variant(params, "response", 0, tmp_path / "base", data, tmp_path / "split", tmp_path / "response-s0",
                 state_dir=tmp_path / "state", progress=False)
    from reverie.evaluation.run import answer_items
    from reverie.student.model import load_tuned

    eval_items, train_items = benchmark_items(params, data, tmp_path / "split")
    short = [it for it in eval_items if it.benchmark == "short_answer"]
    model, processor, _ = load_tuned(tmp_path / "response-s0")
    rows, _ = answer_items(model, processor, short, data, 64, 4, progress=False)
    student = score_predictions(rows)["short_answer"]
    prior = score_predictions(reference_rows(train_items, short)["blind_prior"])["short_answer"]
    for category in ("count", "color"):
        n = student[category]["n"]
        # a margin of two binomial standard errors of the prior's own rate on these n questions
        p = prior[category]["accuracy"]
        margin = 2 * (p * (1 - p) / n) ** 0.5
        assert student[category]["accuracy"] >= p + margin, (category, student, prior)
