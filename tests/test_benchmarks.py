"""Benchmark construction on held-out scenes and loaders for the real benchmark files."""
import base64
import csv
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from reverie.evaluation.suites import mme, mmbench, object_statistics, pope
from reverie.evaluation.loaders import load_mmbench, load_mme, load_pope, load_scienceqa
from reverie.io import DataFileError
from reverie.settings import WorldSettings
from reverie.world import sample_world

THEMES = [["circle", "square", "triangle", "star"], ["cross", "bar", "pole", "ring"]]
THEME_OF = {k: i for i, theme in enumerate(THEMES) for k in theme}


@pytest.fixture(scope="module")
def world():
    settings = WorldSettings(train_images=400, eval_images=40, min_objects=3, themes=THEMES, theme_bias=0.95)
    train, held_out = sample_world(settings, seed=5)
    return settings, train, held_out


def test_pope_has_three_present_and_three_absent_per_image_and_split(world):
    settings, train, held_out = world
    freq, together = object_statistics(train)
    items = pope(held_out, settings.kinds, freq, together, 3, seed=0)
    assert {it.extra["split"] for it in items} == {"random", "popular", "adversarial"}
    for split in ("random", "popular", "adversarial"):
        per_image = Counter((it.image, it.label) for it in items if it.extra["split"] == split)
        for scene in held_out:
            n = min(3, len(scene.kinds()))
            assert per_image[(f"images/eval/{scene.image_id}.png", "yes")] == n
            assert per_image[(f"images/eval/{scene.image_id}.png", "no")] == n
    for it in items:
        scene = next(s for s in held_out if it.image.endswith(s.image_id + ".png"))
        assert (it.extra["object"] in scene.kinds()) == (it.label == "yes")
        assert it.question.startswith(f"Is there a {it.extra['object']} in the image?")


def test_popular_and_adversarial_negatives_follow_frequency_and_cooccurrence(world):
    settings, train, held_out = world
    freq, together = object_statistics(train)
    items = pope(held_out, settings.kinds, freq, together, 3, seed=0)
    negatives = lambda split: Counter(it.extra["object"] for it in items if it.extra["split"] == split and it.label == "no")
    most_frequent = max(freq, key=freq.get)
    assert negatives("popular")[most_frequent] >= negatives("random")[most_frequent]
    # with strong themes, the adversarial negatives are mostly absent kinds of a present kind's
    # theme (the kinds that co-occur with it), the random ones much less often
    scenes = {f"images/eval/{s.image_id}.png": s for s in held_out}

    def same_theme_share(split):
        negs = [it for it in items if it.extra["split"] == split and it.label == "no"]
        return sum(THEME_OF[it.extra["object"]] in {THEME_OF[k] for k in scenes[it.image].kinds()}
                   for it in negs) / len(negs)

    assert same_theme_share("adversarial") > 0.5
    assert same_theme_share("adversarial") > same_theme_share("random") + 0.2
    # and they are not the popular ones: the two splits differ on most images
    differ = sum({it.extra["object"] for it in items if it.image == image and it.extra["split"] == "popular" and it.label == "no"}
                 != {it.extra["object"] for it in items if it.image == image and it.extra["split"] == "adversarial"
                     and it.label == "no"} for image in scenes)
    assert differ >= len(scenes) / 2


def test_popular_and_adversarial_negatives_differ_on_half_the_eval_images_of_the_shipped_world():
    """Issue 23's headroom: POPE's popular and adversarial splits must ask about different absent
    objects on at least half the eval images of the default world, or they measure the same thing."""
    from reverie.settings import load_params
    from tests.conftest import ROOT

    params = load_params(ROOT / "params.yaml")
    train, held_out = sample_world(params.world, params.project.seed)
    freq, together = object_statistics(train)
    items = pope(held_out, params.world.kinds, freq, together, params.evaluate.pope_objects, seed=params.project.seed)
    negatives: dict = {}
    for it in items:
        if it.label == "no":
            negatives.setdefault(it.image, {}).setdefault(it.extra["split"], set()).add(it.extra["object"])
    assert len(negatives) >= 0.9 * len(held_out)
    differ = sum(n["popular"] != n["adversarial"] for n in negatives.values())
    assert differ >= len(held_out) / 2, (differ, len(held_out))


def test_popular_and_adversarial_negatives_are_chosen_as_pope_chooses_them():
    """POPE (Li et al. 2023): popular negatives are the absent objects most frequent in the
    dataset, adversarial ones the absent objects that co-occur most with the objects present.
    Counts set by hand so that neither order is the alphabetical or a random one."""
    from reverie.world import Scene, SceneObject

    kinds = ["circle", "square", "triangle", "star", "cross", "bar", "pole", "ring"]

    def scene(image_id, *present):
        return Scene(image_id, "eval", 64, 64, 4,
                     [SceneObject(i, k, "red", "small", 0, i, (0, 0, 8, 8)) for i, k in enumerate(present)])

    frequency = Counter({"circle": 90, "square": 80, "star": 50, "ring": 40, "bar": 30, "cross": 10, "triangle": 5})
    together = Counter({("circle", "triangle"): 20, ("square", "triangle"): 5, ("cross", "square"): 30,
                        ("circle", "pole"): 3, ("circle", "star"): 1, ("ring", "star"): 40})
    # a scene holding every kind has no negative to ask about: it is left out, and the others follow
    items = pope([scene("full", *kinds), scene("a", "circle", "square"), scene("b", "star", "circle")], kinds, frequency,
                 together, 2, seed=0)
    assert {it.image for it in items} == {"images/eval/a.png", "images/eval/b.png"}
    assert all(it.benchmark == "pope" and it.qid == f"pope-{it.extra['split']}-{Path(it.image).stem}-{it.extra['object']}"
               for it in items) and len({it.qid for it in items}) == len(items)
    # each image's questions are drawn from its own seed: the same alone as among others
    assert pope([scene("b", "star", "circle")], kinds, frequency, together, 2, seed=0) == items[len(items) // 2:]

    def objects(image_id, split, label):
        return [it.extra["object"] for it in items
                if it.image.endswith(f"/{image_id}.png") and it.extra["split"] == split and it.label == label]

    # a: absent triangle, star, cross, bar, pole, ring; frequencies 5, 50, 10, 30, (never seen), 40
    assert objects("a", "popular", "no") == ["star", "ring"]
    # co-occurrence with circle and square: triangle 20 + 5, cross 30, pole 3, star 1
    assert objects("a", "adversarial", "no") == ["cross", "triangle"]
    # b: star is present and square absent (80); ring goes with star (40), triangle with circle (20)
    assert objects("b", "popular", "no") == ["square", "ring"]
    assert objects("b", "adversarial", "no") == ["ring", "triangle"]
    for image_id, present in (("a", {"circle", "square"}), ("b", {"star", "circle"})):
        random_negatives = objects(image_id, "random", "no")
        assert len(random_negatives) == len(set(random_negatives)) == 2 and not set(random_negatives) & present
        # the same present objects are asked in every split; only the negatives differ
        positives = [objects(image_id, split, "yes") for split in ("random", "popular", "adversarial")]
        assert positives[0] == positives[1] == positives[2] and set(positives[0]) == present
    # an object never seen in the train scenes comes last in the popular order
    only_unseen = pope([scene("c", *[k for k in kinds if k not in ("pole", "triangle")])], kinds, frequency, together, 2, 0)
    assert [it.extra["object"] for it in only_unseen if it.extra["split"] == "popular" and it.label == "no"] == ["triangle", "pole"]
    # equal frequencies are ordered by name, whatever order the counts were met in
    tie = Counter({"ring": 7, "bar": 7})
    tied = pope([scene("d", *[k for k in kinds if k not in ("ring", "bar")])], kinds, tie, Counter(), 2, 0)
    assert [it.extra["object"] for it in tied if it.extra["split"] == "popular" and it.label == "no"] == ["bar", "ring"]


def test_mme_pairs_one_yes_one_no_per_image_and_subtask(world):
    settings, _, held_out = world
    items = mme(held_out, settings.kinds, settings.colors, seed=0)
    pairs = Counter((it.extra["subtask"], it.image, it.label) for it in items)
    assert set(k[0] for k in pairs) == {"existence", "count", "position", "color"}
    assert all(v == 1 for v in pairs.values())


def test_mmbench_items_rotate_options(world):
    settings, _, held_out = world
    items = mmbench(held_out, settings.kinds, settings.colors, 1, seed=0)
    by_q = {}
    for it in items:
        by_q.setdefault(it.extra["question_id"], []).append(it)
    for rots in by_q.values():
        assert len(rots) == 4
        truth = {r.extra["options"]["ABCD".index(r.label)] for r in rots}
        assert len(truth) == 1  # every rotation keeps the same right option text


def test_mmbench_of_a_world_with_three_colours_asks_only_what_has_four_options():
    settings = WorldSettings(colors=["red", "green", "blue"], train_images=10, eval_images=40)
    _, held_out = sample_world(settings, seed=0)
    items = mmbench(held_out, settings.kinds, settings.colors, 2, seed=0)
    assert items and {it.extra["category"] for it in items} == {"shape"}
    assert all(len(it.extra["options"]) == 4 for it in items)


def png_bytes(color=(200, 0, 0)):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def test_pope_loader(tmp_path):
    (tmp_path / "val2014").mkdir()
    (tmp_path / "val2014" / "a.jpg").write_bytes(png_bytes())
    rows = [{"question_id": 1, "image": "a.jpg", "text": "Is there a dog in the image?", "label": "yes"},
            {"question_id": 2, "image": "a.jpg", "text": "Is there a cat in the image?", "label": "no"}]
    path = tmp_path / "coco_pope_adversarial.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    items = load_pope(path, tmp_path / "val2014")
    assert [it.label for it in items] == ["yes", "no"] and items[0].extra["split"] == "adversarial"
    assert items[0].question.startswith("Is there a dog in the image?")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question_id": 3, "image": "../../etc/passwd", "text": "x", "label": "no"}))
    with pytest.raises(DataFileError, match=r"bad.jsonl:1: image path .* escapes"):
        load_pope(bad, tmp_path / "val2014")


def test_pope_loader_refuses_missing_images_and_labels_other_than_yes_no(tmp_path):
    (tmp_path / "val2014").mkdir()
    (tmp_path / "val2014" / "a.jpg").write_bytes(png_bytes())
    lines = [json.dumps({"question_id": 1, "image": "a.jpg", "text": "Is there a dog?", "label": "yes"}),
             json.dumps({"question_id": 2, "image": "a.jpg", "text": "Is there a cat?", "label": "maybe"}),
             "",
             json.dumps({"question_id": 3, "image": "gone.jpg", "text": "Is there a cow?", "label": "No"}),
             '{"question_id": 4, "image": "a.jpg", "text": "Is there',
             json.dumps({"question_id": 1, "image": "a.jpg", "text": "Is there a dog?", "label": "yes"})]
    path = tmp_path / "coco_pope_random.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(DataFileError) as err:
        load_pope(path, tmp_path / "val2014")
    message = str(err.value)
    assert f"{path}:2: label 'maybe' is not yes or no" in message
    assert f"{path}:4: image gone.jpg not found" in message
    assert f"{path}:5: not valid JSON" in message
    assert f"{path}:6: question_id 1 repeats line 1" in message
    assert "4 problem(s)" in message


def test_mme_loader_names_the_line_of_an_answer_that_is_not_yes_or_no(tmp_path):
    task = tmp_path / "existence"
    task.mkdir()
    (task / "0001.png").write_bytes(png_bytes())
    (task / "0001.txt").write_text("Is there a dog? Please answer yes or no.\tYes\n"
                                   "Is there a cat? Please answer yes or no.\tPerhaps\n"
                                   "A line without a tab\n")
    with pytest.raises(DataFileError) as err:
        load_mme(tmp_path)
    assert f"{task / '0001.txt'}:2: answer 'perhaps'" in str(err.value)
    assert f"{task / '0001.txt'}:3: expected 'question<TAB>answer'" in str(err.value)
    (task / "0001.png").unlink()
    (task / "0001.txt").write_text("Is there a dog?\tyes\n")
    with pytest.raises(DataFileError, match="no image named 0001"):
        load_mme(tmp_path)


def test_mmbench_loader_names_the_row_of_bad_answers_and_images(tmp_path):
    path = tmp_path / "mmbench_dev.tsv"
    good = base64.b64encode(png_bytes()).decode()
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"])
        w.writerow([1, "Which?", "nan", "red", "green", "", "", "C", "attribute", good])  # only two options
        w.writerow([2, "Which?", "nan", "red", "green", "blue", "white", "A", "attribute", "not base64!"])
        w.writerow([3, "Which?", "nan", "red", "green", "blue", "white", "A", "attribute",
                    base64.b64encode(b"not an image").decode()])
    with pytest.raises(DataFileError) as err:
        load_mmbench(path, tmp_path / "cache")
    message = str(err.value)
    assert f"{path}:2: answer 'C' is not the letter of one of its 2 options" in message
    assert f"{path}:3: image cell is neither base64 image data nor another row's index" in message
    assert f"{path}:4: image cell does not decode" in message


def test_scienceqa_loader_names_the_line_of_a_bad_problem(tmp_path):
    (tmp_path / "images" / "test" / "5").mkdir(parents=True)
    (tmp_path / "images" / "test" / "5" / "image.png").write_bytes(png_bytes())
    text = ('{\n'
            '  "5": {"question": "Which?", "choices": ["cat", "fish"], "answer": 0, "image": "image.png", "split": "test"},\n'
            '  "6": {"question": "Which?", "choices": ["a", "b"], "answer": 2, "image": "image.png", "split": "test"},\n'
            '  "7": {"question": "Which?", "choices": ["a", "b"], "answer": 1, "image": "gone.png", "split": "test"}\n'
            '}\n')
    (tmp_path / "problems.json").write_text(text)
    with pytest.raises(DataFileError) as err:
        load_scienceqa(tmp_path / "problems.json", tmp_path / "images")
    path = tmp_path / "problems.json"
    assert f"{path}:3: problem 6: answer 2 is not the index" in str(err.value)
    assert f"{path}:4: image test/7/gone.png not found" in str(err.value)
    (tmp_path / "problems.json").write_text(text.replace('"answer": 2,', '"answer": 2').replace('"7"', '"8"'))
    with pytest.raises(DataFileError, match=rf"problems.json:3: column \d+: not valid JSON"):
        load_scienceqa(tmp_path / "problems.json", tmp_path / "images")


def test_mme_loader(tmp_path):
    task = tmp_path / "existence"
    task.mkdir()
    (task / "0001.png").write_bytes(png_bytes())
    (task / "0001.txt").write_text("Is there a dog in this image? Please answer yes or no.\tYes\n"
                                   "Is there a cat in this image? Please answer yes or no.\tNo\n")
    items = load_mme(tmp_path)
    assert [(it.extra["subtask"], it.label) for it in items] == [("existence", "yes"), ("existence", "no")]


def test_mmbench_loader_never_rotates_a_row_again(tmp_path):
    """The tsv holds the circular copies itself: a row is one item, asked as it stands."""
    path = tmp_path / "mmbench_dev.tsv"
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"])
        w.writerow([7, "What colour is it?", "nan", "red", "green", "blue", "white", "A", "attribute",
                    base64.b64encode(png_bytes()).decode()])
    items = load_mmbench(path, tmp_path / "cache")
    assert len(items) == 1 and items[0].extra["question_id"] == "mmbench-7" and items[0].label == "A"
    assert items[0].extra["options"] == ["red", "green", "blue", "white"]


def test_scienceqa_loader_keeps_image_questions(tmp_path):
    (tmp_path / "images" / "test" / "5").mkdir(parents=True)
    (tmp_path / "images" / "test" / "5" / "image.png").write_bytes(png_bytes())
    problems = {"5": {"question": "Which is a mammal?", "choices": ["cat", "fish"], "answer": 0, "image": "image.png",
                      "split": "test", "hint": "", "subject": "natural science"},
                "6": {"question": "No image", "choices": ["a", "b"], "answer": 1, "image": None, "split": "test"}}
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    items = load_scienceqa(tmp_path / "problems.json", tmp_path / "images")
    assert len(items) == 1 and items[0].label == "A" and "A. cat" in items[0].question
