"""Evaluation throughput: batched greedy decoding against batch size 1 on the same model and
questions, and a check that every batched answer equals the batch-1 answer.

The questions are a mixed sample of every suite (POPE, MME, MMBench, short answers and the
held-out REVERIE questions: prompts and answers of different lengths), the model is a tiny
student trained for a few steps on the train records' mixed answers (yes/no, letters,
numbers, phrases), so that its answers differ from question to question; the benchmark
prints how many distinct answers it gave and refuses a model with fewer than
`--min-distinct`. Both sides are warmed on the same questions before timing, each is timed
`--repeats` times (alternating), and the median is reported. It exits with status 1 when any
batched answer of any repetition differs from the batch-1 answer.

`python -m benchmarks.evaluation [--per-suite 40] [--batch-size 64] [--repeats 3]`; the last
line is JSON."""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

from reverie.evaluation.suites import build_all
from reverie.evaluation.decode import Answerer, Question
from reverie.generate import generate_dataset
from reverie.settings import load_params
from reverie.world import load_scenes

SUITES = ("pope", "mme", "mmbench", "short_answer", "reasoning")


def world(train_images: int, eval_images: int):
    """A small generated world: params, its folder, train and held-out (eval) records."""
    folder = Path(tempfile.mkdtemp(prefix="reverie-eval-bench-"))
    params = load_params(overrides={"world.train_images": train_images, "world.eval_images": eval_images})
    result = generate_dataset(params, folder, progress=False)
    kept = [r for r in result.raw if r["judge"]["consistent"]]
    return params, folder, [r for r in kept if r["split"] == "train"], [r for r in kept if r["split"] == "eval"]


def trained_student(params, folder: Path, records: list[dict], steps: int, perturb: float = 0.0, seed: int = 0):
    """The tiny student after `steps` steps on the response samples of `records`, its weight
    matrices then perturbed by Gaussian noise of `perturb` times their standard deviation."""
    from benchmarks.common import student
    from reverie.student.model import image_token_count
    from reverie.student.samples import ChatEncoder, build_variant
    from reverie.student.batching import ImageTable
    from reverie.student.train import TrainConfig, train

    torch.manual_seed(seed)
    model, processor, _ = student(params, folder, records)
    if steps:
        encoder = ChatEncoder(processor.tokenizer, image_token_count(model.config))
        samples = encoder.encode_all(build_variant(records, "response", params.tune.prompts))
        images = ImageTable(processor, folder, [s.image for s in samples])
        cfg = TrainConfig(epochs=steps * 16 / len(samples), batch_size=16, lr=3e-3, seed=seed, max_steps=steps)
        train(model, samples, images, cfg, processor.tokenizer.pad_token_id, progress=False)
    if perturb:  # noise on every weight matrix, so that answers depend on more than the question's format
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim >= 2:
                    p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * perturb * p.std())
    return model, processor, f"tiny student, {steps} training steps on mixed answers, weight noise {perturb:g} std"


def mixed_sample(items, per_suite: int, seed: int = 0) -> list:
    """Up to `per_suite` items of each suite, drawn at random, in suite order."""
    by_suite = defaultdict(list)
    for it in items:
        by_suite[it.benchmark].append(it)
    missing = [s for s in SUITES if not by_suite[s]]
    if missing:
        raise SystemExit(f"no items for suite(s) {missing}: use a larger world")
    return [it for s in SUITES for it in random.Random(f"{seed}:{s}").sample(by_suite[s], min(per_suite, len(by_suite[s])))]


def differing(reference: list[str], runs: list[tuple[str, list[str]]], questions: list[Question]) -> list[dict]:
    """Every (run, question) whose answer is not the first batch-1 answer."""
    return [{"run": name, "qid": q.qid, "batch1": a, "other": b}
            for name, answers in runs for q, a, b in zip(questions, reference, answers) if a != b]


def timed(answerer: Answerer, questions: list[Question], batch_size: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    answers = answerer.answer(questions, batch_size=batch_size, progress=False)
    return time.perf_counter() - started, answers


def run(args, model=None, processor=None, folder=None, items=None, source: str = "") -> dict:
    """Warms both sides, times `args.repeats` alternating repetitions of each and compares
    every answer; `model`, `processor`, `folder` and `items` default to a small world and the
    trained tiny student."""
    if model is None:
        params, folder, train_records, eval_records = world(args.train_images, args.eval_images)
        if args.model:
            from reverie.student.model import load_tuned

            model, processor, _ = load_tuned(args.model)
            source = args.model
        else:
            model, processor, source = trained_student(params, folder, train_records, args.train_steps, args.perturb)
        scenes = load_scenes(folder)
        train = [s for s in scenes.values() if s.split == "train"]
        held_out = sorted((s for s in scenes.values() if s.split == "eval"), key=lambda s: s.image_id)
        items = build_all(train, held_out, eval_records, params.world, params.evaluate, params.project.seed)
        max_new_tokens = params.evaluate.max_new_tokens
    else:
        max_new_tokens = args.max_new_tokens
    sample = mixed_sample(items, args.per_suite)
    questions = [Question(it.qid, it.image, it.question) for it in sample]
    answerer = Answerer(model, processor, folder, max_new_tokens)
    # warm-up, untimed: both sides once on the whole sample (allocator, kernels, image table)
    _, reference = timed(answerer, questions, 1)
    timed(answerer, questions, args.batch_size)
    single_s, batched_s, runs = [], [], []
    for r in range(args.repeats):
        s, one = timed(answerer, questions, 1)
        b, many = timed(answerer, questions, args.batch_size)
        single_s.append(s)
        batched_s.append(b)
        runs += [(f"batch {args.batch_size}, repeat {r}", many), (f"batch 1, repeat {r}", one)]
    diff = differing(reference, runs, questions)
    tok = processor.tokenizer
    prompt_tokens = [len(tok(q.text)["input_ids"]) for q in questions]
    answer_tokens = [len(tok(a, add_special_tokens=False)["input_ids"]) for a in reference]
    single, batched = statistics.median(single_s), statistics.median(batched_s)
    distinct = Counter(reference)
    return {"benchmark": "evaluation", "model": source, "questions": len(questions),
            "per_suite": dict(Counter(it.benchmark for it in sample)),
            "distinct_questions": len({(q.image, q.text) for q in questions}),
            "prompt_tokens_min_max": [min(prompt_tokens), max(prompt_tokens)],
            "answer_tokens_min_max": [min(answer_tokens), max(answer_tokens)],
            "distinct_answers": len(distinct),
            "distinct_answers_per_suite": {s: len({a for it, a in zip(sample, reference) if it.benchmark == s}) for s in SUITES}, "most_common_answer_share": distinct.most_common(1)[0][1] / len(reference),
            "batch_size": args.batch_size, "repeats": args.repeats, "max_new_tokens": max_new_tokens,
            "seconds_batch1": single_s, "seconds_batched": batched_s,
            "questions_per_s_batch1": len(questions) / single, "questions_per_s_batched": len(questions) / batched,
            "speedup": single / batched, "identical": not diff, "differing": len(diff), "differing_examples": diff[:10],
            "threads": torch.get_num_threads()}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-suite", type=int, default=40, help="questions drawn from each of the five suites")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per side (the median is reported)")
    p.add_argument("--train-images", type=int, default=60)
    p.add_argument("--eval-images", type=int, default=20)
    p.add_argument("--train-steps", type=int, default=150, help="steps of the tiny student on mixed answers")
    p.add_argument("--perturb", type=float, default=2.0, help="weight noise after training, in standard deviations")
    p.add_argument("--min-distinct", type=int, default=3, help="fewer distinct answers than this: the model is refused")
    p.add_argument("--max-new-tokens", type=int, default=8, help="only when a model is passed to run()")
    p.add_argument("--model", default=None, help="a tuned model folder instead of the tiny student")
    return p


def main(argv: list[str] | None = None, **given) -> int:
    args = parser().parse_args(argv)
    if args.repeats < 3:
        raise SystemExit("--repeats must be at least 3 (the median of fewer says little)")
    result = run(args, **given)
    print(f"{result['questions']} questions {result['per_suite']}, {result['distinct_answers']} distinct answers, "
          f"answers of {result['answer_tokens_min_max'][0]}-{result['answer_tokens_min_max'][1]} tokens")
    print(f"batch size 1: {result['questions_per_s_batch1']:.1f} questions/s; batch size {args.batch_size}: "
          f"{result['questions_per_s_batched']:.1f} questions/s; x{result['speedup']:.1f} (median of {args.repeats})")
    print(f"answers that differ from batch 1: {result['differing']}")
    for d in result["differing_examples"]:
        print(f"  {d}")
    print(json.dumps(result))
    if result["differing"]:
        return 1
    if result["distinct_answers"] < args.min_distinct:
        print(f"only {result['distinct_answers']} distinct answer(s): a model this uniform flatters the check", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
