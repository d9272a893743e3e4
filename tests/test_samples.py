"""Reflective samples: which conversations each variant builds, and exact loss masks."""
import pytest

from reverie.settings import PromptSettings
from reverie.student.model import IMAGE_TOKEN, train_tokenizer
from reverie.student.samples import IGNORE, RATIONALE, RESPONSE, ChatEncoder, build_variant, to_llava_json

RECORD = {
    "id": "r1", "image": "images/train/a.png", "question": "How many circles are there?",
    "correct_answer": "2", "confusing_answer": "3",
    "correct_rationale": "There are 2 circles in the image. So the answer is 2.",
    "incorrect_rationale": "The answer 3 is wrong. There are 2 circles in the image.",
}
PROMPTS = PromptSettings()


@pytest.mark.parametrize("variant, kinds", [
    ("response", ["response"]),
    ("pos", ["response", "positive"]),
    ("neg", ["response", "negative"]),
    ("pos_neg", ["response", "positive", "negative"]),
    # the controls: pos_neg with rationales from another image (a lone record keeps its own),
    # and the response-only baseline at a third of the steps
    ("pos_neg_shuffled", ["response", "positive", "negative"]),
    ("response_1x", ["response"]),
])
def test_each_variant_builds_its_conversations(variant, kinds):
    convs = build_variant([RECORD], variant, PROMPTS)
    assert [c.kind for c in convs] == kinds
    for c in convs:
        assert c.turns[0].user == RECORD["question"] and c.turns[0].assistant == "2"
    by_kind = {c.kind: c for c in convs}
    if "positive" in by_kind:
        turn = by_kind["positive"].turns[1]
        assert turn.user == PROMPTS.positive and turn.assistant == RECORD["correct_rationale"]
    if "negative" in by_kind:
        turn = by_kind["negative"].turns[1]
        assert turn.user == "Explain why this answer is wrong: 3. Including any necessary facts or knowledge."
        assert turn.assistant == RECORD["incorrect_rationale"]


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown variant 'both'; expected one of response, pos, neg, pos_neg, "
                                         "pos_neg_shuffled, response_1x"):
        build_variant([RECORD], "both", PROMPTS)


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [RECORD[k] for k in RECORD] + [PROMPTS.positive, PROMPTS.negative, "USER: ASSISTANT:"]
    return train_tokenizer(corpus * 3, 400)


def test_masks_cover_exactly_the_assistant_tokens(tokenizer):
    encoder = ChatEncoder(tokenizer, image_tokens=4)
    conv = build_variant([RECORD], "neg", PROMPTS)[1]
    enc = encoder.encode(conv)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert enc.input_ids.count(image_id) == 4
    trained = [i for i, label in enumerate(enc.labels) if label != IGNORE]
    # the trained tokens decode to exactly the two answers, each closed by end-of-sequence
    first = [i for i in trained if enc.targets[i] == RESPONSE]
    second = [i for i in trained if enc.targets[i] == RATIONALE]
    eos = tokenizer.eos_token
    assert tokenizer.decode([enc.input_ids[i] for i in first]) == " 2" + eos
    assert tokenizer.decode([enc.input_ids[i] for i in second]) == " " + RECORD["incorrect_rationale"] + eos
    assert all(enc.labels[i] == enc.input_ids[i] for i in trained)
    # everything else (image, user turns, role markers) is masked
    masked = tokenizer.decode([t for t, label in zip(enc.input_ids, enc.labels) if label == IGNORE and t != image_id])
    assert masked == tokenizer.bos_token + "USER: \n" + RECORD["question"] + " ASSISTANT:USER: " + \
        PROMPTS.negative.format(confusing_answer="3") + " ASSISTANT:"


def test_generation_prompt_is_the_trained_prefix(tokenizer):
    encoder = ChatEncoder(tokenizer, image_tokens=4)
    enc = encoder.encode(build_variant([RECORD], "response", PROMPTS)[0])
    prompt = encoder.prompt(RECORD["question"])
    assert enc.input_ids[: len(prompt)] == prompt
    assert all(label == IGNORE for label in enc.labels[: len(prompt)])


def test_llava_export_has_the_conversation_format():
    rows = to_llava_json(build_variant([RECORD], "pos", PROMPTS))
    assert rows[0]["conversations"][0] == {"from": "human", "value": "<image>\n" + RECORD["question"]}
    assert [t["from"] for t in rows[1]["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert rows[1]["conversations"][3]["value"] == RECORD["correct_rationale"]


def test_each_variant_names_its_conversations_by_record_and_keeps_the_image():
    """Ids and images as the LLaVA export and the tune stage's per-sample bookkeeping read them."""
    from reverie.conversations import Conversation, Turn

    negative = "Explain why this answer is wrong: 3. Including any necessary facts or knowledge."
    first = Turn(RECORD["question"], "2", RESPONSE)
    assert build_variant([RECORD], "pos_neg", PROMPTS) == [
        Conversation("r1", "images/train/a.png", (first,), "response"),
        Conversation("r1:pos", "images/train/a.png", (first, Turn(PROMPTS.positive, RECORD["correct_rationale"], RATIONALE)),
                     "positive"),
        Conversation("r1:neg", "images/train/a.png", (first, Turn(negative, RECORD["incorrect_rationale"], RATIONALE)),
                     "negative"),
    ]


def test_llava_export_rows_are_exactly_llavas_layout():
    rows = to_llava_json(build_variant([RECORD], "neg", PROMPTS))
    negative = "Explain why this answer is wrong: 3. Including any necessary facts or knowledge."
    assert rows == [
        {"id": "r1", "image": "images/train/a.png", "conversations": [
            {"from": "human", "value": "<image>\nHow many circles are there?"}, {"from": "gpt", "value": "2"}]},
        {"id": "r1:neg", "image": "images/train/a.png", "conversations": [
            {"from": "human", "value": "<image>\nHow many circles are there?"}, {"from": "gpt", "value": "2"},
            {"from": "human", "value": negative}, {"from": "gpt", "value": RECORD["incorrect_rationale"]}]},
    ]


@pytest.mark.parametrize("text, stripped", [
    ("<image>\nWhat is it?", "What is it?"),  # LLaVA's first turn: token, newline, question
    ("What is it?\n<image>", "What is it?"),  # the token after the question
    ("What <image> is it?", "What  is it?"),  # a bare token goes, its spaces stay
    ("  What is it?  ", "What is it?"),
    ("What is it?", "What is it?"),
])
def test_the_image_token_is_stripped_from_an_imported_question(text, stripped):
    from reverie.conversations import strip_image_token

    assert strip_image_token(text) == stripped


def test_encode_all_is_encode_of_each_and_tokenizes_each_segment_as_the_tokenizer_does(tokenizer):
    convs = build_variant([RECORD, dict(RECORD, id="r2", correct_answer="4", confusing_answer="5")], "pos_neg", PROMPTS)
    batched = ChatEncoder(tokenizer, image_tokens=3).encode_all(convs)
    one_by_one = [ChatEncoder(tokenizer, image_tokens=3).encode(c) for c in convs]
    assert batched == one_by_one and len(batched) == 6
    # independently: bos, then per turn the prompt's ids (the image placeholder expanded to 3) and
    # the answer's ids closed by eos; targets 0 on bos and prompts, the turn's target on its answer
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    def ids(text):
        out = []
        for t in tokenizer(text, add_special_tokens=False)["input_ids"]:
            out += [image_id] * 3 if t == image_id else [t]
        return out

    for conv, enc in zip(convs, batched):
        expected, targets = [tokenizer.bos_token_id], [0]
        for i, turn in enumerate(conv.turns):
            prompt = ids(("USER: <image>\n" if i == 0 else "USER: ") + turn.user + " ASSISTANT:")
            answer = ids(" " + turn.assistant) + [tokenizer.eos_token_id]
            expected += prompt + answer
            targets += [0] * len(prompt) + [turn.target] * len(answer)
        assert enc.input_ids == expected and enc.targets == targets and enc.image == conv.image
