"""Every teacher answer is checked against the scene graph by code written independently
of the teacher: it reads the question text and computes the answer from the objects."""
import random
import re

import pytest

from reverie.generate import build_teacher
from reverie.settings import GenerateSettings, WorldSettings
from reverie.teachers.judge import SceneGraphJudge
from reverie.world import companions, position_name, sample_world


# the synthetic kinds' plurals, written out by hand (a KeyError is a plural the checker does not
# know: "crosss", say)
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
           "cross": "crosses", "bar": "bars", "pole": "poles", "ring": "rings"}
SINGULAR = {p: k for k, p in PLURALS.items()}


def where(scene, obj):
    return position_name(obj.row, obj.col, scene.grid)


def options_of(question):
    return dict(re.findall(r"^([A-D])\. (.+)$", question, re.M))


def independent_answer(scene, question):
    q = question.split("\n")[0]
    objs = scene.objects
    if m := re.fullmatch(r"Is there a (\w+) in the image\?", q):
        return "yes" if any(o.kind == m[1] for o in objs) else "no"
    if m := re.fullmatch(r"How many (\w+) are there in the image\?", q):
        return str(sum(o.kind == SINGULAR[m[1]] for o in objs))
    if m := re.fullmatch(r"What color is the (\w+)\?", q):
        (obj,) = [o for o in objs if o.kind == m[1]]
        return obj.color
    if m := re.fullmatch(r"What shape is the object at the (.+)\?", q):
        (obj,) = [o for o in objs if where(scene, o) == m[1]]
        return {v: k for k, v in options_of(question).items()}[obj.kind]
    if m := re.fullmatch(r"Is the (\w+) to the left of the (\w+)\?", q):
        (a,) = [o for o in objs if o.kind == m[1]]
        (b,) = [o for o in objs if o.kind == m[2]]
        return "yes" if a.col < b.col else "no"
    if m := re.fullmatch(r"Where is the (\w+) in the image\?", q):
        (obj,) = [o for o in objs if o.kind == m[1]]
        return where(scene, obj)
    if m := re.fullmatch(r"Are there more (\w+) than (\w+) in the image\?", q):
        a, b = SINGULAR[m[1]], SINGULAR[m[2]]
        return "yes" if sum(o.kind == a for o in objs) > sum(o.kind == b for o in objs) else "no"
    if m := re.fullmatch(r"Which object is larger, the (\w+) or the (\w+)\?", q):
        (a,) = [o for o in objs if o.kind == m[1]]
        (b,) = [o for o in objs if o.kind == m[2]]
        bigger = a if a.size == "large" else b
        return {v: k for k, v in options_of(question).items()}[bigger.kind]
    if m := re.fullmatch(r"What color is the object to the right of the (\w+)\?", q):
        (a,) = [o for o in objs if o.kind == m[1]]
        right = min((o for o in objs if o.row == a.row and o.col > a.col), key=lambda o: o.col)
        return right.color
    if m := re.fullmatch(r"Describe the object at the (.+)\.", q):
        (obj,) = [o for o in objs if where(scene, o) == m[1]]
        return f"a {obj.size} {obj.color} {obj.kind}"
    raise AssertionError(f"question the checker does not know: {q}")


def sentence_true(scene, sentence):
    if m := re.fullmatch(r"There is a (small|large) (\w+) (\w+) at the (.+)\.", sentence):
        return any((o.size, o.color, o.kind, where(scene, o)) == m.groups() for o in scene.objects)
    if m := re.fullmatch(r"There is no (\w+) in the image\.", sentence):
        return all(o.kind != m[1] for o in scene.objects)
    if m := re.fullmatch(r"There is exactly one (\w+) in the image\.", sentence):
        return sum(o.kind == m[1] for o in scene.objects) == 1
    if m := re.fullmatch(r"There are (\d+) (\w+) in the image\.", sentence):
        return sum(o.kind == SINGULAR[m[2]] for o in scene.objects) == int(m[1])
    return None  # conclusions and rejections are checked against the answers


@pytest.fixture(scope="module")
def generated():
    world = WorldSettings(train_images=250, eval_images=10)
    clean = GenerateSettings(noise_rate=0.0, questions_per_image=6)
    teacher = build_teacher(world, clean, 7)
    train, held_out = sample_world(world, seed=7)
    scenes = {s.image_id: s for s in train + held_out}
    records = teacher.teach(list(scenes.values())).records
    return scenes, records


def test_every_answer_and_rationale_is_true_of_the_scene_graph(generated):
    scenes, records = generated
    for r in records:
        scene = scenes[r["image"].split("/")[-1][:-4]]
        truth = independent_answer(scene, r["question"])
        assert r["correct_answer"] == truth, r
        assert r["confusing_answer"] != truth, r
        for rationale in (r["correct_rationale"], r["incorrect_rationale"]):
            for sentence in re.findall(r"[^.]+\.", rationale):
                assert sentence_true(scene, sentence.strip()) in (True, None), (sentence, r["id"])
        assert r["correct_rationale"].endswith(f"So the answer is {truth}.")
        assert r["incorrect_rationale"].startswith(f"The answer {r['confusing_answer']} is wrong.")


def test_all_formats_and_reasoning_kinds_are_generated(generated):
    _, records = generated
    assert {r["question_type"] for r in records} == {"yes_no", "multiple_choice", "short_answer", "open_ended"}
    assert {r["reasoning"] for r in records} >= {"existence", "counting", "attribute", "spatial", "comparison", "multi_step"}


def test_confusing_answers_are_hard(generated):
    scenes, records = generated
    counting = [r for r in records if r["reasoning"] == "counting"]
    # a wrong count drawn evenly from 1 to max(3, n + 1) (world.confusing_count): never the
    # truth, and not always one off, so that "one more" does not give the wrong answer away
    for r in counting:
        n, wrong = int(r["correct_answer"]), int(r["confusing_answer"])
        assert wrong != n and 1 <= wrong <= max(3, n + 1), r
    assert {int(r["confusing_answer"]) - int(r["correct_answer"]) for r in counting} - {-1, 1}
    # the hard wrong shape is the kind's most frequent companion in the TRAIN scenes (the objects
    # that go with it), for eval images too
    world = WorldSettings(train_images=250, eval_images=10)
    train, _ = sample_world(world, seed=7)
    partner = companions(train)
    shapes = [r for r in records if r["question"].startswith("What shape is the object at the")]
    assert len(shapes) > 50 and {r["split"] for r in shapes} == {"train", "eval"}
    for r in shapes:
        truth_kind = r["options"]["ABCD".index(r["correct_answer"])]
        assert r["options"]["ABCD".index(r["confusing_answer"])] == partner[truth_kind], r
    # an absent kind asked about is absent, and any absent kind may be asked (world.absent_kind:
    # uniform; tests/test_train_only.py measures that it follows no POPE rule)
    absent_probes = [r for r in records if r["reasoning"] == "existence" and r["correct_answer"] == "no"]
    asked = {re.match(r"Is there a (\w+)", r["question"])[1] for r in absent_probes}
    assert len(absent_probes) > 20 and asked == set(world.kinds)


def test_judge_catches_injected_errors_and_passes_clean_items():
    world = WorldSettings(train_images=300, eval_images=10)
    noisy = GenerateSettings(noise_rate=0.3, questions_per_image=4)
    teacher = build_teacher(world, noisy, 11)
    train, _ = sample_world(world, seed=11)
    records = teacher.teach(train).records
    injected = [r for r in records if r["provenance"]["injected_error"]]
    clean = [r for r in records if not r["provenance"]["injected_error"]]
    assert {r["provenance"]["injected_error"] for r in injected} == {"wrong_answer", "contradicting_rationale"}
    caught = sum(not r["judge"]["consistent"] for r in injected) / len(injected)
    false_alarms = sum(not r["judge"]["consistent"] for r in clean) / len(clean)
    assert caught >= 0.95
    assert false_alarms <= 0.05


def test_judge_names_the_contradiction():
    judge = SceneGraphJudge()
    verdict = judge.judge("How many circles are there in the image?", "2", "3",
                          "There are 2 circles in the image. So the answer is 2.",
                          "The answer 3 is wrong. There are 3 circles in the image.")
    assert not verdict.consistent and "counts" in verdict.reason
    verdict = judge.judge("Is there a star in the image?", "no", "yes",
                          "There is no star in the image. So the answer is no.",
                          "The answer yes is wrong. There is a small red star at the top left.")
    assert not verdict.consistent and "no star" in verdict.reason
    assert judge.judge("Is there a star in the image?", "no", "yes",
                       "There is no star in the image. So the answer is no.",
                       "The answer yes is wrong. There is no star in the image.").consistent
