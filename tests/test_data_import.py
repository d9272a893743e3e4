"""Real data in and out: image folders, the REVERIE release, LLaVA and ShareGPT JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from reverie.data_import import (
    UnsafeImagePath,
    export_samples,
    from_llava_json,
    from_sharegpt_json,
    image_folder,
    import_llava,
    split_for,
)
from reverie.records import PUBLISHED_FIELDS
from reverie.release import export_reverie, import_reverie
from reverie.settings import PromptSettings
from reverie.student.samples import build_variant

MC = "What is on the table?\nA. a cup\nB. a plate\nC. a fork\nAnswer with the option's letter from the given choices directly."


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path)
    return path


def _row(image: str, question: str, correct: str, confusing: str, **extra) -> dict:
    return {"image": image, "question": question, "correct_answer": correct, "confusing_answer": confusing,
            "correct_rationale": f"Because the image shows {correct}.",
            "incorrect_rationale": f"The image does not show {confusing}.", **extra}


@pytest.fixture
def release(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "images"
    _image(root / "coco" / "a.jpg")
    _image(root / "vg" / "b.png")
    rows = [
        _row("coco/a.jpg", "Is there a dog in the image?", "No", "Yes", id="r1"),
        _row("coco/a.jpg", MC, "B", "A", id="r2"),
        _row("vg/b.png", "Why is the man smiling?", "He is greeting a friend.", "He won a prize.", id="r3", source="vg"),
        _row("vg/b.png", "How many cups?\nAnswer the question using a single word or phrase.", "2", "3"),
        {"image": "vg/b.png", "question": "Missing answers?"},
        _row("coco/missing.jpg", "Is it raining?", "no", "yes", id="r6"),
    ]
    path = tmp_path / "reverie.json"
    path.write_text(json.dumps(rows))
    return path, root


def content_id(row: dict) -> str:
    """The id a record of these published fields must have, computed here from the row."""
    import hashlib

    payload = json.dumps({f: row[f] for f in PUBLISHED_FIELDS}, sort_keys=True, ensure_ascii=False)
    return "rv-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def test_reverie_import_keeps_published_fields_and_quarantines_bad_rows(release):
    path, root = release
    rows = json.loads(path.read_text())
    records, quarantined = import_reverie(path, root)
    assert [r["id"] for r in records] == [content_id(rows[i]) for i in range(4)]
    assert [r["question_type"] for r in records] == ["yes_no", "multiple_choice", "open_ended", "short_answer"]
    assert records[1]["options"] == ["a cup", "a plate", "a fork"]  # read from the question's option lines
    assert records[2]["provenance"]["source_fields"] == {"source": "vg"} and records[2]["provenance"]["source_id"] == "r3"
    assert all(r["split"] == "train" and r["judge"]["consistent"] for r in records)
    assert [q["index"] for q in quarantined] == [4, 5]
    assert "missing or empty field(s): correct_answer" in quarantined[0]["reason"]
    assert "coco/missing.jpg not found" in quarantined[1]["reason"]


@pytest.mark.parametrize("bad", ["../outside.png", "coco/../../outside.png", "/etc/hostname", "link/outside.png"])
def test_reverie_import_quarantines_image_paths_that_escape_the_root(tmp_path, release, bad):
    _, root = release
    outside = _image(tmp_path / "outside.png")
    (root / "link").symlink_to(outside.parent, target_is_directory=True)
    path = tmp_path / "evil.json"
    path.write_text(json.dumps([_row("coco/a.jpg", "Is it day?", "yes", "no"), _row(bad, "Is it day?", "yes", "no")]))
    records, quarantined = import_reverie(path, root)  # the rest of the file is imported
    assert [r["image"] for r in records] == ["coco/a.jpg"]
    [q] = quarantined
    assert q["index"] == 1 and q["rule"] == "unsafe_image_path" and q["source"] == f"{path}:1"
    assert "escapes the images root" in q["reason"] or "must be relative" in q["reason"]


def test_reverie_export_imports_back_unchanged(release, tmp_path):
    path, root = release
    records, _ = import_reverie(path, root)
    again = tmp_path / "again.json"
    again.write_text(json.dumps(export_reverie(records)))
    back, quarantined = import_reverie(again, root)
    assert quarantined == []
    assert [{k: r[k] for k in ("id", *PUBLISHED_FIELDS)} for r in back] == \
           [{k: r[k] for k in ("id", *PUBLISHED_FIELDS)} for r in records]


@pytest.mark.parametrize("fmt,reader", [("llava", from_llava_json), ("sharegpt", from_sharegpt_json)])
def test_reflective_samples_round_trip_through_llava_and_sharegpt(release, fmt, reader):
    path, root = release
    records, _ = import_reverie(path, root)
    prompts = PromptSettings()
    rows = export_samples(records, "pos_neg", prompts, fmt)
    assert len(rows) == 3 * len(records)
    first_user = rows[0]["conversations"][0]["value"] if fmt == "llava" else rows[0]["messages"][0]["content"]
    assert first_user.startswith("<image>\n")
    back = reader(json.loads(json.dumps(rows)))
    original = build_variant(records, "pos_neg", prompts)
    assert [(c.id, c.image, [(t.user, t.assistant) for t in c.turns]) for c in back] == \
           [(c.id, c.image, [(t.user, t.assistant) for t in c.turns]) for c in original]
    negative = next(c for c in back if c.id.endswith(":neg"))
    assert negative.turns[1].user == prompts.negative.format(confusing_answer=records[0]["confusing_answer"])


def test_llava_mix_import(tmp_path):
    root = tmp_path / "images"
    _image(root / "coco" / "x.jpg")
    rows = [
        {"id": "1", "image": "coco/x.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A square."},
            {"from": "human", "value": "What colour?"}, {"from": "gpt", "value": "Dark blue."}]},
        {"id": "2", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"id": "3", "image": "coco/x.jpg", "conversations": [{"from": "human", "value": "<image>\nA?"},
                                                             {"from": "human", "value": "B?"}]},
    ]
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(rows))
    conversations, quarantined = import_llava(path, root)
    assert [(t.user, t.assistant) for t in conversations[0].turns] == [("What is this?", "A square."), ("What colour?", "Dark blue.")]
    assert conversations[0].kind == "llava_mix" and conversations[0].image == "coco/x.jpg"
    assert [(q["index"], q["reason"].split(":")[0]) for q in quarantined] == [(1, "no image"), (2, "unreadable conversation")]
    path.write_text(json.dumps([{"id": "4", "image": "../../etc/hostname", "conversations": rows[0]["conversations"]}]))
    with pytest.raises(UnsafeImagePath):
        import_llava(path, root)


def test_image_folder_ids_and_deterministic_split(tmp_path):
    root = tmp_path / "photos"
    for name in ["a.jpg", "b.PNG", "sub/c.jpeg", "notes.txt"]:
        (_image(root / name) if not name.endswith(".txt") else (root / name).write_text("x"))
    entries = image_folder(root, eval_fraction=0.5)
    assert [e.image_id for e in entries] == ["a", "b", "sub__c"]
    assert all(e.relpath == f"images/{e.split}/{e.image_id}{e.path.suffix.lower()}" for e in entries)
    assert [e.split for e in entries] == [split_for(e.image_id, 0.5) for e in entries] == \
           [e.split for e in image_folder(root, eval_fraction=0.5)]
    splits = [split_for(f"img{i}", 0.2) for i in range(2000)]
    assert 0.17 < splits.count("eval") / len(splits) < 0.23
    _image(root / "sub__c.png")
    with pytest.raises(ValueError, match="same image id 'sub__c'"):
        image_folder(root)


def test_json_entries_come_with_their_lines_and_errors_name_file_and_line(tmp_path):
    from reverie.io import DataFileError, iter_json_items, load_json_file, read_jsonl

    path = tmp_path / "rows.json"
    path.write_text('[\n  {"a": 1},\n\n  {"b": "x\\u2028y"}, 7\n]\n')
    assert list(iter_json_items(path)) == [(2, 0, {"a": 1}), (4, 1, {"b": "x\u2028y"}), (4, 2, 7)]
    path.write_text('{"k": [1,\n 2],\n "m": {}}')
    assert [(line, key) for line, key, _ in iter_json_items(path)] == [(1, "k"), (3, "m")]
    for text, line, what in [('[\n {"a": 1},\n {"a": 2\n]', 4, "not valid JSON"),
                             ('[\n {"a": 1},\n', 3, "ends before"),
                             ('[{"a": 1}] extra', 1, "text after the end"),
                             ('"just a string"', 1, "expected a JSON list or object")]:
        path.write_text(text)
        with pytest.raises(DataFileError, match=rf"^{path}:{line}: .*{what}"):
            list(iter_json_items(path))
    path.write_text('{\n"a": 1,\n"b": tru\n}')
    with pytest.raises(DataFileError, match=rf"^{path}:3: column 6: not valid JSON"):
        load_json_file(path)
    path.write_bytes(b'{"a": "ok"}\n{"b": "\xff"}\n')
    with pytest.raises(DataFileError, match=rf"^{path}:2: unreadable JSON line"):
        read_jsonl(path)
    with pytest.raises(DataFileError, match=rf"^{path}:2: not UTF-8"):
        load_json_file(path)
    with pytest.raises(DataFileError, match=rf"^{tmp_path / 'none.json'}: file not found"):
        load_json_file(tmp_path / "none.json")
