"""`make serve`: the pipeline as a service, in one command. On loopback by default it starts

- a Prefect server (API and UI), its state in the project's ignored `.reverie/prefect`;
- an MLflow tracking server (and UI) on the store params name (`project.mlflow_tracking_uri`,
  `MLFLOW_TRACKING_URI` wins), unless that store is a tracking server already;
- the deployment (`python -m flows.serve`): the cron from params, one run at a time.

It prints both UI addresses once they answer, and on Ctrl-C (or SIGTERM) stops the three: the
deployment first, which cancels a run in progress ("Runner is shutting down") and pauses the
schedule, then MLflow, then the Prefect server. Each child runs in its own process group, so
Ctrl-C reaches this supervisor alone and the order holds. The servers' output goes to
`.reverie/logs/`; the deployment's (with every run's log lines) to the terminal.

`python -m reverie.services [--prefect-port N] [--mlflow-port N] [--cron '* * * * *']`,
`python -m reverie.services mlflow` (the MLflow UI alone: `make mlflow-ui`).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .settings import load_params
from .tracking import tracking_uri

STATE_DIR = Path(".reverie")
SERVICES_FILE = "services.json"  # what runs where, while `make serve` runs (flows.pipeline reads it)


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether an HTTP GET of `url` succeeds (a server's health route)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (OSError, ValueError):
        return False


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen there (as servers do, connections closed moments ago and
    still in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Addresses:
    host: str
    prefect_port: int
    mlflow_port: int
    store: str  # the MLflow tracking URI the stages log to
    experiment: str = "reverie"  # project.mlflow_experiment

    @property
    def prefect_ui(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def prefect_api(self) -> str:
        return f"{self.prefect_ui}/api"

    @property
    def starts_mlflow(self) -> bool:
        """A store that is a tracking server already (http) has its own UI: none is started."""
        return not self.store.startswith(("http://", "https://"))

    @property
    def mlflow_ui(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}" if self.starts_mlflow else self.store.rstrip("/")

    def mlflow_runs(self) -> str:
        """Where a user opens the runs: the experiment's runs table once it exists (asked of the
        running server), else the UI's home."""
        from .tracking import experiment_link

        return experiment_link(self.mlflow_ui, self.experiment) or self.mlflow_ui


def addresses(params, root: str | Path = ".", prefect_port: int | None = None,
              mlflow_port: int | None = None) -> Addresses:
    o = params.orchestration
    return Addresses(o.host, prefect_port or o.prefect_port, mlflow_port or o.mlflow_port,
                     tracking_uri(params.project.mlflow_tracking_uri, root), params.project.mlflow_experiment)


def prefect_environment(a: Addresses, root: str | Path = ".") -> dict:
    """The settings every Prefect process of the service shares (setting names of Prefect 3.9)."""
    return {
        "PREFECT_HOME": str((Path(root) / STATE_DIR / "prefect").resolve()),
        "PREFECT_API_URL": a.prefect_api,
        "PREFECT_SERVER_API_HOST": a.host,
        "PREFECT_SERVER_API_PORT": str(a.prefect_port),
        # the address the UI's browser code calls; set, so that it always follows the port above
        # (a server started with --port but without PREFECT_API_URL serves a UI that calls 4200)
        "PREFECT_SERVER_UI_API_URL": a.prefect_api,
        # the server's telemetry heartbeat (DO_NOT_TRACK does not stop it; it logs an error offline)
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",  # the client's analytics
    }


def _bin(name: str) -> str:
    """A console script of this interpreter's environment (the project's venv)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def prefect_server_command(a: Addresses) -> list[str]:
    return [_bin("prefect"), "server", "start", "--host", a.host, "--port", str(a.prefect_port)]


def mlflow_server_command(a: Addresses) -> list[str]:
    # one worker: the UI of one project on a small machine; artifacts stay where the runs put them
    return [_bin("mlflow"), "server", "--backend-store-uri", a.store, "--host", a.host,
            "--port", str(a.mlflow_port), "--workers", "1"]


def mlflow_environment(env: dict) -> dict:
    """The MLflow server's environment. Its job runner (MLflow 3.x's GenAI jobs: scoring, trace
    archival) is off unless the environment says otherwise: the project runs no such jobs, and it
    would start eight more processes (a runner and huey consumers, each importing MLflow) beside
    the server on a machine of two cores."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **env}


@dataclass
class Child:
    name: str
    cmd: list[str]
    env: dict
    log: Path | None  # None: the terminal
    health: str | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, cwd: Path) -> None:
        out = None
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            out = self.log.open("ab")
        # its own process group: Ctrl-C in the terminal reaches the supervisor alone, which
        # stops the children in order; and a group signal reaches a child's own children
        self.proc = subprocess.Popen(self.cmd, cwd=cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if out is not None:
            out.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float, leader_only: bool = False) -> int | None:
        """SIGTERM (to the leader alone, or to its group), SIGKILL to the group after `grace_s`."""
        if self.proc is None:
            return None
        if self.running():
            try:
                if leader_only:
                    self.proc.send_signal(signal.SIGTERM)
                else:
                    os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        # whatever the leader left behind in its group (a server's workers, a flow run's processes)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not group_alive(self.proc.pid):
                break
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + 5.0
            while group_alive(self.proc.pid) and time.monotonic() < deadline:
                self.proc.poll()  # reap the leader, or it counts as alive
                time.sleep(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def log_tail(path: Path | None, lines: int = 20) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Supervisor:
    """Starts children, waits until they answer, stops them in reverse order."""

    def __init__(self, root: Path):
        self.root = root
        self.children: list[Child] = []
        self.stopping = False

    def start(self, child: Child) -> None:
        self.children.append(child)
        child.start(self.root)

    def wait_healthy(self, children: list[Child], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = [c for c in children if c.health]
        while pending:
            for child in list(pending):
                if not child.running():
                    raise RuntimeError(f"{child.name} exited (code {child.proc.returncode}) before it answered"
                                       f"{': see ' + str(child.log) if child.log else ''}\n{log_tail(child.log)}")
                if answers(child.health):
                    pending.remove(child)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"{', '.join(c.name for c in pending)} did not answer within {timeout_s:.0f} s")
            if pending:
                time.sleep(0.5)

    def stop_all(self, grace: dict[str, float], leader_only: set[str]) -> None:
        for child in reversed(self.children):
            if child.proc is None:
                continue
            print(f"stopping {child.name} ...", flush=True)
            child.stop(grace.get(child.name, 15.0), leader_only=child.name in leader_only)


def serve(root: Path, a: Addresses, serve_args: list[str], startup_timeout_s: float = 180.0) -> int:
    """Runs the three services until Ctrl-C or SIGTERM, or until one of them ends."""
    for name, port, needed in (("Prefect", a.prefect_port, True), ("MLflow", a.mlflow_port, a.starts_mlflow)):
        if needed and not port_free(a.host, port):
            raise SystemExit(f"{a.host}:{port} (for {name}) is in use: another `make serve` or server is running "
                             f"there. Stop it, or choose another port (orchestration.{name.lower()}_port in "
                             f"params.yaml, or --{name.lower()}-port).")
    logs = root / STATE_DIR / "logs"
    env = dict(os.environ, **prefect_environment(a, root))
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    sup = Supervisor(root)

    def on_signal(signum, frame):
        if sup.stopping:  # a second Ctrl-C: no more waiting
            for child in sup.children:
                if child.proc is not None and child.running():
                    os.killpg(child.proc.pid, signal.SIGKILL)
            return
        sup.stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    services_file = root / STATE_DIR / SERVICES_FILE
    code = 0
    try:
        prefect = Child("Prefect server", prefect_server_command(a), env, logs / "prefect-server.log",
                        health=f"{a.prefect_api}/health")
        sup.start(prefect)
        servers = [prefect]
        if a.starts_mlflow:
            mlflow = Child("MLflow server", mlflow_server_command(a), mlflow_environment(env),
                           logs / "mlflow-server.log", health=f"{a.mlflow_ui}/health")
            sup.start(mlflow)
            servers.append(mlflow)
        print(f"starting the Prefect server{' and the MLflow server' if a.starts_mlflow else ''} "
              f"(logs in {logs.relative_to(root)}/) ...", flush=True)
        sup.wait_healthy(servers, startup_timeout_s)
        sup.start(Child("deployment", [sys.executable, "-m", "flows.serve", *serve_args], env, None))
        services_file.write_text(json.dumps({"pid": os.getpid(), "prefect_api": a.prefect_api,
                                             "prefect_ui": a.prefect_ui, "mlflow_ui": a.mlflow_ui}) + "\n")
        print(f"\n  Prefect UI: {a.prefect_ui}\n  MLflow UI:  {a.mlflow_runs()}   (store: {a.store})\n\n"
              f"  Ctrl-C stops the deployment (cancelling a run in progress), MLflow and Prefect.\n", flush=True)
        while True:
            for child in sup.children:
                if not child.running():
                    print(f"{child.name} ended (code {child.proc.returncode}); stopping the others\n"
                          f"{log_tail(child.log)}", file=sys.stderr, flush=True)
                    code = 1
                    raise KeyboardInterrupt
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"make serve: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        sup.stopping = True
        services_file.unlink(missing_ok=True)
        # the deployment stops first while the Prefect server still answers: it marks a run in
        # progress Cancelled and pauses the schedule; SIGTERM to it alone, its flow runs are its own
        sup.stop_all(grace={"deployment": 60.0, "MLflow server": 15.0, "Prefect server": 30.0},
                     leader_only={"deployment"})
        print("stopped", flush=True)
    return code


def served_api(root: str | Path = ".") -> str | None:
    """The Prefect API of this project's running `make serve`, if there is one and it answers."""
    path = Path(root) / STATE_DIR / SERVICES_FILE
    try:
        api = json.loads(path.read_text())["prefect_api"]
    except (OSError, ValueError, KeyError):
        return None
    return api if answers(f"{api}/health", timeout=1.0) else None


def mlflow_ui(root: Path, a: Addresses) -> int:
    """The MLflow UI alone, in the foreground (`make mlflow-ui`)."""
    if not a.starts_mlflow:
        print(f"the MLflow store is a tracking server: its UI is {a.mlflow_ui}")
        return 0
    print(f"MLflow UI on {a.mlflow_ui} (store: {a.store}); Ctrl-C stops it", flush=True)
    # in a session of its own, stopped with SIGTERM as `make serve` stops it: Ctrl-C reaching
    # uvicorn itself ends it with a CancelledError traceback
    server = Child("MLflow server", mlflow_server_command(a), mlflow_environment(dict(os.environ)), None)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)  # explicit: a shell may start us with SIGINT ignored
    signal.signal(signal.SIGTERM, on_signal)
    server.start(root)
    try:
        deadline = time.monotonic() + 90
        while server.proc.poll() is None and time.monotonic() < deadline and not answers(f"{a.mlflow_ui}/health"):
            time.sleep(1)
        if server.proc.poll() is None:
            print(f"the project's runs: {a.mlflow_runs()}", flush=True)
        return server.proc.wait()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: the stop below is bounded anyway
        print("stopping the MLflow server ...", flush=True)
        server.stop(15.0)
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", choices=["all", "mlflow"], default="all")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--prefect-port", type=int, default=None, help="default: orchestration.prefect_port")
    p.add_argument("--mlflow-port", type=int, default=None, help="default: orchestration.mlflow_port")
    p.add_argument("--cron", default=None, help="default: orchestration.cron")
    args = p.parse_args(argv)
    root = Path.cwd()
    a = addresses(load_params(args.params), root, args.prefect_port, args.mlflow_port)
    if args.what == "mlflow":
        return mlflow_ui(root, a)
    serve_args = ["--params", args.params] + (["--cron", args.cron] if args.cron else [])
    return serve(root, a, serve_args)


if __name__ == "__main__":
    sys.exit(main())
