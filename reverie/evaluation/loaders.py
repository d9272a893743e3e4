"""Loaders for the real benchmark files, for users who have them.

Each returns `Item`s with absolute image paths, so the same answerer and scorers serve the
synthetic and the real benchmarks. Each checks its input before anything is scored: an
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
from pathlib import Path

from ..io import DataFileError, iter_json_items, read_text_file
from .suites import SHORT, Item, multiple_choice_items
from .scoring import LETTERS

YES_NO = ("yes", "no")
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


def load_pope(jsonl: str | Path, image_dir: str | Path, split: str | None = None) -> list[Item]:
    """POPE's question files: one JSON per line with question_id, image, text, label."""
    jsonl, image_dir = Path(jsonl), Path(image_dir)
    split = split or next((s for s in ("adversarial", "popular", "random") if s in jsonl.stem), jsonl.stem)
    problems = Problems(jsonl)
    items, seen = [], {}
    for line_no, line in enumerate(read_text_file(jsonl).split("\n"), 1):
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
        missing = {"question_id", "image", "text", "label"} - set(row)
        if missing:
            problems.add(line_no, f"missing field(s) {sorted(missing)}")
            continue
        label = str(row["label"]).strip().lower()
        if label not in YES_NO:
            problems.add(line_no, f"label {row['label']!r} is not yes or no")
        qid = str(row["question_id"])
        if qid in seen:
            problems.add(line_no, f"question_id {qid} repeats line {seen[qid]}")
        seen[qid] = line_no
        image = _image(image_dir, row["image"], problems, line_no)
        if image is not None and label in YES_NO:
            items.append(Item("pope", f"pope-{split}-{qid}", str(image), f"{row['text']}\n{SHORT}", label,
                              {"split": split}))
    problems.check()
    return items


def load_mme(root: str | Path) -> list[Item]:
    """MME's release layout: one folder per subtask holding images and, beside each image
    (or under questions_answers_YN/), a .txt of `question<TAB>answer` lines."""
    root = Path(root)
    if not root.is_dir():
        raise DataFileError(root, None, "MME folder not found")
    items = []
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        qa_dir = task_dir / "questions_answers_YN" if (task_dir / "questions_answers_YN").is_dir() else task_dir
        img_dir = task_dir / "images" if (task_dir / "images").is_dir() else task_dir
        for txt in sorted(qa_dir.glob("*.txt")):
            problems = Problems(txt)
            image = next((p for p in img_dir.glob(txt.stem + ".*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")), None)
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
                    items.append(Item("mme", f"mme-{task_dir.name}-{txt.stem}-{k}", str(image.resolve()),
                                      question.strip(), answer, {"subtask": task_dir.name}))
                    k += 1
            problems.check()
    return items


def load_mmbench(tsv: str | Path, cache_dir: str | Path, circular: bool = True) -> list[Item]:
    """MMBench's tsv: index, question, hint, A..D, answer, category, image (base64)."""
    tsv, cache_dir = Path(tsv), Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    csv.field_size_limit(1 << 30)
    problems = Problems(tsv)
    items = []
    text = read_text_file(tsv)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
    missing = {"index", "question", "A", "B", "answer", "image"} - set(reader.fieldnames or [])
    if missing:
        raise DataFileError(tsv, 1, f"missing column(s) {sorted(missing)} in the header")
    for row in reader:
        line = reader.line_num
        options = [row[k] for k in LETTERS[:4] if row.get(k) not in (None, "", "nan")]
        answer = (row.get("answer") or "").strip()
        if answer not in LETTERS[: len(options)]:
            problems.add(line, f"answer {answer!r} is not the letter of one of its {len(options)} options")
            continue
        try:
            data = base64.b64decode(row["image"] or "", validate=True)
            if not data:
                raise ValueError("empty")
        except (binascii.Error, ValueError) as exc:
            problems.add(line, f"image cell is not base64 image data ({exc})")
            continue
        image = cache_dir / f"{hashlib.sha256(data).hexdigest()[:16]}.png"
        if not image.exists():
            from PIL import Image, UnidentifiedImageError

            try:
                Image.open(io.BytesIO(data)).convert("RGB").save(image)
            except (UnidentifiedImageError, OSError) as exc:
                problems.add(line, f"image cell does not decode as an image ({exc})")
                continue
        hint = row.get("hint") or ""
        stem = f"{hint}\n{row['question']}" if hint and hint != "nan" else row["question"]
        qid = f"mmbench-{row['index']}"
        extra = {"category": row.get("category", "")}
        made = multiple_choice_items("mmbench", qid, str(image), stem, options, answer, extra)
        items += made if circular else made[:1]
    problems.check()
    return items


def load_scienceqa(problems_json: str | Path, image_root: str | Path, split: str = "test") -> list[Item]:
    """ScienceQA's problems.json; only questions with an image (ScienceQA-IMG)."""
    problems_json, image_root = Path(problems_json), Path(image_root)
    problems = Problems(problems_json)
    items = []
    for line, pid, p in sorted(iter_json_items(problems_json), key=lambda item: str(item[1])):
        if not isinstance(p, dict):
            problems.add(line, f"problem {pid}: expected a JSON object")
            continue
        if p.get("split") != split or not p.get("image"):
            continue
        choices = p.get("choices")
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
            problems.add(line, f"problem {pid}: choices must be a list of 2 to {len(LETTERS)} options")
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
        items += multiple_choice_items("scienceqa", f"sqa-{pid}", str(image), stem, [str(c) for c in choices],
                                       LETTERS[answer], {"category": p.get("subject", "")})[:1]
    problems.check()
    return items
