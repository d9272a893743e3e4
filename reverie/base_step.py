"""The base step: the shared base student every variant starts from (built, or copied from a
pretrained model), and the check that it sees (`base_gate`)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .io import atomic_dir, read_jsonl, write_json, write_text
from .world import AbsentRule, image_relpath, load_scenes
from .student.batching import ImageTable, image_source
from .student.curriculum import base_curriculum, tokenizer_corpus
from .student.model import build_tiny, image_token_count, load_student, train_tokenizer
from .student.samples import ChatEncoder
from .student.train import TrainConfig, checkpoint_dir, remove_checkpoints, train
from .training_run import is_main_process, loop_settings, run_logger


def train_base(params, data_dir: str | Path, split_dir: str | Path, out_dir: str | Path,
               state_dir: str | Path = ".reverie", progress: bool = True, check_csv: str | Path | None = None) -> dict:
    """Builds (or copies) the shared base student, saves it as a Hugging Face folder and
    measures whether it sees (`perception` in the returned metrics; the stage gates on it).
    Every `base.check_every` steps of its training the check runs again (`BaseCheckCurve`),
    logged to MLflow (`check.*`) and written to `check_csv`.

    The tiny student: a tokenizer trained on the corpus, a LLaVA built from config, its vision
    tower pretrained on the scene graphs and frozen (student/vision.py), then the language model
    aligned on descriptions and existence probes (student/curriculum.py)."""
    base = params.base
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    scenes = load_scenes(data_dir)
    held_out = sorted((s for s in scenes.values() if s.split == "eval"), key=lambda s: s.image_id)
    if base.model.pretrained:
        model, processor = load_student(base.model.pretrained)
        with atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
        if check_csv:  # not trained here: the curve has no point
            write_check_csv(check_csv, [])
        return {"pretrained": base.model.pretrained, "train_seconds": 0.0,
                **_perception(params, model, processor, held_out, data_dir)}

    torch.manual_seed(base.seed)
    train_scenes = [s for s in scenes.values() if s.split == "train"]
    records = read_jsonl(Path(split_dir) / "train.jsonl")
    conversations, batches = base_curriculum(train_scenes, params.world.kinds, params.world.colors, base, image_relpath,
                                             absent=AbsentRule.of_base(params))
    tokenizer = train_tokenizer(tokenizer_corpus(records, _uniform_conversations(train_scenes, params, conversations)),
                                base.model.vocab_size)
    model, processor = build_tiny(base.model, tokenizer, params.world.image_size)
    encoder = ChatEncoder(tokenizer, image_token_count(model.config))
    samples = encoder.encode_all(conversations)
    images = image_source(processor, data_dir, [s.image for s in samples], base.image_cache_max_mb,
                          base.dataloader_workers)
    cfg = TrainConfig(epochs=base.epochs, batch_size=base.batch_size, lr=base.lr, warmup_fraction=base.warmup_fraction,
                      weight_decay=base.weight_decay, seed=base.seed, checkpoint_every=base.checkpoint_every,
                      loss_normalization="sample", min_lr_fraction=base.min_lr_fraction, **loop_settings(base))
    ckpt_dir = checkpoint_dir(state_dir, "base", samples, params.base.model_dump(), params.world.model_dump())
    logger = run_logger(params, "base", {"variant": "base", "seed": str(base.seed), "dvc.stage": "base"})
    logger.log_params({"base": params.base.model_dump(), "world": params.world.model_dump()})
    try:
        vision = _pretrained_tower(model, images, train_scenes, params, ckpt_dir, progress)
        logger.log_metrics(vision)
        skills_from = next((i for i, b in enumerate(batches)
                            if any(conversations[j].id.endswith(":inventory") for j in b)), len(batches))
        curve = BaseCheckCurve(params, model, processor, held_out[: base.check_images], data_dir, ckpt_dir,
                               skills_from, len(batches), progress)

        def on_log(step: int, entry: dict) -> None:
            logger.log_metrics(entry, step)
            point = curve.at(step)
            if point:
                logger.log_metrics({f"check.{k}": v for k, v in point.items() if k not in ("step", "phase")}, step)

        result = train(model, samples, images, cfg, tokenizer.pad_token_id, ckpt_dir, on_log=on_log,
                       progress=progress, desc="base", batches=batches)
        metrics = result.metrics | vision | {"parameters": sum(p.numel() for p in model.parameters()),
                                             "vocab_size": len(tokenizer), "mlflow_run_id": logger.run_id}
        if is_main_process():
            metrics |= _perception(params, model, processor, held_out, data_dir)
            metrics["skills_phase_step"] = skills_from
            if check_csv:
                curve.write_csv(check_csv)
            with atomic_dir(out_dir) as tmp:
                model.save_pretrained(tmp, state_dict=result.state_dict)
                processor.save_pretrained(tmp)
        logger.log_metrics({f"final.{k}": v for k, v in metrics.items() if k != "mlflow_run_id"})
        logger.end()
    except BaseException:
        logger.end("KILLED")
        raise
    if is_main_process():  # the others may finish first, while the main process still saves the model
        remove_checkpoints(state_dir, "base")
    return metrics


def _uniform_conversations(scenes, params, conversations):
    """The tokenizer's corpus: the base's conversations as the uniform rule asks them, so that the
    rule (`base.unrelated_negatives`) is all an ablation of it changes: trained on the questions the
    rule asks, 22 token ids differed on the default world, and with them the initial weights."""
    if not params.base.unrelated_negatives:
        return conversations
    return base_curriculum(scenes, params.world.kinds, params.world.colors, params.base, image_relpath,
                           absent=AbsentRule())[0]


CURVE_FIGURES = {"seeing": "heldout_seeing_accuracy", "existence": "heldout_existence_accuracy",
                 "yes_ratio": "heldout_yes_ratio", "shuffled": "shuffled_image_accuracy",
                 "theme_fp": "heldout_theme_false_positive_rate", "choice": "heldout_choice_accuracy",
                 **{f"choice_{x}": f"heldout_choice_accuracy_{x}" for x in "ABCD"},
                 "choice_worst": "heldout_choice_worst_letter"}


class BaseCheckCurve:
    """The base check (existence, shuffled images, multiple choice per right letter; no
    descriptions) every `base.check_every` steps of the base's training and at its last step:
    when the student starts to see, and whether and when it maps option letters to options,
    which the final check alone cannot say (docs/results.md, 2026-12-07: a base that hears "no"
    only about unrelated kinds sees from step ~1900 of 2438, and no letter mapping forms after).
    Greedy answers in eval mode: the weights train exactly as without it. Points persist in the
    checkpoint folder, so a resumed run keeps the ones before its checkpoint."""

    def __init__(self, params, model, processor, scenes, data_dir, ckpt_dir: Path, skills_from: int, total: int,
                 progress: bool):
        self.params, self.model, self.processor, self.scenes, self.data_dir = params, model, processor, scenes, data_dir
        self.every, self.skills_from, self.total, self.progress = params.base.check_every, skills_from, total, progress
        self.saved = ckpt_dir / "check_curve.jsonl"
        self.points: dict[int, dict] = {}
        if self.saved.exists():
            for line in self.saved.read_text().splitlines():
                point = json.loads(line)
                self.points[point["step"]] = point
        self.due: int | None = None

    def at(self, step: int) -> dict | None:
        """The check at `step` when one is due (the trainer calls this after every logged step,
        from its first step or from the step a resumed run starts at)."""
        if not (self.every and self.scenes):
            return None
        if self.due is None:
            self.due = -(-step // self.every) * self.every
        if not (step >= self.due or step == self.total):
            return None
        self.due = (step // self.every + 1) * self.every
        from .evaluation.perception import perception_check

        modes = {m: m.training for m in self.model.modules()}
        try:
            figures = perception_check(self.model.eval(), self.processor, self.scenes, self.data_dir,
                                       self.params.world.kinds, self.params.evaluate.batch_size, 0,
                                       self.params.world.themes, self.params.world.colors)
        finally:
            for module, training in modes.items():
                module.training = training
        point = {"step": step, "phase": "seeing" if step <= self.skills_from else "skills",
                 **{k: figures.get(v) for k, v in CURVE_FIGURES.items()}}
        self.points[step] = point
        self.saved.parent.mkdir(parents=True, exist_ok=True)
        with self.saved.open("a") as f:
            f.write(json.dumps(point) + "\n")
        if self.progress:
            worst = point["choice_worst"]
            print(f"[base] check at step {step}/{self.total} ({point['phase']} phase): seeing {point['seeing']:.3f}, "
                  f"existence {point['existence']:.3f}, shuffled images {point['shuffled']:.3f}"
                  + (f", multiple choice {point['choice']:.2f} (worst letter {worst:.2f})" if worst is not None else ""),
                  flush=True)
        return point

    def write_csv(self, path: str | Path) -> None:
        write_check_csv(path, [self.points[s] for s in sorted(self.points)])


def write_check_csv(path: str | Path, points: list[dict]) -> None:
    columns = ["step", "phase", *CURVE_FIGURES]
    write_text(path, ",".join(columns) + "\n" + "".join(
        ",".join("" if p.get(c) is None else str(p[c]) for c in columns) + "\n" for p in points))


def _pretrained_tower(model, images: ImageTable, scenes, params, ckpt_dir: Path, progress: bool) -> dict:
    """Pretrains (and freezes) the vision tower, or loads the tower a killed run of the same
    training already pretrained, so that a resumed run continues on the same features."""
    base = params.base
    if not base.vision_epochs:
        return {}
    from safetensors.torch import load_file, save_file

    from .student.vision import pretrain_vision

    tower = model.model.vision_tower
    saved = ckpt_dir / "vision_tower.safetensors"
    if saved.exists():
        tower.load_state_dict(load_file(saved))
        if base.freeze_vision:
            tower.requires_grad_(False)
        return json.loads((ckpt_dir / "vision_tower.json").read_text())
    pixels = images([image_relpath(s) for s in scenes])
    metrics = pretrain_vision(model, pixels, scenes, params.world.kinds, params.world.colors, base.vision_epochs,
                              base.vision_lr, base.vision_batch_size, base.seed, base.freeze_vision,
                              log=print if progress else None)
    if is_main_process():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(saved))
        write_json(ckpt_dir / "vision_tower.json", metrics)
    return metrics


def _perception(params, model, processor, held_out, data_dir) -> dict:
    """The base check: existence probes, the shuffled-image control and descriptions on held-out
    scenes. Without held-out scene graphs (a folder of photographs) it is not measured."""
    base = params.base
    if not held_out or not base.check_images:
        return {"perception_measured": False}
    from .evaluation.perception import perception_check

    figures = perception_check(model.eval(), processor, held_out[: base.check_images], data_dir, params.world.kinds,
                               params.evaluate.batch_size, base.describe_check_images, params.world.themes,
                               params.world.colors)
    model.train()
    return {"perception_measured": True, **figures}


def base_gate(metrics: dict, min_seeing_accuracy: float) -> str | None:
    """Why the base student must not be used, or None: on held-out scenes it finds present kinds
    and rejects absent kinds unrelated to the scene (`heldout_seeing_accuracy`) below
    `base.min_seeing_accuracy`. Calling an absent kind of the scene's theme present is not held
    against it: that is the hallucination the benchmarks measure."""
    if not metrics.get("perception_measured"):
        return None
    accuracy = metrics["heldout_seeing_accuracy"]
    if accuracy < min_seeing_accuracy:
        return (f"heldout_seeing_accuracy {accuracy:.3f} (present kinds found {metrics['heldout_present_recall']:.2f}, "
                f"absent kinds unrelated to the scene rejected {metrics['heldout_unrelated_rejection']:.2f}) is below "
                f"base.min_seeing_accuracy = {min_seeing_accuracy} (existence accuracy "
                f"{metrics['heldout_existence_accuracy']:.3f}, yes-ratio {metrics['heldout_yes_ratio']:.2f}, "
                f"shuffled-image control {metrics['shuffled_image_accuracy']:.3f}): the base student does not see")
    return None
