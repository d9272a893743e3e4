"""The released REVERIE annotations as a `generate` source: every bad entry quarantined with
its rule, reason and line, the rest imported with content ids; both layouts (the authors'
flat records and the published conversation instances); through `dvc repro`."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import yaml
from PIL import Image

from reverie.io import DataFileError
from reverie.records import PUBLISHED_FIELDS
from reverie.release import import_reverie
from reverie.settings import Params, ParamsError, ValidateSettings

from .conftest import dvc, make_project, tiny_params_dict

LIMITS = ValidateSettings(min_question_chars=8, max_question_chars=120, max_answer_chars=60, min_rationale_chars=15,
                          max_rationale_chars=300)
POSITIVE = "Explain why. Including any necessary facts or knowledge."


def image(path: Path, color=(10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), color).save(path)
    return path


def row(img: str, question: str, correct: str, confusing: str, **extra) -> dict:
    return {"image": img, "question": question, "correct_answer": correct, "confusing_answer": confusing,
            "correct_rationale": f"The picture clearly shows {correct}, which settles it.",
            "incorrect_rationale": f"Nothing in the picture shows {confusing}, so it is wrong.", **extra}


def content_id(fields: dict) -> str:
    payload = json.dumps({f: fields[f] for f in PUBLISHED_FIELDS}, sort_keys=True, ensure_ascii=False)
    return "rv-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def write_lines(path: Path, entries: list) -> Path:
    """A JSON list with one entry per line, so that entry i (0-based) is on line i + 2."""
    path.write_text("[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "images"
    image(root / "coco" / "a.jpg")
    image(root / "vg" / "b.png", (200, 10, 10))
    image(tmp_path / "outside.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    image(root / "ocr_vqa" / "images" / "c.jpg")
    return root


GOOD = [row("coco/a.jpg", "What colour is the mug on the desk?", "Red", "Blue"),
        row("vg/b.png", "Is there a dog on the sofa?", "No", "Yes", gemini_pro_judge="No"),
        row("vg/b.png", "Which animal is on the sofa?\nA. a cat\nB. a dog\nC. a rabbit", "A. a cat", "B")]


def test_every_bad_entry_is_quarantined_with_its_rule_reason_and_line_and_the_rest_imported(tmp_path, root):
    entries = [
        GOOD[0],
        row("../outside.png", "What colour is the mug?", "Red", "Blue"),                  # escapes the root
        row("/etc/hostname", "What colour is the mug?", "Red", "Blue"),                   # absolute
        {**row("coco/a.jpg", "What is on the desk?", "a mug", "a cup"), "correct_rationale": "  "},  # empty field
        {k: v for k, v in GOOD[0].items() if k != "confusing_answer"},                    # missing field
        row("coco/gone.jpg", "What colour is the mug?", "Red", "Blue"),                   # missing image
        row("broken.jpg", "What colour is the mug?", "Red", "Blue"),                      # undecodable image
        row("coco/a.jpg", "How many mugs are on the desk?", "Two.", "two"),               # correct == confusing
        row("coco/a.jpg", "Describe the desk " + "in great detail " * 10 + "please.", "A desk.", "A bed."),  # over-long
        row("ocr_vqa/images/c.jpg", "Who wrote this book?", "Jane Austen", "Mark Twain"),  # dropped by rule
        GOOD[1],
        dict(GOOD[0]),                                                                    # exact duplicate
        row("coco/a.jpg", "Is the mug empty?", "Yes", "No", gemini_pro_judge="Yes"),      # the release's judge
        "not an object",
        GOOD[2],
        row("coco/a.jpg", "Which cup?\nA. the red one\nB. the blue one", "the green one", "A"),  # not an option
    ]
    path = write_lines(tmp_path / "release.json", entries)
    records, quarantined = import_reverie(path, root, 0.0, lengths=LIMITS)
    expected = [(3, "unsafe_image_path"), (4, "unsafe_image_path"), (5, "missing_field"), (6, "missing_field"),
                (7, "image_missing"), (8, "image_undecodable"), (9, "answers_equal"), (10, "length"),
                (11, "excluded_image"), (13, "duplicate"), (14, "release_judge"), (15, "not_an_object"),
                (17, "answer_not_an_option")]
    assert [(q["line"], q["rule"]) for q in quarantined] == expected
    by_line = {q["line"]: q for q in quarantined}
    assert by_line[13]["reason"] == "exact duplicate of the entry at line 2"
    long = len(entries[8]["question"])
    assert f"question has {long} characters, outside 8-120 (validate.min_question_chars/max_question_chars)" in by_line[10]["reason"]
    assert "'ocr_vqa'" in by_line[11]["reason"] and by_line[5]["reason"].endswith("correct_rationale")
    assert all(q["source"] == f"{path}:{q['line']}" for q in quarantined)

    assert [r["id"] for r in records] == [content_id(GOOD[0]), content_id(GOOD[1]), content_id(GOOD[2])]
    assert [(r["question_type"], r["correct_answer"], r["confusing_answer"]) for r in records] == [
        ("short_answer", "Red", "Blue"), ("yes_no", "No", "Yes"), ("multiple_choice", "A", "B")]
    assert records[2]["options"] == ["a cat", "a dog", "a rabbit"]
    assert records[2]["provenance"]["source_answers"] == {"correct_answer": "A. a cat", "confusing_answer": "B"}

    # the ids come from content: the same on another import, in any order
    random.Random(0).shuffle(entries)
    again, _ = import_reverie(write_lines(tmp_path / "shuffled.json", entries), root, 0.0, lengths=LIMITS)
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in records)


def instance(img: str, question: str, answer: str, prompt: str, rationale: str, image_id: str = "1") -> dict:
    return {"id": image_id, "image": img, "conversations": [
        {"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer},
        {"from": "human", "value": prompt}, {"from": "gpt", "value": rationale}]}


def negative(confusing: str) -> str:
    return f"Explain why this answer is wrong: {confusing}. Including any necessary facts or knowledge."


def test_the_published_instances_are_paired_back_into_records(tmp_path, root):
    q1, q2 = "What colour is the mug on the desk?", "What lies under the table here?"
    entries = [
        instance("coco/a.jpg", q1, "Red", POSITIVE, "The mug on the desk is plainly red."),
        instance("coco/a.jpg", q1, "Red", negative("Blue"), "No blue object is on the desk at all."),
        instance("coco/a.jpg", q1, "Red", negative("Green"), "Nothing green can be seen on the desk."),
        instance("vg/b.png", q2, "A cat", negative("A dog"), "The animal has whiskers and is small."),  # no positive
        instance("vg/b.png", "Is it day?", "Yes", "Why is this so?", "The sky is bright and blue."),  # unknown prompt
        {"id": "9", "image": "vg/b.png", "conversations": [{"from": "human", "value": "hi"}]},  # unreadable
    ]
    path = write_lines(tmp_path / "reverie.json", entries)
    records, quarantined = import_reverie(path, root, 0.0, lengths=LIMITS)
    # one record per confusing answer, each with the question's positive rationale
    assert [(r["question"], r["correct_answer"], r["confusing_answer"], r["correct_rationale"], r["incorrect_rationale"])
            for r in records] == [
        (q1, "Red", "Blue", "The mug on the desk is plainly red.", "No blue object is on the desk at all."),
        (q1, "Red", "Green", "The mug on the desk is plainly red.", "Nothing green can be seen on the desk.")]
    assert [r["provenance"]["lines"] for r in records] == [[2, 3], [2, 4]]
    assert [(q["line"], q["rule"]) for q in quarantined] == [(5, "unpaired"), (6, "unknown_prompt"),
                                                             (7, "unreadable_conversation")]


def release_params(tmp_path: Path, path: Path, root: Path, **validate) -> dict:
    data = tiny_params_dict(tmp_path)
    data["generate"].update(teacher="reverie_json")
    data["generate"]["reverie_json"] = {"path": str(path), "images_dir": str(root), "eval_fraction": 0.3}
    data["validate"].update(min_records=5, min_type_share=0.0, max_bad_row_fraction=0.0, **validate)
    return data


def test_missing_inputs_name_their_params_key_and_a_broken_file_its_line(tmp_path, root):
    from reverie.generate import generate_dataset

    data = release_params(tmp_path, tmp_path / "none.json", root)
    with pytest.raises(ParamsError, match=r"generate\.reverie_json\.path: .*none\.json is not a file"):
        generate_dataset(Params.model_validate(data), tmp_path / "data")
    path = tmp_path / "broken.json"
    path.write_text('[\n {"image": "coco/a.jpg"},\n {"image": "coco/a.jpg",, }\n]')
    data = release_params(tmp_path, path, tmp_path / "no-images")
    with pytest.raises(ParamsError, match=r"generate\.reverie_json\.images_dir: .*no-images does not exist"):
        generate_dataset(Params.model_validate(data), tmp_path / "data")
    with pytest.raises(DataFileError, match=rf"^{path}:3: column 25: not valid JSON"):  # the second comma
        generate_dataset(Params.model_validate(release_params(tmp_path, path, root)), tmp_path / "data")


def test_dvc_repro_generates_and_validates_from_the_release(tmp_path):
    root = tmp_path / "release" / "images"
    entries = []
    for i in range(12):  # twelve images, each with one question of each format but open-ended
        img = image(root / "coco" / f"{i:03d}.jpg", (i * 20, 100, 255 - i * 20)).relative_to(root).as_posix()
        entries += [row(img, f"Is there a cat number {i} here?", "No", "Yes"),
                    row(img, f"What colour is box {i}?", "Red", "Blue"),
                    row(img, f"Which shape is item {i}?\nA. a circle\nB. a square", "B", "A"),
                    row(img, f"Why is the light {i} on?", "Because it is dark outside now.", "Because it is noon.")]
    entries += [entries[0], row("ocr_vqa/x.jpg", "Who wrote it?", "Ann", "Bob"), row("coco/999.jpg", "Is it?", "no", "yes")]
    path = write_lines(tmp_path / "release" / "reverie.json", entries)
    project = make_project(tmp_path / "project", release_params(tmp_path, path, root))
    dvc(project, "repro", "validate")
    gen = json.loads((project / "metrics" / "generate.json").read_text())
    assert gen["records"] == 48 and gen["release_images"] == 12 and gen["quarantined"] == 3
    assert (gen["release_quarantined_duplicate"], gen["release_quarantined_excluded_image"],
            gen["release_quarantined_image_missing"]) == (1, 1, 1)
    val = json.loads((project / "metrics" / "validate.json").read_text())
    assert val["success"] and val["train_records"] + val["eval_records"] == 48
    filtered = [json.loads(line) for line in (project / "data" / "records" / "filtered.jsonl").read_text().splitlines()]
    for r in filtered:
        assert (project / "data" / r["image"]).is_file() and r["image"].startswith(f"images/{r['split']}/coco__")
    assert len({r["id"] for r in filtered}) == 48
    again = dvc(project, "repro", "validate")
    assert "Running stage 'generate'" not in again.stdout  # nothing changed, nothing rerun
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["validate"]["max_question_chars"] = 40  # a rule validate shares with the import
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = dvc(project, "repro", "generate")
    assert "Running stage 'generate'" in third.stdout
    gen = json.loads((project / "metrics" / "generate.json").read_text())
    long_questions = sum(len(e["question"]) > 40 for e in entries[:48])
    assert gen["release_quarantined_length"] == long_questions and gen["records"] == 48 - long_questions
