"""Evaluation throughput: batched greedy decoding against batch size 1 on the same model and
questions, with the speed-up and a check that every answer is identical.

`python -m benchmarks.evaluation [--questions 600] [--batch-size 128]`; last line is JSON."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.common import data_and_records, student
from reverie.evaluation.benchmarks import build_all
from reverie.evaluation.decode import Answerer, Question
from reverie.world import load_scenes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--questions", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--model", default=None, help="a tuned model folder (default: models/response-s0 if present)")
    args = p.parse_args()
    torch.manual_seed(0)
    params, data_dir, records, source = data_and_records()
    model_dir = args.model or ("models/response-s0" if Path("models/response-s0/mlflow_run.json").exists() else None)
    if model_dir:
        from reverie.student.model import load_tuned

        model, processor, _ = load_tuned(model_dir)
    else:
        model, processor, model_dir = student(params, data_dir, records)
    scenes = load_scenes(data_dir)
    train = [s for s in scenes.values() if s.split == "train"]
    held_out = sorted((s for s in scenes.values() if s.split == "eval"), key=lambda s: s.image_id)
    items = build_all(train, held_out, [], params.world, params.evaluate, params.project.seed)[: args.questions]
    questions = [Question(it.qid, it.image, it.question) for it in items]
    single = Answerer(model, processor, data_dir, params.evaluate.max_new_tokens)
    one = single.answer(questions, batch_size=1, progress=False)
    batched = Answerer(model, processor, data_dir, params.evaluate.max_new_tokens)
    many = batched.answer(questions, batch_size=args.batch_size, progress=False)
    differing = [q.qid for q, a, b in zip(questions, one, many) if a != b]
    speedup = single.seconds / batched.seconds
    print(f"batch size 1: {len(questions) / single.seconds:.1f} questions/s; "
          f"batch size {args.batch_size}: {len(questions) / batched.seconds:.1f} questions/s; x{speedup:.1f}")
    print(f"identical answers: {len(questions) - len(differing)}/{len(questions)}")
    print(json.dumps({"benchmark": "evaluation", "data": source, "model": str(model_dir), "questions": len(questions),
                      "batch_size": args.batch_size, "questions_per_s_batch1": len(questions) / single.seconds,
                      "questions_per_s_batched": len(questions) / batched.seconds, "speedup": speedup,
                      "identical": not differing, "differing": differing[:20], "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
