"""Reflective tuning of one (variant, seed) from the shared base, with MLflow tracking: the
variant's conversations (plus the LLaVA mix and the base's instruction questions), LoRA, the
step budget every main variant shares."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch

from .environment import environment
from .io import atomic_dir, model_fingerprint, read_jsonl, write_json, write_text
from .vocab import MAIN_VARIANTS, VARIANT_SPECS, run_name
from .world import AbsentRule, image_relpath, load_scenes
from .student.batching import image_source
from .student.model import image_token_count, load_student
from .student.samples import RESPONSE, ChatEncoder, build_variant, to_llava_json
from .student.train import TrainConfig, checkpoint_dir, length_grouped_batches, remove_checkpoints, train
from .tracking import RUN_ID_FILE
from .training_run import is_main_process, loop_settings, run_logger


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
    (reverie/student/curriculum.py), drawn with a fixed seed: every variant and seed tunes on the same
    ones. None without scene graphs (a folder of photographs): there is nothing to ask them from."""
    import random

    from .student.curriculum import probe_conversations

    wanted = round(params.tune.instruction_mix * records)
    scenes = sorted((s for s in load_scenes(data_dir).values() if s.split == "train"), key=lambda s: s.image_id) \
        if wanted and (Path(data_dir) / "scenes" / "scenes.jsonl").exists() else []
    if not scenes:
        return [], {}
    per_image = max(1, -(-wanted // len(scenes)))
    pool = probe_conversations(scenes, params.world.kinds, params.world.colors, per_image, 7919, image_relpath,
                               tuple(params.base.skills), absent=AbsentRule.of_base(params))
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
    logger = run_logger(params, name, {"variant": variant, "seed": str(seed), "dvc.stage": f"tune@{variant}-{seed}"})
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
