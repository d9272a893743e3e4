"""The training loop: length-grouped batches, exact loss masks, separate response and
rationale losses, checkpoints that resume bit for bit, and several processes through
`accelerate launch` / `torchrun` without code changes.

For real models the same loop takes mixed precision (bf16 autocast; fp16 with a gradient
scaler where bf16 is missing), gradient checkpointing, gradient accumulation (a global batch
of `batch_size` samples, `micro_batch_size` per forward pass and process), a maximum length
(samples cut at the end, masks cut alongside) and images decoded per batch by a DataLoader's
workers (`ImageStream`, batching.py) instead of held in memory (`ImageTable`). The defaults are
the tiny CPU run's: fp32, no checkpointing, one forward pass per step, every image in memory.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .batching import collate
from .samples import IGNORE, RATIONALE, RESPONSE, Encoded


@dataclass(frozen=True)
class TrainConfig:
    epochs: float
    batch_size: int
    lr: float
    warmup_fraction: float = 0.05
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 100
    loss_normalization: str = "token"  # "token": mean over target tokens; "sample": mean of per-sample means
    min_lr_fraction: float = 0.1
    max_steps: int | None = None  # stop early (tests, kill simulations); the schedule is unchanged
    # samples per forward pass and process; the gradients of a step's passes are summed before
    # the optimizer step (accumulation). None: the process's whole share of the batch at once
    micro_batch_size: int | None = None
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast dtype; trainable weights stay fp32
    gradient_checkpointing: bool = False
    max_length: int | None = None  # tokens per sample; longer ones are cut at the end (see truncate)
    max_grad_norm: float | None = 1.0  # gradients clipped to this global norm before each step (LLaVA's, HF Trainer's 1.0)


@dataclass
class TrainResult:
    steps: int
    metrics: dict
    history: list[dict] = field(default_factory=list)
    # the whole model's weights, gathered from every process (FSDP shards, ZeRO partitions) by
    # accelerate; on the main process only, None on the others
    state_dict: dict | None = None


class _Progress:
    """Step and loss history, checkpointed with the model, optimizer, scheduler and RNG states."""

    def __init__(self):
        self.step, self.history = 0, []

    def state_dict(self) -> dict:
        return {"step": self.step, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.history = state["step"], state["history"]


def length_grouped_batches(lengths: list[int], batch_size: int, epochs: float, seed: int,
                           steps: int | None = None) -> list[list[int]]:
    """Batches of exactly `batch_size` similar-length samples (little padding) in a seeded random
    order: enough for `epochs` passes over the samples, or exactly `steps` batches when given.

    Each pass shuffles, cuts the order into mega-batches of 32 batches, sorts each by length,
    cuts batches and shuffles the pass's batch order. The samples that do not fill a last batch
    open the next pass instead, so every batch is full and every step trains the same number of
    samples: equal steps are equal answer exposures. The whole schedule is a function of the seed
    alone, and a shorter schedule is the start of a longer one, so a resumed run replays exactly
    the batches it had not seen."""
    n = len(lengths)
    if n == 0:
        raise ValueError("no training samples")
    total = max(1, steps if steps is not None else math.ceil(epochs * n / batch_size))
    rng = random.Random(seed)
    mega = batch_size * 32
    batches: list[list[int]] = []
    carried: list[int] = []
    while len(batches) < total:
        order = list(range(n))
        rng.shuffle(order)
        order = carried + order
        full = len(order) - len(order) % batch_size
        order, carried = order[:full], order[full:]
        pass_batches = []
        for start in range(0, full, mega):
            chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
            pass_batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
        rng.shuffle(pass_batches)
        batches += pass_batches
    return batches[:total]


def truncate(samples: list[Encoded], max_length: int, image_token_id: int | None) -> tuple[list[Encoded], dict]:
    """Samples cut to `max_length` tokens at the end, their labels and target kinds cut alongside
    (a cut answer keeps the loss on its first tokens; nothing is shifted). A cut into the image's
    tokens is an error: the model needs all of them. Also the counts: samples cut, tokens cut,
    samples left without a target token (they stay in their batch and add no loss)."""
    out, cut, cut_tokens, empty = [], 0, 0, 0
    for s in samples:
        if len(s.input_ids) <= max_length:
            out.append(s)
            continue
        if image_token_id is not None and image_token_id in s.input_ids[max_length:]:
            raise ValueError(f"max_length {max_length} cuts into the image tokens of a sample ({s.image}): "
                             f"it must be longer than the prompt's image tokens")
        kept = replace(s, input_ids=s.input_ids[:max_length], labels=s.labels[:max_length],
                       targets=s.targets[:max_length])
        cut, cut_tokens = cut + 1, cut_tokens + len(s.input_ids) - max_length
        empty += all(label == IGNORE for label in kept.labels[1:])
        out.append(kept)
    return out, {"truncated_samples": cut, "truncated_tokens": cut_tokens, "samples_without_targets": empty}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `precision` on `device`; bf16 falls back to fp16 (with a gradient
    scaler) on a GPU without bf16 (before Ampere). None: fp32, no autocast."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            print("[train] this GPU has no bf16: fp16 autocast with a gradient scaler instead")
            return torch.float16
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    raise ValueError(f"unknown precision {precision!r}: use fp32, bf16 or fp16")


def enable_gradient_checkpointing(model) -> None:
    """Recompute activations in the backward pass. Non-reentrant: it works with the frozen
    embeddings LoRA leaves (no input needs a gradient)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False


def target_token_losses(model, ids, mask, pixels, labels, targets):
    """The cross-entropy of every trained token, with (row, kind) of each. Logits are computed
    only at the positions that predict a trained token (transformers' boolean `logits_to_keep`):
    image, prompt and padding positions never are, and in a tune batch they are three quarters
    of the positions, whose vocabulary projection and softmax were a fifth of a step."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, logits_to_keep=keep)
    logits = out.logits.float()  # (kept positions, vocabulary), row by row in the batch's order
    ce = torch.nn.functional.cross_entropy(logits, labels[:, 1:][keep[:, :-1]], reduction="none")
    return ce, keep.nonzero()[:, 0], targets[:, 1:][keep[:, :-1]]


def lr_lambda(total_steps: int, warmup_fraction: float, min_fraction: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_fraction))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def train(model, samples: list[Encoded], images, cfg: TrainConfig, pad_id: int,
          checkpoint_dir: str | Path | None = None, on_log: Callable[[int, dict], None] | None = None,
          log_every: int = 10, progress: bool = True, desc: str = "train",
          batches: list[list[int]] | None = None) -> TrainResult:
    """Trains `model` on `samples` (`images`: an ImageTable, an ImageStream, or any callable from
    image paths to pixels). One step is one optimizer step over a batch of `cfg.batch_size`
    samples; checkpoints fall only between steps, never inside an accumulation."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # the vision tower's pooler never reaches the loss (LLaVA reads a hidden layer), so DDP
    # must expect parameters without gradients
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    rank, world = accelerator.process_index, accelerator.num_processes
    device = accelerator.device
    torch.manual_seed(cfg.seed)
    truncation = {"truncated_samples": 0, "truncated_tokens": 0, "samples_without_targets": 0}
    if cfg.max_length:
        samples, truncation = truncate(samples, cfg.max_length, getattr(model.config, "image_token_id", None))
        if truncation["truncated_samples"] and accelerator.is_main_process:
            print(f"[{desc}] max_length {cfg.max_length}: {truncation['truncated_samples']} of {len(samples)} samples "
                  f"cut ({truncation['truncated_tokens']} tokens), {truncation['samples_without_targets']} left "
                  f"without a target token")
    if batches is None:
        batches = length_grouped_batches([len(s.input_ids) for s in samples], cfg.batch_size, cfg.epochs, cfg.seed)
    total = len(batches)
    half = autocast_dtype(cfg.precision, device)
    if half is not None:
        for p in model.parameters():  # the optimizer updates fp32 weights; frozen ones may stay in half
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, cfg.warmup_fraction, cfg.min_lr_fraction))
    model, optimizer = accelerator.prepare(model, optimizer)
    progress_state = _Progress()
    accelerator.register_for_checkpointing(scheduler, progress_state)
    scaler = torch.amp.GradScaler(device.type) if half == torch.float16 else None
    if scaler is not None:
        accelerator.register_for_checkpointing(scaler)  # its loss scale resumes with the weights
    autocast = (lambda: torch.autocast(device.type, dtype=half)) if half is not None else nullcontext
    _checkpoint_trainable_weights_only(accelerator)
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    start, history = _resume(accelerator, progress_state, ckpt, total, desc)
    end = total if cfg.max_steps is None else max(start, min(total, cfg.max_steps))
    local = slice(rank, None, world)
    # this process's images of every step to run, decoded ahead by the image source's workers
    pixel_batches = _pixel_batches(images, [[samples[i].image for i in batches[step]][local]
                                            for step in range(start, end)])

    model.train()
    sums = {"tokens": 0, "padded": 0, "samples": 0}
    window: list[dict] = []
    completed = start
    started = time.perf_counter()
    bar = tqdm(range(start, total), desc=desc, unit="step", disable=not (progress and accelerator.is_main_process),
               mininterval=2.0, initial=start, total=total)
    for step in bar:
        if step >= end:
            break
        batch = [samples[i] for i in batches[step]]
        ids, labels, targets, mask = collate(batch, pad_id)
        global_targets = (labels[:, 1:] != IGNORE).sum().item()
        ids, labels, targets, mask = ids[local], labels[local], targets[local], mask[local]
        pixels = next(pixel_batches)
        n = len(ids)
        micro = min(n, cfg.micro_batch_size or n) or 1
        parts = list(range(0, n, micro))
        sums_step = {"loss_sum": 0.0, "tokens": 0.0, "response_loss_sum": 0.0, "response_tokens": 0.0,
                     "rationale_loss_sum": 0.0, "rationale_tokens": 0.0}
        for k, lo in enumerate(parts):
            part = slice(lo, lo + micro)
            p_ids, p_labels, p_targets, p_mask = ids[part], labels[part], targets[part], mask[part]
            if len(parts) > 1:  # right padding: the micro-batch's own width is enough
                width = int(p_mask.sum(1).max())
                p_ids, p_labels, p_targets, p_mask = (t[:, :width] for t in (p_ids, p_labels, p_targets, p_mask))
            # gradients are exchanged once per step, after the last micro-batch
            sync = accelerator.no_sync(model) if k < len(parts) - 1 else nullcontext()
            with sync:
                with autocast():
                    ce, rows, kinds = target_token_losses(model, p_ids.to(device), p_mask.to(device),
                                                          pixels[part].to(device), p_labels.to(device),
                                                          p_targets.to(device))
                # normalised by the whole step's batch, so the micro-batches' gradients add up to the batch's
                if cfg.loss_normalization == "sample":
                    counts = torch.bincount(rows, minlength=len(p_ids)).clamp(min=1)
                    per_sample = torch.zeros(len(p_ids), device=ce.device, dtype=ce.dtype).index_add(0, rows, ce) / counts
                    loss = per_sample.sum() / len(batch) * world
                else:
                    loss = ce.sum() / max(1, global_targets) * world
                accelerator.backward(scaler.scale(loss) if scaler is not None else loss)
            with torch.no_grad():
                resp, rat = (kinds == RESPONSE).float(), (kinds == RATIONALE).float()
                sums_step["loss_sum"] += ce.sum().item()
                sums_step["tokens"] += len(ce)
                sums_step["response_loss_sum"] += (ce * resp).sum().item()
                sums_step["response_tokens"] += resp.sum().item()
                sums_step["rationale_loss_sum"] += (ce * rat).sum().item()
                sums_step["rationale_tokens"] += rat.sum().item()
            sums["tokens"] += int(p_mask.sum())
            sums["padded"] += p_mask.numel()
        if scaler is not None:
            if cfg.max_grad_norm:
                scaler.unscale_(optimizer)
                accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        completed = step + 1

        record = {"step": step + 1, "loss": sums_step["loss_sum"] / max(1.0, sums_step["tokens"]),
                  **{k: v for k, v in sums_step.items() if k.startswith(("response", "rationale"))},
                  "lr": scheduler.get_last_lr()[0]}
        sums["samples"] += n
        window.append(record)
        if (step + 1) % log_every == 0 or step + 1 == total:
            entry = _summarise(window, step + 1)
            elapsed = time.perf_counter() - started
            entry["tokens_per_s"] = sums["tokens"] * world / elapsed
            history.append(entry)
            window = []
            bar.set_postfix(loss=f"{entry['loss']:.3f}", refresh=False)
            if on_log and accelerator.is_main_process:
                on_log(step + 1, entry)
        if ckpt and _checkpoint_due(step + 1, cfg.checkpoint_every, total):
            _save_checkpoint(accelerator, progress_state, step + 1, history, ckpt)
    bar.close()
    elapsed = time.perf_counter() - started
    accelerator.wait_for_everyone()
    done = completed
    tail = history[-max(1, len(history) // 5):]
    metrics = {
        "steps": done,
        "total_steps": total,
        "samples": len(samples),
        "train_loss": _mean(tail, "loss"),
        "response_loss": _mean(tail, "response_loss"),
        "rationale_loss": _mean(tail, "rationale_loss"),
        "tokens_per_s": sums["tokens"] * world / elapsed if elapsed else 0.0,
        "samples_per_s": sums["samples"] * world / elapsed if elapsed else 0.0,
        "padding_fraction": 1 - sums["tokens"] / sums["padded"] if sums["padded"] else 0.0,
        "train_seconds": elapsed,
        "processes": world,
        "resumed_from": start,  # the step of the checkpoint this run went on from (0: from the start)
        **truncation,
    }
    if ckpt and done < total:
        _save_checkpoint(accelerator, progress_state, done, history, ckpt)
    state_dict = accelerator.get_state_dict(model) if done == total else None  # collective: every rank calls it
    return TrainResult(done, metrics, history, state_dict if accelerator.is_main_process else None)


def _pixel_batches(images, rel_lists: list[list[str]]):
    """The pixels of each list of image paths, in order: by the source's own `batches` (an
    ImageStream decodes ahead in workers) or, for a plain callable, one call per list."""
    if hasattr(images, "batches"):
        return iter(images.batches(rel_lists))
    return (images(rels) for rels in rel_lists)


def _summarise(window: list[dict], step: int) -> dict:
    steps = len(window)
    r_tok = sum(w["response_tokens"] for w in window)
    q_tok = sum(w["rationale_tokens"] for w in window)
    return {
        "step": step,
        "loss": sum(w["loss"] for w in window) / steps,
        "response_loss": sum(w["response_loss_sum"] for w in window) / r_tok if r_tok else float("nan"),
        "rationale_loss": sum(w["rationale_loss_sum"] for w in window) / q_tok if q_tok else float("nan"),
        "lr": window[-1]["lr"],
    }


def _mean(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if r.get(key) == r.get(key)]  # drops NaN
    return sum(vals) / len(vals) if vals else float("nan")


CHECKPOINT = "checkpoint"  # accelerate's save_state folder inside the checkpoint directory


def checkpoint_dir(state_dir: str | Path, run: str, samples: list[Encoded], *inputs) -> Path:
    """Where a run's checkpoint lives, keyed by everything that decides its training: the
    `inputs` (settings, the starting model's fingerprint) and the encoded samples themselves,
    so a checkpoint left by a killed run is only ever resumed by the same training."""
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps([s.input_ids, s.labels, s.targets, s.image]).encode())
    return Path(state_dir) / "checkpoints" / f"{run}-{fingerprint(*inputs, h.hexdigest())}"


def remove_checkpoints(state_dir: str | Path, run: str) -> None:
    """Once a run's model is saved: its checkpoint, and any a changed input left behind."""
    for directory in (Path(state_dir) / "checkpoints").glob(f"{run}-*"):
        shutil.rmtree(directory, ignore_errors=True)


def _resume(accelerator, progress_state: _Progress, directory: Path | None, total: int, desc: str) -> tuple[int, list[dict]]:
    """(step, history) of the last complete checkpoint in `directory`, whose model, optimizer,
    scheduler and RNG states are loaded; (0, []) when there is none."""
    resume = _checkpoint_to_resume(directory) if directory else None
    if not resume:
        return 0, []
    accelerator.load_state(str(resume))
    if accelerator.is_main_process:
        print(f"[{desc}] resumed from step {progress_state.step} of {total} ({resume})")
    return progress_state.step, progress_state.history


def _checkpoint_due(done: int, every: int, total: int) -> bool:
    """After `done` steps: a checkpoint every `every` steps, but none after the last (the model is saved then)."""
    return done % every == 0 and done < total


def _checkpoint_to_resume(directory: Path) -> Path | None:
    """The last complete checkpoint: the current one, or the previous one when a crash came
    between the two renames of `_save_checkpoint` (a half-written `.tmp` is never used)."""
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        if (directory / name / "progress.json").exists():
            return directory / name
    return None


def _checkpoint_trainable_weights_only(accelerator) -> None:
    """A checkpoint of a LoRA run keeps the adapters and the projector, not the frozen 7B model
    (accelerate saves every weight by default), and a resume checks it gets exactly those back.
    FSDP and DeepSpeed models are saved and loaded by their own sharded writers instead: accelerate
    leaves them out of the lists these hooks see."""

    def trainable(model) -> set[str]:
        return {n for n, p in model.named_parameters() if p.requires_grad}

    def keep_trainable(models, weights, output_dir):
        for model, state in zip(models, weights):
            wanted = trainable(model)
            for key in [k for k in state if k not in wanted]:
                del state[key]

    def load_trainable(models, input_dir):
        from safetensors.torch import load_file

        for i, model in enumerate(models):
            path = Path(input_dir) / (f"model_{i}.safetensors" if i else "model.safetensors")
            state = load_file(path)
            if set(state) != trainable(model):
                raise RuntimeError(f"checkpoint {path} holds other weights than this run trains "
                                   f"({len(state)} saved, {len(trainable(model))} trainable): remove {Path(input_dir).parent}")
            model.load_state_dict(state, strict=False)  # the frozen weights come from the base model
        models.clear()  # loaded here: accelerate must not load them again

    accelerator.register_save_state_pre_hook(keep_trainable)
    accelerator.register_load_state_pre_hook(load_trainable)


def _save_checkpoint(accelerator, progress_state: _Progress, step: int, history: list[dict], directory: Path) -> None:
    """Every process calls it (sharded states are saved collectively). The new checkpoint is
    written aside and swapped in by renames, so a kill at any moment leaves a complete one."""
    progress_state.step, progress_state.history = step, history
    tmp, current, old = (directory / (CHECKPOINT + suffix) for suffix in (".tmp", "", ".old"))
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "progress.json").write_text(json.dumps({"step": step}))  # marks the folder complete
        shutil.rmtree(old, ignore_errors=True)
        if current.exists():
            os.replace(current, old)
        os.replace(tmp, current)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
