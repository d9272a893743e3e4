"""Reading a teacher model's answers: find the JSON, validate it, never evaluate it.

Chat models wrap JSON in ```fences```, precede it with prose, or answer a yes/no question in
words. Each parser here accepts those shapes and returns `(value, problems)`: `problems`
lists parts of an otherwise usable answer that were rejected (one bad question out of
four), and a `ParseError` means nothing in the answer was usable. Both are fed back to the
model once, then quarantined with their reason.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ..data_import import ImageEntry
from ..records import REASONING_KINDS
from .scene_graph import LETTER, SHORT

LETTERS = "ABCDEFGH"
FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.S)
YES_NO_WORD = re.compile(r"^\W*(yes|no)\b", re.I)
MIN_RATIONALE_CHARS = 10


class ParseError(ValueError):
    """The answer held nothing usable; the message says why, for the retry and the quarantine."""


def find_json(text: str | None) -> Any:
    """The first JSON object or array in `text`: fenced blocks first, then the whole text,
    then the first decodable `{` or `[` inside prose. Only `json` parses it."""
    text = text or ""
    candidates = [m.group(1) for m in FENCE.finditer(text)] + [text]
    for candidate in candidates:
        try:
            return json.loads(candidate.strip())
        except ValueError:
            pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, (dict, list)):
            return value
    raise ParseError("no JSON object found in the answer")


def describe_validation(exc: ValidationError, limit: int = 400) -> str:
    parts = [f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}" for err in exc.errors()]
    return "; ".join(parts)[:limit]


def _text(value: Any) -> Any:
    """Numbers and booleans the model wrote without quotes are still answers ("3", "yes")."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return str(value)
    return value.strip() if isinstance(value, str) else value


class Question(BaseModel):
    """One item of the QA-collection answer, normalised to the record conventions."""

    model_config = ConfigDict(extra="ignore")

    question: str
    question_type: Literal["yes_no", "multiple_choice", "short_answer", "open_ended"]
    reasoning: str = "multi_step"
    options: list[str] | None = None
    correct_answer: str
    confusing_answer: str

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in ("question", "correct_answer", "confusing_answer"):
            data[key] = _text(data.get(key))
        kind = str(data.get("question_type", "")).strip().lower().replace("-", "_").replace(" ", "_").replace("/", "_")
        data["question_type"] = {"yesno": "yes_no", "mcq": "multiple_choice", "choice": "multiple_choice",
                                 "short": "short_answer", "open": "open_ended"}.get(kind, kind)
        if isinstance(data.get("options"), list):
            data["options"] = [str(_text(o)) for o in data["options"]]
        elif isinstance(data.get("options"), dict):  # {"A": "...", "B": "..."}
            data["options"] = [str(_text(v)) for _, v in sorted(data["options"].items())]
        return data

    @field_validator("question")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if len(v) < 3:
            raise ValueError("the question is empty")
        return v

    @field_validator("reasoning")
    @classmethod
    def _known_reasoning(cls, v: str) -> str:
        v = v.strip().lower().replace("-", "_").replace(" ", "_")
        return v if v in REASONING_KINDS else "multi_step"

    @model_validator(mode="after")
    def _answers_fit_the_format(self):
        if self.question_type == "yes_no":
            self.correct_answer = self.correct_answer.lower().rstrip(".")
            self.confusing_answer = self.confusing_answer.lower().rstrip(".")
            if {self.correct_answer, self.confusing_answer} != {"yes", "no"}:
                raise ValueError("a yes_no question needs the answers 'yes' and 'no'")
            self.options = None
        elif self.question_type == "multiple_choice":
            if not self.options or not 2 <= len(self.options) <= len(LETTERS):
                raise ValueError(f"a multiple_choice question needs 2 to {len(LETTERS)} options")
            self.correct_answer = self._letter(self.correct_answer)
            self.confusing_answer = self._letter(self.confusing_answer)
        else:
            self.options = None
        if not self.correct_answer or not self.confusing_answer:
            raise ValueError("both answers must be non-empty")
        if self.correct_answer.lower() == self.confusing_answer.lower():
            raise ValueError("the correct and the confusing answer are the same")
        return self

    def _letter(self, answer: str) -> str:
        """An option letter ("B", "B.", "(B)") or an option's text, as the option letter."""
        letters = LETTERS[: len(self.options)]
        bare = answer.strip().strip("().").upper()
        if len(bare) == 1 and bare in letters:
            return bare
        for letter, option in zip(letters, self.options):
            if answer.strip().lower().rstrip(".") == option.strip().lower().rstrip("."):
                return letter
        raise ValueError(f"the answer {answer!r} is neither an option letter nor an option")

    def record_question(self) -> str:
        """The question as the student sees it, in the scene-graph teacher's layout (LLaVA's
        answer-format suffixes), so that every teacher's records train the same way."""
        if self.question_type == "multiple_choice":
            lines = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(self.options))
            return f"{self.question}\n{lines}\n{LETTER}"
        if self.question_type in ("yes_no", "short_answer") and not self.question.endswith(SHORT):
            return f"{self.question}\n{SHORT}"
        return self.question


def parse_questions(text: str) -> tuple[list[Question], list[str]]:
    """The QA-collection answer: `{"questions": [...]}` or a bare list. Invalid and repeated
    questions are reported in `problems`; none valid at all is a `ParseError`."""
    data = find_json(text)
    items = data.get("questions") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ParseError('expected {"questions": [...]} with at least one question')
    questions, problems, seen = [], [], set()
    for i, item in enumerate(items):
        try:
            q = Question.model_validate(item)
        except ValidationError as exc:
            problems.append(f"question {i}: {describe_validation(exc)}")
            continue
        if q.question.lower() in seen:
            problems.append(f"question {i}: repeats an earlier question")
            continue
        seen.add(q.question.lower())
        questions.append(q)
    if not questions:
        raise ParseError("no valid question: " + "; ".join(problems)[:500])
    return questions, problems


def parse_rationale(text: str) -> tuple[str, list[str]]:
    """A rationale is prose; a model that answers in JSON anyway is read too."""
    body = (text or "").strip()
    fenced = FENCE.search(body)
    if fenced:
        body = fenced.group(1).strip()
    if body.startswith("{"):
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            body = str(next((data[k] for k in ("rationale", "explanation", "answer") if k in data), "")).strip()
    if len(body) < MIN_RATIONALE_CHARS:
        raise ParseError(f"the rationale is empty or shorter than {MIN_RATIONALE_CHARS} characters")
    return body, []


class JudgeAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    contradiction: bool
    reason: str = ""

    @field_validator("contradiction", mode="before")
    @classmethod
    def _yes_no(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower().rstrip(".") in ("yes", "no"):
            return v.strip().lower().startswith("y")
        return v

    @field_validator("reason", mode="before")
    @classmethod
    def _str(cls, v: Any) -> str:
        return "" if v is None else str(v)


def parse_judge(text: str) -> tuple[JudgeAnswer, list[str]]:
    """`{"contradiction": "yes"|"no", "reason": ...}`, or an answer that starts with yes/no."""
    try:
        data = find_json(text)
    except ParseError:
        word = YES_NO_WORD.match(text or "")
        if not word:
            raise ParseError('expected {"contradiction": "yes" or "no", "reason": "..."}') from None
        return JudgeAnswer(contradiction=word.group(1).lower() == "yes", reason=(text or "").strip()[:300]), []
    try:
        return JudgeAnswer.model_validate(data), []
    except ValidationError as exc:
        raise ParseError(describe_validation(exc)) from None


# ---- the teachers' input ------------------------------------------------------------------
def image_entries(images) -> list[ImageEntry]:
    """What every model teacher accepts as its images: ImageEntry objects as they are; bare
    (image_id, path) pairs go to the train split."""
    return [e if isinstance(e, ImageEntry) else ImageEntry(str(e[0]), Path(e[1]), str(e[1]), "train") for e in images]
