"""A content-addressed cache of teacher calls, in SQLite, and what every teacher client does
around it.

The key is the sha256 of everything that determines an answer: where it comes from (the
endpoint's base URL, or a fingerprint of a local model folder), the model, the version of
the prompt template the messages were made from, the messages themselves (the image bytes
travel inside them as data URLs, so the image is part of the key) and the decoding
parameters. Never a header: the API key cannot reach the file.

A failure is never frozen. Every answer is stored with its status: `ok` when the teacher's
parser could use it, `rejected` when not. Only `ok` answers are served as answers; a rejected
one is replayed only as a step of a conversation that went on to a usable answer (the model
was shown its mistake and corrected it, `ChatSteps.ask`), so that a rerun follows the same
path and gives the same records. A conversation that ended unusable is asked again, from its
first question, on the next run. Each answer is committed as soon as it arrives, so a run
killed with SIGKILL loses at most the calls that were in flight, and a rerun or a resume
repeats no finished call. Identical calls in flight at the same time (two copies of one
photo, one question asked twice) are sent once and share the answer (single flight), so the
cache never holds two different answers to one key.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Callable

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    content TEXT NOT NULL,
    usage TEXT NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'ok'
)
"""
OK, REJECTED = "ok", "rejected"


def call_key(model: str, messages: list[dict], decoding: dict, scope: dict | None = None) -> str:
    """sha256 over a canonical JSON form (sorted keys), so equal requests share one key.
    `scope` holds what the messages do not show: the endpoint and the prompt version."""
    payload = json.dumps({"model": model, "messages": messages, "decoding": decoding, "scope": scope or {}},
                         sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CallCache:
    """`get`/`put` by key. One connection, used from the thread of the event loop."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: every put is its own committed transaction
        self.db = sqlite3.connect(self.path, isolation_level=None)
        # WAL: a commit is one append to the log, and readers (a second run, a test) never block
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(calls)")}
        if "status" not in columns:  # a cache written before statuses were kept
            self.db.execute("ALTER TABLE calls ADD COLUMN status TEXT NOT NULL DEFAULT 'ok'")

    def get(self, key: str, final: bool = True) -> dict | None:
        """The stored answer to `key`: only a usable one, unless `final` is False."""
        row = self.db.execute("SELECT content, usage, status FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None or (final and row[2] != OK):
            return None
        return {"content": row[0], "usage": json.loads(row[1]), "status": row[2]}

    def put(self, key: str, model: str, content: str, usage: dict, status: str = OK) -> None:
        self.db.execute("INSERT OR REPLACE INTO calls (key, model, content, usage, created, status) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (key, model, content, json.dumps(usage), time.time(), status))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "CallCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def accepts(accept: Callable[[str], object] | None, content: str) -> bool:
    """Would the caller use this answer? `accept` raises ValueError (a ParseError) if not."""
    if accept is None:
        return True
    try:
        accept(content)
    except ValueError:
        return False
    return True


class CachedCalls:
    """The cache, single flight and the store-only-what-parses rule, for every transport: a
    subclass says how a call is made (`_fetch`) and what decoding parameters are (`decoding`);
    `self.usage` needs `cache_hits` and `merged` counters."""

    def __init__(self, cache: CallCache, scope: dict):
        self.cache, self.scope = cache, dict(scope)
        self.inflight: dict[str, asyncio.Future] = {}

    def decoding(self, max_tokens: int) -> dict:
        raise NotImplementedError

    async def _fetch(self, model: str, messages: list[dict], decoding: dict, key: str) -> tuple[str, dict]:
        """(content, usage) of one call that the cache could not answer."""
        raise NotImplementedError

    def _settled(self, key: str) -> None:
        """Called once the answer to `key` was stored or judged unusable (a batch transport
        forgets its downloaded copy here)."""

    def key(self, model: str, messages: list[dict], max_tokens: int, prompt: str = "") -> str:
        return call_key(model, messages, self.decoding(max_tokens), {**self.scope, "prompt": prompt})

    def lookup(self, model: str, messages: list[dict], max_tokens: int, prompt: str = "") -> dict | None:
        """The stored answer to this chat whatever its status (for a replay), or None."""
        return self.cache.get(self.key(model, messages, max_tokens, prompt), final=False)

    async def complete(self, model: str, messages: list[dict], max_tokens: int,
                       accept: Callable[[str], object] | None = None, prompt: str = "", fresh: bool = False) -> str:
        """The answer to one chat: from the cache (unless `fresh`), from an identical call in
        flight, or fetched; stored as usable or rejected as `accept` judges it. `prompt` is the
        template's version."""
        key = self.key(model, messages, max_tokens, prompt)
        hit = None if fresh else self.cache.get(key)
        if hit is not None:
            self.usage.cache_hits += 1
            return hit["content"]
        shared = self.inflight.get(key)
        if shared is not None:
            self.usage.merged += 1
            return await asyncio.shield(shared)
        future = asyncio.get_running_loop().create_future()
        self.inflight[key] = future
        try:
            content, usage = await self._fetch(model, messages, self.decoding(max_tokens), key)
            # committed now: a kill after this loses nothing
            self.cache.put(key, model, content, usage, OK if accepts(accept, content) else REJECTED)
            self._settled(key)
            future.set_result(content)
            return content
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            del self.inflight[key]
            if future.done() and not future.cancelled():
                future.exception()  # marks it retrieved when no second caller waited on it
