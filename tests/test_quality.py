import copy

import pytest
from PIL import Image

from reverie.quality import run_suite
from reverie.settings import ValidateSettings

SETTINGS = ValidateSettings(min_records=4, min_type_share=0.05, max_bad_row_fraction=0.0)


def record(i, qtype="yes_no", split="train", **kw):
    base = {
        "id": f"r{i}", "image": f"images/{split}/img{i % 4}.png", "split": split, "question_type": qtype,
        "question": "Is there a star in the image?", "correct_answer": "no", "confusing_answer": "yes",
        "correct_rationale": "There is no star in the image. So the answer is no.",
        "incorrect_rationale": "The answer yes is wrong. There is no star in the image.", "options": None,
    }
    if qtype == "multiple_choice":
        base.update(question="What shape? A. circle B. star", options=["circle", "star"], correct_answer="A", confusing_answer="B")
    if qtype in ("short_answer", "open_ended"):
        base.update(question="What color is the circle?", correct_answer="red", confusing_answer="blue")
    return base | kw


@pytest.fixture
def good(tmp_path):
    for split in ("train", "eval"):
        (tmp_path / "images" / split).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8)).save(tmp_path / "images" / split / f"img{i}.png")
    types = ["yes_no", "multiple_choice", "short_answer", "open_ended"]
    rows = [record(i, types[i % 4]) for i in range(16)] + [record(100 + i, types[i % 4], "eval") for i in range(4)]
    return tmp_path, rows


def test_good_records_pass(good):
    root, rows = good
    result = run_suite(rows, SETTINGS, root)
    assert result.success, result.failed
    assert len(result.clean) == len(rows) and not result.quarantined


@pytest.mark.parametrize("mutate, rule", [
    (lambda rs: rs[0].update(correct_answer=rs[0]["confusing_answer"]), "answers_differ"),
    (lambda rs: rs[1].update(correct_answer="E"), "choice_answer_in_options"),
    (lambda rs: rs[0].update(correct_answer="maybe"), "yes_no_answers_are_yes_no"),
    (lambda rs: rs[2].update(correct_rationale="red"), "rationale_not_answer_copy"),
    (lambda rs: rs[3].update(question=""), "fields_present"),
    (lambda rs: rs[3].update(incorrect_rationale="x" * 5000), "rationale_length_ok"),
    (lambda rs: rs[5].update(id=rs[4]["id"]), "ids_unique"),
    (lambda rs: rs[6].update(image="images/train/missing.png"), "image_decodes"),
    (lambda rs: rs[7].update(image="../../etc/passwd"), "image_decodes"),
    (lambda rs: rs[-1].update(image=rs[0]["image"]), "no_image_in_both_splits"),
    (lambda rs: [r.update(question_type="yes_no", options=None, correct_answer="no", confusing_answer="yes")
                 for r in rs if r["question_type"] == "open_ended"], "all_question_types_present"),
])
def test_bad_records_fail_the_named_expectation(good, mutate, rule):
    root, rows = good
    rows = copy.deepcopy(rows)
    mutate(rows)
    result = run_suite(rows, SETTINGS, root)
    assert not result.success
    assert rule in result.failed, result.failed


def test_a_corrupt_image_is_quarantined_with_its_reason(good):
    root, rows = good
    (root / "images" / "train" / "img3.png").write_bytes(b"not a png at all")
    tolerant = SETTINGS.model_copy(update={"max_bad_row_fraction": 0.5})
    result = run_suite(rows, tolerant, root)
    assert result.success
    bad = {q["record"]["id"] for q in result.quarantined}
    assert bad == {r["id"] for r in rows if r["image"].endswith("img3.png") and r["split"] == "train"}
    assert all("image_decodes" in q["reason"] for q in result.quarantined)
    assert not bad & set(result.clean["id"])
