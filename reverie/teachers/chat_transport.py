"""The transport of an OpenAI-compatible server: one aiohttp pool of keep-alive connections
(`HTTP`, `open_lanes`, the environment's proxy), the `Endpoint` that sends every request with
retries, back-off, Retry-After pauses and the fail-fast watch (`FailFast`), the errors that end
a call or the run, and the text and usage of a chat completion (`chat_content`). The live chat
client (openai_compat.py) and the batch client (batch.py) make their requests through it."""
from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import certifi
from multidict import CIMultiDictProxy

from .chat_limits import Budget, Usage, retry_after_seconds

RETRYABLE = {408, 409, 425, 429}  # and every 5xx
FATAL = {401, 403, 404}  # a wrong key, URL or model name: no item would succeed, so stop


class TeacherError(RuntimeError):
    """A call that failed for good (retries used up, or a request the server rejects)."""


class TeacherConfigError(TeacherError):
    """The server refuses the set-up itself (key, URL, model): the run stops."""


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


def chat_content(data: dict) -> tuple[str, dict]:
    """The text and the token usage of a chat completion (a server's JSON body)."""
    content = data["choices"][0]["message"]["content"]
    if isinstance(content, list):  # some servers answer in content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    usage = {k: v for k, v in (data.get("usage") or {}).items() if k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return content or "", usage
