"""Reading a teacher model's answers: find the JSON (or the Python literal), validate it,
never evaluate it.

Chat models wrap their answer in ```fences```, precede it with prose, write Python literals
with single quotes (the reference scripts read them with `ast.literal_eval`), leave out
fields the prompt did not ask for (the reference QA prompt asks for question, correct and
confusing answer only: no `question_type`), or run out of tokens mid-list. Each parser here
accepts the usable shapes and returns `(value, problems)`: `problems` lists parts of an
otherwise usable answer that were rejected (one bad question out of four), and a
`ParseError` means nothing in the answer was usable. Both are fed back to the model, up to
`max_parse_retries` times, then quarantined with their reason and the raw answer.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ..data_import import LETTERS, ImageEntry, infer_question_type, option_letter, split_options
from ..records import QUESTION_TYPES, REASONING_KINDS
from ..vocab import LETTER, SHORT

FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n?(.*?)```", re.S)
YES_NO_WORD = re.compile(r"^\W*(yes|no)\b", re.I)
MIN_RATIONALE_CHARS = 10
MAX_LITERAL_CHARS = 100_000  # literal_eval builds an AST: bound what it is given
MAX_STARTS = 64  # brackets tried inside prose


class ParseError(ValueError):
    """The answer held nothing usable; the message says why, for the retry and the quarantine."""


def _decode(text: str) -> Any:
    """JSON, else a Python literal. `ast.literal_eval` only builds literals (strings, numbers,
    lists, dicts, True/False/None): a name or a call is a ValueError, never run."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    if len(text) > MAX_LITERAL_CHARS:
        raise ValueError("too long for a literal")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ValueError(str(exc)) from None


PAIRS = {"[": "]", "{": "}"}


def _scan(text: str, start: int) -> tuple[int | None, str | None]:
    """(index of the bracket that closes the one at `start`, None) skipping brackets inside
    quoted strings (either quote); for a text that ends first (a cut-off answer), (None, the
    text up to its last complete inner object with the open brackets closed), or (None, None)."""
    stack, quote, i, salvage = [], None, start, None
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c in PAIRS:
            stack.append(PAIRS[c])
        elif c in "]}":
            stack.pop()
            if not stack:
                return i, None
            if c == "}":  # an inner object is complete: the text up to here can be closed
                salvage = text[start: i + 1] + "".join(reversed(stack))
        i += 1
    return None, salvage


def _closing(text: str, start: int) -> int | None:
    return _scan(text, start)[0]


def _structure(value: Any) -> bool:
    return isinstance(value, (dict, list))


def find_json(text: str | None, want: Callable[[Any], bool] = _structure) -> Any:
    """The first JSON (or Python-literal) object or list in `text` that `want` accepts: fenced
    blocks first, then the whole text, then each `{` or `[` inside prose with the bracket that
    closes it. Nothing is evaluated."""
    text = text or ""
    candidates = [m.group(1) for m in FENCE.finditer(text)] + [text]
    for candidate in candidates:
        try:
            value = _decode(candidate)
        except ValueError:
            continue
        if want(value):
            return value
    truncated = False
    for n, match in enumerate(re.finditer(r"[{\[]", text)):
        if n == MAX_STARTS:
            break
        end, salvage = _scan(text, match.start())
        if end is None:
            truncated = True
            if salvage is None:
                continue
        try:  # a cut-off answer yields its complete items; `cut_off` tells the caller
            value = _decode(text[match.start(): end + 1] if end is not None else salvage)
        except ValueError:
            continue
        if want(value):
            return value
    if truncated:
        raise ParseError("the answer ends before its JSON closes (cut off?)")
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


def _key(name: Any) -> str:
    """A field name as written by a model ("Correct Answer", "correct-answer1") in snake case,
    without the item number the reference prompt's `{question1, correct answer1, ...}` invites."""
    return re.sub(r"_?\d+$", "", re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_"))


FIELD_NAMES = {
    "question": ("question", "q", "instruction", "query", "prompt"),
    "correct_answer": ("correct_answer", "answer", "correct", "correct_response", "positive_answer", "right_answer",
                       "accurate_answer"),
    "confusing_answer": ("confusing_answer", "confusing", "misleading_answer", "incorrect_answer", "wrong_answer",
                         "negative_answer", "distractor", "plausible_answer", "plausible_but_incorrect_answer"),
    "question_type": ("question_type", "type", "format", "question_format"),
    "options": ("options", "choices"),
    "reasoning": ("reasoning", "reasoning_kind", "reasoning_type"),
}
ALIASES = {alias: field for field, aliases in FIELD_NAMES.items() for alias in aliases}
TYPE_NAMES = {"yesno": "yes_no", "yes_or_no": "yes_no", "true_false": "yes_no", "boolean": "yes_no",
              "mcq": "multiple_choice", "choice": "multiple_choice", "multichoice": "multiple_choice",
              "multi_choice": "multiple_choice", "multiple_choice_question": "multiple_choice",
              "short": "short_answer", "short_answer_question": "short_answer",
              "open": "open_ended", "open_question": "open_ended", "open_ended_question": "open_ended"}


class Question(BaseModel):
    """One item of the QA-collection answer, normalised to the record conventions."""

    model_config = ConfigDict(extra="ignore")

    question: str
    question_type: Literal["yes_no", "multiple_choice", "short_answer", "open_ended"]
    reasoning: str = "multi_step"
    options: list[str] | None = None
    correct_answer: str
    confusing_answer: str
    inferred_type: bool = False  # the answer did not name a known format: it was inferred

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        keys = {k: _key(k) for k in data}
        # a field under its own name wins over an alias of it ("answer" beside "correct_answer")
        data = {**{ALIASES.get(n, n): data[k] for k, n in keys.items() if n not in FIELD_NAMES},
                **{n: data[k] for k, n in keys.items() if n in FIELD_NAMES}}
        for key in ("question", "correct_answer", "confusing_answer"):
            data[key] = _text(data.get(key))
        if isinstance(data.get("options"), list):
            data["options"] = [str(_text(o)) for o in data["options"]]
        elif isinstance(data.get("options"), dict):  # {"A": "...", "B": "..."}
            data["options"] = [str(_text(v)) for _, v in sorted(data["options"].items())]
        kind = _key(data.get("question_type") or "")
        kind = TYPE_NAMES.get(kind, kind)
        if kind not in QUESTION_TYPES and all(isinstance(data.get(k), str) for k in ("question", "correct_answer")):
            # the format as the importer infers it for released data that does not label it
            kind = infer_question_type(data["question"], data["correct_answer"], data.get("options"),
                                       data.get("confusing_answer") if isinstance(data.get("confusing_answer"), str) else None)
            data["inferred_type"] = True
        data["question_type"] = kind
        if kind == "multiple_choice" and not data.get("options") and isinstance(data.get("question"), str):
            data["question"], data["options"] = split_options(data["question"])  # options written into the question
        return data

    @field_validator("question")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if len(v) < 3:
            raise ValueError("the question is empty")
        return v

    @field_validator("reasoning", mode="before")
    @classmethod
    def _known_reasoning(cls, v: Any) -> str:
        v = _key(v or "")
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
        """An option letter ("B", "B.", "(B)", "B) dog") or an option's text, as the option letter."""
        letter = option_letter(answer, self.options)
        if letter is None:
            raise ValueError(f"the answer {answer!r} is neither an option letter nor an option")
        return letter

    def record_question(self) -> str:
        """The question as the student sees it, in the scene-graph teacher's layout (LLaVA's
        answer-format suffixes), so that every teacher's records train the same way."""
        if self.question_type == "multiple_choice":
            lines = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(self.options))
            return f"{self.question}\n{lines}\n{LETTER}"
        if self.question_type in ("yes_no", "short_answer") and not self.question.endswith(SHORT):
            return f"{self.question}\n{SHORT}"
        return self.question


def _question_list(value: Any) -> bool:
    """`{"questions": [...]}`, a list of question objects, or one question object."""
    if isinstance(value, dict):
        return isinstance(value.get("questions"), list) or any(ALIASES.get(_key(k)) == "question" for k in value)
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def parse_questions(text: str) -> tuple[list[Question], list[str]]:
    """The QA-collection answer: `{"questions": [...]}`, a bare list, or a single question, in
    JSON or as a Python literal. Invalid and repeated questions are reported in `problems`;
    none valid at all is a `ParseError`."""
    data = find_json(text, _question_list)
    if isinstance(data, dict):
        items = data["questions"] if isinstance(data.get("questions"), list) else [data]
    else:
        items = data
    if not items:
        raise ParseError('expected a list of questions, each with question, correct_answer and confusing_answer')
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
    if cut_off(text):  # the complete questions before the cut are kept; the answer is asked again
        problems.append(f"the answer is cut off after {len(items)} complete question(s)")
    if not questions:
        raise ParseError("no valid question: " + "; ".join(problems)[:500])
    return questions, problems


def cut_off(text: str | None) -> bool:
    """Does the answer's first bracket never close (a model that ran out of tokens)?"""
    first = re.search(r"[{\[]", text or "")
    return first is not None and _closing(text, first.start()) is None


def parse_rationale(text: str) -> tuple[str, list[str]]:
    """A rationale is prose; a model that answers in JSON anyway is read too."""
    body = (text or "").strip()
    fenced = FENCE.search(body)
    if fenced:
        body = fenced.group(1).strip()
    if body.startswith("{"):
        try:
            data = _decode(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            data = {_key(k): v for k, v in data.items()}
            body = str(next((data[k] for k in ("rationale", "explanation", "analysis", "answer") if k in data), "")).strip()
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
        data = find_json(text, lambda v: isinstance(v, dict))
    except ParseError:
        word = YES_NO_WORD.match(text or "")
        if not word:
            raise ParseError('expected {"contradiction": "yes" or "no", "reason": "..."}') from None
        return JudgeAnswer(contradiction=word.group(1).lower() == "yes", reason=(text or "").strip()[:300]), []
    try:
        return JudgeAnswer.model_validate({_key(k): v for k, v in data.items()}), []
    except ValidationError as exc:
        raise ParseError(describe_validation(exc)) from None


# ---- the teachers' input ------------------------------------------------------------------
def image_entries(images) -> list[ImageEntry]:
    """What every model teacher accepts as its images: ImageEntry objects as they are; bare
    (image_id, path) pairs go to the train split."""
    return [e if isinstance(e, ImageEntry) else ImageEntry(str(e[0]), Path(e[1]), str(e[1]), "train") for e in images]
