"""A stage's launcher comes from its params and runs inside the command DVC runs: `dvc repro` of a
tiny tune under torchrun with two gloo processes trains the one-process weights, and dvc.lock
records the launch it ran with."""
import shutil

import pytest
import yaml

from reverie.launch import launcher_command
from reverie.settings import LaunchSettings
from tests.conftest import ROOT, dvc


def test_the_launcher_commands_run_the_same_module_and_arguments():
    torchrun = launcher_command(LaunchSettings(launcher="torchrun", processes=4, port=29511), "stages.tune",
                                ["--variant", "pos", "--seed", "0"], python="py")
    assert torchrun == ["py", "-m", "torch.distributed.run", "--nproc-per-node=4", "--master-port=29511",
                        "-m", "stages.tune", "--variant", "pos", "--seed", "0"]
    config = str(ROOT / "configs/accelerate/multi_gpu.yaml")
    accelerate = launcher_command(LaunchSettings(launcher="accelerate", processes=8, accelerate_config=config,
                                                 port=29512), "stages.base", [], python="py")
    assert accelerate == ["py", "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", "8",
                          "--main_process_port", "29512", "-m", "stages.base"]
    assert launcher_command(LaunchSettings(), "stages.tune", ["--seed", "0"]) is None


def test_launch_settings_that_cannot_run_are_refused():
    with pytest.raises(ValueError, match="needs a launcher"):
        LaunchSettings(processes=2)
    with pytest.raises(ValueError, match="needs accelerate_config"):
        LaunchSettings(launcher="accelerate", processes=2)


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_dvc_repro_of_a_tune_under_torchrun_with_two_processes_trains_the_one_process_weights(repro_project,
                                                                                               tmp_path):
    import torch

    project, _ = repro_project
    copy = tmp_path / "clone"
    shutil.copytree(project, copy, symlinks=True)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["tune"]["launch"] = {"launcher": "torchrun", "processes": 2, "accelerate_config": None, "port": None}
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc(copy, "status", "tune@response-0").stdout
    assert "tune.launch" in status  # a declared param: the launch is part of what the stage depends on
    done = dvc(copy, "repro", "--single-item", "tune@response-0")
    assert "[launch] -m torch.distributed.run --nproc-per-node=2" in done.stdout + done.stderr
    metrics = yaml.safe_load((copy / "metrics/tune/response-s0.json").read_text())
    assert metrics["processes"] == 2
    lock = yaml.safe_load((copy / "dvc.lock").read_text())["stages"]["tune@response-0"]
    assert lock["params"]["params.yaml"]["tune.launch"]["processes"] == 2
    one, two = weights(project / "models/response-s0"), weights(copy / "models/response-s0")
    assert one.keys() == two.keys()
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    scale = max(one[k].abs().max().item() for k in one)
    print(f"\nlargest weight difference, 2 gloo processes against 1: {worst:.2e} (largest weight {scale:.2e})")
    assert all(torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-5) for k in one), worst
