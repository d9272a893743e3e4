"""The training loop: length-grouped batches, exact loss masks, separate response and
rationale losses, checkpoints that resume bit for bit, and several processes through
`accelerate launch` / `torchrun` without code changes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

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


@dataclass
class TrainResult:
    steps: int
    metrics: dict
    history: list[dict] = field(default_factory=list)


def length_grouped_batches(lengths: list[int], batch_size: int, epochs: float, seed: int) -> list[list[int]]:
    """Batches of similar-length samples (little padding) in a seeded random order.

    Each epoch shuffles, cuts the order into mega-batches of 32 batches, sorts each by
    length, cuts batches and shuffles the batch order. The whole schedule is a function of
    the seed alone, so a resumed run replays exactly the batches it had not seen."""
    n = len(lengths)
    if n == 0:
        raise ValueError("no training samples")
    total = max(1, math.ceil(epochs * n / batch_size))
    rng = random.Random(seed)
    batches: list[list[int]] = []
    while len(batches) < total:
        order = list(range(n))
        rng.shuffle(order)
        mega = batch_size * 32
        epoch_batches = []
        for start in range(0, n, mega):
            chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
            epoch_batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
        rng.shuffle(epoch_batches)
        batches += epoch_batches
    return batches[:total]


class ImageTable:
    """All pixel tensors of the run, computed once by the model's image processor."""

    def __init__(self, processor, root: str | Path, images: list[str]):
        from PIL import Image

        self.index = {rel: i for i, rel in enumerate(sorted(set(images)))}
        pils = []
        for rel in self.index:
            with Image.open(Path(root) / rel) as im:
                pils.append(im.convert("RGB"))
        chunks = [processor.image_processor(pils[i:i + 512], return_tensors="pt")["pixel_values"]
                  for i in range(0, len(pils), 512)]
        self.pixels = torch.cat(chunks) if chunks else torch.empty(0)

    def __call__(self, rels: list[str]) -> torch.Tensor:
        return self.pixels[[self.index[r] for r in rels]]


def collate(samples: list[Encoded], pad_id: int, pad_left: bool = False):
    width = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    targets = torch.zeros((len(samples), width), dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        sl = slice(width - n, width) if pad_left else slice(0, n)
        ids[i, sl] = torch.tensor(s.input_ids)
        labels[i, sl] = torch.tensor(s.labels)
        targets[i, sl] = torch.tensor(s.targets)
        mask[i, sl] = 1
    return ids, labels, targets, mask


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


def train(model, samples: list[Encoded], images: ImageTable, cfg: TrainConfig, pad_id: int,
          checkpoint_dir: str | Path | None = None, on_log: Callable[[int, dict], None] | None = None,
          log_every: int = 10, progress: bool = True, desc: str = "train",
          batches: list[list[int]] | None = None) -> TrainResult:
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # the vision tower's pooler never reaches the loss (LLaVA reads a hidden layer), so DDP
    # must expect parameters without gradients
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(cfg.seed)
    if batches is None:
        batches = length_grouped_batches([len(s.input_ids) for s in samples], cfg.batch_size, cfg.epochs, cfg.seed)
    total = len(batches)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, cfg.warmup_fraction, cfg.min_lr_fraction))
    model, optimizer = accelerator.prepare(model, optimizer)
    ckpt = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None
    start = 0
    history: list[dict] = []
    if ckpt and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        names = [n for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad]
        params = dict(accelerator.unwrap_model(model).named_parameters())
        with torch.no_grad():
            for n in names:
                params[n].copy_(state["params"][n])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, history = state["step"], state["history"]
        if accelerator.is_main_process:
            print(f"[{desc}] resumed from step {start} of {total} ({ckpt})")

    model.train()
    sums = {"tokens": 0, "padded": 0, "samples": 0}
    window: list[dict] = []
    completed = start
    started = time.perf_counter()
    bar = tqdm(range(start, total), desc=desc, unit="step", disable=not (progress and accelerator.is_main_process),
               mininterval=2.0, initial=start, total=total)
    for step in bar:
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        batch = [samples[i] for i in batches[step]]
        ids, labels, targets, mask = collate(batch, pad_id)
        global_targets = (labels[:, 1:] != IGNORE).sum().item()
        local = slice(rank, None, world)
        ids, labels, targets, mask = ids[local], labels[local], targets[local], mask[local]
        pixels = images([s.image for s in batch][local])
        device = accelerator.device
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), pixel_values=pixels.to(device))
        logits = out.logits[:, :-1].float()
        tgt = labels[:, 1:].to(device)
        kinds = targets[:, 1:].to(device)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                               ignore_index=IGNORE, reduction="none").view(tgt.shape)
        valid = (tgt != IGNORE).float()
        if cfg.loss_normalization == "sample":
            per_sample = (ce * valid).sum(1) / valid.sum(1).clamp(min=1)
            loss = per_sample.sum() / len(batch) * world
        else:
            loss = (ce * valid).sum() / max(1, global_targets) * world
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        completed = step + 1

        with torch.no_grad():
            resp, rat = (kinds == RESPONSE).float(), (kinds == RATIONALE).float()
            record = {
                "step": step + 1,
                "loss": (ce * valid).sum().item() / max(1.0, valid.sum().item()),
                "response_loss_sum": (ce * resp).sum().item(), "response_tokens": resp.sum().item(),
                "rationale_loss_sum": (ce * rat).sum().item(), "rationale_tokens": rat.sum().item(),
                "lr": scheduler.get_last_lr()[0],
            }
        sums["tokens"] += int(mask.sum())
        sums["padded"] += mask.numel()
        sums["samples"] += len(ids)
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
        if ckpt and ((step + 1) % cfg.checkpoint_every == 0) and step + 1 < total:
            _save_checkpoint(accelerator, model, optimizer, scheduler, step + 1, history, ckpt)
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
    }
    if ckpt and done < total:
        _save_checkpoint(accelerator, model, optimizer, scheduler, done, history, ckpt)
    return TrainResult(done, metrics, history)


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


def _save_checkpoint(accelerator, model, optimizer, scheduler, step, history, path: Path) -> None:
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    state = {
        "params": {n: p.detach().cpu().clone() for n, p in unwrapped.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "history": history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
