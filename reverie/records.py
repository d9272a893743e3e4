"""REVERIE records: the published field names plus id, type, options, verdict, provenance."""
from __future__ import annotations

PUBLISHED_FIELDS = ("image", "question", "correct_answer", "confusing_answer",
                    "correct_rationale", "incorrect_rationale")
QUESTION_TYPES = ("yes_no", "multiple_choice", "short_answer", "open_ended")
REASONING_KINDS = ("existence", "counting", "attribute", "spatial", "comparison", "multi_step")


def make_record(record_id: str, image: str, split: str, item, verdict, provenance: dict) -> dict:
    return {
        "id": record_id,
        "image": image,
        "question": item.question,
        "correct_answer": item.correct_answer,
        "confusing_answer": item.confusing_answer,
        "correct_rationale": item.correct_rationale,
        "incorrect_rationale": item.incorrect_rationale,
        "question_type": item.question_type,
        "reasoning": item.reasoning,
        "options": item.options,
        "split": split,
        "judge": verdict.to_json(),
        "provenance": provenance,
    }


def judge_scores(raw: list[dict]) -> dict:
    """Precision and recall of the judge against the injected errors recorded in provenance."""
    flagged = [not r["judge"]["consistent"] for r in raw]
    injected = [r["provenance"].get("injected_error") is not None for r in raw]
    both = sum(f and i for f, i in zip(flagged, injected))
    n_flagged, n_injected = sum(flagged), sum(injected)
    return {
        "flagged": n_flagged,
        "injected": n_injected,
        "filter_precision": both / n_flagged if n_flagged else 1.0,
        "filter_recall": both / n_injected if n_injected else 1.0,
    }


def length_rules(settings) -> list[tuple[str, tuple[str, ...], int, int, str]]:
    """validate's length bounds (a `ValidateSettings`), as (rule, fields, min, max, params key):
    the quality suite checks them, and the importer of released data quarantines by them."""
    s = settings
    return [("question_length_ok", ("question",), s.min_question_chars, s.max_question_chars,
             "validate.min_question_chars/max_question_chars"),
            ("answer_length_ok", ("correct_answer", "confusing_answer"), 1, s.max_answer_chars,
             "validate.max_answer_chars"),
            ("rationale_length_ok", ("correct_rationale", "incorrect_rationale"), s.min_rationale_chars,
             s.max_rationale_chars, "validate.min_rationale_chars/max_rationale_chars")]


def length_problems(record: dict, settings) -> list[str]:
    """The fields of `record` whose length breaks one of validate's bounds."""
    problems = []
    for _, fields, low, high, key in length_rules(settings):
        for f in fields:
            n = len(str(record.get(f) or ""))
            if not low <= n <= high:
                problems.append(f"{f} has {n} characters, outside {low}-{high} ({key})")
    return problems
