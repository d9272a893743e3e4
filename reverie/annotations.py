"""Scene graphs from real annotations: COCO instances JSON and Visual Genome objects or
attributes JSON, read into `world.Scene`s, so that the scene-graph teacher, its judge and the
POPE builder run on real photographs as they run on the synthetic world.

Each annotated object becomes a `SceneObject`: its kind is the category (COCO) or object
name (VG); its colour is the first colour word among its VG attributes, else "unknown" (COCO
has no attributes); it is "large" when its box covers at least `large_area_fraction` of the
image; its row and column are the cell of a 3x3 grid that holds its box centre.

Images are skipped, with the reason counted, when their scene graph cannot give true
answers: no object, more than `max_objects` (see settings), or a COCO crowd region (a crowd
box stands for an unknown number of objects, so counts would be wrong).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .data_import import image_files, image_id_for, safe_image_path, split_for, stable_fraction
from .io import load_json_file
from .world import Scene, SceneObject, companions

GRID = 3
UNKNOWN_COLOR = "unknown"
COLOR_WORDS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown",
               "black", "white", "gray", "silver", "gold", "beige", "tan")
COLOR_SPELLINGS = {"grey": "gray", "golden": "gold"}
DUPLICATE_IOU = 0.7  # VG often boxes one object several times under the same name


@dataclass
class AnnotatedScenes:
    """Scenes with the files of their images, and what the teacher needs to know of them."""

    scenes: list[Scene]
    paths: dict[str, Path]  # image_id -> image file
    kinds: list[str]
    colors: list[str] = field(default_factory=lambda: list(COLOR_WORDS))
    partners: dict[str, str] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)  # reason -> images


def kind_name(raw) -> str:
    """A category or object name as the teacher writes it: lower case, single spaces, and none
    of the characters that end or split the teacher's sentences."""
    text = re.sub(r"[^a-z0-9' -]+", " ", str(raw or "").lower().replace("_", " "))
    return " ".join(text.split())


def color_of(attributes) -> str:
    """The first attribute that is (or ends in) a colour word: "dark blue" is blue."""
    for attribute in attributes or []:
        words = str(attribute).lower().split()
        if words:
            word = COLOR_SPELLINGS.get(words[-1], words[-1])
            if word in COLOR_WORDS:
                return word
    return UNKNOWN_COLOR


def scene_object(i: int, kind: str, color: str, box_xywh, width: int, height: int,
                 large_area_fraction: float) -> SceneObject:
    x, y, w, h = (float(v) for v in box_xywh)
    cx, cy = x + w / 2, y + h / 2
    row = min(GRID - 1, max(0, int(cy / height * GRID)))
    col = min(GRID - 1, max(0, int(cx / width * GRID)))
    size = "large" if w * h >= large_area_fraction * width * height else "small"
    return SceneObject(i, kind, color, size, row, col, (round(x), round(y), round(x + w), round(y + h)))


def _finish(candidates: list[tuple[Scene, Path]], kinds: list[str], settings, skipped: Counter) -> AnnotatedScenes:
    """Applies the object limit and `max_images` (a hash-ordered, so unbiased and stable,
    subset), then derives the teacher's partners from the train scenes kept."""
    kept = []
    for scene, path in candidates:
        if not scene.objects:
            skipped["no_objects"] += 1
        elif len(scene.objects) > settings.max_objects:
            skipped["too_many_objects"] += 1
        else:
            kept.append((scene, path))
    if settings.max_images is not None:
        # its own hash, not the split's: the lowest split hashes are exactly the eval images
        kept = sorted(kept, key=lambda sp: stable_fraction(sp[0].image_id, "subset"))[: settings.max_images]
    kept.sort(key=lambda sp: sp[0].image_id)
    scenes = [s for s, _ in kept]
    return AnnotatedScenes(scenes, {s.image_id: p for s, p in kept}, kinds,
                           partners=companions([s for s in scenes if s.split == "train"]), skipped=skipped)


# ---- COCO ---------------------------------------------------------------------------------
def read_coco(settings) -> AnnotatedScenes:
    """COCO instances JSON: `images` (id, file_name, width, height), `annotations` (image_id,
    category_id, bbox as x, y, w, h, iscrowd) and `categories` (id, name)."""
    data = load_json_file(settings.path)  # a syntax error names the file and line
    categories = {c["id"]: kind_name(c["name"]) for c in data.get("categories", [])}
    by_image: dict = {}
    for a in data.get("annotations", []):
        by_image.setdefault(a["image_id"], []).append(a)
    skipped: Counter = Counter()
    candidates = []
    for image in data.get("images", []):
        annotations = by_image.get(image["id"], [])
        if any(a.get("iscrowd") for a in annotations):
            skipped["crowd_region"] += 1
            continue
        path = safe_image_path(settings.images_dir, image["file_name"])  # refuses a path out of the root
        if not path.is_file():
            skipped["image_not_found"] += 1
            continue
        width, height = image.get("width") or 0, image.get("height") or 0
        if not (width and height):
            width, height = _image_size(path)
        image_id = image_id_for(Path(settings.images_dir), Path(settings.images_dir) / image["file_name"])
        unknown = [a["category_id"] for a in annotations if a["category_id"] not in categories]
        if unknown:
            raise ValueError(f"{settings.path}: image {image['id']} has annotations of unknown category {unknown[0]}")
        objects = [scene_object(i, categories[a["category_id"]], UNKNOWN_COLOR, a["bbox"], width, height,
                                settings.large_area_fraction)
                   for i, a in enumerate(sorted(annotations, key=lambda a: a.get("id", 0)))]
        split = split_for(image_id, settings.eval_fraction)
        candidates.append((Scene(image_id, split, width, height, GRID, objects), path))
    return _finish(candidates, sorted(set(categories.values())), settings, skipped)


# ---- Visual Genome --------------------------------------------------------------------------
def _vg_image_id(row: dict):
    image = row.get("image") if isinstance(row.get("image"), dict) else {}
    return row.get("image_id", row.get("id", image.get("image_id", image.get("id"))))


def _iou(a: tuple, b: tuple) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _vg_objects(raw_objects: list[dict], width: int, height: int, settings) -> list[SceneObject]:
    """Objects of one VG image; a box of the same name overlapping an earlier one by
    `DUPLICATE_IOU` is the same object boxed twice and only lends it its colour."""
    objects: list[SceneObject] = []
    for o in raw_objects:
        names = o.get("names") or ([o["name"]] if o.get("name") else [])
        kind = kind_name(names[0]) if names else ""
        if not kind or not (o.get("w") and o.get("h")):
            continue
        new = scene_object(len(objects), kind, color_of(o.get("attributes")), (o["x"], o["y"], o["w"], o["h"]),
                           width, height, settings.large_area_fraction)
        twin = next((i for i, seen in enumerate(objects)
                     if seen.kind == kind and _iou(seen.bbox, new.bbox) >= DUPLICATE_IOU), None)
        if twin is None:
            objects.append(new)
        elif objects[twin].color == UNKNOWN_COLOR and new.color != UNKNOWN_COLOR:
            old = objects[twin]
            objects[twin] = SceneObject(old.id, old.kind, new.color, old.size, old.row, old.col, old.bbox)
    return objects


def read_visual_genome(settings) -> AnnotatedScenes:
    """Visual Genome `objects.json` or `attributes.json` (a list of images, each with `objects`
    or `attributes`: boxes x, y, w, h with `names` and, in the latter, `attributes`). The
    images are `<image_id>.<ext>` anywhere under `images_dir` (VG_100K, VG_100K_2)."""
    rows = load_json_file(settings.path)
    root = Path(settings.images_dir)
    files: dict[str, Path] = {}
    for path in image_files(root):  # refuses a symlink out of the root
        if path.stem in files:
            raise ValueError(f"{path} and {files[path.stem]} are both image {path.stem!r}; remove one")
        files[path.stem] = path
    skipped: Counter = Counter()
    candidates = []
    for row in rows:
        image_id = str(_vg_image_id(row))
        path = files.get(image_id)
        if path is None:
            skipped["image_not_found"] += 1
            continue
        width, height = row.get("width") or 0, row.get("height") or 0
        if not (width and height):
            width, height = _image_size(path)
        objects = _vg_objects(row.get("objects") or row.get("attributes") or [], width, height, settings)
        scene_id = f"vg-{image_id}"
        candidates.append((Scene(scene_id, split_for(scene_id, settings.eval_fraction), width, height, GRID, objects), path))
    kinds = sorted({o.kind for scene, _ in candidates for o in scene.objects})
    return _finish(candidates, kinds, settings, skipped)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:  # reads the header only
        return image.size


def read_annotations(settings) -> AnnotatedScenes:
    """The scenes of `generate.annotations` (an `AnnotationSettings`)."""
    if settings.format == "coco":
        return read_coco(settings)
    if settings.format == "visual_genome":
        return read_visual_genome(settings)
    raise ValueError(f"unknown annotation format {settings.format!r}")


def save_png(source: Path, dest: Path) -> None:
    """The image as PNG at `dest`, where the evaluation's `image_relpath` looks for it."""
    from PIL import Image

    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.convert("RGB").save(dest, format="PNG")
