"""The ablation's controls and its fair comparison (issue 23): the shuffled-rationale control's
data, the optimizer steps every variant trains, and the batches that give them."""
import math
import random
from collections import Counter

import pytest

from reverie.conversations import RATIONALE, RESPONSE, build_variant, shuffled_rationales
from reverie.settings import PromptSettings
from reverie.student.train import length_grouped_batches
from reverie.tuning import answer_turns, step_budget
from reverie.vocab import MAIN_VARIANTS, VARIANT_SPECS

PROMPTS = PromptSettings()
RATIONALE_KEYS = ("correct_rationale", "incorrect_rationale")


def rec(i: int, image: str, question_type: str, reasoning: str) -> dict:
    """A record whose rationales name it (and differ in length), so a donor can be told by its text."""
    return {"id": f"r{i}", "image": f"images/train/{image}.png", "split": "train", "question": f"Question {i}?",
            "correct_answer": f"answer {i}", "confusing_answer": f"wrong {i}",
            "correct_rationale": f"Positive rationale of r{i}." + " yes" * i,
            "incorrect_rationale": f"The answer wrong {i} is wrong. Negative of r{i}." + " no" * (2 * i),
            "question_type": question_type, "reasoning": reasoning, "options": None}


# four groups: five images with one existence question each; four with one count each; a lone
# multiple-choice question; two open-ended questions about one image (no other image to borrow from)
RECORDS = ([rec(i, f"img{i}", "yes_no", "existence") for i in range(5)]
           + [rec(5 + i, f"img{i}", "short_answer", "counting") for i in range(4)]
           + [rec(9, "img0", "multiple_choice", "attribute")]
           + [rec(10, "img7", "open_ended", "attribute"), rec(11, "img7", "open_ended", "attribute")])


def donors(records: list[dict], out: list[dict]) -> dict[str, str]:
    """Whose rationales each record got: the id of the record whose two rationales it now has."""
    by_pair = {(r["correct_rationale"], r["incorrect_rationale"]): r["id"] for r in records}
    return {o["id"]: by_pair[(o["correct_rationale"], o["incorrect_rationale"])] for o in out}


def test_every_record_gets_another_image_s_rationales_of_its_own_question_type_and_reasoning():
    out = shuffled_rationales(RECORDS)
    by_id = {r["id"]: r for r in RECORDS}
    got = donors(RECORDS, out)  # a KeyError: rationales split between two records, or made up
    assert len(out) == len(RECORDS)
    for r in RECORDS[:9]:  # the groups with other images
        donor = by_id[got[r["id"]]]
        assert donor["image"] != r["image"], (r["id"], donor["id"])
        assert (donor["question_type"], donor["reasoning"]) == (r["question_type"], r["reasoning"])
    # a lone record, and records of a group holding one image only, keep their own
    assert [got[i] for i in ("r9", "r10", "r11")] == ["r9", "r10", "r11"]


def test_shuffling_keeps_everything_but_the_rationales():
    before = [dict(r) for r in RECORDS]
    out = shuffled_rationales(RECORDS)
    assert RECORDS == before  # the input is not changed
    for r, o in zip(RECORDS, out):
        assert {k: v for k, v in o.items() if k not in RATIONALE_KEYS} == {k: v for k, v in r.items() if k not in RATIONALE_KEYS}
        assert o["question"] == r["question"] and o["correct_answer"] == r["correct_answer"]
        assert o["confusing_answer"] == r["confusing_answer"]


def test_shuffling_is_deterministic_and_independent_of_the_records_order():
    out = shuffled_rationales(RECORDS)
    assert shuffled_rationales([dict(r) for r in RECORDS]) == out
    mixed = RECORDS[:]
    random.Random(3).shuffle(mixed)
    assert donors(RECORDS, shuffled_rationales(mixed)) == donors(RECORDS, out)  # donors follow the ids' hash order


def test_shuffling_keeps_the_multiset_of_rationales():
    out = shuffled_rationales(RECORDS)
    pairs = lambda rs: Counter((r["correct_rationale"], r["incorrect_rationale"]) for r in rs)
    assert pairs(out) == pairs(RECORDS)
    # so the same rationale text, character for character
    assert sorted(len(r["correct_rationale"]) + len(r["incorrect_rationale"]) for r in out) == \
        sorted(len(r["correct_rationale"]) + len(r["incorrect_rationale"]) for r in RECORDS)
    # within the group of counts: a derangement of its four records
    got = donors(RECORDS, out)
    assert sorted(got[f"r{i}"] for i in range(5, 9)) == ["r5", "r6", "r7", "r8"]


def test_two_records_of_two_images_swap_their_rationales():
    a, b = rec(1, "imgA", "yes_no", "spatial"), rec(2, "imgB", "yes_no", "spatial")
    out = shuffled_rationales([a, b])
    assert [o["correct_rationale"] for o in out] == [b["correct_rationale"], a["correct_rationale"]]
    assert [o["incorrect_rationale"] for o in out] == [b["incorrect_rationale"], a["incorrect_rationale"]]


def test_the_multiset_is_kept_when_an_image_has_several_records_of_a_group():
    """Real data (the released REVERIE JSON: every record `multi_step`, several per image and
    question type) puts several records of one image in a group. Three images with two records
    each (r10, r11 of img0; r12, r13 of img1; r14, r15 of img2): giving each image the next
    image's two rationales keeps every one exactly once, yet the hash-order walk skips a
    same-image neighbour and takes the next donor a second time (today r13 twice, r14 never)."""
    records = [rec(10 + 2 * i + j, f"img{i}", "yes_no", "multi_step") for i in range(3) for j in range(2)]
    out = shuffled_rationales(records)
    assert all(donor != own for own, donor in donors(records, out).items())
    assert Counter(donors(records, out).values()) == Counter(r["id"] for r in records)


# ---- build_variant on real teacher records -------------------------------------------------------
@pytest.fixture(scope="module")
def records():
    from reverie.generate import build_teacher
    from reverie.settings import GenerateSettings, WorldSettings
    from reverie.world import sample_world

    world = WorldSettings(train_images=80, eval_images=1)
    train, _ = sample_world(world, seed=4)
    taught = build_teacher(world, GenerateSettings(questions_per_image=4, noise_rate=0.0), 4).teach(train).records
    return [r for r in taught if r["judge"]["consistent"]]


def test_the_shuffled_control_trains_as_many_samples_and_as_much_rationale_text_as_pos_neg(records):
    plain = build_variant(records, "pos_neg", PROMPTS)
    shuffled = build_variant(records, "pos_neg_shuffled", PROMPTS)
    assert len(shuffled) == len(plain) == 3 * len(records)
    assert [c.kind for c in shuffled] == [c.kind for c in plain]
    assert [(c.id, c.image, c.turns[0]) for c in shuffled] == [(c.id, c.image, c.turns[0]) for c in plain]
    # the second turn's prompt is the record's own (its confusing answer); only the rationale moves
    assert [c.turns[1].user for c in shuffled if len(c.turns) > 1] == [c.turns[1].user for c in plain if len(c.turns) > 1]
    lengths = lambda convs, kind: sorted(len(c.turns[1].assistant) for c in convs if c.kind == kind)
    for kind in ("positive", "negative"):
        assert lengths(shuffled, kind) == lengths(plain, kind)
    moved = sum(s.turns[1].assistant != p.turns[1].assistant for s, p in zip(shuffled, plain) if s.kind != "response")
    assert moved > 0.9 * 2 * len(records)
    # each rationale came from a record of another image
    image_of = {}
    for r in records:
        image_of.setdefault(r["correct_rationale"], set()).add(r["image"])
    for c in shuffled:
        if c.kind == "positive":
            assert image_of[c.turns[1].assistant] - {c.image}, c.id


def test_every_sample_of_every_variant_trains_one_answer(records):
    """So equal steps of equal batches are equal answer exposures: a rationale sample repeats
    the answer turn, but trains no other sample's answer."""
    for variant in VARIANT_SPECS:
        convs = build_variant(records, variant, PROMPTS)
        assert {answer_turns(c) for c in convs} == {1}
        assert all(c.turns[0].target == RESPONSE and all(t.target == RATIONALE for t in c.turns[1:]) for c in convs)


# ---- the step budget ---------------------------------------------------------------------------
@pytest.mark.parametrize("records, mixed, epochs, batch_size, steps", [
    (100, 0, 0.5, 32, 5),  # the largest main variant (pos_neg) has 3 samples a record: ceil(0.5 * 300 / 32) = ceil(4.69)
    (100, 20, 0.5, 32, 5),  # the mix's conversations count once: ceil(0.5 * 320 / 32) = 5
    (100, 60, 1.0, 32, 12),  # ceil(360 / 32) = ceil(11.25)
    (64, 0, 1.0, 32, 6),  # 192 / 32 = 6 exactly: no step more
    (1, 0, 0.01, 32, 1),  # never none
    (3000, 0, 3.0, 16, 1688),  # ceil(3 * 9000 / 16) = ceil(1687.5)
])
def test_step_budget_by_hand(records, mixed, epochs, batch_size, steps):
    assert step_budget(records, mixed, epochs, batch_size) == steps


def test_main_variants_share_the_budget_and_response_1x_trains_a_third():
    budget = step_budget(100, 60, 1.0, 32)  # 12 steps, whatever the variant
    shares = {v: max(1, round(budget * VARIANT_SPECS[v].step_share)) for v in VARIANT_SPECS}
    assert shares == {"response": 12, "pos": 12, "neg": 12, "pos_neg": 12, "pos_neg_shuffled": 12, "response_1x": 4}
    # response_1x sees each answer about `epochs` times, as the paper's response-only run does: with
    # no mix, one epoch of 100 records is ceil(300 / 32) = 10 steps, a third of it round(3.33) = 3
    # steps of 32 = 96 samples, about one pass over the 100 response samples
    assert math.isclose(VARIANT_SPECS["response_1x"].step_share * 3, 1.0)
    assert round(step_budget(100, 0, 1.0, 32) * VARIANT_SPECS["response_1x"].step_share) == 3
    assert all(VARIANT_SPECS[v].step_share == 1.0 for v in MAIN_VARIANTS)


# ---- exactly `steps` batches ------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 3, 4, 9, 25])
def test_length_grouped_batches_gives_exactly_the_steps_asked(steps):
    lengths = [5 + (i * 7) % 23 for i in range(100)]
    batches = length_grouped_batches(lengths, 32, epochs=0.1, seed=0, steps=steps)  # steps wins over epochs
    assert len(batches) == steps
    assert all(len(b) == 32 for b in batches)  # every step trains a full batch: equal steps, equal samples
    # the samples are drawn pass after pass: in steps * 32 draws each of the 100 samples comes
    # floor or ceil of steps * 32 / 100 times, give or take the one pass the last mega-batch cuts
    counts = [sum(b.count(i) for b in batches) for i in range(100)]
    assert sum(counts) == 32 * steps
    assert max(counts) - min(counts) <= 2  # a pass's leftovers open the next one
    # a longer run replays the shorter one's batches first (the schedule is the seed's alone)
    assert length_grouped_batches(lengths, 32, 0.1, seed=0, steps=steps + 5)[:steps] == batches


def test_length_grouped_batches_with_steps_is_seeded():
    lengths = [5 + (i * 7) % 23 for i in range(300)]
    a = length_grouped_batches(lengths, 16, 1.0, seed=1, steps=40)
    assert a == length_grouped_batches(lengths, 16, 1.0, seed=1, steps=40)
    assert a != length_grouped_batches(lengths, 16, 1.0, seed=2, steps=40)
    # without steps, epochs decide: ceil(0.5 * 300 / 16) = 10
    assert len(length_grouped_batches(lengths, 16, 0.5, seed=1)) == 10


def test_equal_steps_give_nearly_equal_answer_exposures(records):
    """Every variant trains `step_budget` steps of one answer per sample; only the short last
    batch of an epoch's mega-batches trains fewer, so exposures differ by less than a batch
    per epoch crossed."""
    batch, epochs = 16, 0.5
    steps = step_budget(len(records), 0, epochs, batch)
    exposures = {}
    for variant in MAIN_VARIANTS:
        convs = build_variant(records, variant, PROMPTS)
        batches = length_grouped_batches([len(c.turns) for c in convs], batch, epochs, seed=0, steps=steps)
        assert len(batches) == steps
        exposures[variant] = sum(answer_turns(convs[i]) for b in batches for i in b)
        epochs_crossed = math.ceil(steps * batch / len(convs)) + 1
        assert steps * batch - epochs_crossed * batch < exposures[variant] <= steps * batch
    assert max(exposures.values()) - min(exposures.values()) <= 2 * batch
