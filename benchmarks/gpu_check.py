"""One prepared GPU check: the project's GPU path end to end, in one command, inside a time budget.

    python -m benchmarks.gpu_check [--budget-s 540] [--skip-install] [--keep DIR]
    python -m benchmarks.gpu_check --dry-run       # CPU: the same steps at the tiny shape (a test runs it)

Steps, each timed and reported; the first failure stops the check, and the JSON line is printed
all the same (`ok: false`, the step that failed and the tail of its error):

1. `install`: unless `--dry-run`, `--skip-install` or torch already sees CUDA, the CUDA build of
   torch (`pip install --no-deps --force-reinstall torch==<the lock's version> --index-url
   https://download.pytorch.org/whl/cu128`, docs/real-data-and-gpus.md) into this interpreter's
   environment, then a fresh import of it; if that import misses the CUDA libraries (the
   `nvidia-*` wheels that `--no-deps` leaves out), the same pip command without `--no-deps` and
   `--force-reinstall` fills them in. Then the check starts itself again in a fresh interpreter
   (the new torch must be imported fresh). It refuses to touch the environment when no NVIDIA
   GPU is visible (no `nvidia-smi`, no /dev/nvidia0): a CPU machine keeps its CPU build.
   `--find-links DIR` installs from wheels in DIR (a machine without network). The dry run
   reports the command it would run.
2. `gpu_step`: `python -m benchmarks.gpu_step` in a subprocess: the 7B shape with random weights
   on the GPU (global batch 32 = two micro-batches of 16 x 2048 tokens, one warm-up and two
   timed steps; `--gpu-step-args` replaces these), `--arch tiny` with one warm-up and one timed
   step in the dry run. Its last JSON line gives step time, tokens/s, peak memory and MFU.
3. `pipeline`: a tiny real-shaped LLaVA project (the real LLaVA architecture at the tiny
   student's size, one variant `response`, one seed, a few images) built in a temporary folder
   and run by `dvc repro evaluate@response-0` (generate, validate, base, tune, evaluate) through
   the project's DVC, with bf16 (base.precision, tune.precision) on the GPU and in the dry run
   too (CPU autocast). It reports each stage's wall time (from DVC's "Running stage" lines),
   the training throughput of base and tune, the evaluate metrics (POPE F1 ...), and the
   device each stage's model ran on: training takes the GPU whenever the stage's interpreter
   sees one (`reverie.student.train.train` through accelerate); decoding runs where
   `reverie.student.model.load_tuned` puts the model (the same GPU). On the GPU, `nvidia-smi` is polled
   during the run and the stage processes seen holding GPU memory are listed.
4. `batch_equivalence`: the tuned model of that project (`load_tuned`, as evaluate loads it)
   answers the project's own evaluation questions (`reverie.evaluation.run.benchmark_items`)
   greedily (`reverie.evaluation.decode.Answerer`) at batch size 1 and at `evaluate.batch_size`;
   the answer strings are compared. A student trained this briefly gives one answer to every
   question, which no batching could change, so a copy with weight noise (`PERTURB` standard
   deviations of each matrix), whose answers differ from question to question, is compared
   the same way; the step fails when neither gives two distinct answers. On the GPU the models
   sit where the evaluate stage puts them (`load_tuned`: the GPU when one is visible, else the
   CPU) in `evaluate.precision` (bf16 here, on the GPU and in the dry run alike). It passes only
   on 0 mismatches. In bf16 the
   padding of a batch can legitimately change an answer (other kernels, other rounding, a near
   tie flipped): the check reports that as a failure all the same, with the exact count and the
   first differing answers, rather than passing on a tolerance. It also counts how many of the
   evaluate stage's own predictions (decoded by the stage at `evaluate.batch_size`) differ from
   the batch-1 answers here (0 expected where both ran on the same device in the same dtype).
5. `gpu_use`: every stage that trains or decodes a model ran it on the expected device (the
   GPU; in a dry run on a CPU machine, the CPU). Training (base, tune) takes the GPU through
   accelerate; the evaluate stage decodes where `load_tuned` puts the model (the GPU when the
   stage sees one).

`--budget-s` (default 540) stops before a step whose estimated time (a constant per step and
mode, below) would not fit in what is left, and says so; the subprocesses get what is left as
their time-out. Human-readable progress goes to stderr; the last (only) stdout line is one JSON
object: {"check": "gpu_check", "dry_run", "ok", "device", "torch", "steps": {name: {"ok",
"seconds", ...figures}}, "total_seconds"}. Exit status 0 when ok, 1 otherwise.

Not part of `make test`; its dry run is (tests/test_gpu_check.py).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
TARGET = "evaluate@response-0"
STEPS = ("install", "gpu_step", "pipeline", "batch_equivalence", "gpu_use")
# seconds a step is expected to take at most (the budget stops before a step that would not
# fit): GPU figures estimated for an H100 machine with a fast network (the torch wheel and its
# CUDA libraries are about 3 GB), dry-run figures measured on 2 shared CPU cores, with margin
ESTIMATES = {False: {"install": 240.0, "gpu_step": 150.0, "pipeline": 150.0, "batch_equivalence": 30.0, "gpu_use": 1.0},
             True: {"install": 0.0, "gpu_step": 30.0, "pipeline": 90.0, "batch_equivalence": 20.0, "gpu_use": 1.0}}
GPU_STEP_ARGS = {False: ["--global-batch", "32", "--steps", "2", "--warmup", "1"],
                 True: ["--arch", "tiny", "--steps", "1", "--warmup", "1"]}
GPU_STEP_KEEP = ("arch", "device", "precision", "global_batch", "micro_batch", "seq", "tokens_per_step",
                 "step_seconds_median", "tokens_per_s", "peak_memory_bytes", "peak_memory_gib", "peak_memory_source",
                 "mfu", "mfu_lora", "achieved_tflops", "peak_tflops", "matmul_tflops_measured",
                 "total_params", "trainable_params", "attn_implementation", "loss_first", "loss_last")
EVAL_KEEP = ("pope.random.f1", "pope.popular.f1", "pope.adversarial.f1", "pope.mean_f1", "pope.random.accuracy",
             "pope.random.yes_ratio", "mme.score", "mmbench.circular_accuracy", "short_answer.accuracy",
             "reasoning.accuracy", "questions", "questions_per_s", "threads")
TRAIN_KEEP = ("steps", "train_loss", "tokens_per_s", "samples_per_s", "train_seconds", "processes",
              "heldout_yes_no_accuracy", "heldout_existence_accuracy", "threads")
PERTURB = 4.0  # batch_equivalence's second model: weight noise, in standard deviations of each matrix
# the project at the tiny shape: a world, teacher, base, one variant and evaluation that finish in
# about a minute on 2 CPU cores (the tests' tiny config, smaller still)
TINY = {
    "world": {"train_images": 40, "eval_images": 8},
    "generate": {"questions_per_image": 4, "noise_rate": 0.1},
    "validate": {"min_records": 10},
    "base": {"epochs": 1, "batch_size": 16, "checkpoint_every": 50, "vision_epochs": 1, "check_images": 4,
             "describe_check_images": 2, "min_seeing_accuracy": 0.0, "precision": "bf16",
             "model": {"vision_hidden": 32, "text_hidden": 32, "intermediate": 64, "vision_layers": 1,
                       "text_layers": 1, "vocab_size": 300, "vision_heads": 2, "text_heads": 2}},
    "tune": {"variants": ["response"], "seeds": [0], "epochs": 0.3, "batch_size": 16, "quick_eval_images": 4,
             "precision": "bf16", "lora": {"r": 4, "alpha": 8}},
    "evaluate": {"eval_images": 4, "batch_size": 16, "max_new_tokens": 4, "precision": "bf16"},
    "report": {"bootstrap_replicates": 100},
}
# on the GPU: params.yaml's own tiny student (base.model) and a few more images; the rest as above
GPU = {"world": {"train_images": 60, "eval_images": 16}, "evaluate": {"eval_images": 8}}


def log(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def tail(text: str, n: int = 2000) -> str:
    return text[-n:]


class StepFailed(Exception):
    """A step that ran but failed its check; `figures` are reported with the failure."""

    def __init__(self, message: str, figures: dict | None = None):
        super().__init__(message)
        self.figures = figures or {}


class OutOfBudget(Exception):
    pass


@dataclass
class Step:
    name: str
    run: Callable[[dict], dict | None]  # the shared context -> figures
    estimate_s: float


def run_steps(steps: list[Step], budget_s: float, started: float, ctx: dict,
              fail_step: str | None = None) -> tuple[bool, dict]:
    """Runs `steps` in order, timing each; stops at the first failure (an exception, a
    StepFailed with its figures) and before a step whose estimate does not fit in what is left
    of `budget_s` (counted from `started`, a time.time()). Returns (ok, {name: report})."""
    results: dict[str, dict] = dict(ctx.get("done", {}))
    for step in steps:
        if step.name in results:  # done before a re-exec (install)
            continue
        left = budget_s - (time.time() - started)
        if step.estimate_s > left:
            message = (f"budget: {left:.0f} s left of --budget-s {budget_s:.0f}, and {step.name} is estimated at "
                       f"{step.estimate_s:.0f} s: not started")
            log(message)
            results[step.name] = {"ok": False, "seconds": 0.0, "skipped": True, "error": message}
            return False, results
        log(f"{step.name}: start ({left:.0f} s of the budget left)")
        ctx["deadline"] = started + budget_s
        t0 = time.perf_counter()
        try:
            if fail_step == step.name:
                raise RuntimeError(f"--fail-step {step.name}: a failure asked for")
            figures = step.run(ctx) or {}
        except StepFailed as exc:
            results[step.name] = {"ok": False, "seconds": round(time.perf_counter() - t0, 3), **exc.figures,
                                  "error": tail(str(exc))}
        except Exception:  # noqa: BLE001 - any failure of a step is reported, not raised
            results[step.name] = {"ok": False, "seconds": round(time.perf_counter() - t0, 3),
                                  "error": tail(traceback.format_exc())}
        else:
            results[step.name] = {"ok": True, "seconds": round(time.perf_counter() - t0, 3), **figures}
        status = "ok" if results[step.name]["ok"] else "FAILED: " + results[step.name]["error"].strip().splitlines()[-1]
        log(f"{step.name}: {status} ({results[step.name]['seconds']:.1f} s)")
        if not results[step.name]["ok"]:
            return False, results
    return True, results


def time_left(ctx: dict, floor: float = 5.0) -> float:
    """Seconds a subprocess may take: what is left of the budget (at least `floor`)."""
    return max(floor, ctx["deadline"] - time.time())


def run_command(cmd: list[str], ctx: dict, cwd: Path | None = None, env: dict | None = None,
                on_line: Callable[[str], None] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`cmd` with the budget's time-out, output captured (and each line passed to `on_line` as it
    comes, with stdout and stderr merged); StepFailed with the output's tail when it times out,
    or (with `check`) when it fails."""
    timeout = time_left(ctx)
    log("$ " + " ".join(shlex.quote(c) for c in cmd) + (f"   (in {cwd})" if cwd else ""))
    if on_line is None:
        try:
            result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            err = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
            raise StepFailed(f"timed out after {timeout:.0f} s (the budget): {cmd[:4]}\n{tail(out + err)}") from None
    else:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, start_new_session=True)  # a time-out ends the stages it started too
        lines: list[str] = []
        killed = threading.Event()
        timer = threading.Timer(timeout, lambda: (killed.set(), os.killpg(proc.pid, signal.SIGKILL)))
        timer.start()
        try:
            for line in proc.stdout:
                lines.append(line)
                on_line(line)
            proc.wait()
        finally:
            timer.cancel()
        if killed.is_set():
            raise StepFailed(f"timed out after {timeout:.0f} s (the budget): {cmd[:4]}\n{tail(''.join(lines))}")
        result = subprocess.CompletedProcess(cmd, proc.returncode, "".join(lines), "")
    if check and result.returncode != 0:
        raise StepFailed(f"{' '.join(cmd[:6])} exited with {result.returncode}:\n"
                         f"{tail(result.stdout, 1500)}\n{tail(result.stderr, 1500)}")
    return result


# ---------------------------------------------------------------------------------------------
# 1. install

def locked_torch_version() -> str:
    """torch's version in requirements.lock (its CPU build), without the local label."""
    lock = ROOT / "requirements.lock"
    if lock.exists():
        m = re.search(r"^torch==([^\s+;]+)", lock.read_text(), re.M)
        if m:
            return m.group(1)
    from importlib.metadata import version

    return version("torch").split("+")[0]


def install_commands(find_links: str | None) -> tuple[list[str], list[str]]:
    """The documented install of the CUDA build, and the one that adds its CUDA libraries."""
    source = ["--no-index", "--find-links", find_links] if find_links else ["--index-url", CUDA_INDEX]
    spec = f"torch=={locked_torch_version()}"
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    return pip + ["--no-deps", "--force-reinstall", spec] + source, pip + [spec] + source


def gpu_visible() -> str | None:
    """What shows an NVIDIA GPU here (without torch), or None."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and "GPU" in out.stdout:
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return "/dev/nvidia0" if Path("/dev/nvidia0").exists() else None


PROBE = "import json, torch; print(json.dumps({'torch': torch.__version__, 'cuda': torch.cuda.is_available()}))"


def probe_torch() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)


def step_install(ctx: dict) -> dict:
    args = ctx["args"]
    first, fill = install_commands(args.find_links)
    figures = {"command": " ".join(shlex.quote(c) for c in first)}
    if args.dry_run:
        return figures | {"action": "dry run: not installed"}
    if args.skip_install:
        return figures | {"action": "--skip-install"}
    import torch

    if torch.cuda.is_available():
        return figures | {"action": f"torch {torch.__version__} already sees CUDA: not installed"}
    seen = gpu_visible()
    if seen is None:
        raise StepFailed("no NVIDIA GPU is visible here (no nvidia-smi -L, no /dev/nvidia0): the CPU build of torch "
                         "is left as it is. Run the check on a GPU machine, or `--dry-run` on a CPU", figures)
    figures["gpu"] = seen
    run_command(first, ctx)
    probe = probe_torch()
    if probe.returncode != 0:
        # the CUDA wheel loads its CUDA libraries from the nvidia-* wheels, which --no-deps skipped
        log("the fresh torch does not import:\n" + tail(probe.stderr, 800) + "\nadding its dependencies")
        figures["dependencies_command"] = " ".join(shlex.quote(c) for c in fill)
        run_command(fill, ctx)
        probe = probe_torch()
    if probe.returncode != 0:
        raise StepFailed(f"the installed torch does not import:\n{tail(probe.stderr)}", figures)
    seen_torch = json.loads(probe.stdout.strip().splitlines()[-1])
    figures |= {"torch_installed": seen_torch["torch"], "action": "installed"}
    if not seen_torch["cuda"]:
        raise StepFailed(f"torch {seen_torch['torch']} was installed but sees no CUDA device "
                         "(driver too old for cu128?)", figures)
    ctx["reexec"] = True
    return figures


def reexec(argv: list[str], started: float, done: dict) -> None:
    """Starts this check again in a fresh interpreter (the installed torch imported anew), with
    the install step's report and the start time."""
    env = dict(os.environ, GPU_CHECK_STARTED=repr(started), GPU_CHECK_DONE=json.dumps(done))
    argv = [sys.executable, "-m", "benchmarks.gpu_check", *argv, "--skip-install"]
    log("starting again in a fresh interpreter: " + " ".join(argv[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(ROOT)
    os.execve(sys.executable, argv, env)


# ---------------------------------------------------------------------------------------------
# 2. gpu_step

def step_gpu_step(ctx: dict) -> dict:
    args = ctx["args"]
    extra = shlex.split(args.gpu_step_args) if args.gpu_step_args is not None else GPU_STEP_ARGS[args.dry_run]
    # its JSON line is read whatever the exit status: an out-of-memory or no-GPU answer is one too
    result = run_command([sys.executable, "-m", "benchmarks.gpu_step", *extra], ctx, cwd=ROOT, env=child_env(),
                         check=False)
    lines = [line for line in result.stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise StepFailed(f"benchmarks.gpu_step exited with {result.returncode} and printed no JSON line:\n"
                         f"{tail(result.stdout, 1000)}\n{tail(result.stderr, 1500)}")
    out = json.loads(lines[-1])
    figures = {k: out.get(k) for k in GPU_STEP_KEEP if k in out} | {"args": " ".join(extra)}
    if "error" in out or result.returncode != 0:
        raise StepFailed(f"benchmarks.gpu_step (exit {result.returncode}): {out.get('error', tail(result.stderr))}",
                         figures)
    if not out.get("tokens_per_s", 0) > 0:
        raise StepFailed("benchmarks.gpu_step reported no throughput", figures)
    if not args.dry_run and not out.get("gpu"):
        raise StepFailed("benchmarks.gpu_step did not run on the GPU", figures)
    return figures


# ---------------------------------------------------------------------------------------------
# 3. pipeline

def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GX_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", TOKENIZERS_PARALLELISM="false",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own store (params), not one leaked from outside
    env.pop("REVERIE_WARM_SOCKET", None)
    return env | (extra or {})


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def project_params(project: Path, dry_run: bool) -> dict:
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    tiny = merge(copy.deepcopy(TINY), {} if dry_run else GPU)
    if not dry_run:
        del tiny["base"]["model"]  # params.yaml's own tiny student
    params = merge(params, tiny)
    params["project"]["mlflow_tracking_uri"] = f"sqlite:///{project / 'mlflow.db'}"
    return params


def make_project(dest: Path, params: dict) -> Path:
    """A runnable copy of the project (code, dvc.yaml, these params) in its own git + DVC repo,
    its stages running this interpreter (tests/conftest.py builds its projects alike)."""
    import yaml

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, dest / name)
    for name in ("stages", "flows", "mix", "reverie"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "eval_data").mkdir()
    shutil.copy(ROOT / "eval_data" / "README.md", dest / "eval_data" / "README.md")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    venv = dest / ".venv"  # what `make install` leaves: the vars file naming the stages' interpreter
    venv.mkdir()
    (venv / "run-make-install.yaml").write_text(f"python: {sys.executable}\n")
    env = child_env({"GIT_AUTHOR_NAME": "gpu_check", "GIT_AUTHOR_EMAIL": "gpu_check@localhost",
                     "GIT_COMMITTER_NAME": "gpu_check", "GIT_COMMITTER_EMAIL": "gpu_check@localhost"})
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "config", "core.analytics", "false"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "gpu_check project"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True, text=True)
    return dest


class GpuWatcher:
    """Polls `nvidia-smi` for the processes holding GPU memory while the stages run, and names the
    DVC stage of each (from its command line); does nothing without nvidia-smi."""

    def __init__(self, interval_s: float = 0.5):
        self.interval = interval_s
        self.seen: dict[str, float] = {}  # stage -> peak MiB
        self.polls = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def __enter__(self):
        if self.available:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.available:
            self.thread.join(timeout=10)

    def _loop(self):
        while not self.stop.wait(self.interval):
            try:
                out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            self.polls += 1
            for line in out.strip().splitlines():
                try:
                    pid, mib = (part.strip() for part in line.split(","))
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                except (ValueError, OSError):
                    continue
                name = next((c.removeprefix("stages.") for c in cmdline if c.startswith("stages.")), None)
                if name is None:
                    continue
                if "--variant" in cmdline:
                    i = cmdline.index("--variant")
                    seed = cmdline[cmdline.index("--seed") + 1] if "--seed" in cmdline else "?"
                    name = f"{name}@{cmdline[i + 1]}-{seed}"
                try:
                    self.seen[name] = max(self.seen.get(name, 0.0), float(mib))
                except ValueError:
                    self.seen.setdefault(name, 0.0)


def stage_times(stamps: list[tuple[str, float]], end: float) -> dict[str, float]:
    """Each stage's wall time: from its "Running stage" line to the next one (the last: to `end`)."""
    out = {}
    for (name, t), (_, t_next) in zip(stamps, stamps[1:] + [("", end)]):
        out[name] = round(t_next - t, 2)
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def step_pipeline(ctx: dict) -> dict:
    args = ctx["args"]
    project = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="reverie-gpu-check-"))
    if args.keep and project.exists() and any(project.iterdir()):
        raise StepFailed(f"--keep {project}: the folder exists and is not empty")
    params = project_params(project, args.dry_run)
    make_project(project, params)
    ctx["project"] = project
    figures: dict = {"project": str(project), "target": TARGET,
                     "precision": {"base": params["base"]["precision"], "tune": params["tune"]["precision"],
                                   "evaluate": params["evaluate"]["precision"]},
                     "model": params["base"]["model"] | {"image_size": params["world"]["image_size"]},
                     "images": {"train": params["world"]["train_images"], "eval": params["world"]["eval_images"]}}
    stamps: list[tuple[str, float]] = []

    def on_line(line: str) -> None:
        m = re.match(r"Running stage '([^']+)'", line.strip())
        if m:
            stamps.append((m.group(1), time.perf_counter()))
            log(f"  stage {m.group(1)}")

    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=child_env(), timeout=300)
    stage_cuda = probe.returncode == 0 and json.loads(probe.stdout.strip().splitlines()[-1])["cuda"]
    with GpuWatcher() as watcher:
        t0 = time.perf_counter()
        try:
            run_command([sys.executable, "-m", "dvc", "repro", TARGET], ctx, cwd=project, env=child_env(),
                        on_line=on_line)
        except StepFailed as exc:
            figures["stage_seconds"] = stage_times(stamps, time.perf_counter())
            raise StepFailed(str(exc), figures) from None
        end = time.perf_counter()
    figures["repro_seconds"] = round(end - t0, 2)
    figures["stage_seconds"] = stage_times(stamps, end)
    expected = {"generate", "validate", "base", "tune@response-0", TARGET}
    if not expected <= set(figures["stage_seconds"]):
        raise StepFailed(f"dvc repro ran {sorted(figures['stage_seconds'])}, not every one of {sorted(expected)}",
                         figures)
    evaluation = read_json(project / "metrics" / "eval" / "response-s0.json")
    if not evaluation:
        raise StepFailed("no metrics/eval/response-s0.json after the repro", figures)
    figures["evaluate"] = {k: evaluation[k] for k in EVAL_KEEP if k in evaluation}
    for name, path in (("base", project / "metrics" / "base.json"), ("tune", project / "metrics" / "tune" / "response-s0.json")):
        m = read_json(path)
        figures[name] = {k: m[k] for k in TRAIN_KEEP if k in m}
    # where each stage's model ran: train() takes the GPU whenever the stage's interpreter sees
    # CUDA (accelerate); decoding runs on the device load_tuned leaves the model on (checked in
    # batch_equivalence, which loads it as evaluate does)
    train_device = "cuda" if stage_cuda else "cpu"
    ctx["train_device"] = train_device
    figures["stage_interpreter_sees_cuda"] = bool(stage_cuda)
    figures["train_device"] = train_device
    if watcher.available:
        figures["gpu_processes"] = {"polls": watcher.polls, "stages_on_gpu_mib": watcher.seen}
        ctx["gpu_processes"] = watcher.seen
    return figures


# ---------------------------------------------------------------------------------------------
# 4. batch_equivalence

def perturbed(model, scale: float, seed: int = 0):
    """A copy of `model` with Gaussian noise of `scale` times each weight matrix's standard
    deviation added (benchmarks/evaluation.py's device): its answers depend on the image and the
    question far more than a barely trained tiny student's, which answers nearly everything alike."""
    import torch

    noisy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in noisy.parameters():
            if p.ndim >= 2:
                p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale * p.std())
    return noisy


def compare_batches(model, processor, root: Path, questions, batch: int, max_new_tokens: int) -> tuple[dict, list[str]]:
    """Greedy answers at batch size 1 and at `batch` on the same questions: figures, the
    differing answers, and the batch-1 answers."""
    from reverie.evaluation.decode import Answerer

    answerer = Answerer(model, processor, root, max_new_tokens)
    t0 = time.perf_counter()
    single = answerer.answer(questions, batch_size=1, progress=False, desc="batch 1")
    t1 = time.perf_counter()
    batched = answerer.answer(questions, batch_size=batch, progress=False, desc=f"batch {batch}")
    t2 = time.perf_counter()
    differ = [{"qid": q.qid, "question": q.text, "batch1": a, f"batch{batch}": b}
              for q, a, b in zip(questions, single, batched) if a != b]
    figures = {"mismatches": len(differ), "distinct_answers": len(set(single)),
               "batch1_seconds": round(t1 - t0, 3), "batched_seconds": round(t2 - t1, 3),
               "speedup": round((t1 - t0) / (t2 - t1), 2) if t2 > t1 else None}
    if differ:
        figures["differing"] = differ[:5]
    return figures, single


def step_batch_equivalence(ctx: dict) -> dict:
    import torch

    from reverie.evaluation.decode import Question
    from reverie.evaluation.run import benchmark_items
    from reverie.io import read_jsonl
    from reverie.settings import load_params
    from reverie.student.model import load_tuned

    project = ctx["project"]
    params = load_params(project / "params.yaml")
    cwd = os.getcwd()
    os.chdir(project)  # the params' relative paths (suites root) resolve against the project
    try:
        items, _ = benchmark_items(params, "data", "data/split", train=False)
        model, processor, _ = load_tuned(project / "models" / "response-s0", params.evaluate.precision)
    finally:
        os.chdir(cwd)
    if not items:
        raise StepFailed("the project has no evaluation questions")
    loaded = next(model.parameters())
    ctx["decode_device"] = loaded.device.type  # where evaluate's load_tuned leaves the model
    figures: dict = {"stage_decode_device": loaded.device.type,
                     "stage_decode_dtype": str(loaded.dtype).removeprefix("torch.")}
    # where and in what precision the evaluate stage answers: its GPU, evaluate.precision
    models = {"tuned": model, "perturbed": perturbed(model, PERTURB)}
    torch.set_num_threads(params.evaluate.threads)
    param = next(models["tuned"].parameters())
    batch = params.evaluate.batch_size
    questions = [Question(it.qid, it.image, it.question) for it in items]
    figures |= {"device": param.device.type, "dtype": str(param.dtype).removeprefix("torch."),
                "questions": len(questions), "distinct_questions": len({(q.image, q.text) for q in questions}),
                "batch_size": batch, "perturb_std": PERTURB, "models": {}}
    answers = {}
    for name, m in models.items():
        figures["models"][name], answers[name] = compare_batches(m, processor, project / "data", questions, batch,
                                                                 params.evaluate.max_new_tokens)
    figures["mismatches"] = sum(f["mismatches"] for f in figures["models"].values())
    # the evaluate stage's own answers (decoded by the stage at evaluate.batch_size) against the
    # tuned model's batch-1 answers here: equal when both ran on the same device in the same dtype
    stage_rows = {r["qid"]: r["answer"] for r in read_jsonl(project / "predictions" / "response-s0.jsonl")}
    mine = {q.qid: a for q, a in zip(questions, answers["tuned"])}
    shared = set(stage_rows) & set(mine)
    figures["stage_predictions_compared"] = len(shared)
    figures["stage_predictions_mismatches"] = sum(stage_rows[q] != mine[q] for q in shared)
    if figures["mismatches"]:
        raise StepFailed(f"{figures['mismatches']} answers at batch size {batch} differ from batch size 1 "
                         f"({figures['device']}, {figures['dtype']}): "
                         + ", ".join(f"{n} {f['mismatches']} of {len(questions)}" for n, f in figures["models"].items()),
                         figures)
    if max(f["distinct_answers"] for f in figures["models"].values()) < 2:
        raise StepFailed("every model gave one answer to every question: equal answers prove nothing", figures)
    return figures


# ---------------------------------------------------------------------------------------------
# 5. gpu_use

def step_gpu_use(ctx: dict) -> dict:
    import torch

    # the dry run on a GPU machine trains there too
    expected = "cuda" if not ctx["args"].dry_run or torch.cuda.is_available() else "cpu"
    devices = {"base (train)": ctx.get("train_device"), "tune (train)": ctx.get("train_device"),
               "evaluate (decode)": ctx.get("decode_device")}
    figures = {"expected": expected, "devices": devices}
    if "gpu_processes" in ctx:
        figures["stages_seen_on_gpu"] = sorted(ctx["gpu_processes"])
    wrong = {k: v for k, v in devices.items() if v != expected}
    if wrong:
        hint = (" evaluate loads the tuned model with reverie.student.model.load_tuned, which puts it on "
                "inference_device(): was CUDA visible to the stage?" if wrong.get("evaluate (decode)") == "cpu" else "")
        raise StepFailed(f"not on {expected}: {wrong}.{hint}", figures)
    return figures


# ---------------------------------------------------------------------------------------------

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU: the same steps at the tiny shape, nothing installed")
    p.add_argument("--skip-install", action="store_true", help="use the torch installed here as it is")
    p.add_argument("--find-links", default=None, help="install the CUDA torch from the wheels in this folder (no index)")
    p.add_argument("--budget-s", type=float, default=540.0, help="stop before a step that would not finish in time")
    p.add_argument("--gpu-step-args", default=None, help="arguments for benchmarks.gpu_step, replacing the defaults")
    p.add_argument("--keep", default=None, help="build the pipeline's project in this (new or empty) folder and keep it "
                   "(default: a temporary folder, removed when the check passes)")
    p.add_argument("--fail-step", choices=STEPS, default=None, help=argparse.SUPPRESS)  # tests: a step that fails
    return p.parse_args(argv)


def device_name() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def main(argv=None) -> int:
    args = parse(argv)
    started = float(os.environ.pop("GPU_CHECK_STARTED", time.time()))
    done = json.loads(os.environ.pop("GPU_CHECK_DONE", "{}"))
    est = ESTIMATES[args.dry_run]
    ctx: dict = {"args": args, "done": done}
    steps = [Step("install", step_install, est["install"]), Step("gpu_step", step_gpu_step, est["gpu_step"]),
             Step("pipeline", step_pipeline, est["pipeline"]),
             Step("batch_equivalence", step_batch_equivalence, est["batch_equivalence"]),
             Step("gpu_use", step_gpu_use, est["gpu_use"])]
    ok, results = run_steps(steps[:1], args.budget_s, started, ctx, args.fail_step)
    if ok and ctx.get("reexec"):
        reexec(sys.argv[1:] if argv is None else list(argv), started, results)  # does not return
    if ok:
        ctx["done"] = results
        ok, results = run_steps(steps, args.budget_s, started, ctx, args.fail_step)
    try:
        import torch

        version, device = torch.__version__, device_name()
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
        version, device = None, f"unknown ({exc})"
    if ok and ctx.get("project") and not args.keep:  # a failed check's project stays, for a look
        shutil.rmtree(ctx["project"], ignore_errors=True)
        results["pipeline"]["project"] += " (removed)"
    failed = next((name for name, r in results.items() if not r["ok"]), None)
    out = {"check": "gpu_check", "dry_run": args.dry_run, "ok": ok, "device": device, "torch": version,
           "failed_step": failed, "not_run": [s.name for s in steps if s.name not in results],
           "steps": results, "total_seconds": round(time.time() - started, 2), "budget_s": args.budget_s}
    log(("OK" if ok else f"FAILED at {failed}") + f" in {out['total_seconds']:.1f} s")
    print(json.dumps(out, default=str), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
