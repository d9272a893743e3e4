"""A chat endpoint's limits and accounting: the client's own request and token rate limits
(`SlidingWindowLimiter`, the `Budget` one attempt takes from them), a server's Retry-After,
the token estimate made before a call's usage is known, and the `Usage` every call is counted in
with its estimated cost."""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from .chat_messages import content_parts

IMAGE_TOKENS_ESTIMATE = 800  # for the token-rate budget before `usage` is known (a 512px tile costs ~765)


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
