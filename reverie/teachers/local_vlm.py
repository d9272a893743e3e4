"""A teacher that is a local `transformers` image-text-to-text model (LLaVA, Qwen2-VL, ...),
loaded from a folder and run in batches of greedy generation.

It runs the very steps of the OpenAI-compatible teacher (`ChatTeacher`, through their shared `ChatSteps`: the prompt files,
the parsers, the one retry with the parse error, the quarantine), because only the transport
differs: where that teacher sends each chat to a server, `BatchingClient` queues it, and a
single worker turns whatever chats are waiting into one left-padded `generate` call. The
asyncio structure of the steps is what fills the batches: while a batch generates (in a
thread), every image in flight queues its next step.

Each usable answer goes into the same content-addressed SQLite cache as the API teacher's
answers, keyed by a fingerprint of the model folder, the prompt version, the messages (image
bytes included) and the decoding parameters, so a rerun generates only what failed before, and
does not even load the model when nothing did.
"""
from __future__ import annotations

import asyncio
import base64
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


from ..io import model_fingerprint
from .cache import CachedCalls, CallCache
from .chat_messages import content_parts
from .chat_steps import ChatSteps, StepModels, teach_images
from .chat_transport import TeacherConfigError, TeacherError
from .parsing import image_entries
from .protocol import Taught

SETTLE_ROUNDS = 3  # event-loop turns without a new request before a partial batch starts


def decode_data_url(url: str):
    """The image of a `data:<mime>;base64,...` URL (the only kind the teacher steps build)."""
    from PIL import Image

    if not url.startswith("data:") or ";base64," not in url:
        raise ValueError("the local teacher reads images from base64 data URLs only")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def to_hf_chat(messages: list[dict]) -> tuple[list[dict], list]:
    """OpenAI-style messages as transformers chat messages (content parts, `{"type": "image"}`
    placeholders) and the images in their order of appearance."""
    chat, images = [], []
    for m in messages:
        content = []
        for part in content_parts(m):
            if part.get("type") == "image_url":
                images.append(decode_data_url(part["image_url"]["url"]))
                content.append({"type": "image"})
            else:
                content.append({"type": "text", "text": part.get("text") or ""})
        chat.append({"role": m["role"], "content": content})
    return chat, images


def plain_prompt(chat: list[dict], image_token: str) -> str:
    """LLaVA-1.5's layout, for a processor that ships no chat template."""
    turns = []
    for m in chat:
        text = "".join(f"{image_token}\n" if p["type"] == "image" else p["text"] for p in m["content"])
        turns.append(f"USER: {text}" if m["role"] == "user" else f"ASSISTANT: {text}")
    return " ".join(turns) + " ASSISTANT:"


class LocalVLM:
    """Greedy batched generation with a model folder. The model is loaded on the first batch,
    so a run that the cache answers entirely never loads it."""

    def __init__(self, model_path: str | Path, device: str = "auto"):
        self.path = Path(model_path)
        if not self.path.is_dir():
            raise TeacherConfigError(f"generate.local.model_path {self.path} is not a model folder")
        self.device_setting = device
        self.model_name = self.path.name
        self.model_key = f"local:{self.model_name}:{model_fingerprint(self.path)}"
        self.model = self.processor = None
        self.tokens = {"prompt_tokens": 0, "completion_tokens": 0}

    def load(self) -> None:
        import torch
        from transformers import AutoProcessor

        device = self.device_setting
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(str(self.path))
            try:
                from transformers import AutoModelForImageTextToText

                model = AutoModelForImageTextToText.from_pretrained(str(self.path), dtype=dtype)
            except (ImportError, ValueError):  # an architecture the auto class does not map
                from transformers import LlavaForConditionalGeneration

                model = LlavaForConditionalGeneration.from_pretrained(str(self.path), dtype=dtype)
        except Exception as exc:  # no item could succeed: the run stops (TeacherConfigError), naming the folder
            raise TeacherConfigError(f"cannot load the local teacher from {self.path}: {exc}"[:500]) from None
        self.model = model.to(device).eval()
        tok = self.processor.tokenizer
        tok.padding_side = "left"  # generation continues every row from its last real token
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def prompt(self, chat: list[dict]) -> str:
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        return plain_prompt(chat, getattr(self.processor, "image_token", "<image>"))

    def __call__(self, batch: list[list[dict]], max_new_tokens: int) -> list[str]:
        import torch

        if self.model is None:
            self.load()
        chats = [to_hf_chat(messages) for messages in batch]
        texts = [self.prompt(chat) for chat, _ in chats]
        images = [imgs for _, imgs in chats]
        kwargs = {"images": images} if any(images) else {}
        inputs = self.processor(text=texts, padding=True, return_tensors="pt", **kwargs)
        device, dtype = self.model.device, self.model.dtype
        inputs = {k: v.to(device, dtype) if torch.is_floating_point(v) else v.to(device) for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.pad_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        mask = inputs.get("attention_mask")
        self.tokens["prompt_tokens"] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        self.tokens["completion_tokens"] += int((new != self.pad_id).sum())
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]


@dataclass
class LocalUsage:
    calls: int = 0  # chats generated (not served by the cache)
    cache_hits: int = 0
    merged: int = 0  # chats that waited for an identical chat in flight
    batches: int = 0  # generate calls
    failed: int = 0  # chats whose generation raised, quarantined by the teacher


@dataclass
class Pending:
    messages: list[dict]
    key: str
    images: int
    max_tokens: int
    futures: list[asyncio.Future] = field(default_factory=list)


class BatchingClient(CachedCalls):
    """`complete` with the API client's signature, answered by the cache or by batched local
    generation. `generate_batch(list_of_chats, max_new_tokens) -> list_of_answers` runs in a
    worker thread, so the event loop keeps queueing the next steps meanwhile."""

    def __init__(self, generate_batch, cache: CallCache, model_key: str, batch_size: int):
        super().__init__(cache, {"endpoint": "local"})
        self.generate_batch, self.model_key = generate_batch, model_key
        self.batch_size = batch_size
        self.queue: dict[str, Pending] = {}  # by cache key, in arrival order
        self.wake = asyncio.Event()
        self.usage = LocalUsage()

    def scrub(self, text: str) -> str:  # the teacher's interface; a local model has no secret
        return text

    def decoding(self, max_tokens: int) -> dict:
        return {"do_sample": False, "max_new_tokens": max_tokens}

    def key(self, model: str, messages: list[dict], max_tokens: int, prompt: str = "") -> str:
        # the model folder's fingerprint, not its name: a fine-tune under the same name is another model
        return super().key(self.model_key, messages, max_tokens, prompt)

    async def _fetch(self, model: str, messages: list[dict], decoding: dict, key: str) -> tuple[str, dict]:
        future = asyncio.get_running_loop().create_future()
        images = sum(p.get("type") == "image_url" for m in messages for p in content_parts(m))
        self.queue[key] = Pending(messages, key, images, decoding["max_new_tokens"], [future])
        self.wake.set()
        return await future, {}

    async def serve(self) -> None:
        """The worker: runs until cancelled. Any failure reaches the waiting callers."""
        while True:
            await self.wake.wait()
            await self._settle()
            max_tokens, batch = self._take()
            if not self.queue:
                self.wake.clear()
            if not batch:
                continue
            try:
                answers = await asyncio.to_thread(self._generate, [p.messages for p in batch], max_tokens)
            except BaseException as exc:  # the model would not load, a cancellation, a bug: no caller may wait forever
                stop = exc if isinstance(exc, TeacherConfigError) else TeacherError(f"local generation stopped: {exc!r}")
                for p in batch + list(self.queue.values()):
                    self._resolve(p, stop)
                raise
            for p, answer in zip(batch, answers):  # the caller stores what it can use
                if isinstance(answer, Exception):
                    self._resolve(p, TeacherError(f"local generation failed: {answer!r}"[:300]))
                else:
                    self._resolve(p, answer)

    @staticmethod
    def _resolve(pending: Pending, result: str | Exception) -> None:
        for f in pending.futures:
            if f.done():
                continue
            if isinstance(result, Exception):
                f.set_exception(result)
            else:
                f.set_result(result)

    async def _settle(self) -> None:
        """Lets the callers woken by the last batch queue their next chats before the next
        batch starts, so that batches are full whenever there is work for them."""
        last, still = -1, 0
        while len(self.queue) < self.batch_size and still < SETTLE_ROUNDS:
            await asyncio.sleep(0)
            still = still + 1 if len(self.queue) == last else 0
            last = len(self.queue)

    def _take(self) -> tuple[int, list[Pending]]:
        """Up to `batch_size` waiting chats with as many images as the oldest one: processors
        differ in how (or whether) they batch chats with and without images together."""
        if not self.queue:
            return 0, []
        first = next(iter(self.queue.values()))
        chosen = [k for k, p in self.queue.items()
                  if p.max_tokens == first.max_tokens and p.images == first.images][: self.batch_size]
        return first.max_tokens, [self.queue.pop(k) for k in chosen]

    def _generate(self, batch: list[list[dict]], max_tokens: int) -> list[str | Exception]:
        """One generate call; when it fails, each chat alone, so that one bad chat (too long
        for the model, an unreadable image) does not sink its batch-mates."""
        self.usage.batches += 1
        try:
            answers = list(self.generate_batch(batch, max_tokens))
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers for {len(batch)} chats")
            self.usage.calls += len(batch)
            return answers
        except TeacherConfigError:
            raise
        except Exception as exc:
            if len(batch) == 1:
                self.usage.failed += 1
                return [exc]
        return [answer for chat in batch for answer in self._generate([chat], max_tokens)]


def local_models(generate, model_name: str | None) -> StepModels:
    """Every step is the one local model, with `generate.local`'s budget and re-asks."""
    return StepModels(model_name, model_name, model_name, generate.local.max_new_tokens,
                      generate.local.max_parse_retries)


class LocalTeacher(ChatSteps):
    """The chat teacher's steps answered by a local transformers model (`generate.local`)
    through a `BatchingClient`. `generator` replaces the model (tests): a callable
    `(chats, max_new_tokens) -> answers` with `model_name` and `model_key` attributes."""

    name = "local"

    def __init__(self, generate, client=None, model_name: str | None = None, *,
                 cache_path: str | Path | None = None, generator=None):
        super().__init__(generate, client, local_models(generate, model_name))
        self.cache_path, self.generator = cache_path, generator

    def teach(self, images, progress: bool = False) -> Taught:
        """Records for `images` (the `Teacher` interface); see `generate_with_local`."""
        return asyncio.run(self.ateach(images, progress))

    async def ateach(self, images, progress: bool = False) -> Taught:
        """`teach` for callers that already run an event loop."""
        entries = image_entries(images)
        settings = self.g.local
        generator = self.generator or LocalVLM(settings.model_path, settings.device)
        self.o = local_models(self.g, generator.model_name)
        started = time.perf_counter()
        with CallCache(self.cache_path or settings.cache_path) as cache:
            self.client = client = BatchingClient(generator, cache, generator.model_key, settings.batch_size)
            worker = asyncio.create_task(client.serve())
            try:
                # enough images in flight that every batch fills, few enough to bound their data URLs
                results = await teach_images(self, entries, max(4, 2 * settings.batch_size), progress)
            finally:
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
        records = [r for rs, _ in results for r in rs]
        quarantined = [q for _, qs in results for q in qs]
        metrics = {**asdict(client.usage), **getattr(generator, "tokens", {}), "quarantined": len(quarantined),
                   "images": len(entries), "records": len(records), "seconds": time.perf_counter() - started}
        return Taught(records, quarantined, metrics)


async def agenerate_with_local(images, generate, cache_path: str | Path | None = None, progress: bool = True,
                               generator=None) -> tuple[list[dict], list[dict], dict]:
    """`generate_with_local` for callers that already run an event loop."""
    return tuple(await LocalTeacher(generate, cache_path=cache_path, generator=generator).ateach(images, progress))


def generate_with_local(images, generate, cache_path: str | Path | None = None, progress: bool = True,
                        generator=None) -> tuple[list[dict], list[dict], dict]:
    """Records for `images` (ImageEntry objects or (image_id, path) pairs) from the local model
    in `generate.local`, in the chat teacher's format and order. Returns (records,
    quarantined, metrics). `generator` replaces the model (tests): a callable
    `(chats, max_new_tokens) -> answers` with `model_name` and `model_key` attributes."""
    return tuple(LocalTeacher(generate, cache_path=cache_path, generator=generator).teach(images, progress))
