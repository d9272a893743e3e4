"""From records to training conversations, and from conversations to token ids with masks.

The four variants of the paper's ablation, each sample its own conversation ("separate
contexts"):
  response: <image> question -> correct answer
  pos:      response samples + (question -> answer, positive prompt -> positive rationale)
  neg:      response samples + (question -> answer, negative prompt -> negative rationale)
  pos_neg:  all three kinds
Loss falls on assistant tokens only; each target token is tagged as a response or a
rationale token so that the two losses are reported separately.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..vocab import VARIANT_RATIONALES
from .model import IMAGE_TOKEN

IGNORE = -100
RESPONSE, RATIONALE = 1, 2


@dataclass(frozen=True)
class Turn:
    user: str
    assistant: str
    target: int  # RESPONSE or RATIONALE


@dataclass(frozen=True)
class Conversation:
    id: str
    image: str  # path relative to the data root
    turns: tuple[Turn, ...]
    kind: str  # response | positive | negative | description | probe


def conversations_for(record: dict, variant: str, prompts) -> list[Conversation]:
    first = Turn(record["question"], record["correct_answer"], RESPONSE)
    out = [Conversation(record["id"], record["image"], (first,), "response")]
    rationales = VARIANT_RATIONALES[variant]
    if "positive" in rationales:
        out.append(Conversation(record["id"] + ":pos", record["image"],
                                (first, Turn(prompts.positive, record["correct_rationale"], RATIONALE)), "positive"))
    if "negative" in rationales:
        negative = prompts.negative.format(confusing_answer=record["confusing_answer"])
        out.append(Conversation(record["id"] + ":neg", record["image"],
                                (first, Turn(negative, record["incorrect_rationale"], RATIONALE)), "negative"))
    return out


def build_variant(records: list[dict], variant: str, prompts) -> list[Conversation]:
    if variant not in VARIANT_RATIONALES:
        raise ValueError(f"unknown variant {variant!r}; expected response, pos, neg or pos_neg")
    return [c for r in records for c in conversations_for(r, variant, prompts)]


@dataclass(frozen=True)
class ChatFormat:
    """Where a conversation file keeps its messages, and how it names their roles."""
    messages_key: str
    role_key: str
    text_key: str
    user: str
    assistant: str


LLAVA = ChatFormat("conversations", "from", "value", "human", "gpt")
SHAREGPT = ChatFormat("messages", "role", "content", "user", "assistant")


def chat_messages(conversation: Conversation, fmt: ChatFormat) -> list[dict]:
    """Alternating user/assistant messages in `fmt`, the image token opening the first user
    message: the shape every conversation export shares."""
    messages = []
    for i, t in enumerate(conversation.turns):
        messages.append({fmt.role_key: fmt.user, fmt.text_key: (f"{IMAGE_TOKEN}\n" if i == 0 else "") + t.user})
        messages.append({fmt.role_key: fmt.assistant, fmt.text_key: t.assistant})
    return messages


def to_llava_json(conversations: list[Conversation]) -> list[dict]:
    """LLaVA's conversation JSON (the format of llava_v1_5_mix665k.json)."""
    return [{"id": c.id, "image": c.image, LLAVA.messages_key: chat_messages(c, LLAVA)} for c in conversations]


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

    def _ids(self, text: str) -> list[int]:
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        out: list[int] = []
        for i in ids:
            out.extend([self.image_id] * self.image_tokens if i == self.image_id else [i])
        return out

    def user_prefix(self, text: str, first: bool) -> str:
        return f"USER: {IMAGE_TOKEN}\n{text} ASSISTANT:" if first else f"USER: {text} ASSISTANT:"

    def prompt(self, question: str) -> list[int]:
        """The generation prompt: image and question, ending where the answer starts."""
        return self.bos + self._ids(self.user_prefix(question, True))

    def encode(self, conversation: Conversation) -> Encoded:
        ids, labels, targets = list(self.bos), [IGNORE] * len(self.bos), [0] * len(self.bos)
        for i, turn in enumerate(conversation.turns):
            prompt = self._ids(self.user_prefix(turn.user, i == 0))
            answer = self._ids(" " + turn.assistant) + [self.eos]
            ids += prompt + answer
            labels += [IGNORE] * len(prompt) + answer
            targets += [0] * len(prompt) + [turn.target] * len(answer)
        return Encoded(ids, labels, targets, conversation.image)
