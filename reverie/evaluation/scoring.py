"""Answer parsing and scoring, following the reference scorers of each benchmark.

Everything here works on saved predictions alone, so a run can be re-scored without the
model (`python -m reverie.evaluation.rescore predictions.jsonl`).
"""
from __future__ import annotations

import re
import string
from collections import defaultdict

LETTERS = "ABCDEFGH"


# ---- POPE -------------------------------------------------------------------------------
def pope_yes(answer: str) -> bool:
    """POPE's rule: keep the words before the first period; "no"/"No"/"not" means no,
    anything else means yes."""
    text = answer.split(".")[0] if "." in answer else answer
    words = text.replace(",", "").split(" ")
    return not ("No" in words or "not" in words or "no" in words)


def pope_parseable(answer: str) -> bool:
    words = set(re.findall(r"[a-z]+", answer.lower()))
    return bool(words & {"yes", "no", "not"})


def binary_metrics(preds: list[bool], labels: list[bool]) -> dict:
    tp = sum(p and y for p, y in zip(preds, labels))
    fp = sum(p and not y for p, y in zip(preds, labels))
    tn = sum(not p and not y for p, y in zip(preds, labels))
    fn = sum(not p and y for p, y in zip(preds, labels))
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / n if n else 0.0, "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": (tp + fp) / n if n else 0.0, "n": n}


def score_pope(rows: list[dict]) -> dict:
    """rows: {split, label ("yes"/"no"), answer}."""
    by_split: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_split[r["split"]].append(r)
    out: dict = {}
    for split, items in sorted(by_split.items()):
        m = binary_metrics([pope_yes(r["answer"]) for r in items], [r["label"] == "yes" for r in items])
        m["unparseable"] = sum(not pope_parseable(r["answer"]) for r in items)
        out[split] = m
    if out:
        out["mean_f1"] = sum(v["f1"] for v in out.values()) / len(out)
    return out


# ---- MME --------------------------------------------------------------------------------
def mme_label(answer: str) -> str:
    r"""MME's `parse_pred_ans` (tools/eval_tool/calculation.py, shipped as tools/eval_tool.zip in
    BradyFU/Awesome-Multimodal-Large-Language-Models, branch Evaluation). `process_result` only
    lower-cases the answer (`pred_ans = pred_ans.lower()`), nothing is stripped and no dot is
    removed; then::

        if pred_ans in ["yes", "no"]: pred_label = pred_ans
        else:
            prefix_pred_ans = pred_ans[:4]
            if "yes" in prefix_pred_ans: pred_label = "yes"
            elif "no" in prefix_pred_ans: pred_label = "no"
            else: pred_label = "other"

    So "Yes." and " no" are read (the word lies within the first four characters), while
    "  yes" (two spaces first), "y.e.s" or "...yes" are "other", which counts as wrong. (The
    tool reads its answer files with readlines() and no strip, so each answer it parses ends in
    a newline; that changes no label: "yes\n" and "no\n" pass the prefix test.)"""
    pred = answer.lower()
    if pred in ("yes", "no"):
        return pred
    prefix = pred[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def score_mme(rows: list[dict]) -> dict:
    """rows: {subtask, image, label, answer}; two questions per image and subtask. Per subtask,
    as MME's calculation.py, in points as it adds them up (`task_score += v*100` for "acc" and
    "acc_plus"): acc = 100 * right answers / questions, acc_plus = 100 * images with both
    answers right / images, score = acc + acc_plus (at most 200). Rows from the real MME carry
    `group`: the perception subtasks (max 2000) and the cognition ones (max 800) are then summed
    apart and never together."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_task[r["subtask"]].append(r)
    out: dict = {}
    total = 0.0
    groups: dict[str, float] = defaultdict(float)
    for task, items in sorted(by_task.items()):
        right = [mme_label(r["answer"]) == r["label"].lower() for r in items]
        per_image: dict[str, list[bool]] = defaultdict(list)
        for r, ok in zip(items, right):
            per_image[r["image"]].append(ok)
        acc = 100 * sum(right) / len(right)
        acc_plus = 100 * sum(all(v) for v in per_image.values()) / len(per_image)
        score = acc + acc_plus
        total += score
        if items[0].get("group"):
            groups[items[0]["group"]] += score
        out[task] = {"acc": acc, "acc_plus": acc_plus, "score": score,
                     "unparseable": sum(mme_label(r["answer"]) == "other" for r in items)}
    if groups:
        for group, score in sorted(groups.items()):
            out[group] = {"score": score}
    else:
        out["score"] = total  # the synthetic MME-4: the sum of its subtask scores
    return out


# ---- multiple choice (MMBench, ScienceQA) ------------------------------------------------
def parse_choice(answer: str, options: list[str]) -> str | None:
    """MMBench's rule without the LLM fallback: a single option letter standing alone, else
    the unique option text contained in the answer; None when neither decides."""
    letters = LETTERS[: len(options)]
    cleaned = answer
    for ch in ".()[],:;!*#{}'\"":
        cleaned = cleaned.replace(ch, " ")
    tokens = cleaned.split()
    found = [t for t in tokens if t in letters]
    if len(set(found)) == 1:
        return found[0]
    if not found:
        lower = answer.lower()
        hits = [LETTERS[i] for i, o in enumerate(options) if o and o.lower() in lower]
        if len(hits) == 1:
            return hits[0]
    return None


def rotations(options: list[str], answer_letter: str) -> list[tuple[list[str], str]]:
    """CircularEval: each circular shift of the options, with the answer's new letter."""
    n = len(options)
    index = LETTERS.index(answer_letter)
    out = []
    for shift in range(n):
        rotated = options[shift:] + options[:shift]
        out.append((rotated, LETTERS[(index - shift) % n]))
    return out


def _circular(rows: list[dict], parse) -> dict:
    """Per question group: right in every one of its rows (CircularEval) and right in its
    first rotation (vanilla)."""
    by_q: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_q[r["question_id"]].append(r)
    circular, vanilla, unparseable = 0, 0, 0
    for items in by_q.values():
        verdicts = []
        for r in sorted(items, key=lambda r: r["rotation"]):
            pred = parse(r)
            unparseable += pred is None
            verdicts.append(pred == r["label"])
        circular += all(verdicts)
        vanilla += verdicts[0]
    n = len(by_q)
    return {"circular_accuracy": circular / n if n else 0.0, "vanilla_accuracy": vanilla / n if n else 0.0,
            "questions": n, "unparseable": unparseable}


def _mmbench_parse(r: dict) -> str | None:
    return parse_choice(r["answer"], r["options"])


def score_multiple_choice(rows: list[dict]) -> dict:
    """rows: {question_id, rotation, options, label (letter), answer}. Rows of the real MMBench
    (they carry `l2_category`) are also scored per category and l2-category; rows of its test
    split have no label: they are counted, not scored."""
    labelled = [r for r in rows if r["label"]]
    out = _circular(labelled, _mmbench_parse)
    if len(labelled) < len(rows):
        out["unlabelled_questions"] = len({r["question_id"] for r in rows if not r["label"]})
    if labelled:
        out["by_answer_letter"] = answers_by_letter(labelled)
    for field in ("category", "l2_category"):  # the real MMBench's loader writes both, the synthetic suite a category
        if any(field in r for r in labelled):
            groups: dict[str, list[dict]] = defaultdict(list)
            for r in labelled:
                groups[r.get(field) or "none"].append(r)
            out[field] = {g: _circular(items, _mmbench_parse) for g, items in sorted(groups.items())}
    return out


def answers_by_letter(rows: list[dict]) -> dict[str, float]:
    """Per right letter, the share of rows (every rotation) answered right. CircularEval puts each
    question's answer under every letter once, so a student that never maps an option's content
    to, say, C scores 0 under C and 0 in CircularEval, however well it sees: this says which."""
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        tally[r["label"]][0] += _mmbench_parse(r) == r["label"]
        tally[r["label"]][1] += 1
    return {letter: right / n for letter, (right, n) in sorted(tally.items())}


_OPTION = re.compile(r"^([A-H])\. (.*)$", re.MULTILINE)


def choice_figures(questions: list, letters: list[str], answers: list[str]) -> dict:
    """The base check's multiple-choice figures (each question's `text` holds its lettered
    options), answers parsed by MMBench's rule: accuracy (`heldout_choice_accuracy`), the
    accuracy among the questions whose right answer is each letter (`heldout_choice_accuracy_A`,
    ...: `answers_by_letter`) and the lowest of those (`heldout_choice_worst_letter`). A student
    that reads the options scores alike under every letter; one that answers "B" to everything
    scores 1 under B, 0 elsewhere, and 0 in MMBench's circular evaluation."""
    if not questions:
        return {}
    rows = [{"label": letter, "answer": answer, "options": [o for _, o in _OPTION.findall(q.text)]}
            for q, letter, answer in zip(questions, letters, answers)]
    per_letter = {f"heldout_choice_accuracy_{x}": v for x, v in answers_by_letter(rows).items()}
    return {"heldout_choice_accuracy": sum(_mmbench_parse(r) == r["label"] for r in rows) / len(rows), **per_letter,
            "heldout_choice_worst_letter": min(per_letter.values())}


def choice_text(figures: dict) -> str:
    """`choice_figures` in words, for the base stage's line and the report's ("" when absent)."""
    if "heldout_choice_accuracy" not in figures:
        return ""
    letters = ", ".join(f"{k[-1]} {v:.2f}" for k, v in figures.items() if k.startswith("heldout_choice_accuracy_"))
    return (f"multiple-choice questions answered right {figures['heldout_choice_accuracy']:.2f} (by right letter: "
            f"{letters}; MMBench's circular score needs every letter)")


SCIENCEQA_OPTIONS = ("A", "B", "C", "D", "E")  # eval_science_qa.py's --options default
_SCIENCEQA_ANSWER = re.compile(r"The answer is ([A-Z]).")  # sic: "." is any character but a newline


def scienceqa_choice(answer: str, n_options: int) -> str | None:
    r"""LLaVA's ScienceQA parser, as llava/eval/eval_science_qa.py on the main branch of
    haotian-liu/LLaVA has it (the script of LLaVA-1.5's scripts/v1_5/eval/sqa.sh). The model's
    text is used as is: no stripping, no newline replacement, case-sensitive::

        if pred_text in args.options:           # ["A", "B", "C", "D", "E"]
            answer = pred_text
        elif len(pred_text) >= 3 and pred_text[0] in args.options and pred_text[1:3] == ". ":
            answer = pred_text[0]
        else:
            pattern = re.compile(r'The answer is ([A-Z]).')
            res = pattern.findall(pred_text)
            if len(res) == 1:
                answer = res[0]  # 'A', 'B', ...
            else:
                answer = "FAILED"

    then `get_pred_idx(answer, prob['choices'], args.options)` gives the option's index when
    `answer in options[:len(choices)]`, else -1 (never right). So "A", "A. cat" and "The answer
    is A." are A; " A", "A.", "a", "A\n", a bare "The answer is A" at the very end (the regex
    needs one more character after the letter) and two "The answer is" matches all fail; a
    letter beyond the question's options (say "D" of three) is wrong too. None stands for all
    of these. (An older version of the script, e.g. commit 8959d5c, used the regex alone and
    fell back to `random.choice(range(len(choices)))`; on main that line is dead code after
    `return -1`. Randomness has no place in a re-scorable metric, so a failure is wrong here.)
    (This project once followed an unmerged change of the script instead, which stripped the
    text, read newlines as ". " and took "The answer is X" with nothing after it.)"""
    text = answer
    if text in SCIENCEQA_OPTIONS:
        letter = text
    elif len(text) >= 3 and text[0] in SCIENCEQA_OPTIONS and text[1:3] == ". ":
        letter = text[0]
    else:
        found = _SCIENCEQA_ANSWER.findall(text)
        letter = found[0] if len(found) == 1 else None
    return letter if letter is not None and letter in SCIENCEQA_OPTIONS[:n_options] else None


def accuracy_by_category(rows: list[dict], right: list[bool]) -> dict:
    """{category: {accuracy, n}} over the rows that name a category."""
    by_category: dict[str, list[bool]] = defaultdict(list)
    for r, ok in zip(rows, right):
        if r.get("category"):
            by_category[r["category"]].append(ok)
    return {category: {"accuracy": sum(oks) / len(oks), "n": len(oks)} for category, oks in sorted(by_category.items())}


def score_scienceqa(rows: list[dict]) -> dict:
    """ScienceQA-IMG accuracy with LLaVA's strict parser (its IMG-Accuracy), per subject where
    the rows name one."""
    right = [scienceqa_choice(r["answer"], len(r["options"])) == r["label"] for r in rows]
    out: dict = {"accuracy": sum(right) / len(right) if right else 0.0, "n": len(rows),
                 "unparseable": sum(scienceqa_choice(r["answer"], len(r["options"])) is None for r in rows)}
    return out | accuracy_by_category(rows, right)


# ---- short answers ----------------------------------------------------------------------
_NUMBERS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """VQA-style normalisation: lower case, no punctuation or articles, number words as digits."""
    text = text.lower().strip()
    text = text.translate(str.maketrans({c: " " for c in string.punctuation}))
    words = [_NUMBERS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def short_answer_correct(answer: str, truth: str) -> bool:
    return normalize_answer(answer) == normalize_answer(truth)


def score_short_answers(rows: list[dict]) -> dict:
    """Accuracy overall and per category (count, color) where the rows name one."""
    right = [short_answer_correct(r["answer"], r["label"]) for r in rows]
    out: dict = {"accuracy": sum(right) / len(right) if right else 0.0, "n": len(right)}
    return out | accuracy_by_category(rows, right)


# ---- REVERIE-style held-out reasoning questions -----------------------------------------
def reasoning_correct(row: dict) -> bool:
    qtype, answer, truth = row["question_type"], row["answer"], row["label"]
    if qtype == "yes_no":
        return mme_label(answer) == truth.lower()
    if qtype == "multiple_choice":
        return parse_choice(answer, row.get("options") or []) == truth
    return short_answer_correct(answer, truth)


def score_reasoning(rows: list[dict]) -> dict:
    out: dict = {}
    by_type: dict[str, list[bool]] = defaultdict(list)
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        ok = reasoning_correct(r)
        by_type[r["question_type"]].append(ok)
        by_kind[r.get("reasoning", "other")].append(ok)
    all_ok = [v for vs in by_type.values() for v in vs]
    out["accuracy"] = sum(all_ok) / len(all_ok) if all_ok else 0.0
    for t, vs in sorted(by_type.items()):
        out[t] = {"accuracy": sum(vs) / len(vs), "n": len(vs)}
    for k, vs in sorted(by_kind.items()):
        out[f"kind_{k}"] = {"accuracy": sum(vs) / len(vs), "n": len(vs)}
    return out


SCORERS = {
    "pope": score_pope,
    "mme": score_mme,
    "mmbench": score_multiple_choice,
    "scienceqa": score_scienceqa,
    "short_answer": score_short_answers,
    "reasoning": score_reasoning,
}


def score_predictions(rows: list[dict]) -> dict:
    """Scores saved predictions, each tagged with its `benchmark`."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        grouped[r["benchmark"]].append(r)
    unknown = set(grouped) - set(SCORERS)
    if unknown:
        raise ValueError(f"predictions name unknown benchmark(s) {sorted(unknown)}; known: {sorted(SCORERS)}")
    return {name: SCORERS[name](items) for name, items in sorted(grouped.items())}
