"""GPU figures of the project's own training function (`reverie.student.train.train`) on
LoRA tuning of the LLaVA-1.5-7B architecture with the 7B profile's recipe
(configs/llava-1.5-7b.yaml: LoRA r 128 / alpha 256, lr 2e-4, global batch 128 in micro-batches
of 16, length 2048, bf16 autocast, gradient checkpointing): step time, tokens/s, peak memory
and model FLOPs utilization (MFU).

The model is built from an explicit config matching llava-hf/llava-1.5-7b-hf (CLIP
ViT-L/14-336 tower, Llama-2-7B language model, GELU MLP projector) with random weights,
directly on the GPU in the frozen weights' dtype: nothing is downloaded and a 7B model never
materialises in fp32 on the CPU. LoRA comes from `reverie.tuning.apply_lora` with the profile's
`tune.lora`; `train` upcasts the trainable weights to fp32 and runs the profile's loop
settings. Samples are full-length: BOS, 576 image tokens, random text tokens, all predicted.
Throughput does not depend on what the weights are. A step is one optimizer step over the
global batch (its accumulation passes included).

    python -m benchmarks.gpu_step [--profile configs/llava-1.5-7b.yaml] [--steps 3] [--warmup 1]
        [--global-batch N] [--micro-batch N] [--seq N] [--peak-tflops T]
    python -m benchmarks.gpu_step --arch tiny      # CPU: the tiny student's shape, same recipe

Without a CUDA GPU the 7B run says so and exits with status 2 (`--device cpu` forces it on the
CPU anyway: about a minute and a half per 640-token sample on 2 cores). The last line printed
is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# dense (no sparsity) bf16/fp16 tensor-core peaks from the vendors' data sheets, FLOP/s;
# the first matching substring of the lower-cased device name wins
PEAK_FLOPS = [("h200", 989e12), ("h100 pcie", 756e12), ("h100", 989e12), ("a100", 312e12)]
UPPER_FORMULA = "6 * N_total * tokens  (forward 2N + backward 4N per token; upper bound under LoRA)"
LORA_FORMULA = ("(4 * N_lm + 6 * N_lora) * tokens + 6 * N_projector * image_tokens + 2 * N_vision * patches"
                "  (frozen LM: forward + input-gradient backward; vision tower forward only;"
                " no attention-score FLOPs, no recomputation)")


def llava_config(arch: str):
    """The LlavaConfig of llava-hf/llava-1.5-7b-hf, or the project's tiny student shape."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if arch == "llava-1.5-7b":
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                  num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                                  hidden_act="quick_gelu", layer_norm_eps=1e-5)
        text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096,
                           rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu", pad_token_id=32001,
                           bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        image_token, layer = 32000, -2
    elif arch == "tiny":
        from reverie.settings import ModelSettings

        m = ModelSettings()
        vision = CLIPVisionConfig(hidden_size=m.vision_hidden, intermediate_size=2 * m.vision_hidden,
                                  num_hidden_layers=m.vision_layers, num_attention_heads=m.vision_heads,
                                  image_size=4 * m.patch_size, patch_size=m.patch_size)  # 16 image tokens
        text = LlamaConfig(hidden_size=m.text_hidden, intermediate_size=m.intermediate,
                           num_hidden_layers=m.text_layers, num_attention_heads=m.text_heads,
                           num_key_value_heads=m.text_heads, vocab_size=m.vocab_size, max_position_embeddings=4096,
                           pad_token_id=m.vocab_size - 1, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        image_token, layer = m.vocab_size - 2, -1
    else:
        raise ValueError(f"unknown --arch {arch!r}: use llava-1.5-7b or tiny")
    patches = (vision.image_size // vision.patch_size) ** 2
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token,
                       image_seq_length=patches, projector_hidden_act="gelu", vision_feature_layer=layer,
                       vision_feature_select_strategy="default", multimodal_projector_bias=True)


def build_model(config, device: str | torch.device, dtype: torch.dtype):
    """Random weights allocated on `device` in `dtype` (on "meta": shapes only, no memory)."""
    from transformers import LlavaForConditionalGeneration

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype)  # a no-op unless some buffer or parameter ignored the default


def peak_device_flops(name: str) -> float | None:
    low = name.lower()
    return next((f for key, f in PEAK_FLOPS if key in low), None)


def count_params(model) -> dict:
    """Unique parameters by part; PEFT's frozen copy of the projector (modules_to_save keeps the
    original) is counted in `resident` but not in the computation."""
    parts = {"vision": 0, "projector": 0, "lm": 0, "embedding": 0, "lora": 0, "trainable": 0, "resident": 0}
    seen = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        parts["resident"] += p.numel()
        parts["trainable"] += p.numel() if p.requires_grad else 0
        if "lora_" in name:
            parts["lora"] += p.numel()
        elif "original_module" in name:
            continue
        elif "vision_tower" in name:
            parts["vision"] += p.numel()
        elif "multi_modal_projector" in name:
            parts["projector"] += p.numel()
        elif "embed_tokens" in name:
            parts["embedding"] += p.numel()
        else:
            parts["lm"] += p.numel()  # decoder layers, final norm, lm_head
    parts["total"] = parts["vision"] + parts["projector"] + parts["lm"] + parts["embedding"] + parts["lora"]
    return parts


def model_flops(parts: dict, config, batch: int, seq: int) -> tuple[float, float]:
    """(upper bound 6 * N_total * tokens, LoRA-aware estimate) FLOPs per training step."""
    tokens = batch * seq
    v = config.vision_config
    patches = batch * ((v.image_size // v.patch_size) ** 2 + 1)
    upper = 6 * parts["total"] * tokens
    lora = ((4 * parts["lm"] + 6 * parts["lora"]) * tokens + 6 * parts["projector"] * batch * config.image_seq_length
            + 2 * parts["vision"] * patches)
    return float(upper), float(lora)


def peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss * (1 if sys.platform == "darwin" else 1024), "process resident-set peak (ru_maxrss)"


def measured_matmul_flops(device: torch.device, dtype: torch.dtype, max_n: int = 4096, repeats: int = 5,
                          budget_s: float = 0.5) -> tuple[float, int]:
    """Dense matmul FLOP/s this device reaches in `dtype` here, median of `repeats`, and the
    matrix size it used: the attainable ceiling the step is compared with in the same run (the
    only one on a CPU). The size doubles up to `max_n` while one product stays well inside
    `budget_s`: a GPU gets 4096, a CPU without fast bf16 (a 4096 product took about ten
    minutes on one) a size it can time in a second."""
    n = 256
    while True:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        if n >= max_n or (time.perf_counter() - start) * 8 > budget_s:
            break
        n *= 2
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times), n


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="configs/llava-1.5-7b.yaml", help="the params profile whose tune recipe runs")
    p.add_argument("--arch", choices=["llava-1.5-7b", "tiny"], default="llava-1.5-7b",
                   help="tiny: the project's tiny student shape, a CPU check of the same recipe")
    p.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    p.add_argument("--global-batch", type=int, default=None, help="default: the profile's tune.batch_size")
    p.add_argument("--micro-batch", type=int, default=None, help="default: the profile's tune.micro_batch_size")
    p.add_argument("--seq", type=int, default=None, help="tokens per sample, image tokens included "
                                                          "(default: the profile's tune.max_length)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None, help="default: the profile's")
    p.add_argument("--no-grad-checkpointing", action="store_true")
    p.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda; cpu only when asked")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak dense device TFLOP/s for MFU (default: by GPU name; none on the CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", default=None, metavar="FILE",
                   help="also write the JSON result there: the measured throughput `flows.pipeline --plan` "
                        "reads (plan.throughput_file)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error("need --steps >= 1, --warmup >= 0")
    if args.arch == "tiny":  # a shape the CPU runs in seconds
        args.global_batch = args.global_batch or 4
        args.micro_batch = args.micro_batch or 2
        args.seq = args.seq or 64
    return args


def recipe(args):
    """The profile's tune settings with this run's overrides (validated like params.yaml)."""
    from reverie.orchestration import profile_overrides
    from reverie.settings import TuneSettings

    tune = {k.removeprefix("tune."): v for k, v in profile_overrides(args.profile).items() if k.startswith("tune.")}
    nested: dict = {}
    for key, value in tune.items():
        node = nested
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    nested.pop("mix", None)  # no data: the samples are made here
    settings = TuneSettings.model_validate(nested)
    updates = {"batch_size": args.global_batch, "micro_batch_size": args.micro_batch, "max_length": args.seq,
               "precision": args.precision}
    updates = {k: v for k, v in updates.items() if v is not None}
    if args.no_grad_checkpointing:
        updates["gradient_checkpointing"] = False
    return TuneSettings.model_validate(settings.model_dump() | updates)


def make_samples(config, n: int, seq: int, seed: int = 0):
    """`n` full-length samples: BOS, the image's placeholder tokens, random text tokens (all
    predicted), each with its own image name."""
    from reverie.student.samples import IGNORE, RESPONSE, Encoded

    n_img = config.image_seq_length
    if seq < n_img + 2:
        raise ValueError(f"--seq {seq} is shorter than the {n_img} image tokens plus BOS and one text token")
    g = torch.Generator().manual_seed(seed)
    text = config.text_config
    out = []
    for i in range(n):
        words = torch.randint(3, config.image_token_id, (seq - 1 - n_img,), generator=g).tolist()
        ids = [text.bos_token_id] + [config.image_token_id] * n_img + words
        labels = [IGNORE] * (1 + n_img) + words
        out.append(Encoded(ids, labels, [0] * (1 + n_img) + [RESPONSE] * len(words), f"random/{i}"))
    return out


class RandomPixels:
    """An image source of random pixels (train asks it by image name)."""

    def __init__(self, config, seed: int = 0):
        self.size = config.vision_config.image_size
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, rels):
        return torch.randn(len(rels), 3, self.size, self.size, generator=self.g)


def main(argv=None) -> dict:
    import peft
    import transformers

    from reverie.student.train import TrainConfig, train
    from reverie.tuning import apply_lora

    args = parse(argv)
    cuda = torch.cuda.is_available()
    device = torch.device(args.device or ("cuda" if cuda else "cpu"))
    if device.type == "cuda" and not cuda:
        raise SystemExit("--device cuda: no CUDA GPU here")
    if args.arch == "llava-1.5-7b" and device.type != "cuda" and args.device != "cpu":
        result = {"benchmark": "gpu_step", "error": "no CUDA GPU on this machine: the 7B profile was not run. "
                  "Run it on a GPU machine, `--arch tiny` for the same recipe on the CPU at the tiny shape, "
                  "or `--device cpu` to force the 7B shape on the CPU (very slow)", "gpu": False}
        print("NO GPU: " + result["error"], file=sys.stderr)
        print(json.dumps(result))
        return result
    if device.type == "cpu" and cuda:
        raise SystemExit("--device cpu on a GPU machine: train() runs on the GPU there; hide it with CUDA_VISIBLE_DEVICES=")
    tune = recipe(args)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    config = llava_config(args.arch)
    frozen = DTYPES[tune.precision] if tune.lora.enabled else torch.float32  # train keeps trainable weights fp32
    t0 = time.perf_counter()
    model = build_model(config, device, frozen)
    model = apply_lora(model, tune.lora) if tune.lora.enabled else model
    sync(device)
    build_s = time.perf_counter() - t0
    parts = count_params(model)
    seq, batch = tune.max_length or 2048, tune.batch_size
    steps = args.warmup + args.steps
    # one step more than is run: train stops at max_steps without gathering a 7B state dict
    samples = make_samples(config, batch * (steps + 1), seq, args.seed)
    cfg = TrainConfig(epochs=1.0, batch_size=batch, lr=tune.lr, warmup_fraction=tune.warmup_fraction,
                      weight_decay=tune.weight_decay, seed=args.seed, max_steps=steps,
                      micro_batch_size=tune.micro_batch_size, precision=tune.precision,
                      gradient_checkpointing=tune.gradient_checkpointing, max_length=tune.max_length)
    stamps, losses = [], []

    def on_log(step, entry):
        sync(device)
        stamps.append(time.perf_counter())
        losses.append(entry["loss"])

    result = {"benchmark": "gpu_step", "gpu": device.type == "cuda", "arch": args.arch, "device": name,
              "profile": args.profile, "training_function": "reverie.student.train.train",
              "precision": tune.precision, "frozen_dtype": str(frozen).removeprefix("torch."),
              "global_batch": batch, "micro_batch": tune.micro_batch_size or batch,
              "accumulation_passes": -(-batch // (tune.micro_batch_size or batch)), "seq": seq,
              "image_tokens_per_sequence": config.image_seq_length, "tokens_per_step": batch * seq,
              "grad_checkpointing": tune.gradient_checkpointing, "lora": tune.lora.model_dump(), "lr": tune.lr,
              "attn_implementation": model.config._attn_implementation,
              "total_params": parts["total"], "trainable_params": parts["trainable"],
              "params_by_part": parts, "build_seconds": round(build_s, 3),
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    try:
        train(model, samples, RandomPixels(config, args.seed), cfg, config.text_config.pad_token_id,
              on_log=on_log, log_every=1, progress=False, desc="gpu_step")
    except torch.OutOfMemoryError as e:
        mem, how = peak_memory(device)
        result |= {"error": f"out of memory after {len(losses)} steps: {str(e).splitlines()[0]}",
                   "peak_memory_bytes": mem, "peak_memory_gib": round(mem / 2**30, 3), "peak_memory_source": how}
        print(json.dumps(result))
        return result
    mem, how = peak_memory(device)
    times = [b - a for a, b in zip([start] + stamps, stamps)][args.warmup:]
    step_s = statistics.median(times)
    matmul, matmul_size = measured_matmul_flops(device, DTYPES[tune.precision])
    upper, lora_est = model_flops(parts, config, batch, seq)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (peak_device_flops(name) if device.type == "cuda" else None)
    result |= {"step_seconds_median": step_s, "step_seconds": [round(t, 5) for t in times],
               "tokens_per_s": batch * seq / step_s, "samples_per_s": batch / step_s,
               "peak_memory_bytes": mem, "peak_memory_gib": round(mem / 2**30, 3), "peak_memory_source": how,
               "model_flops_per_step": upper, "model_flops_formula": UPPER_FORMULA,
               "achieved_tflops": upper / step_s / 1e12,
               "peak_tflops": peak / 1e12 if peak else None, "mfu": upper / step_s / peak if peak else None,
               "model_flops_per_step_lora": lora_est, "model_flops_formula_lora": LORA_FORMULA,
               "mfu_lora": lora_est / step_s / peak if peak else None,
               "matmul_tflops_measured": matmul / 1e12, "matmul_size": matmul_size,
               "fraction_of_measured_matmul": upper / step_s / matmul,
               "fraction_of_measured_matmul_lora": lora_est / step_s / matmul,
               "loss_first": losses[0], "loss_last": losses[-1]}
    mfu = f"MFU {result['mfu']:.1%} (LoRA-aware {result['mfu_lora']:.1%})" if peak else "MFU n/a (no peak FLOPs)"
    print(f"{args.arch} on {name} through reverie.student.train.train: {tune.precision}, global batch {batch} "
          f"({result['accumulation_passes']} x {result['micro_batch']}) x {seq} tokens ({config.image_seq_length} image "
          f"tokens each), checkpointing {tune.gradient_checkpointing}, trainable {parts['trainable']:,} of {parts['total']:,}")
    print(f"step {step_s:.3f} s (median of {len(times)}), {result['tokens_per_s']:,.0f} tokens/s, "
          f"peak memory {result['peak_memory_gib']:.2f} GiB, {result['achieved_tflops']:.1f} TFLOP/s, {mfu}")
    print(f"a {tune.precision} {matmul_size}x{matmul_size} matmul reaches {matmul / 1e12:.2f} TFLOP/s here: the step runs "
          f"at {result['fraction_of_measured_matmul']:.1%} of it (LoRA-aware {result['fraction_of_measured_matmul_lora']:.1%})")
    print(f"model FLOPs per step = {UPPER_FORMULA} (recomputation by checkpointing not counted)")
    if args.write:
        from pathlib import Path

        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(json.dumps(result | {"devices": 1}) + "\n")  # one process, one device
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    out = main()
    sys.exit(2 if out.get("gpu") is False and "error" in out else 1 if "error" in out else 0)
