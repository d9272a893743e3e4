"""Batched greedy decoding: left padding, the KV cache, prompts sorted by length.

Prompts are built by the same `ChatEncoder` as training, so a question at evaluation is the
exact token prefix the model was trained to continue.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..student.batching import ImageTable, collate
from ..student.model import image_token_count
from ..student.samples import ChatEncoder, Encoded


@dataclass(frozen=True)
class Question:
    qid: str
    image: str  # relative to the images root
    text: str


class Answerer:
    def __init__(self, model, processor, images_root: str | Path, max_new_tokens: int = 8):
        self.model = model.eval()
        self.processor = processor
        self.tok = processor.tokenizer
        self.encoder = ChatEncoder(self.tok, image_token_count(model.config))
        self.root = Path(images_root)
        self.max_new_tokens = max_new_tokens
        self.device = next(model.parameters()).device
        self.seconds = 0.0

    def answer(self, questions: list[Question], batch_size: int = 64, progress: bool = True, desc: str = "answer") -> list[str]:
        """Greedy answers in the questions' order. A question asked again of the same image (POPE
        asks each present object in all three splits) is decoded once."""
        unique: dict[tuple[str, str], int] = {}
        for q in questions:
            unique.setdefault((q.image, q.text), len(unique))
        distinct = [Question(f"q{i}", image, text) for (image, text), i in unique.items()]
        answers = self._answer_distinct(distinct, batch_size, progress, desc)
        return [answers[unique[(q.image, q.text)]] for q in questions]

    @torch.inference_mode()
    def _answer_distinct(self, questions: list[Question], batch_size: int, progress: bool, desc: str) -> list[str]:
        table = ImageTable(self.processor, self.root, [q.image for q in questions])
        prompts = [self.encoder.prompt(q.text) for q in questions]
        order = sorted(range(len(questions)), key=lambda i: len(prompts[i]))
        answers: list[str] = [""] * len(questions)
        pad = self.tok.pad_token_id
        started = time.perf_counter()
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress, mininterval=2.0):
            idx = order[start:start + batch_size]
            batch = [Encoded(prompts[i], prompts[i], [0] * len(prompts[i]), questions[i].image) for i in idx]
            ids, _, _, mask = collate(batch, pad, pad_left=True)
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                pixel_values=table([questions[i].image for i in idx]).to(self.device, self.model.dtype),
                max_new_tokens=self.max_new_tokens, do_sample=False, use_cache=True,
                pad_token_id=pad, eos_token_id=self.tok.eos_token_id,
            )
            new = out[:, ids.shape[1]:]
            for i, row in zip(idx, new):
                answers[i] = self.tok.decode(row, skip_special_tokens=True).strip()
        self.seconds += time.perf_counter() - started
        return answers
