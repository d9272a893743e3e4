"""Atomic file output: write to a temporary sibling, then rename, so that a stage killed
half-way never leaves a half-written file that a later stage would trust. And the digest of a
model folder that cached teacher answers and training checkpoints are keyed by."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _finite(value):
    """NaN and infinity are not JSON: they are written as null."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: str | Path, data, indent: int = 2) -> None:
    write_text(path, json.dumps(_finite(data), indent=indent, sort_keys=False, allow_nan=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    count = 0
    with atomic_path(path) as tmp, tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Builds a directory under a temporary name and swaps it into place on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


class BadLine(ValueError):
    def __init__(self, path: Path, line_no: int, reason: str, text: str):
        super().__init__(f"{path}:{line_no}: {reason}")
        self.path, self.line_no, self.reason, self.text = path, line_no, reason, text


def read_jsonl(path: str | Path, on_bad_line=None) -> list[dict]:
    """Reads JSONL. A line that does not parse raises `BadLine`, or goes to `on_bad_line`
    (which quarantines it) when one is given; it is never silently skipped."""
    path = Path(path)
    rows = []
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("a JSON object was expected")
            except ValueError as exc:
                bad = BadLine(path, line_no, f"unreadable JSON line ({exc})", line.rstrip("\n"))
                if on_bad_line is None:
                    raise bad from None
                on_bad_line(bad)
                continue
            rows.append(row)
    return rows


LARGE_FILE = 64 << 20  # files above this (weights) are fingerprinted by sample, not read whole
SAMPLE_BYTES = 1 << 20  # of a large file's head and tail


def model_fingerprint(path: str | Path) -> str:
    """A digest of a model folder that changes when its weights, config, tokenizer or chat
    template change, so that no cached answer or checkpoint is reused for another model. Small files are
    hashed whole. Large ones (weights) by size, head, tail and modification time, so that a
    15 GB model costs milliseconds: a fine-tune may leave a shard's head and tail intact, and
    the time catches its rewrite; a copied model that got new times only misses the cache."""
    root = Path(path)
    h = hashlib.sha256()
    # a .cache folder inside the model (hub downloads) is left out; one above it (~/.cache) is not
    for file in sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.relative_to(root).parts):
        stat = file.stat()
        h.update(f"{file.relative_to(root).as_posix()}:{stat.st_size}".encode())
        with file.open("rb") as f:
            if stat.st_size > LARGE_FILE:
                h.update(f"{stat.st_mtime_ns}".encode() + f.read(SAMPLE_BYTES))
                f.seek(-SAMPLE_BYTES, io.SEEK_END)
                h.update(f.read(SAMPLE_BYTES))
            else:
                h.update(f.read())
    return h.hexdigest()[:16]
