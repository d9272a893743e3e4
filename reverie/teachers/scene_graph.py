"""The scene-graph teacher: the paper's three data steps, written from a scene graph.

(a) QA collection: several questions per image in four formats and six reasoning kinds, each
    with a correct answer and a *hard* confusing one (off-by-one counts, the co-occurring
    but absent object, a neighbour's attribute).
(b) Rationales: a positive one that walks through the scene facts leading to the correct
    answer, and a negative one that names the fact the confusing answer gets wrong.
(c) The judge (in `judge.py`) reads only the text, as the paper's judge does.

Rationales are built from `Fact`s rendered in a fixed sentence grammar, so that they are
true of the scene graph by construction and a text-only judge can check them.
Teacher noise (a wrong "correct" answer, a negative rationale that contradicts the positive
one) is injected at a configured rate and recorded in the item's provenance.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..records import make_record
from ..vocab import LETTER, SHORT, plural
from ..world import (Scene, SceneObject, absent_kind, confusing_count, count_question_kind, image_relpath,
                     position_name)
from .judge import SceneGraphJudge
from .protocol import Taught

LETTERS = "ABCD"


@dataclass(frozen=True)
class Fact:
    """One checkable statement about the scene."""

    kind: str  # "object", "absent", "count"
    subject: str  # object kind
    position: str = ""
    size: str = ""
    color: str = ""
    count: int = 0

    def sentence(self) -> str:
        if self.kind == "object":
            return f"There is a {self.size} {self.color} {self.subject} at the {self.position}."
        if self.kind == "absent":
            return f"There is no {self.subject} in the image."
        if self.count == 1:
            return f"There is exactly one {self.subject} in the image."
        return f"There are {self.count} {plural(self.subject)} in the image."


@dataclass
class QAItem:
    question: str
    question_type: str  # yes_no | multiple_choice | short_answer | open_ended
    reasoning: str  # existence | counting | attribute | spatial | comparison | multi_step
    correct_answer: str
    confusing_answer: str
    options: list[str] | None
    support: list[Fact]  # facts that establish the correct answer
    refute: list[Fact]  # facts that show the confusing answer is wrong
    correct_rationale: str = ""
    incorrect_rationale: str = ""
    injected_error: str | None = None
    notes: dict = field(default_factory=dict)


def object_fact(scene: Scene, obj: SceneObject) -> Fact:
    return Fact("object", obj.kind, position_name(obj.row, obj.col, scene.grid), obj.size, obj.color)


def describe(obj: SceneObject) -> str:
    return f"{obj.size} {obj.color} {obj.kind}"


class SceneGraphTeacher:
    """Writes questions, answers and rationales that are true of a scene graph. `teach` (the
    `Teacher` interface) runs the item steps and `judge` over whole scenes; it needs the
    `generate` settings (questions per image, noise rate) and the seed."""

    name = "scene_graph"
    judge_class = SceneGraphJudge

    def __init__(self, kinds: list[str], colors: list[str], partners: dict[str, str], template_version: str,
                 *, generate=None, seed: int = 0, judge=None):
        self.kinds = list(kinds)
        self.colors = list(colors)
        self.partners = partners
        self.template_version = template_version
        self.generate, self.seed = generate, seed
        self.judge = judge if judge is not None else self.judge_class()
        self.generators = [
            self.existence_yes_no,
            self.counting_short,
            self.attribute_multiple_choice,
            self.spatial_yes_no,
            self.attribute_short,
            self.comparison_yes_no,
            self.multi_step_short,
            self.open_ended_describe,
            self.spatial_short,
            self.comparison_multiple_choice,
        ]

    def teach(self, images, progress: bool = False) -> Taught:
        """The records of `images` (scenes), scene by scene (the `Teacher` interface)."""
        return Taught([r for scene in images for r in self.records_for_scene(scene)], [], {})

    def records_for_scene(self, scene: Scene) -> list[dict]:
        """All records of one image. Seeded by (seed, image id) alone, so any sharding of the
        images gives the same records as one process."""
        if self.generate is None:
            raise ValueError("this teacher was built without the generate settings it needs to teach")
        generate, seed = self.generate, self.seed
        rng = random.Random(f"{seed}:{scene.image_id}")
        records = []
        for j, item in enumerate(self.collect_questions(scene, generate.questions_per_image, rng)):
            self.write_rationales(item)
            if rng.random() < generate.noise_rate:
                self.inject_error(item, rng)
            verdict = self.judge.judge(item.question, item.correct_answer, item.confusing_answer,
                                       item.correct_rationale, item.incorrect_rationale)
            provenance = {"teacher": self.name, "judge": self.judge.name,
                          "template_version": self.template_version, "split": scene.split,
                          "seed": seed, "injected_error": item.injected_error}
            records.append(make_record(f"{scene.image_id}-q{j}", image_relpath(scene), scene.split,
                                       item, verdict, provenance))
        return records

    # ---- (a) QA collection -------------------------------------------------------------
    def collect_questions(self, scene: Scene, n: int, rng: random.Random) -> list[QAItem]:
        """`n` questions for one image, rotating through the generators so that every
        format and reasoning kind is represented; a generator that does not apply to this
        scene (for example no unique object to ask about) is skipped."""
        start = rng.randrange(len(self.generators))
        items: list[QAItem] = []
        seen: set[str] = set()
        for offset in range(len(self.generators) * 2):
            if len(items) == n:
                break
            item = self.generators[(start + offset) % len(self.generators)](scene, rng)
            if item is not None and item.question not in seen:
                seen.add(item.question)
                items.append(item)
        return items

    def _unique(self, scene: Scene) -> list[SceneObject]:
        return [o for o in scene.objects if scene.count(o.kind) == 1]

    def existence_yes_no(self, scene, rng):
        objects = sorted(scene.objects, key=lambda o: (o.row, o.col))
        if rng.random() < 0.5:
            obj = rng.choice(objects)
            facts = [object_fact(scene, o) for o in objects if o.kind == obj.kind]
            return QAItem(f"Is there a {obj.kind} in the image?\n{SHORT}", "yes_no", "existence", "yes", "no",
                          None, facts, facts)
        kind = absent_kind(scene, self.kinds, rng)  # uniform: never POPE's popular or adversarial rule
        if kind is None:
            return None
        listing = [object_fact(scene, o) for o in objects]
        absent = Fact("absent", kind)
        return QAItem(f"Is there a {kind} in the image?\n{SHORT}", "yes_no", "existence", "no", "yes",
                      None, listing + [absent], [absent] + listing)

    def counting_short(self, scene, rng):
        kind = count_question_kind(scene, rng)
        n = scene.count(kind)
        wrong = confusing_count(n, rng)
        facts = [object_fact(scene, o) for o in scene.objects if o.kind == kind]
        count = Fact("count", kind, count=n)
        return QAItem(f"How many {plural(kind)} are there in the image?\n{SHORT}", "short_answer", "counting",
                      str(n), str(wrong), None, facts + [count], [count] + facts)

    def _neighbour_with_other(self, scene, obj, attr) -> SceneObject | None:
        others = [o for o in scene.objects if o is not obj and getattr(o, attr) != getattr(obj, attr)]
        if not others:
            return None
        return min(others, key=lambda o: (abs(o.row - obj.row) + abs(o.col - obj.col), o.id))

    def attribute_short(self, scene, rng):
        unique = self._unique(scene)
        if not unique:
            return None
        obj = rng.choice(unique)
        neighbour = self._neighbour_with_other(scene, obj, "color")
        wrong = neighbour.color if neighbour else rng.choice([c for c in self.colors if c != obj.color])
        support = [object_fact(scene, obj)]
        refute = support + ([object_fact(scene, neighbour)] if neighbour else [])
        return QAItem(f"What color is the {obj.kind}?\n{SHORT}", "short_answer", "attribute",
                      obj.color, wrong, None, support, refute)

    def _options(self, correct: str, hard: str, pool: list[str], rng) -> tuple[list[str], str, str]:
        rest = [p for p in pool if p not in (correct, hard)]
        options = [correct, hard] + rng.sample(rest, min(2, len(rest)))
        rng.shuffle(options)
        return options, LETTERS[options.index(correct)], LETTERS[options.index(hard)]

    @staticmethod
    def _mc_question(stem: str, options: list[str]) -> str:
        lines = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
        return f"{stem}\n{lines}\n{LETTER}"

    def attribute_multiple_choice(self, scene, rng):
        obj = rng.choice(scene.objects)
        position = position_name(obj.row, obj.col, scene.grid)
        hard = self.partners.get(obj.kind)
        if hard is None:
            neighbour = self._neighbour_with_other(scene, obj, "kind")
            hard = neighbour.kind if neighbour else rng.choice([k for k in self.kinds if k != obj.kind])
        options, correct, wrong = self._options(obj.kind, hard, self.kinds, rng)
        fact = object_fact(scene, obj)
        return QAItem(self._mc_question(f"What shape is the object at the {position}?", options),
                      "multiple_choice", "attribute", correct, wrong, options, [fact], [fact],
                      notes={"answer_text": obj.kind, "confusing_text": hard})

    def spatial_yes_no(self, scene, rng):
        unique = self._unique(scene)
        pairs = [(a, b) for a in unique for b in unique if a is not b and a.col != b.col]
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        truth = "yes" if a.col < b.col else "no"
        facts = [object_fact(scene, a), object_fact(scene, b)]
        return QAItem(f"Is the {a.kind} to the left of the {b.kind}?\n{SHORT}", "yes_no", "spatial",
                      truth, "no" if truth == "yes" else "yes", None, facts, facts)

    def spatial_short(self, scene, rng):
        unique = self._unique(scene)
        if not unique:
            return None
        obj = rng.choice(unique)
        truth = position_name(obj.row, obj.col, scene.grid)
        neighbour = self._neighbour_with_other(scene, obj, "kind")
        wrong = position_name(neighbour.row, neighbour.col, scene.grid) if neighbour else None
        if wrong is None or wrong == truth:
            return None
        support = [object_fact(scene, obj)]
        return QAItem(f"Where is the {obj.kind} in the image?\n{SHORT}", "short_answer", "spatial",
                      truth, wrong, None, support, support + [object_fact(scene, neighbour)])

    def comparison_yes_no(self, scene, rng):
        kinds = sorted(scene.kinds())
        a = rng.choice(kinds)
        b = rng.choice([k for k in self.kinds if k != a])
        na, nb = scene.count(a), scene.count(b)
        if na == nb:
            return None
        truth = "yes" if na > nb else "no"
        facts = [Fact("count", a, count=na) if na else Fact("absent", a),
                 Fact("count", b, count=nb) if nb else Fact("absent", b)]
        facts += [object_fact(scene, o) for o in scene.objects if o.kind in (a, b)]
        return QAItem(f"Are there more {plural(a)} than {plural(b)} in the image?\n{SHORT}", "yes_no", "comparison",
                      truth, "no" if truth == "yes" else "yes", None, facts, facts)

    def comparison_multiple_choice(self, scene, rng):
        unique = self._unique(scene)
        pairs = [(a, b) for a in unique for b in unique if a is not b and a.size == "large" and b.size == "small"]
        if not pairs:
            return None
        big, small = rng.choice(pairs)
        options, correct, wrong = self._options(big.kind, small.kind, self.kinds, rng)
        facts = [object_fact(scene, big), object_fact(scene, small)]
        return QAItem(self._mc_question(f"Which object is larger, the {big.kind} or the {small.kind}?", options)
                      if rng.random() < 0.5 else
                      self._mc_question(f"Which object is larger, the {small.kind} or the {big.kind}?", options),
                      "multiple_choice", "comparison", correct, wrong, options, facts, facts,
                      notes={"answer_text": big.kind, "confusing_text": small.kind})

    def multi_step_short(self, scene, rng):
        """Two facts: find the named object, then read the colour of its right-hand neighbour."""
        candidates = []
        for a in self._unique(scene):
            right = [o for o in scene.objects if o.row == a.row and o.col > a.col]
            if right:
                candidates.append((a, min(right, key=lambda o: o.col)))
        if not candidates:
            return None
        a, target = rng.choice(candidates)
        wrong = a.color if a.color != target.color else None
        if wrong is None:
            others = [o.color for o in scene.objects if o.color != target.color]
            wrong = others[0] if others else rng.choice([c for c in self.colors if c != target.color])
        facts = [object_fact(scene, a), object_fact(scene, target)]
        return QAItem(f"What color is the object to the right of the {a.kind}?\n{SHORT}", "short_answer",
                      "multi_step", target.color, wrong, None, facts, facts)

    def open_ended_describe(self, scene, rng):
        """Describe one object; the confusing answer borrows a neighbour's attribute."""
        obj = rng.choice(scene.objects)
        position = position_name(obj.row, obj.col, scene.grid)
        neighbour = self._neighbour_with_other(scene, obj, "color")
        if neighbour is not None:
            wrong = f"a {obj.size} {neighbour.color} {obj.kind}"
        else:
            other = self.partners.get(obj.kind) or rng.choice([k for k in self.kinds if k != obj.kind])
            wrong = f"a {obj.size} {obj.color} {other}"
        fact = object_fact(scene, obj)
        refute = [fact] + ([object_fact(scene, neighbour)] if neighbour else [])
        return QAItem(f"Describe the object at the {position}.", "open_ended", "attribute",
                      f"a {describe(obj)}", wrong, None, [fact], refute)

    # ---- (b) rationales ------------------------------------------------------------------
    def write_rationales(self, item: QAItem) -> QAItem:
        support = " ".join(f.sentence() for f in _dedupe(item.support))
        refute = " ".join(f.sentence() for f in _dedupe(item.refute))
        item.correct_rationale = f"{support} So the answer is {item.correct_answer}."
        item.incorrect_rationale = f"The answer {item.confusing_answer} is wrong. {refute}"
        return item

    # ---- teacher noise ---------------------------------------------------------------------
    def inject_error(self, item: QAItem, rng: random.Random) -> QAItem:
        """Corrupts an item the way a real teacher errs; the kind is kept in provenance."""
        if rng.random() < 0.5:
            item.injected_error = "wrong_answer"
            item.correct_answer = self._another_answer(item, rng)
            if item.correct_answer == item.confusing_answer:
                # yes/no and exhausted option sets: the answers swap places
                item.confusing_answer = _opposite(item)
        else:
            item.injected_error = "contradicting_rationale"
            objects = [f for f in item.support if f.kind == "object"]
            if objects:
                target = rng.choice(objects)
                corrupt = rng.choice(["kind", "color"])
                if corrupt == "kind":
                    bad = Fact("object", rng.choice([k for k in self.kinds if k != target.subject]),
                               target.position, target.size, target.color)
                else:
                    bad = Fact("object", target.subject, target.position, target.size,
                               rng.choice([c for c in self.colors if c != target.color]))
                item.incorrect_rationale = item.incorrect_rationale.replace(target.sentence(), "") + " " + bad.sentence()
                item.incorrect_rationale = " ".join(item.incorrect_rationale.split())
            else:  # pragma: no cover - every generator supports its answer with an object fact
                raise AssertionError("an item without object facts cannot be corrupted")
        return item

    def _another_answer(self, item: QAItem, rng: random.Random) -> str:
        truth = item.correct_answer
        if item.question_type == "yes_no":
            return "no" if truth == "yes" else "yes"
        if item.question_type == "multiple_choice":
            return rng.choice([LETTERS[i] for i in range(len(item.options)) if LETTERS[i] not in (truth, item.confusing_answer)] or [item.confusing_answer])
        if item.reasoning == "counting":
            return str(rng.choice([k for k in range(1, int(truth) + 3) if str(k) not in (truth, item.confusing_answer)]))
        if item.reasoning == "spatial":
            return "center" if truth != "center" else "top left"
        if item.question_type == "open_ended":
            size, color, kind = truth.split()[1:]
            return f"a {'small' if size == 'large' else 'large'} {color} {kind}"
        return rng.choice([c for c in self.colors if c not in (truth, item.confusing_answer)])


def _opposite(item: QAItem) -> str:
    return "no" if item.correct_answer == "yes" else "yes"


def _dedupe(facts: list[Fact]) -> list[Fact]:
    seen, out = set(), []
    for f in facts:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out
