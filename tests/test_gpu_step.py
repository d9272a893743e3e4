"""The GPU step benchmark: a CPU smoke run of the tiny shape, and the LLaVA-1.5-7B config's size."""
import json

import pytest
import torch

from benchmarks.gpu_step import build_model, count_params, llava_config, main
from reverie.settings import LoraSettings
from reverie.tune import apply_lora


def test_tiny_step_on_cpu_reports_positive_figures(capsys):
    result = main(["--arch", "tiny", "--steps", "2", "--warmup", "1", "--batch", "2", "--seq", "64", "--dtype", "fp32",
                   "--device", "cpu"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(result))
    assert "error" not in printed
    assert printed["step_seconds_median"] > 0
    assert printed["tokens_per_s"] > 0
    assert printed["peak_memory_bytes"] > 0
    assert printed["tokens_per_step"] == 2 * 64 and printed["batch"] == 2 and printed["seq"] == 64
    assert 0 < printed["trainable_params"] < printed["total_params"]
    assert printed["model_flops_per_step"] == 6 * printed["total_params"] * 2 * 64
    assert "6 * N_total * tokens" in printed["model_flops_formula"]
    assert printed["mfu"] is None  # no peak FLOPs for a CPU unless --peak-tflops
    assert printed["matmul_tflops_measured"] > 0 and 256 <= printed["matmul_size"] <= 4096
    achieved = printed["model_flops_per_step"] / printed["step_seconds_median"] / 1e12
    assert printed["fraction_of_measured_matmul"] == pytest.approx(achieved / printed["matmul_tflops_measured"])


def test_llava_7b_config_has_7b_parameters_and_lora_trains_lm_adapters_and_projector():
    config = llava_config("llava-1.5-7b")
    assert config.image_seq_length == 576 and config.vision_feature_layer == -2
    model = build_model(config, "meta", torch.bfloat16)  # shapes only: no memory
    total = sum(p.numel() for p in model.parameters())
    assert 6.9e9 < total < 7.2e9
    parts = count_params(apply_lora(model, LoraSettings()))
    # r=16 on the 7 projections of 32 Llama layers, plus the full projector (1024->4096->4096)
    assert parts["lora"] == 32 * 16 * (4 * 2 * 4096 + 3 * (4096 + 11008))
    assert parts["trainable"] == parts["lora"] + parts["projector"] == parts["lora"] + 20_979_712
    assert parts["total"] == total + parts["lora"]
