"""Parsers and scorers against the reference scorers' rules, on hand-made predictions."""
import pytest

from reverie.evaluation.scoring import (mme_label, normalize_answer, parse_choice, pope_yes, rotations,
                                        score_mme, score_multiple_choice, score_pope, score_predictions)


@pytest.mark.parametrize("answer, yes", [
    ("Yes", True), ("yes.", True), ("No", False), ("no, there is not.", False),
    ("There is not a star.", False), ("Yes. But no star is visible", True), ("a star", True),
])
def test_pope_answer_rule(answer, yes):
    assert pope_yes(answer) is yes


def test_pope_metrics_by_hand():
    rows = [{"split": "random", "label": l, "answer": a} for l, a in
            [("yes", "yes"), ("yes", "yes"), ("yes", "no"), ("no", "yes"), ("no", "no"), ("no", "no"), ("no", "?")]]
    m = score_pope(rows)["random"]
    # tp=2 fn=1 fp=2 ("?" counts as yes, as in POPE) tn=2
    assert m["precision"] == pytest.approx(2 / 4) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["accuracy"] == pytest.approx(4 / 7) and m["yes_ratio"] == pytest.approx(4 / 7)
    assert m["unparseable"] == 1


@pytest.mark.parametrize("answer, label", [("Yes", "yes"), ("no.", "no"), ("Yes, it is", "yes"), ("maybe", "other"),
                                          ("Not sure", "no")])
def test_mme_prefix_rule(answer, label):
    assert mme_label(answer) == label


def test_mme_acc_plus_needs_both_questions_of_an_image_right():
    rows = [
        {"subtask": "count", "image": "a", "label": "yes", "answer": "yes"},
        {"subtask": "count", "image": "a", "label": "no", "answer": "no"},
        {"subtask": "count", "image": "b", "label": "yes", "answer": "yes"},
        {"subtask": "count", "image": "b", "label": "no", "answer": "yes"},
    ]
    m = score_mme(rows)
    assert m["count"]["acc"] == 0.75 and m["count"]["acc_plus"] == 0.5
    assert m["count"]["score"] == pytest.approx(125.0) and m["score"] == pytest.approx(125.0)


@pytest.mark.parametrize("answer, parsed", [
    ("B", "B"), ("B.", "B"), ("(C) square", "C"), ("The answer is A", "A"), ("square", "C"),
    ("A or B", None), ("something else", None), ("circle and square", None),
])
def test_choice_parsing(answer, parsed):
    assert parse_choice(answer, ["circle", "star", "square", "ring"]) == parsed


def test_circular_eval_requires_every_rotation():
    opts = ["circle", "star", "square", "ring"]
    rots = rotations(opts, "C")
    assert [r[1] for r in rots] == ["C", "B", "A", "D"]
    assert all(r[0][LETTERS_INDEX(r[1])] == "square" for r in rots)
    always_square = [{"question_id": "q", "rotation": i, "options": o, "label": l, "answer": "square"}
                     for i, (o, l) in enumerate(rots)]
    always_c = [{"question_id": "p", "rotation": i, "options": o, "label": l, "answer": "C"}
                for i, (o, l) in enumerate(rots)]
    m = score_multiple_choice(always_square + always_c)
    assert m["questions"] == 2
    assert m["circular_accuracy"] == 0.5  # the letter-biased answerer is right once, not every time
    assert m["vanilla_accuracy"] == 1.0


def LETTERS_INDEX(letter):
    return "ABCD".index(letter)


def test_short_answer_normalisation():
    assert normalize_answer("Two.") == "2" == normalize_answer("2")
    assert normalize_answer("A large Red circle") == normalize_answer("large red circle")


def test_rescoring_unknown_benchmark_is_an_error():
    with pytest.raises(ValueError, match="unknown benchmark"):
        score_predictions([{"benchmark": "vqav9", "answer": "x", "label": "y"}])
