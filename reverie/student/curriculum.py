"""The shared base student: trained once, every variant starts from it.

For the tiny default this is LLaVA-1.5's two data steps in miniature, on what the train scenes'
graphs say. Alignment: dense descriptions (every object with its size, colour, kind and
position, in the teacher's rationale grammar) and object lists (kinds in the world's fixed
order). Instruction tuning: short questions about one skill each, drawn fresh every epoch
(`SKILLS`): existence, counts, colours, sizes, positions, the shape at a place, the same as
multiple choice answered with the option's letter, and yes/no checks of a count, a colour or a
place. They are the miniature's LLaVA-665k (VQAv2, GQA and A-OKVQA ask such questions in these
formats): the student must be able to answer before reflective tuning can change how. An absent
kind is drawn by `base.unrelated_negatives`' rule (world.AbsentRule: uniformly, or mostly of a
theme the scene lacks, from epoch `base.unrelated_negatives_from`), never by POPE's popular or
adversarial rule. With `base.circular_choices` every multiple-choice question is asked in its
four circular shifts in one batch (`rotations`): a letter is then right as often as any other in
every batch, and only reading the options lowers the loss (measured: all four letters formed in
each of the three bases with it, in one base of eight without; docs/results.md). All of
it is mixed in the same batches from the first step. The vision tower was pretrained and frozen
before (vision.py). A pretrained checkpoint (`base.model.pretrained`) skips training and is only
copied into place.
"""
from __future__ import annotations

import random
import re

from ..vocab import BASE_SKILLS, LETTER, SHORT, plural
from ..world import AbsentRule, Scene, confusing_count, count_question_kind, position_name
from .samples import RESPONSE, Conversation, Turn

DESCRIBE = "Describe the image in detail."
LIST_OBJECTS = "What objects are in the image?"
EXISTENCE = "Is there a {kind} in the image?\n" + SHORT
LETTERS = "ABCD"
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


def inventory(scene: Scene, kinds: list[str]) -> str:
    """The objects kind by kind, in the world's kind order, each with where it is and how it looks
    ("circle at the top left, small and red. star at the center, large and blue."): the model
    reads each object's place, size and colour by its kind, the look-up every question about "the
    star" needs (measured: with it, descriptions got sizes and colours right for 94 % of objects,
    against 7 % without). Several objects of a kind follow in reading order."""
    order = {k: i for i, k in enumerate(kinds)}
    objects = sorted(scene.objects, key=lambda o: (order.get(o.kind, len(order)), o.row, o.col))
    return " ".join(f"{o.kind} at the {position_name(o.row, o.col, scene.grid)}, {o.size} and {o.color}."
                    for o in objects)


def describe_conversations(scenes: list[Scene], image_of, kinds: list[str], detailed: bool = False) -> list[Conversation]:
    """A description (objects by position) and an object list (objects by kind) per image: the
    kinds alone, or (`detailed`) the inventory of each object's place, size and colour."""
    out = []
    for s in scenes:
        out.append(Conversation(f"{s.image_id}:describe", image_of(s), (Turn(DESCRIBE, describe_scene(s), RESPONSE),),
                                "description"))
        listing = inventory(s, kinds) if detailed else list_objects(s, kinds)
        out.append(Conversation(f"{s.image_id}:{'inventory' if detailed else 'objects'}", image_of(s),
                                (Turn(LIST_OBJECTS, listing, RESPONSE),), "description"))
    return out


def _choice(stem: str, truth: str, pool: list[str], rng: random.Random) -> Turn | None:
    wrong = [p for p in pool if p != truth]
    if len(wrong) < 3:
        return None
    options = [truth] + rng.sample(wrong, 3)
    rng.shuffle(options)
    return _choice_turn(stem, options, truth)


def _choice_turn(stem: str, options: list[str], truth: str) -> Turn:
    lines = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    return Turn(f"{stem}\n{lines}\n{LETTER}", LETTERS[options.index(truth)], RESPONSE)


_OPTION = re.compile(r"^[A-D]\. (.*)$", re.M)


def rotations(turn: Turn) -> list[Turn]:
    """A multiple-choice turn (as `_choice` poses it) in each of its circular shifts: the options'
    order kept, the right one under every letter in turn, as MMBench's CircularEval asks it; the
    turn itself first."""
    options = _OPTION.findall(turn.user)
    truth = options[LETTERS.index(turn.assistant)]
    stem = turn.user.partition("\nA. ")[0]
    return [_choice_turn(stem, options[shift:] + options[:shift], truth) for shift in range(len(options))]


def _probe(skill: str, scene: Scene, kinds: list[str], colors: list[str], rng: random.Random,
           absent: AbsentRule) -> Turn | None:
    """One question of `skill` about `scene`, or None when the scene cannot pose it (no kind
    occurs once, none is absent). Yes/no questions are answered yes half the time."""
    unique = [o for o in scene.objects if scene.count(o.kind) == 1]
    places = sorted({position_name(r, c, scene.grid) for r in range(scene.grid) for c in range(scene.grid)})
    yes = rng.random() < 0.5
    if skill == "existence":  # as POPE asks, or as MME does ("in this image")
        kind = rng.choice(sorted(scene.kinds())) if yes else absent.draw(scene, kinds, rng)
        asked = EXISTENCE if rng.random() < 0.5 else "Is there a {kind} in this image?\n" + SHORT
        return Turn(asked.format(kind=kind), "yes" if yes else "no", RESPONSE) if kind else None
    if skill == "about":  # everything about one kind in one answer: whether, how many, where, how it looks
        kind = rng.choice(sorted(scene.kinds())) if rng.random() < 0.75 else absent.draw(scene, kinds, rng)
        if kind is None:
            return None
        n = scene.count(kind)
        if n == 0:
            answer = f"There is no {kind}."
        elif n > 1:
            answer = f"There are {n} {plural(kind)}."
        else:
            (obj,) = [o for o in scene.objects if o.kind == kind]
            answer = f"The {kind} is at the {position_name(obj.row, obj.col, scene.grid)}, {obj.size} and {obj.color}."
        return Turn(f"Tell me about the {kind}.", answer, RESPONSE)
    if skill in ("count", "verify_count"):
        kind = count_question_kind(scene, rng)
        n = scene.count(kind)
        if skill == "count":
            return Turn(f"How many {plural(kind)} are there in the image?\n{SHORT}", str(n), RESPONSE)
        said = n if yes else confusing_count(n, rng)
        return Turn(f"Is the number of {plural(kind)} in this image {said}?\n{SHORT}", "yes" if yes else "no", RESPONSE)
    obj = rng.choice(scene.objects)
    here = position_name(obj.row, obj.col, scene.grid)
    if skill == "shape":
        return Turn(f"What shape is the object at the {here}?\n{SHORT}", obj.kind, RESPONSE)
    if skill == "choice_shape":
        return _choice(f"What shape is the object at the {here}?", obj.kind, kinds, rng)
    if not unique:
        return None
    obj = rng.choice(unique)
    here = position_name(obj.row, obj.col, scene.grid)
    if skill == "color":
        return Turn(f"What color is the {obj.kind}?\n{SHORT}", obj.color, RESPONSE)
    if skill == "size":
        return Turn(f"What size is the {obj.kind}?\n{SHORT}", obj.size, RESPONSE)
    if skill == "position":
        return Turn(f"Where is the {obj.kind} in the image?\n{SHORT}", here, RESPONSE)
    if skill == "choice_color":
        return _choice(f"What color is the {obj.kind}?", obj.color, colors, rng)
    if skill == "verify_color":
        said = obj.color if yes else rng.choice([c for c in colors if c != obj.color])
        return Turn(f"Is the {obj.kind} in this image {said}?\n{SHORT}", "yes" if yes else "no", RESPONSE)
    if skill == "verify_position":
        said = here if yes else rng.choice([p for p in places if p != here])
        return Turn(f"Is the {obj.kind} at the {said} of this image?\n{SHORT}", "yes" if yes else "no", RESPONSE)
    raise ValueError(f"unknown skill {skill!r}; known: {', '.join(SKILLS)}")  # settings.py checks them first


CHOICE_SKILLS = ("choice_shape", "choice_color")


def choice_question(skill: str, scene: Scene, kinds: list[str], colors: list[str], rng: random.Random) -> Turn | None:
    """A multiple-choice question of `skill` (one of CHOICE_SKILLS) about `scene`, posed as the
    base is taught it and as MMBench asks it; None when the scene cannot pose it."""
    if skill not in CHOICE_SKILLS:
        raise ValueError(f"{skill!r} is not a multiple-choice skill ({', '.join(CHOICE_SKILLS)})")
    return _probe(skill, scene, kinds, colors, rng, AbsentRule())


SKILLS = BASE_SKILLS  # every skill `_probe` poses (reverie/vocab.py names them); base.skills picks and weights them


def probe_conversations(scenes: list[Scene], kinds: list[str], colors: list[str], per_image: int, seed: int,
                        image_of, skills: tuple[str, ...] = SKILLS, *, absent: AbsentRule,
                        circular: bool = False) -> list[Conversation]:
    """Per image, `per_image` one-turn questions cycling through `skills` from a random start (a
    skill the scene cannot pose is skipped): asked alone, as every benchmark asks (measured: the
    same questions as one conversation per image left existence at chance). With `circular`, a
    multiple-choice question comes in its four circular shifts (ids ending -r0 ... -r3), each
    counted against `per_image` (the last question may pass it)."""
    out = []
    for scene in scenes:
        rng = random.Random(f"{seed}:probe:{scene.image_id}")
        start = rng.randrange(len(skills))
        units: list[list[Turn]] = []
        for j in range(2 * len(skills) + per_image):
            if sum(map(len, units)) >= per_image:
                break
            skill = skills[(start + j) % len(skills)]
            turn = _probe(skill, scene, kinds, colors, rng, absent)
            if turn is not None:
                units.append(rotations(turn) if circular and skill in CHOICE_SKILLS else [turn])
        out += [Conversation(f"{scene.image_id}:probe{seed}-{j}" + (f"{_SHIFT_MARK}{r}" if len(unit) > 1 else ""),
                             image_of(scene), (turn,), "probe")
                for j, unit in enumerate(units) for r, turn in enumerate(unit)]
    return out


_SHIFT_MARK = "-r"
_SHIFT = re.compile(rf"{_SHIFT_MARK}\d+$")


def question_of(conversation_id: str) -> str:
    """The question a conversation asks, the same for each of its circular shifts."""
    return _SHIFT.sub("", conversation_id)


def base_curriculum(scenes: list[Scene], kinds: list[str], colors: list[str], settings, image_of, *,
                    absent: AbsentRule):
    """The base step's conversations and batch order, in two phases, each epoch's conversations
    shuffled together (probes drawn fresh every epoch):
    1. seeing (`settings.seeing_epochs`): descriptions, the kinds present and two existence probes
       per image, the curriculum that gave a student that sees on every world and seed measured;
    2. skills (the rest of `settings.epochs`): descriptions, the inventory of every object's place,
       size and colour by kind, and `settings.probes_per_image` questions of every skill: once
       the student finds a kind in the image, it learns to read what else is there.
    (Measured: every skill from the first step left existence at chance or slowed it 3x.)
    `settings.describe_epochs` > 0 puts epochs of descriptions alone before them (measured: it
    leaves the student answering "yes" to everything)."""
    rng = random.Random(f"{settings.seed}:batches")
    describe = describe_conversations(scenes, image_of, kinds)
    detailed = describe_conversations(scenes, image_of, kinds, detailed=True)
    conversations = list(describe) + list(detailed)
    batches: list[list[int]] = []

    def add_epochs(indices: list[int], epochs: float) -> None:
        # a plain shuffle: batches grouped by length (less padding, 1.6x faster) left existence
        # at 0.66 on the default world, against 1.0 shuffled (README, "Why the base step")
        size = settings.batch_size
        total = round(epochs * len(indices) / size)
        units: dict[str, list[int]] = {}  # a question's circular shifts travel together
        for i in indices:
            units.setdefault(question_of(conversations[i].id), []).append(i)
        while total > 0:
            order = list(units.values())
            rng.shuffle(order)
            chunk: list[list[int]] = [[]]
            for unit in order:  # a batch closes early rather than split a unit
                if len(chunk[-1]) + len(unit) > size:
                    chunk.append([])
                chunk[-1].extend(unit)
            chunk = chunk[:total]
            batches.extend(chunk)
            total -= len(chunk)

    first_phase = range(len(describe))
    second_phase = range(len(describe), len(conversations))
    add_epochs([i for i in first_phase if conversations[i].id.endswith(":describe")], settings.describe_epochs)
    epoch = 0.0
    while epoch < settings.epochs:
        seeing = epoch < settings.seeing_epochs
        span = min(1.0, settings.epochs - epoch, (settings.seeing_epochs - epoch) if seeing else 1.0)
        rule = absent if epoch >= settings.unrelated_negatives_from else AbsentRule(absent.themes)
        probes = probe_conversations(scenes, kinds, colors, 2 if seeing else settings.probes_per_image,
                                     settings.seed * 1000 + int(epoch * 100), image_of,
                                     ("existence",) if seeing else tuple(settings.skills), absent=rule,
                                     circular=settings.circular_choices)
        start = len(conversations)
        conversations += probes
        add_epochs(list(first_phase if seeing else second_phase) + list(range(start, len(conversations))), span)
        epoch += span
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
