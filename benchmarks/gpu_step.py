"""GPU figures for LoRA tuning of the LLaVA-1.5-7B architecture: step time, tokens/s, peak
memory and model FLOPs utilization (MFU) for a batch of real sequence length.

The model is built from an explicit config matching llava-hf/llava-1.5-7b-hf (CLIP
ViT-L/14-336 tower, Llama-2-7B language model, GELU MLP projector) with random weights,
directly on the device in the chosen dtype: nothing is downloaded and a 7B model never
materialises in fp32 on the CPU. LoRA is applied with `reverie.tune.apply_lora` and the
project's default `LoraSettings` (LoRA on the language model, projector trained in full).
Throughput does not depend on what the weights are.

    python -m benchmarks.gpu_step [--arch llava-1.5-7b|tiny] [--batch 8] [--seq 1024]
        [--steps 10] [--warmup 3] [--dtype bf16] [--grad-checkpointing] [--peak-tflops T]

`--arch tiny` (the project's tiny student shape) is a CPU smoke test. The last line printed
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


def make_batch(config, batch: int, seq: int, device, dtype, seed: int = 0):
    """`batch` full-length sequences: BOS, the image's placeholder tokens, random text tokens
    (predicted: labels everywhere but the image and BOS), and one random image each."""
    n_img = config.image_seq_length
    if seq < n_img + 2:
        raise ValueError(f"--seq {seq} is shorter than the {n_img} image tokens plus BOS and one text token")
    g = torch.Generator().manual_seed(seed)
    text = config.text_config
    ids = torch.randint(3, config.image_token_id, (batch, seq), generator=g)
    ids[:, 0] = text.bos_token_id
    ids[:, 1:1 + n_img] = config.image_token_id
    labels = ids.clone()
    labels[:, :1 + n_img] = -100
    v = config.vision_config
    pixels = torch.randn(batch, 3, v.image_size, v.image_size, generator=g)
    return ids.to(device), labels.to(device), pixels.to(device=device, dtype=dtype)


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
    p.add_argument("--arch", choices=["llava-1.5-7b", "tiny"], default="llava-1.5-7b")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024, help="tokens per sequence, image tokens included")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak dense device TFLOP/s for MFU (default: by GPU name; none on the CPU)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1:
        p.error("need --steps >= 1, --warmup >= 0, --batch >= 1")
    return args


def main(argv=None) -> dict:
    import peft
    import transformers

    from reverie.settings import LoraSettings
    from reverie.tune import apply_lora

    args = parse(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype]
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
    config = llava_config(args.arch)
    t0 = time.perf_counter()
    model = apply_lora(build_model(config, device, dtype), LoraSettings())
    if args.grad_checkpointing:
        kwargs = {"use_reentrant": False}  # works with the frozen embeddings LoRA leaves
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.train()
    sync(device)
    build_s = time.perf_counter() - t0
    parts = count_params(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    ids, labels, pixels = make_batch(config, args.batch, args.seq, device, dtype, args.seed)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        out = model(input_ids=ids, pixel_values=pixels, labels=labels, use_cache=False)
        out.loss.backward()
        optimizer.step()
        return out.loss.item()  # also a sync point

    result = {"benchmark": "gpu_step", "arch": args.arch, "device": name, "dtype": args.dtype,
              "batch": args.batch, "seq": args.seq, "image_tokens_per_sequence": config.image_seq_length,
              "tokens_per_step": args.batch * args.seq, "grad_checkpointing": args.grad_checkpointing,
              "lora": LoraSettings().model_dump(), "attn_implementation": model.config._attn_implementation,
              "total_params": parts["total"], "trainable_params": parts["trainable"],
              "params_by_part": parts, "build_seconds": round(build_s, 3),
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}}
    times, losses = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        for i in range(args.warmup + args.steps):
            sync(device)
            start = time.perf_counter()
            losses.append(step())
            sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError as e:
        mem, how = peak_memory(device)
        result |= {"error": f"out of memory after {len(losses)} steps: {str(e).splitlines()[0]}",
                   "peak_memory_bytes": mem, "peak_memory_gib": round(mem / 2**30, 3), "peak_memory_source": how}
        print(json.dumps(result))
        return result
    mem, how = peak_memory(device)
    step_s = statistics.median(times)
    matmul, matmul_size = measured_matmul_flops(device, dtype)
    upper, lora_est = model_flops(parts, config, args.batch, args.seq)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (peak_device_flops(name) if device.type == "cuda" else None)
    result |= {"step_seconds_median": step_s, "step_seconds": [round(t, 5) for t in times],
               "tokens_per_s": args.batch * args.seq / step_s, "samples_per_s": args.batch / step_s,
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
    print(f"{args.arch} on {name}, {args.dtype}, batch {args.batch} x {args.seq} tokens "
          f"({config.image_seq_length} image tokens each), trainable {parts['trainable']:,} of {parts['total']:,}")
    print(f"step {step_s * 1e3:.1f} ms (median of {len(times)}), {result['tokens_per_s']:,.0f} tokens/s, "
          f"peak memory {result['peak_memory_gib']:.2f} GiB, {result['achieved_tflops']:.1f} TFLOP/s, {mfu}")
    print(f"a {args.dtype} {matmul_size}x{matmul_size} matmul reaches {matmul / 1e12:.2f} TFLOP/s here: the step runs at "
          f"{result['fraction_of_measured_matmul']:.1%} of it (LoRA-aware {result['fraction_of_measured_matmul_lora']:.1%})")
    print(f"model FLOPs per step = {UPPER_FORMULA}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(1 if "error" in main() else 0)
