"""Evaluate one tuned student: build the benchmarks, answer them in batches, save the
predictions, score them, and log the scores into the student's MLflow run."""
from __future__ import annotations

import json
from pathlib import Path

from ..generate import load_scenes
from ..io import read_jsonl, write_jsonl
from .benchmarks import Item, build_all
from .decode import Answerer, Question
from .scoring import score_predictions


def headline(scores: dict) -> dict:
    """The figures the report and the DVC metrics lead with."""
    out = {}
    pope = scores.get("pope", {})
    for split in ("random", "popular", "adversarial"):
        if split in pope:
            out[f"pope.{split}.f1"] = pope[split]["f1"]
            out[f"pope.{split}.accuracy"] = pope[split]["accuracy"]
    if "mean_f1" in pope:
        out["pope.mean_f1"] = pope["mean_f1"]
    if "mme" in scores:
        out["mme.score"] = scores["mme"]["score"]
    if "mmbench" in scores:
        out["mmbench.circular_accuracy"] = scores["mmbench"]["circular_accuracy"]
    if "short_answer" in scores:
        out["short_answer.accuracy"] = scores["short_answer"]["accuracy"]
    if "reasoning" in scores:
        out["reasoning.accuracy"] = scores["reasoning"]["accuracy"]
    return out


def answer_items(model, processor, items: list[Item], images_root: str | Path, batch_size: int,
                 max_new_tokens: int, progress: bool = True) -> tuple[list[dict], float]:
    answerer = Answerer(model, processor, images_root, max_new_tokens)
    questions = [Question(it.qid, it.image, it.question) for it in items]
    answers = answerer.answer(questions, batch_size, progress=progress, desc="evaluate")
    return [it.row(a) for it, a in zip(items, answers)], answerer.seconds


def evaluate_student(params, model_dir: str | Path, data_dir: str | Path, split_dir: str | Path,
                     predictions_path: str | Path, progress: bool = True) -> dict:
    from ..tune import load_tuned

    settings = params.evaluate
    scenes = load_scenes(data_dir)
    train_scenes = [s for s in scenes.values() if s.split == "train"]
    eval_scenes = sorted((s for s in scenes.values() if s.split == "eval"), key=lambda s: s.image_id)
    eval_records = read_jsonl(Path(split_dir) / "eval.jsonl")
    if settings.eval_images:
        eval_scenes = eval_scenes[: settings.eval_images]
        keep = {f"images/eval/{s.image_id}.png" for s in eval_scenes}
        eval_records = [r for r in eval_records if r["image"] in keep]
    items = build_all(train_scenes, eval_scenes, eval_records, params.world, settings, params.project.seed)
    model, processor, info = load_tuned(model_dir)
    rows, seconds = answer_items(model, processor, items, data_dir, settings.batch_size, settings.max_new_tokens, progress)
    write_jsonl(predictions_path, rows)
    scores = score_predictions(rows)
    metrics = {**headline(scores), "scores": scores, "questions": len(rows),
               "answer_seconds": seconds, "questions_per_s": len(rows) / seconds if seconds else 0.0}
    _log(params, info, metrics)
    return metrics


def _log(params, info: dict, metrics: dict) -> None:
    from ..tracking import flatten, project_run

    run_id = info.get("run_id")
    if not run_id:
        return
    logger = project_run(params, f"{info['variant']}-s{info['seed']}", {}, run_id=run_id)
    logger.log_metrics({f"eval.{k}": v for k, v in flatten(metrics["scores"]).items()})
    logger.log_metrics({k: v for k, v in metrics.items() if k not in ("scores",)})
    logger.end()
