"""Evaluate one tuned student: build the benchmarks, answer them in batches, save the
predictions, score them, and log the scores into the student's MLflow run."""
from __future__ import annotations

import json
from pathlib import Path

from ..io import read_jsonl, write_jsonl
from ..vocab import run_name
from ..world import image_relpath, load_scenes
from .suites import Item, build_all
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
            out[f"pope.{split}.yes_ratio"] = pope[split]["yes_ratio"]
    if "mean_f1" in pope:
        out["pope.mean_f1"] = pope["mean_f1"]
    if "mme" in scores:
        out["mme.score"] = scores["mme"]["score"]
        for task, figures in scores["mme"].items():
            if isinstance(figures, dict):
                out[f"mme.{task}.score"] = figures["score"]
    if "mmbench" in scores:
        out["mmbench.circular_accuracy"] = scores["mmbench"]["circular_accuracy"]
    if "short_answer" in scores:
        out["short_answer.accuracy"] = scores["short_answer"]["accuracy"]
        for category, figures in scores["short_answer"].items():
            if isinstance(figures, dict):
                out[f"short_answer.{category}.accuracy"] = figures["accuracy"]
    if "reasoning" in scores:
        out["reasoning.accuracy"] = scores["reasoning"]["accuracy"]
    return out


def answer_items(model, processor, items: list[Item], images_root: str | Path, batch_size: int,
                 max_new_tokens: int, progress: bool = True) -> tuple[list[dict], float]:
    answerer = Answerer(model, processor, images_root, max_new_tokens)
    questions = [Question(it.qid, it.image, it.question) for it in items]
    answers = answerer.answer(questions, batch_size, progress=progress, desc="evaluate")
    return [it.row(a) for it, a in zip(items, answers)], answerer.seconds


def benchmark_items(params, data_dir: str | Path, split_dir: str | Path) -> tuple[list[Item], list[Item]]:
    """The eval items every student answers, and the same benchmarks built on the train scenes
    and records (from which the blind prior learns what each question's answer usually is)."""
    settings = params.evaluate
    scenes = load_scenes(data_dir)
    train_scenes = sorted((s for s in scenes.values() if s.split == "train"), key=lambda s: s.image_id)
    eval_scenes = sorted((s for s in scenes.values() if s.split == "eval"), key=lambda s: s.image_id)
    eval_records = read_jsonl(Path(split_dir) / "eval.jsonl")
    if settings.eval_images:
        eval_scenes = eval_scenes[: settings.eval_images]
        keep = {image_relpath(s) for s in eval_scenes}
        eval_records = [r for r in eval_records if r["image"] in keep]
    seed = params.project.seed
    eval_items = build_all(train_scenes, eval_scenes, eval_records, params.world, settings, seed)
    train_items = build_all(train_scenes, train_scenes, read_jsonl(Path(split_dir) / "train.jsonl"), params.world,
                            settings, seed)
    return eval_items, train_items


def evaluate_student(params, model_dir: str | Path, data_dir: str | Path, split_dir: str | Path,
                     predictions_path: str | Path, progress: bool = True) -> dict:
    from ..student.model import load_tuned

    settings = params.evaluate
    items, _ = benchmark_items(params, data_dir, split_dir)
    model, processor, info = load_tuned(model_dir)
    rows, seconds = answer_items(model, processor, items, data_dir, settings.batch_size, settings.max_new_tokens, progress)
    write_jsonl(predictions_path, rows)
    scores = score_predictions(rows)
    metrics = {**headline(scores), "scores": scores, "questions": len(rows),
               "answer_seconds": seconds, "questions_per_s": len(rows) / seconds if seconds else 0.0}
    _log(params, info, metrics)
    return metrics


def score_references(params, data_dir: str | Path, split_dir: str | Path, predictions_dir: str | Path) -> dict:
    """Always-yes and blind-prior answers to the students' eval items, saved and scored."""
    from .chance import reference_rows

    eval_items, train_items = benchmark_items(params, data_dir, split_dir)
    out = {}
    for name, rows in reference_rows(train_items, eval_items).items():
        write_jsonl(Path(predictions_dir) / f"{name}.jsonl", rows)
        scores = score_predictions(rows)
        out[name] = {**headline(scores), "scores": scores}
    return out


def _log(params, info: dict, metrics: dict) -> None:
    from ..tracking import flatten, project_run

    run_id = info.get("run_id")
    if not run_id:
        return
    logger = project_run(params, run_name(info['variant'], info['seed']), {}, run_id=run_id)
    logger.log_metrics({f"eval.{k}": v for k, v in flatten(metrics["scores"]).items()})
    logger.log_metrics({k: v for k, v in metrics.items() if k not in ("scores",)})
    logger.end()
