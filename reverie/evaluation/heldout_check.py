"""A quick held-out check written into the tune metrics: does the tuned student still see?

The base check's balanced existence probes and shuffled-image control (perception.py), on
the first `tune.quick_eval_images` held-out scenes, without descriptions."""
from __future__ import annotations

from pathlib import Path

from ..world import load_scenes


def heldout_check(params, model_dir: str | Path, data_dir: str | Path) -> dict:
    from ..student.model import load_tuned
    from .perception import perception_check

    n = params.tune.quick_eval_images
    scenes = sorted((s for s in load_scenes(data_dir).values() if s.split == "eval"), key=lambda s: s.image_id)[:n]
    if not n or len(scenes) < 2:
        return {}
    model, processor, _ = load_tuned(model_dir, params.evaluate.precision)
    figures = perception_check(model, processor, scenes, data_dir, params.world.kinds,
                               params.evaluate.batch_size, describe=0)
    return {"heldout_yes_no_accuracy": figures["heldout_existence_accuracy"],
            "heldout_yes_ratio": figures["heldout_yes_ratio"],
            "heldout_shuffled_image_accuracy": figures["shuffled_image_accuracy"]}
