"""Loaders for the real benchmark files, for users who have them.

Each returns `Item`s with absolute image paths, so the same answerer and scorers serve the
synthetic and the real benchmarks.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from pathlib import Path

from .benchmarks import SHORT, Item, multiple_choice_items
from .scoring import LETTERS


def _inside(root: Path, rel: str) -> Path:
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"image path {rel!r} escapes the image folder {root}")
    return path


def load_pope(jsonl: str | Path, image_dir: str | Path, split: str | None = None) -> list[Item]:
    """POPE's question files: one JSON per line with question_id, image, text, label."""
    jsonl, image_dir = Path(jsonl), Path(image_dir)
    split = split or next((s for s in ("adversarial", "popular", "random") if s in jsonl.stem), jsonl.stem)
    items = []
    for line_no, line in enumerate(jsonl.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = {"question_id", "image", "text", "label"} - set(row)
        if missing:
            raise ValueError(f"{jsonl}:{line_no}: missing field(s) {sorted(missing)}")
        items.append(Item("pope", f"pope-{split}-{row['question_id']}", str(_inside(image_dir, row["image"])),
                          f"{row['text']}\n{SHORT}", str(row["label"]).lower(), {"split": split}))
    return items


def load_mme(root: str | Path) -> list[Item]:
    """MME's release layout: one folder per subtask holding images and, beside each image
    (or under questions_answers_YN/), a .txt of `question<TAB>answer` lines."""
    root = Path(root)
    items = []
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        qa_dir = task_dir / "questions_answers_YN" if (task_dir / "questions_answers_YN").is_dir() else task_dir
        img_dir = task_dir / "images" if (task_dir / "images").is_dir() else task_dir
        for txt in sorted(qa_dir.glob("*.txt")):
            image = next((p for p in img_dir.glob(txt.stem + ".*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")), None)
            if image is None:
                raise FileNotFoundError(f"{txt}: no image named {txt.stem}.* in {img_dir}")
            for k, line in enumerate(l for l in txt.read_text().splitlines() if l.strip()):
                question, _, answer = line.rpartition("\t")
                if not question:
                    raise ValueError(f"{txt}: expected 'question<TAB>answer', got {line!r}")
                items.append(Item("mme", f"mme-{task_dir.name}-{txt.stem}-{k}", str(image.resolve()),
                                  question.strip(), answer.strip().lower(), {"subtask": task_dir.name}))
    return items


def load_mmbench(tsv: str | Path, cache_dir: str | Path, circular: bool = True) -> list[Item]:
    """MMBench's tsv: index, question, hint, A..D, answer, category, image (base64)."""
    tsv, cache_dir = Path(tsv), Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    csv.field_size_limit(1 << 30)
    items = []
    with tsv.open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            data = base64.b64decode(row["image"])
            image = cache_dir / f"{hashlib.sha256(data).hexdigest()[:16]}.png"
            if not image.exists():
                from PIL import Image

                Image.open(io.BytesIO(data)).convert("RGB").save(image)
            options = [row[k] for k in LETTERS[:4] if row.get(k) not in (None, "", "nan")]
            hint = row.get("hint") or ""
            stem = f"{hint}\n{row['question']}" if hint and hint != "nan" else row["question"]
            qid = f"mmbench-{row['index']}"
            extra = {"category": row.get("category", "")}
            made = multiple_choice_items("mmbench", qid, str(image), stem, options, row["answer"].strip(), extra)
            items += made if circular else made[:1]
    return items


def load_scienceqa(problems_json: str | Path, image_root: str | Path, split: str = "test") -> list[Item]:
    """ScienceQA's problems.json; only questions with an image (ScienceQA-IMG)."""
    problems = json.loads(Path(problems_json).read_text())
    image_root = Path(image_root)
    items = []
    for pid, p in sorted(problems.items()):
        if p.get("split") != split or not p.get("image"):
            continue
        image = _inside(image_root, f"{split}/{pid}/{p['image']}")
        hint = p.get("hint") or ""
        stem = f"Context: {hint}\n{p['question']}" if hint else p["question"]
        answer = LETTERS[int(p["answer"])]
        items += multiple_choice_items("scienceqa", f"sqa-{pid}", str(image), stem, list(p["choices"]), answer,
                                       {"category": p.get("subject", "")})[:1]
    return items
