"""Training throughput per variant: tokens/s, samples/s, padding, and the wall-time ratio
of pos_neg to response next to their token-count ratio.

`python -m benchmarks.training [--epochs 0.1]`; the last line is one JSON object."""
from __future__ import annotations

import argparse
import copy
import json

import torch

from benchmarks.common import data_and_records, student
from reverie.student.model import image_token_count
from reverie.student.samples import ChatEncoder, build_variant
from reverie.student.train import ImageTable, TrainConfig, train
from reverie.tune import apply_lora


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=float, default=0.1, help="fraction of an epoch each variant trains")
    args = p.parse_args()
    torch.manual_seed(0)
    params, data_dir, records, source = data_and_records()
    base, processor, model_source = student(params, data_dir, records)
    encoder = ChatEncoder(processor.tokenizer, image_token_count(base.config))
    results = {}
    for variant in ("response", "pos", "neg", "pos_neg"):
        convs = build_variant(records, variant, params.tune.prompts)
        samples = [encoder.encode(c) for c in convs]
        images = ImageTable(processor, data_dir, [s.image for s in samples])
        model = apply_lora(copy.deepcopy(base), params.tune.lora) if params.tune.lora.enabled else copy.deepcopy(base)
        cfg = TrainConfig(epochs=args.epochs, batch_size=params.tune.batch_size, lr=params.tune.lr, seed=0)
        m = train(model, samples, images, cfg, processor.tokenizer.pad_token_id, progress=False).metrics
        tokens = sum(len(s.input_ids) for s in samples)
        results[variant] = {"samples": len(samples), "tokens_per_epoch": tokens, "tokens_per_s": m["tokens_per_s"],
                            "samples_per_s": m["samples_per_s"], "padding_fraction": m["padding_fraction"],
                            "seconds": m["train_seconds"], "epoch_seconds_estimate": m["train_seconds"] / args.epochs}
        print(f"{variant:8s} {m['tokens_per_s']:8.0f} tokens/s {m['samples_per_s']:7.1f} samples/s "
              f"padding {m['padding_fraction']:.1%}  ~{results[variant]['epoch_seconds_estimate']:.0f} s/epoch")
    ratio_time = results["pos_neg"]["seconds"] / results["response"]["seconds"]
    ratio_tokens = results["pos_neg"]["tokens_per_epoch"] / results["response"]["tokens_per_epoch"]
    print(f"pos_neg / response: wall time x{ratio_time:.2f}, tokens x{ratio_tokens:.2f}")
    print(json.dumps({"benchmark": "training", "data": source, "model": model_source, "epochs": args.epochs,
                      "threads": torch.get_num_threads(), "variants": results,
                      "pos_neg_to_response_time_ratio": ratio_time, "pos_neg_to_response_token_ratio": ratio_tokens}))


if __name__ == "__main__":
    main()
