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
a limit, paces them by request and token rate, backs off with jitter on 5xx/time-outs, waits
out a 429's Retry-After with every request of the endpoint (without spending retries), caches
every usable answer by content hash as soon as it arrives (`cache.py`: a failure is never
stored, identical calls in flight are sent once), so a rerun or a resume after a kill repeats
no finished call, and asks again, showing the model its parse error, up to
`max_parse_retries` times before it quarantines an unusable answer with its reason and raw
text.

It stops early instead of quarantining a whole run: a base URL that is not http(s), a server
that cannot be reached, a 401/403/404, or more than `fail_fast_error_rate` of the first
`fail_fast_calls` requests failing each end the run within seconds with a
`TeacherConfigError` that names the URL and the params key. With `mode: batch` the same
steps go through the provider's batch endpoint instead (`batch.py`), with the same cache.

The API key is read from the environment at start-up and sent only in a request header; it
is scrubbed from every error message.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import mimetypes
import os
import random
import ssl
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from string import Template

import aiohttp
import certifi
from multidict import CIMultiDictProxy
from tqdm import tqdm

from ..data_import import ImageEntry
from ..records import make_record
from .cache import CachedCalls, CallCache
from .judge import Verdict
from .parsing import ParseError, image_entries, parse_judge, parse_questions, parse_rationale
from .protocol import Taught
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


def prompt_versions() -> dict[str, str]:
    """Each template's own digest: part of the cache key of the calls made from it, so that
    editing the judge's prompt re-asks the judge only."""
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in sorted(PROMPTS.glob("*.txt"))}


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


def retry_after_seconds(value: str | None, ms: str | None = None) -> float | None:
    """Retry-After is either seconds or an HTTP date; OpenAI also sends retry-after-ms, the
    same wait to the millisecond, which wins when present."""
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
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
    queue on a lock, so they are served in arrival order.

    A provider counts a request when it arrives, a little after we start it, and by how much
    varies (our event loop, its server): pacing at exactly its limit, every request whose delay
    is shorter than that of the one `limit` places before it is refused with a 429. So a unit
    holds its place `guard` x `window_s` longer than the window, and its time is taken again
    when the request is sent (`restamp`); a refused request is refunded (`settle` to 0)."""

    def __init__(self, limit: int, window_s: float = 60.0, guard: float = 0.01):
        self.limit, self.window_s = limit, window_s
        self.hold_s = window_s * (1 + guard)
        self.events: deque[list[float]] = deque()  # [start time, units]
        self.lock = asyncio.Lock()
        self.freed = asyncio.Event()  # a unit given back before its time: wakes the waiter

    async def acquire(self, units: float) -> list[float]:
        units = min(units, self.limit)  # a request larger than the budget would otherwise wait forever
        async with self.lock:
            while True:
                now = time.monotonic()
                if self.events and min(e[0] for e in self.events) <= now - self.hold_s:
                    # not only from the left: a restamped entry may be newer than the one after it
                    self.events = deque(e for e in self.events if e[0] > now - self.hold_s)
                if sum(e[1] for e in self.events) + units <= self.limit:
                    entry = [now, units]
                    self.events.append(entry)
                    return entry
                self.freed.clear()
                try:
                    await asyncio.wait_for(self.freed.wait(), min(e[0] for e in self.events) + self.hold_s - now + 1e-3)
                except TimeoutError:
                    pass

    def settle(self, entry: list[float], units: float) -> None:
        """Replaces an estimate by the measured amount (token usage is known only afterwards)."""
        if units < entry[1]:
            self.freed.set()
        entry[1] = units

    @staticmethod
    def restamp(entry: list[float]) -> None:
        """The unit's time is now: the request is being sent (after waiting out a pause)."""
        entry[0] = time.monotonic()


@dataclass
class Budget:
    """What one attempt took from the client's own rate limits: a request and an estimate of
    tokens, each as (limiter, entry), settled when the answer comes."""

    request: tuple[SlidingWindowLimiter, list[float]] | None = None
    tokens: tuple[SlidingWindowLimiter, list[float]] | None = None

    def sending(self) -> None:
        for taken in (self.request, self.tokens):
            if taken is not None:
                SlidingWindowLimiter.restamp(taken[1])

    def settle_tokens(self, total: float) -> None:
        if self.tokens is not None and total:
            self.tokens[0].settle(self.tokens[1], total)

    def refund(self) -> None:
        """A 429: the server did not count the attempt, so neither do we. Kept, it would hold
        a place in our window that the retry then waits for, and pacing at `rpm` would send
        fewer requests than the limit allows."""
        for taken in (self.request, self.tokens):
            if taken is not None:
                taken[0].settle(taken[1], 0)


@dataclass
class Usage:
    calls: int = 0  # answered requests (not served by the cache)
    cache_hits: int = 0
    merged: int = 0  # calls that waited for an identical call in flight instead of being sent
    requests: int = 0  # HTTP attempts, retries included
    retries: int = 0
    rate_limited: int = 0  # 429s with a Retry-After: waited out, not counted against max_retries
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost_usd: float = 0.0


@dataclass(frozen=True)
class Reply:
    """A server's whole answer, read before its connection goes back to the pool; `read`
    callbacks see the status, the (case-insensitive) headers, the bytes, `text` and `json()`."""

    status_code: int
    headers: CIMultiDictProxy
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.content)


class HTTP:
    """One aiohttp session with a keep-alive pool of `concurrency` connections. aiohttp, not
    httpx: at the same concurrency httpx (httpcore over anyio) spent ~2.3 ms of CPU per request
    against ~0.65 ms here, and on a small machine that CPU, not the server, set the throughput
    (benchmarks.teacher: efficiency 0.6 of the concurrency bound with httpx)."""

    def __init__(self, session: aiohttp.ClientSession, proxy: str | None = None):
        self.session, self.proxy = session, proxy

    async def request(self, method: str, url: str, *, headers: dict, json=None, params=None, files=None,
                      data=None) -> Reply:
        if files:  # a multipart upload (the batch input file), with the form's other fields
            form = aiohttp.FormData()
            for name, value in (data or {}).items():
                form.add_field(name, str(value))
            for name, (filename, blob, content_type) in files.items():
                form.add_field(name, blob, filename=filename, content_type=content_type)
            data = form
        async with self.session.request(method, url, headers=headers, json=json, params=params, data=data,
                                        proxy=self.proxy) as r:
            return Reply(r.status, r.headers, await r.read())

    async def get(self, url: str, *, headers: dict) -> Reply:
        return await self.request("GET", url, headers=headers)


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), looked up
    once: aiohttp's `trust_env` looks it up, and netrc, in a worker thread on every request,
    two thread hops that added latency to each call."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    if proxy_bypass(parts.hostname or ""):
        return None
    return getproxies().get(parts.scheme)


@asynccontextmanager
async def open_lanes(settings):
    """`concurrency` lanes over one HTTP pool of as many keep-alive connections. A request
    holds a lane for its duration (first come, first served), so lanes are the concurrency
    limit and the pool never queues. The environment's proxy is honoured, and TLS trusts
    certifi's bundle (as httpx did)."""
    # loading the CA bundle takes ~0.1 s: only for an https endpoint (a local server has none)
    https = settings.base_url.lower().startswith("https:")
    ssl_context = ssl.create_default_context(cafile=certifi.where()) if https else True
    connector = aiohttp.TCPConnector(limit=settings.concurrency, ssl=ssl_context)
    # no total time-out here: `Endpoint.request` puts one deadline around each attempt
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(settings.timeout_s, 10.0))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        http = HTTP(session, env_proxy(settings.base_url))
        yield [http] * settings.concurrency


class FailFast:
    """Watches the first `calls` requests to an endpoint. When more than `max_rate` of them
    have failed (time-outs, connection errors, 5xx, 4xx other than 429: a rate limit is the
    server pacing us, not failing), the endpoint is judged broken and every caller stops with
    one `TeacherConfigError`, instead of each image being retried and quarantined in turn.
    After `calls` requests it stops watching: later failures are retried and quarantined."""

    def __init__(self, calls: int, max_rate: float, url: str, section: str):
        self.calls, self.max_rate, self.url, self.section = calls, max_rate, url, section
        self.seen = self.errors = 0
        self.tripped: TeacherConfigError | None = None

    def check(self) -> None:
        if self.tripped is not None:
            raise self.tripped

    def record(self, problem: str | None) -> None:
        self.check()
        if self.seen >= self.calls:
            return
        self.seen += 1
        self.errors += problem is not None
        if self.errors > self.max_rate * self.calls:  # past the threshold whatever the rest do
            s = self.section
            self.tripped = TeacherConfigError(
                f"{self.errors} of the first {self.seen} requests to {self.url} failed (last: {problem}), more than "
                f"{s}.fail_fast_error_rate={self.max_rate:g} of {s}.fail_fast_calls={self.calls}: stopping. Check "
                f"{s}.base_url, the model names and the server")
            raise self.tripped


class Endpoint:
    """One OpenAI-compatible server: its base URL, the key (sent only in a header and scrubbed
    from every message), the concurrency lanes, retries with back-off and the fail-fast watch.
    The chat client and the batch client make their requests through it."""

    section = "generate.openai"

    def __init__(self, settings, lanes: list[HTTP], usage: Usage):
        self.s, self.usage = settings, usage
        self.base = settings.base_url.rstrip("/")
        self._key = os.environ.get(settings.api_key_env) or None  # local servers need none
        self.lanes: asyncio.Queue[HTTP] = asyncio.Queue()
        for lane in lanes:
            self.lanes.put_nowait(lane)
        self.watch = FailFast(settings.fail_fast_calls, settings.fail_fast_error_rate, self.base, self.section)
        self.first_contact, self.reached = asyncio.Lock(), False
        # a 429 with Retry-After says the key's budget is spent until then, for every request
        # and not only the refused one: no request starts before this (time.monotonic())
        self.paused_until = 0.0

    def __repr__(self) -> str:  # never shows the key
        return f"Endpoint({self.base!r})"

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    async def check_reachable(self) -> None:
        """One GET of `/models` before any paid call: a server that cannot be reached at all (a
        wrong port or host) stops the run in a second, naming the URL and its params key. Any
        HTTP answer, even an error, shows that something listens there."""
        async with self._lane() as http:
            try:
                async with asyncio.timeout(min(self.s.timeout_s, 10.0)):
                    await http.get(self.base + "/models", headers=self.headers)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidURL) as exc:
                raise TeacherConfigError(
                    f"cannot connect to {self.base} ({self.section}.base_url): {type(exc).__name__}: "
                    f"{self.scrub(str(exc))[:200]}") from None
            except (TimeoutError, aiohttp.ClientError):
                pass  # it accepted the connection; slow or odd answers are for the real calls to judge

    async def request(self, method: str, path: str, *, read, what: str, limit=None, retries: int | None = None,
                      **kwargs):
        """`read(response, budget)` of the first 200 answer, retrying time-outs, connection
        errors, 408/409/425/429 and 5xx (and a 200 that `read` cannot use) with back-off.
        `limit()` (awaited before each attempt) returns the `Budget` the attempt took from the
        client's rate limits; `what` names the request in messages ("model 'gpt-4o-mini'").

        A 429 with a Retry-After is the provider pacing us, not a failure: every request of
        this endpoint waits exactly that long (not an exponential back-off on top: that left
        the rate limit idle), the attempt is refunded to our own limits, and it does not spend
        `max_retries`; a call gives up only once it has waited `rate_limit_wait_max_s` in all,
        or at once when one Retry-After is longer (a spent daily quota, not a rate)."""
        if not self.reached:
            async with self.first_contact:  # once, before the first request: not at all when the cache answers everything
                if not self.reached:
                    await self.check_reachable()
                    self.reached = True
        problem = "no attempt made"
        retries = self.s.max_retries if retries is None else retries
        attempt, limited_since = 0, None  # the first 429 of this call that was waited out
        while True:
            self.watch.check()
            retry_after, counted, paced = None, True, False
            async with self._lane() as http:
                await self._wait_out_pause()
                budget = await limit() if limit is not None else None
                await self._wait_out_pause()  # a 429 may have paused the endpoint while this call waited for its budget
                if isinstance(budget, Budget):
                    budget.sending()
                self.watch.check()  # the endpoint may have been judged broken while this call waited
                self.usage.requests += 1
                sent = time.monotonic()
                try:
                    async with asyncio.timeout(self.s.timeout_s):  # a total deadline, not per read
                        response = await http.request(method, self.base + path, headers=self.headers, **kwargs)
                except TimeoutError:  # aiohttp's own time-outs are TimeoutErrors too
                    problem = f"no answer within {self.s.timeout_s:g} s"
                except aiohttp.ClientError as exc:
                    problem = f"connection error ({type(exc).__name__})"
                else:
                    status = response.status_code
                    if status == 200:
                        try:
                            result = read(response, budget)
                        except (ValueError, KeyError, IndexError, TypeError):
                            problem = "the server's answer is not what the API returns"
                        else:
                            self.watch.record(None)
                            return result
                    elif status in FATAL:
                        raise TeacherConfigError(
                            f"HTTP {status} from {self.base}{path} for {what}: check {self.section}.base_url, the model "
                            f"name and the key in ${self.s.api_key_env} ({self.scrub(response.text[:200])})")
                    elif status in RETRYABLE or status >= 500:
                        problem = f"HTTP {status}"
                        retry_after = retry_after_seconds(response.headers.get("retry-after"),
                                                          response.headers.get("retry-after-ms"))
                        counted = status != 429
                        paced = status == 429 and retry_after is not None
                        if status == 429 and isinstance(budget, Budget):
                            budget.refund()
                    else:
                        self.watch.record(f"HTTP {status}")
                        raise TeacherError(f"HTTP {status} from {what}: {self.scrub(response.text[:300])}")
            if paced:
                limit_s = self.s.rate_limit_wait_max_s
                now = time.monotonic()
                limited_since = now if limited_since is None else limited_since
                rate_waited = now - limited_since  # wall time: a server that says "0" forever is bounded too
                if rate_waited + retry_after > limit_s:
                    problem = (f"HTTP 429 with Retry-After {retry_after:g} s after {rate_waited:.3g} s of waiting on the "
                               f"rate limit, past {self.section}.rate_limit_wait_max_s={limit_s:g}")
                    break
                self.usage.rate_limited += 1
                self.usage.retries += 1
                # Retry-After counts from when the server read the request: counted from when we sent
                # it, the next requests arrive as the window frees (counted from when the answer
                # reached us, they came a round trip late, ~5 % of each window here). The refused
                # requests of one burst name one moment, so a pause in force is never lengthened;
                # a pause ended too soon costs one more 429.
                until = sent + max(retry_after, 0.01)  # never a busy loop on "Retry-After: 0"
                self.paused_until = until if self.paused_until <= now else min(self.paused_until, until)
                continue
            if counted:
                self.watch.record(problem)
            if attempt == retries:
                break
            attempt += 1
            self.usage.retries += 1
            # exponential back-off with jitter, so that concurrent callers do not retry in step;
            # a server's Retry-After is a floor (it knows its own quota window)
            delay = min(self.s.backoff_max_s, self.s.backoff_base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            await asyncio.sleep(max(delay, retry_after or 0.0))
        raise TeacherError(f"{what}: gave up after {attempt + 1} attempt(s), last: {problem}")

    async def _wait_out_pause(self) -> None:
        while (left := self.paused_until - time.monotonic()) > 0:
            await asyncio.sleep(left)

    @asynccontextmanager
    async def _lane(self):
        http = await self.lanes.get()  # waiters are served first come, first served
        try:
            yield http
        finally:
            self.lanes.put_nowait(http)


def account(usage: Usage, settings, answer_usage: dict, price_factor: float = 1.0) -> None:
    """Counts one answered call, its tokens and its estimated cost."""
    prompt = int(answer_usage.get("prompt_tokens") or 0)
    completion = int(answer_usage.get("completion_tokens") or 0)
    usage.calls += 1
    usage.prompt_tokens += prompt
    usage.completion_tokens += completion
    usage.estimated_cost_usd += price_factor * (prompt / 1000 * settings.price_per_1k_prompt
                                                + completion / 1000 * settings.price_per_1k_completion)


def estimate_tokens(messages: list[dict], max_tokens: int) -> int:
    """Before `usage` is known: text at 4 characters a token, a flat cost per image."""
    chars, images = 0, 0
    for m in messages:
        for part in content_parts(m):
            if part.get("type") == "image_url":
                images += 1
            else:
                chars += len(part.get("text") or "")
    return chars // 4 + images * IMAGE_TOKENS_ESTIMATE + max_tokens


def chat_content(data: dict) -> tuple[str, dict]:
    """The text and the token usage of a chat completion (a server's JSON body)."""
    content = data["choices"][0]["message"]["content"]
    if isinstance(content, list):  # some servers answer in content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    usage = {k: v for k, v in (data.get("usage") or {}).items() if k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return content or "", usage


class ChatClient(CachedCalls):
    """One chat-completions endpoint: cache, single flight, rate limits, retries, usage."""

    def __init__(self, settings, cache: CallCache, endpoint: Endpoint):
        super().__init__(cache, {"endpoint": endpoint.base})
        self.s, self.endpoint, self.usage = settings, endpoint, endpoint.usage
        self.rpm = SlidingWindowLimiter(settings.rpm) if settings.rpm else None
        self.tpm = SlidingWindowLimiter(settings.tpm) if settings.tpm else None

    def __repr__(self) -> str:  # never shows the key
        return f"ChatClient({self.endpoint.base!r})"

    def scrub(self, text: str) -> str:
        return self.endpoint.scrub(text)

    def decoding(self, max_tokens: int) -> dict:
        return {"temperature": self.s.temperature, "max_tokens": max_tokens}

    async def _fetch(self, model: str, messages: list[dict], decoding: dict, key: str) -> tuple[str, dict]:
        async def limit() -> Budget:
            budget = Budget()
            if self.rpm:
                budget.request = self.rpm, await self.rpm.acquire(1)
            if self.tpm:
                budget.tokens = self.tpm, await self.tpm.acquire(estimate_tokens(messages, decoding["max_tokens"]))
            return budget

        def read(response: Reply, budget: Budget) -> tuple[str, dict]:
            content, usage = chat_content(response.json())
            budget.settle_tokens(usage.get("total_tokens") or 0)
            return content, usage

        content, usage = await self.endpoint.request(
            "POST", "/chat/completions", json={"model": model, "messages": messages, **decoding},
            read=read, what=f"model {model!r}", limit=limit)
        account(self.usage, self.s, usage)
        return content, usage


def problem_of(parse, content: str) -> ParseError | str | None:
    """None for an answer without problems; the `ParseError` of an unusable one; the joined
    problems of a usable one with rejected parts."""
    try:
        _, problems = parse(content)
    except ParseError as exc:
        return exc
    return "; ".join(problems) if problems else None


def reask(messages: list[dict], answer: str, problem: str, attempt: int, attempts: int) -> list[dict]:
    """The conversation that shows the model its unusable answer and why. The try's number
    makes each re-ask a new prompt: a model decoding greedily (or a server that caches) would
    give a repeated one the same answer."""
    return messages + [{"role": "assistant", "content": answer},
                       {"role": "user", "content": f"Your answer could not be used: {problem}. Answer again, in "
                                                   f"exactly the format asked for (try {attempt} of {attempts})."}]


class AnswerRejected(ParseError):
    """An answer still unusable after every re-ask: the reason and the last raw text."""

    def __init__(self, reason: str, raw: str, attempts: int):
        super().__init__(reason)
        self.raw, self.attempts = raw, attempts


@dataclass(frozen=True)
class StepModels:
    """What the three steps ask: the model of each step, the answer budget, the re-asks."""

    qa_model: str
    rationale_model: str
    judge_model: str
    max_tokens: int
    max_parse_retries: int


class ChatSteps:
    """The three steps for one image over a chat client (`ChatClient`, `BatchClient`, or the
    local `BatchingClient`), each answer parsed, asked again when unusable, or quarantined
    with its reason and raw text. `ChatTeacher` and `LocalTeacher` open their client and run
    these steps over every image."""

    name: str

    def __init__(self, generate, client, models: StepModels | None):
        self.g, self.o, self.client = generate, models, client
        self.prompts = load_prompts()
        self.versions = prompt_versions()
        self.digest = prompts_digest()

    async def ask(self, prompt: str, model: str, messages: list[dict], parse):
        """Returns (value, problems, raw). An answer with problems (unusable, cut off, or with
        some bad items) is asked again with the problem appended, up to `max_parse_retries`
        times; when every try fails, the last partial answer is kept if there was one, else
        `AnswerRejected` carries the reason and raw text to the quarantine.

        A conversation the cache holds to its usable end is replayed without a call (the same
        path, so the same records); any other is asked afresh from its first question, so a
        failure of the last run is tried again rather than replayed."""
        attempts, version = 1 + self.o.max_parse_retries, self.versions[prompt]
        replay = self.replay(model, messages, parse, attempts, version)
        if replay is not None:
            self.client.usage.cache_hits += len(replay)
        conversation, partial = messages, None
        for attempt in range(1, attempts + 1):
            if replay is not None:
                content = replay[attempt - 1]
            else:
                content = await self.client.complete(model, conversation, self.o.max_tokens, accept=parse,
                                                     prompt=version, fresh=True)
            error = problem_of(parse, content)
            if error is None:
                return (*parse(content), content)
            if not isinstance(error, ParseError):
                partial = (*parse(content), content)
            if attempt < attempts:
                conversation = reask(messages, content, str(error), attempt + 1, attempts)
        if partial is not None:
            return partial
        raise AnswerRejected(str(error), content, attempts)

    def replay(self, model: str, messages: list[dict], parse, attempts: int, version: str) -> list[str] | None:
        """The cached answers of this conversation up to a usable one without problems, or None."""
        conversation, chain = messages, []
        for attempt in range(1, attempts + 1):
            hit = self.client.lookup(model, conversation, self.o.max_tokens, version)
            if hit is None:
                return None
            chain.append(hit["content"])
            error = problem_of(parse, hit["content"])
            if error is None:
                return chain
            conversation = reask(messages, hit["content"], str(error), attempt + 1, attempts)
        return None

    def quarantine(self, step: str, exc: Exception, **where) -> dict:
        entry = {"reason": f"{step}: {self.client.scrub(str(exc))}", **where}
        if isinstance(exc, AnswerRejected):
            entry.update(attempts=exc.attempts, raw=self.client.scrub(exc.raw))
        return entry

    async def records_for_image(self, entry: ImageEntry) -> tuple[list[dict], list[dict]]:
        image = {"type": "image_url", "image_url": {"url": image_data_url(entry.path)}}
        qa_text = self.prompts["qa"].substitute(questions_per_image=self.g.questions_per_image)
        where = {"image_id": entry.image_id, "image": entry.relpath}
        try:
            questions, problems, raw = await self.ask(
                "qa", self.o.qa_model, [{"role": "user", "content": [{"type": "text", "text": qa_text}, image]}],
                parse_questions)
        except TeacherConfigError:
            raise
        except (TeacherError, ParseError) as exc:
            return [], [self.quarantine("qa", exc, **where)]
        quarantined = [{"reason": f"qa: {p}", **where, "raw": self.client.scrub(raw)} for p in problems]
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
                self.ask("rationale_positive", self.o.rationale_model, with_image("rationale_positive"), parse_rationale),
                self.ask("rationale_negative", self.o.rationale_model, with_image("rationale_negative"), parse_rationale),
                return_exceptions=True)
            for outcome in both:
                if isinstance(outcome, BaseException):
                    raise outcome
            (positive, _, _), (negative, _, _) = both
            step = "judge"
            judge_text = self.prompts["judge"].substitute(fields, correct_rationale=positive, incorrect_rationale=negative)
            answer, _, _ = await self.ask("judge", self.o.judge_model, [{"role": "user", "content": judge_text}],
                                          parse_judge)
        except TeacherConfigError:
            raise
        except (TeacherError, ParseError) as exc:
            return None, self.quarantine(step, exc, id=record_id, image_id=entry.image_id, image=entry.relpath,
                                         question=question)
        item = QAItem(question, q.question_type, q.reasoning, q.correct_answer, q.confusing_answer, q.options,
                      support=[], refute=[], correct_rationale=positive, incorrect_rationale=negative)
        verdict = Verdict(not answer.contradiction, answer.reason if answer.contradiction else "")
        provenance = {"teacher": self.name, "judge": self.name, "qa_model": self.o.qa_model,
                      "rationale_model": self.o.rationale_model, "judge_model": self.o.judge_model,
                      "template_version": self.g.template_version, "prompts_sha": self.digest,
                      "question_type_inferred": q.inferred_type, "split": entry.split, "injected_error": None}
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


class ChatTeacher(ChatSteps):
    """The generic chat-model teacher: the three steps asked of any OpenAI-compatible
    chat-completions endpoint (`generate.openai`), live or through its batch API."""

    name = "openai"

    def __init__(self, generate, client=None, *, cache_path: str | Path | None = None):
        o = generate.openai
        super().__init__(generate, client, StepModels(o.qa_model, o.rationale_model, o.judge_model,
                                                      o.max_tokens, o.max_parse_retries))
        self.cache_path = cache_path

    def teach(self, images, progress: bool = False) -> Taught:
        """Records for `images` (the `Teacher` interface); see `generate_with_openai`."""
        return asyncio.run(self.ateach(images, progress))

    async def ateach(self, images, progress: bool = False) -> Taught:
        """`teach` for callers that already run an event loop."""
        entries = image_entries(images)
        settings = self.g.openai
        started = time.perf_counter()
        usage = Usage()
        with CallCache(self.cache_path or settings.cache_path) as cache:
            async with open_lanes(settings) as lanes:
                endpoint = Endpoint(settings, lanes, usage)
                if settings.mode == "batch":
                    from .batch import BatchClient

                    self.client = client = BatchClient(settings, cache, endpoint)
                    async with client.running():
                        # every image of a batch at once: it holds what all of them ask at each step
                        in_flight = max(1, min(len(entries), settings.batch_max_requests))
                        results = await teach_images(self, entries, in_flight, progress)
                else:
                    self.client = client = ChatClient(settings, cache, endpoint)
                    # bounds the images in progress (and their base64 copies in memory) while keeping
                    # enough work queued to fill every request slot
                    results = await teach_images(self, entries, 2 * settings.concurrency, progress)
        records = [r for rs, _ in results for r in rs]
        quarantined = [q for _, qs in results for q in qs]
        metrics = {**asdict(usage), **getattr(client, "batch_usage", {}), "quarantined": len(quarantined),
                   "images": len(entries), "records": len(records), "seconds": time.perf_counter() - started}
        return Taught(records, quarantined, metrics)


async def agenerate_with_openai(images, generate, cache_path: str | Path | None = None,
                                progress: bool = True) -> tuple[list[dict], list[dict], dict]:
    """`generate_with_openai` for callers that already run an event loop."""
    return tuple(await ChatTeacher(generate, cache_path=cache_path).ateach(images, progress))


def generate_with_openai(images, generate, cache_path: str | Path | None = None,
                         progress: bool = True) -> tuple[list[dict], list[dict], dict]:
    """Records for `images` (ImageEntry objects or (image_id, path) pairs) through the three
    steps, in input order with ids `{image_id}-q{j}`. Returns (records, quarantined, metrics):
    records in `records.make_record`'s format (judge-rejected ones included, marked by their
    verdict), calls that failed for good with their reason, and usage (calls, cache_hits,
    tokens, estimated cost). `generate` is the `generate` section of the params."""
    return tuple(ChatTeacher(generate, cache_path=cache_path).teach(images, progress))
