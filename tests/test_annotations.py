"""Scene graphs from COCO and Visual Genome annotations, and the scene-graph teacher on them."""
from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from reverie.annotations import read_annotations
from reverie.evaluation.suites import object_statistics, pope
from reverie.records import PUBLISHED_FIELDS, judge_scores
from reverie.settings import AnnotationSettings, GenerateSettings
from reverie.teachers.judge import SceneGraphJudge
from reverie.teachers.annotated import AnnotatedSceneTeacher, contradiction
from reverie.world import Scene, SceneObject, companions, position_name

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "traffic light"},
              {"id": 4, "name": "car"}, {"id": 5, "name": "bicycle"}]


def write_image(path: Path, size=(300, 300)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 150)).save(path)


def write_coco(tmp_path: Path, images: list[dict], annotations: list[dict]) -> AnnotationSettings:
    for image in images:
        if not image.get("missing"):
            write_image(tmp_path / "coco" / image["file_name"], (image["width"], image["height"]))
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return AnnotationSettings(format="coco", path=str(path), images_dir=str(tmp_path / "coco"), eval_fraction=0.3)


@pytest.fixture
def coco(tmp_path) -> AnnotationSettings:
    images = [{"id": i, "file_name": f"val/{i:06d}.jpg", "width": 300, "height": 300} for i in range(1, 6)]
    images[4]["missing"] = True
    ann = [  # image 1: one object per cell; image 2: three objects in the centre cell
        {"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 150, 150]},  # large dog, top left
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [220, 220, 60, 60]},  # small person, bottom right
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [120, 10, 20, 40]},  # small traffic light, top
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [110, 110, 30, 60]},
        {"id": 5, "image_id": 2, "category_id": 1, "bbox": [150, 110, 30, 60]},
        {"id": 6, "image_id": 2, "category_id": 4, "bbox": [105, 130, 90, 40]},
        {"id": 7, "image_id": 3, "category_id": 1, "bbox": [0, 0, 300, 300], "iscrowd": 1},  # crowd: skipped
        # image 4 has no annotation; image 5's file is missing
        {"id": 8, "image_id": 5, "category_id": 2, "bbox": [0, 0, 10, 10]},
    ]
    return write_coco(tmp_path, images, ann)


def random_coco(tmp_path: Path, n_images: int, seed: int = 0) -> AnnotationSettings:
    """Crowded, overlapping scenes: several objects share grid cells, as in real photos."""
    rng = random.Random(seed)
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "width": 240, "height": 180} for i in range(n_images)]
    ann, next_id = [], 0
    for image in images:
        for _ in range(rng.randint(2, 7)):
            w, h = rng.randint(10, 150), rng.randint(10, 120)
            ann.append({"id": next_id, "image_id": image["id"], "category_id": rng.randint(1, 5),
                        "bbox": [rng.randint(0, 240 - w), rng.randint(0, 180 - h), w, h]})
            next_id += 1
    return write_coco(tmp_path, images, ann)


def objects(scene: Scene) -> list[tuple]:
    return [(o.kind, o.color, o.size, o.row, o.col) for o in scene.objects]


def test_coco_scenes_have_the_annotated_kinds_sizes_and_cells(coco):
    source = read_annotations(coco)
    by_id = {s.image_id: s for s in source.scenes}
    assert sorted(by_id) == ["val__000001", "val__000002"]
    assert objects(by_id["val__000001"]) == [("dog", "unknown", "large", 0, 0), ("person", "unknown", "small", 2, 2),
                                             ("traffic light", "unknown", "small", 0, 1)]
    assert objects(by_id["val__000002"]) == [("person", "unknown", "small", 1, 1)] * 2 + [("car", "unknown", "small", 1, 1)]
    assert by_id["val__000001"].objects[0].bbox == (0, 0, 150, 150)
    assert dict(source.skipped) == {"crowd_region": 1, "no_objects": 1, "image_not_found": 1}
    assert source.kinds == ["bicycle", "car", "dog", "person", "traffic light"]  # every category, present or not
    # partners are measured on the train scenes only: image 1 (dog, person, traffic light) is a
    # train image and image 2 (person, person, car) an eval one, so the car has no partner
    assert [s.split for s in source.scenes] == ["train", "eval"]
    assert source.partners == {"dog": "person", "person": "dog", "traffic light": "dog"}  # ties: first by name
    assert source.paths["val__000002"].name == "000002.jpg"
    # the split is a hash of the id: the same on every run, whatever else is in the file
    assert [s.split for s in read_annotations(coco).scenes] == [s.split for s in source.scenes]


def test_object_limit_and_image_limit(tmp_path):
    settings = random_coco(tmp_path, 30)
    every = read_annotations(settings)
    assert all(len(s.objects) <= settings.max_objects for s in every.scenes)
    few = read_annotations(settings.model_copy(update={"max_objects": 4, "max_images": 5}))
    assert len(few.scenes) == 5 and all(len(s.objects) <= 4 for s in few.scenes)
    assert few.skipped["too_many_objects"] == sum(len(s.objects) > 4 for s in every.scenes)


def test_an_image_limit_keeps_both_splits():
    """The capped subset is drawn by its own hash: with the split's hash, the lowest hashes
    kept would all be eval images."""
    from reverie.annotations import _finish
    from reverie.data_import import split_for

    settings = AnnotationSettings(format="coco", path="unused.json", images_dir=".", max_images=60, eval_fraction=0.5)
    candidates = []
    for i in range(600):
        image_id = f"img{i:04d}"
        scene = Scene(image_id, split_for(image_id, 0.5), 90, 90, 3, [SceneObject(0, "dog", "unknown", "small", 0, 0, (0, 0, 10, 10))])
        candidates.append((scene, Path(f"{image_id}.jpg")))
    kept = _finish(candidates, ["dog"], settings, Counter()).scenes
    assert len(kept) == 60
    assert 15 <= sum(s.split == "eval" for s in kept) <= 45


def test_visual_genome_colours_names_and_duplicate_boxes(tmp_path):
    write_image(tmp_path / "vg" / "VG_100K_2" / "10.jpg", (400, 300))
    rows = [{"image_id": 10, "attributes": [
        {"object_id": 1, "x": 10, "y": 10, "w": 150, "h": 120, "names": ["Tree"], "attributes": ["tall", "Dark Green"]},
        {"object_id": 2, "x": 12, "y": 12, "w": 148, "h": 118, "names": ["tree"]},  # the same tree boxed again
        {"object_id": 3, "x": 300, "y": 250, "w": 20, "h": 30, "names": ["man"], "attributes": ["grey"]},
        {"object_id": 4, "x": 190, "y": 140, "w": 30, "h": 20, "names": ["fire_hydrant"]},
        {"object_id": 5, "x": 0, "y": 0, "w": 0, "h": 0, "names": ["nothing"]}]},  # an empty box: ignored
        {"image_id": 11, "objects": [{"x": 0, "y": 0, "w": 5, "h": 5, "names": ["cat"]}]}]  # no image file
    path = tmp_path / "attributes.json"
    path.write_text(json.dumps(rows))
    source = read_annotations(AnnotationSettings(format="visual_genome", path=str(path), images_dir=str(tmp_path / "vg")))
    (scene,) = source.scenes
    assert scene.image_id == "vg-10" and (scene.width, scene.height) == (400, 300)  # size read from the file
    assert objects(scene) == [("tree", "green", "large", 0, 0), ("man", "gray", "small", 2, 2),
                              ("fire hydrant", "unknown", "small", 1, 1)]
    assert source.kinds == ["fire hydrant", "man", "tree"] and source.skipped["image_not_found"] == 1


def test_visual_genome_refuses_a_linked_out_image_and_two_files_of_one_image(tmp_path):
    from reverie.data_import import UnsafeImagePath

    path = tmp_path / "objects.json"
    path.write_text(json.dumps([{"image_id": 10, "objects": [{"x": 0, "y": 0, "w": 50, "h": 50, "names": ["cat"]}]}]))
    settings = AnnotationSettings(format="visual_genome", path=str(path), images_dir=str(tmp_path / "vg"))
    write_image(tmp_path / "elsewhere" / "10.jpg")
    (tmp_path / "vg").mkdir()
    (tmp_path / "vg" / "10.jpg").symlink_to(tmp_path / "elsewhere" / "10.jpg")
    with pytest.raises(UnsafeImagePath, match="links outside the images folder"):
        read_annotations(settings)
    (tmp_path / "vg" / "10.jpg").unlink()
    write_image(tmp_path / "vg" / "VG_100K" / "10.jpg")
    write_image(tmp_path / "vg" / "VG_100K_2" / "10.png")
    with pytest.raises(ValueError, match="are both image '10'"):
        read_annotations(settings)


def test_partners_are_the_most_frequent_companions():
    def scene(*kinds):
        return Scene("x", "train", 3, 3, 3, [SceneObject(i, k, "red", "small", 0, 0, (0, 0, 1, 1)) for i, k in enumerate(kinds)])

    scenes = [scene("cup", "table"), scene("cup", "table", "chair"), scene("chair", "table"), scene("chair", "lamp")]
    assert companions(scenes) == {"chair": "table", "cup": "table", "lamp": "chair", "table": "chair"}


def test_partners_come_from_the_train_scenes_only():
    """The eval images' co-occurrences must not reach the teacher: on the train images cup goes
    with table (twice) and chair with lamp; the eval images pair cup with chair, ten times."""
    from reverie.annotations import _finish

    def scene(image_id, split, *kinds):
        return (Scene(image_id, split, 90, 90, 3, [SceneObject(i, k, "red", "small", 0, i, (0, 0, 10, 10))
                                                   for i, k in enumerate(kinds)]), Path(f"{image_id}.jpg"))

    candidates = [scene("t1", "train", "cup", "table"), scene("t2", "train", "cup", "table"),
                  scene("t3", "train", "chair", "lamp")]
    candidates += [scene(f"e{i}", "eval", "cup", "chair") for i in range(10)]
    settings = AnnotationSettings(format="coco", path="unused.json", images_dir=".")
    source = _finish(candidates, ["chair", "cup", "lamp", "table"], settings, Counter())
    assert len(source.scenes) == 13
    assert source.partners == {"chair": "lamp", "cup": "table", "lamp": "chair", "table": "cup"}
    # measured on every scene, cup and chair would be partners
    assert companions([s for s, _ in candidates])["cup"] == "chair"


def test_the_annotated_judge_reads_plural_counts():
    """Counts are keyed by the kind's plural ("There are 3 people", "traffic lights"), so that a
    count and the singular "exactly one person" name one kind."""
    assert contradiction("There are 2 people in the image. So the answer is 2.",
                         "The answer 3 is wrong. There are 2 people in the image.") is None
    assert contradiction("There are 2 traffic lights in the image. There is a small unknown traffic light at the top. "
                         "So the answer is 2.", "The answer 3 is wrong. There is a large red traffic light at the center.") is None
    assert contradiction("There are 2 people in the image. So the answer is 2.",
                         "The answer 3 is wrong. There are 3 people in the image.") == \
        "the positive rationale counts 2 people, the negative one 3"
    assert contradiction("There is exactly one person in the image. So the answer is 1.",
                         "The answer 2 is wrong. There are 2 people in the image.") == \
        "the positive rationale counts 1 people, the negative one 2"
    assert contradiction("There are 2 traffic lights in the image. So the answer is 2.",
                         "The answer 3 is wrong. There is a small unknown traffic light at the top. There is a small "
                         "unknown traffic light at the center. There is a large unknown traffic light at the bottom.") == \
        "the rationales count 2 traffic lights but place 3"


# ---- the scene-graph teacher on annotated scenes ------------------------------------------------
def teach(source, noise_rate: float, seed: int = 3) -> list[dict]:
    generate = GenerateSettings(questions_per_image=4, noise_rate=noise_rate)
    teacher = AnnotatedSceneTeacher(source.kinds, source.colors, source.partners, generate.template_version,
                                    generate=generate, seed=seed)
    return teacher.teach(source.scenes).records


PLURALS = {"person": "people", "dog": "dogs", "traffic light": "traffic lights", "car": "cars", "bicycle": "bicycles"}


def singular(scene: Scene, kinds: str) -> str:
    """The kind a plural names: CATEGORIES' plurals written out by hand."""
    (kind,) = [k for k, p in PLURALS.items() if p == kinds]
    return kind


def truth(scene: Scene, record: dict) -> str | None:
    """The answer the annotations give to the record's question, for the forms that name it."""
    q = record["question"]
    if m := re.match(r"Is there a (.+) in the image\?", q):
        return "yes" if m.group(1) in scene.kinds() else "no"
    if m := re.match(r"How many (.+) are there", q):
        return str(scene.count(singular(scene, m.group(1))))
    if m := re.match(r"Where is the (.+) in the image\?", q):
        (obj,) = [o for o in scene.objects if o.kind == m.group(1)]
        return position_name(obj.row, obj.col, scene.grid)
    if m := re.match(r"Are there more (.+) than (.+) in the image\?", q):
        return "yes" if scene.count(singular(scene, m.group(1))) > scene.count(singular(scene, m.group(2))) else "no"
    return None


def test_teacher_answers_match_the_annotations_and_the_judge_accepts_them(tmp_path):
    source = read_annotations(random_coco(tmp_path, 40))
    records = teach(source, noise_rate=0.0)
    scenes = {s.image_id: s for s in source.scenes}
    assert len(records) >= 3 * len(scenes)
    checked = 0
    for r in records:
        assert all(r[f] for f in PUBLISHED_FIELDS)
        scene = scenes[r["image"].split("/")[-1].removesuffix(".png")]
        expected = truth(scene, r)
        if expected is not None:
            assert r["correct_answer"] == expected, r["question"]
            assert r["confusing_answer"] != expected
            checked += 1
        assert "unknown" not in r["correct_answer"] and "What shape" not in r["question"]
        if r["question"].startswith(("What is the object at the", "Describe the object at the")):
            position = r["question"].split("at the ")[1].split("?")[0].split(".")[0]
            assert sum(position_name(o.row, o.col, 3) == position for o in scene.objects) == 1
    assert checked >= len(records) // 2
    # counts name the kind by its plural, irregular ones too (never "persons")
    assert any(r["question"].startswith("How many people are there") for r in records)
    assert not any("persons" in r["question"] + r["correct_rationale"] + r["incorrect_rationale"] for r in records)
    # the synthetic world's "What shape is the object ...?" is asked as "What is the object ...?"
    assert any(r["question"].startswith("What is the object at the ") for r in records)
    assert {r["provenance"]["template_version"] for r in records} == {"sg-v1"}
    assert {r["provenance"]["teacher"] for r in records} == {"scene_graph_annotations"}
    # several objects share cells in these scenes; true rationales must not look contradictory,
    # as they do to the synthetic world's judge, which expects one object per cell
    assert [r["judge"]["reason"] for r in records if not r["judge"]["consistent"]] == []
    synthetic_judge = SceneGraphJudge()
    assert any(not synthetic_judge.judge(r["question"], r["correct_answer"], r["confusing_answer"],
                                         r["correct_rationale"], r["incorrect_rationale"]).consistent for r in records)


def test_the_judge_catches_injected_teacher_errors_on_crowded_scenes(tmp_path):
    records = teach(read_annotations(random_coco(tmp_path, 40)), noise_rate=1.0)
    quality = judge_scores(records)
    assert quality["injected"] == len(records)
    assert quality["filter_recall"] >= 0.9 and quality["filter_precision"] == 1.0


def test_co_located_objects_are_not_a_contradiction_but_a_redescribed_one_is():
    positive = ("There is a small unknown person at the center. There is a small unknown car at the center. "
                "So the answer is yes.")
    assert contradiction(positive, "The answer no is wrong. There is a small unknown person at the center. "
                                   "There is a small unknown car at the center.") is None
    problem = contradiction(positive, "The answer no is wrong. There is a small unknown person at the center. "
                                      "There is a small unknown traffic light at the center.")
    assert "describes the small unknown car at the center as a small unknown traffic light" in problem
    assert "no traffic light" in contradiction("There is no traffic light in the image. So the answer is no.",
                                               "The answer yes is wrong. There is a large red traffic light at the top.")


def test_pope_builds_on_annotated_scenes(tmp_path):
    source = read_annotations(random_coco(tmp_path, 30))
    train = [s for s in source.scenes if s.split == "train"]
    held_out = [s for s in source.scenes if s.split == "eval"]
    assert train and held_out
    frequency, together = object_statistics(train)
    items = pope(held_out, source.kinds, frequency, together, per_image=2, seed=0)
    scenes = {s.image_id: s for s in held_out}
    assert items and {i.extra["split"] for i in items} == {"random", "popular", "adversarial"}
    for item in items:
        scene = scenes[item.image.split("/")[-1].removesuffix(".png")]
        assert item.label == ("yes" if item.extra["object"] in scene.kinds() else "no")


def test_generate_uses_the_annotations_and_their_images(tmp_path, coco):
    from reverie.generate import generate_dataset
    from reverie.world import load_scenes
    from reverie.settings import Params

    from .conftest import tiny_params_dict

    data = tiny_params_dict(tmp_path)
    data["generate"]["annotations"] = coco.model_dump()
    result = generate_dataset(Params.model_validate(data), tmp_path / "data", progress=False)
    scenes = load_scenes(tmp_path / "data")
    assert sorted(scenes) == ["val__000001", "val__000002"]
    assert scenes["val__000002"].objects[2].kind == "car"
    for scene in scenes.values():
        with Image.open(tmp_path / "data" / "images" / scene.split / f"{scene.image_id}.png") as image:
            assert image.size == (300, 300) and image.format == "PNG"
    assert result.raw and {r["provenance"]["teacher"] for r in result.raw} == {"scene_graph_annotations"}
    assert result.metrics["skipped_crowd_region"] == 1 and result.metrics["train_images"] + result.metrics["eval_images"] == 2
    assert not (tmp_path / "data" / "images" / "train" / "train-000000.png").exists()  # no synthetic world


def test_a_wrong_description_keeps_a_kind_of_several_words_and_flips_the_size_only():
    """Teacher noise on annotated scenes: a wrong "correct" description of an object swaps its
    size and keeps its colour and its whole kind ("traffic light", not "light")."""
    kinds, colors = ["traffic light", "fire hydrant", "cup", "stop sign"], ["red", "green", "blue", "yellow"]
    partners = {"traffic light": "stop sign", "stop sign": "traffic light", "cup": "fire hydrant", "fire hydrant": "cup"}
    scenes = []
    for i in range(30):
        cells = [(0, 0), (1, 2), (2, 1)]
        objects = [SceneObject(j, kinds[(i + j) % 4], colors[(i + 2 * j) % 4], ("small", "large")[(i + j) % 2], r, c,
                               (0, 0, 1, 1)) for j, (r, c) in enumerate(cells)]
        scenes.append(Scene(f"img{i}", "train", 96, 96, 3, objects))
    teacher = AnnotatedSceneTeacher(kinds, colors, partners, "v1",
                                    generate=GenerateSettings(questions_per_image=8, noise_rate=1.0), seed=5)
    described = 0
    for scene, record in ((s, r) for s in scenes for r in teacher.records_for_scene(s)):
        m = re.match(r"Describe the object at the (.+)\.", record["question"])
        if not m or record["provenance"]["injected_error"] != "wrong_answer":
            continue
        [obj] = [o for o in scene.objects if position_name(o.row, o.col, 3) == m.group(1)]
        flipped = "small" if obj.size == "large" else "large"
        assert record["correct_answer"] == f"a {flipped} {obj.color} {obj.kind}"
        described += 1
    assert described >= 3
