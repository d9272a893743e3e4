"""Loaders for the real benchmark files, for users who have them.

Each returns `Item`s with absolute image paths, so the same answerer and scorers serve the
synthetic and the real benchmarks. Each question is asked as LLaVA-1.5's eval scripts ask it
(the benchmark's instruction on a line of its own after the question), and each item keeps
what LLaVA's answer files need (`source_id`, `llava_prompt`) so that `answer_files` can write
predictions the published scorers read unchanged. Each checks its input before anything is scored: an
image that is not there, a label outside the benchmark's answers, a line or row that does not
parse. A benchmark scored on part of its file, or on a label read wrongly ("maybe" scored as
"no"), gives a number that looks right and is not, so every problem is an error that names
the file and the line (`DataFileError`), and the file is refused as a whole.
"""
from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import re
from pathlib import Path

from ..io import DataFileError, iter_json_items, read_text_file
from ..vocab import LETTER, SHORT
from .suites import Item
from .scoring import LETTERS

YES_NO = ("yes", "no")
POPE_SPLITS = ("random", "popular", "adversarial")
# MME's official calculation (eval_tool/calculation.py): perception is scored out of 2000,
# cognition out of 800, and the two are reported apart
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
# instructions the published files already carry, replaced by the configured one
KNOWN_INSTRUCTIONS = (SHORT, LETTER, "Please answer yes or no.")
def mmbench_index(cell) -> int | None:
    """A row's index as MMBench's tsv writes it ("12", "12.0"), or None (text, nan, inf, 1.5)."""
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return int(value) if value.is_integer() else None


MMBENCH_ROUND = 1_000_000  # VLMEvalKit / lmms-eval: a row's question is index % 1e6 (g_index)
SHOWN_PROBLEMS = 10


class Problems:
    """The problems found in one file; `check` raises them together, naming file and lines."""

    def __init__(self, path: Path):
        self.path, self.found = path, []

    def add(self, line: int | None, reason: str) -> None:
        self.found.append(f"{self.path}:{line}: {reason}" if line else f"{self.path}: {reason}")

    def check(self) -> None:
        if not self.found:
            return
        more = len(self.found) - SHOWN_PROBLEMS
        shown = "\n  ".join(self.found[:SHOWN_PROBLEMS]) + (f"\n  ... and {more} more" if more > 0 else "")
        raise DataFileError(self.path, None, f"{len(self.found)} problem(s), the file is refused:\n  {shown}")


def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"image path {rel!r} escapes the image folder {root}")
    return path


def _image(root: Path, rel, problems: Problems, line: int | None) -> Path | None:
    """The image file `rel` under `root`, or None with the problem noted."""
    try:
        path = _inside(root, str(rel))
    except ValueError as exc:
        problems.add(line, str(exc))
        return None
    if not path.is_file():
        problems.add(line, f"image {rel} not found in {root}")
        return None
    return path


def ask(question: str, prompt: str) -> str:
    """The question as LLaVA asks it: any instruction the file already carries is replaced by
    `prompt`, on a line of its own."""
    text = question.strip()
    changed = True
    while changed:
        changed = False
        for known in KNOWN_INSTRUCTIONS:
            if text.endswith(known):
                text, changed = text[: -len(known)].rstrip(), True
    return f"{text}\n{prompt}" if prompt else text


def _jsonl_rows(path: Path, problems: Problems, required: set[str]) -> list[tuple[int, dict]]:
    rows = []
    for line_no, line in enumerate(read_text_file(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            problems.add(line_no, f"not valid JSON ({exc})")
            continue
        if not isinstance(row, dict):
            problems.add(line_no, "expected a JSON object")
            continue
        missing = required - set(row)
        if missing:
            problems.add(line_no, f"missing field(s) {sorted(missing)}")
            continue
        rows.append((line_no, row))
    return rows


def _split_of(path: Path) -> str:
    return next((s for s in ("adversarial", "popular", "random") if s in path.stem), path.stem)


def _pope_labels(path: Path, problems: Problems) -> list[tuple[int, dict, str]]:
    """POPE's label file: (line, row, label), each label checked to be yes or no."""
    out, seen = [], {}
    for line_no, row in _jsonl_rows(path, problems, {"question_id", "image", "text", "label"}):
        label = str(row["label"]).strip().lower()
        if label not in YES_NO:
            problems.add(line_no, f"label {row['label']!r} is not yes or no")
            continue
        qid = str(row["question_id"])
        if qid in seen:
            problems.add(line_no, f"question_id {qid} repeats line {seen[qid]}")
        seen[qid] = line_no
        out.append((line_no, row, label))
    return out


def load_pope(jsonl: str | Path, image_dir: str | Path, split: str | None = None, prompt: str = SHORT) -> list[Item]:
    """One of POPE's own files (coco_pope_<split>.json): one JSON per line with question_id,
    image, text, label."""
    jsonl, image_dir = Path(jsonl), Path(image_dir)
    split = split or _split_of(jsonl)
    problems = Problems(jsonl)
    items = []
    for line_no, row, label in _pope_labels(jsonl, problems):
        image = _image(image_dir, row["image"], problems, line_no)
        if image is not None:
            items.append(_pope_item(split, row, image, label, prompt))
    problems.check()
    return items


def _pope_item(split: str, row: dict, image: Path, label: str, prompt: str) -> Item:
    """One POPE question, from POPE's own file or LLaVA's question file alike."""
    question = ask(row["text"], prompt)
    return Item("pope", f"pope-{split}-{row['question_id']}", str(image), question, label,
                {"split": split, "source_id": row["question_id"], "llava_prompt": question})


def load_pope_llava(questions: str | Path, labels: dict[str, str | Path], image_dir: str | Path,
                    prompt: str = SHORT) -> list[Item]:
    """LLaVA's layout: one question file for the three splits (llava_pope_test.jsonl, each line
    with question_id, image, text and `category`, no label) and POPE's label files
    (coco_pope_<category>.json). LLaVA's eval_pope.py pairs them by order within a category,
    so this does too, and refuses a pair whose image or question differ."""
    questions, image_dir = Path(questions), Path(image_dir)
    problems = Problems(questions)
    rows = _jsonl_rows(questions, problems, {"question_id", "image", "text", "category"})
    problems.check()
    by_split: dict[str, list[tuple[int, dict]]] = {}
    for line_no, row in rows:
        by_split.setdefault(str(row["category"]), []).append((line_no, row))
    unknown = set(by_split) - set(labels)
    if unknown:
        raise DataFileError(questions, None, f"categories {sorted(unknown)} have no label file in "
                                             f"evaluate.suites.pope.labels (named: {sorted(labels)})")
    items, seen = [], {}
    for split in [s for s in POPE_SPLITS if s in labels]:
        label_path = Path(labels[split])
        label_problems = Problems(label_path)
        truth = _pope_labels(label_path, label_problems)
        label_problems.check()
        asked = by_split.get(split, [])
        if len(asked) != len(truth):
            problems.add(None, f"{len(asked)} questions of category {split}, but {len(truth)} labels in {label_path}")
            continue
        for (line_no, row), (_, true_row, label) in zip(asked, truth):
            qid = str(row["question_id"])
            if qid in seen:
                problems.add(line_no, f"question_id {qid} repeats line {seen[qid]}")
            seen[qid] = line_no
            if Path(str(row["image"])).name != Path(str(true_row["image"])).name or \
                    ask(row["text"], "") != ask(true_row["text"], ""):
                problems.add(line_no, f"does not match its label line in {label_path.name} "
                                      f"({true_row['image']}: {true_row['text']!r})")
                continue
            image = _image(image_dir, row["image"], problems, line_no)
            if image is not None:
                items.append(_pope_item(split, row, image, label, prompt))
    problems.check()
    return items


def mme_group(subtask: str) -> str | None:
    return "perception" if subtask in MME_PERCEPTION else "cognition" if subtask in MME_COGNITION else None


def load_mme(root: str | Path, prompt: str = SHORT) -> list[Item]:
    """MME's release layout (MME_Benchmark_release_version): one folder per subtask holding
    images and, beside each image (or under questions_answers_YN/ with the images under
    images/), a .txt of `question<TAB>answer` lines. MME's " Please answer yes or no." is
    replaced by `prompt`, as LLaVA's llava_mme.jsonl does."""
    root = Path(root)
    if not root.is_dir():
        raise DataFileError(root, None, "MME folder not found")
    items = []
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        group = mme_group(task_dir.name)
        if group is None:
            raise DataFileError(task_dir, None, f"not an MME subtask; MME's are {list(MME_PERCEPTION + MME_COGNITION)}")
        qa_dir = task_dir / "questions_answers_YN" if (task_dir / "questions_answers_YN").is_dir() else task_dir
        img_dir = task_dir / "images" if (task_dir / "images").is_dir() else task_dir
        for txt in sorted(qa_dir.glob("*.txt")):
            problems = Problems(txt)
            image = next((p for p in sorted(img_dir.glob(txt.stem + ".*"))
                          if p.suffix.lower() in (".png", ".jpg", ".jpeg")), None)
            if image is None:
                problems.add(None, f"no image named {txt.stem}.* in {img_dir}")
            k = 0
            for line_no, line in enumerate(read_text_file(txt).split("\n"), 1):
                if not line.strip():
                    continue
                question, _, answer = line.rstrip("\r").rpartition("\t")
                answer = answer.strip().lower()
                if not question.strip():
                    problems.add(line_no, f"expected 'question<TAB>answer', got {line!r}")
                elif answer not in YES_NO:
                    problems.add(line_no, f"answer {answer!r} is not yes or no")
                elif image is not None:
                    asked = ask(question, prompt)
                    items.append(Item("mme", f"mme-{task_dir.name}-{txt.stem}-{k}", str(image.resolve()), asked, answer,
                                      {"subtask": task_dir.name, "group": group,
                                       "source_id": f"{task_dir.name}/{image.name}", "llava_prompt": asked}))
                    k += 1
            problems.check()
    return items


def _nan(value) -> bool:
    return value is None or str(value).strip().lower() in ("", "nan", "none")


def load_mmbench(tsv: str | Path, cache_dir: str | Path, prompt: str = LETTER) -> list[Item]:
    """MMBench's tsv (index, question, hint, A..D, answer, category, l2-category, image), as
    VLMEvalKit and lmms-eval read it: the file already holds each question's circular copies
    (index + k * 1e6, options rotated), so it is never rotated again; a question is the group
    of rows sharing `index % 1e6`; an image cell is decoded only when it holds an image (a copy's
    cell may hold the index of the row whose image it shares); the test split has no `answer`
    (its items are answered and written out, not scored)."""
    # the decoded images are named by absolute path, as every loader names its images: evaluate
    # reads an item's image under the run's data root, which an absolute path overrides (a
    # relative cache, the default `.reverie/mmbench_images`, was looked for under data/)
    tsv, cache_dir = Path(tsv), Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    csv.field_size_limit(1 << 30)
    problems = Problems(tsv)
    reader = csv.DictReader(io.StringIO(read_text_file(tsv), newline=""), delimiter="\t")
    missing = {"index", "question", "A", "B", "image"} - set(reader.fieldnames or [])
    if missing:
        raise DataFileError(tsv, 1, f"missing column(s) {sorted(missing)} in the header")
    labelled = "answer" in (reader.fieldnames or [])
    rows, by_index = [], {}
    for row in reader:
        line = reader.line_num
        index = mmbench_index(row["index"])
        if index is None:
            problems.add(line, f"index {row['index']!r} is not a whole number")
            continue
        if index in by_index:
            problems.add(line, f"index {index} repeats line {by_index[index][0]}")
            continue
        by_index[index] = (line, row)
        rows.append((line, index, row))
    images: dict[int, str] = {}

    def image_of(index: int, trail: tuple = ()) -> str | None:
        if index in images:
            return images[index]
        line, row = by_index[index]
        cell = (row["image"] or "").strip()
        if len(cell) <= 64 and cell.lstrip("-").replace(".", "", 1).isdigit():  # a reference to another row
            ref = int(float(cell))
            if ref not in by_index or ref in trail:
                problems.add(line, f"image cell refers to row index {ref}, which " +
                             ("refers back to it" if ref in trail else "is not in the file"))
                return None
            images[index] = image_of(ref, trail + (index,))
            return images[index]
        try:
            data = base64.b64decode(cell, validate=True)
            if not data:
                raise ValueError("empty")
        except (binascii.Error, ValueError) as exc:
            problems.add(line, f"image cell is neither base64 image data nor another row's index ({exc})")
            images[index] = None
            return None
        image = cache_dir / f"{hashlib.sha256(data).hexdigest()[:16]}.png"
        if not image.exists():
            from PIL import Image, UnidentifiedImageError

            try:
                Image.open(io.BytesIO(data)).convert("RGB").save(image)
            except (UnidentifiedImageError, OSError) as exc:
                problems.add(line, f"image cell does not decode as an image ({exc})")
                images[index] = None
                return None
        images[index] = str(image)
        return images[index]

    items = []
    for line, index, row in rows:
        options = []
        for letter in LETTERS[:4]:  # LLaVA's get_options: the options up to the first empty one
            if letter not in row or _nan(row[letter]):
                break
            options.append(str(row[letter]))
        answer = (row.get("answer") or "").strip() if labelled else ""
        if labelled and answer not in tuple(LETTERS[: len(options)]):  # letters, not a substring: "" or "AB" is none
            problems.add(line, f"answer {answer!r} is not the letter of one of its {len(options)} options")
            continue
        image = image_of(index)
        if image is None:
            continue
        stem = row["question"] if _nan(row.get("hint")) else f"{row['hint']}\n{row['question']}"
        shown = stem + "".join(f"\n{LETTERS[i]}. {o}" for i, o in enumerate(options))
        items.append(Item("mmbench", f"mmbench-{index}", image, f"{shown}\n{prompt}" if prompt else shown, answer,
                          {"question_id": f"mmbench-{index % MMBENCH_ROUND}", "rotation": index // MMBENCH_ROUND,
                           "options": options, "category": row.get("category") or "",
                           "l2_category": row.get("l2-category") or "", "source_id": index,
                           "llava_prompt": shown}))
    problems.check()
    return items


def _llava_letter(text: str, n_options: int) -> str | None:
    from .scoring import scienceqa_choice

    return scienceqa_choice(text, n_options)


def load_scienceqa(questions: str | Path, image_root: str | Path, split: str = "test", prompt: str = LETTER) -> list[Item]:
    """ScienceQA-IMG: the questions with an image. Two layouts: LLaVA's test file
    (llava_test_CQM-A.json: a list of {id, image, conversations}, the human turn holding the
    context, question and `A. ...` option lines, the gpt turn the answer), with `image_root`
    its images/test folder; or ScienceQA's problems.json, with `image_root` the folder
    holding <split>/<pid>/<image>."""
    questions = Path(questions)
    first = read_text_file(questions).lstrip()[:1]
    if first == "[":
        return _load_scienceqa_llava(questions, Path(image_root), prompt)
    return _load_scienceqa_problems(questions, Path(image_root), split, prompt)


def _load_scienceqa_llava(path: Path, image_root: Path, prompt: str) -> list[Item]:
    problems = Problems(path)
    items = []
    for line, _, entry in iter_json_items(path):
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("conversations"), list):
            problems.add(line, "expected an object with id and conversations")
            continue
        if not entry.get("image"):
            continue  # ScienceQA-IMG: only the questions with an image
        pid, turns = str(entry["id"]), entry["conversations"]
        if len(turns) < 2 or not all(isinstance(t, dict) and "value" in t for t in turns[:2]):
            problems.add(line, f"problem {pid}: expected a human turn and a gpt turn")
            continue
        text = str(turns[0]["value"]).replace("<image>", "").strip()
        options = [m.group(1) for m in re.finditer(r"^([A-E])\. ", text, re.M)]
        if len(options) < 2 or options != list(LETTERS[: len(options)]):
            problems.add(line, f"problem {pid}: expected option lines 'A. ...', 'B. ...' in the question")
            continue
        answer = _llava_letter(str(turns[1]["value"]), len(options))
        if answer is None:
            problems.add(line, f"problem {pid}: answer {turns[1]['value']!r} names none of its {len(options)} options")
            continue
        image = _image(image_root, entry["image"], problems, line)
        if image is None:
            continue
        asked = ask(text, prompt)
        items.append(Item("scienceqa", f"sqa-{pid}", str(image), asked, answer,
                          {"question_id": f"sqa-{pid}", "rotation": 0, "options": options, "source_id": pid,
                           "llava_prompt": f"<image>\n{asked}"}))
    problems.check()
    return items


def _load_scienceqa_problems(problems_json: Path, image_root: Path, split: str, prompt: str) -> list[Item]:
    problems = Problems(problems_json)
    items = []
    for line, pid, p in sorted(iter_json_items(problems_json), key=lambda item: str(item[1])):
        if not isinstance(p, dict):
            problems.add(line, f"problem {pid}: expected a JSON object")
            continue
        if p.get("split") != split or not p.get("image"):
            continue
        choices = p.get("choices")
        if not isinstance(choices, list) or not 2 <= len(choices) <= 5:
            problems.add(line, f"problem {pid}: choices must be a list of 2 to 5 options")
            continue
        answer = p.get("answer")
        if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
            problems.add(line, f"problem {pid}: answer {answer!r} is not the index of one of its {len(choices)} choices")
            continue
        image = _image(image_root, f"{split}/{pid}/{p['image']}", problems, line)
        if image is None:
            continue
        hint = p.get("hint") or ""
        stem = f"Context: {hint}\n{p['question']}" if hint else p["question"]
        shown = stem + "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(choices))
        asked = ask(shown, prompt)
        items.append(Item("scienceqa", f"sqa-{pid}", str(image), asked, LETTERS[answer],
                          {"question_id": f"sqa-{pid}", "rotation": 0, "options": [str(c) for c in choices],
                           "category": p.get("subject", ""), "source_id": str(pid),
                           "llava_prompt": f"<image>\n{asked}"}))
    problems.check()
    return items
