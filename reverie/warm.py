"""A warm interpreter for the flow's stage processes: one process imports torch, transformers,
peft, accelerate and mlflow once, and each stage process forks from it instead of importing
them again (seconds per process, in 25 stage processes of the default run; docs/results.md).

DVC still runs every stage as its own command (`python -m stages.tune ...`). When the flow has
started a server and named it in REVERIE_WARM_SOCKET, that command, on entering `stage()`,
hands its arguments, working directory, environment and standard streams to the server; a
forked child runs the stage module there, with its output on the command's own streams, and the
command exits with the child's code. Without a server (a hand-run `dvc repro`), or when the
server refuses (an environment that differs in more than the per-stage variables), the command
runs the stage itself, as before: the warm path changes how fast a stage starts, not what it
computes (the same weights, bit for bit; tests/test_warm.py).

What keeps it honest:
- the server imports only third-party libraries, never the project's code: each child imports
  `reverie`, `stages` and `flows` fresh from the workspace, so an edited file is what runs;
- the libraries are pinned by the lock and do not change during a flow run; the server refuses
  a command whose environment differs from its own in anything but the per-stage variables
  (threads, DVC's), because libraries read some variables when imported;
- the child sets torch's thread count from OMP_NUM_THREADS as a fresh process would;
- a signal to the command (Ctrl-C, the flow stopping a stage) is passed on to the child, and a
  child whose command is gone stops itself;
- only this user's processes may connect (the socket's peer credentials are checked)."""
from __future__ import annotations

import array
import json
import os
import signal
import socket
import struct
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SOCKET_ENV = "REVERIE_WARM_SOCKET"
CHILD_ENV = "REVERIE_WARM_CHILD"  # set in a forked child: it runs the stage, it does not delegate
# The stage processes' variables that may differ from the server's: per-stage threads, the devices
# the flow placed the stage on (CUDA reads them when it starts, in the child: see `cuda_started`),
# what DVC and the shell that runs a stage's command set, and the child marker.
PER_STAGE = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PWD", "OLDPWD", "SHLVL", "_",
             SOCKET_ENV, CHILD_ENV)
PER_STAGE_PREFIXES = ("DVC_",)
STREAMS = 3  # stdin, stdout, stderr
MAX_MESSAGE = 1 << 20


# What the torch stages (base, tune@, evaluate@, chance, report) import from third parties;
# `module:Name` also resolves a name (transformers imports its models lazily, by name).
PRELOAD = ("numpy", "PIL.Image", "torch", "accelerate", "peft", "mlflow", "mlflow.store.tracking.sqlalchemy_store",
           "transformers",
           "transformers:LlavaForConditionalGeneration", "transformers:AutoProcessor",
           "transformers:AutoImageProcessor", "transformers:AutoTokenizer")


def preload(names: tuple[str, ...] | list[str] = PRELOAD) -> None:
    import importlib

    for name in names:
        module, _, attribute = name.partition(":")
        imported = importlib.import_module(module)
        if attribute:
            getattr(imported, attribute)


# -- wire format: one JSON object per message, length-prefixed; file descriptors ride along ----

def _send(conn: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    payload = struct.pack("!I", len(data)) + data
    if fds:
        conn.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        conn.sendall(payload)


def _receive(conn: socket.socket, want_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message and the descriptors sent with it; (None, []) when the peer has gone."""
    fds: list[int] = []
    head = b""
    while len(head) < 4:
        if want_fds and not fds:
            chunk, ancillary, _, _ = conn.recvmsg(4 - len(head), socket.CMSG_SPACE(want_fds * 4))
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", data[: len(data) - len(data) % 4]))
        else:
            chunk = conn.recv(4 - len(head))
        if not chunk:
            return None, fds
        head += chunk
    (size,) = struct.unpack("!I", head)
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes")
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            return None, fds
        body += chunk
    return json.loads(body), fds


def _compared(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in PER_STAGE and not k.startswith(PER_STAGE_PREFIXES)}


def cuda_started() -> str | None:
    """Why no child may be forked once CUDA runs in this process: a forked child cannot use its
    parent's CUDA context, and CUDA read the device list (CUDA_VISIBLE_DEVICES) when it started.
    Importing torch does not start it; nothing in the server asks for a device."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA was started in the warm interpreter: a forked child could not use it"
    return None


def environment_difference(server: dict, stage: dict) -> str | None:
    """Why a stage's environment cannot run in this server's children, or None."""
    a, b = _compared(server), _compared(stage)
    differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if not differing:
        return None
    return "environment differs from the warm interpreter's in " + ", ".join(differing[:5]) + \
        (f" and {len(differing) - 5} more" if len(differing) > 5 else "")


# -- the command's side ---------------------------------------------------------------------------

def delegate(answer_timeout_s: float = 600.0) -> None:
    """Called first by every stage entry point (`reverie.stage.stage`). With a warm server named
    in the environment, runs this very command in a child of it and exits with the child's
    code; returns (and the command runs the stage itself) when there is none, or it refuses.

    Only an answer that no child will run (a refusal, or a server gone before forking) lets the
    command run the stage itself: a stage must never run twice at once."""
    address = os.environ.get(SOCKET_ENV)
    if not address or os.environ.get(CHILD_ENV):
        return
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    request = {"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ),
               "module": spec.name if spec is not None else None}
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(_address(address))
        _send(conn, request, fds=[_open_or_null(fd) for fd in range(STREAMS)])
    except OSError as exc:
        conn.close()
        why = "is not listening (still importing, or gone)" if isinstance(exc, (ConnectionRefusedError,
                                                                                FileNotFoundError)) else f"failed ({exc})"
        print(f"[warm] the warm interpreter at {address} {why}; running this stage in its own process",
              file=sys.stderr)
        return
    conn.settimeout(answer_timeout_s)
    try:
        reply, _ = _receive(conn)
    except socket.timeout:
        sys.exit(f"[warm] the warm interpreter at {address} did not answer in {answer_timeout_s:.0f} s")
    except (OSError, ValueError):
        reply = None  # it went before forking: no child has the request
    if reply is None or "refused" in reply:
        conn.close()
        why = reply["refused"] if reply else "the warm interpreter closed the connection"
        print(f"[warm] {why}; running this stage in its own process", file=sys.stderr)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(_follow(conn, reply["pid"]))


def _open_or_null(fd: int) -> int:
    """The command's own descriptor, or /dev/null where it has none open (a closed stdin)."""
    try:
        os.fstat(fd)
        return fd
    except OSError:
        return os.open(os.devnull, os.O_RDWR)


def _follow(conn: socket.socket, pid: int) -> int:
    """Waits for the child's exit code, passing on the signals this command gets."""
    def forward(signum, _frame):
        try:
            _send(conn, {"signal": signum})
        except OSError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    conn.settimeout(None)
    while True:
        try:
            reply, _ = _receive(conn)
            break
        except InterruptedError:
            continue
    if reply is None:
        print(f"[warm] the stage's process (pid {pid}) ended without an exit code", file=sys.stderr)
        return 1
    return int(reply["exit"])


# -- the server's side ---------------------------------------------------------------------------

def _address(address: str) -> str | bytes:
    """`@name` is a Linux abstract socket (no file to leave behind, no path length limit)."""
    return b"\0" + address[1:].encode() if address.startswith("@") else address


def serve(address: str, parent_pid: int | None = None, modules: tuple[str, ...] | list[str] = PRELOAD) -> None:
    """Imports, then listens and forks a child per command. Ends on SIGTERM, or when
    `parent_pid` (the flow) is gone."""
    from .environment import quiet_environment

    quiet_environment()  # as every stage does first: the server's environment is theirs
    started = time.monotonic()
    server_env = dict(os.environ)  # what the stage commands must match: before the imports add to it
    preload(modules)
    import gc

    threads = _torch_threads()
    gc.collect()
    gc.freeze()  # the children share the imported objects' pages instead of copying them
    # what importing set (torch's inductor cache folder, mlflow's telemetry session): a fresh
    # process would have it too, so each child gets it on top of its command's environment
    imported_env = {k: v for k, v in os.environ.items() if k not in server_env}
    import threading

    if threading.active_count() > 1:  # a thread would not survive the fork, and its locks stay taken
        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        print(f"[warm] not serving: importing started threads ({names}); stages run in their own processes",
              file=sys.stderr, flush=True)
        return
    # listening only now: a command that comes earlier (generate, validate: no torch) runs in
    # its own process at once rather than wait for imports it does not need
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(_address(address))
    listener.listen(64)
    print(f"[warm] ready at {address} after {time.monotonic() - started:.1f} s importing {', '.join(modules)}",
          flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener.settimeout(1.0)
    children: set[int] = set()
    try:
        while parent_pid is None or _alive(parent_pid):
            _reap(children)
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            pid = _answer(conn, listener, server_env, imported_env, threads)
            if pid:
                children.add(pid)
    finally:
        listener.close()
        for pid in children:  # a flow that is gone takes its stages with it
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _torch_threads() -> int | None:
    """torch's thread count in a process started without OMP_NUM_THREADS (the server is)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's: not the flow that started this server
        return False
    return True


def _reap(children: set[int]) -> None:
    for pid in list(children):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            children.discard(pid)


def _answer(conn: socket.socket, listener: socket.socket, server_env: dict, imported_env: dict,
            threads: int | None) -> int | None:
    fds: list[int] = []
    try:
        conn.settimeout(10.0)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            return None
        request, fds = _receive(conn, want_fds=STREAMS)
        if request is None or len(fds) != STREAMS:
            return None
        command = " ".join([request["module"] or request["argv"][0], *request["argv"][1:]])
        why = environment_difference(server_env, request["env"]) or cuda_started()
        if why:
            _send(conn, {"refused": why})
            print(f"[warm] refused: {command}: {why}", flush=True)
            return None
        pid = os.fork()
        if pid == 0:
            listener.close()
            _run_child(conn, request, fds, imported_env, threads)  # never returns
        print(f"[warm] served: {command} (pid {pid})", flush=True)
        return pid
    except (OSError, ValueError, KeyError) as exc:
        print(f"[warm] a request failed: {exc}", file=sys.stderr, flush=True)
        return None
    finally:
        conn.close()
        for fd in fds:
            os.close(fd)


def _run_child(conn: socket.socket, request: dict, fds: list[int], imported_env: dict,
               default_threads: int | None) -> None:
    """In the forked child: become the command (streams, directory, environment, arguments),
    run the stage module as `python -m` would, report the exit code, and leave."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        _send(conn, {"pid": os.getpid()})  # first: the command forwards its signals here
        _reopen_streams(request["env"])
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(imported_env | request["env"])
        os.environ[CHILD_ENV] = "1"
        _forget_project_modules(request["cwd"])
        if "torch" in sys.modules:  # it read the thread variables when imported, in the server
            sys.modules["torch"].set_num_threads(thread_count(request["env"], default_threads))
        _watch(conn)
        code = _run_main(request)
    except BaseException:  # noqa: BLE001 - the child reports whatever ended it, then leaves
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        try:
            _send(conn, {"exit": code})
        except OSError:
            pass
        os._exit(code)


def thread_count(env: dict, default: int) -> int:
    """torch's intra-op threads in a process started with `env`, as torch reads it when imported:
    MKL_NUM_THREADS over OMP_NUM_THREADS (torch 2.13 here: OMP 2 with MKL 1 gives 1), else the
    default of a process with neither."""
    for name in ("MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return default


def _reopen_streams(env: dict) -> None:
    """sys.stdout and sys.stderr over the command's descriptors, buffered as Python would."""
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    for name, fd in (("stdout", 1), ("stderr", 2)):
        line = name == "stderr" or unbuffered or os.isatty(fd)
        stream = open(fd, "w", encoding="utf-8", errors="backslashreplace" if name == "stderr" else "strict",
                      buffering=1 if line else -1, closefd=False)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    sys.stdin = sys.__stdin__ = open(0, "r", closefd=False)


def _forget_project_modules(root: str) -> None:
    """Drops the project's packages (those of the stage's working directory, and the server's
    own `reverie`) from the imported modules: the stage imports the project's code fresh from
    its workspace, as its own process would."""
    top = Path(root)
    names = {"reverie", "stages", "flows"} | {p.name for p in top.iterdir() if (p / "__init__.py").exists()} \
        | {p.stem for p in top.glob("*.py")}
    for name in [n for n in sys.modules if n.split(".")[0] in names]:
        del sys.modules[name]


def _watch(conn: socket.socket) -> None:
    """A thread that passes the command's signals on to this child, and stops the child when the
    command is gone (killed without a chance to say so)."""
    import threading

    def run() -> None:
        conn.settimeout(None)
        while True:
            try:
                message, _ = _receive(conn)
            except (OSError, ValueError):
                message = None
            if message is None:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            if "signal" in message:
                os.kill(os.getpid(), int(message["signal"]))

    threading.Thread(target=run, name="warm-watch", daemon=True).start()


def _run_main(request: dict) -> int:
    import atexit
    import runpy

    argv = request["argv"]
    sys.argv = list(argv)
    # sys.path[0] as `python -m` (the working directory) or `python script.py` (its folder) sets it
    sys.path[0] = request["cwd"] if request["module"] else os.path.dirname(os.path.abspath(argv[0]))
    code: int = 0
    try:
        if request["module"]:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        import traceback

        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - as the interpreter would: the traceback, then 1
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    return code


def _exit_code(value) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


@contextmanager
def warm_server(env: dict, log: str | Path, address: str | None = None,
                modules: tuple[str, ...] | list[str] = PRELOAD, wait_ready: bool = False) -> Iterator[dict]:
    """Starts a server for the stages of one flow run, its account of each command (served or
    refused, and why) in `log`; yields the variables that point the stage commands at it (none
    where forking is not available) at once, or once it listens with `wait_ready`, and stops it
    on exit."""
    import subprocess

    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        yield {}
        return
    address = address or f"@reverie-warm-{os.getpid()}-{time.monotonic_ns()}"
    server_env = {k: v for k, v in env.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "reverie.warm", "--socket", address, "--parent",
                                 str(os.getpid()), "--preload", ",".join(modules)],
                                env=server_env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        if wait_ready:
            _wait_listening(address, proc)
        yield {SOCKET_ENV: address}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_listening(address: str, proc, seconds: float = 120.0) -> None:
    """Until the server listens, having imported everything."""
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(_address(address))
                return  # queued; the server reads nothing from it and closes it
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the warm interpreter did not start (exit {proc.poll()})") from None
        time.sleep(0.05)


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", required=True, help="a path, or @name for a Linux abstract socket")
    p.add_argument("--parent", type=int, help="stop when this process is gone")
    p.add_argument("--preload", default=",".join(PRELOAD), help="modules to import, comma-separated")
    args = p.parse_args()
    serve(args.socket, args.parent, [m for m in args.preload.split(",") if m])


if __name__ == "__main__":
    main()
