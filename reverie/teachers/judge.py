"""The consistency judge (the paper's step c) for rationales in the scene-graph grammar.

It reads only the text (question, both answers, both rationales), as the paper's text-only
judge does: it never looks at the scene graph or at the provenance. It extracts the claims
each rationale makes and flags the item when the claims contradict each other or the answers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..vocab import plural

OBJECT = re.compile(r"There is a (small|large) (\w+) (\w+) at the ([\w -]+?)\.")
ABSENT = re.compile(r"There is no (\w+) in the image\.")
COUNT_ONE = re.compile(r"There is exactly one (\w+) in the image\.")
COUNT_MANY = re.compile(r"There are (\d+) (\w+) in the image\.")  # the plural: "3 crosses"
CONCLUSION = re.compile(r"So the answer is (.+?)\.\s*$", re.S)
REJECTION = re.compile(r"^The answer (.+?) is wrong\.")
# any "So the answer is X." sentence, wherever it stands (the answer may hold a dot: "3.5")
ANY_CONCLUSION = re.compile(r"So the answer is (.+?)\.(?=\s|$)", re.S)


@dataclass(frozen=True)
class Verdict:
    consistent: bool
    reason: str = ""

    def to_json(self) -> dict:
        return {"consistent": self.consistent, "reason": self.reason}


def _norm(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".").split())


class SceneGraphJudge:
    name = "scene_graph_text_judge"

    def judge(self, question: str, correct_answer: str, confusing_answer: str,
              correct_rationale: str, incorrect_rationale: str) -> Verdict:
        problem = (self.answers_problem(correct_answer, confusing_answer, correct_rationale, incorrect_rationale)
                   or self.claims_problem(correct_rationale, incorrect_rationale))
        return Verdict(problem is None, problem or "")

    @staticmethod
    def answers_problem(correct_answer: str, confusing_answer: str, correct_rationale: str,
                        incorrect_rationale: str) -> str | None:
        """Do the rationales conclude what the answers say?"""
        if _norm(correct_answer) == _norm(confusing_answer):
            return "the correct and the confusing answer are the same"
        concluded = CONCLUSION.search(correct_rationale)
        if not concluded:
            return "the positive rationale reaches no answer"
        if _norm(concluded.group(1)) != _norm(correct_answer):
            return f"the positive rationale concludes '{concluded.group(1)}', not the correct answer '{correct_answer}'"
        rejected = REJECTION.search(incorrect_rationale)
        if not rejected or _norm(rejected.group(1)) != _norm(confusing_answer):
            return "the negative rationale does not reject the confusing answer"
        # a negative rationale that rejects the confusing answer and then concludes it contradicts
        # itself; concluding the correct answer is fine
        for concluded in ANY_CONCLUSION.finditer(incorrect_rationale):
            if _norm(concluded.group(1)) == _norm(confusing_answer):
                return (f"the negative rationale rejects the confusing answer '{confusing_answer}' "
                        f"but concludes it")
        return None

    def claims_problem(self, correct_rationale: str, incorrect_rationale: str) -> str | None:
        """Do the facts the two rationales assert contradict each other?"""
        claims = Claims()
        for source, text in (("positive", correct_rationale), ("negative", incorrect_rationale)):
            problem = claims.add(text, source)
            if problem:
                return problem
        return None


class Claims:
    """The facts asserted so far; `add` returns a description of the first contradiction."""

    def __init__(self):
        self.at: dict[str, tuple[str, str, str, str]] = {}  # position -> (size, color, kind, source)
        self.absent: dict[str, str] = {}
        self.counts: dict[str, tuple[int, str]] = {}

    def add(self, text: str, source: str) -> str | None:
        for size, color, kind, position in OBJECT.findall(text):
            seen = self.at.get(position)
            if seen and seen[:3] != (size, color, kind):
                return (f"the {source} rationale puts a {size} {color} {kind} at the {position}, "
                        f"the {seen[3]} one a {' '.join(seen[:3])}")
            self.at[position] = (size, color, kind, source)
        for kind in ABSENT.findall(text):
            self.absent[kind] = source
        for kind in COUNT_ONE.findall(text):
            if (problem := self._count(plural(kind), 1, source)):
                return problem
        for n, kinds in COUNT_MANY.findall(text):
            if (problem := self._count(kinds, int(n), source)):
                return problem
        return self._cross_check()

    def _count(self, kinds: str, n: int, source: str) -> str | None:
        """Counts are kept by the kind's plural, the form "There are 3 crosses" names it by."""
        seen = self.counts.get(kinds)
        if seen and seen[0] != n:
            return f"the {source} rationale counts {n} {kinds}, the {seen[1]} one {seen[0]}"
        self.counts[kinds] = (n, source)
        return None

    def _cross_check(self) -> str | None:
        located: dict[str, int] = {}
        for size, color, kind, source in self.at.values():
            located[plural(kind)] = located.get(plural(kind), 0) + 1
            if kind in self.absent:
                return f"the {self.absent[kind]} rationale says there is no {kind}, the {source} one places one"
        for kinds, (n, source) in self.counts.items():
            if located.get(kinds, 0) > n:
                return f"the {source} rationale counts {n} {kinds} but {located[kinds]} are placed"
        return None
