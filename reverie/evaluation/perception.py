"""Does a student see? Balanced existence probes on held-out scenes, the same probes with the
images shuffled across them (a control that only a student using the image fails), and how
many objects its scene descriptions get right. The existence answers are also split by what
tempts a student (`seeing_figures`): the base gate asks whether it sees, not whether it resists
the scene's theme (that is what POPE's adversarial split is for).

Multiple-choice questions as MMBench asks them (`choice_figures`) say whether the student maps
an option's content to its letter, per letter: a tiny LM without language pretraining often
answers one letter to everything, which voids MMBench's circular score however well it sees.

The base stage gates on the existence figures and records the rest; the tune stage records the
existence figures: no result is read through a student that answers from priors."""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from ..student.curriculum import CHOICE_SKILLS, DESCRIBE, EXISTENCE, choice_question, parse_description
from ..world import Scene, absent_kind, image_relpath, position_name
from .decode import Answerer, Question
from .scoring import choice_figures, pope_yes

def existence_probes(scenes: list[Scene], kinds: list[str], seed: int = 0) -> tuple[list[Question], list[bool]]:
    """One present and one absent kind per scene (POPE-style balance), the absent one drawn
    uniformly (POPE's adversarial split measures the co-occurring ones)."""
    questions, labels = [], []
    for scene in scenes:
        rng = random.Random(f"{seed}:perception:{scene.image_id}")
        no = absent_kind(scene, kinds, rng)
        if no is None:
            continue
        for kind, label in ((rng.choice(sorted(scene.kinds())), True), (no, False)):
            questions.append(Question(f"{scene.image_id}:{kind}", image_relpath(scene), EXISTENCE.format(kind=kind)))
            labels.append(label)
    return questions, labels


def choice_probes(scenes: list[Scene], kinds: list[str], colors: list[str],
                  seed: int = 0) -> tuple[list[Question], list[str]]:
    """Per scene, a multiple-choice question of each kind the base is taught (the shape at a
    place, the colour of a kind that occurs once) that the scene can pose, and its right letter."""
    questions, letters = [], []
    for scene in scenes:
        rng = random.Random(f"{seed}:choice:{scene.image_id}")
        for skill in CHOICE_SKILLS:
            turn = choice_question(skill, scene, kinds, colors, rng)
            if turn is not None:
                questions.append(Question(f"{scene.image_id}:{skill}", image_relpath(scene), turn.user))
                letters.append(turn.assistant)
    return questions, letters


def shuffled(questions: list[Question]) -> list[Question]:
    """The same questions, each asked of another scene's image (every image moves)."""
    images = sorted({q.image for q in questions})
    if len(images) < 2:
        raise ValueError("the shuffled-image control needs at least two images")
    moved = {image: images[(i + len(images) // 2) % len(images)] for i, image in enumerate(images)}
    return [Question(q.qid, moved[q.image], q.text) for q in questions]


def description_recall(scenes: list[Scene], descriptions: list[str]) -> dict[str, float]:
    """Share of the objects a description names at their position with the right kind; named
    with the right kind anywhere (kinds counted with multiplicity); and with the right kind,
    colour and size at their position."""
    kind_right = all_right = kind_anywhere = total = 0
    for scene, text in zip(scenes, descriptions):
        said: dict[str, list[tuple[str, str, str]]] = {}
        named = parse_description(text)
        for item in named:
            said.setdefault(item["position"], []).append((item["size"], item["color"], item["kind"]))
        for obj in scene.objects:
            total += 1
            here = said.get(position_name(obj.row, obj.col, scene.grid), [])
            kind_right += any(kind == obj.kind for _, _, kind in here)
            all_right += (obj.size, obj.color, obj.kind) in here
        truth, told = Counter(o.kind for o in scene.objects), Counter(item["kind"] for item in named)
        kind_anywhere += sum((truth & told).values())
    return {"description_object_recall": kind_right / total if total else 0.0,
            "description_kind_recall": kind_anywhere / total if total else 0.0,
            "description_attribute_recall": all_right / total if total else 0.0}


def seeing_figures(scenes: list[Scene], questions: list[Question], labels: list[bool], said_yes: list[bool],
                   themes: list[list[str]]) -> dict:
    """Existence answers split by what tempts a student: present kinds found
    (`heldout_present_recall`), absent kinds of no theme the scene holds rejected
    (`heldout_unrelated_rejection`: nothing but the image tells them apart; every absent kind when
    the themes leave none unrelated, as one theme of every kind does), and absent kinds of a
    theme it holds called present (`heldout_theme_false_positive_rate`: the co-occurrence
    hallucination POPE's adversarial split measures; None without such probes or themes).
    `heldout_seeing_accuracy`, the mean of the first two, is what the base gate reads: a student
    that hallucinates the scene's theme still sees; one that cannot find or reject kinds does not."""
    by_id = {s.image_id: s for s in scenes}
    present, unrelated, related = [], [], []
    for question, label, yes in zip(questions, labels, said_yes):
        image_id, kind = question.qid.rsplit(":", 1)
        there = by_id[image_id].kinds()
        if label:
            present.append(yes)
        elif any(kind in theme and there & set(theme) for theme in themes):
            related.append(yes)
        else:
            unrelated.append(yes)
    recall = sum(present) / len(present) if present else 0.0
    rejected = unrelated or related
    rejection = 1 - sum(rejected) / len(rejected) if rejected else 0.0
    return {"heldout_present_recall": recall, "heldout_unrelated_rejection": rejection,
            "heldout_theme_false_positive_rate": sum(related) / len(related) if related else None,
            "heldout_seeing_accuracy": (recall + rejection) / 2}


def perception_check(model, processor, scenes: list[Scene], images_root: str | Path, kinds: list[str],
                     batch_size: int = 128, describe: int = 100, themes: list[list[str]] = (),
                     colors: list[str] = ()) -> dict:
    """The figures above for `scenes`, answered by greedy decoding (the multiple-choice ones
    when `colors` names the world's colours)."""
    questions, labels = existence_probes(scenes, kinds)
    answerer = Answerer(model, processor, images_root, max_new_tokens=3)
    said_yes = [pope_yes(a) for a in answerer.answer(questions, batch_size, progress=False)]
    shuffled_yes = [pope_yes(a) for a in answerer.answer(shuffled(questions), batch_size, progress=False)]
    out = {"heldout_existence_accuracy": sum(s == y for s, y in zip(said_yes, labels)) / len(labels),
           "heldout_yes_ratio": sum(said_yes) / len(said_yes),
           "shuffled_image_accuracy": sum(s == y for s, y in zip(shuffled_yes, labels)) / len(labels),
           "perception_questions": len(labels),
           **seeing_figures(scenes, questions, labels, said_yes, list(themes))}
    if colors:
        choices, letters = choice_probes(scenes, kinds, list(colors))
        out |= choice_figures(choices, letters, answerer.answer(choices, batch_size, progress=False))
    if describe:
        described = scenes[:describe]
        answerer.max_new_tokens = 16 * max(len(s.objects) for s in described) + 8
        texts = answerer.answer([Question(s.image_id, image_relpath(s), DESCRIBE) for s in described],
                                batch_size, progress=False)
        out |= description_recall(described, texts) | {"description_example": texts[0]}
    return out
