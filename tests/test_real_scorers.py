"""The real benchmarks' scorers (ScienceQA, MMBench, MME) on answers as models write them, with
hand-made tables and an independent re-implementation of MME's official calculation.py."""
from collections import defaultdict

import pytest

from reverie.evaluation.scoring import score_mme, score_multiple_choice, score_scienceqa, scienceqa_choice


# ---- ScienceQA: LLaVA's strict parser (llava/eval/eval_science_qa.py) --------------------------
# The rule, applied by hand below: newlines become ". "; then the stripped answer is a bare A-E,
# or the answer starts with an A-E followed by ". ", or it holds "The answer is X" (case-sensitive);
# a letter beyond the question's options is a failure too.
@pytest.mark.parametrize("answer, n_options, letter", [
    ("A", 2, "A"), ("D", 4, "D"), ("E", 5, "E"),  # every bare letter A-E
    ("D", 3, None), ("E", 4, None), ("The answer is C.", 2, None), ("C. fire", 2, None),  # beyond the options
    ("d", 4, None), ("e", 5, None), ("b", 2, None),  # lower case is no letter
    ("the answer is b.", 2, None), ("Looking at it, the answer is B.", 2, None),
    ("B\n", 2, "B"),  # "B. ": three characters, the letter and ". "
    ("B\nBecause a fish lives in water.", 2, "B"),  # the newline reads as ". "
    ("A\nB", 2, "A"),  # newline-separated letters: the first, as "A. B"
    ("\nB", 2, None),  # ". B": neither a bare letter nor a letter first
    ("B. because it swims", 2, "B"), ("The answer is B.", 2, "B"), ("So, The answer is A", 2, "A"),
    ("1. The answer is B.", 2, "B"),  # a list number opens no letter: "The answer is" still decides
    ("X. The answer is B.", 2, "B"),  # only A-E open an answer
    ("B or A", 2, None), ("I think B", 2, None), ("", 2, None), ("Answer: B", 2, None),
])
def test_scienceqa_parser_on_model_outputs(answer, n_options, letter):
    assert scienceqa_choice(answer, n_options) == letter


def test_scienceqa_scores_by_hand_with_subjects():
    table = [  # options, label, answer, subject: right? parsed?
        (["cat", "fish"], "A", "A", "natural science"),  # right
        (["owl", "cow"], "B", "The answer is B.", "natural science"),  # right
        (["ice", "snow", "fire"], "C", "C\nBecause fire is hot.", "natural science"),  # right
        (["north", "south"], "A", "C", "social science"),  # wrong, unparseable (no option C)
        (["a", "b", "c", "d"], "D", "d", "language science"),  # wrong, unparseable (lower case)
        (["x", "y"], "A", "B", "social science"),  # wrong, parsed
        (["p", "q", "r", "s", "t"], "E", "E", "language science"),  # right
    ]
    rows = [{"question_id": f"s{i}", "options": o, "label": l, "answer": a, "category": c}
            for i, (o, l, a, c) in enumerate(table)]
    assert score_scienceqa(rows) == {
        "accuracy": pytest.approx(4 / 7), "n": 7, "unparseable": 2,
        "natural science": {"accuracy": 1.0, "n": 3}, "social science": {"accuracy": 0.0, "n": 2},
        "language science": {"accuracy": 0.5, "n": 2}}
    assert score_scienceqa([]) == {"accuracy": 0.0, "n": 0, "unparseable": 0}


# ---- MMBench: CircularEval per category and l2-category -------------------------------------
def test_mmbench_rows_without_a_category_are_grouped_as_none():
    """The loader writes "" for an empty category or l2-category cell; such questions are
    scored under "none". A question counts (circular) only if every copy is right."""
    def row(qid, rotation, options, label, answer, category, l2):
        return {"question_id": qid, "rotation": rotation, "options": options, "label": label, "answer": answer,
                "category": category, "l2_category": l2}

    rows = [
        # q1: both copies right -> circular and vanilla right
        row("q1", 0, ["cat", "dog"], "A", "A", "", "Coarse Perception"),
        row("q1", 1, ["dog", "cat"], "B", "B. cat", "", "Coarse Perception"),
        # q2: right in copies 0 and 1, wrong in copy 2 -> vanilla right, circular wrong
        row("q2", 0, ["red", "blue", "green"], "C", "C", "ocr", ""),
        row("q2", 1, ["blue", "green", "red"], "B", "The answer is B.", "ocr", ""),
        row("q2", 2, ["green", "red", "blue"], "A", "C", "ocr", ""),
        # q3: both copies right, neither category named
        row("q3", 0, ["yes", "no"], "B", "B", "", ""),
        row("q3", 1, ["no", "yes"], "A", "A", "", ""),
    ]
    m = score_multiple_choice(rows)
    assert {k: m[k] for k in ("circular_accuracy", "vanilla_accuracy", "questions", "unparseable")} == {
        "circular_accuracy": pytest.approx(2 / 3), "vanilla_accuracy": 1.0, "questions": 3, "unparseable": 0}
    assert m["category"] == {
        "none": {"circular_accuracy": 1.0, "vanilla_accuracy": 1.0, "questions": 2, "unparseable": 0},
        "ocr": {"circular_accuracy": 0.0, "vanilla_accuracy": 1.0, "questions": 1, "unparseable": 0}}
    assert m["l2_category"] == {
        "Coarse Perception": {"circular_accuracy": 1.0, "vanilla_accuracy": 1.0, "questions": 1, "unparseable": 0},
        "none": {"circular_accuracy": 0.5, "vanilla_accuracy": 1.0, "questions": 2, "unparseable": 0}}


# ---- MME: against an independent copy of its eval_tool/calculation.py --------------------------
def official_mme(rows: list[dict]) -> dict:
    """MME's calculation.py: the answer lower-cased; exact yes/no, else yes/no within its first
    four characters, else other. Per subtask: acc, acc+ (both questions of an image right),
    score = (acc + acc+) * 100; perception and cognition summed apart."""
    def parse(answer):
        answer = answer.lower()
        if answer in ("yes", "no"):
            return answer
        return "yes" if "yes" in answer[:4] else "no" if "no" in answer[:4] else "other"

    tasks = defaultdict(lambda: defaultdict(list))
    group_of = {}
    for r in rows:
        tasks[r["subtask"]][r["image"]].append(parse(r["answer"]) == r["label"].lower())
        group_of[r["subtask"]] = r["group"]
    out, groups = {}, defaultdict(float)
    for task, images in tasks.items():
        answers = [ok for oks in images.values() for ok in oks]
        acc = sum(answers) / len(answers)
        acc_plus = sum(oks == [True, True] for oks in images.values()) / len(images)
        out[task] = {"acc": acc, "acc_plus": acc_plus, "score": (acc + acc_plus) * 100}
        groups[group_of[task]] += (acc + acc_plus) * 100
    return out | {g: {"score": s} for g, s in groups.items()}


def test_mme_on_model_outputs_matches_the_official_calculation():
    table = [  # subtask, group, image, label, answer
        ("existence", "perception", "e1", "Yes", "Yes,"), ("existence", "perception", "e1", "No", "no."),
        ("existence", "perception", "e2", "Yes", ""), ("existence", "perception", "e2", "No", " No"),
        ("count", "perception", "c1", "Yes", "Yes, there are two."), ("count", "perception", "c1", "No", "NO"),
        ("count", "perception", "c2", "Yes", "There is one."), ("count", "perception", "c2", "No", "yes"),
        ("code_reasoning", "cognition", "k1", "Yes", "yes"), ("code_reasoning", "cognition", "k1", "No", "No, it prints 3."),
    ]
    rows = [{"subtask": t, "group": g, "image": i, "label": l, "answer": a} for t, g, i, l, a in table]
    expected = official_mme(rows)
    # by hand: existence 3/4, acc+ 1/2 -> 125; count 2/4, acc+ 1/2 -> 100; code_reasoning 200
    assert expected["perception"]["score"] == pytest.approx(225) and expected["cognition"]["score"] == pytest.approx(200)
    m = score_mme(rows)
    for task in ("existence", "count", "code_reasoning"):
        assert {k: m[task][k] for k in ("acc", "acc_plus", "score")} == pytest.approx(expected[task]), task
    assert m["perception"] == pytest.approx(expected["perception"]) and m["cognition"] == pytest.approx(expected["cognition"])
    assert "score" not in m  # never perception and cognition summed
    assert [m[t]["unparseable"] for t in ("existence", "count", "code_reasoning")] == [1, 1, 0]  # "" and "There is one."
