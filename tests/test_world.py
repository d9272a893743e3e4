import numpy as np
from PIL import Image

from reverie.settings import WorldSettings
from reverie.world import BACKGROUND, COLOR_RGB, Scene, SceneObject, companions, render, sample_world, write_scene


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


THEMES = [["circle", "square", "triangle", "star"], ["cross", "bar", "pole", "ring"]]
THEME_OF = {k: i for i, theme in enumerate(THEMES) for k in theme}


def one_theme_share(settings) -> float:
    """The share of scenes of two or more kinds whose kinds all come from one theme."""
    train, _ = sample_world(settings, seed=0)
    mixed = [s for s in train if len(s.kinds()) > 1]
    return sum(len({THEME_OF[k] for k in s.kinds()}) == 1 for s in mixed) / len(mixed)


def test_theme_bias_draws_a_scene_s_kinds_from_one_theme():
    # two themes of four kinds: a scene draws each new kind from its own theme with probability
    # theme_bias, else from every kind. At 0 that is the unthemed world (`themes: []`), and the
    # share of one-theme scenes is the same; at 0.95 nearly every scene keeps to one theme.
    themed = one_theme_share(WorldSettings(train_images=600, eval_images=1, themes=THEMES, theme_bias=0.95))
    off = one_theme_share(WorldSettings(train_images=600, eval_images=1, themes=THEMES, theme_bias=0.0))
    unthemed = one_theme_share(WorldSettings(train_images=600, eval_images=1))
    assert themed > 0.75
    assert off < 0.45 and unthemed < 0.45 and abs(off - unthemed) < 0.1
    assert themed > max(off, unthemed) + 0.3


def test_companions_are_measured_on_the_scenes_given_and_keep_to_the_theme():
    def scene(image_id, *kinds):
        return Scene(image_id, "train", 48, 48, 3,
                     [SceneObject(i, k, "red", "small", i // 3, i % 3, (0, 0, 1, 1)) for i, k in enumerate(kinds)])

    # by hand, images holding both: circle and star 3 (a, b, c; the second circle of a counts
    # once), every other pair 1 (all in c). circle -> star and star -> circle (3); square and
    # ring meet three kinds once each: a tie, to the alphabetically first, circle; bar meets nothing
    scenes = [scene("a", "circle", "star", "circle"), scene("b", "star", "circle"),
              scene("c", "square", "circle", "star", "ring"), scene("d", "bar")]
    assert companions(scenes) == {"circle": "star", "ring": "circle", "square": "circle", "star": "circle"}
    assert companions(scenes[3:]) == {} and companions([]) == {}
    # in a themed world each kind's most frequent companion is of its own theme
    train, _ = sample_world(WorldSettings(train_images=400, eval_images=1, themes=THEMES, theme_bias=0.9), seed=0)
    found = companions(train)
    assert set(found) == set(THEME_OF)
    assert all(THEME_OF[k] == THEME_OF[other] for k, other in found.items()), found


def test_a_faint_object_is_drawn_at_faint_contrast_against_the_background():
    red = Scene("faint", "train", 48, 48, 3, [SceneObject(0, "square", "red", "large", 1, 1, (17, 17, 31, 31), faint=True),
                                              SceneObject(1, "square", "red", "large", 0, 0, (1, 1, 15, 15))])
    world = WorldSettings(faint_contrast=0.3, noise=0.0)
    pixels = np.asarray(render(red, world)).astype(int)
    # BACKGROUND (30, 30, 30) + 0.3 * ((220, 40, 40) - (30, 30, 30)) = (87, 33, 33)
    assert BACKGROUND == (30, 30, 30) and COLOR_RGB["red"] == (220, 40, 40)
    assert (pixels[18:31, 18:31] == (87, 33, 33)).all()
    assert (pixels[2:15, 2:15] == (220, 40, 40)).all()  # the other object is not in shadow
    assert (pixels[40:, 40:] == BACKGROUND).all()
    half = np.asarray(render(red, WorldSettings(faint_contrast=0.5))).astype(int)
    assert (half[18:31, 18:31] == (125, 35, 35)).all()  # 30 + 0.5 * 190, 30 + 0.5 * 10
    # without the world's settings an image is drawn as before: every object in its colour
    assert (np.asarray(render(red)).astype(int)[18:31, 18:31] == (220, 40, 40)).all()


def test_faint_rate_puts_that_share_of_objects_in_shadow():
    train, _ = sample_world(WorldSettings(train_images=300, eval_images=1, faint_rate=0.25), seed=0)
    objects = [o for s in train for o in s.objects]
    assert abs(sum(o.faint for o in objects) / len(objects) - 0.25) < 0.05
    none, _ = sample_world(WorldSettings(train_images=50, eval_images=1), seed=0)
    assert not any(o.faint for s in none for o in s.objects)
    # a scene's faint flags survive its JSON, and old scene files (without the key) read as not faint
    scene = next(s for s in train if any(o.faint for o in s.objects))
    assert Scene.from_json(scene.to_json()) == scene
    old = scene.to_json()
    for o in old["objects"]:
        del o["faint"]
    assert not any(o.faint for o in Scene.from_json(old).objects)


def test_pixel_noise_is_seeded_by_the_image_id():
    objects = [SceneObject(0, "circle", "blue", "large", 0, 0, (1, 1, 15, 15))]
    world = WorldSettings(noise=8.0)
    a = Scene("train-000001", "train", 48, 48, 3, objects)
    same_id = Scene("train-000001", "eval", 48, 48, 3, [])  # another scene graph, the same id
    other = Scene("train-000002", "train", 48, 48, 3, objects)
    first, again = np.asarray(render(a, world)).astype(int), np.asarray(render(a, world)).astype(int)
    assert np.array_equal(first, again)  # the same on every call (and machine: no global random state)
    clean = np.asarray(render(a)).astype(int)
    noise = first - clean
    # Gaussian, standard deviation 8 on the 0-255 scale, centred (clipping at 0 and 255 is far away here)
    assert abs(noise.std() - 8.0) < 0.5 and abs(noise.mean()) < 0.5
    assert np.array_equal(np.asarray(render(same_id, world)).astype(int)[20:, 20:] - 30, noise[20:, 20:])
    assert not np.array_equal(np.asarray(render(other, world)).astype(int), first)
    assert (np.asarray(render(other, world)).astype(int) != first).mean() > 0.5


def test_without_noise_and_shadow_an_image_is_exactly_as_before():
    train, _ = sample_world(WorldSettings(train_images=10, eval_images=1), seed=1)
    world = WorldSettings(noise=0.0, faint_rate=0.0)
    for scene in train:
        assert np.array_equal(np.asarray(render(scene, world)), np.asarray(render(scene)))


def test_write_scene_writes_the_world_s_image(tmp_path):
    scene = Scene("train-000003", "train", 48, 48, 3,
                  [SceneObject(0, "ring", "green", "large", 2, 2, (33, 33, 47, 47), faint=True)])
    world = WorldSettings(noise=5.0, faint_contrast=0.4)
    path = write_scene(scene, tmp_path, world)
    assert path == tmp_path / "images" / "train" / "train-000003.png"
    with Image.open(path) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(render(scene, world)))
