"""Evaluate one tuned student: build the benchmarks (synthetic ones from held-out scenes, and
the real files named in `evaluate.suites`, each replacing its synthetic namesake), answer them
in batches, save the predictions (also in LLaVA's answer-file layouts), score them, and log the
scores into the student's MLflow run."""
from __future__ import annotations

import json
import re
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
        if "score" in scores["mme"]:  # the synthetic MME-4; the real MME has perception and cognition apart
            out["mme.score"] = scores["mme"]["score"]
        for task, figures in scores["mme"].items():
            if isinstance(figures, dict):
                out[f"mme.{task}.score"] = figures["score"]
    if "mmbench" in scores and scores["mmbench"].get("questions"):
        out["mmbench.circular_accuracy"] = scores["mmbench"]["circular_accuracy"]
        for field in ("category", "l2_category"):
            for name, figures in scores["mmbench"].get(field, {}).items():
                out[f"mmbench.{field}.{name}.circular_accuracy"] = figures["circular_accuracy"]
        for letter, share in scores["mmbench"].get("by_answer_letter", {}).items():
            out[f"mmbench.answer_letter.{letter}.accuracy"] = share
    if "scienceqa" in scores:
        out["scienceqa.accuracy"] = scores["scienceqa"]["accuracy"]
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


REAL_SUITES = ("pope", "mme", "mmbench", "scienceqa")


def named_suites(settings) -> list[str]:
    """The real benchmarks `evaluate.suites` names, in a fixed order."""
    return [name for name in REAL_SUITES if getattr(settings.suites, name) is not None]


def real_items(suites, cache_dir: str | Path = ".reverie/mmbench_images") -> dict[str, tuple[list[Item], int]]:
    """Per real benchmark named in `suites`: its items, asked with the suite's prompt, and its
    `max_new_tokens`. Every file is checked whole before anything is answered."""
    from .loaders import load_mmbench, load_mme, load_pope, load_pope_llava, load_scienceqa

    root = Path(suites.root)
    out: dict[str, tuple[list[Item], int]] = {}
    if suites.pope is not None:
        s = suites.pope
        labels = {split: root / path for split, path in s.labels.items()}
        if s.questions:
            items = load_pope_llava(root / s.questions, labels, root / s.images, s.prompt)
        else:
            items = [it for split, path in labels.items() for it in load_pope(path, root / s.images, split, s.prompt)]
        out["pope"] = (items, s.max_new_tokens)
    if suites.mme is not None:
        out["mme"] = (load_mme(root / suites.mme.folder, suites.mme.prompt), suites.mme.max_new_tokens)
    if suites.mmbench is not None:
        out["mmbench"] = (load_mmbench(root / suites.mmbench.tsv, cache_dir, suites.mmbench.prompt),
                          suites.mmbench.max_new_tokens)
    if suites.scienceqa is not None:
        s = suites.scienceqa
        out["scienceqa"] = (load_scienceqa(root / s.questions, root / s.images, prompt=s.prompt), s.max_new_tokens)
    return out


def benchmark_items(params, data_dir: str | Path, split_dir: str | Path,
                    train: bool = True) -> tuple[list[Item], list[Item]]:
    """The synthetic eval items every student answers, and (with `train`) the same benchmarks
    built on the train scenes and records, from which the blind prior learns what each
    question's answer usually is; a student's evaluation needs only the first (each item's
    questions are drawn per image, so they do not depend on the other list). A benchmark that
    `evaluate.suites` names from real files is left out: the files replace it."""
    settings = params.evaluate
    replaced = set(named_suites(settings))
    scenes = load_scenes(data_dir)
    train_scenes = sorted((s for s in scenes.values() if s.split == "train"), key=lambda s: s.image_id)
    eval_scenes = sorted((s for s in scenes.values() if s.split == "eval"), key=lambda s: s.image_id)
    eval_records = read_jsonl(Path(split_dir) / "eval.jsonl")
    if settings.eval_images:
        # the first `eval_images` held-out images: the scenes' or, without scene graphs (the
        # released data, a teacher over photographs), the held-out records' own; capping by
        # scenes alone there kept no record and left the reasoning benchmark empty
        eval_scenes = eval_scenes[: settings.eval_images]
        images = [image_relpath(s) for s in eval_scenes] if scenes else \
            sorted({r["image"] for r in eval_records})[: settings.eval_images]
        keep = set(images)
        eval_records = [r for r in eval_records if r["image"] in keep]
    seed = params.project.seed
    eval_items = build_all(train_scenes, eval_scenes, eval_records, params.world, settings, seed)
    train_items = build_all(train_scenes, train_scenes, read_jsonl(Path(split_dir) / "train.jsonl"), params.world,
                            settings, seed) if train else []
    return ([it for it in eval_items if it.benchmark not in replaced],
            [it for it in train_items if it.benchmark not in replaced])


def evaluate_student(params, model_dir: str | Path, data_dir: str | Path, split_dir: str | Path,
                     predictions_path: str | Path, answers_dir: str | Path | None = None, progress: bool = True) -> dict:
    from ..student.model import load_tuned
    from .answer_files import write_answer_files

    settings = params.evaluate
    items, _ = benchmark_items(params, data_dir, split_dir, train=False)
    real = real_items(settings.suites) if named_suites(settings) else {}
    model, processor, info = load_tuned(model_dir, params.evaluate.precision)
    # the synthetic suites first, exactly as before; then each real suite with its own budget
    # (generation stops at EOS, so a large max_new_tokens costs only what is generated)
    rows, seconds = answer_items(model, processor, items, data_dir, settings.batch_size, settings.max_new_tokens,
                                 progress) if items else ([], 0.0)
    for name, (suite_items, max_new_tokens) in real.items():
        suite_rows, suite_seconds = answer_items(model, processor, suite_items, data_dir, settings.batch_size,
                                                 max_new_tokens, progress)
        rows += suite_rows
        seconds += suite_seconds
    write_jsonl(predictions_path, rows)
    if answers_dir is not None:
        mmbench = settings.suites.mmbench
        write_answer_files(rows, answers_dir, Path(model_dir).name,
                           Path(settings.suites.root) / mmbench.tsv if mmbench is not None else None)
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


def _metric_key(key: str) -> str:
    """MLflow accepts letters, digits, _ - . space and / in a key: a category name from a real
    file (MMBench's) may hold others."""
    return re.sub(r"[^\w\-. /]", "_", key)


def _log(params, info: dict, metrics: dict) -> None:
    from ..tracking import flatten, project_run

    run_id = info.get("run_id")
    if not run_id:
        return
    logger = project_run(params, run_name(info['variant'], info['seed']), {}, run_id=run_id)
    logger.log_params({"evaluate": {"threads": params.evaluate.threads}})  # tune logged its own
    logger.log_metrics({_metric_key(f"eval.{k}"): v for k, v in flatten(metrics["scores"]).items()})
    logger.log_metrics({_metric_key(k): v for k, v in metrics.items() if k not in ("scores",)})
    logger.end()
