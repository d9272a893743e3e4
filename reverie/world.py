"""The synthetic world: procedurally rendered scenes and their scene graphs.

A scene is a grid of cells; each object sits alone in one cell, so objects never overlap and
every object has a named position. Scenes have a theme, as photographs have a setting (a
kitchen holds forks, cups and bowls): most of a scene's objects are drawn from its theme's
kinds, each kind by its popularity. Some objects lie in shadow (`faint_rate`): drawn at a low
contrast against the background, under the pixel noise every image carries, they are hard to
see, as small or occluded objects are in photographs. The base's training can ask about absent
objects mostly of kinds unrelated to the scene (`AbsentRule`, `base.unrelated_negatives`, off by
default), as people's questions do: a model taught on it seldom hears "no" about a kind of the
scene's theme and learns to expect one, the hallucination of co-occurring objects that POPE's
adversarial split probes, and that its popular split (the most frequent kinds) and random split
probe less.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .vocab import image_path

COLOR_RGB = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
    "orange": (240, 130, 20),
    "white": (245, 245, 245),
    "cyan": (40, 200, 210),
}
SIZE_RADIUS_FRACTION = {"small": 0.3, "large": 0.46}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "bar", "pole", "ring")
BACKGROUND = (30, 30, 30)


@dataclass(frozen=True)
class SceneObject:
    id: int
    kind: str
    color: str
    size: str
    row: int
    col: int
    bbox: tuple[int, int, int, int]
    faint: bool = False  # in shadow: drawn at world.faint_contrast (scene graphs of photographs: False)


@dataclass
class Scene:
    image_id: str
    split: str
    width: int
    height: int
    grid: int
    objects: list[SceneObject] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "image_id": self.image_id,
            "split": self.split,
            "width": self.width,
            "height": self.height,
            "grid": self.grid,
            "objects": [asdict(o) | {"bbox": list(o.bbox)} for o in self.objects],
        }

    @classmethod
    def from_json(cls, data: dict) -> "Scene":
        objects = [SceneObject(**(o | {"bbox": tuple(o["bbox"])})) for o in data["objects"]]
        return cls(data["image_id"], data["split"], data["width"], data["height"], data["grid"], objects)

    def kinds(self) -> set[str]:
        return {o.kind for o in self.objects}

    def count(self, kind: str) -> int:
        return sum(o.kind == kind for o in self.objects)


def position_name(row: int, col: int, grid: int) -> str:
    """Names a grid cell the way people do ("top left", "center", "bottom")."""
    def band(i: int, words: tuple[str, str, str]) -> str:
        if grid == 1:
            return ""
        if i == 0:
            return words[0]
        if i == grid - 1:
            return words[2]
        return words[1] if grid % 2 and i == grid // 2 else (f"{words[1]}-{words[0]}" if i < grid / 2 else f"{words[1]}-{words[2]}")

    vertical = band(row, ("top", "middle", "bottom"))
    horizontal = band(col, ("left", "center", "right"))
    if vertical == "middle" and horizontal == "center":
        return "center"
    if vertical == "middle":
        return horizontal
    if horizontal == "center":
        return vertical
    return f"{vertical} {horizontal}".strip()


class WorldSampler:
    """Samples scene graphs deterministically from a seed."""

    def __init__(self, settings):
        self.s = settings
        unknown = [k for k in settings.kinds if k not in SHAPES]
        if unknown:
            raise ValueError(f"world.kinds: unknown shape(s) {unknown}; available: {list(SHAPES)}")
        bad_colors = [c for c in settings.colors if c not in COLOR_RGB]
        if bad_colors:
            raise ValueError(f"world.colors: unknown colour(s) {bad_colors}; available: {list(COLOR_RGB)}")
        # each theme's kinds weighted by their place in `kinds` (popularity_decay ** index)
        self.themes = [list(t) for t in settings.themes] or [list(settings.kinds)]
        self.weight = {k: settings.popularity_decay ** i for i, k in enumerate(settings.kinds)}

    def _draw_kind(self, theme: int, rng: random.Random) -> str:
        """From the scene's theme with probability theme_bias, else from every kind (theme_bias
        0: no themes)."""
        pool = self.themes[theme] if rng.random() < self.s.theme_bias else list(self.s.kinds)
        return rng.choices(pool, weights=[self.weight[k] for k in pool])[0]

    def sample(self, rng: random.Random, image_id: str, split: str) -> Scene:
        s = self.s
        grid, cell = s.grid, s.image_size // s.grid
        n_objects = rng.randint(s.min_objects, min(s.max_objects, grid * grid))
        theme = rng.randrange(len(self.themes))
        kinds: list[str] = []
        while len(kinds) < n_objects:
            if kinds and rng.random() < s.repeat_bias:
                kinds.append(rng.choice(kinds))  # another of a kind already here: counts of 2 and more are common
            else:
                kinds.append(self._draw_kind(theme, rng))
        cells = rng.sample(range(grid * grid), n_objects)
        objects = []
        for i, (kind, cell_index) in enumerate(zip(kinds, cells)):
            row, col = divmod(cell_index, grid)
            size = rng.choice(("small", "large"))
            radius = SIZE_RADIUS_FRACTION[size] * cell
            slack = min(s.jitter, max(0, int(cell / 2 - radius) - 1))
            cx = col * cell + cell / 2 + rng.randint(-slack, slack)
            cy = row * cell + cell / 2 + rng.randint(-slack, slack)
            bbox = (round(cx - radius), round(cy - radius), round(cx + radius), round(cy + radius))
            color = rng.choice(s.colors)
            objects.append(SceneObject(i, kind, color, size, row, col, bbox, faint=rng.random() < s.faint_rate))
        return Scene(image_id, split, s.image_size, s.image_size, grid, objects)


def count_question_kind(scene: Scene, rng: random.Random) -> str:
    """The kind a "how many" question asks about: most often a repeated kind when the scene has
    one, so that a count of 1 (most kinds in most scenes) is not the answer a blind guess wins
    with."""
    kinds = sorted(scene.kinds())
    repeated = [k for k in kinds if scene.count(k) > 1]
    if repeated and rng.random() < 0.8:
        return rng.choice(repeated)
    return rng.choice(kinds)


def absent_kind(scene: Scene, kinds: list[str], rng: random.Random) -> str | None:
    """A kind the scene lacks, drawn uniformly: the rule of the teacher's existence questions and
    of the base's perception check."""
    return AbsentRule().draw(scene, kinds, rng)


@dataclass(frozen=True)
class AbsentRule:
    """How a question about an absent object picks its kind (the base's probes and the instruction
    mix that replays them; the teacher's and the perception check's are uniform): with
    probability `unrelated_share` a kind unrelated to the scene, of a theme none of its objects
    belongs to (people ask whether a kitchen holds an elephant far more often than whether it
    holds a fork it lacks), or no question (None) when the scene holds every theme: asking it
    about a kind of its own themes instead would teach "no" to the very kinds the rule keeps
    from it; otherwise uniformly over the absent kinds. A student taught on such data rarely hears "no"
    about a kind that belongs with the scene, and learns to expect it: the co-occurrence
    hallucination POPE's adversarial split probes (docs/instrument.md). Never by frequency or
    co-occurrence statistics, the rules of POPE's popular and adversarial splits: training on
    those negatives would teach the student the very test that measures its hallucinations."""
    themes: tuple[tuple[str, ...], ...] = ()
    unrelated_share: float = 0.0

    @classmethod
    def of_base(cls, params) -> "AbsentRule":
        """The rule of the base student's questions (`base.unrelated_negatives`), which the
        instruction mix replays in tuning."""
        return cls(tuple(tuple(t) for t in params.world.themes), params.base.unrelated_negatives)

    def draw(self, scene: Scene, kinds: list[str], rng: random.Random) -> str | None:
        present = scene.kinds()
        absent = [k for k in kinds if k not in present]
        if not absent:
            return None
        related = {k for theme in self.themes if present & set(theme) for k in theme}
        unrelated = [k for k in absent if k not in related]
        if self.unrelated_share and rng.random() < self.unrelated_share:
            return rng.choice(unrelated) if unrelated else None
        return rng.choice(absent)


def confusing_count(n: int, rng: random.Random) -> int:
    """A wrong count drawn evenly from 1 to max(3, n + 1), so that neither "one more" nor "one
    less" gives the wrong answer away."""
    return rng.choice([k for k in range(1, max(3, n + 1) + 1) if k != n])


def render(scene: Scene, world=None) -> Image.Image:
    """The scene's image: faint objects blended into the background at `world.faint_contrast`,
    then Gaussian pixel noise of standard deviation `world.noise` (0-255 scale), seeded by the
    image id so that an image is the same on every machine. Without `world`: neither."""
    faint_contrast, noise = (world.faint_contrast, world.noise) if world is not None else (1.0, 0.0)
    image = Image.new("RGB", (scene.width, scene.height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        rgb = COLOR_RGB[obj.color]
        if obj.faint:
            rgb = tuple(round(b + faint_contrast * (c - b)) for c, b in zip(rgb, BACKGROUND))
        _draw_shape(draw, obj.kind, obj.bbox, rgb)
    if noise > 0:
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(scene.image_id.encode()).digest()[:8], "big"))
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, noise, (scene.height, scene.width, 3))
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, bbox, rgb) -> None:
    x0, y0, x1, y1 = bbox
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if kind == "circle":
        draw.ellipse(bbox, fill=rgb)
    elif kind == "ring":
        draw.ellipse(bbox, outline=rgb, width=max(1, round(r / 2.5)))
    elif kind == "square":
        draw.rectangle(bbox, fill=rgb)
    elif kind == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=rgb)
    elif kind == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=rgb)
    elif kind == "bar":
        draw.rectangle((x0, cy - r / 3, x1, cy + r / 3), fill=rgb)
    elif kind == "pole":
        draw.rectangle((cx - r / 3, y0, cx + r / 3, y1), fill=rgb)
    elif kind == "cross":
        w = r / 3
        draw.rectangle((x0, cy - w, x1, cy + w), fill=rgb)
        draw.rectangle((cx - w, y0, cx + w, y1), fill=rgb)
    elif kind == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=rgb)
    else:  # pragma: no cover - guarded by WorldSampler
        raise ValueError(kind)


def companions(scenes: list[Scene]) -> dict[str, str]:
    """Each kind's most frequent companion (images holding both) in `scenes`, ties to the
    alphabetically first kind: the plausible absent object the teachers offer as a confusing
    answer. Measured on the scenes a teacher is given (the train scenes, or a source's), as
    POPE measures co-occurrence on its annotations."""
    together: Counter = Counter()
    for s in scenes:
        for a, b in combinations(sorted(s.kinds()), 2):
            together[a, b] += 1
    best: dict[str, tuple[int, str]] = {}
    for (a, b), n in together.items():
        for kind, other in ((a, b), (b, a)):
            if kind not in best or (-n, other) < (-best[kind][0], best[kind][1]):
                best[kind] = (n, other)
    return {kind: other for kind, (_, other) in sorted(best.items())}


def sample_world(settings, seed: int) -> tuple[list[Scene], list[Scene]]:
    """Train and held-out scenes; disjoint by construction (distinct ids, one stream)."""
    sampler = WorldSampler(settings)
    rng = random.Random(seed)
    train = [sampler.sample(rng, f"train-{i:06d}", "train") for i in range(settings.train_images)]
    held_out = [sampler.sample(rng, f"eval-{i:06d}", "eval") for i in range(settings.eval_images)]
    return train, held_out


def image_relpath(scene: Scene) -> str:
    return image_path(scene.split, scene.image_id)


def write_scene(scene: Scene, root: Path, world=None) -> Path:
    path = root / image_relpath(scene)
    path.parent.mkdir(parents=True, exist_ok=True)
    render(scene, world).save(path, format="PNG")
    return path


def load_scenes(data_dir: str | Path) -> dict[str, Scene]:
    """The scene graphs `generate` wrote (data/scenes/scenes.jsonl), by image id."""
    path = Path(data_dir) / "scenes" / "scenes.jsonl"
    with path.open() as f:
        scenes = [Scene.from_json(json.loads(line)) for line in f if line.strip()]
    return {s.image_id: s for s in scenes}
