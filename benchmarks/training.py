"""Training throughput and what it costs at the params' size: the base step's two phases
(vision pretraining, alignment) and tuning per variant, each timed on a slice and projected to
the whole stage, with the threads used.

`python -m benchmarks.training [--steps 40] [--threads N]`; the last line is one JSON object."""
from __future__ import annotations

import argparse
import copy
import json
import math
import time

import torch

from benchmarks.common import data_and_records
from reverie.world import load_scenes
from reverie.student.batching import ImageTable
from reverie.student.curriculum import base_curriculum, tokenizer_corpus
from reverie.student.model import build_tiny, image_token_count, train_tokenizer
from reverie.student.samples import ChatEncoder, build_variant
from reverie.student.train import TrainConfig, train
from reverie.student.vision import pretrain_vision
from reverie.tuning import apply_lora
from reverie.world import AbsentRule, image_relpath


def timed_train(model, samples, images, batch_size: int, lr: float, steps: int, pad_id: int, batches=None) -> dict:
    """Seconds per step over `steps` steps after two warm-up steps."""
    cfg = TrainConfig(epochs=1.0, batch_size=batch_size, lr=lr, seed=0, max_steps=steps + 2)
    started = time.perf_counter()
    warm = TrainConfig(epochs=1.0, batch_size=batch_size, lr=lr, seed=0, max_steps=2)
    train(copy.deepcopy(model), samples, images, warm, pad_id, progress=False, batches=batches)
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    result = train(model, samples, images, cfg, pad_id, progress=False, batches=batches)
    seconds = time.perf_counter() - started - warmup
    return {"seconds_per_step": seconds / steps, "samples_per_s": steps * batch_size / seconds,
            "padding_fraction": result.metrics["padding_fraction"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    params, data_dir, records, source = data_and_records()
    base = params.base
    scenes = [s for s in load_scenes(data_dir).values() if s.split == "train"]
    conversations, batches = base_curriculum(scenes, params.world.kinds, params.world.colors, base, image_relpath,
                                             absent=AbsentRule.of_base(params))
    tokenizer = train_tokenizer(tokenizer_corpus(records, conversations), base.model.vocab_size)
    model, processor = build_tiny(base.model, tokenizer, params.world.image_size)
    encoder = ChatEncoder(tokenizer, image_token_count(model.config))
    samples = encoder.encode_all(conversations)
    images = ImageTable(processor, data_dir, [s.image for s in samples])
    pad = tokenizer.pad_token_id
    # the slices run on the data at hand; the projections scale to the world params.yaml asks for
    from reverie.settings import load_params

    target = load_params().world.train_images
    scale = target / len(scenes)
    out: dict = {"benchmark": "training", "data": source, "threads": torch.get_num_threads(),
                 "train_images": len(scenes), "records": len(records), "projected_to_train_images": target}

    # vision pretraining: a slice of its steps, projected to base.vision_epochs
    pixels = images([image_relpath(s) for s in scenes])
    slice_epochs = args.steps * base.vision_batch_size / len(scenes)
    vision = pretrain_vision(model, pixels, scenes, params.world.kinds, params.world.colors, slice_epochs, base.vision_lr,
                             base.vision_batch_size, base.seed, base.freeze_vision, log=None)
    per_step = vision["vision_seconds"] / vision["vision_steps"]
    vision_steps = math.ceil(base.vision_epochs * len(scenes) * scale / base.vision_batch_size)
    out["vision"] = {"seconds_per_step": per_step, "steps": vision_steps, "projected_seconds": per_step * vision_steps}

    align = timed_train(model, samples, images, base.batch_size, base.lr, args.steps, pad, batches=batches)
    align_steps = round(len(batches) * scale)
    out["alignment"] = align | {"steps": align_steps, "projected_seconds": align["seconds_per_step"] * align_steps}
    print(f"base: vision {out['vision']['projected_seconds']:.0f} s ({vision_steps} steps), alignment "
          f"{out['alignment']['projected_seconds']:.0f} s ({align_steps} steps, {align['samples_per_s']:.0f} samples/s)")

    tune = params.tune
    out["tune"] = {}
    for variant in tune.variants:
        variant_samples = encoder.encode_all(build_variant(records, variant, tune.prompts))
        student = apply_lora(copy.deepcopy(model), tune.lora) if tune.lora.enabled else copy.deepcopy(model)
        figures = timed_train(student, variant_samples, images, tune.batch_size, tune.lr, args.steps, pad)
        steps = math.ceil(tune.epochs * len(variant_samples) * scale / tune.batch_size)
        out["tune"][variant] = figures | {"samples": len(variant_samples), "steps": steps,
                                          "projected_seconds": figures["seconds_per_step"] * steps}
        print(f"tune {variant:8s} {figures['samples_per_s']:6.0f} samples/s, padding {figures['padding_fraction']:.1%}, "
              f"~{out['tune'][variant]['projected_seconds']:.0f} s per run ({steps} steps)")
    per_seed = sum(v["projected_seconds"] for v in out["tune"].values())
    out["tune_seconds_per_seed"] = per_seed
    out["training_seconds_projected"] = (out["vision"]["projected_seconds"] + out["alignment"]["projected_seconds"]
                                         + per_seed * len(tune.seeds))
    print(f"training at these params: ~{out['training_seconds_projected'] / 60:.1f} min "
          f"(base, then {len(tune.seeds)} seed(s) x {len(tune.variants)} variants)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
