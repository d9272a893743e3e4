"""A content-addressed cache of teacher calls, in SQLite.

The key is the sha256 of everything that determines an answer: the model, the messages
(image bytes included, as they travel inside the data URLs) and the decoding parameters.
Nothing else goes into it: no base URL, no header, so the API key can never reach the file.
Each answer is committed as soon as it arrives, so a run killed with SIGKILL loses at most
the calls that were in flight, and a rerun or a resume repeats no finished call.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    content TEXT NOT NULL,
    usage TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def call_key(model: str, messages: list[dict], decoding: dict) -> str:
    """sha256 over a canonical JSON form (sorted keys), so equal requests share one key."""
    payload = json.dumps({"model": model, "messages": messages, "decoding": decoding},
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

    def get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT content, usage FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {"content": row[0], "usage": json.loads(row[1])}

    def put(self, key: str, model: str, content: str, usage: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO calls (key, model, content, usage, created) VALUES (?, ?, ?, ?, ?)",
                        (key, model, content, json.dumps(usage), time.time()))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "CallCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
