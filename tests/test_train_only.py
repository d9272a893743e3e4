"""The instrument's integrity (issue 23): everything derived from training data (POPE's
frequency and co-occurrence orders, the blind prior, the teachers' companions) is measured on
the train scenes only, and training never draws its negatives by POPE's popular or adversarial
rule. Each test changes the held-out side and checks that nothing trained on changes, and
checks that the change would have shown had the held-out side leaked in."""
from __future__ import annotations

import math
import random
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from reverie.evaluation.chance import BlindPrior
from reverie.evaluation.run import benchmark_items, score_references
from reverie.evaluation.suites import build_all, object_statistics, pope
from reverie.generate import build_teacher, generate_dataset
from reverie.io import read_jsonl, write_jsonl
from reverie.settings import GenerateSettings, Params, WorldSettings
from reverie.student.curriculum import probe_conversations
from reverie.world import AbsentRule, Scene, SceneObject, companions, image_relpath, load_scenes, sample_world
from tests.conftest import tiny_params_dict

THEMES = [["circle", "square", "triangle", "star"], ["cross", "bar", "pole", "ring"]]
THEME_OF = {k: i for i, theme in enumerate(THEMES) for k in theme}


# ---- a tiny generated data folder, and copies of it with the held-out side rewritten ------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_only")
    data = tiny_params_dict(root)
    data["world"].update(train_images=60, eval_images=40)
    data["evaluate"]["eval_images"] = None  # every held-out scene: a leak from any of them would show
    params = Params.model_validate(data)
    result = generate_dataset(params, root / "data", progress=False)
    kept = [r for r in result.raw if r["judge"]["consistent"]]
    write_jsonl(root / "split" / "train.jsonl", [r for r in kept if r["split"] == "train"])
    write_jsonl(root / "split" / "eval.jsonl", [r for r in kept if r["split"] == "eval"])
    return params, root


def copy_of(root: Path, dest: Path, scenes=None, eval_records=None) -> tuple[Path, Path]:
    """The scene graphs and split files of `root` under `dest`, with the eval scenes and the
    eval records replaced when given (benchmark items read no image)."""
    data, split = dest / "data", dest / "split"
    (data / "scenes").mkdir(parents=True)
    split.mkdir()
    if scenes is None:
        shutil.copy(root / "data" / "scenes" / "scenes.jsonl", data / "scenes" / "scenes.jsonl")
    else:
        write_jsonl(data / "scenes" / "scenes.jsonl", [s.to_json() for s in scenes])
    shutil.copy(root / "split" / "train.jsonl", split / "train.jsonl")
    if eval_records is None:
        shutil.copy(root / "split" / "eval.jsonl", split / "eval.jsonl")
    else:
        write_jsonl(split / "eval.jsonl", eval_records)
    return data, split


def objects(*kinds: str) -> list[SceneObject]:
    return [SceneObject(i, k, "red", "small", i // 3, i % 3, (16 * (i % 3), 16 * (i // 3), 16 * (i % 3) + 8, 16 * (i // 3) + 8))
            for i, k in enumerate(kinds)]


def pope_negatives(items, split: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for it in items:
        if it.benchmark == "pope" and it.extra["split"] == split and it.label == "no":
            out.setdefault(it.image, []).append(it.extra["object"])
    return out


def test_pope_orders_come_from_the_train_scenes_whatever_the_eval_scenes_hold(dataset, tmp_path):
    """The eval scenes are rewritten: 32 hold a ring and a triangle (kinds of different themes,
    rarely seen together in training), 8 a ring alone. Counted on every scene, the triangle would
    become the most frequent kind and the ring's most frequent companion, so the ring-only
    images' popular and adversarial negatives would both be "triangle"."""
    params, root = dataset
    original = load_scenes(root / "data")
    train = sorted((s for s in original.values() if s.split == "train"), key=lambda s: s.image_id)
    held_out = sorted((s for s in original.values() if s.split == "eval"), key=lambda s: s.image_id)
    assert len(train) == 60 and len(held_out) == 40
    rewritten = [Scene(s.image_id, "eval", s.width, s.height, s.grid,
                       objects("ring", "triangle") if i < 32 else objects("ring")) for i, s in enumerate(held_out)]
    data, split = copy_of(root, tmp_path / "rewritten", train + rewritten)
    eval_items, train_items = benchmark_items(params, data, split)
    before_eval, before_train = benchmark_items(params, root / "data", root / "split")
    # what the blind prior learns from is the same
    assert train_items == before_train
    # the eval questions are POPE's on the rewritten scenes, ordered by the train scenes' counts
    seed, per_image, kinds = params.project.seed, params.evaluate.pope_objects, params.world.kinds
    frequency, together = object_statistics(train)
    expected = pope(rewritten, kinds, frequency, together, per_image, seed)
    assert [it for it in eval_items if it.benchmark == "pope"] == expected
    ring_only = {image_relpath(s) for s in rewritten[32:]}
    for split_name in ("popular", "adversarial"):
        got = pope_negatives(eval_items, split_name)
        assert all(got[image] != ["triangle"] for image in ring_only), (split_name, got)
    # had the eval scenes been counted, the ring-only images would have asked about the triangle
    leaked = pope(rewritten, kinds, *object_statistics(train + rewritten), per_image, seed)
    for split_name in ("popular", "adversarial"):
        assert all(pope_negatives(leaked, split_name)[image] == ["triangle"] for image in ring_only), split_name
    # and the other benchmarks are built on the rewritten scenes alone
    assert {it.image for it in eval_items if it.benchmark in ("pope", "mme", "mmbench", "short_answer")} == \
        {image_relpath(s) for s in rewritten}


def flipped(record: dict) -> dict:
    """The record with a different correct answer (and so a different label for its eval item)."""
    answer = record["correct_answer"]
    new = {"yes": "no", "no": "yes"}.get(answer) or (str(int(answer) + 1) if answer.isdigit() else
                                                     (next(x for x in "ABCD" if x != answer) if answer in "ABCD" else
                                                      answer + " (changed)"))
    return record | {"correct_answer": new}


def test_the_blind_prior_learns_from_train_items_only(dataset, tmp_path):
    params, root = dataset
    eval_records = read_jsonl(root / "split" / "eval.jsonl")
    assert len(eval_records) > 50
    changed = [flipped(r) for r in eval_records]
    data, split = copy_of(root, tmp_path / "flipped", eval_records=changed)

    def prior_rows(data_dir, split_dir, name):
        score_references(params, data_dir, split_dir, tmp_path / name)
        return {row["qid"]: row for row in read_jsonl(tmp_path / name / "blind_prior.jsonl")}

    before = prior_rows(root / "data", root / "split", "before")
    after = prior_rows(data, split, "after")
    assert before.keys() == after.keys()
    reasoning = [q for q, row in before.items() if row["benchmark"] == "reasoning"]
    assert len(reasoning) == len(eval_records)
    assert all(after[q]["label"] != before[q]["label"] for q in reasoning)  # the labels did change
    assert {q: row["answer"] for q, row in after.items()} == {q: row["answer"] for q, row in before.items()}
    # the answers are those of a prior built from the train scenes and records alone
    scenes = load_scenes(root / "data")
    train_scenes = sorted((s for s in scenes.values() if s.split == "train"), key=lambda s: s.image_id)
    eval_items, _ = benchmark_items(params, root / "data", root / "split")
    train_items = build_all(train_scenes, train_scenes, read_jsonl(root / "split" / "train.jsonl"), params.world,
                            params.evaluate, params.project.seed)
    prior = BlindPrior(train_items)
    assert {it.qid: prior.answer(it) for it in eval_items} == {q: row["answer"] for q, row in before.items()}
    # a prior that had also read the changed eval labels would answer some questions otherwise
    flipped_items, _ = benchmark_items(params, data, split, train=False)
    leaky = BlindPrior(train_items + flipped_items)
    assert any(leaky.answer(it) != prior.answer(it) for it in flipped_items)


def test_the_synthetic_teacher_s_companions_are_the_train_scenes(monkeypatch):
    # few train scenes and many eval ones, unthemed: the two splits' companions differ
    world = WorldSettings(train_images=25, eval_images=400)
    train, held_out = sample_world(world, seed=1)
    assert companions(train) != companions(train + held_out)
    teacher = build_teacher(world, GenerateSettings(), 1)
    assert teacher.partners == companions(train)
    # the train scenes come first from the world's one stream: more or fewer eval images change nothing
    assert build_teacher(world.model_copy(update={"eval_images": 3}), GenerateSettings(), 1).partners == teacher.partners
    # and build_teacher asks for nothing but train scenes
    seen = []

    def spy(scenes):
        seen.append({s.split for s in scenes})
        return companions(scenes)

    monkeypatch.setattr("reverie.generate.companions", spy)
    build_teacher(world, GenerateSettings(), 1)
    assert seen == [{"train"}]


def test_annotated_partners_come_from_the_train_images_only(tmp_path):
    """COCO annotations whose eval images pair every dog with a car, and whose train images pair
    it with a person (five of them; the others hold a bicycle and a traffic light): the teacher's
    partners know the person, never the car."""
    from reverie.annotations import read_annotations
    from reverie.data_import import split_for
    from tests.test_annotations import write_coco

    images = [{"id": i, "file_name": f"{i:06d}.jpg", "width": 90, "height": 90} for i in range(1, 41)]
    splits = {i["id"]: split_for(f"{i['id']:06d}", 0.3) for i in images}
    assert Counter(splits.values())["eval"] >= 6 and Counter(splits.values())["train"] >= 6
    annotations, train_seen = [], 0
    for image in images:
        if splits[image["id"]] == "eval":
            pair = (2, 4)  # dog, car
        else:
            pair = (2, 1) if train_seen < 5 else (5, 3)  # dog, person; then bicycle, traffic light
            train_seen += 1
        for j, category in enumerate(pair):
            annotations.append({"id": 2 * image["id"] + j, "image_id": image["id"], "category_id": category,
                                "bbox": [30 * j, 30 * j, 20, 20]})
    source = read_annotations(write_coco(tmp_path, images, annotations))
    assert {s.image_id: s.split for s in source.scenes} == {f"{i:06d}": splits[i] for i in splits}
    assert source.partners == {"bicycle": "traffic light", "dog": "person", "person": "dog", "traffic light": "bicycle"}
    assert companions(source.scenes)["dog"] == "car"  # what every image would have said


# ---- training never asks about absent kinds by POPE's rules ------------------------------------
@pytest.fixture(scope="module")
def themed():
    world = WorldSettings(train_images=1500, eval_images=1, themes=THEMES, theme_bias=0.95)
    train, _ = sample_world(world, seed=0)
    return world, train


def same_theme(scene: Scene, kind: str) -> bool:
    return THEME_OF[kind] in {THEME_OF[k] for k in scene.kinds()}


def draw_probability(rule: AbsentRule, scene: Scene, kind: str, kinds: list[str]) -> float:
    """The chance that `rule` asks about `kind` on `scene`, worked out by hand from its
    definition: an unrelated kind (of no theme the scene holds) with probability
    `unrelated_share` when there is one, else uniformly over the absent kinds."""
    absent = [k for k in kinds if k not in scene.kinds()]
    unrelated = [k for k in absent if not any(THEME_OF[k] == THEME_OF[p] for p in scene.kinds())]
    uniform = 1 / len(absent)
    if not unrelated:
        return uniform
    share = rule.unrelated_share
    return share * (kind in unrelated) / len(unrelated) + (1 - share) * uniform


def check_rule(asked: list[tuple[Scene, str]], kinds: list[str], frequency: Counter, rule: AbsentRule) -> float:
    """Two statistics of the absent kinds asked, each against its expectation under `rule`,
    within 4 binomial SDs: the share of the scene's theme (POPE adversarial's rule picks those)
    and the share that is the most frequent absent kind (POPE popular's rule). Returns the
    observed same-theme share."""
    popular_order = sorted(kinds, key=lambda k: (-frequency[k], k))
    for name, hit in (("same theme", lambda s, k: same_theme(s, k)),
                      ("most frequent", lambda s, k: k == next(x for x in popular_order if x not in s.kinds()))):
        observed = expected = variance = 0.0
        for scene, kind in asked:
            assert kind in kinds and kind not in scene.kinds()
            absent = [k for k in kinds if k not in scene.kinds()]
            p = sum(hit(scene, k) * draw_probability(rule, scene, k, kinds) for k in absent)
            observed += hit(scene, kind)
            expected += p
            variance += p * (1 - p)
        assert abs(observed - expected) <= 4 * math.sqrt(variance), (name, observed, expected, math.sqrt(variance))
    return sum(same_theme(s, k) for s, k in asked) / len(asked)


def adversarial_same_theme_share(scenes: list[Scene], kinds: list[str]) -> float:
    """The share of same-theme kinds among POPE's adversarial negatives on the same scenes."""
    items = pope(scenes, kinds, *object_statistics(scenes), per_image=1, seed=0)
    by_image = {image_relpath(s): s for s in scenes}
    negatives = [(by_image[it.image], it.extra["object"]) for it in items
                 if it.extra["split"] == "adversarial" and it.label == "no"]
    return sum(same_theme(s, k) for s, k in negatives) / len(negatives)


@pytest.mark.parametrize("share", [0.0, 0.8])
def test_the_base_s_existence_probes_ask_about_an_absent_kind_by_the_training_rule(themed, share):
    world, train = themed
    rule = AbsentRule.of_base(Params.model_validate({"world": world.model_dump(), "base": {"unrelated_negatives": share}}))
    assert rule.unrelated_share == share and len(rule.themes) == 2
    probes = probe_conversations(train, world.kinds, world.colors, 2, 0, image_relpath, skills=("existence",),
                                 absent=rule)
    by_image = {image_relpath(s): s for s in train}
    asked = []
    for c in probes:
        (turn,) = c.turns
        kind = re.match(r"Is there an? (\w+) in (?:the|this) image\?", turn.user)[1]
        assert turn.assistant == ("yes" if kind in by_image[c.image].kinds() else "no")
        if turn.assistant == "no":
            asked.append((by_image[c.image], kind))
    assert len(asked) > 1000
    same = check_rule(asked, world.kinds, object_statistics(train)[0], rule)
    assert same < adversarial_same_theme_share(train, world.kinds) - 0.3


def test_the_teacher_s_existence_questions_ask_about_a_uniformly_drawn_absent_kind(themed):
    world, train = themed
    teacher = build_teacher(world, GenerateSettings(questions_per_image=10, noise_rate=0.0), 0)
    records = teacher.teach(train).records
    by_image = {image_relpath(s): s for s in train}
    asked = [(by_image[r["image"]], re.match(r"Is there a (\w+) in the image\?", r["question"])[1])
             for r in records if r["reasoning"] == "existence" and r["correct_answer"] == "no"]
    assert len(asked) > 500
    same = check_rule(asked, world.kinds, object_statistics(train)[0], AbsentRule())
    assert same < adversarial_same_theme_share(train, world.kinds) - 0.3


def test_the_rule_check_catches_pope_s_rules_and_a_wrong_share(themed):
    """The check above fails on negatives drawn by POPE's adversarial or popular rule."""
    world, train = themed
    frequency, together = object_statistics(train)
    items = pope(train, world.kinds, frequency, together, per_image=1, seed=0)
    by_image = {image_relpath(s): s for s in train}
    for split in ("adversarial", "popular"):
        asked = [(by_image[it.image], it.extra["object"]) for it in items
                 if it.extra["split"] == split and it.label == "no"]
        with pytest.raises(AssertionError):
            check_rule(asked, world.kinds, frequency, AbsentRule())
    # passes a uniform draw against the uniform rule, and fails it against the unrelated one
    rng = random.Random(0)
    uniform = [(s, rng.choice([k for k in world.kinds if k not in s.kinds()])) for s in train]
    check_rule(uniform, world.kinds, frequency, AbsentRule())
    with pytest.raises(AssertionError):
        check_rule(uniform, world.kinds, frequency, AbsentRule((tuple(THEMES[0]), tuple(THEMES[1])), 0.8))


def _absent_asked(conversations, by_image) -> list[tuple[Scene, str]]:
    asked = []
    for c in conversations:
        (turn,) = c.turns
        m = re.match(r"Is there an? (\w+) in (?:the|this) image\?", turn.user)
        if m and turn.assistant == "no":
            asked.append((by_image[c.image], m[1]))
    return asked


def test_the_rule_applies_from_its_epoch_and_leaves_the_earlier_ones_and_the_tokenizer_as_the_uniform_rule_s(themed):
    """`base.unrelated_negatives_from`: the epochs before it ask exactly what the uniform rule
    asks (the same questions and batches, so a base is the uniform one's until then), the later
    ones follow the rule; the tokenizer's corpus is the uniform rule's whatever the rule, so an
    ablation of the rule changes nothing else (token ids, hence the initial weights)."""
    from reverie.base_step import _uniform_conversations
    from reverie.student.curriculum import base_curriculum

    world, train = themed
    train = train[:300]
    by_image = {image_relpath(s): s for s in train}

    def params(**base):
        return Params.model_validate({"world": world.model_dump(),
                                      "base": {"epochs": 2.5, "seeing_epochs": 1.0, "batch_size": 16, **base}})

    def curriculum(p):
        return base_curriculum(train, world.kinds, world.colors, p.base, image_relpath, absent=AbsentRule.of_base(p))

    uniform, uniform_batches = curriculum(params())
    late = params(unrelated_negatives=1.0, unrelated_negatives_from=2.0)
    ruled, ruled_batches = curriculum(late)
    epoch_of = lambda c: int(c.id.rsplit("probe", 1)[1].split("-")[0]) % 1000 / 100 if ":probe" in c.id else None
    early = [c for c in ruled if epoch_of(c) is not None and epoch_of(c) < 2.0]
    assert early and early == [c for c in uniform if epoch_of(c) is not None and epoch_of(c) < 2.0]
    assert ruled_batches[: len(uniform_batches) * 2 // 3] == uniform_batches[: len(uniform_batches) * 2 // 3]
    later = _absent_asked([c for c in ruled if epoch_of(c) is not None and epoch_of(c) >= 2.0], by_image)
    assert len(later) > 100 and not any(same_theme(s, k) for s, k in later)  # every one of a theme the scene lacks
    before = _absent_asked(early, by_image)
    assert sum(same_theme(s, k) for s, k in before) / len(before) > 0.2  # uniform: the scene's theme too
    # the tokenizer's corpus: the uniform rule's conversations, under any rule
    assert _uniform_conversations(train, late, ruled) == uniform
    assert _uniform_conversations(train, params(), uniform) is uniform


def test_a_scene_that_leaves_no_unrelated_kind_gets_no_question_under_the_unrelated_rule(themed):
    """With probability `unrelated_share` the question is about a kind of a theme the scene
    lacks; a scene holding every theme has none, and is asked nothing rather than a kind of its
    own themes (which would teach "no" to exactly the kinds the rule keeps from it)."""
    world, train = themed
    mixed = next(s for s in train if {THEME_OF[k] for k in s.kinds()} == {0, 1} and len(s.kinds()) < len(world.kinds))
    rng = random.Random(0)
    strict = AbsentRule((tuple(THEMES[0]), tuple(THEMES[1])), 1.0)
    assert {strict.draw(mixed, world.kinds, rng) for _ in range(50)} == {None}
    half = AbsentRule((tuple(THEMES[0]), tuple(THEMES[1])), 0.5)
    drawn = [half.draw(mixed, world.kinds, rng) for _ in range(400)]
    assert 120 < drawn.count(None) < 280 and all(k is None or k not in mixed.kinds() for k in drawn)
    assert None not in {AbsentRule().draw(mixed, world.kinds, rng) for _ in range(50)}
