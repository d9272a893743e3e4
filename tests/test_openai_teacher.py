"""The OpenAI-compatible teacher against a real chat-completions server on loopback."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reverie.records import PUBLISHED_FIELDS
from reverie.settings import GenerateSettings, OpenAITeacherSettings, Params
from reverie.teachers.chat_limits import SlidingWindowLimiter, retry_after_seconds
from reverie.teachers.chat_transport import TeacherConfigError
from reverie.teachers.openai_compat import generate_with_openai
from reverie.teachers.parsing import ParseError, find_json, parse_judge, parse_questions

from .chat_server import MODELS, ChatServer, Fault
from .conftest import write_photos

KEY_ENV = "REVERIE_TEST_TEACHER_KEY"
SECRET = "sk-test-0123456789-do-not-leak"


@pytest.fixture
def images(tmp_path) -> list[tuple[str, Path]]:
    return write_photos(tmp_path / "photos", 4, (8, 8))


def settings(base_url: str, **openai) -> GenerateSettings:
    defaults = dict(base_url=base_url, qa_model=MODELS["qa"], rationale_model=MODELS["rationale"],
                    judge_model=MODELS["judge"], api_key_env=KEY_ENV, concurrency=4, timeout_s=5,
                    max_retries=3, backoff_base_s=0.02, backoff_max_s=0.2,
                    price_per_1k_prompt=0.5, price_per_1k_completion=1.5)
    return GenerateSettings(teacher="openai", questions_per_image=3,
                            openai=OpenAITeacherSettings(**{**defaults, **openai}))


def run(images, gen, cache):
    return generate_with_openai(images, gen, cache, progress=False)


# ---- parsing ------------------------------------------------------------------------------
def test_parsing_reads_fences_and_prose_and_never_evaluates():
    assert find_json('Sure!\n```json\n{"a": [1, 2]}\n```\nDone.') == {"a": [1, 2]}
    assert find_json('The answer is {"a": 1} as requested.') == {"a": 1}
    with pytest.raises(ParseError):
        find_json("{'a': __import__('os').getcwd()}")  # Python literals are not JSON, and never run
    questions, problems = parse_questions(json.dumps({"questions": [
        {"question": "Which animal?", "question_type": "multiple choice", "options": ["cat", "dog"],
         "correct_answer": "dog", "confusing_answer": "(A)"},
        {"question": "Is it day?", "question_type": "yes/no", "correct_answer": "Yes.", "confusing_answer": "maybe"}]}))
    assert [(q.correct_answer, q.confusing_answer) for q in questions] == [("B", "A")]
    assert "A. cat\nB. dog" in questions[0].record_question()
    assert len(problems) == 1 and "yes" in problems[0]
    assert parse_judge("No, the rationales agree.")[0].contradiction is False
    assert parse_judge('```{"contradiction": "yes", "reason": "x"}```')[0].contradiction is True


# ---- the three steps ------------------------------------------------------------------------
def test_records_calls_usage_and_cost(server, images, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    records, quarantined, metrics = run(images, settings(server.base_url), tmp_path / "cache.sqlite")
    assert quarantined == []
    assert [r["id"] for r in records] == [f"img{i}-q{j}" for i in range(4) for j in range(3)]
    for r in records:
        assert all(r[f] for f in PUBLISHED_FIELDS) and r["question_type"] in ("yes_no", "multiple_choice", "short_answer", "open_ended")
        assert r["provenance"]["qa_model"] == MODELS["qa"] and set(r["judge"]) == {"consistent", "reason"}
    assert metrics["calls"] == 4 * (1 + 3 * 3) == len(server.answered) and metrics["cache_hits"] == 0
    assert metrics["prompt_tokens"] > 0 and metrics["completion_tokens"] > 0
    expected_cost = metrics["prompt_tokens"] / 1000 * 0.5 + metrics["completion_tokens"] / 1000 * 1.5
    assert metrics["estimated_cost_usd"] == pytest.approx(expected_cost)
    assert {r["judge"]["consistent"] for r in records} == {True, False}  # the scripted judge rejects some
    # the rationales are asked with the image; the judge without it
    for req in server.requests:
        has_image = "data:image/png;base64," in json.dumps(req["messages"])
        assert has_image == (req["model"] != MODELS["judge"])


def test_rerun_with_the_cache_makes_no_call(server, images, tmp_path):
    cache = tmp_path / "cache.sqlite"
    first = run(images, settings(server.base_url), cache)
    server.reset()
    records, quarantined, metrics = run(images, settings(server.base_url), cache)
    assert server.stats()["requests"] == 0 and metrics["calls"] == 0
    assert metrics["cache_hits"] == first[2]["calls"]
    assert records == first[0]


def test_malformed_answer_is_retried_once_with_the_parse_error(server, images, tmp_path):
    server.add_faults("qa", Fault(content="Sure, here you go: {questions: oops"))
    records, quarantined, metrics = run(images[:1], settings(server.base_url), tmp_path / "c.sqlite")
    assert len(records) == 3 and quarantined == []
    qa = [r for r in server.requests if r["model"] == MODELS["qa"]]
    assert len(qa) == 2 and "ends before its JSON closes" in json.dumps(qa[1]["messages"][-1])
    assert qa[1]["messages"][-2] == {"role": "assistant", "content": "Sure, here you go: {questions: oops"}


def test_twice_malformed_answers_are_quarantined_with_the_reason(server, images, tmp_path):
    retry = "Your answer could not be used"  # so that each fault's second half hits its own retry
    server.add_faults("qa", Fault(content="no idea"), Fault(content="still no idea", match=retry))
    server.add_faults("judge", Fault(content="perhaps"), Fault(content="I cannot tell", match=retry))
    records, quarantined, _ = run(images[:2], settings(server.base_url, concurrency=1, max_parse_retries=1),
                                  tmp_path / "c.sqlite")
    reasons = [q["reason"] for q in quarantined]
    assert any(r.startswith("qa: no JSON object found") for r in reasons)
    assert any(r.startswith("judge: expected {\"contradiction\"") for r in reasons)
    assert len(records) == 2  # one image lost its QA, the other one item to the judge


def test_429_with_retry_after_is_honoured(server, images, tmp_path):
    server.add_faults("qa", Fault(status=429, headers={"Retry-After": "1"}))
    records, _, metrics = run(images[:1], settings(server.base_url), tmp_path / "c.sqlite")
    qa = [r for r in server.requests if r["model"] == MODELS["qa"]]
    assert [r["status"] for r in qa] == [429, 200]
    assert qa[1]["t"] - qa[0]["t"] >= 0.95  # the back-off alone would be at most 0.2 s
    assert metrics["retries"] == 1 and len(records) == 3


def test_server_errors_and_time_outs_are_retried(server, images, tmp_path):
    server.add_faults("rationale", Fault(status=500), Fault(status=503), Fault(delay_s=2.0))
    started = time.monotonic()
    records, quarantined, metrics = run(images[:1], settings(server.base_url, timeout_s=0.4), tmp_path / "c.sqlite")
    assert len(records) == 3 and quarantined == []
    assert metrics["retries"] == 3 and time.monotonic() - started < 2.0  # the slow answer was not awaited


def test_retries_used_up_quarantine_the_item(server, images, tmp_path):
    server.add_faults("judge", *[Fault(status=500)] * 9)  # three attempts for each of the three items
    records, quarantined, _ = run(images[:1], settings(server.base_url, max_retries=2), tmp_path / "c.sqlite")
    assert records == [] and [q["id"] for q in quarantined] == ["img0-q0", "img0-q1", "img0-q2"]
    assert {q["reason"] for q in quarantined} == {"judge: model 'm-judge': gave up after 3 attempt(s), last: HTTP 500"}


def test_concurrency_limit_holds(images, tmp_path):
    srv = ChatServer(latency_s=0.05).start()
    try:
        run(images, settings(srv.base_url, concurrency=3), tmp_path / "c.sqlite")
        assert srv.max_in_flight == 3
    finally:
        srv.shutdown()
        srv.server_close()


def test_rate_limiter_paces_by_units_in_a_sliding_window():
    async def go():
        limiter = SlidingWindowLimiter(limit=4, window_s=0.3)
        started = time.monotonic()
        for _ in range(12):
            await limiter.acquire(1)
        return time.monotonic() - started

    assert 0.6 <= asyncio.run(go()) < 1.5  # 12 units at 4 per 0.3 s: two full windows waited



def test_a_refunded_unit_lets_the_next_waiter_go_at_once():
    async def go():
        limiter = SlidingWindowLimiter(limit=1, window_s=10.0)
        entry = await limiter.acquire(1)
        waiter = asyncio.create_task(limiter.acquire(1))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # the window is full for 10 s
        started = time.monotonic()
        limiter.settle(entry, 0)  # a 429: the server did not count it
        await asyncio.wait_for(waiter, 1.0)
        return time.monotonic() - started

    assert asyncio.run(go()) < 0.5


def test_a_unit_restamped_when_sent_does_not_hold_back_an_older_one():
    async def go():
        limiter = SlidingWindowLimiter(limit=2, window_s=0.3, guard=0.0)
        first, _ = await limiter.acquire(1), await limiter.acquire(1)
        started = time.monotonic()
        await asyncio.sleep(0.15)
        SlidingWindowLimiter.restamp(first)  # sent late: now newer than the second
        await limiter.acquire(1)  # the second's place frees at 0.3 s, the first's at 0.45 s
        return time.monotonic() - started

    assert 0.25 <= asyncio.run(go()) < 0.4

def test_retry_after_reads_seconds_and_openais_milliseconds():
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("1", "250") == 0.25  # retry-after-ms is the same wait, more precise
    assert retry_after_seconds(None, "bad") is None and retry_after_seconds("soon") is None


def test_a_429_pauses_every_request_and_does_not_spend_the_retries(server, images, tmp_path):
    # max_retries=0: a 429 counted as a failed attempt would quarantine the image at once
    server.add_faults("qa", Fault(status=429, headers={"Retry-After": "0.6"}))
    records, quarantined, metrics = run(images[:2], settings(server.base_url, max_retries=0), tmp_path / "c.sqlite")
    assert quarantined == [] and len(records) == 6
    assert metrics["rate_limited"] == 1 and metrics["retries"] == 1
    refused = next(r["t"] for r in server.requests if r["status"] == 429)
    # the other image's calls (answered at once otherwise) waited with the refused one
    assert not [r for r in server.requests if refused + 0.05 < r["t"] < refused + 0.5]


def test_many_429s_from_a_rate_limit_lose_no_call(images, tmp_path):
    srv = ChatServer(rate_limit=(3, 0.3)).start()  # 20 calls for two images at 3 per 0.3 s
    try:
        started = time.monotonic()
        records, quarantined, metrics = run(images[:2], settings(srv.base_url, max_retries=0), tmp_path / "c.sqlite")
        seconds = time.monotonic() - started
        limited = srv.stats()["rate_limited"]
    finally:
        srv.shutdown()
        srv.server_close()
    assert quarantined == [] and len(records) == 6 and metrics["calls"] == 20
    assert limited > 0 and metrics["rate_limited"] == limited
    assert seconds >= 6 * 0.3  # the server's limit held: ceil(20 / 3) - 1 windows at least


def test_a_retry_after_beyond_the_wait_limit_fails_at_once(server, images, tmp_path):
    server.add_faults("qa", Fault(status=429, headers={"Retry-After": "3600"}))  # a spent quota, not a rate
    started = time.monotonic()
    _, quarantined, _ = run(images[:1], settings(server.base_url, rate_limit_wait_max_s=30), tmp_path / "c.sqlite")
    assert time.monotonic() - started < 5
    assert len(quarantined) == 1 and "generate.openai.rate_limit_wait_max_s=30" in quarantined[0]["reason"]
    assert "Retry-After 3600 s" in quarantined[0]["reason"]

# ---- kill and resume ------------------------------------------------------------------------
CHILD = """
import sys
from pathlib import Path
from reverie.settings import GenerateSettings
from reverie.teachers.openai_compat import generate_with_openai
gen = GenerateSettings.model_validate_json(sys.argv[1])
images = [(p.stem, p) for p in sorted(Path(sys.argv[2]).glob('*.png'))]
generate_with_openai(images, gen, sys.argv[3], progress=False)
"""


def test_a_killed_run_resumes_without_repeating_a_finished_call(server, images, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    gen = settings(server.base_url)
    reference, _, ref_metrics = run(images, gen, tmp_path / "reference.sqlite")
    all_calls = set(server.answered)
    server.reset()

    cache = tmp_path / "killed.sqlite"
    server.hold(after=17)  # answer 17 calls, then leave every later one hanging
    child = subprocess.Popen([sys.executable, "-c", CHILD, gen.model_dump_json(), str(images[0][1].parent), str(cache)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _rows(cache) < 17:
            time.sleep(0.05)
        assert _rows(cache) == 17, "the child did not commit the answered calls"
        os.kill(child.pid, signal.SIGKILL)  # mid-run, with calls in flight
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    before_kill = list(server.answered)
    server.release()
    server.reset()

    records, quarantined, metrics = run(images, gen, cache)
    after = list(server.answered)
    assert set(before_kill).isdisjoint(after)  # no finished call repeated
    assert len(after) == len(set(after)) == ref_metrics["calls"] - 17 == metrics["calls"]
    assert set(before_kill) | set(after) == all_calls
    assert records == reference and quarantined == []


def _rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


# ---- the API key -----------------------------------------------------------------------------
def test_the_key_is_sent_but_never_written(images, tmp_path, monkeypatch):
    """The whole generate step (records, quarantine, metrics, the MLflow store, the cache)
    with a server that demands the key and one answer that echoes it back in an error."""
    from reverie.generate import generate_dataset
    from reverie.io import write_json

    from .conftest import tiny_params_dict

    monkeypatch.setenv(KEY_ENV, SECRET)
    srv = ChatServer(expected_key=SECRET).start()
    srv.add_faults("judge", Fault(status=400, body=json.dumps({"error": {"message": f"bad request with key {SECRET}"}})))
    try:
        data = tiny_params_dict(tmp_path)
        data["generate"] = {**settings(srv.base_url).model_dump(), "questions_per_image": 2}
        data["generate"]["openai"].update(images_dir=str(images[0][1].parent), cache_path=str(tmp_path / ".reverie" / "cache.sqlite"),
                                          eval_fraction=0.3)
        params = Params.model_validate(data)
        result = generate_dataset(params, tmp_path / "data", progress=False)
        write_json(tmp_path / "metrics" / "generate.json", result.metrics)
    finally:
        srv.shutdown()
        srv.server_close()
    quarantine = [json.loads(line) for line in (tmp_path / "data" / "records" / "quarantine.jsonl").read_text().splitlines()]
    assert any("bad request with key ***" in q["reason"] for q in quarantine)
    assert result.metrics["teacher_calls"] > 0 and (tmp_path / "mlflow.db").exists()
    for rec in result.raw:
        assert (tmp_path / "data" / rec["image"]).is_file()
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == []


def test_a_rejected_key_stops_the_run_without_showing_it(images, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-" + SECRET)
    srv = ChatServer(expected_key=SECRET).start()
    try:
        with pytest.raises(TeacherConfigError) as err:
            run(images[:1], settings(srv.base_url), tmp_path / "c.sqlite")
    finally:
        srv.shutdown()
        srv.server_close()
    assert "HTTP 401" in str(err.value) and KEY_ENV in str(err.value) and SECRET not in str(err.value)
