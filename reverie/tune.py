"""The base step and reflective tuning of one (variant, seed), with MLflow tracking."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .environment import environment
from .io import atomic_dir, model_fingerprint, read_jsonl, write_json, write_text
from .vocab import MAIN_VARIANTS, VARIANT_SPECS, run_name
from .world import image_relpath, load_scenes
from .student.base import base_curriculum, tokenizer_corpus
from .student.model import build_tiny, image_token_count, load_student, train_tokenizer
from .student.samples import RESPONSE, ChatEncoder, build_variant, to_llava_json
from .student.train import (ImageTable, TrainConfig, checkpoint_dir, image_source, length_grouped_batches,
                            remove_checkpoints, train)
from .tracking import RUN_ID_FILE, RunLogger, project_run


def train_base(params, data_dir: str | Path, split_dir: str | Path, out_dir: str | Path,
               state_dir: str | Path = ".reverie", progress: bool = True) -> dict:
    """Builds (or copies) the shared base student, saves it as a Hugging Face folder and
    measures whether it sees (`perception` in the returned metrics; the stage gates on it).

    The tiny student: a tokenizer trained on the corpus, a LLaVA built from config, its vision
    tower pretrained on the scene graphs and frozen (student/vision.py), then the language model
    aligned on descriptions and existence probes (student/base.py)."""
    base = params.base
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    scenes = load_scenes(data_dir)
    held_out = sorted((s for s in scenes.values() if s.split == "eval"), key=lambda s: s.image_id)
    if base.model.pretrained:
        model, processor = load_student(base.model.pretrained)
        with atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
        return {"pretrained": base.model.pretrained, "train_seconds": 0.0,
                **_perception(params, model, processor, held_out, data_dir)}

    torch.manual_seed(base.seed)
    train_scenes = [s for s in scenes.values() if s.split == "train"]
    records = read_jsonl(Path(split_dir) / "train.jsonl")
    conversations, batches = base_curriculum(train_scenes, params.world.kinds, params.world.colors, base, image_relpath)
    tokenizer = train_tokenizer(tokenizer_corpus(records, conversations), base.model.vocab_size)
    model, processor = build_tiny(base.model, tokenizer, params.world.image_size)
    encoder = ChatEncoder(tokenizer, image_token_count(model.config))
    samples = encoder.encode_all(conversations)
    images = image_source(processor, data_dir, [s.image for s in samples], base.image_cache_max_mb,
                          base.dataloader_workers)
    cfg = TrainConfig(epochs=base.epochs, batch_size=base.batch_size, lr=base.lr, warmup_fraction=base.warmup_fraction,
                      weight_decay=base.weight_decay, seed=base.seed, checkpoint_every=base.checkpoint_every,
                      loss_normalization="sample", min_lr_fraction=base.min_lr_fraction, **loop_settings(base))
    ckpt_dir = checkpoint_dir(state_dir, "base", samples, params.base.model_dump(), params.world.model_dump())
    logger = _logger(params, "base", {"variant": "base", "seed": str(base.seed), "dvc.stage": "base"})
    logger.log_params({"base": params.base.model_dump(), "world": params.world.model_dump()})
    try:
        vision = _pretrained_tower(model, images, train_scenes, params, ckpt_dir, progress)
        logger.log_metrics(vision)
        result = train(model, samples, images, cfg, tokenizer.pad_token_id, ckpt_dir,
                       on_log=lambda step, m: logger.log_metrics(m, step), progress=progress, desc="base",
                       batches=batches)
        metrics = result.metrics | vision | {"parameters": sum(p.numel() for p in model.parameters()),
                                             "vocab_size": len(tokenizer), "mlflow_run_id": logger.run_id}
        if is_main_process():
            metrics |= _perception(params, model, processor, held_out, data_dir)
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
                               params.evaluate.batch_size, base.describe_check_images)
    model.train()
    return {"perception_measured": True, **figures}


def base_gate(metrics: dict, min_existence_accuracy: float) -> str | None:
    """Why the base student must not be used, or None: it answers held-out existence questions
    below `base.min_existence_accuracy`."""
    if not metrics.get("perception_measured"):
        return None
    accuracy = metrics["heldout_existence_accuracy"]
    if accuracy < min_existence_accuracy:
        return (f"heldout_existence_accuracy {accuracy:.3f} is below base.min_existence_accuracy = "
                f"{min_existence_accuracy} (yes-ratio {metrics['heldout_yes_ratio']:.2f}, shuffled-image control "
                f"{metrics['shuffled_image_accuracy']:.3f}): the base student does not see")
    return None


def is_main_process() -> bool:
    """Under torchrun / accelerate launch every process runs the stage; one of them logs and
    saves. RANK is set by both launchers (absent: a single process)."""
    return int(os.environ.get("RANK", "0")) == 0


class _SilentLogger:
    """The MLflow logger of the processes that are not the main one."""

    run_id = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _logger(params, name: str, tags: dict, run_id: str | None = None) -> RunLogger:
    if not is_main_process():
        return _SilentLogger()
    return project_run(params, name, tags, run_id)


def loop_settings(section) -> dict:
    """The training loop's keys of a `base` or `tune` section (settings.LoopSettings) for TrainConfig."""
    return {"micro_batch_size": section.micro_batch_size, "precision": section.precision,
            "gradient_checkpointing": section.gradient_checkpointing, "max_length": section.max_length}


def mix_conversations(mix) -> tuple[list, dict]:
    """The `tune.mix` share of a LLaVA-format conversation file, read by the project's LLaVA
    import (data_import.import_llava: rows without an image or with a missing one are set
    aside with their reason). Every answer turn is a response target, so the loss falls on the
    assistant's tokens exactly as for the variant's own samples. The choice is seeded once
    (not by the run's seed): every variant and seed trains on the same mix."""
    import random

    from .data_import import import_llava, safe_image_path

    conversations, quarantined = import_llava(mix.path, mix.images_root)
    n = len(conversations)
    k = min(n, mix.count) if mix.count is not None else round(mix.fraction * n)
    chosen = sorted(random.Random(0).sample(range(n), k))
    # absolute image paths: the mix's images have their own root, apart from the variant's data
    picked = [replace(conversations[i], image=str(safe_image_path(mix.images_root, conversations[i].image).resolve()))
              for i in chosen]
    if quarantined:
        print(f"[tune] {mix.path}: {len(quarantined)} row(s) set aside, first: {quarantined[0]['reason']}")
    return picked, {"mix_conversations": k, "mix_available": n, "mix_set_aside": len(quarantined)}


def instruction_conversations(params, data_dir: str | Path, records: int) -> tuple[list, dict]:
    """`tune.instruction_mix` x `records` of the base's one-skill questions about the train scenes
    (reverie/student/base.py), drawn with a fixed seed: every variant and seed tunes on the same
    ones. None without scene graphs (a folder of photographs): there is nothing to ask them from."""
    import random

    from .student.base import probe_conversations

    wanted = round(params.tune.instruction_mix * records)
    scenes = sorted((s for s in load_scenes(data_dir).values() if s.split == "train"), key=lambda s: s.image_id) \
        if wanted and (Path(data_dir) / "scenes" / "scenes.jsonl").exists() else []
    if not scenes:
        return [], {}
    per_image = max(1, -(-wanted // len(scenes)))
    pool = probe_conversations(scenes, params.world.kinds, params.world.colors, per_image, 7919, image_relpath,
                               tuple(params.base.skills))
    chosen = sorted(random.Random(7919).sample(range(len(pool)), min(wanted, len(pool))))
    return [pool[i] for i in chosen], {"instruction_conversations": len(chosen)}


def apply_lora(model, lora):
    """LoRA on the language model; the projector is trained in full (LLaVA-1.5's recipe)."""
    from peft import LoraConfig, get_peft_model

    targets = "|".join(lora.target_modules)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=rf".*language_model.*\.({targets})$",
                        modules_to_save=["multi_modal_projector"])
    return get_peft_model(model, config)


def step_budget(records: int, mixed: int, epochs: float, batch_size: int) -> int:
    """The optimizer steps every main variant trains: `epochs` passes over the largest variant's
    samples (a record gives 1 + its rationale samples; the mix's conversations one each). Equal
    steps of equal batches, and one answer per sample, give every variant the same answer
    exposures: the response-only baseline sees each answer as often as pos_neg does."""
    per_record = 1 + max(len(VARIANT_SPECS[v].rationales) for v in MAIN_VARIANTS)
    return max(1, math.ceil(epochs * (per_record * records + mixed) / batch_size))


def answer_turns(conversation) -> int:
    return sum(turn.target == RESPONSE for turn in conversation.turns)


def tune_variant(params, variant: str, seed: int, base_dir: str | Path, data_dir: str | Path, split_dir: str | Path,
                 out_dir: str | Path, state_dir: str | Path = ".reverie", progress: bool = True,
                 max_steps: int | None = None, loss_csv: str | Path | None = None) -> dict:
    """One (variant, seed) run of the ablation: the variant's conversations from the train
    split, LoRA (with LoRA off, all but the vision tower) trained on the base model in `base_dir`,
    the tuned model saved to `out_dir` and everything logged to one MLflow run. Resumes from its
    checkpoint under `state_dir`; `max_steps` stops early on purpose (tests, kill simulations)
    and leaves the checkpoint for a resume, without saving a model."""
    tune = params.tune
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    # with LoRA the frozen model may sit in the autocast's half precision (a 7B model: 14 GB, not
    # 28); train() keeps the trained weights (adapters, projector) in fp32
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tune.precision) if tune.lora.enabled else None
    model, processor = load_student(base_dir, dtype=half)
    tokenizer = processor.tokenizer
    records = read_jsonl(Path(split_dir) / "train.jsonl")
    conversations = build_variant(records, variant, tune.prompts)
    mixed, mix_counts = mix_conversations(tune.mix) if tune.mix.path else ([], {})
    instructions, instruction_counts = instruction_conversations(params, data_dir, len(records))
    mixed, mix_counts = mixed + instructions, mix_counts | instruction_counts
    encoder = ChatEncoder(tokenizer, image_token_count(model.config))
    samples = encoder.encode_all(conversations + mixed)
    images = image_source(processor, data_dir, [s.image for s in samples], tune.image_cache_max_mb,
                          tune.dataloader_workers)
    if tune.lora.enabled:
        model = apply_lora(model, tune.lora)
    else:
        for p in model.model.vision_tower.parameters():
            p.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    steps = max(1, round(step_budget(len(records), len(mixed), tune.epochs, tune.batch_size)
                         * VARIANT_SPECS[variant].step_share))
    batches = length_grouped_batches([len(s.input_ids) for s in samples], tune.batch_size, tune.epochs, seed, steps)
    trained = conversations + mixed
    answer_exposures = sum(answer_turns(trained[i]) for batch in batches for i in batch)
    cfg = TrainConfig(epochs=tune.epochs, batch_size=tune.batch_size, lr=tune.lr, warmup_fraction=tune.warmup_fraction,
                      weight_decay=tune.weight_decay, seed=seed, checkpoint_every=tune.checkpoint_every,
                      max_steps=max_steps, **loop_settings(tune))
    name = run_name(variant, seed)
    # the matrix's lists (tune.variants, tune.seeds) say which runs exist, not how this one runs
    settings = tune.model_dump(exclude={"variants", "seeds"})
    ckpt_dir = checkpoint_dir(state_dir, name, samples, settings, variant, seed, model_fingerprint(base_dir))
    logger = _logger(params, name, {"variant": variant, "seed": str(seed), "dvc.stage": f"tune@{variant}-{seed}"})
    logger.log_params({"tune": settings, "variant": variant, "seed": seed, "base_dir": str(base_dir),
                       "samples": len(samples), "trainable_parameters": trainable})
    logger.log_dataset(Path(split_dir) / "train.jsonl", name="reverie-train")
    try:
        result = train(model, samples, images, cfg, tokenizer.pad_token_id, ckpt_dir,
                       on_log=lambda step, m: logger.log_metrics(m, step), progress=progress, desc=name,
                       batches=batches)
        token_counts = {kind: 0 for kind in ("response", "positive", "negative")}
        for i in (i for batch in batches[:result.steps] for i in batch):  # the tokens trained, by sample kind
            token_counts[trained[i].kind] = token_counts.get(trained[i].kind, 0) + len(samples[i].input_ids)
        metrics = result.metrics | mix_counts | {"variant": variant, "seed": seed, "trainable_parameters": trainable,
                                    "tokens": sum(token_counts.values()), "tokens_by_kind": token_counts,
                                    "answer_exposures": answer_exposures,
                                    "environment": environment()}
        if loss_csv and is_main_process():
            write_text(loss_csv, "step,loss,response_loss,rationale_loss,lr\n" + "".join(
                f"{h['step']},{h['loss']},{h['response_loss']},{h['rationale_loss']},{h['lr']}\n" for h in result.history))
        if result.steps < result.metrics["total_steps"]:
            # stopped early on purpose (max_steps): a finished run, tagged as partial, not a failure
            logger.set_tags({"stopped_early": f"max_steps={max_steps}"})
            logger.end("FINISHED")
            return metrics  # stopped early on purpose (max_steps): the checkpoint stays for a resume
        if not is_main_process():
            return metrics
        with atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp, state_dict=result.state_dict)
            processor.save_pretrained(tmp)
            write_json(tmp / RUN_ID_FILE, {"run_id": logger.run_id, "variant": variant, "seed": seed,
                                           "base": str(base_dir), "lora": tune.lora.enabled})
            logger.log_artifacts(tmp, "model")  # adapter (or weights), tokenizer, image processor
            write_json(tmp / "conversations.llava.json", to_llava_json(conversations))
        logger.log_metrics({f"final.{k}": v for k, v in metrics.items() if not isinstance(v, (dict, str))})
        metrics["mlflow_run_id"] = logger.run_id
        logger.end()
    except BaseException:
        logger.end("KILLED")
        raise
    remove_checkpoints(state_dir, name)
    return metrics
