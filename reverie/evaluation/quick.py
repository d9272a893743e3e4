"""A quick held-out check written into the tune metrics: does the student see?

One present and one absent object per held-out image (the absent one is the co-occurring
partner when possible), asked in POPE's template and scored by POPE's rule."""
from __future__ import annotations

import random
from pathlib import Path

from ..generate import load_scenes
from ..world import image_relpath
from .decode import Answerer, Question
from .scoring import pope_yes


def heldout_yes_no_accuracy(params, model_dir: str | Path, data_dir: str | Path) -> float:
    from ..tune import load_tuned

    n = params.tune.quick_eval_images
    if n == 0:
        return float("nan")
    scenes = sorted((s for s in load_scenes(data_dir).values() if s.split == "eval"), key=lambda s: s.image_id)[:n]
    partners = {}
    for a, b in params.world.cooccurrence_pairs:
        partners[a], partners[b] = b, a
    questions, labels = [], []
    for scene in scenes:
        rng = random.Random(f"quick:{scene.image_id}")
        present = sorted(scene.kinds())
        absent = [k for k in params.world.kinds if k not in present]
        traps = sorted({partners[k] for k in present if k in partners} - set(present))
        asks = [(rng.choice(present), True)]
        if absent:
            asks.append((rng.choice(traps or absent), False))
        for kind, label in asks:
            questions.append(Question(f"{scene.image_id}:{kind}", image_relpath(scene),
                                      f"Is there a {kind} in the image?\nAnswer the question using a single word or phrase."))
            labels.append(label)
    model, processor, _ = load_tuned(model_dir)
    answers = Answerer(model, processor, data_dir, max_new_tokens=4).answer(questions, params.evaluate.batch_size, progress=False)
    return sum(pope_yes(a) == y for a, y in zip(answers, labels)) / len(labels)
