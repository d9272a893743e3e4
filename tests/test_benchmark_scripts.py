"""The benchmark scripts' verdicts: `benchmarks.evaluation` fails on any answer that differs
from batch 1 (and on a model too uniform to test), `benchmarks.teacher`'s threaded client and
the loopback server's rate limit count what they claim. Tiny sizes: no model is trained."""
import http.client
import json
from contextlib import closing

import pytest

from benchmarks import evaluation, teacher
from reverie.evaluation.suites import Item
from tests.chat_server import ChatServer


class FakeTokenizer:
    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": text.split()}


class FakeProcessor:
    tokenizer = FakeTokenizer()


def items(per_suite: int = 4) -> list[Item]:
    return [Item(suite, f"{suite}-{i}", f"images/eval/{i}.png", f"{suite} question {i}" + " word" * i, "x")
            for suite in evaluation.SUITES for i in range(per_suite)]


def fake_answerer(calls: list, corrupt=lambda batch_size, call: False):
    """Answers that depend on the question (five distinct ones); `corrupt(batch_size, call)`
    says which calls change the answer of the last question."""

    class Answerer:
        def __init__(self, model, processor, root, max_new_tokens):
            pass

        def answer(self, questions, batch_size, progress):
            calls.append(batch_size)
            out = [f"answer {q.text.split()[0]}" for q in questions]
            if corrupt(batch_size, len(calls)):
                out[-1] = "something else"
            return out

    return Answerer


def run(monkeypatch, capsys, answerer, *argv):
    monkeypatch.setattr(evaluation, "Answerer", answerer)
    code = evaluation.main(["--per-suite", "3", "--batch-size", "4", *argv], model=object(), processor=FakeProcessor(),
                           folder=".", items=items())
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_evaluation_passes_when_every_answer_matches_after_warming_both_sides(monkeypatch, capsys):
    calls = []
    code, result = run(monkeypatch, capsys, fake_answerer(calls))
    assert code == 0 and result["identical"] and result["differing"] == 0
    # one untimed pass of each side, then three timed pairs; the median of three is reported
    assert calls == [1, 4] + [1, 4] * 3
    assert len(result["seconds_batch1"]) == len(result["seconds_batched"]) == 3
    assert result["questions"] == 15 and result["per_suite"] == {s: 3 for s in evaluation.SUITES}
    assert result["distinct_answers"] == 5


def test_evaluation_exits_non_zero_when_one_batched_answer_differs(monkeypatch, capsys):
    # only the batched pass of the last repetition differs, on one question
    code, result = run(monkeypatch, capsys, fake_answerer([], lambda batch_size, call: batch_size == 4 and call == 8))
    assert code == 1 and not result["identical"] and result["differing"] == 1
    assert result["differing_examples"][0]["run"] == "batch 4, repeat 2"


def test_evaluation_exits_non_zero_when_batch_one_is_not_repeatable(monkeypatch, capsys):
    code, result = run(monkeypatch, capsys, fake_answerer([], lambda batch_size, call: batch_size == 1 and call == 3))
    assert code == 1 and result["differing_examples"][0]["run"] == "batch 1, repeat 0"


def test_evaluation_refuses_a_model_that_answers_too_uniformly(monkeypatch, capsys):
    class Constant(fake_answerer([])):
        def answer(self, questions, batch_size, progress):
            return ["yes"] * len(questions)

    code, result = run(monkeypatch, capsys, Constant)
    assert code == 2 and result["distinct_answers"] == 1 and result["identical"]
    with pytest.raises(SystemExit, match="at least 3"):
        evaluation.main(["--repeats", "2"])


def test_threaded_client_sends_every_request_with_the_concurrency_asked():
    server = ChatServer(latency_s=0.05).start()
    try:
        result = teacher.threaded_client(server.server_address[1], threads=4, requests=20)
        stats = server.stats()
    finally:
        server.shutdown()
    assert result["requests"] == 20 and result["lost"] == 0
    assert len(stats["answered"]) == 20 and stats["max_in_flight"] == 4
    assert result["seconds"] >= 5 * 0.05  # 20 requests, 4 at a time


def test_chat_server_rate_limit_answers_429_with_the_wait_until_the_window_frees():
    server = ChatServer(rate_limit=(2, 10.0)).start()
    body = json.dumps({"model": "m-rat", "messages": [{"role": "user", "content": "Explain."}]})
    statuses = []
    try:
        with closing(http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)) as conn:
            for _ in range(3):
                conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                statuses.append((response.status, response.getheader("Retry-After")))
    finally:
        server.shutdown()
    assert [s for s, _ in statuses] == [200, 200, 429]
    assert 9.0 < float(statuses[2][1]) <= 10.0 and server.stats()["rate_limited"] == 1


def test_teacher_goals_name_each_miss_and_the_script_exits_non_zero(monkeypatch, capsys):
    rate = {"calls_lost": 0, "share_of_rate_limit": 0.96}
    result = {"efficiency": 0.79, "threaded_efficiency": 0.97, "calls_lost": 0, "threaded_calls_lost": 0,
              "rate_limit": {"requests": 20, "window_s": 1.0, "paced": rate,
                             "unpaced": {**rate, "share_of_rate_limit": 0.94, "calls_lost": 2}}}
    result["goals"] = teacher.goals(result)
    assert {k: g["met"] for k, g in result["goals"].items()} == {
        "efficiency": False, "threaded_efficiency": True, "share_of_rate_limit_paced": True,
        "share_of_rate_limit_unpaced": False, "calls_lost": False}
    assert [m.split(" =")[0] for m in teacher.missed(result)] == ["efficiency", "share_of_rate_limit_unpaced",
                                                                   "calls_lost"]
    monkeypatch.setattr(teacher, "main", lambda argv: result)
    assert teacher.cli([]) == 1 and "calls_lost = 2 (goal == 0)" in capsys.readouterr().err
    for g in result["goals"].values():
        g["met"] = True
    assert teacher.cli([]) == 0
