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
LIST_OBJECTS = "What objects are in the image?"
EXISTENCE = "Is there a {kind} in the image?\nAnswer the question using a single word or phrase."


def describe_scene(scene: Scene) -> str:
    objects = sorted(scene.objects, key=lambda o: (o.row, o.col))
    return " ".join(f"There is a {o.size} {o.color} {o.kind} at the {position_name(o.row, o.col, scene.grid)}."
                    for o in objects)


def list_objects(scene: Scene, kinds: list[str]) -> str:
    """The kinds present, in the world's fixed kind order: to write the next one the model
    must check, kind by kind, which are in the image (existence, densely supervised)."""
    present = scene.kinds()
    return ", ".join(k for k in kinds if k in present) + "."


def describe_conversations(scenes: list[Scene], image_of, kinds: list[str] | None = None) -> list[Conversation]:
    """A description per image (objects in reading order) and, given the kinds, an object
    list (kinds in a fixed order). The description keys objects by position; the list keys
    them by kind, which is what an existence question asks."""
    out = []
    for s in scenes:
        out.append(Conversation(f"{s.image_id}:describe", image_of(s), (Turn(DESCRIBE, describe_scene(s), RESPONSE),), "description"))
        if kinds:
            out.append(Conversation(f"{s.image_id}:objects", image_of(s), (Turn(LIST_OBJECTS, list_objects(s, kinds), RESPONSE),), "description"))
    return out


def probe_conversations(scenes: list[Scene], kinds: list[str], partners: dict[str, str], probes: int, seed: int,
                        image_of) -> list[Conversation]:
    """`probes` yes/no existence questions per image, alternating yes and no; a "no" probe
    takes the absent co-occurring partner half the time (the hallucination trap)."""
    out = []
    for scene in scenes:
        rng = random.Random(f"{seed}:probe:{scene.image_id}")
        present = sorted(scene.kinds())
        absent = [k for k in kinds if k not in present]
        traps = sorted({partners[k] for k in present if k in partners} - set(present))
        for j in range(probes):
            if j % 2 == 0 or not absent:
                kind, answer = rng.choice(present), "yes"
            else:
                kind = rng.choice(traps) if traps and rng.random() < 0.5 else rng.choice(absent)
                answer = "no"
            out.append(Conversation(f"{scene.image_id}:probe{seed}-{j}", image_of(scene),
                                    (Turn(EXISTENCE.format(kind=kind), answer, RESPONSE),), "probe"))
    return out


def base_curriculum(scenes: list[Scene], kinds: list[str], partners: dict[str, str], settings, image_of):
    """The base step's conversations and batch order.

    Phase 1: descriptions alone, so the image features form first. Phase 2: each epoch, the
    descriptions mixed at random with freshly drawn existence probes, in the same batches.
    Measured on the default world: probes from the start, or probes in batches of their own
    (length grouping), or the same few probes every epoch, all left a student that ignored
    the image and answered from the co-occurrence prior."""
    rng = random.Random(f"{settings.seed}:batches")
    describe = describe_conversations(scenes, image_of, kinds)
    conversations = list(describe)
    batches: list[list[int]] = []

    def add_epochs(indices: list[int], epochs: float) -> None:
        total = round(epochs * len(indices) / settings.batch_size)
        while total > 0:
            order = list(indices)
            rng.shuffle(order)
            chunk = [order[i:i + settings.batch_size] for i in range(0, len(order), settings.batch_size)][:total]
            batches.extend(chunk)
            total -= len(chunk)

    add_epochs(list(range(len(describe))), settings.describe_epochs)
    epoch = 0
    while epoch < settings.epochs:
        probes = probe_conversations(scenes, kinds, partners, settings.existence_probes_per_image,
                                     settings.seed * 1000 + epoch, image_of)
        first = len(conversations)
        conversations += probes
        add_epochs(list(range(len(describe))) + list(range(first, len(conversations))), min(1.0, settings.epochs - epoch))
        epoch += 1
    return conversations, batches


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
