"""The released REVERIE annotations as records, entry by entry.

Two layouts are read, entry by entry, from one JSON list:

- the flat records of the authors' generation scripts (`rationale_instruct_data_with_judge.json`:
  image, question, correct_answer, confusing_answer, correct_rationale, incorrect_rationale,
  and their judges' verdicts), which is also what `export_reverie` writes;
- the published training instances (`reverie.json` on the Hugging Face hub, 254k of them),
  each a LLaVA conversation: the question and its correct answer, then the positive prompt and
  the positive rationale, or the negative prompt naming a confusing answer and the negative
  rationale. The instances of one image and question are paired back into records: one per
  confusing answer, each with the question's positive rationale.

Every entry that cannot be used is quarantined with its rule, its reason and its file and
line, and the rest imported: an image path that is absolute or escapes the images root; a
missing or empty field; an image that is missing or does not decode; a correct answer equal
to the confusing one; text outside validate's length bounds (the same rules, so that validate
does not fail on what the import let through); a multiple-choice question without readable
options; instances that do not pair; a contradiction the release's own judge flagged. Exact
duplicates are dropped to the quarantine too, with the line of the entry they repeat. Images
whose path contains an `exclude_images` entry (default `ocr_vqa`) are dropped by rule, as the
authors' filter (data_filter.py) drops them: the OCR-VQA book covers are not in the release's
image list. Each record's id is derived from its content, so it is the same on every import
and in any order.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .conversations import strip_image_token
from .data_import import (LETTERS, UnsafeImagePath, infer_question_type, option_letter, safe_image_path, split_for,
                          split_options)
from .io import iter_json_items
from .records import PUBLISHED_FIELDS, QUESTION_TYPES, length_problems

POSITIVE_PROMPT = "Explain why. Including any necessary facts or knowledge."
NEGATIVE_PROMPT = "Explain why this answer is wrong: {confusing_answer}. Including any necessary facts or knowledge."
JUDGE_FIELDS = ("gemini_pro_judge", "chatgpt_judge", "gpt3.5_judge")


def _norm(text) -> str:
    return " ".join(str(text).lower().strip().rstrip(".").split())


def _words(text: str) -> str:
    """A pattern for `text` that tolerates any whitespace and case."""
    return r"\s+".join(re.escape(w) for w in text.split())


def negative_pattern(template: str) -> re.Pattern:
    """The negative prompt with its `{confusing_answer}` captured, in any case and spacing,
    its final full stop optional."""
    head, _, tail = template.partition("{confusing_answer}")
    return re.compile(rf"^\s*{_words(head)}\s*(.+?)\s*{_words(tail.rstrip().rstrip('.'))}\.?\s*$", re.I | re.S)


def record_id(fields: dict) -> str:
    """The content's digest: equal content, equal id; any change, another id."""
    payload = json.dumps({f: fields[f] for f in PUBLISHED_FIELDS}, sort_keys=True, ensure_ascii=False)
    return "rv-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


@dataclass
class Candidate:
    """A record in the making, with where it came from."""

    fields: dict
    lines: list[int]
    index: int
    extra: dict = field(default_factory=dict)


class ReleaseReader:
    """One pass over the file; `records` and `quarantined` are filled in file order."""

    def __init__(self, json_path, images_root, eval_fraction: float, lengths, exclude, positive_prompt,
                 negative_prompt):
        self.path, self.root = Path(json_path), Path(images_root)
        self.eval_fraction, self.lengths, self.exclude = eval_fraction, lengths, tuple(exclude)
        self.positive = _norm(positive_prompt)
        self.negative = negative_pattern(negative_prompt)
        self.records: list[dict] = []
        self.quarantined: list[dict] = []
        self.images: dict[Path, str | None] = {}  # resolved path -> problem (None: decodes)
        self.groups: dict[tuple[str, str], dict] = {}  # (image, question) -> positives and negatives

    # ---- quarantine ---------------------------------------------------------------------
    def refuse(self, rule: str, reason: str, line: int, index: int, row) -> None:
        self.quarantined.append({"rule": rule, "reason": reason, "source": f"{self.path}:{line}", "line": line,
                                 "index": index, "row": row})

    def image_problem(self, rel) -> tuple[str, str] | None:
        """(rule, reason) when the image cannot be used, else None."""
        rel = str(rel)
        hit = next((e for e in self.exclude if e in rel), None)
        if hit is not None:
            return ("excluded_image", f"image {rel} matches generate.reverie_json.exclude_images entry {hit!r} "
                                      "(dropped by rule, as the authors' filter drops them)")
        try:
            path = safe_image_path(self.root, rel)
        except UnsafeImagePath as exc:
            return "unsafe_image_path", str(exc)
        if path not in self.images:
            self.images[path] = self._decode_problem(path)
        problem = self.images[path]
        if problem is None:
            return None
        return ("image_missing", f"image {rel} not found under {self.root}") if problem == "missing" else \
            ("image_undecodable", f"image {rel} does not decode ({problem})")

    @staticmethod
    def _decode_problem(path: Path) -> str | None:
        """Decoded as validate decodes it: a file the student could not read is refused here."""
        if not path.is_file():
            return "missing"
        from PIL import Image

        try:
            with Image.open(path) as image:
                image.load()
        except Exception as exc:  # PIL raises many kinds for a broken file
            return f"{type(exc).__name__}: {exc}"[:200]
        return None

    # ---- the pass -------------------------------------------------------------------------
    def read(self) -> tuple[list[dict], list[dict]]:
        candidates: list[Candidate] = []
        for line, index, row in iter_json_items(self.path):
            if not isinstance(row, dict):
                self.refuse("not_an_object", "not a JSON object", line, index, row)
                continue
            if "conversations" in row:
                self.conversation(row, line, index)
                continue
            missing = [f for f in PUBLISHED_FIELDS if not str(row.get(f) or "").strip()]
            if missing:
                self.refuse("missing_field", f"missing or empty field(s): {', '.join(missing)}", line, index, row)
                continue
            problem = self.image_problem(row["image"])
            if problem:
                self.refuse(*problem, line, index, row)
                continue
            flagged = next((k for k in JUDGE_FIELDS if _norm(row.get(k, "")).startswith("yes")), None)
            if flagged:
                self.refuse("release_judge", f"the release's own judge ({flagged}) found the rationales contradict "
                                             "each other", line, index, row)
                continue
            fields = {f: str(row[f]).strip() for f in PUBLISHED_FIELDS}
            extra = {k: v for k, v in row.items() if k not in (*PUBLISHED_FIELDS, "id")}
            candidates.append(Candidate(fields, [line], index, {"source_id": row.get("id"), "source_fields": extra,
                                                                 "question_type": row.get("question_type"),
                                                                 "options": row.get("options")}))
        candidates += self.pair_conversations()
        candidates.sort(key=lambda c: c.lines[0])
        seen: dict[str, int] = {}
        for c in candidates:
            self.finish(c, seen)
        self.quarantined.sort(key=lambda q: q["line"])
        return self.records, self.quarantined

    def conversation(self, row: dict, line: int, index: int) -> None:
        """One training instance of the published release, kept until its pair is known."""
        turns = row.get("conversations")
        roles = [str(t.get("from", "")).lower() if isinstance(t, dict) else "" for t in turns or []]
        if len(roles) != 4 or roles[0::2] != ["human", "human"] or roles[1::2] != ["gpt", "gpt"]:
            self.refuse("unreadable_conversation", "expected four turns: human question, gpt answer, human prompt, "
                                                   "gpt rationale", line, index, row)
            return
        question, answer, prompt, rationale = (str(t.get("value") or "").strip() for t in turns)
        question = strip_image_token(question)
        missing = [name for name, v in (("image", row.get("image")), ("question", question), ("answer", answer),
                                        ("rationale", rationale)) if not str(v or "").strip()]
        if missing:
            self.refuse("missing_field", f"missing or empty field(s): {', '.join(missing)}", line, index, row)
            return
        problem = self.image_problem(row["image"])
        if problem:
            self.refuse(*problem, line, index, row)
            return
        group = self.groups.setdefault((str(row["image"]), question), {"positive": [], "negative": []})
        if _norm(prompt) == self.positive:
            group["positive"].append((answer, rationale, line, index, row))
            return
        negative = self.negative.match(prompt)
        if negative is None:
            self.refuse("unknown_prompt", "the second question is neither generate.reverie_json.positive_prompt nor "
                                          "negative_prompt", line, index, row)
            return
        group["negative"].append((answer, negative.group(1).strip(), rationale, line, index, row))

    def pair_conversations(self) -> list[Candidate]:
        """Each negative instance with the positive instance of its question and answer."""
        out = []
        for (image, question), group in self.groups.items():
            positives = {}
            for answer, rationale, line, index, row in group["positive"]:
                if _norm(answer) in positives:
                    self.refuse("duplicate", f"a second positive rationale for this question and answer (first at "
                                             f"line {positives[_norm(answer)][2]})", line, index, row)
                    continue
                positives[_norm(answer)] = (answer, rationale, line, index, row)
            used = set()
            for answer, confusing, rationale, line, index, row in group["negative"]:
                match = positives.get(_norm(answer))
                if match is None and len(positives) == 1:  # the release may answer the negative turn otherwise
                    match = next(iter(positives.values()))
                if match is None:
                    self.refuse("unpaired", "no positive instance with this image, question and answer", line, index, row)
                    continue
                used.add(_norm(match[0]))
                fields = {"image": image, "question": question, "correct_answer": match[0], "confusing_answer": confusing,
                          "correct_rationale": match[1], "incorrect_rationale": rationale}
                out.append(Candidate(fields, [match[2], line], index, {"source_id": row.get("id")}))
            for key, (answer, rationale, line, index, row) in positives.items():
                if key not in used:
                    self.refuse("unpaired", "no negative instance (confusing answer) for this image and question",
                                line, index, row)
        return out

    def finish(self, c: Candidate, seen: dict[str, int]) -> None:
        """Format, duplicates, answers and lengths, then the record."""
        f = c.fields
        line, row = c.lines[-1], {**f, **({"lines": c.lines} if len(c.lines) > 1 else {})}
        rid = record_id(f)
        if rid in seen:
            self.refuse("duplicate", f"exact duplicate of the entry at line {seen[rid]}", line, c.index, row)
            return
        seen[rid] = line
        if _norm(f["correct_answer"]) == _norm(f["confusing_answer"]):
            self.refuse("answers_equal", "the correct answer equals the confusing answer", line, c.index, row)
            return
        kind = c.extra.get("question_type")
        options = c.extra.get("options")
        if kind not in QUESTION_TYPES:
            kind = infer_question_type(f["question"], f["correct_answer"], options, f["confusing_answer"])
        answers = {}
        if kind == "multiple_choice":
            options = options if isinstance(options, list) and options else split_options(f["question"])[1]
            if not 2 <= len(options) <= len(LETTERS):
                self.refuse("no_options", "a multiple-choice question whose options cannot be read", line, c.index, row)
                return
            letter = option_letter(f["correct_answer"], options)
            if letter is None:
                self.refuse("answer_not_an_option", f"the correct answer {f['correct_answer']!r} is not one of the "
                                                     "options", line, c.index, row)
                return
            # answers as option letters, as LLaVA's multiple-choice instruction asks
            answers = {"correct_answer": letter,
                       "confusing_answer": option_letter(f["confusing_answer"], options) or f["confusing_answer"]}
        else:
            options = None
        record = {**f, **answers}
        problems = length_problems(record, self.lengths) if self.lengths is not None else []
        if problems:
            self.refuse("length", "text outside validate's bounds: " + "; ".join(problems), line, c.index, row)
            return
        image = Path(f["image"]).as_posix()
        self.records.append({
            "id": rid,
            **record,
            "image": image,
            "question_type": kind,
            "reasoning": "multi_step",
            "options": options,
            "split": split_for(image, self.eval_fraction),  # by image: no image in both splits
            "judge": {"consistent": True, "reason": "released data (filtered by its authors)"},
            "provenance": {"teacher": "reverie_release", "source": str(self.path), "lines": c.lines,
                           **({"source_answers": {k: f[k] for k in answers}} if answers else {}),
                           **{k: v for k, v in c.extra.items() if k in ("source_id", "source_fields") and v}},
        })


def import_reverie(json_path: str | Path, images_root: str | Path, eval_fraction: float = 0.0, *,
                   lengths=None, exclude_images=("ocr_vqa",), positive_prompt: str = POSITIVE_PROMPT,
                   negative_prompt: str = NEGATIVE_PROMPT) -> tuple[list[dict], list[dict]]:
    """Released REVERIE JSON (either layout, see the module's docstring) as records, in file
    order, and the quarantined entries with their rule, reason, file:line and the entry.
    `lengths` (a `ValidateSettings`) applies validate's length bounds; the image paths in the
    records are those of the release, relative to `images_root`."""
    return ReleaseReader(json_path, images_root, eval_fraction, lengths, exclude_images, positive_prompt,
                         negative_prompt).read()


def export_reverie(records: list[dict]) -> list[dict]:
    """Records in the release's flat layout: id and the published fields."""
    return [{"id": r["id"], **{f: r[f] for f in PUBLISHED_FIELDS}} for r in records]
