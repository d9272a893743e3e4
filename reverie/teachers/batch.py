"""The provider's batch endpoint as the transport of the same teacher steps (`mode: batch`).

OpenAI's Batch API (and the providers that copy it) answers chat completions at about half
the price within a completion window (24 h): upload a JSONL file of requests (`custom_id`,
`method`, `url`, `body`) to `/files` with purpose `batch`, create a batch of it at
`/batches`, poll `/batches/{id}` until it is completed (or failed, expired, cancelled), then
download the output and error files from `/files/{id}/content`, whose lines carry the
`custom_id`, the response's status code and body, or an error, in any order. One batch holds
one model's requests, at most `batch_max_requests` of them and `batch_max_mb` of file.

`BatchClient` is a `CachedCalls` like the online client, with the same cache keys, so the two
modes share answers: the teacher's steps run unchanged, and whatever they ask while every
image waits is gathered into one batch per model (the QA step of all images, then all their
rationales, then all the judgements, then the re-asks). Each submitted request is recorded in
the cache database before the batch is created (`batch_requests`, keyed by the call's key),
each downloaded answer as soon as the output file is read (`batch_results`), so a run killed
at any moment resumes without submitting finished work again: a call whose answer was
downloaded is answered from there, a call in a batch still running waits for that batch (found
by its input file if the kill fell between upload and creation), and only calls never
submitted go into a new batch.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .cache import CachedCalls, CallCache
from .chat_limits import account
from .chat_transport import RETRYABLE, Endpoint, TeacherConfigError, TeacherError, chat_content

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,            -- the provider's batch id, or 'file:<input file id>' until it is created
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    status TEXT NOT NULL,           -- submitted, or downloaded once its answers are stored
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_requests (key TEXT PRIMARY KEY, batch_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batch_results (key TEXT PRIMARY KEY, content TEXT, usage TEXT, error TEXT, retryable INTEGER);
"""
ENDPOINT = "/v1/chat/completions"  # the `url` of each line and the batch's endpoint, as OpenAI names it
DONE = ("completed", "failed", "expired", "cancelled")


@dataclass
class Waiting:
    model: str
    body: dict
    future: asyncio.Future
    tries: int = 0


@dataclass
class BatchUsage:
    batches: int = 0  # batches created by this run
    batches_resumed: int = 0  # batches of an earlier run this run waited for
    batch_requests: int = 0  # requests submitted by this run
    batch_results_reused: int = 0  # answers downloaded by an earlier run, used now


class BatchClient(CachedCalls):
    """`complete` answered by the cache, by answers an earlier run downloaded, by a batch
    still running, or by a new batch. Use inside `async with client.running():`."""

    def __init__(self, settings, cache: CallCache, endpoint: Endpoint):
        super().__init__(cache, {"endpoint": endpoint.base})
        self.s, self.endpoint, self.usage = settings, endpoint, endpoint.usage
        self.db = cache.db
        self.db.executescript(SCHEMA)
        self.queue: dict[str, Waiting] = {}  # calls for the next batch, in arrival order
        self.waiting: dict[str, Waiting] = {}  # calls whose batch is submitted
        self.active: set[str] = set()  # batch ids to poll
        self.wake = asyncio.Event()
        self.batch = BatchUsage()

    @property
    def batch_usage(self) -> dict:
        from dataclasses import asdict

        return asdict(self.batch)

    def scrub(self, text: str) -> str:
        return self.endpoint.scrub(text)

    def decoding(self, max_tokens: int) -> dict:
        return {"temperature": self.s.temperature, "max_tokens": max_tokens}

    # ---- the caller's side ------------------------------------------------------------------
    async def _fetch(self, model: str, messages: list[dict], decoding: dict, key: str) -> tuple[str, dict]:
        row = self.db.execute("SELECT content, usage, error, retryable FROM batch_results WHERE key = ?", (key,)).fetchone()
        if row is not None:  # downloaded by a run that stopped before using it
            self.batch.batch_results_reused += 1
            return self._answer(row)
        future = asyncio.get_running_loop().create_future()
        waiting = Waiting(model, {"model": model, "messages": messages, **decoding}, future)
        pending = self.db.execute("SELECT batch_id FROM batch_requests WHERE key = ?", (key,)).fetchone()
        if pending is not None:  # submitted by a run that was stopped: wait for that batch
            self.waiting[key] = waiting
            if pending[0] not in self.active:
                self.active.add(pending[0])
                self.batch.batches_resumed += 1
        else:
            self.queue[key] = waiting
        self.wake.set()
        return await future

    def _answer(self, row) -> tuple[str, dict]:
        content, usage, error = row[0], json.loads(row[1] or "{}"), row[2]
        if error is not None:
            raise TeacherError(error)
        account(self.usage, self.s, usage, self.s.batch_price_factor)
        return content, usage

    def _settled(self, key: str) -> None:
        # stored in the cache (or judged unusable): the downloaded copy has served its purpose
        self.db.execute("DELETE FROM batch_results WHERE key = ?", (key,))

    # ---- the worker ---------------------------------------------------------------------------
    @asynccontextmanager
    async def running(self):
        worker = asyncio.create_task(self._serve())
        try:
            yield self
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    async def _serve(self) -> None:
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                await self._settle()
                await self._recover_unnamed()
                if self.queue:
                    await self._submit_queue()
                if self.active:
                    await self._poll_until_done()
                if self.queue or self.active:
                    self.wake.set()
        except BaseException as exc:  # no caller may wait forever: they all get the reason, and the run stops
            stop = exc if isinstance(exc, TeacherConfigError) else TeacherConfigError(
                f"batch mode at {self.endpoint.base} stopped: {self.scrub(str(exc)) or repr(exc)}")
            for w in [*self.queue.values(), *self.waiting.values()]:
                if not w.future.done():
                    w.future.set_exception(stop)
            raise

    async def _settle(self) -> None:
        """Lets every image reach its next call before a batch is cut: the queue must stop
        growing for a few event-loop turns (replays from the cache run without waiting)."""
        last, still = -1, 0
        while still < 5:
            await asyncio.sleep(0 if still < 4 else 0.01)
            still = still + 1 if len(self.queue) == last else 0
            last = len(self.queue)

    async def _recover_unnamed(self) -> None:
        """A batch whose file was uploaded but whose creation was not recorded (a kill in
        between): find it by its input file, or forget it so that its calls go again."""
        for (row_id, file_id) in self.db.execute(
                "SELECT id, input_file_id FROM batches WHERE id LIKE 'file:%' AND endpoint = ?", (self.endpoint.base,)).fetchall():
            if row_id not in self.active:
                continue
            found = await self._find_batch(file_id)
            with self.db:
                if found is None:
                    keys = [k for (k,) in self.db.execute("SELECT key FROM batch_requests WHERE batch_id = ?", (row_id,))]
                    self.db.execute("DELETE FROM batch_requests WHERE batch_id = ?", (row_id,))
                    self.db.execute("DELETE FROM batches WHERE id = ?", (row_id,))
                    for k in keys:
                        if k in self.waiting:
                            self.queue[k] = self.waiting.pop(k)
                else:
                    self.db.execute("UPDATE batch_requests SET batch_id = ? WHERE batch_id = ?", (found, row_id))
                    self.db.execute("UPDATE batches SET id = ? WHERE id = ?", (found, row_id))
                    self.active.add(found)
            self.active.discard(row_id)

    async def _submit_queue(self) -> None:
        queue, self.queue = self.queue, {}
        by_model: dict[str, list[tuple[str, Waiting]]] = {}
        for key, w in queue.items():
            by_model.setdefault(w.model, []).append((key, w))
        try:
            for model, items in by_model.items():
                for chunk in self._chunks(items):
                    await self._submit(model, chunk)
        except BaseException:
            # the calls not yet in a created batch wait in the queue again, where the stop reaches them
            self.queue.update({k: w for k, w in queue.items() if k not in self.waiting})
            raise

    def _chunks(self, items: list[tuple[str, Waiting]]):
        limit_bytes = int(self.s.batch_max_mb * (1 << 20))
        chunk, size = [], 0
        for key, w in items:
            line = json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": w.body},
                              ensure_ascii=False).encode("utf-8") + b"\n"
            if chunk and (len(chunk) == self.s.batch_max_requests or size + len(line) > limit_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append((key, w, line))
            size += len(line)
        if chunk:
            yield chunk

    async def _submit(self, model: str, chunk: list) -> None:
        data = b"".join(line for _, _, line in chunk)
        uploaded = await self.endpoint.request(
            "POST", "/files", files={"file": ("reverie-batch.jsonl", data, "application/jsonl")},
            data={"purpose": "batch"}, read=lambda r, _: r.json()["id"], what="the batch file upload")
        placeholder = f"file:{uploaded}"
        with self.db:  # recorded before the batch exists: a kill from here on submits nothing twice
            self.db.execute("INSERT INTO batches (id, endpoint, model, input_file_id, status, created) VALUES (?, ?, ?, ?, ?, ?)",
                            (placeholder, self.endpoint.base, model, uploaded, "submitted", time.time()))
            self.db.executemany("INSERT OR REPLACE INTO batch_requests (key, batch_id) VALUES (?, ?)",
                                [(key, placeholder) for key, _, _ in chunk])
        batch_id = await self._create(uploaded)
        with self.db:
            self.db.execute("UPDATE batch_requests SET batch_id = ? WHERE batch_id = ?", (batch_id, placeholder))
            self.db.execute("UPDATE batches SET id = ? WHERE id = ?", (batch_id, placeholder))
        for key, w, _ in chunk:
            self.waiting[key] = w
        self.active.add(batch_id)
        self.batch.batches += 1
        self.batch.batch_requests += len(chunk)

    async def _create(self, input_file_id: str) -> str:
        """POST /batches is not idempotent: before each try after the first, look for a batch
        the last try created although its answer was lost."""
        body = {"input_file_id": input_file_id, "endpoint": ENDPOINT, "completion_window": "24h",
                "metadata": {"source": "reverie-pipeline"}}
        for attempt in range(self.s.max_retries + 1):
            if attempt:
                found = await self._find_batch(input_file_id)
                if found is not None:
                    return found
                await asyncio.sleep(min(self.s.backoff_max_s, self.s.backoff_base_s * 2 ** attempt) * random.uniform(0.5, 1))
            try:
                return await self.endpoint.request("POST", "/batches", json=body, read=lambda r, _: r.json()["id"],
                                                   what="the batch creation", retries=0)
            except TeacherConfigError:
                raise
            except TeacherError as exc:
                problem = exc
        raise problem

    async def _find_batch(self, input_file_id: str) -> str | None:
        batches = await self.endpoint.request("GET", "/batches", params={"limit": 100},
                                              read=lambda r, _: r.json()["data"], what="the batch list")
        return next((b["id"] for b in batches if b.get("input_file_id") == input_file_id), None)

    async def _poll_until_done(self) -> None:
        while self.active:
            for batch_id in sorted(self.active):
                batch = await self.endpoint.request("GET", f"/batches/{batch_id}", read=lambda r, _: r.json(),
                                                    what=f"batch {batch_id}")
                if batch.get("status") in DONE:
                    await self._collect(batch)
                    self.active.discard(batch_id)
            if self.active:
                await asyncio.sleep(self.s.batch_poll_s)

    async def _collect(self, batch: dict) -> None:
        """Stores every answer of a finished batch, then hands them to their callers."""
        batch_id, status = batch["id"], batch["status"]
        keys = [k for (k,) in self.db.execute("SELECT key FROM batch_requests WHERE batch_id = ?", (batch_id,))]
        if status == "failed":  # the file itself was refused: nothing in it can succeed as sent
            errors = "; ".join(str(e.get("message", e)) for e in ((batch.get("errors") or {}).get("data") or []))[:500]
            self._forget(batch_id)
            stop = TeacherConfigError(f"batch {batch_id} at {self.endpoint.base} failed validation: {errors or 'no reason given'}")
            for k in keys:
                w = self.waiting.pop(k, None)
                if w is not None and not w.future.done():
                    w.future.set_exception(stop)
            return
        rows = {}
        for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
            if file_id:
                text = await self.endpoint.request("GET", f"/files/{file_id}/content", read=lambda r, _: r.text,
                                                   what=f"the output of batch {batch_id}")
                for line in text.splitlines():
                    if line.strip():
                        key, row = self._result(json.loads(line))
                        if key in keys:
                            rows[key] = row
        with self.db:  # answers stored before anyone sees them: a kill after this downloads nothing again
            # (errors are not kept: like an online failure, the next run asks again)
            self.db.executemany("INSERT OR REPLACE INTO batch_results (key, content, usage, error, retryable) "
                                "VALUES (?, ?, ?, ?, ?)", [(k, *row) for k, row in rows.items() if row[2] is None])
            self._forget(batch_id)
        for k in keys:
            w = self.waiting.pop(k, None)
            if w is None or w.future.done():
                continue
            row = rows.get(k)
            if row is not None and row[2] is None:
                self._resolve(w, k, row)
            elif w.tries < self.s.max_retries and (row is None or row[3]):  # expired, or a 429/5xx: send again
                w.tries += 1
                self.queue[k] = w
                self.wake.set()
            else:
                self._resolve(w, k, row or (None, None, f"batch {batch_id} {status} without an answer", 1))

    def _resolve(self, w: Waiting, key: str, row) -> None:
        try:
            w.future.set_result(self._answer(row))
        except TeacherError as exc:
            w.future.set_exception(exc)

    def _forget(self, batch_id: str) -> None:
        self.db.execute("DELETE FROM batch_requests WHERE batch_id = ?", (batch_id,))
        self.db.execute("UPDATE batches SET status = 'downloaded' WHERE id = ?", (batch_id,))

    def _result(self, line: dict) -> tuple[str, tuple]:
        """(key, (content, usage, error, retryable)) of one line of an output or error file."""
        key, response, error = line.get("custom_id"), line.get("response") or {}, line.get("error")
        status = response.get("status_code")
        if status == 200 and not error:
            try:
                content, usage = chat_content(response.get("body") or {})
                return key, (content, json.dumps(usage), None, 0)
            except (KeyError, IndexError, TypeError, ValueError):
                return key, (None, None, "the batch answer is not a chat completion", 1)
        body = response.get("body") or {}
        message = (error or {}).get("message") or ((body.get("error") or {}).get("message") if isinstance(body, dict) else None)
        retryable = status is None or status in RETRYABLE or (isinstance(status, int) and status >= 500)
        text = self.scrub(f"HTTP {status} in batch: {message}" if status else f"batch error: {message}")
        return key, (None, None, text[:300], int(retryable))
