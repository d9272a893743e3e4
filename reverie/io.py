"""Atomic file output: write to a temporary sibling, then rename, so that a stage killed
half-way never leaves a half-written file that a later stage would trust. Reading data files
so that every error names the file and the line. And the digest of a model folder that cached
teacher answers and training checkpoints are keyed by."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
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


class DataFileError(ValueError):
    """A data file that cannot be read as it should: the message names the file and, where
    there is one, the line, so that the person who has the file can open it there."""

    def __init__(self, path: str | Path, line: int | None, reason: str):
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")
        self.path, self.line, self.reason = Path(path), line, reason


class BadLine(DataFileError):
    def __init__(self, path: Path, line_no: int, reason: str, text: str):
        super().__init__(path, line_no, reason)
        self.line_no, self.text = line_no, text


def read_text_file(path: str | Path) -> str:
    """A UTF-8 text file; a missing file or bytes that are not UTF-8 name the file (and the line)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(path, None, "file not found") from None
    except IsADirectoryError:
        raise DataFileError(path, None, "is a folder, not a file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataFileError(path, line, f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def load_json_file(path: str | Path):
    """A JSON file; a syntax error names the file, the line and the column."""
    path = Path(path)
    try:
        return json.loads(read_text_file(path))
    except json.JSONDecodeError as exc:
        raise DataFileError(path, exc.lineno, f"column {exc.colno}: not valid JSON ({exc.msg})") from None


_SPACE = re.compile(r"[ \t\n\r]*")


def iter_json_items(path: str | Path) -> Iterator[tuple[int, int | str, object]]:
    """The elements of a JSON file whose top level is a list (index, element) or an object
    (key, value), each with the line it starts on, so that a problem with one entry of a
    large file can be reported where the entry is. A syntax error names the file and line."""
    path = Path(path)
    text = read_text_file(path)
    decoder = json.JSONDecoder()
    pos = _SPACE.match(text, 0).end()
    line, counted = 1, 0

    def line_at(at: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, at)
        counted = at
        return line

    def fail(at: int, reason: str):
        return DataFileError(path, line_at(at), reason)

    if pos >= len(text) or text[pos] not in "[{":
        raise fail(pos, "expected a JSON list or object at the top level")
    is_object, closing = text[pos] == "{", "]" if text[pos] == "[" else "}"
    pos = _SPACE.match(text, pos + 1).end()
    index = 0
    while pos < len(text) and text[pos] != closing:
        start = pos
        try:
            if is_object:
                key, pos = decoder.raw_decode(text, pos)
                if not isinstance(key, str):
                    raise fail(start, "expected a string key")
                pos = _SPACE.match(text, pos).end()
                if text[pos:pos + 1] != ":":
                    raise fail(pos, "expected ':' after a key")
                pos = _SPACE.match(text, pos + 1).end()
            else:
                key = index
            entry_line = line_at(pos)
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataFileError(path, exc.lineno, f"column {exc.colno}: not valid JSON ({exc.msg})") from None
        yield entry_line, key, value
        index += 1
        pos = _SPACE.match(text, pos).end()
        if text[pos:pos + 1] == ",":
            pos = _SPACE.match(text, pos + 1).end()
        elif text[pos:pos + 1] != closing:
            raise fail(pos, f"expected ',' or '{closing}' after an entry")
    if pos >= len(text):
        raise fail(len(text), f"the file ends before its top-level '{closing}' (truncated?)")
    if _SPACE.match(text, pos + 1).end() != len(text):
        raise fail(pos + 1, "text after the end of the top-level JSON value")


def read_jsonl(path: str | Path, on_bad_line=None) -> list[dict]:
    """Reads JSONL. A line that does not parse raises `BadLine`, or goes to `on_bad_line`
    (which quarantines it) when one is given; it is never silently skipped."""
    path = Path(path)
    rows = []
    try:
        f = path.open("rb")  # bytes, split at \n only: JSON strings may hold U+2028 and other line breaks
    except FileNotFoundError:
        raise DataFileError(path, None, "file not found") from None
    with f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            try:
                row = json.loads(raw.decode("utf-8"))
                if not isinstance(row, dict):
                    raise ValueError("a JSON object was expected")
            except ValueError as exc:  # UnicodeDecodeError is one
                bad = BadLine(path, line_no, f"unreadable JSON line ({exc})", line)
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
