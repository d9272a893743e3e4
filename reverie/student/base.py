"""The shared base student: trained once, every variant starts from it.

For the tiny default this is LLaVA's alignment step on what the train scenes' graphs say:
dense descriptions (every object with its size, colour, kind and position, in the teacher's
rationale grammar), object lists (kinds in the world's fixed order) and short probes (is there
a <kind>?), all mixed in the same batches from the first step. The vision tower was pretrained
and frozen before (vision.py). A pretrained checkpoint (`base.model.pretrained`) skips
training and is only copied into place.
"""
from __future__ import annotations

import random
import re

from ..vocab import SHORT
from ..world import Scene, position_name
from .samples import RESPONSE, Conversation, Turn

DESCRIBE = "Describe the image in detail."
LIST_OBJECTS = "What objects are in the image?"
EXISTENCE = "Is there a {kind} in the image?\n" + SHORT
COLOR = "What color is the {kind}?\n" + SHORT
SIZE = "What size is the {kind}?\n" + SHORT
_SENTENCE = re.compile(r"There is an? (\w+) (\w+) (\w+) at the ([\w\- ]+?)\.")


def describe_scene(scene: Scene) -> str:
    """One sentence per object in reading order, in the grammar of the teacher's rationales."""
    objects = sorted(scene.objects, key=lambda o: (o.row, o.col))
    return " ".join(f"There is a {o.size} {o.color} {o.kind} at the {position_name(o.row, o.col, scene.grid)}."
                    for o in objects)


def parse_description(text: str) -> list[dict]:
    """The objects a description in `describe_scene`'s grammar names."""
    return [{"kind": kind, "position": position, "size": size, "color": color}
            for size, color, kind, position in _SENTENCE.findall(text)]


def list_objects(scene: Scene, kinds: list[str]) -> str:
    """The kinds present, in the world's fixed kind order: to write the next one the model
    must check, kind by kind, which are in the image (existence, densely supervised)."""
    present = scene.kinds()
    return ", ".join(k for k in kinds if k in present) + "."


def describe_conversations(scenes: list[Scene], image_of, kinds: list[str]) -> list[Conversation]:
    """A description (objects by position) and an object list (objects by kind) per image."""
    out = []
    for s in scenes:
        out.append(Conversation(f"{s.image_id}:describe", image_of(s), (Turn(DESCRIBE, describe_scene(s), RESPONSE),),
                                "description"))
        out.append(Conversation(f"{s.image_id}:objects", image_of(s),
                                (Turn(LIST_OBJECTS, list_objects(s, kinds), RESPONSE),), "description"))
    return out


def probe_conversations(scenes: list[Scene], kinds: list[str], partners: dict[str, str], existence: int,
                        attributes: int, seed: int, image_of) -> list[Conversation]:
    """Per image, `existence` yes/no questions alternating yes and no (a "no" takes the absent
    co-occurring partner half the time: the hallucination trap) and `attributes` pairs of
    colour and size questions about objects whose kind occurs once."""
    out = []
    for scene in scenes:
        rng = random.Random(f"{seed}:probe:{scene.image_id}")
        present = sorted(scene.kinds())
        absent = [k for k in kinds if k not in present]
        traps = sorted({partners[k] for k in present if k in partners} - set(present))
        turns = []
        for j in range(existence):
            if j % 2 == 0 or not absent:
                turns.append(Turn(EXISTENCE.format(kind=rng.choice(present)), "yes", RESPONSE))
            else:
                kind = rng.choice(traps) if traps and rng.random() < 0.5 else rng.choice(absent)
                turns.append(Turn(EXISTENCE.format(kind=kind), "no", RESPONSE))
        unique = [o for o in scene.objects if scene.count(o.kind) == 1]
        for _ in range(attributes if unique else 0):
            obj = rng.choice(unique)
            turns.append(Turn(COLOR.format(kind=obj.kind), obj.color, RESPONSE))
            obj = rng.choice(unique)
            turns.append(Turn(SIZE.format(kind=obj.kind), obj.size, RESPONSE))
        out += [Conversation(f"{scene.image_id}:probe{seed}-{j}", image_of(scene), (turn,), "probe")
                for j, turn in enumerate(turns)]
    return out


def base_curriculum(scenes: list[Scene], kinds: list[str], partners: dict[str, str], settings, image_of):
    """The base step's conversations and batch order: each epoch, the descriptions and freshly
    drawn probes shuffled together. `settings.describe_epochs` > 0 puts epochs of descriptions
    alone before them (measured: it leaves the student answering "yes" to everything)."""
    rng = random.Random(f"{settings.seed}:batches")
    describe = describe_conversations(scenes, image_of, kinds)
    conversations = list(describe)
    batches: list[list[int]] = []

    def add_epochs(indices: list[int], epochs: float) -> None:
        # a plain shuffle: batches grouped by length (less padding, 1.6x faster) left existence
        # at 0.66 on the default world, against 1.0 shuffled (README, "Why the base step")
        size = settings.batch_size
        total = round(epochs * len(indices) / size)
        while total > 0:
            order = list(indices)
            rng.shuffle(order)
            chunk = [order[i:i + size] for i in range(0, len(order), size)][:total]
            batches.extend(chunk)
            total -= len(chunk)

    add_epochs(list(range(len(describe))), settings.describe_epochs)
    epoch = 0
    while epoch < settings.epochs:
        probes = probe_conversations(scenes, kinds, partners, settings.existence_probes_per_image,
                                     settings.attribute_probes_per_image, settings.seed * 1000 + epoch, image_of)
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
