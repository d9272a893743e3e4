import numpy as np

from reverie.settings import WorldSettings
from reverie.world import COLOR_RGB, render, sample_world


def test_same_seed_same_world_different_seed_different_world():
    settings = WorldSettings(train_images=20, eval_images=5)
    a_train, a_eval = sample_world(settings, seed=3)
    b_train, b_eval = sample_world(settings, seed=3)
    c_train, _ = sample_world(settings, seed=4)
    assert [s.to_json() for s in a_train + a_eval] == [s.to_json() for s in b_train + b_eval]
    assert [s.to_json() for s in a_train] != [s.to_json() for s in c_train]
    assert np.array_equal(np.asarray(render(a_train[0])), np.asarray(render(b_train[0])))


def test_train_and_eval_images_are_disjoint_and_objects_do_not_overlap():
    settings = WorldSettings(train_images=50, eval_images=20)
    train, held_out = sample_world(settings, seed=0)
    assert not {s.image_id for s in train} & {s.image_id for s in held_out}
    for scene in train + held_out:
        cells = [(o.row, o.col) for o in scene.objects]
        assert len(cells) == len(set(cells))
        boxes = [o.bbox for o in scene.objects]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)
        assert settings.min_objects <= len(scene.objects) <= settings.max_objects


def test_objects_are_drawn_in_their_colour_inside_their_box():
    train, _ = sample_world(WorldSettings(train_images=10, eval_images=1), seed=1)
    for scene in train:
        pixels = np.asarray(render(scene))
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.bbox
            patch = pixels[y0:y1 + 1, x0:x1 + 1].reshape(-1, 3)
            assert (patch == np.array(COLOR_RGB[obj.color])).all(axis=1).any(), obj


def test_cooccurrence_bias_makes_partners_appear_together():
    biased = WorldSettings(train_images=600, eval_images=1, cooccurrence_bias=0.9)
    unbiased = WorldSettings(train_images=600, eval_images=1, cooccurrence_bias=0.0)

    def together_rate(settings):
        train, _ = sample_world(settings, seed=0)
        with_circle = [s for s in train if "circle" in s.kinds()]
        return sum("cross" in s.kinds() for s in with_circle) / len(with_circle)

    assert together_rate(biased) > together_rate(unbiased) + 0.3
