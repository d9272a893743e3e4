"""Generation throughput: records/s with and without rendering the images.

`python -m benchmarks.generation [--images N]`; the last line is one JSON object."""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from reverie.generate import generate_dataset
from reverie.settings import load_params


def measure(params, render: bool, repeats: int) -> list[float]:
    rates = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            result = generate_dataset(params, tmp, render_images=render, progress=False)
            elapsed = time.perf_counter() - started
        rates.append(result.metrics["raw_records"] / elapsed)
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=1000, help="train images (eval images: a fifth)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    params = load_params(overrides={"world.train_images": args.images, "world.eval_images": max(1, args.images // 5)})
    with_render = measure(params, True, args.repeats)
    without = measure(params, False, args.repeats)
    result = {
        "benchmark": "generation",
        "images": args.images + max(1, args.images // 5),
        "records_per_s_with_rendering": statistics.median(with_render),
        "records_per_s_without_rendering": statistics.median(without),
        # time per record is 1 / rate: rendering's share is 1 - t_without / t_with
        "rendering_share_of_time": 1 - statistics.median(with_render) / statistics.median(without),
        "repeats": args.repeats,
    }
    print(f"with rendering: {result['records_per_s_with_rendering']:.0f} records/s (median of {args.repeats})")
    print(f"without rendering: {result['records_per_s_without_rendering']:.0f} records/s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
