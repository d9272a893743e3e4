"""The shared base student: trained once, every variant starts from it.

For the tiny default this is the alignment-like step of LLaVA: dense scene descriptions
(every object with its attributes and position, in the rationale grammar) plus yes/no
existence probes, all from the train split's scene graphs. A pretrained checkpoint
(`base.model.pretrained`) skips training and is only copied into place.
"""
from __future__ import annotations

import random

from ..world import Scene, position_name
from .samples import RESPONSE, Conversation, Turn

DESCRIBE = "Describe the image in detail."
EXISTENCE = "Is there a {kind} in the image?\nAnswer the question using a single word or phrase."


def describe_scene(scene: Scene) -> str:
    objects = sorted(scene.objects, key=lambda o: (o.row, o.col))
    return " ".join(f"There is a {o.size} {o.color} {o.kind} at the {position_name(o.row, o.col, scene.grid)}."
                    for o in objects)


def base_conversations(scenes: list[Scene], kinds: list[str], partners: dict[str, str], probes: int, seed: int,
                       image_of) -> list[Conversation]:
    """One description per image and `probes` existence probes. With at least as many probes
    as kinds, every kind is asked about (complete yes/no supervision: no image can be
    answered from memory of its few probes). Fewer alternate yes and no, and a "no" probe
    prefers the absent co-occurring partner, the hallucination trap."""
    out = []
    for scene in scenes:
        rng = random.Random(f"{seed}:base:{scene.image_id}")
        image = image_of(scene)
        out.append(Conversation(f"{scene.image_id}:describe", image, (Turn(DESCRIBE, describe_scene(scene), RESPONSE),), "description"))
        present = sorted(scene.kinds())
        absent = [k for k in kinds if k not in present]
        traps = sorted({partners[k] for k in present if k in partners} - set(present))
        if probes >= len(kinds):
            for kind in kinds:
                answer = "yes" if kind in present else "no"
                out.append(Conversation(f"{scene.image_id}:probe-{kind}", image,
                                        (Turn(EXISTENCE.format(kind=kind), answer, RESPONSE),), "probe"))
            continue
        for j in range(probes):
            if j % 2 == 0 or not absent:
                kind, answer = rng.choice(present), "yes"
            else:
                kind = rng.choice(traps) if traps and rng.random() < 0.5 else rng.choice(absent)
                answer = "no"
            out.append(Conversation(f"{scene.image_id}:probe{j}", image,
                                    (Turn(EXISTENCE.format(kind=kind), answer, RESPONSE),), "probe"))
    return out


def tokenizer_corpus(records: list[dict], conversations: list[Conversation]):
    for r in records:
        yield r["question"]
        yield r["correct_answer"]
        yield r["confusing_answer"]
        yield r["correct_rationale"]
        yield r["incorrect_rationale"]
    for c in conversations:
        for t in c.turns:
            yield t.user
            yield t.assistant
    yield "USER: ASSISTANT:"
