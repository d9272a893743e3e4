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
    # in points, as MME's calculation.py adds them up (acc*100, acc_plus*100)
    assert m["count"]["acc"] == pytest.approx(75.0) and m["count"]["acc_plus"] == pytest.approx(50.0)
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


# ---- hand-computed tables ------------------------------------------------------------------
@pytest.mark.parametrize("answer, yes", [
    # POPE's reference splits on spaces and looks for exactly "No", "not" or "no": it is case-sensitive
    ("NO", True), ("Not at all", True), ("NOT", True), ("No", False), ("no", False), ("not", False),
    ("There is no", False), ("Yes, no doubt", False), ("No, it is not", False), ("yes.no", True),
    ("I see nothing", True), ("Nope", True), ("no.", False), ("The answer is yes. no", True),
    # commas are removed before the split; only spaces separate words (not a newline or a tab)
    ("No, a star", False), ("There is\nno star", True), ("There is\tno star", True),
])
def test_pope_answer_rule_is_the_references_exactly(answer, yes):
    assert pope_yes(answer) is yes


@pytest.mark.parametrize("answer, parseable", [("Yes", True), ("NO.", True), ("not sure", True), ("maybe", False),
                                               ("yesterday", False), ("", False)])
def test_pope_parseable(answer, parseable):
    from reverie.evaluation.scoring import pope_parseable

    assert pope_parseable(answer) is parseable


def pope_split(split, tp, fp, fn, tn):
    return ([{"split": split, "label": "yes", "answer": "Yes"}] * tp + [{"split": split, "label": "no", "answer": "Yes"}] * fp
            + [{"split": split, "label": "yes", "answer": "No"}] * fn + [{"split": split, "label": "no", "answer": "No"}] * tn)


def test_pope_mean_f1_is_the_mean_of_the_split_f1s_by_hand():
    # random: tp 3 fp 1 fn 1 tn 3 -> P 3/4, R 3/4, F1 0.75
    # popular: tp 2 fp 2 fn 2 tn 2 -> P 1/2, R 1/2, F1 0.5
    # adversarial: tp 1 fp 3 fn 0 tn 0 -> P 1/4, R 1, F1 0.4; accuracy 1/4, yes-ratio 1
    rows = pope_split("random", 3, 1, 1, 3) + pope_split("popular", 2, 2, 2, 2) + pope_split("adversarial", 1, 3, 0, 0)
    m = score_pope(rows)
    assert [m[s]["f1"] for s in ("random", "popular", "adversarial")] == pytest.approx([0.75, 0.5, 0.4])
    assert m["mean_f1"] == pytest.approx((0.75 + 0.5 + 0.4) / 3)
    assert m["adversarial"] == pytest.approx({"accuracy": 0.25, "precision": 0.25, "recall": 1.0, "f1": 0.4,
                                              "yes_ratio": 1.0, "n": 4, "unparseable": 0})
    assert m["popular"]["accuracy"] == 0.5 and m["random"]["accuracy"] == 0.75
    # with only two splits, the mean is over those two
    assert score_pope(pope_split("random", 3, 1, 1, 3) + pope_split("popular", 2, 2, 2, 2))["mean_f1"] == pytest.approx(0.625)
    assert score_pope([]) == {}


def test_binary_metrics_of_a_split_that_never_says_yes():
    m = score_pope(pope_split("random", 0, 0, 2, 2))["random"]
    assert m == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0, "n": 4, "unparseable": 0}


def test_mme_score_by_hand_over_two_subtasks():
    def pair(task, image, first, second):
        return [{"subtask": task, "image": image, "label": "yes", "answer": first},
                {"subtask": task, "image": image, "label": "no", "answer": second}]

    # existence: a right+right, b right+wrong, c wrong+wrong -> acc 3/6, acc+ 1/3
    # color: d right+right ("Yes." and "no" read by MME's rule) -> acc 1, acc+ 1
    rows = (pair("existence", "a", "yes", "no") + pair("existence", "b", "Yes, it is", "yes")
            + pair("existence", "c", "no", "maybe") + pair("color", "d", "Yes.", "No"))
    m = score_mme(rows)
    assert m["existence"] == pytest.approx({"acc": 50.0, "acc_plus": 100 / 3, "score": 50 + 100 / 3, "unparseable": 1})
    assert m["color"] == pytest.approx({"acc": 100.0, "acc_plus": 100.0, "score": 200.0, "unparseable": 0})
    assert m["score"] == pytest.approx(100 * (0.5 + 1 / 3) + 200)


@pytest.mark.parametrize("answer, label", [
    ("YES", "yes"), (" no ", "no"), ("no.", "no"), ("Yes.", "yes"), ("nope", "no"), ("yess", "yes"),
    ("I think yes", "other"), ("So no", "other"), ("not", "no"), ("n", "other"), ("", "other"),
    # MME lower-cases only: no strip, no dot removed, so the word must lie in the first four characters
    ("y.e.s", "other"), ("n.o.", "other"), ("...yes", "other"), ("  yes", "other"), ("   no", "other"),
    ("\n\nYes", "other"), ("\t\t\tno", "other"),
])
def test_mme_label_by_its_rule(answer, label):
    assert mme_label(answer) == label


@pytest.mark.parametrize("answer, options, parsed", [
    ("D", ["a", "b", "c"], None),  # a letter past the options is no letter
    ("C", ["a", "b", "c"], "C"),
    ("[B]", ["a", "b"], "B"),
    ("B: b", ["a", "b"], "B"),
    ("B or b", ["a", "b"], "B"),
    ("A B", ["a", "b"], None),
    ("RED", ["red", "blue"], "A"),
    ("a", ["red", "blue"], None),  # a lower-case letter is no option letter; "a" is in no option's text
    ("blue", ["", "blue"], "B"),  # an empty option matches nothing
])
def test_choice_parsing_edges(answer, options, parsed):
    assert parse_choice(answer, options) == parsed


def test_rotations_of_three_options():
    assert rotations(["x", "y", "z"], "A") == [(["x", "y", "z"], "A"), (["y", "z", "x"], "C"), (["z", "x", "y"], "B")]


def test_multiple_choice_counts_by_hand():
    opts = ["circle", "star", "square", "ring"]
    rots = rotations(opts, "B")
    rows = [{"question_id": "q", "rotation": i, "options": o, "label": l, "answer": "star"} for i, (o, l) in enumerate(rots)]
    # question p: right in rotation 0 only, and one unparseable answer
    rows += [{"question_id": "p", "rotation": i, "options": o, "label": l, "answer": a}
             for i, ((o, l), a) in enumerate(zip(rots, ["B", "A", "B or C", "B"]))]
    # the rows' order must not matter: rotation 0 is found by its number
    m = score_multiple_choice(list(reversed(rows)))
    # by right letter (q's labels run B, A, D, C over its rotations): p is right under B and A only
    assert m == {"circular_accuracy": 0.5, "vanilla_accuracy": 1.0, "questions": 2, "unparseable": 1,
                 "by_answer_letter": {"A": 1.0, "B": 1.0, "C": 0.5, "D": 0.5}}
    assert score_multiple_choice([]) == {"circular_accuracy": 0.0, "vanilla_accuracy": 0.0, "questions": 0, "unparseable": 0}


@pytest.mark.parametrize("text, normal", [
    ("The  Two RED circles!", "2 red circles"), ("an apple, a pear", "apple pear"), ("ten.", "10"),
    ("zero", "0"), ("eleven", "eleven"), ("theater", "theater"), ("  A  ", ""),
])
def test_short_answer_normalisation_by_hand(text, normal):
    assert normalize_answer(text) == normal


def test_short_answers_by_category_by_hand():
    from reverie.evaluation.scoring import score_short_answers

    rows = [{"label": "2", "answer": "two", "category": "count"}, {"label": "3", "answer": "2", "category": "count"},
            {"label": "red", "answer": "Red.", "category": "color"}, {"label": "a cube", "answer": "cube"}]
    m = score_short_answers(rows)
    assert m == {"accuracy": 0.75, "n": 4, "count": {"accuracy": 0.5, "n": 2}, "color": {"accuracy": 1.0, "n": 1}}
    assert score_short_answers([]) == {"accuracy": 0.0, "n": 0}


def test_reasoning_by_type_and_kind_by_hand():
    from reverie.evaluation.scoring import score_reasoning

    rows = [
        {"question_type": "yes_no", "reasoning": "existence", "label": "yes", "answer": "Yes."},  # right
        {"question_type": "yes_no", "reasoning": "existence", "label": "no", "answer": "yes"},  # wrong
        # right by MME's rule (yes within the first four characters), wrong as a short answer
        {"question_type": "yes_no", "reasoning": "existence", "label": "yes", "answer": "Yes, there is one"},
        {"question_type": "multiple_choice", "reasoning": "attribute", "label": "B", "options": ["red", "blue"],
         "answer": "blue"},  # right, by the option's text
        {"question_type": "multiple_choice", "label": "A", "options": ["red", "blue"], "answer": "B"},  # wrong, no kind
        {"question_type": "short_answer", "reasoning": "counting", "label": "3", "answer": "three"},  # right
    ]
    m = score_reasoning(rows)
    assert m == {"accuracy": 4 / 6, "yes_no": {"accuracy": 2 / 3, "n": 3}, "multiple_choice": {"accuracy": 0.5, "n": 2},
                 "short_answer": {"accuracy": 1.0, "n": 1}, "kind_existence": {"accuracy": 2 / 3, "n": 3},
                 "kind_attribute": {"accuracy": 1.0, "n": 1}, "kind_other": {"accuracy": 0.0, "n": 1},
                 "kind_counting": {"accuracy": 1.0, "n": 1}}
    assert score_reasoning([]) == {"accuracy": 0.0}


def test_binary_metrics_without_items_or_without_positives_are_zero():
    from reverie.evaluation.scoring import binary_metrics

    assert binary_metrics([], []) == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0, "n": 0}
    # no item is truly "yes": recall is 0 by convention (nothing to recall), one false yes in two
    assert binary_metrics([True, False], [False, False]) == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                            "yes_ratio": 0.5, "n": 2}


def test_score_predictions_routes_each_benchmark_to_its_scorer():
    rows = ([dict(r, benchmark="pope") for r in pope_split("random", 1, 0, 0, 1)]
            + [{"benchmark": "short_answer", "label": "2", "answer": "3"}]
            + [{"benchmark": "scienceqa", "question_id": "s", "rotation": 0, "options": ["a", "b"], "label": "A",
                "answer": "A"}])
    scores = score_predictions(rows)
    assert sorted(scores) == ["pope", "scienceqa", "short_answer"]
    assert scores["pope"]["random"]["accuracy"] == 1.0 and scores["pope"]["mean_f1"] == 1.0
    assert scores["short_answer"]["accuracy"] == 0.0 and scores["scienceqa"]["accuracy"] == 1.0


def test_rescore_cli_reads_saved_predictions_and_writes_hand_computed_scores(tmp_path, capsys):
    """`python -m reverie.evaluation.rescore`: the figures of the hand-computed POPE table above
    and a short-answer accuracy of 2/3, from a predictions file alone."""
    import json

    from reverie.evaluation.rescore import main

    rows = ([dict(r, benchmark="pope") for r in pope_split("random", 3, 1, 1, 3) + pope_split("popular", 2, 2, 2, 2)
             + pope_split("adversarial", 1, 3, 0, 0)]
            + [{"benchmark": "short_answer", "label": label, "answer": answer}
               for label, answer in (("2", "2"), ("red", "Red."), ("4", "5"))])
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    main([str(predictions), "--out", str(tmp_path / "scores.json")])
    written = json.loads((tmp_path / "scores.json").read_text())
    expected = {"pope.random.f1": 0.75, "pope.random.accuracy": 0.75, "pope.random.yes_ratio": 0.5,
                "pope.popular.f1": 0.5, "pope.popular.accuracy": 0.5, "pope.popular.yes_ratio": 0.5,
                "pope.adversarial.f1": 0.4, "pope.adversarial.accuracy": 0.25, "pope.adversarial.yes_ratio": 1.0,
                "pope.mean_f1": (0.75 + 0.5 + 0.4) / 3, "short_answer.accuracy": 2 / 3}
    assert {k: written[k] for k in expected} == pytest.approx(expected)
    printed = json.loads(capsys.readouterr().out)
    assert {k: printed[k] for k in expected} == pytest.approx(expected)
    assert written["scores"]["pope"]["adversarial"]["n"] == 4 and written["scores"]["short_answer"]["n"] == 3
