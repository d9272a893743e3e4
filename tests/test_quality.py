"""The quality suite: every one of its 15 expectations is triggered by a record made bad in
one way only, and that expectation alone fails; a bad row is quarantined under the name of
the rule it broke (and no other), and the clean split keeps everything else."""
import copy

import pytest
from PIL import Image

from reverie.quality import ROW_RULES, run_suite
from reverie.settings import ValidateSettings

SETTINGS = ValidateSettings(min_records=4, min_type_share=0.05, max_bad_row_fraction=0.0)
TYPES = ["yes_no", "multiple_choice", "short_answer", "open_ended"]


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
    # rows 0..15 train (r0 yes_no, r1 multiple_choice, r2 short_answer, r3 open_ended, ...), 16..19 eval
    rows = [record(i, TYPES[i % 4]) for i in range(16)] + [record(100 + i, TYPES[i % 4], "eval") for i in range(4)]
    return tmp_path, rows


def test_good_records_pass(good):
    root, rows = good
    result = run_suite(rows, SETTINGS, root)
    assert result.success, result.failed
    assert result.failed == [] and result.expectations == 15
    assert len(result.clean) == len(rows) and not result.quarantined


# A long short answer, so that a rationale can copy it and still be of a rationale's length.
LONG = dict(correct_answer="a large red circle at the top", confusing_answer="a small blue square at the left")

ROW_CASES = [  # (what is wrong, row index, the change, the one rule it breaks)
    ("question blank but long enough", 0, dict(question=" " * 30), "fields_present"),
    ("id empty", 0, dict(id=""), "fields_present"),
    ("question under the minimum", 0, dict(question="Is it?"), "question_length_ok"),
    ("question over the maximum", 0, dict(question="Is there a star? " + "x" * 400), "question_length_ok"),
    ("correct answer over the maximum", 2, dict(correct_answer="r" * 201), "answer_length_ok"),
    ("confusing answer over the maximum", 2, dict(confusing_answer="b" * 201), "answer_length_ok"),
    ("positive rationale under the minimum", 0, dict(correct_rationale="No star seen."), "rationale_length_ok"),
    ("negative rationale over the maximum", 0, dict(incorrect_rationale="x" * 601), "rationale_length_ok"),
    ("answers equal", 2, dict(correct_answer="blue"), "answers_differ"),
    ("answers equal once normalised", 2, dict(correct_answer=" Blue. ", confusing_answer="blue"), "answers_differ"),
    ("answer not an option letter", 1, dict(correct_answer="E"), "choice_answer_in_options"),
    ("one option only", 1, dict(options=["circle"]), "choice_answer_in_options"),
    ("options missing", 1, dict(options=None), "choice_answer_in_options"),
    ("correct yes/no answer not yes/no", 0, dict(correct_answer="maybe"), "yes_no_answers_are_yes_no"),
    ("confusing yes/no answer not yes/no", 0, dict(confusing_answer="perhaps"), "yes_no_answers_are_yes_no"),
    ("positive rationale copies the correct answer", 2, dict(LONG, correct_rationale="A large red circle at the top."),
     "rationale_not_answer_copy"),
    ("positive rationale copies the confusing answer", 2, dict(LONG, correct_rationale="a small blue square at the left"),
     "rationale_not_answer_copy"),
    ("negative rationale copies the correct answer", 2, dict(LONG, incorrect_rationale="A large red circle at the top"),
     "rationale_not_answer_copy"),
    ("negative rationale copies the confusing answer", 2, dict(LONG, incorrect_rationale="A small blue square at the left."),
     "rationale_not_answer_copy"),
    ("unknown question type", 3, dict(question_type="essay"), "question_type_known"),
    ("image missing", 6, dict(image="images/train/missing.png"), "image_decodes"),
    ("image outside the data root", 7, dict(image="../../etc/passwd"), "image_decodes"),
]


@pytest.mark.parametrize("index, change, rule", [c[1:] for c in ROW_CASES], ids=[c[0] for c in ROW_CASES])
def test_a_bad_row_fails_its_expectation_alone_and_is_quarantined_under_its_name(good, index, change, rule):
    root, rows = good
    rows = copy.deepcopy(rows)
    rows[index].update(change)
    result = run_suite(rows, SETTINGS, root)
    assert not result.success
    assert result.failed == [rule]
    assert [(q["reason"], q["record"]) for q in result.quarantined] == [(f"quality: {rule}", rows[index])]
    assert list(result.clean.index) == [i for i in range(len(rows)) if i != index]


def test_a_decodable_image_outside_the_data_root_is_refused(good):
    root, rows = good
    Image.new("RGB", (8, 8)).save(root.parent / f"{root.name}-outside.png")  # a real image, beside the root
    rows = copy.deepcopy(rows)
    rows[5].update(image=f"../{root.name}-outside.png")
    result = run_suite(rows, SETTINGS, root)
    assert result.failed == ["image_decodes"]
    assert [(q["reason"], q["record"]["id"]) for q in result.quarantined] == [("quality: image_decodes", "r5")]


def test_a_tolerated_bad_row_is_quarantined_and_the_suite_passes(good):
    root, rows = good
    rows = copy.deepcopy(rows)
    rows[2].update(correct_answer="blue")  # 1 bad row in 20: within a 10 % tolerance
    result = run_suite(rows, SETTINGS.model_copy(update={"max_bad_row_fraction": 0.1}), root)
    assert result.success and result.failed == []
    assert [q["reason"] for q in result.quarantined] == ["quality: answers_differ"]
    assert "r2" not in set(result.clean["id"]) and len(result.clean) == 19


def test_a_row_breaking_two_rules_names_both(good):
    root, rows = good
    rows = copy.deepcopy(rows)
    rows[0].update(question="", correct_answer="maybe")
    result = run_suite(rows, SETTINGS, root)
    assert sorted(result.failed) == ["fields_present", "question_length_ok", "yes_no_answers_are_yes_no"]
    [q] = result.quarantined
    assert q["reason"] == "quality: fields_present, question_length_ok, yes_no_answers_are_yes_no"


def test_answers_as_option_text_and_yes_no_in_any_case_pass(good):
    root, rows = good
    rows = copy.deepcopy(rows)
    rows[1].update(correct_answer="circle")  # the option's text instead of its letter
    rows[0].update(correct_answer="No.", confusing_answer=" YES ")
    result = run_suite(rows, SETTINGS, root)
    assert result.success, result.failed
    assert not result.quarantined


def convert_open_ended(rows, keep: int):
    """Turns every open-ended row but the first `keep` train ones into a yes/no row."""
    kept = 0
    for r in rows:
        if r["question_type"] == "open_ended":
            if r["split"] == "train" and kept < keep:
                kept += 1
                continue
            r.update(question_type="yes_no", options=None, question="Is there a star in the image?",
                     correct_answer="no", confusing_answer="yes")


TABLE_CASES = [  # table-level rules: the expectation fails, no row is quarantined
    ("repeated id", lambda rs: rs[5].update(id=rs[4]["id"]), SETTINGS, "ids_unique"),
    ("an image in both splits", lambda rs: rs[-1].update(image=rs[0]["image"]), SETTINGS, "no_image_in_both_splits"),
    ("too few records", lambda rs: None, SETTINGS.model_copy(update={"min_records": 21}), "enough_records"),
    ("a question type missing", lambda rs: convert_open_ended(rs, keep=0), SETTINGS, "all_question_types_present"),
    # one open-ended row in 16 train rows is 6.25 %: under a 10 % minimum share
    ("a question type too rare", lambda rs: convert_open_ended(rs, keep=1),
     SETTINGS.model_copy(update={"min_type_share": 0.1}), "question_type_share"),
]


@pytest.mark.parametrize("mutate, settings, rule", [c[1:] for c in TABLE_CASES], ids=[c[0] for c in TABLE_CASES])
def test_a_bad_table_fails_its_expectation_alone(good, mutate, settings, rule):
    root, rows = good
    rows = copy.deepcopy(rows)
    mutate(rows)
    result = run_suite(rows, settings, root)
    assert not result.success
    assert result.failed == [rule]
    assert result.quarantined == [] and len(result.clean) == len(rows)


def test_the_minimum_is_met_exactly(good):
    root, rows = good
    # 20 records against a minimum of 20; 1 open-ended row in 16 (6.25 %) against a 6.25 % share
    rows = copy.deepcopy(rows)
    convert_open_ended(rows, keep=1)
    result = run_suite(rows, SETTINGS.model_copy(update={"min_records": 20, "min_type_share": 1 / 16}), root)
    assert result.success, result.failed


def test_every_expectation_is_triggered_by_a_case_here():
    triggered = {c[-1] for c in ROW_CASES} | {c[-1] for c in TABLE_CASES}
    assert triggered == {r.name for r in ROW_RULES} | {"ids_unique", "no_image_in_both_splits", "enough_records",
                                                       "all_question_types_present", "question_type_share"}


def test_a_corrupt_image_is_quarantined_with_its_reason(good):
    root, rows = good
    (root / "images" / "train" / "img3.png").write_bytes(b"not a png at all")
    tolerant = SETTINGS.model_copy(update={"max_bad_row_fraction": 0.5})
    result = run_suite(rows, tolerant, root)
    assert result.success
    bad = {q["record"]["id"] for q in result.quarantined}
    assert bad == {r["id"] for r in rows if r["image"].endswith("img3.png") and r["split"] == "train"} == {"r3", "r7", "r11", "r15"}
    assert all(q["reason"] == "quality: image_decodes" for q in result.quarantined)
    assert not bad & set(result.clean["id"])


def test_the_validation_result_and_data_docs_name_every_rule(good, tmp_path_factory):
    """What validate publishes: reports/validation.json (the GX result) names each expectation's
    rule and says what it checks; the data docs hold the suite and this validation."""
    root, rows = good
    rows = copy.deepcopy(rows)
    rows[2].update(correct_answer="blue")  # answers_differ fails: the docs show a failing rule too
    docs = tmp_path_factory.mktemp("docs") / "data_docs"
    result = run_suite(rows, SETTINGS, root, docs_dir=docs)
    gx = result.gx_result
    assert gx["suite_name"] == "reverie_records" and gx["success"] is False
    notes = {r["expectation_config"]["meta"]["rule"]: r["expectation_config"]["meta"]["notes"] for r in gx["results"]}
    assert notes == {
        "fields_present": "the published fields and id are present and non-empty",
        "question_length_ok": "question length within bounds",
        "answer_length_ok": "answer lengths within bounds",
        "rationale_length_ok": "rationale lengths within bounds",
        "answers_differ": "the correct answer differs from the confusing one",
        "choice_answer_in_options": "multiple-choice answers name one of the options",
        "yes_no_answers_are_yes_no": "yes/no questions have yes/no answers",
        "rationale_not_answer_copy": "a rationale is not a copy of its answer",
        "question_type_known": "the question type is one of the four formats",
        "image_decodes": "the image exists under the data root and decodes",
        "ids_unique": "record ids are unique",
        "no_image_in_both_splits": "no image appears in both the train and the eval split",
        "enough_records": "at least 4 records",
        "all_question_types_present": "each of the four question types is present",
        "question_type_share": "each question type is at least 5% of the train records",
    }
    failing = [r for r in gx["results"] if not r["success"]]
    assert [r["expectation_config"]["meta"]["rule"] for r in failing] == ["answers_differ"]
    # SUMMARY results: the failing rows' values are listed (one bad row of 20)
    assert failing[0]["result"]["unexpected_count"] == 1 and failing[0]["result"]["partial_unexpected_list"] == [False]
    # the data docs: an index, the suite's page and one validation page under the suite's name
    assert (docs / "index.html").is_file() and (docs / "expectations" / "reverie_records.html").is_file()
    [page] = (docs / "validations" / "reverie_records").rglob("*.html")
    assert "rule_answers_differ" in page.read_text() and page.name == "records-filtered_records.html"


def test_without_a_docs_folder_no_data_docs_are_written(good, tmp_path_factory, monkeypatch):
    root, rows = good
    where = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(where)
    assert run_suite(rows, SETTINGS, root).success
    assert list(where.iterdir()) == []
