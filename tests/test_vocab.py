"""The domain's words: plurals of object kinds (issue 23: the teacher wrote "How many crosss"),
and everything that counts objects writes them."""
import random
import re

import pytest

from reverie.vocab import LETTER, MAIN_VARIANTS, SHORT, VARIANT_SPECS, VARIANTS, plural

# the synthetic world's shapes and their plurals, written out by hand
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds", "star": "stars",
           "cross": "crosses", "bar": "bars", "pole": "poles", "ring": "rings"}
SINGULAR = {p: k for k, p in PLURALS.items()}


@pytest.mark.parametrize("kind, expected", [
    # regular: + s
    ("circle", "circles"), ("car", "cars"), ("dog", "dogs"), ("giraffe", "giraffes"),
    # a vowel before the y: + s
    ("toy", "toys"), ("key", "keys"), ("monkey", "monkeys"),
    # sibilants: + es
    ("cross", "crosses"), ("bus", "buses"), ("box", "boxes"), ("waltz", "waltzes"), ("bench", "benches"),
    ("brush", "brushes"), ("sandwich", "sandwiches"), ("toothbrush", "toothbrushes"),
    # a consonant before the y: -y + ies
    ("fly", "flies"), ("berry", "berries"), ("puppy", "puppies"),
    # irregular
    ("person", "people"), ("man", "men"), ("woman", "women"), ("child", "children"), ("mouse", "mice"),
    ("knife", "knives"), ("leaf", "leaves"), ("shelf", "shelves"), ("foot", "feet"),
    # invariant
    ("sheep", "sheep"), ("deer", "deer"), ("fish", "fish"), ("skis", "skis"), ("scissors", "scissors"),
    # several words: the last one is inflected, by the same rules
    ("traffic light", "traffic lights"), ("fire hydrant", "fire hydrants"), ("wine glass", "wine glasses"),
    ("teddy bear", "teddy bears"), ("butter knife", "butter knives"), ("police man", "police men"),
    ("dining table", "dining tables"), ("paper tray", "paper trays"), ("baby", "babies"),
    ("flock of sheep", "flock of sheep"),
    # the case of the word is kept
    ("Cross", "Crosses"), ("Traffic Light", "Traffic Lights"),
])
def test_plural_by_hand(kind, expected):
    assert plural(kind) == expected


def test_every_synthetic_shape_has_its_plural():
    from reverie.world import SHAPES

    assert set(SHAPES) == set(PLURALS)
    assert {k: plural(k) for k in SHAPES} == PLURALS


def test_variants_as_data():
    assert VARIANTS == ("response", "pos", "neg", "pos_neg", "pos_neg_shuffled", "response_1x")
    assert MAIN_VARIANTS == ("response", "pos", "neg", "pos_neg")
    assert {n: v.rationales for n, v in VARIANT_SPECS.items()} == {
        "response": (), "pos": ("positive",), "neg": ("negative",), "pos_neg": ("positive", "negative"),
        "pos_neg_shuffled": ("positive", "negative"), "response_1x": ()}
    assert [n for n, v in VARIANT_SPECS.items() if v.shuffled_rationales] == ["pos_neg_shuffled"]
    assert {n: v.step_share for n, v in VARIANT_SPECS.items()} == {
        "response": 1.0, "pos": 1.0, "neg": 1.0, "pos_neg": 1.0, "pos_neg_shuffled": 1.0, "response_1x": 1 / 3}


# ---- the teacher counts and compares in plurals -------------------------------------------------
def teacher(kinds):
    from reverie.settings import GenerateSettings
    from reverie.teachers.scene_graph import SceneGraphTeacher

    return SceneGraphTeacher(kinds, ["red", "green", "blue", "yellow"], {}, "v1",
                             generate=GenerateSettings(noise_rate=0.0), seed=0)


def only(kind, n):
    from reverie.world import Scene, SceneObject

    return Scene(f"only-{kind}", "train", 48, 48, 3,
                 [SceneObject(i, kind, "red", "small", 0, i, (16 * i, 0, 16 * i + 8, 8)) for i in range(n)])


@pytest.mark.parametrize("kind", list(PLURALS))
def test_the_teacher_counts_every_kind_in_its_plural(kind):
    t = teacher(list(PLURALS))
    item = t.write_rationales(t.counting_short(only(kind, 3), random.Random(0)))
    assert item.question == f"How many {PLURALS[kind]} are there in the image?\n{SHORT}"
    assert item.correct_answer == "3"
    assert f"There are 3 {PLURALS[kind]} in the image." in item.correct_rationale
    assert f"There are 3 {PLURALS[kind]} in the image." in item.incorrect_rationale
    assert t.judge.judge(item.question, item.correct_answer, item.confusing_answer, item.correct_rationale,
                         item.incorrect_rationale).consistent
    # one object: the singular
    one = t.write_rationales(t.counting_short(only(kind, 1), random.Random(0)))
    assert f"There is exactly one {kind} in the image." in one.correct_rationale


@pytest.mark.parametrize("kind", list(PLURALS))
def test_the_teacher_compares_every_kind_in_its_plural(kind):
    t = teacher(list(PLURALS))
    others = set()
    for seed in range(60):
        item = t.write_rationales(t.comparison_yes_no(only(kind, 2), random.Random(seed)))
        m = re.fullmatch(rf"Are there more {PLURALS[kind]} than (\w+) in the image\?\n{re.escape(SHORT)}", item.question)
        assert m and m[1] in SINGULAR and SINGULAR[m[1]] != kind, item.question
        assert item.correct_answer == "yes"
        assert f"There are 2 {PLURALS[kind]} in the image." in item.correct_rationale
        assert f"There is no {SINGULAR[m[1]]} in the image." in item.correct_rationale
        others.add(SINGULAR[m[1]])
    assert others == set(PLURALS) - {kind}  # every other kind, in its plural, in the second place


def test_no_generated_text_writes_kind_plus_s():
    """Over a whole generated dataset, base probes and benchmarks: every count names its kind by
    the plural in the table above, and no "crosss" (nor "crosse") is written anywhere."""
    from reverie.evaluation.suites import mme, short_answers
    from reverie.generate import build_teacher
    from reverie.settings import GenerateSettings, WorldSettings
    from reverie.student.curriculum import probe_conversations
    from reverie.world import AbsentRule, image_relpath, sample_world

    world = WorldSettings(train_images=150, eval_images=30)
    train, held_out = sample_world(world, seed=2)
    records = build_teacher(world, GenerateSettings(questions_per_image=10, noise_rate=0.0), 2).teach(train).records
    texts = [r[f] for r in records for f in ("question", "correct_rationale", "incorrect_rationale")]
    questions = [it.question for it in mme(held_out, world.kinds, world.colors, 0) + short_answers(held_out, 0)]
    probes = probe_conversations(train, world.kinds, world.colors, 6, 0, image_relpath,
                                 skills=("count", "verify_count"), absent=AbsentRule())
    questions += [c.turns[0].user for c in probes]
    counted = []
    for text in texts + questions:
        assert "crosss" not in text and "crosse " not in text, text
        counted += re.findall(r"How many (\w+) are there", text)
        counted += [w for pair in re.findall(r"Are there more (\w+) than (\w+) in", text) for w in pair]
        counted += re.findall(r"There are \d+ (\w+) in the image", text)
        counted += re.findall(r"Is the number of (\w+) in this image", text)
    assert counted and set(counted) <= set(PLURALS.values()), set(counted) - set(PLURALS.values())
    assert {"crosses", "circles"} <= set(counted)
    # the base's count checks ask in MME's phrasing, which keeps the plural even for one
    assert any(re.match(r"Is the number of \w+ in this image 1\?", q) for q in questions)


def test_letter_and_short_suffixes_are_llava_s():
    assert SHORT == "Answer the question using a single word or phrase."
    assert LETTER == "Answer with the option's letter from the given choices directly."
