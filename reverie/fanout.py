"""Generation in shards: the synthetic world's images split into contiguous shards, each
rendered and taught by a pure function that any process can run, and the shards' records
merged back in image order.

Records are seeded per (seed, image id) (`SceneGraphTeacher.records_for_scene`), so the merged records are
the same, byte for byte once written, as one process's. The engine that runs the shards
(Prefect's Dask task runner) is in flows/generate_fanout.py; nothing here imports it.
"""
from __future__ import annotations

from pathlib import Path

from .generate import build_teacher, teach_scenes, world_scenes
from .world import Scene, write_scene


def split_shards(items: list, shards: int) -> list[list]:
    """`shards` contiguous slices (sizes differ by at most one), in order; never an empty one."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    n = min(shards, len(items)) or 1
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        stop = start + size + (i < extra)
        out.append(items[start:stop])
        start = stop
    return out


def shard_payloads(params, shards: int) -> tuple[list[Scene], dict, list[list[dict]]]:
    """The scenes, and the picklable arguments of `generate_shard`: the params as plain data
    (the same for every shard) and each shard's scenes as JSON, in shard order."""
    scenes = world_scenes(params)
    return scenes, params.model_dump(mode="json", by_alias=True), [[s.to_json() for s in part]
                                                                   for part in split_shards(scenes, shards)]


def generate_shard(params_dump: dict, scene_jsons: list[dict], out_dir: str | None) -> list[dict]:
    """Renders (when `out_dir` is given) and teaches one shard; returns its records in the
    shard's image order. Pure apart from the PNG files it writes, one per image."""
    from .settings import Params

    params = Params.model_validate(params_dump)
    scenes = [Scene.from_json(data) for data in scene_jsons]
    write_image = (lambda scene: write_scene(scene, Path(out_dir), params.world)) if out_dir is not None else None
    return teach_scenes(scenes, build_teacher(params.world, params.generate, params.project.seed), write_image)


def merge_shards(results: list[tuple[int, list[dict]]]) -> list[dict]:
    """The shards' records, concatenated by shard index (shards are contiguous in image
    order, so this is image order) whatever order the shards finished in."""
    indices = [i for i, _ in results]
    if sorted(indices) != list(range(len(results))):
        raise ValueError(f"shard results are missing or repeated: got indices {sorted(indices)}")
    return [r for _, records in sorted(results, key=lambda pair: pair[0]) for r in records]
