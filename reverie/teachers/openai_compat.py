"""A teacher behind any OpenAI-compatible chat-completions server (OpenAI, Gemini's
compatible endpoint, vLLM, Ollama, a local server): the paper's three steps as prompt files.

  (a) QA collection, with the image: several questions, each with a correct and a confusing
      answer, as JSON (prompts/qa.txt);
  (b) a positive and a negative rationale per question, with the image
      (prompts/rationale_positive.txt, prompts/rationale_negative.txt);
  (c) the text-only consistency judge: do the rationales contradict each other or the
      answers? (prompts/judge.txt)

Where the reference scripts run one blocking request per process, parse with literal
evaluation and lose a result on any exception, this client runs requests concurrently under
a limit, paces them by request and token rate, backs off with jitter on 429/5xx/time-outs
(honouring Retry-After), caches every answer by content hash as soon as it arrives
(`cache.py`), so a rerun or a resume after a kill repeats no finished call, and quarantines
an unusable answer with its reason after one retry that shows the model its parse error.
The API key is read from the environment at start-up and sent only in a request header; it
is scrubbed from every error message.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import mimetypes
import os
import random
import time
from collections import deque
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from string import Template

import httpx
from tqdm import tqdm

from ..data_import import ImageEntry
from ..records import make_record
from .cache import CallCache, call_key
from .judge import Verdict
from .parsing import ParseError, image_entries, parse_judge, parse_questions, parse_rationale
from .scene_graph import QAItem

PROMPTS = Path(__file__).parent / "prompts"
RETRYABLE = {408, 409, 425, 429}  # and every 5xx
FATAL = {401, 403, 404}  # a wrong key, URL or model name: no item would succeed, so stop
IMAGE_TOKENS_ESTIMATE = 800  # for the token-rate budget before `usage` is known (a 512px tile costs ~765)


class TeacherError(RuntimeError):
    """A call that failed for good (retries used up, or a request the server rejects)."""


class TeacherConfigError(TeacherError):
    """The server refuses the set-up itself (key, URL, model): the run stops."""


def load_prompts() -> dict[str, Template]:
    return {name: Template((PROMPTS / f"{name}.txt").read_text())
            for name in ("qa", "rationale_positive", "rationale_negative", "judge")}


def prompts_digest() -> str:
    h = hashlib.sha256()
    for name in sorted(p.name for p in PROMPTS.glob("*.txt")):
        h.update(name.encode() + (PROMPTS / name).read_bytes())
    return h.hexdigest()[:12]


def image_data_url(path: str | Path) -> str:
    mime = mimetypes.guess_type(str(path))[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def content_parts(message: dict) -> list[dict]:
    """A chat message's content as a list of parts: a plain string is one text part."""
    content = message["content"]
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class SlidingWindowLimiter:
    """At most `limit` units (requests or tokens) started in any `window_s` seconds. Waiters
    queue on a lock, so they are served in arrival order."""

    def __init__(self, limit: int, window_s: float = 60.0):
        self.limit, self.window_s = limit, window_s
        self.events: deque[list[float]] = deque()  # [start time, units]
        self.lock = asyncio.Lock()

    async def acquire(self, units: float) -> list[float]:
        units = min(units, self.limit)  # a request larger than the budget would otherwise wait forever
        async with self.lock:
            while True:
                now = time.monotonic()
                while self.events and self.events[0][0] <= now - self.window_s:
                    self.events.popleft()
                if sum(e[1] for e in self.events) + units <= self.limit:
                    entry = [now, units]
                    self.events.append(entry)
                    return entry
                await asyncio.sleep(self.events[0][0] + self.window_s - now + 1e-3)

    @staticmethod
    def settle(entry: list[float], units: float) -> None:
        """Replaces an estimate by the measured amount (token usage is known only afterwards)."""
        entry[1] = units


@dataclass
class Usage:
    calls: int = 0  # answered requests (not served by the cache)
    cache_hits: int = 0
    requests: int = 0  # HTTP attempts, retries included
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost_usd: float = 0.0


@asynccontextmanager
async def open_lanes(settings):
    """`concurrency` HTTP clients of one keep-alive connection each. A request holds a lane
    for its duration, so lanes are the concurrency limit. One client with a large pool would
    do the same, but httpcore's pool scans every connection on every request (O(connections
    x queued), encode/httpcore#1035): at 128 connections that costs ~15 ms of CPU per request."""
    ssl_context = httpx.create_ssl_context()  # built once: loading the CA bundle per client is slow
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=settings.timeout_s,
                                                                 verify=ssl_context))
               for _ in range(settings.concurrency)]


class ChatClient:
    """One chat-completions endpoint: cache, concurrency, rate limits, retries, usage."""

    def __init__(self, settings, cache: CallCache, lanes: list[httpx.AsyncClient]):
        self.s, self.cache = settings, cache
        self._key = os.environ.get(settings.api_key_env) or None  # local servers need none
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self.lanes: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for lane in lanes:
            self.lanes.put_nowait(lane)
        self.rpm = SlidingWindowLimiter(settings.rpm) if settings.rpm else None
        self.tpm = SlidingWindowLimiter(settings.tpm) if settings.tpm else None
        self.usage = Usage()

    def __repr__(self) -> str:  # never shows the key
        return f"ChatClient({self.url!r})"

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def complete(self, model: str, messages: list[dict], max_tokens: int) -> str:
        decoding = {"temperature": self.s.temperature, "max_tokens": max_tokens}
        key = call_key(model, messages, decoding)
        hit = self.cache.get(key)
        if hit is not None:
            self.usage.cache_hits += 1
            return hit["content"]
        content, usage = await self._post(model, messages, decoding)
        self.cache.put(key, model, content, usage)  # committed now: a kill after this loses nothing
        self._account(usage)
        return content

    def _account(self, usage: dict) -> None:
        u, s = self.usage, self.s
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        u.calls += 1
        u.prompt_tokens += prompt
        u.completion_tokens += completion
        u.estimated_cost_usd += prompt / 1000 * s.price_per_1k_prompt + completion / 1000 * s.price_per_1k_completion

    def _estimate_tokens(self, messages: list[dict], max_tokens: int) -> int:
        chars, images = 0, 0
        for m in messages:
            for part in content_parts(m):
                if part.get("type") == "image_url":
                    images += 1
                else:
                    chars += len(part.get("text") or "")
        return chars // 4 + images * IMAGE_TOKENS_ESTIMATE + max_tokens

    async def _post(self, model: str, messages: list[dict], decoding: dict) -> tuple[str, dict]:
        body = {"model": model, "messages": messages, **decoding}
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        problem = "no attempt made"
        for attempt in range(self.s.max_retries + 1):
            retry_after = None
            async with self._lane() as http:
                if self.rpm:
                    await self.rpm.acquire(1)
                budget = await self.tpm.acquire(self._estimate_tokens(messages, decoding["max_tokens"])) if self.tpm else None
                self.usage.requests += 1
                try:
                    async with asyncio.timeout(self.s.timeout_s):  # a total deadline, not per read
                        response = await http.post(self.url, json=body, headers=headers)
                except (TimeoutError, httpx.TimeoutException):
                    problem = f"no answer within {self.s.timeout_s:g} s"
                except httpx.TransportError as exc:
                    problem = f"connection error ({type(exc).__name__})"
                else:
                    status = response.status_code
                    if status == 200:
                        try:
                            return self._content(response, budget)
                        except (ValueError, KeyError, IndexError, TypeError):
                            problem = "the server's answer is not a chat completion"
                    elif status in FATAL:
                        raise TeacherConfigError(
                            f"HTTP {status} from {self.url} for model {model!r}: check base_url, the model name and "
                            f"the key in ${self.s.api_key_env} ({self.scrub(response.text[:200])})")
                    elif status in RETRYABLE or status >= 500:
                        problem = f"HTTP {status}"
                        retry_after = retry_after_seconds(response.headers.get("retry-after"))
                    else:
                        raise TeacherError(f"HTTP {status} from {model!r}: {self.scrub(response.text[:300])}")
            if attempt == self.s.max_retries:
                break
            self.usage.retries += 1
            # exponential back-off with jitter, so that concurrent callers do not retry in step;
            # a server's Retry-After is a floor (it knows its own quota window)
            delay = min(self.s.backoff_max_s, self.s.backoff_base_s * 2 ** attempt) * random.uniform(0.5, 1.0)
            await asyncio.sleep(max(delay, retry_after or 0.0))
        raise TeacherError(f"{model!r}: gave up after {self.s.max_retries + 1} attempt(s), last: {problem}")

    @asynccontextmanager
    async def _lane(self):
        http = await self.lanes.get()  # waiters are served first come, first served
        try:
            yield http
        finally:
            self.lanes.put_nowait(http)

    def _content(self, response: httpx.Response, budget) -> tuple[str, dict]:
        data = response.json()
        content = data["choices"][0]["message"]["content"]
        if isinstance(content, list):  # some servers answer in content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        usage = {k: v for k, v in (data.get("usage") or {}).items() if k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        if budget is not None and usage.get("total_tokens"):
            SlidingWindowLimiter.settle(budget, usage["total_tokens"])
        return content or "", usage


class OpenAITeacher:
    """The three steps for one image, each answer parsed, retried once, or quarantined."""

    name = "openai"

    def __init__(self, generate, client: ChatClient):
        self.g, self.o, self.client = generate, generate.openai, client
        self.prompts = load_prompts()
        self.digest = prompts_digest()

    async def ask(self, model: str, messages: list[dict], parse):
        """Returns (value, problems); a malformed answer is asked again once, with the parse
        error appended; a second failure raises `ParseError` for the caller to quarantine."""
        content = await self.client.complete(model, messages, self.o.max_tokens)
        try:
            value, problems = parse(content)
            if not problems:
                return value, []
            error = "; ".join(problems)
        except ParseError as exc:
            error = str(exc)
        again = messages + [
            {"role": "assistant", "content": content},
            {"role": "user", "content": f"Your answer could not be used: {error}. "
                                        "Answer again, in exactly the format asked for."}]
        return parse(await self.client.complete(model, again, self.o.max_tokens))

    async def records_for_image(self, entry: ImageEntry) -> tuple[list[dict], list[dict]]:
        image = {"type": "image_url", "image_url": {"url": image_data_url(entry.path)}}
        qa_text = self.prompts["qa"].substitute(questions_per_image=self.g.questions_per_image)
        where = {"image_id": entry.image_id, "image": entry.relpath}
        try:
            questions, problems = await self.ask(
                self.o.qa_model, [{"role": "user", "content": [{"type": "text", "text": qa_text}, image]}], parse_questions)
        except (TeacherError, ParseError) as exc:
            if isinstance(exc, TeacherConfigError):
                raise
            return [], [{"reason": f"qa: {self.client.scrub(str(exc))}", **where}]
        quarantined = [{"reason": f"qa: {p}", **where} for p in problems]
        results = await asyncio.gather(*(self.record(entry, j, q, image)
                                         for j, q in enumerate(questions[: self.g.questions_per_image])))
        records = [r for r, _ in results if r is not None]
        quarantined += [q for _, q in results if q is not None]
        return records, quarantined

    async def record(self, entry: ImageEntry, j: int, q, image: dict) -> tuple[dict | None, dict | None]:
        record_id = f"{entry.image_id}-q{j}"
        question = q.record_question()
        fields = {"question": question, "correct_answer": q.correct_answer, "confusing_answer": q.confusing_answer}
        step = "rationale"
        try:
            def with_image(name: str) -> list[dict]:
                text = self.prompts[name].substitute(fields)
                return [{"role": "user", "content": [{"type": "text", "text": text}, image]}]

            # both run to the end even when one fails, so the other's answer is cached
            both = await asyncio.gather(
                self.ask(self.o.rationale_model, with_image("rationale_positive"), parse_rationale),
                self.ask(self.o.rationale_model, with_image("rationale_negative"), parse_rationale),
                return_exceptions=True)
            for outcome in both:
                if isinstance(outcome, BaseException):
                    raise outcome
            (positive, _), (negative, _) = both
            step = "judge"
            judge_text = self.prompts["judge"].substitute(fields, correct_rationale=positive, incorrect_rationale=negative)
            answer, _ = await self.ask(self.o.judge_model, [{"role": "user", "content": judge_text}], parse_judge)
        except TeacherConfigError:
            raise
        except (TeacherError, ParseError) as exc:
            return None, {"reason": f"{step}: {self.client.scrub(str(exc))}", "id": record_id,
                          "image_id": entry.image_id, "image": entry.relpath, "question": question}
        item = QAItem(question, q.question_type, q.reasoning, q.correct_answer, q.confusing_answer, q.options,
                      support=[], refute=[], correct_rationale=positive, incorrect_rationale=negative)
        verdict = Verdict(not answer.contradiction, answer.reason if answer.contradiction else "")
        provenance = {"teacher": self.name, "judge": self.name, "qa_model": self.o.qa_model,
                      "rationale_model": self.o.rationale_model, "judge_model": self.o.judge_model,
                      "template_version": self.g.template_version, "prompts_sha": self.digest,
                      "split": entry.split, "injected_error": None}
        return make_record(record_id, entry.relpath, entry.split, item, verdict, provenance), None


async def teach_images(teacher, entries, in_flight: int, progress: bool) -> list:
    """Runs the three steps for every image, at most `in_flight` images at once, with a
    progress bar; results come back in the order of `entries`."""
    slots = asyncio.Semaphore(in_flight)
    bar = tqdm(total=len(entries), desc="teacher", unit="img", disable=not progress, mininterval=1.0)

    async def one(entry):
        async with slots:
            result = await teacher.records_for_image(entry)
        bar.update()
        return result

    try:
        return await asyncio.gather(*(one(e) for e in entries))
    finally:
        bar.close()


async def agenerate_with_openai(images, generate, cache_path: str | Path | None = None,
                                progress: bool = True) -> tuple[list[dict], list[dict], dict]:
    """`generate_with_openai` for callers that already run an event loop."""
    entries = image_entries(images)
    settings = generate.openai
    started = time.perf_counter()
    with CallCache(cache_path or settings.cache_path) as cache:
        async with open_lanes(settings) as lanes:
            client = ChatClient(settings, cache, lanes)
            teacher = OpenAITeacher(generate, client)
            # bounds the images in progress (and their base64 copies in memory) while keeping
            # enough work queued to fill every request slot
            results = await teach_images(teacher, entries, 2 * settings.concurrency, progress)
    records = [r for rs, _ in results for r in rs]
    quarantined = [q for _, qs in results for q in qs]
    metrics = {**asdict(client.usage), "quarantined": len(quarantined), "images": len(entries),
               "records": len(records), "seconds": time.perf_counter() - started}
    return records, quarantined, metrics


def generate_with_openai(images, generate, cache_path: str | Path | None = None,
                         progress: bool = True) -> tuple[list[dict], list[dict], dict]:
    """Records for `images` (ImageEntry objects or (image_id, path) pairs) through the three
    steps, in input order with ids `{image_id}-q{j}`. Returns (records, quarantined, metrics):
    records in `records.make_record`'s format (judge-rejected ones included, marked by their
    verdict), calls that failed for good with their reason, and usage (calls, cache_hits,
    tokens, estimated cost). `generate` is the `generate` section of the params."""
    return asyncio.run(agenerate_with_openai(images, generate, cache_path, progress))
