"""From training conversations (reverie/conversations.py: a record's samples per variant)
to token ids with masks.

Loss falls on assistant tokens only; each target token is tagged as a response or a
rationale token so that the two losses are reported separately.
"""
from __future__ import annotations

from dataclasses import dataclass

# the conversations themselves are plain data (reverie/conversations.py); named here too, as before
from ..conversations import (LLAVA, RATIONALE, RESPONSE, SHAREGPT, ChatFormat, Conversation, Turn,  # noqa: F401
                             build_variant, chat_messages, conversations_for, to_llava_json)
from ..vocab import IMAGE_TOKEN

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    targets: list[int]  # 0 for masked tokens, RESPONSE or RATIONALE for trained ones
    image: str


class ChatEncoder:
    """Encodes conversations in LLaVA-1.5's format ("USER: <image>\\n... ASSISTANT: ...</s>"),
    segment by segment, so that the loss mask is exact and the generation prompt of a
    question is, token for token, the prefix the model was trained on."""

    def __init__(self, tokenizer, image_tokens: int):
        self.tok = tokenizer
        self.image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.image_tokens = image_tokens
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.eos = tokenizer.eos_token_id
        self._known: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        if text not in self._known:
            self._tokenize([text])
        return self._known[text]

    def _tokenize(self, texts: list[str]) -> None:
        """Token ids of each text, with the image placeholder expanded, kept for the encoder's
        life: a variant's conversations repeat the same prompts thousands of times, and one
        batched call of the fast tokenizer costs less than a call per segment (19 s of a
        25k-sample tune run's start-up before)."""
        for text, ids in zip(texts, self.tok(texts, add_special_tokens=False)["input_ids"]):
            out: list[int] = []
            for i in ids:
                out.extend([self.image_id] * self.image_tokens if i == self.image_id else [i])
            self._known[text] = out

    def user_prefix(self, text: str, first: bool) -> str:
        return f"USER: {IMAGE_TOKEN}\n{text} ASSISTANT:" if first else f"USER: {text} ASSISTANT:"

    def prompt(self, question: str) -> list[int]:
        """The generation prompt: image and question, ending where the answer starts."""
        return self.bos + self._ids(self.user_prefix(question, True))

    def encode_all(self, conversations: list[Conversation]) -> list[Encoded]:
        """`encode` of each conversation, its distinct segments tokenized in one batch."""
        segments = {text for c in conversations for i, turn in enumerate(c.turns)
                    for text in (self.user_prefix(turn.user, i == 0), " " + turn.assistant)}
        self._tokenize(sorted(segments - self._known.keys()))
        return [self.encode(c) for c in conversations]

    def encode(self, conversation: Conversation) -> Encoded:
        ids, labels, targets = list(self.bos), [IGNORE] * len(self.bos), [0] * len(self.bos)
        for i, turn in enumerate(conversation.turns):
            prompt = self._ids(self.user_prefix(turn.user, i == 0))
            answer = self._ids(" " + turn.assistant) + [self.eos]
            ids += prompt + answer
            labels += [IGNORE] * len(prompt) + answer
            targets += [0] * len(prompt) + [turn.target] * len(answer)
        return Encoded(ids, labels, targets, conversation.image)
