"""How a training stage's processes start, from its params (`base.launch`, `tune.launch`): one
process, `torchrun`, or `accelerate launch` with one of configs/accelerate/*.

DVC runs the stage command (`python -m stages.tune ...`) as always; the stage reads its params
and, when they name a launcher and it is not yet one of the launcher's processes, replaces itself
(exec: the same process DVC waits for) with the launcher running the same module and arguments.
So a multi-process run happens under DVC's lock, its outputs are recorded in dvc.lock and the
launch settings are a declared param of the stage: `dvc repro` redoes nothing a launcher ran."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

# set in every process a launcher starts (torchrun and accelerate both set it)
RANK_ENV = "LOCAL_RANK"
# the devices a stage may use; the flow sets it per stage (reverie.orchestration.StageQueue)
DEVICES_ENV = "CUDA_VISIBLE_DEVICES"


def free_port() -> int:
    """A free TCP port for the launcher's rendezvous: two launched stages side by side on one
    node must not both take the default one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_command(launch, module: str, args: list[str], python: str = sys.executable) -> list[str] | None:
    """The command that runs `python -m module args` as `launch` says, or None to run it as is."""
    if launch.launcher == "plain":
        return None
    if launch.launcher == "torchrun":
        return [python, "-m", "torch.distributed.run", f"--nproc-per-node={launch.processes}",
                f"--master-port={launch.port or free_port()}", "-m", module, *args]
    config = Path(launch.accelerate_config)
    return [python, "-m", "accelerate.commands.launch", "--config_file", str(config),
            "--num_processes", str(launch.processes), "--main_process_port", str(launch.port or free_port()),
            "-m", module, *args]


def launched() -> bool:
    return RANK_ENV in os.environ


def relaunch(launch, module: str) -> None:
    """Becomes the launcher of this very command when `launch` names one and this process is not
    already one of its ranks; returns otherwise (the stage runs here)."""
    if launched():
        return
    cmd = launcher_command(launch, module, sys.argv[1:])
    if cmd is None:
        return
    print(f"[launch] {' '.join(cmd[1:])}", flush=True)
    sys.stderr.flush()
    os.execv(cmd[0], cmd)
