"""What a model-teacher run would ask and cost, before any call is paid for
(`python -m stages.generate --dry-run`).

The teacher's own steps run over the images with a client that answers from the cache and
records, instead of sending, every call the cache cannot answer. What those calls would ask
next is not known before they are answered, so it is estimated: an image whose questions
are not known yet will ask `questions_per_image` x (two rationales and a judgement), with the
templates filled by text of typical length. Prompt tokens are counted at 4 characters a
token, images by OpenAI's published rule for high detail (85 tokens and 170 per 512-pixel
tile of the image scaled to fit 2048 x 2048, then to a shortest side of 768); completion
tokens are bounded by `max_tokens` per call. Re-asks of unusable answers (at most
`max_parse_retries` per call) cannot be foreseen and are not counted. The price uses
`price_per_1k_prompt` and `price_per_1k_completion`, times `batch_price_factor` in batch mode.
"""
from __future__ import annotations

import asyncio
import base64
import io
import math
from dataclasses import dataclass

from .cache import CachedCalls, CallCache
from .chat_limits import Usage
from .chat_messages import content_parts, image_data_url
from .chat_steps import load_prompts, teach_images
from .chat_transport import TeacherError

TYPICAL = {"question": "x" * 120, "correct_answer": "x" * 30, "confusing_answer": "x" * 30,
           "correct_rationale": "x" * 400, "incorrect_rationale": "x" * 400}


class NotAsked(TeacherError):
    """A call the dry run records instead of sending."""


def image_tokens(width: int, height: int) -> int:
    """OpenAI's token count of one image at high detail."""
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    tiles = math.ceil(width * scale / 512) * math.ceil(height * scale / 512)
    return 85 + 170 * tiles


def message_tokens(messages: list[dict]) -> int:
    from PIL import Image

    chars, tokens = 0, 0
    for m in messages:
        for part in content_parts(m):
            if part.get("type") == "image_url":
                data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                with Image.open(io.BytesIO(data)) as image:  # the header only
                    tokens += image_tokens(*image.size)
            else:
                chars += len(part.get("text") or "")
    return tokens + chars // 4


@dataclass
class Asked:
    prompt_tokens: int
    max_tokens: int


class PreviewClient(CachedCalls):
    """Answers from the cache; records every other call and raises `NotAsked`."""

    def __init__(self, cache: CallCache, scope: dict, decoding, key_model: str | None = None):
        super().__init__(cache, scope)
        self._decoding, self.key_model = decoding, key_model
        self.usage = Usage()
        self.asked: list[Asked] = []

    def scrub(self, text: str) -> str:
        return text

    def decoding(self, max_tokens: int) -> dict:
        return self._decoding(max_tokens)

    def key(self, model: str, messages: list[dict], max_tokens: int, prompt: str = "") -> str:
        return super().key(self.key_model or model, messages, max_tokens, prompt)

    async def _fetch(self, model: str, messages: list[dict], decoding: dict, key: str) -> tuple[str, dict]:
        self.asked.append(Asked(message_tokens(messages), decoding.get("max_tokens", decoding.get("max_new_tokens", 0))))
        raise NotAsked("not asked in a dry run")


def preview(teacher, client: PreviewClient, entries, questions_per_image: int, max_tokens: int,
            price_in: float, price_out: float, price_factor: float) -> dict:
    """Runs `teacher` over `entries` with `client` and sums up what a real run would pay."""
    results = asyncio.run(teach_images(teacher, entries, 64, progress=False))
    stopped = [q["reason"].split(":")[0] for _, qs in results for q in qs if q["reason"].endswith("not asked in a dry run")]
    prompts = load_prompts()
    image_cost = [message_tokens([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_data_url(e.path)}}]}])
                  for e in entries]
    # a rationale prompt: its template, a question and two answers of typical length, the image
    rationale = (len(prompts["rationale_positive"].template) + 180) // 4 + sum(image_cost) // max(1, len(entries))
    judge = len(prompts["judge"].substitute(TYPICAL)) // 4
    estimated = {"rationale": 2 * questions_per_image * stopped.count("qa"),
                 "judge": questions_per_image * stopped.count("qa") + stopped.count("rationale")}
    exact_tokens = sum(a.prompt_tokens for a in client.asked)
    prompt_tokens = exact_tokens + estimated["rationale"] * rationale + estimated["judge"] * judge
    calls = len(client.asked) + sum(estimated.values())
    completion_max = calls * max_tokens
    return {
        "images": len(entries),
        "calls_answered_by_cache": client.usage.cache_hits,
        "calls_to_pay": calls,
        "calls_known": len(client.asked),
        "calls_estimated": estimated,
        "prompt_tokens_estimated": prompt_tokens,
        "completion_tokens_max": completion_max,
        "price_usd_prompt": round(price_factor * prompt_tokens / 1000 * price_in, 4),
        "price_usd_max": round(price_factor * (prompt_tokens / 1000 * price_in + completion_max / 1000 * price_out), 4),
        "price_factor": price_factor,
        "not_counted": "re-asks of unusable answers, at most max_parse_retries per call",
    }


def preview_openai(generate, entries, cache_path: str | None = None) -> dict:
    """The preview of `generate.openai` over `entries` (ImageEntry objects)."""
    from .openai_compat import ChatTeacher

    s = generate.openai
    with CallCache(cache_path or s.cache_path) as cache:
        client = PreviewClient(cache, {"endpoint": s.base_url.rstrip("/")},
                               lambda n: {"temperature": s.temperature, "max_tokens": n})
        teacher = ChatTeacher(generate, client)
        factor = s.batch_price_factor if s.mode == "batch" else 1.0
        out = preview(teacher, client, entries, generate.questions_per_image, s.max_tokens,
                      s.price_per_1k_prompt, s.price_per_1k_completion, factor)
    return {"teacher": "openai", "mode": s.mode, "endpoint": s.base_url, **out}


def preview_local(generate, entries, cache_path: str | None = None) -> dict:
    """The preview of `generate.local`: what it would generate (a local model costs no fee)."""
    from .local_vlm import LocalTeacher, LocalVLM

    s = generate.local
    vlm = LocalVLM(s.model_path, s.device)  # its fingerprint only; the model is not loaded
    with CallCache(cache_path or s.cache_path) as cache:
        client = PreviewClient(cache, {"endpoint": "local"}, lambda n: {"do_sample": False, "max_new_tokens": n},
                               key_model=vlm.model_key)
        teacher = LocalTeacher(generate, client, vlm.model_name)
        out = preview(teacher, client, entries, generate.questions_per_image, s.max_new_tokens, 0.0, 0.0, 1.0)
    return {"teacher": "local", "model_path": s.model_path, **out}
