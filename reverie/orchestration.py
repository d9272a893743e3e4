"""What the Prefect flow needs and that is not Prefect: which DVC stages to run (asked of DVC
once), the `dvc repro` command line, and params overrides written the way `dvc exp run -S`
writes them."""
from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .settings import load_params
from .workspace import dvc_command

# DVC's messages when another process holds its repo lock or a stage's read/write lock
DVC_LOCK_ERRORS = ("Unable to acquire lock", "is busy, it is being blocked by")


@dataclass(frozen=True)
class Plan:
    """Every stage of dvc.yaml in the order `dvc repro` runs them (matrix stages expanded, e.g.
    `tune@pos-0`), and those to reproduce: the stages DVC reports changed and every stage
    downstream of one (their deps change when the upstream stage reruns)."""
    order: tuple[str, ...]
    stale: frozenset[str]
    # each stage's direct upstream stages (those whose outputs it depends on)
    upstream: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def skipped(self) -> list[str]:
        return [name for name in self.order if name not in self.stale]


class StageQueue:
    """Which stale stages to start next, with how many threads and on which devices, when up to
    `parallel` run at once (`orchestration.parallel_stages`) on the devices of
    `orchestration.devices`.

    Stages start in DVC's order (in-order issue): a stage starts once every stage before it has
    started, its upstream stages have finished, a slot is free and, when devices are declared,
    as many of them are free as it needs (`needs`: its processes; stages without torch need
    none). So the base step runs alone with every core, the tune@ and evaluate@ runs go two by
    two on a CPU (each with cores / parallel threads: a tiny model scales poorly over threads,
    and the runs' single-threaded start-up overlaps), one per GPU on a GPU node, and `dvc
    repro`'s order still describes what happens. A stage's devices are its own until it ends,
    failed or not: no two running stages ever share one."""

    def __init__(self, plan: Plan, parallel: int, cpus: int, devices: Sequence[str] = (),
                 needs: Mapping[str, int] | None = None):
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, got {parallel}")
        self.parallel, self.cpus = parallel, max(1, cpus)
        self.waiting = [name for name in plan.order if name in plan.stale]
        self.upstream = {name: plan.upstream.get(name, frozenset()) & plan.stale for name in self.waiting}
        self.running: set[str] = set()
        self.finished: set[str] = set()
        self.devices = tuple(devices)
        self.needs = {name: (needs or {}).get(name, 0) if self.devices else 0 for name in self.waiting}
        too_many = {name: n for name, n in self.needs.items() if n > len(self.devices)}
        if too_many:
            raise ValueError(f"stage(s) need more devices than orchestration.devices has ({len(self.devices)}): "
                             + ", ".join(f"{name} needs {n}" for name, n in too_many.items()))
        self.free = list(self.devices)
        self.held: dict[str, tuple[str, ...]] = {}

    def start(self) -> list[tuple[str, int]]:
        """The stages to start now, each with its thread count; marks them running and gives
        each its devices (`held`)."""
        started = []
        while (self.waiting and len(self.running) < self.parallel
               and self.upstream[self.waiting[0]] <= self.finished
               and self.needs[self.waiting[0]] <= len(self.free)):
            name = self.waiting.pop(0)
            self.running.add(name)
            need = self.needs[name]
            self.held[name], self.free = tuple(self.free[:need]), self.free[need:]
            started.append(name)
        threads = self.cpus if len(self.running) == 1 else max(1, self.cpus // self.parallel)
        return [(name, threads) for name in started]

    def finish(self, name: str) -> None:
        """A stage ended (finished or failed): its slot and its devices are free again."""
        self.running.discard(name)
        self.finished.add(name)
        returned = set(self.held.pop(name, ()))
        self.free = [d for d in self.devices if d in returned or d in self.free]

    def done(self) -> bool:
        return not self.waiting and not self.running


def device_needs(params, stages: Sequence[str]) -> dict[str, int]:
    """The devices each stage runs on: its processes for the training stages (`launch.processes`),
    one for an evaluate@ run, none for the stages without a model (generate, validate, chance,
    report)."""
    needs = {}
    for name in stages:
        kind = name.split(":")[-1].split("@")[0]
        needs[name] = {"base": params.base.launch.processes, "tune": params.tune.launch.processes,
                       "evaluate": 1}.get(kind, 0)
    return needs


def device_environment(devices: Sequence[str]) -> dict:
    """What a stage given `devices` sees: only those (CUDA numbers them from 0 inside it)."""
    from .launch import DEVICES_ENV

    return {DEVICES_ENV: ",".join(devices)} if devices else {}


@contextmanager
def command_line(label: str | None):
    """DVC records `sys.argv` in its lock file as the holder's command line; while this process
    holds DVC's locks, that line is `label` (who the flow run is)."""
    saved = sys.argv
    if label:
        sys.argv = [label, "status"]
    try:
        yield
    finally:
        sys.argv = saved


@contextmanager
def read_once():
    """One `dvc status` reads the same things many times over: params.yaml once for every stage
    that names a param (20 times for the default DAG), and a folder once for every stage that
    has it as a dependency or output (`data/images`, 3400 files, 18 times). That was nearly all of
    a no-op run. Nothing changes in the workspace during one status (the flow holds it), so
    within it each file is parsed, and each path hashed, once. With a DVC that lacks these
    internals (`dvc.dependency.param.load_path`, `dvc.output.Output._get_hash_meta`), status
    just goes the slow way."""
    import copy

    try:
        import dvc.dependency.param as param
        from dvc.output import Output

        load_path, get_hash_meta = param.load_path, Output._get_hash_meta
    except (ImportError, AttributeError):
        yield
        return
    parsed: dict = {}
    hashed: dict = {}

    def load_once(path, fs, **kwargs):
        key = (str(path), id(fs), repr(sorted(kwargs.items())))
        if key not in parsed:
            parsed[key] = load_path(path, fs, **kwargs)
        return copy.deepcopy(parsed[key])  # each stage's own copy, as before

    def hash_once(output):
        # (meta, hash_info) of what is at the path now; an output (kept in DVC's cache) and a
        # dependency (not) are built apart, as DVC builds them
        key = (output.fs_path, id(output.fs), output.hash_name, output.use_cache)
        if key not in hashed:
            hashed[key] = get_hash_meta(output)
        return hashed[key]

    param.load_path, Output._get_hash_meta = load_once, hash_once
    try:
        yield
    finally:
        param.load_path, Output._get_hash_meta = load_path, get_hash_meta


def stage_graph(graph) -> tuple[dict, dict[str, frozenset[str]]]:
    """DVC's stages in the order `dvc repro` runs them, each named as from the project root
    (`tune@pos-0`; DVC's `addressing` is relative to the cwd), and each one's upstream stages."""
    from dvc.repo.reproduce import plan_repro
    from dvc.stage import PipelineStage

    # dvc.yaml stages; `.dvc` files of tracked data are nodes too, with nothing to run
    order = [stage for stage in plan_repro(graph) if isinstance(stage, PipelineStage)]
    names = {stage: stage.name if stage.path_in_repo == "dvc.yaml" else f"{stage.path_in_repo}:{stage.name}"
             for stage in order}
    upstream = {name: frozenset(names[s] for s in graph.successors(stage) if s in names)
                for stage, name in names.items()}
    return names, upstream


def plan(root: str | Path = ".", label: str | None = None, on_wait=print, wait_s: float = 5.0) -> Plan:
    """Asks DVC once which stages are stale. In this process: a `dvc status` subprocess would add
    a second of imports to every run. While another DVC process holds the workspace's locks, waits
    for it (saying so), as `dvc repro --wait-for-lock` would."""
    import networkx as nx
    from dvc.lock import LockError
    from dvc.repo import Repo, lock_repo

    announced = False
    while True:
        try:
            # one hold of the repo lock for both questions: DVC re-reads dvc.yaml, dvc.lock and
            # params for each new hold, which is most of the time a no-op run takes
            with command_line(label), read_once(), Repo(str(root)) as repo, lock_repo(repo):
                graph = repo.index.graph
                names, upstream = stage_graph(graph)
                changed = set(repo.status())  # keyed by `addressing`
                stale = set()
                for stage, name in names.items():
                    if stage.addressing in changed:
                        # DVC's graph points from a stage to the stages it depends on
                        stale |= {name} | {names[s] for s in nx.ancestors(graph, stage) if s in names}
                return Plan(tuple(names.values()), frozenset(stale), upstream)
        except LockError as exc:
            if not announced:
                on_wait(f"DVC is busy in this workspace, waiting: {exc}")
                announced = True
            time.sleep(wait_s)


def available_cpus() -> int:
    """The cores this process may run on (a container's or taskset's share, not the host's)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def profile_overrides(path: str | Path) -> dict:
    """A profile (configs/*.yaml): params overrides as `dotted.key: value`, as `-S` takes them."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValueError(f"{path}: expected a mapping of dotted params keys to values")
    return data


def apply_overrides(overrides: dict, params_path: str | Path = "params.yaml") -> None:
    """Writes `key.path: value` overrides into params.yaml, keeping its comments and layout,
    as `dvc exp run -S` does; validated first, so a typo changes nothing."""
    if not overrides:
        return
    load_params(params_path, overrides)  # raises ParamsError naming the bad key
    from ruamel.yaml import YAML

    ryaml = YAML()
    ryaml.preserve_quotes = True
    path = Path(params_path)
    data = ryaml.load(path.read_text())
    for dotted, value in overrides.items():
        node = data
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    from .io import atomic_path

    with atomic_path(path) as tmp, tmp.open("w") as f:
        ryaml.dump(data, f)


def repro_command(stage: str) -> list[str]:
    # --wait-for-lock (a global option): DVC's repo lock is held for moments, while a dvc process
    # checks stages, and is no reason to fail
    return dvc_command(["--wait-for-lock", "repro", "--single-item", stage])


def reproduce(stage: str, on_line, env=None, cwd=None, wait_s: float = 5.0) -> tuple[int, list[str]]:
    """`dvc repro --single-item <stage>`, waiting while another DVC process (a hand-run `dvc repro`)
    holds a lock the stage needs: DVC refuses at once rather than wait for a stage's lock."""
    announced = False
    while True:
        ran = []

        def watch(line: str) -> None:
            if line.startswith("Running stage"):
                ran.append(line)
            on_line(line)

        code, tail = run_streaming(repro_command(stage), watch, env=env, cwd=cwd)
        blocked = code != 0 and any(m in line for line in tail for m in DVC_LOCK_ERRORS)
        if not blocked or ran:
            return code, tail
        if not announced:
            on_line(f"another DVC process holds a lock that stage '{stage}' needs; trying again every {wait_s:.0f} s")
            announced = True
        time.sleep(wait_s)


def stage_environment(extra: dict | None = None) -> dict:
    """The stages' `python` must be this interpreter (the project's venv) even when the venv
    is not activated: its bin folder goes first on PATH."""
    import os

    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, **(extra or {}))
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return env


def run_streaming(cmd: list[str], on_line, env=None, cwd=None) -> tuple[int, list[str]]:
    """Runs a command, handing each output line to `on_line`; returns the code and the tail.

    If this process is interrupted or cancelled while the command runs (Ctrl-C, a cancel from
    the Prefect UI, `make serve` stopping), the command and every process it started go too: a
    `dvc repro` and its stage left running would hold DVC's locks on a workspace that the next
    run believes free."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=env, cwd=cwd)
    tail: list[str] = []
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            # progress bars redraw with carriage returns: keep the last state of each line
            line = raw.rstrip("\n").split("\r")[-1].rstrip()
            if not line:
                continue
            on_line(line)
            tail = (tail + [line])[-30:]
        return proc.wait(), tail
    except BaseException:
        stop_tree(proc.pid)
        raise


def stop_tree(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM to a process and all its descendants, SIGKILL to those alive after `grace_s`.
    By tree, not by process group: the command shares this process's group, so that Ctrl-C in
    a terminal and a supervisor's signal to the group still reach it if this process dies first."""
    import psutil  # a dependency of DVC

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)


REMOTE_NAME = "reverie"


def remote_commands(url: str) -> list[list[str]]:
    """Registers the remote named in params (project-local DVC config) and pushes every
    cached output to it, so a teammate's `dvc pull` gets the same data and models."""
    return [[sys.executable, "-m", "dvc", "remote", "add", "--local", "--force", "--default", REMOTE_NAME, url],
            [sys.executable, "-m", "dvc", "push", "--remote", REMOTE_NAME]]
