"""One pipeline run at a time per workspace, and a clear word to anyone else who tries.

A flow run claims the workspace (an exclusive `flock` on `.reverie/workspace.lock`, released by
the kernel when the process ends, however it ends) for as long as it drives DVC. Another flow
run waits for the claim. The stages the flow starts carry the claim's token in their
environment; a stage started any other way while the claim is held (a hand-run `dvc repro`,
`dvc exp run`) stops before any work, naming the flow run that holds the workspace.

DVC's own locks name their holder by its command line (`sys.argv`): a hand-run `dvc repro` that
meets the lock of a stage the flow is running prints that command line. `python -m
reverie.workspace <dvc arguments>` runs DVC with the holder's description as its command line,
so that message names the flow run too.
"""
from __future__ import annotations

import json
import os
import secrets
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

STATE_DIR = ".reverie"
LOCK_FILE = "workspace.lock"
TOKEN_ENV = "REVERIE_WORKSPACE_TOKEN"  # given to the processes the holder starts
LABEL_ENV = "REVERIE_WORKSPACE_HOLDER"  # the holder's description, for DVC's lock messages


class WorkspaceBusy(RuntimeError):
    """A stage was started while another process holds the workspace."""


def lock_path(root: str | Path = ".") -> Path:
    return Path(root) / STATE_DIR / LOCK_FILE


def describe(holder: dict) -> str:
    """`Prefect flow run 'x' (pid 1, since 02:30:00; http://...)`, from what the holder wrote."""
    details = [f"pid {holder.get('pid', '?')}"]
    if holder.get("since"):
        details.append(f"since {holder['since']}")
    if holder.get("url"):
        details.append(holder["url"])
    return f"{holder.get('who') or 'another process'} ({', '.join(details)})"


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 64 * 1024)
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {}


def _try_lock(fd: int, mode: int, attempts: int = 5) -> bool:
    """A few quick tries: a stage that checks the claim holds a shared lock for an instant."""
    import fcntl

    for attempt in range(attempts):
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < attempts:
                time.sleep(0.05)
    return False


@contextmanager
def claim(who: str, url: str | None = None, root: str | Path = ".",
          on_wait: Callable[[str], None] = print) -> Iterator[str]:
    """Holds the workspace for the `with` block, waiting (and saying so once) while another run
    holds it. Yields the token that the holder's own stages carry in `TOKEN_ENV`."""
    import fcntl

    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd, fcntl.LOCK_EX):
            holder = _read(fd)
            on_wait(f"the workspace {Path(root).resolve()} is held by {describe(holder)}; waiting for it")
            started = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            on_wait(f"the workspace is free after {time.monotonic() - started:.0f} s of waiting")
        token = secrets.token_hex(16)
        holder = {"who": who, "url": url, "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "token": token}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield token
    finally:
        try:
            os.ftruncate(fd, 0)  # a later reader of a free lock finds no stale holder
        finally:
            os.close(fd)  # releases the flock


def holder(root: str | Path = ".") -> dict | None:
    """Who holds the workspace now, or None when nobody does."""
    import fcntl

    path = lock_path(root)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def refuse_if_held(root: str | Path = ".") -> None:
    """Raises WorkspaceBusy unless the workspace is free or held by whoever started this
    process (the holder's token is in our environment)."""
    held = holder(root)
    if held is None or (held.get("token") and held.get("token") == os.environ.get(TOKEN_ENV)):
        return
    raise WorkspaceBusy(f"this workspace is being reproduced by {describe(held)}. Wait for it to finish, or "
                        "cancel it (Prefect UI, or `prefect flow-run cancel <id>`), then run `dvc repro` again.")


def holder_environment(token: str, who: str, url: str | None) -> dict:
    """What the holder passes to the processes it starts, so that its stages are let through and
    DVC's lock messages name it."""
    label = f"[{who}{'; ' + url if url else ''}: wait for it or cancel it] dvc"
    return {TOKEN_ENV: token, LABEL_ENV: label}


def dvc_command(args: list[str]) -> list[str]:
    """`dvc <args>` run through this module, under the holder's name (see the module docstring)."""
    return [sys.executable, "-m", "reverie.workspace", *args]


def main(argv: list[str] | None = None) -> int:
    from dvc.cli import main as dvc_main

    args = list(sys.argv[1:] if argv is None else argv)
    # DVC writes " ".join(sys.argv) into its lock file as the holder's command line
    sys.argv = [os.environ.get(LABEL_ENV, "dvc"), *args]
    return dvc_main(args)


if __name__ == "__main__":
    sys.exit(main())
