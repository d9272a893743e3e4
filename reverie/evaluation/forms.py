"""Is an answer in the form its question asks for? A column of the report only measures its
skill when the baseline answers in the right form (a yes or a no, an option letter, a count,
a colour word), whatever it gets right: an answer of the wrong form is a format failure, not
a wrong perception.

The rule is read from the rows themselves, so it holds for the synthetic suites and the real
benchmarks alike:
- yes/no questions (POPE, MME, and rows whose `question_type` is `yes_no`): the answer,
  lower-cased and stripped of surrounding whitespace and final punctuation, is "yes" or "no";
- multiple choice (MMBench, ScienceQA, rows with `options` or `question_type`
  `multiple_choice`): the stripped answer is one of the row's option letters, optionally
  followed by "." or ")";
- anything else (short answers, open-ended answers): the answer, normalised as the short-answer
  scorer normalises it, has the shape of the labels of its question group: as many words as
  some label of the group, and each word one that such labels have at that position. A group
  is (benchmark, question type, category or reasoning kind), and its vocabulary comes from
  the group's labels alone (`answer_vocabulary`), never from answers. So "3" is a well-formed
  count, "red" a well-formed colour, "a small red circle" a well-formed description, and "yes"
  is not a well-formed colour."""
from __future__ import annotations

import string
from collections import defaultdict

from .scoring import LETTERS, normalize_answer

YES_NO_BENCHMARKS = ("pope", "mme")
CHOICE_BENCHMARKS = ("mmbench", "scienceqa")

# group -> number of words -> the words labels of that length have at each position
Vocabulary = dict[tuple, dict[int, list[set[str]]]]


def question_form(row: dict) -> str:
    """"yes_no", "multiple_choice" or "open" (a short or open-ended answer)."""
    qtype = row.get("question_type")
    if qtype == "yes_no" or (qtype is None and row["benchmark"] in YES_NO_BENCHMARKS):
        return "yes_no"
    if qtype == "multiple_choice" or (qtype is None and (row.get("options") or row["benchmark"] in CHOICE_BENCHMARKS)):
        return "multiple_choice"
    return "open"


def group(row: dict) -> tuple:
    """The question group whose labels say what form an open answer takes."""
    return row["benchmark"], row.get("question_type"), row.get("category") or row.get("reasoning")


def answer_vocabulary(rows: list[dict]) -> Vocabulary:
    """Per question group of the open rows, the words its labels have at each position, per
    label length. Labels only: the answers never widen what counts as well-formed."""
    vocabulary: Vocabulary = defaultdict(dict)
    for row in rows:
        if question_form(row) != "open" or not row.get("label"):
            continue
        words = normalize_answer(str(row["label"])).split()
        if not words:
            continue
        positions = vocabulary[group(row)].setdefault(len(words), [set() for _ in words])
        for slot, word in zip(positions, words):
            slot.add(word)
    return dict(vocabulary)


def well_formed(row: dict, vocabulary: Vocabulary) -> bool:
    """Whether `row`'s answer has the form its question asks for (module docstring)."""
    answer = str(row.get("answer") or "")
    form = question_form(row)
    if form == "yes_no":
        return answer.strip().rstrip(string.punctuation).strip().lower() in ("yes", "no")
    if form == "multiple_choice":
        text = answer.strip()
        return any(text in (letter, f"{letter}.", f"{letter})") for letter in LETTERS[: len(row.get("options") or [])])
    words = normalize_answer(answer).split()
    positions = vocabulary.get(group(row), {}).get(len(words))
    return bool(words) and positions is not None and all(w in slot for w, slot in zip(words, positions))
