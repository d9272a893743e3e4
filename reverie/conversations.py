"""Training conversations as plain data, with no model behind them: a record's samples for
each variant of the paper's ablation, and the LLaVA and ShareGPT conversation JSON they are
read from and written to. `data_import` (real data in and out) and the student's encoder
(`student/samples.py`) both use it, so the data layer never imports the student package.

The four variants, each sample its own conversation ("separate contexts"):
  response: <image> question -> correct answer
  pos:      response samples + (question -> answer, positive prompt -> positive rationale)
  neg:      response samples + (question -> answer, negative prompt -> negative rationale)
  pos_neg:  all three kinds
and the controls (reverie/vocab.py): pos_neg with another image's rationales, and response.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .vocab import IMAGE_TOKEN, VARIANT_RATIONALES, VARIANT_SPECS

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
    if variant not in VARIANT_SPECS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANT_SPECS)}")
    if VARIANT_SPECS[variant].shuffled_rationales:
        records = shuffled_rationales(records)
    return [c for r in records for c in conversations_for(r, variant, prompts)]


def shuffled_rationales(records: list[dict]) -> list[dict]:
    """The records with each one's two rationales taken from another image's record of the same
    question type and reasoning (so of the same form and length), keeping its own question,
    answers and prompts: the shuffled-rationale control trains as much rationale text as
    `pos_neg`, none of it about its image. Within a group the records are ordered by image (a
    hash of its path) and id, and the rationales rotate by the largest number of records one
    image has there: a permutation, so every rationale is used once, and one that moves each to
    another image unless one image holds more than half of the group (those keep their own). The
    order is fixed: the same for every run and seed."""
    def key(r: dict) -> tuple[str, str]:
        return (hashlib.sha256(str(r["image"]).encode()).hexdigest(), hashlib.sha256(str(r["id"]).encode()).hexdigest())

    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.get("question_type"), r.get("reasoning")), []).append(i)
    out = list(records)
    for members in groups.values():
        order = sorted(members, key=lambda i: key(records[i]))
        per_image: dict[str, int] = {}
        for i in order:
            per_image[records[i]["image"]] = per_image.get(records[i]["image"], 0) + 1
        shift = max(per_image.values())
        for k, i in enumerate(order):
            donor = records[order[(k + shift) % len(order)]]
            if donor["image"] != records[i]["image"]:
                out[i] = records[i] | {"correct_rationale": donor["correct_rationale"],
                                       "incorrect_rationale": donor["incorrect_rationale"]}
    return out


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


def strip_image_token(text: str) -> str:
    """`text` without the image token a conversation file may carry in its first message."""
    return str(text).replace(f"{IMAGE_TOKEN}\n", "").replace(f"\n{IMAGE_TOKEN}", "").replace(IMAGE_TOKEN, "").strip()
