"""What teachers really answer, and the cache around it: the reference prompt's layout without
question_type, Python literals, prose and fences, cut-off answers asked again and then
quarantined with their raw text; a cache that never freezes a failure, keyed by endpoint,
model, prompt version and image; identical calls in flight sent once."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from reverie.settings import GenerateSettings, OpenAITeacherSettings
from reverie.teachers.cache import call_key
from reverie.teachers.chat_steps import prompt_versions
from reverie.teachers.openai_compat import generate_with_openai
from reverie.teachers.parsing import ParseError, parse_judge, parse_questions, parse_rationale

from .chat_server import MODELS, ChatServer, Fault
from .conftest import write_photos


def settings(base_url: str, **openai) -> GenerateSettings:
    defaults = dict(base_url=base_url, qa_model=MODELS["qa"], rationale_model=MODELS["rationale"],
                    judge_model=MODELS["judge"], api_key_env="REVERIE_TEST_NO_KEY", concurrency=4, timeout_s=5,
                    max_retries=3, backoff_base_s=0.02, backoff_max_s=0.2)
    return GenerateSettings(teacher="openai", questions_per_image=3,
                            openai=OpenAITeacherSettings(**{**defaults, **openai}))


def run(images, gen, cache):
    return generate_with_openai(images, gen, cache, progress=False)


# ---- parsing ----------------------------------------------------------------------------------
REFERENCE = [{"question": "What colour is the bus?", "correct_answer": "Red", "confusing_answer": "Blue"},
             {"question": "Is there a dog on the road?", "correct_answer": "No", "confusing_answer": "Yes"},
             {"question": "Why is the man holding an umbrella?", "correct_answer": "Because it is raining hard.",
              "confusing_answer": "Because it is sunny."}]
# (question_type, correct, confusing) as the record conventions want them, written out by hand
EXPECTED = [("short_answer", "Red", "Blue"), ("yes_no", "no", "yes"),
            ("open_ended", "Because it is raining hard.", "Because it is sunny.")]


@pytest.mark.parametrize("answer", [
    json.dumps(REFERENCE),  # the reference prompt's layout: no question_type
    repr(REFERENCE),  # a Python literal, as the reference scripts parse it
    "```python\n" + repr(REFERENCE) + "\n```",
    "Sure! Here are three questions:\n" + json.dumps(REFERENCE, indent=2) + "\nHope this helps.",
    json.dumps({"questions": [{"Question": q["question"], "Correct Answer": q["correct_answer"],
                               "Confusing answer": q["confusing_answer"]} for q in REFERENCE]}),
    repr([{f"question{i + 1}": q["question"], f"correct answer{i + 1}": q["correct_answer"],
           f"confusing answer{i + 1}": q["confusing_answer"]} for i, q in enumerate(REFERENCE)]),
], ids=["json", "python", "fenced-python", "prose", "key-spellings", "numbered-keys"])
def test_the_shapes_teachers_answer_in_are_read(answer):
    questions, problems = parse_questions(answer)
    assert problems == []
    assert [(q.question_type, q.correct_answer, q.confusing_answer) for q in questions] == EXPECTED
    assert all(q.inferred_type for q in questions)


def test_options_written_into_the_question_become_options_and_letters():
    answer = repr([{"question": "Which animal is on the sofa? (A) a cat (B) a dog (C) a rabbit",
                    "correct_answer": "B) a dog", "confusing_answer": "a cat"}])
    [q], _ = parse_questions(answer)
    assert (q.question_type, q.question, q.options) == ("multiple_choice", "Which animal is on the sofa?",
                                                        ["a cat", "a dog", "a rabbit"])
    assert (q.correct_answer, q.confusing_answer) == ("B", "A")
    assert q.record_question().startswith("Which animal is on the sofa?\nA. a cat\nB. a dog\nC. a rabbit\n")


def test_a_cut_off_answer_keeps_its_complete_questions_and_asks_again():
    full = json.dumps(REFERENCE)
    cut = full[: full.index(REFERENCE[2]["question"])]  # ends inside the third question
    questions, problems = parse_questions("Here you go:\n" + cut)
    assert [q.correct_answer for q in questions] == ["Red", "no"]
    assert problems == ["the answer is cut off after 2 complete question(s)"]
    with pytest.raises(ParseError, match="ends before its JSON closes"):
        parse_questions(full[:20])


def test_nothing_in_an_answer_is_ever_evaluated(tmp_path):
    marker = tmp_path / "ran"
    for answer in [f"[{{'question': __import__('pathlib').Path({str(marker)!r}).touch(), 'correct_answer': 'a'}}]",
                   "{'contradiction': exec('1')}"]:
        with pytest.raises(ParseError):
            parse_questions(answer)
    assert not marker.exists()
    assert parse_judge("{'Contradiction': 'Yes', 'reason': 'they disagree'}")[0].contradiction is True
    assert parse_judge("No.")[0].contradiction is False
    assert parse_rationale("{'Rationale': 'The bus is red, so the answer holds.'}")[0].startswith("The bus is red")


# ---- asking again, then quarantine -------------------------------------------------------------
def test_unusable_answers_are_asked_again_up_to_the_limit_then_quarantined_with_their_raw_text(server, tmp_path):
    images = write_photos(tmp_path / "photos", 1, (8, 8))
    refusals = ["I'm sorry, I can't help with that.", "No.", '[{"question": "What is it?", "correct_ans']
    server.add_faults("qa", *[Fault(content=c) for c in refusals])
    records, quarantined, _ = run(images, settings(server.base_url, max_parse_retries=2), tmp_path / "c.sqlite")
    qa = [r for r in server.requests if r["model"] == MODELS["qa"]]
    assert len(qa) == 3 and records == []
    assert ["(try 2 of 3)" in json.dumps(qa[1]["messages"]), "(try 3 of 3)" in json.dumps(qa[2]["messages"])] == [True, True]
    assert qa[2]["messages"][-2] == {"role": "assistant", "content": refusals[1]}  # shown its last answer
    [q] = quarantined
    assert q["reason"] == "qa: the answer ends before its JSON closes (cut off?)"
    assert q["raw"] == refusals[2] and q["attempts"] == 3 and q["image_id"] == "img0"


def test_a_failure_is_not_frozen_and_a_corrected_answer_is_replayed(server, tmp_path):
    images = write_photos(tmp_path / "photos", 2, (8, 8))
    cache = tmp_path / "c.sqlite"
    gen = settings(server.base_url, max_parse_retries=1, concurrency=1)
    retry = "Your answer could not be used"
    # image 0: unusable twice, quarantined; image 1: unusable once, then corrected
    server.add_faults("qa", Fault(content="no idea"), Fault(content="still no idea", match=retry),
                      Fault(content="not sure"))
    first, quarantined, _ = run(images, gen, cache)
    assert [q["image_id"] for q in quarantined] == ["img0"] and {r["image"] for r in first} == {str(images[1][1])}
    with sqlite3.connect(cache) as db:
        statuses = sorted(row[0] for row in db.execute("SELECT status FROM calls"))
    assert statuses.count("rejected") == 3  # stored, never served as an answer
    server.reset()
    again, quarantined_again, metrics = run(images, gen, cache)  # the server now answers well
    qa = [r for r in server.requests if r["model"] == MODELS["qa"]]
    # image 0's QA is asked afresh from its first question; image 1's corrected conversation
    # is replayed from the cache, so its records are the same and cost nothing
    assert len(qa) == 1 and len(qa[0]["messages"]) == 1 and quarantined_again == []
    assert [r for r in again if r["image"] == str(images[1][1])] == first
    assert {r["image"] for r in again} == {str(p) for _, p in images}
    assert metrics["calls"] == 1 + 3 * 3  # image 0's QA, two rationales and a judgement per question


# ---- the cache key -------------------------------------------------------------------------------
def test_the_cache_key_holds_endpoint_model_prompt_version_and_image(tmp_path, server):
    base = call_key("m", [{"role": "user", "content": "x"}], {"t": 0}, {"endpoint": "http://a/v1", "prompt": "p1"})
    for changed in [call_key("m", [{"role": "user", "content": "x"}], {"t": 0}, {"endpoint": "http://b/v1", "prompt": "p1"}),
                    call_key("m", [{"role": "user", "content": "x"}], {"t": 0}, {"endpoint": "http://a/v1", "prompt": "p2"}),
                    call_key("n", [{"role": "user", "content": "x"}], {"t": 0}, {"endpoint": "http://a/v1", "prompt": "p1"}),
                    call_key("m", [{"role": "user", "content": "y"}], {"t": 0}, {"endpoint": "http://a/v1", "prompt": "p1"})]:
        assert changed != base
    assert len(set(prompt_versions().values())) == 4  # one version per template

    # behaviour: the same images against a second endpoint are asked there, not served from the first
    images = write_photos(tmp_path / "photos", 2, (8, 8))
    cache = tmp_path / "c.sqlite"
    run(images, settings(server.base_url), cache)
    other = ChatServer().start()
    try:
        run(images, settings(other.base_url), cache)
        assert other.stats()["requests"] == len(server.answered) > 0
        server.reset()
        run(images, settings(server.base_url.replace("127.0.0.1", "localhost")), cache)  # another URL, same server
        assert server.stats()["requests"] > 0
    finally:
        other.shutdown()
        other.server_close()


def test_identical_calls_in_flight_are_sent_once(tmp_path):
    srv = ChatServer(latency_s=0.2).start()  # slow enough that the copies' calls overlap
    try:
        images = write_photos(tmp_path / "photos", 2, (8, 8))
        for k in range(3):  # three more copies of img0, under other names
            shutil.copy(images[0][1], tmp_path / "photos" / f"copy{k}.png")
            images.append((f"copy{k}", tmp_path / "photos" / f"copy{k}.png"))
        records, quarantined, metrics = run(images, settings(srv.base_url, concurrency=8), tmp_path / "c.sqlite")
        stats = srv.stats()
        assert stats["duplicates_in_flight"] == 0 and len(stats["answered"]) == len(set(stats["answered"]))
        assert metrics["calls"] == len(stats["answered"]) == 2 * (1 + 3 * 3)  # two distinct images' worth
        assert metrics["merged"] == 3 * (1 + 3 * 3)  # the copies waited for img0's calls
        by_image = {}
        for r in records:
            by_image.setdefault(Path(r["image"]).stem, []).append({k: r[k] for k in ("question", "correct_rationale")})
        assert by_image["copy0"] == by_image["copy1"] == by_image["copy2"] == by_image["img0"]
    finally:
        srv.shutdown()
        srv.server_close()
