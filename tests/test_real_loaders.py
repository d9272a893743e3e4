"""The real benchmarks' loaders, item by item and error by error: small files in the published
layouts (POPE's coco_pope_<split>.json and LLaVA's llava_pope_test.jsonl, MME's release
folders, MMBench's tsv with base64 images and circular copies, ScienceQA's problems.json and
LLaVA's llava_test_CQM-A.json), loaded, and compared with the items and the messages a user
should get, written out by hand."""
import base64
import binascii
import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from reverie.evaluation.loaders import load_mmbench, load_mme, load_pope, load_pope_llava, load_scienceqa
from reverie.evaluation.suites import Item
from reverie.io import DataFileError
from reverie.vocab import LETTER, SHORT
from tests.test_real_benchmarks import MMBENCH_HEADER, jsonl, write_pope

IMAGE_1 = "COCO_val2014_000000000001.jpg"
IMAGE_2 = "COCO_val2014_000000000002.jpg"


def image_bytes(color=(200, 0, 0), mode="RGB", fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (4, 4), color).save(buf, format=fmt)
    return buf.getvalue()


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def refused(path: Path, *problems: str, more: int = 0) -> str:
    """The message of a file refused for `problems` (each already 'path:line: reason')."""
    shown = "\n  ".join(problems) + (f"\n  ... and {more} more" if more else "")
    return f"{path}: {len(problems) + more} problem(s), the file is refused:\n  {shown}"


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(DataFileError) as err:
        call(*args, **kwargs)
    return str(err.value)


# ---- POPE ---------------------------------------------------------------------------------
def pope_row(qid, text="Is there a dog in the image?", label="yes", image=IMAGE_1) -> dict:
    return {"question_id": qid, "image": image, "text": text, "label": label}


@pytest.mark.parametrize("name, split", [("coco_pope_random.json", "random"), ("coco_pope_popular.json", "popular"),
                                         ("coco_pope_adversarial.json", "adversarial"),
                                         ("pope_subset.json", "pope_subset")])
def test_pope_takes_the_split_from_the_file_name(tmp_path, name, split):
    image = put(tmp_path / "val2014" / IMAGE_1, image_bytes())
    path = jsonl(tmp_path / name, [pope_row(1), pope_row(2, "Is there a kite in the image?", "no")])
    question = f"Is there a dog in the image?\n{SHORT}"
    items = load_pope(path, tmp_path / "val2014")
    assert len(items) == 2 and [it.label for it in items] == ["yes", "no"]
    assert items[0] == Item("pope", f"pope-{split}-1", str(image.resolve()), question, "yes",
                            {"split": split, "source_id": 1, "llava_prompt": question})


def test_pope_without_a_prompt_asks_the_bare_question(tmp_path):
    put(tmp_path / "val2014" / IMAGE_1, image_bytes())
    path = jsonl(tmp_path / "coco_pope_random.json", [pope_row(1, f"Is there a dog in the image?\n{SHORT}")])
    [item] = load_pope(path, tmp_path / "val2014", prompt="")
    assert item.question == item.extra["llava_prompt"] == "Is there a dog in the image?"


def test_pope_names_every_line_that_is_not_an_object_with_the_fields(tmp_path):
    put(tmp_path / "val2014" / IMAGE_1, image_bytes())
    path = tmp_path / "coco_pope_random.json"
    path.write_text("\n".join([json.dumps(pope_row(1)),
                               json.dumps([2, IMAGE_1]),
                               json.dumps({"question_id": 3, "image": IMAGE_1, "text": "Is there a cat?"}),
                               json.dumps("Is there a cow?"),
                               json.dumps({"question_id": 5, "image": IMAGE_1})]) + "\n")
    assert error_of(load_pope, path, tmp_path / "val2014") == refused(
        path, f"{path}:2: expected a JSON object", f"{path}:3: missing field(s) ['label']",
        f"{path}:4: expected a JSON object", f"{path}:5: missing field(s) ['label', 'text']")


@pytest.mark.parametrize("n", [10, 11, 13])
def test_a_refused_file_shows_its_first_ten_problems_and_counts_the_rest(tmp_path, n):
    put(tmp_path / "val2014" / IMAGE_1, image_bytes())
    path = jsonl(tmp_path / "coco_pope_random.json", [pope_row(i, label="maybe") for i in range(1, n + 1)])
    shown = [f"{path}:{i}: label 'maybe' is not yes or no" for i in range(1, 11)]
    assert error_of(load_pope, path, tmp_path / "val2014") == refused(path, *shown, more=n - 10)


def llava_rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "llava_pope_test.jsonl").read_text().splitlines()]


def test_pope_in_llavas_layout_refuses_a_bad_question_line(tmp_path):
    labels = write_pope(tmp_path)
    rows = llava_rows(tmp_path)
    del rows[2]["category"]
    questions = jsonl(tmp_path / "llava_pope_test.jsonl", rows)
    assert error_of(load_pope_llava, questions, labels, tmp_path / "val2014") == refused(
        questions, f"{questions}:3: missing field(s) ['category']")


def test_pope_in_llavas_layout_refuses_a_bad_label_file_by_its_own_name(tmp_path):
    labels = write_pope(tmp_path)
    rows = [json.loads(line) for line in labels["popular"].read_text().splitlines()]
    rows[1]["label"] = "maybe"
    jsonl(labels["popular"], rows)
    assert error_of(load_pope_llava, tmp_path / "llava_pope_test.jsonl", labels, tmp_path / "val2014") == refused(
        labels["popular"], f"{labels['popular']}:2: label 'maybe' is not yes or no")


def test_pope_in_llavas_layout_refuses_a_label_file_without_its_questions(tmp_path):
    labels = write_pope(tmp_path)
    rows = [r for r in llava_rows(tmp_path) if r["category"] != "popular"]  # lines 5..8 now adversarial
    rows[5]["text"] = f"Is there a cat in the image?\n{SHORT}"
    questions = jsonl(tmp_path / "llava_pope_test.jsonl", rows)
    assert error_of(load_pope_llava, questions, labels, tmp_path / "val2014") == refused(
        questions, f"{questions}: 0 questions of category popular, but 4 labels in {labels['popular']}",
        f"{questions}:6: does not match its label line in coco_pope_adversarial.json "
        f"({IMAGE_1}: 'Is there a frisbee in the image?')")


def test_pope_in_llavas_layout_names_repeated_ids_mismatches_and_missing_images(tmp_path):
    labels = write_pope(tmp_path)
    rows = llava_rows(tmp_path)
    rows[1]["question_id"] = 3000
    rows[2]["text"] = f"Is there a cow in the image?\n{SHORT}"
    rows[3]["image"] = "COCO_val2014_000000000009.jpg"
    truth = [json.loads(line) for line in labels["random"].read_text().splitlines()]
    truth[3]["image"] = "COCO_val2014_000000000009.jpg"
    jsonl(labels["random"], truth)
    questions = jsonl(tmp_path / "llava_pope_test.jsonl", rows)
    assert error_of(load_pope_llava, questions, labels, tmp_path / "val2014") == refused(
        questions, f"{questions}:2: question_id 3000 repeats line 1",
        f"{questions}:3: does not match its label line in coco_pope_random.json ({IMAGE_2}: 'Is there a kite in the image?')",
        f"{questions}:4: image COCO_val2014_000000000009.jpg not found in {tmp_path / 'val2014'}")


def test_pope_in_llavas_layout_items(tmp_path):
    labels = write_pope(tmp_path)
    items = load_pope_llava(tmp_path / "llava_pope_test.jsonl", labels, tmp_path / "val2014")
    question = f"Is there a kite in the image?\n{SHORT}"
    assert items[1] == Item("pope", "pope-random-3001", str((tmp_path / "val2014" / IMAGE_1).resolve()), question, "no",
                            {"split": "random", "source_id": 3001, "llava_prompt": question})


# ---- MME ----------------------------------------------------------------------------------
def test_mme_reads_jpeg_images_crlf_lines_and_blank_lines_and_numbers_the_questions(tmp_path):
    image = put(tmp_path / "existence" / "0001.jpeg", image_bytes(fmt="JPEG"))
    (tmp_path / "existence" / "0001.txt").write_bytes(
        b"Is there a dog in this image? Please answer yes or no.\tYes\r\n\r\n"
        b"Is there a cat in this image? Please answer yes or no.\tNo\r\n"
        b"Is there a cow in this image? Answer the question using a single word or phrase. Please answer yes or no.\tno\r\n")

    def item(k, animal, label):
        question = f"Is there a {animal} in this image?\n{SHORT}"
        return Item("mme", f"mme-existence-0001-{k}", str(image.resolve()), question, label,
                    {"subtask": "existence", "group": "perception", "source_id": "existence/0001.jpeg",
                     "llava_prompt": question})

    assert load_mme(tmp_path) == [item(0, "dog", "yes"), item(1, "cat", "no"), item(2, "cow", "no")]


def test_mme_refuses_a_folder_that_is_not_there(tmp_path):
    assert error_of(load_mme, tmp_path / "MME_Benchmark_release_version") == \
        f"{tmp_path / 'MME_Benchmark_release_version'}: MME folder not found"


def test_mme_names_an_empty_answer_and_one_that_is_not_yes_or_no(tmp_path):
    put(tmp_path / "count" / "0001.png", image_bytes())
    txt = tmp_path / "count" / "0001.txt"
    txt.write_text("Are there two dogs? Please answer yes or no.\t\n"
                   "Are there three dogs? Please answer yes or no.\tX\n")
    assert error_of(load_mme, tmp_path) == refused(txt, f"{txt}:1: answer '' is not yes or no",
                                                   f"{txt}:2: answer 'x' is not yes or no")


def test_mme_names_a_question_file_without_its_image(tmp_path):
    txt = tmp_path / "artwork" / "questions_answers_YN" / "10002.txt"
    put(txt, b"Is this artwork created by Giotto? Please answer yes or no.\tYes\n")
    (tmp_path / "artwork" / "images").mkdir()
    assert error_of(load_mme, tmp_path) == refused(
        txt, f"{txt}: no image named 10002.* in {tmp_path / 'artwork' / 'images'}")


# ---- MMBench ------------------------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(header)
        w.writerows(rows)
    return path


def cached(cache: Path, data: bytes) -> str:
    return str(cache.resolve() / f"{hashlib.sha256(data).hexdigest()[:16]}.png")


def test_mmbench_rows_as_published(tmp_path):
    """nan and None cells (hint, options), a copy whose image cell is the first row's index as
    pandas writes it ("3.0"), a question over two lines, a CMYK JPEG; loaded twice into the same
    cache, with the same items."""
    red, cmyk = image_bytes(), image_bytes((0, 255, 255, 0), "CMYK", "JPEG")
    path = write_tsv(tmp_path / "mmbench_dev_20230712.tsv", MMBENCH_HEADER, [
        [3, "What colour is the square?", "nan", "red", "green", "nan", "blue", "B", "attribute_recognition", b64(red),
         "source", "Fine-grained Perception (instance)", "nan", "dev"],
        [1000003, "What colour is the square?", "None", "green", "red", "", "", "A", "attribute_recognition", "3.0",
         "source", "Fine-grained Perception (instance)", "nan", "dev"],
        [5, "Look at the chart.\r\nWhich is it?", "A hint.", "cat", "dog", "cow", "", "C", "image_topic", b64(cmyk),
         "source", "Coarse Perception", "nan", "dev"]])
    cache = tmp_path / "cache"

    def item(index, shown, label, options, category, l2, image):
        return Item("mmbench", f"mmbench-{index}", image, f"{shown}\n{LETTER}", label,
                    {"question_id": f"mmbench-{index % 1_000_000}", "rotation": index // 1_000_000, "options": options,
                     "category": category, "l2_category": l2, "source_id": index, "llava_prompt": shown})

    expected = [
        item(3, "What colour is the square?\nA. red\nB. green", "B", ["red", "green"], "attribute_recognition",
             "Fine-grained Perception (instance)", cached(cache, red)),
        item(1000003, "What colour is the square?\nA. green\nB. red", "A", ["green", "red"], "attribute_recognition",
             "Fine-grained Perception (instance)", cached(cache, red)),
        item(5, "A hint.\nLook at the chart.\r\nWhich is it?\nA. cat\nB. dog\nC. cow", "C", ["cat", "dog", "cow"],
             "image_topic", "Coarse Perception", cached(cache, cmyk))]
    assert load_mmbench(path, cache) == expected
    assert sorted(p.name for p in cache.iterdir()) == sorted(Path(it.image).name for it in expected[::2])
    assert Image.open(expected[2].image).mode == "RGB"
    assert load_mmbench(path, cache) == expected


def test_mmbench_reads_four_options_at_most_and_does_without_category_columns(tmp_path):
    path = write_tsv(tmp_path / "mmbench.tsv", ["index", "question", "A", "B", "C", "D", "E", "answer", "image"],
                     [[1, "Which letter comes first?", "x", "y", "z", "w", "v", "D", b64(image_bytes())]])
    shown = "Which letter comes first?\nA. x\nB. y\nC. z\nD. w"
    assert load_mmbench(path, tmp_path / "cache", prompt="") == [
        Item("mmbench", "mmbench-1", cached(tmp_path / "cache", image_bytes()), shown, "D",
             {"question_id": "mmbench-1", "rotation": 0, "options": ["x", "y", "z", "w"], "category": "",
              "l2_category": "", "source_id": 1, "llava_prompt": shown})]


def test_mmbench_refuses_a_header_without_its_columns(tmp_path):
    path = write_tsv(tmp_path / "mmbench.tsv", ["index", "question", "A", "answer", "category"], [[1, "Q?", "x", "A", "c"]])
    assert error_of(load_mmbench, path, tmp_path / "cache") == f"{path}:1: missing column(s) ['B', 'image'] in the header"


def test_mmbench_names_bad_indexes_and_answers(tmp_path):
    good = b64(image_bytes())
    row = lambda index, answer: [index, "Which?", "nan", "red", "green", "blue", "white", answer, "attribute", good,
                                 "source", "l2", "nan", "dev"]
    path = write_tsv(tmp_path / "mmbench.tsv", MMBENCH_HEADER,
                     [row("abc", "A"), row(3, "A"), row("3", "B"), row(5, ""), row(6, "AB"), row(7, "D"),
                      row("inf", "A"), row("2.5", "A"), row("8.0", "A")])
    assert error_of(load_mmbench, path, tmp_path / "cache") == refused(
        path, f"{path}:2: index 'abc' is not a whole number", f"{path}:4: index 3 repeats line 3",
        f"{path}:8: index 'inf' is not a whole number", f"{path}:9: index '2.5' is not a whole number",
        f"{path}:5: answer '' is not the letter of one of its 4 options",
        f"{path}:6: answer 'AB' is not the letter of one of its 4 options")


def b64_error(cell: str) -> str:
    try:
        base64.b64decode(cell, validate=True)
    except binascii.Error as exc:
        return str(exc)
    raise AssertionError(f"{cell!r} is valid base64")


NOT_AN_IMAGE = "image cell is neither base64 image data nor another row's index"
PNG_B64 = b64(image_bytes())


@pytest.mark.parametrize("cell, reason", [
    ("", f"{NOT_AN_IMAGE} (empty)"),
    ("-1", "image cell refers to row index -1, which is not in the file"),
    ("1.2.3", f"{NOT_AN_IMAGE} ({b64_error('1.2.3')})"),
    ("X12", f"{NOT_AN_IMAGE} ({b64_error('X12')})"),
    ("0" * 63 + "7", "image cell refers to row index 7, which is not in the file"),
    ("0" * 64 + "7", f"{NOT_AN_IMAGE} ({b64_error('0' * 64 + '7')})"),
    (PNG_B64[:20] + "*" + PNG_B64[20:], f"{NOT_AN_IMAGE} ({b64_error(PNG_B64[:20] + '*' + PNG_B64[20:])})"),
], ids=["empty", "negative", "two-dots", "letters", "64-digits", "65-digits", "stray-char"])
def test_mmbench_names_an_image_cell_that_is_neither_an_image_nor_an_index(tmp_path, cell, reason):
    row = lambda index, image: [index, "Which?", "nan", "red", "green", "", "", "A", "attribute", image]
    path = write_tsv(tmp_path / "mmbench.tsv", MMBENCH_HEADER[:10], [row(1, PNG_B64), row(2, cell)])
    assert error_of(load_mmbench, path, tmp_path / "cache") == refused(path, f"{path}:3: {reason}")


def test_mmbench_follows_a_chain_of_image_references_and_refuses_a_loop(tmp_path):
    row = lambda index, image: [index, "Which?", "nan", "red", "green", "", "", "A", "attribute", image]
    path = write_tsv(tmp_path / "mmbench.tsv", MMBENCH_HEADER[:10], [row(1, PNG_B64), row(2, "1"), row(3, "2")])
    assert [it.image for it in load_mmbench(path, tmp_path / "cache")] == [cached(tmp_path / "cache", image_bytes())] * 3
    path = write_tsv(tmp_path / "loop.tsv", MMBENCH_HEADER[:10], [row(4, "5"), row(5, "4")])
    assert error_of(load_mmbench, path, tmp_path / "cache") == refused(
        path, f"{path}:3: image cell refers to row index 4, which refers back to it")


# ---- ScienceQA ----------------------------------------------------------------------------
def json_lines(path: Path, opening: str, entries: list[str], closing: str, before: str = "") -> Path:
    """A JSON list or object with one entry a line, from line 2."""
    path.write_text(before + opening + "\n" + ",\n".join(entries) + "\n" + closing + "\n")
    return path


def human_gpt(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def test_scienceqa_in_llavas_layout_item(tmp_path):
    """The file may start with white space; a turn after the gpt turn is not read."""
    image = put(tmp_path / "images" / "test" / "5" / "image.png", image_bytes())
    turns = human_gpt(f"<image>\nContext: A picture.\nWhich is a mammal?\nA. cat\nB. fish\n{LETTER}", "The answer is A.")
    path = json_lines(tmp_path / "llava_test_CQM-A.json", "[", [
        json.dumps({"id": "5", "image": "5/image.png", "conversations": turns + [{"from": "human"}]})], "]", before="\n  ")
    [item] = load_scienceqa(path, tmp_path / "images" / "test")
    question = f"Context: A picture.\nWhich is a mammal?\nA. cat\nB. fish\n{LETTER}"
    assert (item.benchmark, item.qid, item.image, item.question, item.label) == (
        "scienceqa", "sqa-5", str(image.resolve()), question, "A")
    assert {k: v for k, v in item.extra.items() if k != "options"} == {
        "question_id": "sqa-5", "rotation": 0, "source_id": "5", "llava_prompt": f"<image>\n{question}"}
    assert len(item.extra["options"]) == 2


def test_scienceqa_in_llavas_layout_names_every_bad_entry(tmp_path):
    root = tmp_path / "images" / "test"
    for pid in ("4", "5", "6", "7", "9"):
        put(root / pid / "image.png", image_bytes())
    two = "<image>\nWhich is a mammal?\nA. cat\nB. fish"
    entry = lambda pid, conversations: json.dumps({"id": pid, "image": f"{pid}/image.png", "conversations": conversations})
    path = json_lines(tmp_path / "llava_test_CQM-A.json", "[", [
        "null",
        json.dumps({"image": "3/image.png", "conversations": human_gpt(two, "A")}),
        entry("4", human_gpt(two, "A")[:1]),
        entry("5", [{"from": "human", "value": two}, {"from": "gpt"}]),
        entry("6", human_gpt("<image>\nWhich is a mammal?\nA. cat", "A")),
        entry("7", human_gpt(two, "C")),
        entry("8", human_gpt(two, "A")),
        entry("9", "A")], "]")
    assert error_of(load_scienceqa, path, root) == refused(
        path, f"{path}:2: expected an object with id and conversations",
        f"{path}:3: expected an object with id and conversations",
        f"{path}:4: problem 4: expected a human turn and a gpt turn",
        f"{path}:5: problem 5: expected a human turn and a gpt turn",
        f"{path}:6: problem 6: expected option lines 'A. ...', 'B. ...' in the question",
        f"{path}:7: problem 7: answer 'C' names none of its 2 options",
        f"{path}:8: image 8/image.png not found in {root}",
        f"{path}:9: expected an object with id and conversations")


def problem(question, choices, answer, hint="", image="image.png", split="test", **more) -> str:
    """One problems.json entry, its keys in ScienceQA's order."""
    return json.dumps({"question": question, "choices": choices, "answer": answer, "hint": hint, "image": image,
                       **more, "split": split})


def test_scienceqa_problems_keep_the_image_questions_of_the_split_in_pid_order(tmp_path):
    root = tmp_path / "images"
    images = {pid: put(root / split / pid / "image.png", image_bytes()).resolve()
              for pid, split in (("5", "test"), ("7", "test"), ("8", "test"), ("12", "train"))}
    path = json_lines(tmp_path / "problems.json", "{", [
        '"7": ' + problem("Are these magnets attracted?", ["attract", "repel"], 1, subject="natural science"),
        '"5": ' + problem("Which is a mammal?", ["cat", "fish"], 0, "A picture of animals.", subject="natural science"),
        '"12": ' + problem("Which is a bird?", ["owl", "cow"], 0, split="train", subject="natural science"),
        '"3": ' + problem("Which word is a noun?", ["run", "dog"], 1, image=None, subject="language science"),
        '"8": ' + problem("What is 2 + 2?", ["1", "2", "3", "4", "5"], 3)], "}")

    def item(pid, shown, label, options, category):
        asked = f"{shown}\n{LETTER}"
        return Item("scienceqa", f"sqa-{pid}", str(images[pid]), asked, label,
                    {"question_id": f"sqa-{pid}", "rotation": 0, "options": options, "category": category,
                     "source_id": pid, "llava_prompt": f"<image>\n{asked}"})

    assert load_scienceqa(path, root) == [
        item("5", "Context: A picture of animals.\nWhich is a mammal?\nA. cat\nB. fish", "A", ["cat", "fish"],
             "natural science"),
        item("7", "Are these magnets attracted?\nA. attract\nB. repel", "B", ["attract", "repel"], "natural science"),
        item("8", "What is 2 + 2?\nA. 1\nB. 2\nC. 3\nD. 4\nE. 5", "D", ["1", "2", "3", "4", "5"], "")]


def test_scienceqa_problems_names_every_bad_problem(tmp_path):
    root = tmp_path / "images"
    for pid in ("2", "3", "4", "5", "7"):
        put(root / "test" / pid / "image.png", image_bytes())
    path = json_lines(tmp_path / "problems.json", "{", [
        '"1": ["not", "an", "object"]',
        '"2": ' + problem("Which?", ["only"], 0),
        '"3": ' + problem("Which?", ["a", "b", "c", "d", "e", "f"], 0),
        '"4": ' + problem("Which?", ["a", "b"], "1"),
        '"5": ' + problem("Which?", ["a", "b"], True),
        '"6": ' + problem("Which?", ["a", "b"], 0, image="gone.png"),
        '"7": ' + problem("Which?", "a, b", 0)], "}")
    assert error_of(load_scienceqa, path, root) == refused(
        path, f"{path}:2: problem 1: expected a JSON object",
        f"{path}:3: problem 2: choices must be a list of 2 to 5 options",
        f"{path}:4: problem 3: choices must be a list of 2 to 5 options",
        f"{path}:5: problem 4: answer '1' is not the index of one of its 2 choices",
        f"{path}:6: problem 5: answer True is not the index of one of its 2 choices",
        f"{path}:7: image test/6/gone.png not found in {root}",
        f"{path}:8: problem 7: choices must be a list of 2 to 5 options")
