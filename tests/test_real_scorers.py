"""The real benchmarks' scorers (ScienceQA, MMBench, MME) on answers as models write them, with
hand-made tables and an independent re-implementation of MME's official calculation.py."""
from collections import defaultdict

import pytest

from reverie.evaluation.scoring import score_mme, score_multiple_choice, score_scienceqa, scienceqa_choice


# ---- ScienceQA: LLaVA's parser (llava/eval/eval_science_qa.py, main branch) --------------------
# The rule, applied by hand below, on the text as the model wrote it (no strip, no newline
# replacement, case-sensitive): it is exactly one of "A".."E"; else it has >= 3 characters, an
# A-E first and ". " next; else re.findall(r'The answer is ([A-Z]).') has exactly one match (the
# "." is any one character but a newline); else FAILED. A letter beyond the question's options
# gets index -1 (get_pred_idx), so it is wrong too. All failures are None.
@pytest.mark.parametrize("answer, n_options, letter", [
    ("A", 2, "A"), ("D", 4, "D"), ("E", 5, "E"),  # every bare letter A-E
    ("D", 3, None), ("E", 4, None), ("The answer is C.", 2, None), ("C. fire", 2, None),  # beyond the options
    ("d", 4, None), ("e", 5, None), ("b", 2, None),  # lower case is no letter
    ("the answer is b.", 2, None), ("Looking at it, the answer is B.", 2, None),
    ("\nB", 2, None),  # neither a bare letter nor a letter first
    ("B. because it swims", 2, "B"), ("The answer is B.", 2, "B"),
    ("1. The answer is B.", 2, "B"),  # a list number opens no letter: "The answer is" still decides
    ("X. The answer is B.", 2, "B"),  # only A-E open an answer
    ("B or A", 2, None), ("I think B", 2, None), ("", 2, None), ("Answer: B", 2, None),
])
def test_scienceqa_parser_on_model_outputs(answer, n_options, letter):
    assert scienceqa_choice(answer, n_options) == letter


@pytest.mark.parametrize("answer, n_options, letter", [
    # where the published rule and the unmerged change once followed here part ways
    (" A", 2, None), ("A ", 2, None),  # no stripping: not exactly "A", and no ". " after the letter
    ("B\n", 2, None),  # "B\n" is not "B", and its 2nd and 3rd characters are not ". "
    ("B\nBecause a fish lives in water.", 2, None), ("A\nB", 2, None),  # newlines are not read as ". "
    ("A\nThe answer is B.", 2, "B"),  # so the letter first does not decide, the one "The answer is" does
    ("The answer is B", 2, None), ("So, The answer is A", 2, None),  # the regex needs a character after it
    ("The answer is B\n", 2, None),  # ... and "." matches no newline
    ("The answer is A. The answer is A.", 2, None),  # two matches: FAILED, though they agree
])
def test_scienceqa_parser_takes_the_text_as_is(answer, n_options, letter):
    assert scienceqa_choice(answer, n_options) == letter


def test_scienceqa_scores_by_hand_with_subjects():
    table = [  # options, label, answer, subject: right? parsed?
        (["cat", "fish"], "A", "A", "natural science"),  # right
        (["owl", "cow"], "B", "The answer is B.", "natural science"),  # right
        (["ice", "snow", "fire"], "C", "C\nBecause fire is hot.", "natural science"),  # wrong, unparseable (newline)
        (["sun", "moon"], "A", "A. The sun is a star.", "natural science"),  # right
        (["north", "south"], "A", "C", "social science"),  # wrong, unparseable (no option C)
        (["a", "b", "c", "d"], "D", "d", "language science"),  # wrong, unparseable (lower case)
        (["x", "y"], "A", "B", "social science"),  # wrong, parsed
        (["p", "q", "r", "s", "t"], "E", "E", "language science"),  # right
    ]
    rows = [{"question_id": f"s{i}", "options": o, "label": l, "answer": a, "category": c}
            for i, (o, l, a, c) in enumerate(table)]
    assert score_scienceqa(rows) == {
        "accuracy": pytest.approx(4 / 8), "n": 8, "unparseable": 3,
        "natural science": {"accuracy": 0.75, "n": 4}, "social science": {"accuracy": 0.0, "n": 2},
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
    """MME's calculation.py: the answer lower-cased, nothing stripped; exact yes/no, else yes/no
    within its first four characters, else other. Per subtask, in points as the tool adds them
    (`task_score += v*100`): acc, acc+ (both questions of an image right), score = acc + acc+;
    perception and cognition summed apart."""
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
        acc = sum(answers) / len(answers) * 100
        acc_plus = sum(oks == [True, True] for oks in images.values()) / len(images) * 100
        out[task] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}
        groups[group_of[task]] += acc + acc_plus
    return out | {g: {"score": s} for g, s in groups.items()}


def test_mme_on_model_outputs_matches_the_official_calculation():
    table = [  # subtask, group, image, label, answer
        ("existence", "perception", "e1", "Yes", "Yes,"), ("existence", "perception", "e1", "No", "no."),
        ("existence", "perception", "e2", "Yes", ""), ("existence", "perception", "e2", "No", " No"),
        ("count", "perception", "c1", "Yes", "Yes, there are two."), ("count", "perception", "c1", "No", "NO"),
        ("count", "perception", "c2", "Yes", "There is one."), ("count", "perception", "c2", "No", "yes"),
        # nothing is stripped and no dot removed: "  yes" -> "  ye", "n.o." -> "n.o.", "\n\nyes" -> "\n\nye"
        # are "other"; " no" -> " no" and "Yes." -> "yes." hold their word in the first four characters
        ("position", "perception", "p1", "Yes", "  Yes"), ("position", "perception", "p1", "No", "No."),
        ("position", "perception", "p2", "Yes", "Yes"), ("position", "perception", "p2", "No", "n.o."),
        ("position", "perception", "p3", "Yes", "\n\nyes"), ("position", "perception", "p3", "No", " no"),
        ("position", "perception", "p4", "Yes", "Yes."), ("position", "perception", "p4", "No", "no"),
        ("code_reasoning", "cognition", "k1", "Yes", "yes"), ("code_reasoning", "cognition", "k1", "No", "No, it prints 3."),
    ]
    rows = [{"subtask": t, "group": g, "image": i, "label": l, "answer": a} for t, g, i, l, a in table]
    expected = official_mme(rows)
    # by hand, in points: existence acc 3/4 = 75, acc+ 1/2 = 50 -> 125; count 50 + 50 -> 100;
    # position 5/8 = 62.5, acc+ 1/4 (p4) = 25 -> 87.5; code_reasoning 100 + 100 -> 200
    assert expected["position"] == {"acc": 62.5, "acc_plus": 25.0, "score": 87.5}
    assert expected["perception"]["score"] == pytest.approx(312.5) and expected["cognition"]["score"] == pytest.approx(200)
    m = score_mme(rows)
    for task in ("existence", "count", "position", "code_reasoning"):
        assert {k: m[task][k] for k in ("acc", "acc_plus", "score")} == pytest.approx(expected[task]), task
    assert m["existence"]["acc"] == pytest.approx(75.0) and m["existence"]["acc_plus"] == pytest.approx(50.0)  # points
    assert m["position"]["score"] == pytest.approx(87.5)
    assert m["perception"] == pytest.approx(expected["perception"]) and m["cognition"] == pytest.approx(expected["cognition"])
    assert "score" not in m  # never perception and cognition summed
    # "" and "There is one."; then "  Yes", "n.o." and "\n\nyes"
    assert [m[t]["unparseable"] for t in ("existence", "count", "position", "code_reasoning")] == [1, 1, 3, 0]
