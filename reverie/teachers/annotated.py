"""The scene-graph teacher and its text-only judge, adapted to annotated photographs.

The synthetic world puts one object in each grid cell, draws every object in a known colour
and names kinds with one word; real annotations do none of that. So:

- the teacher drops the questions a real scene graph cannot answer truthfully: a colour that
  is "unknown" (COCO has no attributes), and "the object at the top left" when that cell
  holds several objects; and it asks "What is the object ...?" rather than "What shape ...?";
- the judge reads kinds of several words ("traffic light") and lets one cell hold several
  objects. It still catches the teacher's injected contradictions: the negative rationale
  re-describes an object of the positive one (its sentence replaced by one with another kind
  or colour at the same place), which the judge sees as an object of the positive rationale
  missing from the negative one while a new one appears at that place.
"""
from __future__ import annotations

import random
import re

from ..vocab import plural
from ..world import Scene, position_name
from .judge import SceneGraphJudge
from .scene_graph import QAItem, SceneGraphTeacher

OBJECT = re.compile(r"There is a (small|large) (\S+) (.+?) at the ([\w -]+?)\.")
ABSENT = re.compile(r"There is no (.+?) in the image\.")
COUNT_ONE = re.compile(r"There is exactly one (.+?) in the image\.")
COUNT_MANY = re.compile(r"There are (\d+) (.+?) in the image\.")  # the plural: "3 traffic lights"
UNKNOWN = "unknown"
# the questions that name an object by its cell, and which of their support facts is that object
CELL_REFERENCE = {"attribute_multiple_choice": 0, "open_ended_describe": 0, "multi_step_short": 1}


class CoLocatedJudge(SceneGraphJudge):
    name = "scene_graph_text_judge_colocated"

    def claims_problem(self, correct_rationale: str, incorrect_rationale: str) -> str | None:
        # the answer checks are SceneGraphJudge's; only the reading of the claims differs
        return contradiction(correct_rationale, incorrect_rationale)


class AnnotatedSceneTeacher(SceneGraphTeacher):
    name = "scene_graph_annotations"
    judge_class = CoLocatedJudge

    def __init__(self, kinds, colors, partners, template_version, **options):
        super().__init__(kinds, colors, partners, template_version, **options)
        self.generators = [self._answerable(g) for g in self.generators]

    def _answerable(self, generator):
        cell_fact = CELL_REFERENCE.get(generator.__name__)

        def generate(scene: Scene, rng: random.Random) -> QAItem | None:
            item = generator(scene, rng)
            if item is None or UNKNOWN in f"{item.correct_answer} {item.confusing_answer}".split():
                return None
            if cell_fact is not None:
                position = item.support[cell_fact].position
                if sum(position_name(o.row, o.col, scene.grid) == position for o in scene.objects) > 1:
                    return None  # "the object at <cell>" would name several objects
            item.question = item.question.replace("What shape is the object", "What is the object")
            return item

        return generate

    def _another_answer(self, item: QAItem, rng: random.Random) -> str:
        if item.question_type == "open_ended":  # "a small red traffic light": the kind may have several words
            _, size, color, *kind = item.correct_answer.split()
            return f"a {'small' if size == 'large' else 'large'} {color} {' '.join(kind)}"
        return super()._another_answer(item, rng)


def _claims(text: str) -> tuple[set[tuple[str, str, str, str]], set[str], dict[str, int]]:
    placed = {(position, size, color, kind) for size, color, kind, position in OBJECT.findall(text)}
    # counts by the kind's plural, the form "There are 3 people" names it by
    counts = {plural(kind): 1 for kind in COUNT_ONE.findall(text)} | {kinds: int(n) for n, kinds in COUNT_MANY.findall(text)}
    return placed, set(ABSENT.findall(text)), counts


def contradiction(positive: str, negative: str) -> str | None:
    """The first contradiction between the claims of the two rationales, or None."""
    pos_placed, pos_absent, pos_counts = _claims(positive)
    neg_placed, neg_absent, neg_counts = _claims(negative)
    for kind in pos_counts.keys() & neg_counts.keys():
        if pos_counts[kind] != neg_counts[kind]:
            return f"the positive rationale counts {pos_counts[kind]} {kind}, the negative one {neg_counts[kind]}"
    placed = pos_placed | neg_placed
    for position, _, _, kind in sorted(placed):
        if kind in pos_absent | neg_absent:
            return f"one rationale says there is no {kind}, the other places one at the {position}"
    counts = {**pos_counts, **neg_counts}
    for kinds, n in counts.items():
        located = sum(plural(k) == kinds for *_, k in placed)
        if located > n:
            return f"the rationales count {n} {kinds} but place {located}"
    for position in sorted({p for p, *_ in pos_placed}):
        dropped = sorted(o for o in pos_placed - neg_placed if o[0] == position)
        added = sorted(o for o in neg_placed - pos_placed if o[0] == position)
        if dropped and added:
            return (f"the negative rationale describes the {' '.join(dropped[0][1:])} at the {position} "
                    f"as a {' '.join(added[0][1:])}")
    return None
