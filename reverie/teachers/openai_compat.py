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

Here: the cache-backed `ChatClient` and `ChatTeacher` (`generate_with_openai`). The steps are in
chat_steps.py, the endpoint (HTTP, retries, fail-fast) in chat_transport.py, the rate limits and
usage in chat_limits.py.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from pathlib import Path

from .cache import CachedCalls, CallCache
from .chat_limits import Budget, SlidingWindowLimiter, Usage, account, estimate_tokens
from .chat_steps import ChatSteps, StepModels, teach_images
from .chat_transport import Endpoint, Reply, chat_content, open_lanes
from .parsing import image_entries
from .protocol import Taught


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
