"""Memory of training as the image set grows: a few steps on 1k, 4k and 16k synthetic images
(the project's world, reverie/world.py, rendered into a temporary folder) with the images
streamed by the training loop's DataLoader (`ImageStream`): the peak resident memory should
stay flat (goal: largest / smallest <= 1.25). Each size trains in a fresh subprocess, so
one size's memory never counts for another's; the peak is the subprocess's own
(`getrusage(RUSAGE_SELF)`), its DataLoader workers' reported apart.

`--source table` measures the in-memory `ImageTable` instead, for comparison: it grows with
the images (pixels of every image held at once).

`python -m benchmarks.data_scale [--sizes 1000 4000 16000] [--steps 10] [--batch 32]
[--workers 2] [--source stream|table]`; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def world_settings(images: int):
    from reverie.settings import WorldSettings

    return WorldSettings(train_images=images, eval_images=1)


def render(root: Path, images: int) -> float:
    """The first `images` scenes of the seed-0 world as PNGs; a smaller world is a prefix of it."""
    from reverie.world import sample_world, write_scene

    started = time.perf_counter()
    for scene in sample_world(world_settings(images), 0)[0]:
        write_scene(scene, root)
    return time.perf_counter() - started


def child(root: Path, images: int, steps: int, batch: int, workers: int, source: str) -> dict:
    """One size: a description per image, the tiny student, `steps` training steps."""
    import resource

    import torch

    from reverie.settings import ModelSettings
    from reverie.student.curriculum import describe_conversations
    from reverie.student.model import build_tiny, image_token_count, train_tokenizer
    from reverie.student.samples import ChatEncoder
    from reverie.student.batching import ImageStream, ImageTable
    from reverie.student.train import TrainConfig, train
    from reverie.world import image_relpath, sample_world

    settings = world_settings(images)
    scenes = sample_world(settings, 0)[0]
    conversations = describe_conversations(scenes, image_relpath, settings.kinds)[::2]  # one per image
    # the same tokenizer at every size: trained on the first scenes' texts
    corpus = [t.user + " " + t.assistant for c in conversations[:500] for t in c.turns] + ["USER: ASSISTANT:"]
    torch.manual_seed(0)
    tokenizer = train_tokenizer(corpus, ModelSettings().vocab_size)
    model, processor = build_tiny(ModelSettings(), tokenizer, settings.image_size)
    encoder = ChatEncoder(tokenizer, image_token_count(model.config))
    samples = [encoder.encode(c) for c in conversations]
    del conversations, scenes
    if source == "stream":
        pixels = ImageStream(processor, root, workers)
    else:
        pixels = ImageTable(processor, root, [s.image for s in samples])
    cfg = TrainConfig(epochs=1.0, batch_size=batch, lr=1e-3, seed=0, max_steps=steps)
    result = train(model, samples, pixels, cfg, tokenizer.pad_token_id, progress=False)
    kib = 1 if sys.platform == "darwin" else 1024
    return {"images": images, "samples": len(samples), "steps": result.steps,
            "steps_per_s": result.steps / result.metrics["train_seconds"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / 2**20,
            "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--source", choices=["stream", "table"], default="stream")
    p.add_argument("--child", nargs=2, metavar=("ROOT", "IMAGES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), int(args.child[1]), args.steps, args.batch, args.workers,
                               args.source)))
        return
    sizes = sorted(args.sizes)
    with tempfile.TemporaryDirectory(prefix="reverie-data-scale-") as tmp:
        root = Path(tmp)
        render_s = render(root, sizes[-1])
        print(f"rendered {sizes[-1]} images in {render_s:.0f} s", flush=True)
        rows = []
        for n in sizes:
            cmd = [sys.executable, "-m", "benchmarks.data_scale", "--child", str(root), str(n), "--steps", str(args.steps),
                   "--batch", str(args.batch), "--workers", str(args.workers), "--source", args.source]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"size {n} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{n:6d} images: peak RSS {r['peak_rss_mb']:.0f} MB (workers {r['worker_peak_rss_mb']:.0f} MB), "
                  f"{r['steps_per_s']:.2f} steps/s", flush=True)
    peaks = [r["peak_rss_mb"] for r in rows]
    out = {"benchmark": "data_scale", "source": args.source, "workers": args.workers, "batch": args.batch,
           "steps": args.steps, "images": sizes, "peak_rss_mb": [round(x, 1) for x in peaks],
           "worker_peak_rss_mb": [round(r["worker_peak_rss_mb"], 1) for r in rows],
           "rss_ratio": round(peaks[-1] / peaks[0], 3), "goal_rss_ratio": 1.25,
           "steps_per_s": [round(r["steps_per_s"], 3) for r in rows], "render_seconds": round(render_s, 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
