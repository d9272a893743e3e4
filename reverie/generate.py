"""The data half of the method: world -> teacher (QA, rationales) -> judge -> records."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from .io import write_json, write_jsonl
from .settings import ParamsError
from .records import judge_scores
from .teachers.protocol import Teacher
from .teachers.scene_graph import SceneGraphTeacher
from .world import Scene, companions, image_relpath, sample_world, write_scene


@dataclass
class GenerateResult:
    raw: list[dict]
    metrics: dict


def build_teacher(world, generate, seed: int) -> SceneGraphTeacher:
    """The synthetic world's teacher (with its text-only judge), ready to `teach` scenes. The
    companions it offers as plausible wrong objects are measured on the train scenes only."""
    train, _ = sample_world(world, seed)
    return SceneGraphTeacher(world.kinds, world.colors, companions(train), generate.template_version,
                             generate=generate, seed=seed)


def generate_dataset(params, out_dir: str | Path, render_images: bool = True, progress: bool = True) -> GenerateResult:
    """The generate stage in one process: images, scene files and REVERIE records under
    `out_dir`, from the source `generate.teacher` names: an image folder for a chat-API or local
    teacher, the released REVERIE JSON, or else the synthetic world (or real scene graphs,
    `generate.annotations`), taught scene by scene and checked by a judge. The returned metrics
    count what was kept and what was quarantined."""
    if params.generate.teacher in ("openai", "local"):
        return generate_from_image_folder(params, out_dir, render_images, progress)
    if params.generate.teacher == "reverie_json":
        return generate_from_release(params, out_dir, render_images)
    out_dir = Path(out_dir)
    world, generate = params.world, params.generate
    seed = params.project.seed
    source_metrics: dict = {}
    if generate.annotations is not None:
        # real scene graphs and their photographs instead of the synthetic world
        from .annotations import read_annotations, save_png
        from .teachers.annotated import AnnotatedSceneTeacher

        source = read_annotations(generate.annotations)
        scenes = source.scenes
        teacher = AnnotatedSceneTeacher(source.kinds, source.colors, source.partners, generate.template_version,
                                        generate=generate, seed=seed)
        source_metrics = {f"skipped_{reason}": n for reason, n in sorted(source.skipped.items())}

        def write_image(scene: Scene) -> None:
            save_png(source.paths[scene.image_id], out_dir / image_relpath(scene))
    else:
        teacher = build_teacher(world, generate, seed)
        scenes = world_scenes(params)

        def write_image(scene: Scene) -> None:
            write_scene(scene, out_dir, world)
    started = time.perf_counter()
    raw = teach_scenes(scenes, teacher, write_image if render_images else None, progress)
    elapsed = time.perf_counter() - started
    return finish_dataset(scenes, raw, out_dir, elapsed, source_metrics, write_outputs=render_images)


def world_scenes(params) -> list[Scene]:
    """The synthetic world's scenes in generation order: train, then held-out."""
    train, held_out = sample_world(params.world, params.project.seed)
    return train + held_out


def teach_scenes(scenes: list[Scene], teacher: Teacher,
                 write_image: Callable[[Scene], None] | None = None, progress: bool = False) -> list[dict]:
    """Renders (with `write_image`) and teaches the scenes in order, in one process or in one
    shard of the fan-out (reverie.fanout): the records of all of them, in scene order. Each
    scene's records depend on (seed, image id) alone, so any sharding gives the same ones."""
    raw: list[dict] = []
    for scene in tqdm(scenes, desc="generate", unit="img", disable=not progress, mininterval=1.0):
        if write_image is not None:
            write_image(scene)
        raw.extend(teacher.teach([scene]).records)
    return raw


def finish_dataset(scenes: list[Scene], raw: list[dict], out_dir: str | Path, elapsed: float,
                   source_metrics: dict | None = None, write_outputs: bool = True, *,
                   image_splits: list[str] | None = None, failed: list[dict] = ()) -> GenerateResult:
    """Everything after the records exist, shared by one process, the sharded flow
    (reverie.fanout) and the model teachers: judge split into kept and quarantined (with the
    items a teacher could not produce, `failed`), metrics, and the JSONL files. Without scene
    graphs, `image_splits` gives each image's split."""
    out_dir = Path(out_dir)
    kept = [r for r in raw if r["judge"]["consistent"]]
    judged_out = [{"reason": f"judge: {r['judge']['reason']}", "record": r} for r in raw if not r["judge"]["consistent"]]
    quarantined = list(failed) + judged_out
    splits = image_splits if image_splits is not None else [s.split for s in scenes]
    quality = judge_scores(raw)
    metrics = {
        "records": len(kept),
        "raw_records": len(raw),
        "quarantined": len(quarantined),
        "train_images": splits.count("train"),
        "eval_images": splits.count("eval"),
        "train_records": sum(r["split"] == "train" for r in kept),
        "eval_records": sum(r["split"] == "eval" for r in kept),
        "filter_rate": len(judged_out) / len(raw) if raw else 0.0,
        **quality,
        **(source_metrics or {}),
        "records_per_s": len(raw) / elapsed if elapsed else 0.0,
        "seconds": elapsed,
    }
    if write_outputs:
        write_jsonl(out_dir / "scenes" / "scenes.jsonl", (s.to_json() for s in scenes))
        write_jsonl(out_dir / "records" / "raw.jsonl", raw)
        write_jsonl(out_dir / "records" / "filtered.jsonl", kept)
        write_jsonl(out_dir / "records" / "quarantine.jsonl", quarantined)
    return GenerateResult(raw, metrics)


def model_teacher(generate) -> Teacher:
    """The model teacher `generate.teacher` names, with the cache of its settings section.
    Imported on demand: each pulls in its own stack (httpx, or torch and transformers)."""
    name = generate.teacher
    if name == "openai":
        from .teachers.openai_compat import ChatTeacher
        return ChatTeacher(generate, cache_path=generate.openai.cache_path)
    if name == "local":
        from .teachers.local_vlm import LocalTeacher
        return LocalTeacher(generate, cache_path=generate.local.cache_path)
    raise ValueError(f"{name!r} is not a model teacher")


def generate_from_image_folder(params, out_dir: str | Path, write_outputs: bool = True,
                               progress: bool = True, teacher: Teacher | None = None) -> GenerateResult:
    """The same outputs from a folder of real images and a model teacher (`teacher`, by default
    the one `generate.teacher` names, whose settings section gives the images folder, the
    eval fraction and the cache). The images are copied under `out_dir/images/<split>/`,
    where validate looks for them; there is no scene graph, so scenes.jsonl is written empty."""
    import shutil

    from .data_import import image_folder

    name = params.generate.teacher
    out_dir, settings = Path(out_dir), getattr(params.generate, name)
    teacher = teacher or model_teacher(params.generate)
    try:
        entries = image_folder(settings.images_dir, settings.eval_fraction)
    except FileNotFoundError as exc:  # a missing or empty folder: say which setting points there
        raise ParamsError(f"generate.{name}.images_dir: {exc}") from None
    started = time.perf_counter()
    raw, failed, usage = teacher.teach(entries, progress)
    elapsed = time.perf_counter() - started
    if write_outputs:
        for e in entries:
            (out_dir / e.relpath).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(e.path, out_dir / e.relpath)
    # precision and recall are measured against injected errors, which only the scene-graph
    # teacher has: undefined here (NaN, written as null)
    source = {"filter_precision": float("nan"), "filter_recall": float("nan"),
              **{f"teacher_{k}": v for k, v in usage.items()}}
    result = finish_dataset([], raw, out_dir, elapsed, source, write_outputs,
                            image_splits=[e.split for e in entries], failed=failed)
    if write_outputs:
        log_generation_run(params, result.metrics)
    require_records(result, failed, out_dir, f"the {name} teacher", f"{len(entries)} images")
    return result


def generate_from_release(params, out_dir: str | Path, write_outputs: bool = True) -> GenerateResult:
    """The same outputs from the released REVERIE annotations (`generate.reverie_json`):
    entries checked one by one (release.py) with validate's length bounds, and the images
    their records use linked (or copied) under `out_dir/images/<split>/`, where validate and
    training look for them."""
    from .data_import import image_id_for
    from .release import import_reverie

    settings = params.generate.reverie_json
    out_dir, root, source = Path(out_dir), Path(settings.images_dir), Path(settings.path)
    if not source.is_file():
        raise ParamsError(f"generate.reverie_json.path: {source} is not a file")
    if not root.is_dir():
        raise ParamsError(f"generate.reverie_json.images_dir: images folder {root} does not exist")
    started = time.perf_counter()
    records, quarantined = import_reverie(source, root, settings.eval_fraction, lengths=params.validate_,
                                          exclude_images=settings.exclude_images,
                                          positive_prompt=settings.positive_prompt,
                                          negative_prompt=settings.negative_prompt)
    placed: dict[str, str] = {}  # release image path -> its path under the data root
    splits = []
    for r in records:
        rel = r["image"]
        if rel not in placed:
            image_id = image_id_for(root, root / rel)  # "coco/train2017/x.jpg" -> "coco__train2017__x"
            placed[rel] = f"images/{r['split']}/{image_id}{Path(rel).suffix.lower()}"
            splits.append(r["split"])
            if write_outputs:
                link_or_copy(root / rel, out_dir / placed[rel])
        r["provenance"]["source_image"] = rel
        r["image"] = placed[rel]
    if len(set(placed.values())) != len(placed):  # two release paths made safe to one name
        raise ValueError(f"{source}: two image paths map to one file name under {out_dir / 'images'}; rename one")
    elapsed = time.perf_counter() - started
    from collections import Counter

    rules = Counter(q["rule"] for q in quarantined)
    metrics = {"filter_precision": float("nan"), "filter_recall": float("nan"), "release_images": len(placed),
               **{f"release_quarantined_{rule}": n for rule, n in sorted(rules.items())}}
    result = finish_dataset([], records, out_dir, elapsed, metrics, write_outputs, image_splits=splits,
                            failed=quarantined)
    require_records(result, quarantined, out_dir, f"the release {source}", f"{len(records) + len(quarantined)} entries")
    return result


def link_or_copy(source: Path, dest: Path) -> None:
    """A hard link where the filesystem allows one (the release's images are large and many),
    else a copy; an existing file of the same name is replaced."""
    import os
    import shutil

    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def require_records(result: GenerateResult, quarantined: list[dict], out_dir: Path, source: str, inputs: str) -> None:
    """A source that keeps no record is an error, not an empty success: the quarantine file is
    written by then, and the message says where it is and what the commonest reasons were."""
    if result.metrics["records"] > 0:
        return
    from collections import Counter

    from .stage import StageFailed

    reasons = Counter(q["reason"][:100] for q in quarantined)
    top = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common(3)) or "no reasons recorded"
    raise StageFailed(f"{source} kept no record from {inputs} ({result.metrics['raw_records']} made, "
                      f"{result.metrics['quarantined']} quarantined: {top}); see {out_dir / 'records' / 'quarantine.jsonl'}")


def preview_generation(params) -> dict:
    """What `generate` would ask a paid teacher and what it would cost, without asking
    (`python -m stages.generate --dry-run`; see teachers/preview.py)."""
    name = params.generate.teacher
    if name not in ("openai", "local"):
        return {"teacher": name, "calls_to_pay": 0, "price_usd_max": 0.0,
                "note": "this source asks no model: nothing to pay"}
    from .data_import import image_folder
    from .teachers.preview import preview_local, preview_openai

    settings = getattr(params.generate, name)
    try:
        entries = image_folder(settings.images_dir, settings.eval_fraction)
    except FileNotFoundError as exc:
        raise ParamsError(f"generate.{name}.images_dir: {exc}") from None
    return (preview_openai if name == "openai" else preview_local)(params.generate, entries)


def log_generation_run(params, metrics: dict) -> None:
    """One MLflow run per generation by a model teacher, with its settings (the key's variable
    *name* only) and its usage and cost, beside the tuning runs of the same experiment."""
    from .tracking import project_run

    logger = project_run(params, f"generate-{params.generate.teacher}",
                         {"stage": "generate", "teacher": params.generate.teacher})
    try:
        logger.log_params({"generate": params.generate.model_dump()})
        logger.log_metrics(metrics)
    except BaseException:
        logger.end("FAILED")
        raise
    logger.end()
