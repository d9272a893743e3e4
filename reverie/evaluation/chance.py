"""What chance is on each benchmark: an always-yes answerer and a blind prior.

The blind prior never sees an eval image. It learns, from the same benchmarks built on the
*train* scenes (and the train records), the answer each question most often has, and answers
the eval questions with it: a student that does no better has learned the benchmark's
priors, not to see. Both are scored by the same scorers as the students."""
from __future__ import annotations

from collections import Counter, defaultdict

from .suites import Item


def stem(question: str) -> str:
    """A multiple-choice question without its option lines and instruction."""
    return question.split("\n")[0]


class BlindPrior:
    """Most frequent label per question text (yes/no and short answers), and for multiple
    choice the option text most often right for that stem, whatever its letter."""

    def __init__(self, train_items: list[Item]):
        self.by_question: dict[str, Counter] = defaultdict(Counter)
        self.by_group: dict[tuple, Counter] = defaultdict(Counter)
        self.option_right: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for item in train_items:
            options = item.extra.get("options")
            if options:
                # a circular rotation repeats the question: count each question once
                if item.extra.get("rotation", 0):
                    continue
                right = options["ABCDEFGH".index(item.label)] if item.label in "ABCDEFGH"[: len(options)] else None
                for option in options:
                    seen = self.option_right[(stem(item.question), option)]
                    seen[0] += option == right
                    seen[1] += 1
                    self.option_right[("", option)][0] += option == right
                    self.option_right[("", option)][1] += 1
            else:
                self.by_question[item.question][item.label] += 1
                self.by_group[self._group(item)][item.label] += 1

    @staticmethod
    def _group(item: Item) -> tuple:
        return (item.benchmark, item.extra.get("split") or item.extra.get("subtask") or item.extra.get("category")
                or item.extra.get("question_type"))

    def answer(self, item: Item) -> str:
        options = item.extra.get("options")
        if options:
            def rate(option: str) -> float:
                right, offered = self.option_right.get((stem(item.question), option)) or \
                    self.option_right.get(("", option)) or (0, 0)
                return right / offered if offered else 0.0

            best = max(range(len(options)), key=lambda i: (rate(options[i]), -i))
            return "ABCDEFGH"[best]
        for table, key in ((self.by_question, item.question), (self.by_group, self._group(item))):
            if table.get(key):
                return table[key].most_common(1)[0][0]
        return "yes"


def always_yes(item: Item) -> str:
    return "yes"


def reference_rows(train_items: list[Item], eval_items: list[Item]) -> dict[str, list[dict]]:
    """Prediction rows, in the students' layout, of the two reference answerers."""
    prior = BlindPrior(train_items)
    return {"always_yes": [it.row(always_yes(it)) for it in eval_items],
            "blind_prior": [it.row(prior.answer(it)) for it in eval_items]}
