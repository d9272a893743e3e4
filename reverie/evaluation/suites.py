"""Benchmarks on held-out scenes, built in the real benchmarks' formats.

Each builder returns `Item`s: the question as asked, its image, the label, and whatever the
scorer needs (POPE split, MME subtask, MMBench rotation and options). Prompt suffixes are
those LLaVA-1.5 uses when it evaluates on these benchmarks.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import combinations

from ..vocab import LETTER, SHORT, plural
from ..world import Scene, confusing_count, count_question_kind, image_relpath, position_name
from .scoring import LETTERS, rotations



@dataclass
class Item:
    benchmark: str
    qid: str
    image: str
    question: str
    label: str
    extra: dict = field(default_factory=dict)

    def row(self, answer: str) -> dict:
        return {"benchmark": self.benchmark, "qid": self.qid, "image": self.image, "question": self.question,
                "label": self.label, "answer": answer, **self.extra}


def object_statistics(scenes: list[Scene]) -> tuple[Counter, Counter]:
    """How often each kind appears, and how often each pair of kinds appears together,
    measured on the train scenes as POPE measures them on its source annotations."""
    frequency, together = Counter(), Counter()
    for s in scenes:
        kinds = sorted(s.kinds())
        frequency.update(kinds)
        together.update(combinations(kinds, 2))
    return frequency, together


def pope(scenes: list[Scene], kinds: list[str], frequency: Counter, together: Counter, per_image: int, seed: int) -> list[Item]:
    items = []
    popular_order = [k for k, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))] + \
        [k for k in sorted(kinds) if k not in frequency]
    for scene in scenes:
        rng = random.Random(f"{seed}:pope:{scene.image_id}")
        present = sorted(scene.kinds())
        chosen = rng.sample(present, min(per_image, len(present)))
        absent = [k for k in kinds if k not in present]
        n = min(len(chosen), len(absent))
        if n == 0:
            continue

        def co(k):
            return sum(together[tuple(sorted((k, p)))] for p in present)

        negatives = {
            "random": rng.sample(absent, n),
            "popular": [k for k in popular_order if k in absent][:n],
            "adversarial": sorted(absent, key=lambda k: (-co(k), k))[:n],
        }
        for split, negs in negatives.items():
            for kind, label in [(k, "yes") for k in chosen[:n]] + [(k, "no") for k in negs]:
                items.append(Item("pope", f"pope-{split}-{scene.image_id}-{kind}", image_relpath(scene),
                                  f"Is there a {kind} in the image?\n{SHORT}", label, {"split": split, "object": kind}))
    return items


def mme(scenes: list[Scene], kinds: list[str], colors: list[str], seed: int) -> list[Item]:
    """Two questions per image and subtask, one answered yes and one no (MME's design)."""
    items = []
    for scene in scenes:
        rng = random.Random(f"{seed}:mme:{scene.image_id}")
        img = image_relpath(scene)
        present = sorted(scene.kinds())
        absent = [k for k in kinds if k not in present]
        unique = [o for o in scene.objects if scene.count(o.kind) == 1]
        pairs: dict[str, tuple[str, str]] = {}
        if absent:
            pairs["existence"] = (f"Is there a {rng.choice(present)} in this image?", f"Is there a {rng.choice(absent)} in this image?")
        kind = count_question_kind(scene, rng)
        n = scene.count(kind)
        wrong = confusing_count(n, rng)
        pairs["count"] = (f"Is the number of {plural(kind)} in this image {n}?", f"Is the number of {plural(kind)} in this image {wrong}?")
        if unique:
            obj = rng.choice(unique)
            here = position_name(obj.row, obj.col, scene.grid)
            others = sorted({position_name(r, c, scene.grid) for r in range(scene.grid) for c in range(scene.grid)} - {here})
            pairs["position"] = (f"Is the {obj.kind} at the {here} of this image?", f"Is the {obj.kind} at the {rng.choice(others)} of this image?")
            obj = rng.choice(unique)
            pairs["color"] = (f"Is the {obj.kind} in this image {obj.color}?",
                              f"Is the {obj.kind} in this image {rng.choice([c for c in colors if c != obj.color])}?")
        for task, (yes_q, no_q) in pairs.items():
            for label, q in (("yes", yes_q), ("no", no_q)):
                items.append(Item("mme", f"mme-{task}-{scene.image_id}-{label}", img, f"{q}\n{SHORT}", label,
                                  {"subtask": task}))
    return items


def multiple_choice_items(benchmark: str, qid: str, image: str, stem: str, options: list[str], answer: str,
                          extra: dict | None = None) -> list[Item]:
    """One item per circular rotation of the options (CircularEval)."""
    items = []
    for r, (opts, letter) in enumerate(rotations(options, answer)):
        lines = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(opts))
        items.append(Item(benchmark, f"{qid}-r{r}", image, f"{stem}\n{lines}\n{LETTER}", letter,
                          {"question_id": qid, "rotation": r, "options": opts, **(extra or {})}))
    return items


def mmbench(scenes: list[Scene], kinds: list[str], colors: list[str], per_image: int, seed: int) -> list[Item]:
    items = []
    for scene in scenes:
        rng = random.Random(f"{seed}:mmbench:{scene.image_id}")
        for j in range(per_image):
            obj = rng.choice(scene.objects)
            if rng.random() < 0.5:
                here = position_name(obj.row, obj.col, scene.grid)
                stem, truth, pool, category = f"What shape is the object at the {here}?", obj.kind, kinds, "shape"
            else:
                same = scene.count(obj.kind) == 1
                if not same:
                    continue
                stem, truth, pool, category = f"What color is the {obj.kind}?", obj.color, colors, "color"
            wrong = [p for p in pool if p != truth]
            if len(wrong) < 3:  # a world of fewer than four colours (or kinds) cannot pose four options
                continue
            options = [truth] + rng.sample(wrong, 3)
            rng.shuffle(options)
            items += multiple_choice_items("mmbench", f"mmb-{scene.image_id}-{j}", image_relpath(scene), stem,
                                           options, LETTERS[options.index(truth)], {"category": category})
    return items


def short_answers(scenes: list[Scene], seed: int) -> list[Item]:
    items = []
    for scene in scenes:
        rng = random.Random(f"{seed}:short:{scene.image_id}")
        kind = count_question_kind(scene, rng)
        items.append(Item("short_answer", f"short-count-{scene.image_id}", image_relpath(scene),
                          f"How many {plural(kind)} are there in the image?\n{SHORT}", str(scene.count(kind)), {"category": "count"}))
        unique = [o for o in scene.objects if scene.count(o.kind) == 1]
        if unique:
            obj = rng.choice(unique)
            items.append(Item("short_answer", f"short-color-{scene.image_id}", image_relpath(scene),
                              f"What color is the {obj.kind}?\n{SHORT}", obj.color, {"category": "color"}))
    return items


def reasoning(records: list[dict]) -> list[Item]:
    """The REVERIE-style questions of the held-out split, answered like any other."""
    return [Item("reasoning", r["id"], r["image"], r["question"], r["correct_answer"],
                 {"question_type": r["question_type"], "reasoning": r.get("reasoning", "other"), "options": r.get("options")})
            for r in records]


def build_all(train_scenes: list[Scene], eval_scenes: list[Scene], eval_records: list[dict], world, settings, seed: int) -> list[Item]:
    """Every benchmark item on `eval_scenes`: POPE (its popular and adversarial objects counted
    on `train_scenes`), MME, MMBench-style questions, short answers and the held-out REVERIE
    records, all drawn with `seed` so that every student answers the same questions."""
    frequency, together = object_statistics(train_scenes)
    return (pope(eval_scenes, world.kinds, frequency, together, settings.pope_objects, seed)
            + mme(eval_scenes, world.kinds, world.colors, seed)
            + mmbench(eval_scenes, world.kinds, world.colors, settings.mmbench_questions_per_image, seed)
            + short_answers(eval_scenes, seed)
            + reasoning(eval_records))
