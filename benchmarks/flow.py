"""No-op overhead of the Prefect flow next to `dvc repro`, on a project where every stage is up
to date.

Each is timed as a user starts it, in a fresh process: `python -m flows.pipeline` against a
running Prefect server (that of `make serve`, or PREFECT_API_URL's, or else one this benchmark
starts and stops), and `dvc repro`; `--repeats` times each, alternating, after one untimed
warm-up of each. `--ephemeral` also times one flow run with no server at all, where Prefect
starts a temporary one inside the process (what `make run` does when `make serve` is not running),
after one untimed run that creates that server's database.

`python -m benchmarks.flow [--project .] [--repeats 5] [--ephemeral]`; the last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import timed_command
from reverie.orchestration import plan
from reverie.services import Addresses, Child, answers, prefect_environment, prefect_server_command, served_api


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    return timed_command(cmd, cwd, env, refuse=("Running stage", "ran a stage: the project is not up to date"))


def start_server(home: Path) -> tuple[Child, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = Addresses("127.0.0.1", port, 0, "")
    env = dict(os.environ, **prefect_environment(a, home))
    env["PREFECT_HOME"] = str(home / "prefect")
    child = Child("Prefect server", prefect_server_command(a), env, home / "prefect-server.log",
                  health=f"{a.prefect_api}/health")
    child.start(home)
    deadline = time.monotonic() + 180
    while not answers(child.health):
        if not child.running() or time.monotonic() > deadline:
            child.stop(10)
            raise SystemExit(f"the Prefect server did not start: see {child.log}")
        time.sleep(0.5)
    return child, a.prefect_api


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", default=".", help="a reproduced project (default: this one)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ephemeral", action="store_true", help="also time one flow run with no server")
    args = p.parse_args()
    project = Path(args.project).resolve()
    steps = plan(project)
    if steps.stale:
        raise SystemExit(f"{len(steps.stale)} stage(s) of {project} are not up to date ({', '.join(sorted(steps.stale))}):"
                         " run `dvc repro` there first; this benchmark times a run that has nothing to do")
    tmp = Path(tempfile.mkdtemp(prefix="reverie-bench-flow-"))
    server, api = None, os.environ.get("PREFECT_API_URL") or served_api(project)
    source = "PREFECT_API_URL" if os.environ.get("PREFECT_API_URL") else "make serve" if api else "started here"
    if api is None:
        server, api = start_server(tmp)
    base = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                PREFECT_HOME=str(tmp / "client"), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    flow_env = dict(base, PREFECT_API_URL=api)
    flow_cmd = [sys.executable, "-m", "flows.pipeline"]
    dvc_cmd = [sys.executable, "-m", "dvc", "repro"]
    try:
        timed(flow_cmd, project, flow_env)  # warm-up: file cache, first run of a flow on this server
        timed(dvc_cmd, project, base)
        flow_s, dvc_s = [], []
        for _ in range(args.repeats):
            flow_s.append(timed(flow_cmd, project, flow_env))
            dvc_s.append(timed(dvc_cmd, project, base))
        ephemeral_s = None
        if args.ephemeral:
            env = {k: v for k, v in base.items() if k != "PREFECT_API_URL"}
            env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
            timed(flow_cmd, project, env)  # creates (migrates) the temporary server's database, once per home
            ephemeral_s = timed(flow_cmd, project, env)
    finally:
        if server is not None:
            server.stop(30)
    result = {"benchmark": "flow", "project": str(project), "stages": len(steps.order), "repeats": args.repeats,
              "prefect_server": source, "cpus": os.cpu_count(),
              "flow_noop_s": round(statistics.median(flow_s), 2), "dvc_repro_noop_s": round(statistics.median(dvc_s), 2),
              "flow_noop_runs_s": [round(t, 2) for t in flow_s], "dvc_repro_noop_runs_s": [round(t, 2) for t in dvc_s],
              "flow_noop_no_server_s": None if ephemeral_s is None else round(ephemeral_s, 2),
              "load_average_1m": round(os.getloadavg()[0], 2)}
    print(f"no-op over {len(steps.order)} up-to-date stages, median of {args.repeats}: "
          f"flow {result['flow_noop_s']:.2f} s (Prefect server: {source}), dvc repro {result['dvc_repro_noop_s']:.2f} s"
          + (f"; flow with no server {ephemeral_s:.2f} s" if ephemeral_s is not None else ""))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
