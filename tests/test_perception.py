"""The perception check's probes and controls, the chance answerers, and count questions that
a blind guess of "1" does not win."""
import random
from collections import Counter

import pytest

from reverie.evaluation.suites import Item, multiple_choice_items, short_answers
from reverie.evaluation.chance import BlindPrior, reference_rows
from reverie.base_step import base_gate
from reverie.evaluation.perception import choice_probes, description_recall, existence_probes, seeing_figures, shuffled
from reverie.evaluation.scoring import choice_figures
from reverie.settings import WorldSettings
from reverie.vocab import LETTER
from reverie.world import Scene, SceneObject, confusing_count, count_question_kind, position_name, sample_world


def obj(i, kind, color="red", size="small", row=0, col=0):
    return SceneObject(i, kind, color, size, row, col, (0, 0, 1, 1))


def test_existence_probes_are_balanced_and_true_of_the_scene():
    world = WorldSettings(train_images=1, eval_images=60)
    _, scenes = sample_world(world, seed=3)
    questions, labels = existence_probes(scenes, world.kinds)
    assert sum(labels) * 2 == len(labels) == 2 * len(scenes)
    by_image = {s.image_id: s for s in scenes}
    for q, label in zip(questions, labels):
        scene = by_image[q.qid.split(":")[0]]
        kind = q.qid.split(":")[1]
        assert (kind in scene.kinds()) is label
        assert f"Is there a {kind} in the image?" in q.text
    assert existence_probes(scenes, world.kinds) == (questions, labels)  # seeded
    assert existence_probes(scenes, world.kinds, seed=1) != (questions, labels)


def test_existence_probes_draw_the_absent_kind_uniformly():
    """No preference for the absent kinds that co-occur with those present (POPE's adversarial
    rule) or the frequent ones (its popular rule): each absent kind is asked about as often."""
    kinds = ["circle", "square", "triangle", "star", "cross", "bar", "pole", "ring"]
    present = ["circle", "square", "cross"]
    scenes = [Scene(f"s{i}", "eval", 48, 48, 3, [obj(j, k, row=j) for j, k in enumerate(present)]) for i in range(1000)]
    questions, labels = existence_probes(scenes, kinds, seed=0)
    asked = Counter(q.qid.split(":")[1] for q, label in zip(questions, labels) if not label)
    # 1000 draws from 5 absent kinds: 200 each, binomial SD sqrt(1000 * 0.2 * 0.8) = 12.6
    assert set(asked) == {"triangle", "star", "bar", "pole", "ring"}
    assert all(abs(n - 200) < 4 * 12.6 for n in asked.values()), asked
    # a scene that holds every kind has no absent kind to ask about: it is left out
    full = Scene("full", "eval", 48, 48, 3, [obj(j, k, row=j // 3, col=j % 3) for j, k in enumerate(kinds)])
    assert existence_probes([full], kinds) == ([], [])


THEMES = [["circle", "square", "triangle", "star"], ["cross", "bar", "pole", "ring"]]
KINDS = [k for theme in THEMES for k in theme]


def answered(policy, scenes):
    """The perception check's probes on `scenes`, answered by `policy(scene, kind) -> said yes`."""
    questions, labels = existence_probes(scenes, KINDS)
    by_id = {s.image_id: s for s in scenes}
    said = [policy(by_id[q.qid.rsplit(":", 1)[0]], q.qid.rsplit(":", 1)[1]) for q in questions]
    return questions, labels, said


def test_seeing_figures_split_the_answers_by_what_tempts_a_student():
    # circle and square present: triangle and star belong with them, cross..ring do not
    scenes = [Scene(f"s{i}", "eval", 48, 48, 3, [obj(0, "circle"), obj(1, "square", row=1)]) for i in range(400)]
    theme_of = {k: i for i, t in enumerate(THEMES) for k in t}

    def hallucinates(scene, kind):  # sees, but says yes to every kind of the scene's theme
        return kind in scene.kinds() or theme_of[kind] == 0

    questions, labels, said = answered(hallucinates, scenes)
    figures = seeing_figures(scenes, questions, labels, said, THEMES)
    related = sum(1 for q, label in zip(questions, labels) if not label and q.qid.endswith(("triangle", "star")))
    assert 0 < related < 400  # uniform absent draws: 2 of the 6 absent kinds are the theme's
    assert figures["heldout_present_recall"] == 1.0
    assert figures["heldout_unrelated_rejection"] == 1.0
    assert figures["heldout_theme_false_positive_rate"] == 1.0
    assert figures["heldout_seeing_accuracy"] == 1.0
    existence = sum(s == y for s, y in zip(said, labels)) / len(labels)
    assert existence == pytest.approx(1 - related / len(labels))  # what the old gate read: it fell
    metrics = {"perception_measured": True, "heldout_existence_accuracy": existence, "heldout_yes_ratio": 0.6,
               "shuffled_image_accuracy": 0.5, **figures}
    assert base_gate(metrics, 0.9) is None
    # a student that says yes to everything finds every present kind and rejects nothing: it fails
    questions, labels, said = answered(lambda scene, kind: True, scenes)
    blind = seeing_figures(scenes, questions, labels, said, THEMES)
    assert blind["heldout_seeing_accuracy"] == 0.5
    failure = base_gate({**metrics, **blind}, 0.9)
    assert "heldout_seeing_accuracy 0.500" in failure and "min_seeing_accuracy = 0.9" in failure
    # without themes every absent kind is unrelated: the gate reads balanced existence accuracy
    plain = seeing_figures(scenes, *answered(hallucinates, scenes), [])
    assert plain["heldout_theme_false_positive_rate"] is None
    assert plain["heldout_unrelated_rejection"] == pytest.approx(1 - related / (len(labels) / 2))
    # one theme of every kind leaves no absent kind unrelated: the gate reads all absent ones
    single = seeing_figures(scenes, *answered(hallucinates, scenes), [KINDS])
    assert single["heldout_unrelated_rejection"] == pytest.approx(1 - related / (len(labels) / 2))
    assert single["heldout_seeing_accuracy"] > 0.5


def test_the_shuffled_control_moves_every_question_to_another_image():
    world = WorldSettings(train_images=1, eval_images=10)
    _, scenes = sample_world(world, seed=0)
    questions, _ = existence_probes(scenes, world.kinds)
    moved = shuffled(questions)
    assert [q.text for q in moved] == [q.text for q in questions]
    assert all(m.image != q.image for m, q in zip(moved, questions))
    assert Counter(m.image for m in moved) == Counter(q.image for q in questions)


def test_description_recall_by_hand():
    scene = Scene("x", "eval", 48, 48, 3, [obj(0, "circle", "red", "small", 0, 0), obj(1, "star", "blue", "large", 1, 1),
                                           obj(2, "bar", "green", "small", 2, 2)])
    text = ("There is a small red circle at the top left. There is a small blue star at the center. "
            "There is a small green ring at the bottom right.")
    figures = description_recall([scene], [text])
    # circle: kind and attributes right; star: kind right, size wrong; bar: called a ring
    assert figures["description_object_recall"] == pytest.approx(2 / 3)
    assert figures["description_attribute_recall"] == pytest.approx(1 / 3)
    assert figures["description_kind_recall"] == pytest.approx(2 / 3)
    # the right kinds at the wrong places: named, but not where they are
    moved = "There is a small red star at the top left. There is a small red circle at the bottom right. There is a small red bar at the center."
    figures = description_recall([scene], [moved])
    assert figures["description_kind_recall"] == 1.0 and figures["description_object_recall"] == 0.0


def test_count_questions_ask_repeated_kinds_and_draw_wrong_counts_evenly():
    world = WorldSettings(train_images=1, eval_images=600)
    _, scenes = sample_world(world, seed=0)
    labels = Counter(i.label for i in short_answers(scenes, 0) if i.extra["category"] == "count")
    share_of_one = labels["1"] / sum(labels.values())
    assert share_of_one < 0.5, labels  # "1" is not the answer a blind guess wins with
    assert labels["2"] + labels["3"] > 0.4 * sum(labels.values())
    rng = random.Random(0)
    wrong = Counter(confusing_count(1, rng) for _ in range(4000))
    assert set(wrong) == {2, 3} and abs(wrong[2] - wrong[3]) < 300
    wrong = Counter(confusing_count(2, rng) for _ in range(4000))
    assert set(wrong) == {1, 3} and abs(wrong[1] - wrong[3]) < 300
    scene = Scene("x", "eval", 48, 48, 3, [obj(0, "star"), obj(1, "star"), obj(2, "bar")])
    asked = Counter(count_question_kind(scene, rng) for _ in range(1000))
    assert asked["star"] > 700


def test_the_blind_prior_learns_answers_from_train_items_without_images():
    train = [Item("pope", f"t{i}", f"train/{i}.png", "Is there a circle in the image?", "yes" if i < 7 else "no",
                  {"split": "random"}) for i in range(10)]
    train += [Item("pope", f"u{i}", f"train/{i}.png", "Is there a ring in the image?", "no", {"split": "random"})
              for i in range(3)]
    # "red" is the right colour of the circle in two train questions of three, whatever its letter
    for i, truth in enumerate(["red", "red", "blue"]):
        train += multiple_choice_items("mmbench", f"m{i}", "train/0.png", "What color is the circle?",
                                       ["blue", "red", "green", "white"], "ABCD"[["blue", "red", "green", "white"].index(truth)])
    prior = BlindPrior(train)
    ask = Item("pope", "e", "eval/0.png", "Is there a circle in the image?", "no", {"split": "random"})
    assert prior.answer(ask) == "yes"
    assert prior.answer(Item("pope", "e2", "eval/0.png", "Is there a ring in the image?", "yes", {"split": "random"})) == "no"
    unseen = Item("pope", "e3", "eval/0.png", "Is there a star in the image?", "yes", {"split": "random"})
    assert prior.answer(unseen) == "yes"  # never asked in train: the split's most common label (7 yes, 6 no)
    evals = multiple_choice_items("mmbench", "q", "eval/1.png", "What color is the circle?",
                                  ["green", "white", "red", "blue"], "C")
    answers = [prior.answer(it) for it in evals]
    assert [it.extra["options"]["ABCD".index(a)] for it, a in zip(evals, answers)] == ["red"] * 4
    rows = reference_rows(train, [ask] + evals)
    assert [r["answer"] for r in rows["always_yes"]] == ["yes"] * 5
    assert rows["blind_prior"][0]["answer"] == "yes" and rows["blind_prior"][0]["label"] == "no"


def test_choice_probes_ask_as_mmbench_does_and_their_letters_are_right():
    world = WorldSettings(train_images=1, eval_images=200)
    _, scenes = sample_world(world, seed=5)
    questions, letters = choice_probes(scenes, world.kinds, world.colors)
    by_id = {s.image_id: s for s in scenes}
    assert len(questions) > len(scenes)  # the shape question always, the colour one when a kind occurs once
    for q, letter in zip(questions, letters):
        scene, skill = by_id[q.qid.split(":")[0]], q.qid.split(":")[1]
        options = dict(line.split(". ", 1) for line in q.text.split("\n")[1:5])
        assert q.text.endswith(LETTER) and list(options) == ["A", "B", "C", "D"]
        truth = options[letter]
        if skill == "choice_shape":
            place = q.text.split("at the ")[1].split("?")[0]
            assert truth in {o.kind for o in scene.objects if position_name(o.row, o.col, scene.grid) == place}
        else:
            kind = q.text.split("What color is the ")[1].split("?")[0]
            assert [o.color for o in scene.objects if o.kind == kind] == [truth]
    # the right answer sits under every letter (the figures per letter need all four)
    assert set(letters) == set("ABCD") and min(Counter(letters).values()) > len(letters) / 8


def test_choice_figures_say_which_letters_a_student_maps():
    world = WorldSettings(train_images=1, eval_images=100)
    _, scenes = sample_world(world, seed=6)
    questions, letters = choice_probes(scenes, world.kinds, world.colors)
    reads = choice_figures(questions, letters, letters)
    assert reads["heldout_choice_accuracy"] == reads["heldout_choice_worst_letter"] == 1.0
    # answering "B" to everything: right only where B is right; MMBench's parser reads "B." and "(B)" too
    always_b = choice_figures(questions, letters, ["B." if i % 2 else "(B)" for i in range(len(letters))])
    share_b = letters.count("B") / len(letters)
    assert always_b["heldout_choice_accuracy"] == pytest.approx(share_b)
    assert always_b["heldout_choice_accuracy_B"] == 1.0
    assert always_b["heldout_choice_accuracy_A"] == always_b["heldout_choice_accuracy_D"] == 0.0
    assert always_b["heldout_choice_worst_letter"] == 0.0
    # naming the right option's content is right by MMBench's rule too; naming another is wrong
    def content(q, letter):
        return dict(line.split(". ", 1) for line in q.text.split("\n")[1:5])[letter]
    assert choice_figures(questions, letters, [content(q, x) for q, x in zip(questions, letters)])[
        "heldout_choice_accuracy"] == 1.0
    wrong = [content(q, "A" if x != "A" else "B") for q, x in zip(questions, letters)]
    assert choice_figures(questions, letters, wrong)["heldout_choice_accuracy"] == 0.0
    assert choice_figures([], [], []) == {}


def test_the_base_line_names_the_letters_a_student_answers():
    from reverie.evaluation.scoring import choice_text

    figures = {"heldout_choice_accuracy": 0.25, "heldout_choice_accuracy_A": 0.0, "heldout_choice_accuracy_B": 1.0,
               "heldout_choice_accuracy_C": 0.0, "heldout_choice_accuracy_D": 0.0, "heldout_choice_worst_letter": 0.0}
    text = choice_text(figures)
    assert "answered right 0.25" in text and "A 0.00, B 1.00, C 0.00, D 0.00;" in text
    assert choice_text({"heldout_existence_accuracy": 1.0}) == ""


def test_circular_choices_ask_each_question_under_every_letter_in_one_batch():
    """`base.circular_choices`: each multiple-choice question of the base is asked in its four
    circular shifts (MMBench's CircularEval), the right option under every letter once, the
    shifts in one batch, so that no letter is right more often than another within a batch and
    only reading the options earns a lower loss; the rest of the curriculum is unchanged."""
    from reverie.settings import BaseTrainSettings
    from reverie.student.curriculum import base_curriculum, rotations
    from reverie.world import AbsentRule, image_relpath

    world = WorldSettings(train_images=120, eval_images=1)
    train, _ = sample_world(world, seed=3)
    settings = BaseTrainSettings(epochs=2.0, seeing_epochs=1.0, batch_size=16, circular_choices=True)
    conversations, batches = base_curriculum(train, world.kinds, world.colors, settings, image_relpath,
                                             absent=AbsentRule())
    shifts: dict[str, list[int]] = {}
    for i, c in enumerate(conversations):
        if LETTER in c.turns[0].user:
            shifts.setdefault(c.id.rsplit("-r", 1)[0], []).append(i)
    assert len(shifts) > 100
    batch_of = {i: b for b, batch in enumerate(batches) for i in batch}
    for unit in shifts.values():
        turns = [conversations[i].turns[0] for i in unit]
        assert sorted(t.assistant for t in turns) == list("ABCD")
        rights = {dict(line.split(". ", 1) for line in t.user.split("\n")[1:5])[t.assistant] for t in turns}
        assert len(rights) == 1  # the same right option under each letter
        assert len({batch_of[i] for i in unit if i in batch_of}) <= 1
    assert all(len(b) <= settings.batch_size for b in batches)
    # a turn's shifts start with the turn itself
    turn = conversations[next(iter(shifts.values()))[0]].turns[0]
    assert rotations(turn)[0] == turn
    # off (the default): one question, one letter, the same curriculum as before the option existed
    plain, plain_batches = base_curriculum(train, world.kinds, world.colors, settings.model_copy(update={"circular_choices": False}),
                                           image_relpath, absent=AbsentRule())
    assert not any(c.id.endswith("-r0") for c in plain)
