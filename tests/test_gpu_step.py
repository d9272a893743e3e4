"""The GPU step benchmark: it drives the project's training function with the 7B profile's
recipe; a CPU run of the tiny shape, the no-GPU answer, and the LLaVA-1.5-7B config's size."""
import json

import pytest
import torch

from benchmarks.gpu_step import build_model, count_params, llava_config, main, parse, recipe
from reverie.settings import LoraSettings
from reverie.tuning import apply_lora


def test_the_recipe_is_the_7b_profiles():
    tune = recipe(parse([]))
    assert (tune.lora.r, tune.lora.alpha, tune.lr, tune.epochs) == (128, 256, 2e-4, 1)
    assert (tune.batch_size, tune.max_length, tune.precision, tune.gradient_checkpointing) == (128, 2048, "bf16", True)


def test_tiny_shape_on_cpu_runs_train_with_the_recipe_and_reports_positive_figures(capsys, tmp_path):
    result = main(["--arch", "tiny", "--steps", "1", "--warmup", "1", "--write", str(tmp_path / "step.json")])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(result))
    # the file the plan reads its measured throughput from (plan.throughput_file)
    assert json.loads((tmp_path / "step.json").read_text()) == printed | {"devices": 1}
    assert "error" not in printed and printed["training_function"] == "reverie.student.train.train"
    assert (printed["precision"], printed["grad_checkpointing"], printed["lora"]["r"]) == ("bf16", True, 128)
    assert printed["global_batch"] == 4 and printed["micro_batch"] == 2 and printed["accumulation_passes"] == 2
    assert printed["tokens_per_step"] == 4 * 64 and printed["seq"] == 64
    assert printed["step_seconds_median"] > 0 and printed["tokens_per_s"] > 0 and printed["peak_memory_bytes"] > 0
    assert 0 < printed["trainable_params"] < printed["total_params"]
    assert printed["model_flops_per_step"] == 6 * printed["total_params"] * 4 * 64
    assert printed["mfu"] is None  # no peak FLOPs for a CPU unless --peak-tflops
    assert printed["loss_first"] == printed["loss_first"]  # not NaN


def test_without_a_gpu_the_7b_profile_says_so_and_runs_nothing(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = main([])
    assert result["gpu"] is False and "no CUDA GPU" in result["error"]
    assert "NO GPU" in capsys.readouterr().err


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
