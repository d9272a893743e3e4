"""Provider batch mode against a loopback stand-in of OpenAI's Batch API (tests/batch_server.py):
the online run's records, a resume after a kill that submits nothing twice, one cache for both
modes; and the cost preview of `generate --dry-run`, which asks nothing."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from reverie.data_import import image_folder
from reverie.settings import GenerateSettings, OpenAITeacherSettings
from reverie.teachers.chat_transport import TeacherConfigError
from reverie.teachers.openai_compat import generate_with_openai
from reverie.teachers.preview import image_tokens, preview_openai

from .batch_server import BatchServer
from .chat_server import MODELS, ChatServer
from .conftest import ROOT, tiny_params_dict, write_photos

QUESTIONS = 3


@pytest.fixture
def server():
    srv = BatchServer().start()
    yield srv
    srv.release()
    srv.stop()


def settings(base_url: str, mode: str = "batch", **openai) -> GenerateSettings:
    defaults = dict(base_url=base_url, qa_model=MODELS["qa"], rationale_model=MODELS["rationale"],
                    judge_model=MODELS["judge"], api_key_env="REVERIE_TEST_NO_KEY", mode=mode, batch_poll_s=0.02,
                    timeout_s=5, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.05,
                    price_per_1k_prompt=1.0, price_per_1k_completion=2.0)
    return GenerateSettings(teacher="openai", questions_per_image=QUESTIONS,
                            openai=OpenAITeacherSettings(**{**defaults, **openai}))


def run(images, gen, cache):
    return generate_with_openai(images, gen, cache, progress=False)


def test_batch_mode_gives_the_online_records_one_batch_per_step_and_model(server, tmp_path):
    images = write_photos(tmp_path / "photos", 4, (8, 8))
    server.fail_once = {"Explain why this answer": 500}  # one negative-rationale request fails inside its batch
    records, quarantined, metrics = run(images, settings(server.base_url), tmp_path / "batch.sqlite")
    online = ChatServer().start()
    try:
        expected, _, online_metrics = run(images, settings(online.base_url, "online"), tmp_path / "online.sqlite")
    finally:
        online.shutdown()
        online.server_close()
    assert records == expected and quarantined == []
    # QA, rationales, the failed request again, and the judgements (the last one waited for it)
    assert [sorted({r["body"]["model"] for r in upload}) for upload in server.uploads] == [
        [MODELS["qa"]], [MODELS["rationale"]], [MODELS["rationale"]], [MODELS["judge"]], [MODELS["judge"]]]
    assert [len(u) for u in server.uploads] == [4, 2 * QUESTIONS * 4, 1, QUESTIONS * 4 - 1, 1]
    assert sorted(server.submitted.values()).count(2) == 1 and max(server.submitted.values()) == 2
    for upload in server.uploads:
        assert all(set(line) == {"custom_id", "method", "url", "body"} and line["url"] == "/v1/chat/completions"
                   for line in upload)
    assert metrics["calls"] == online_metrics["calls"] == 4 * (1 + 3 * QUESTIONS)
    # the same tokens at half the price
    assert metrics["estimated_cost_usd"] == pytest.approx(
        0.5 * (metrics["prompt_tokens"] / 1000 * 1.0 + metrics["completion_tokens"] / 1000 * 2.0))


def test_batch_and_online_share_one_cache(server, tmp_path):
    images = write_photos(tmp_path / "photos", 2, (8, 8))
    cache = tmp_path / "cache.sqlite"
    batched, _, _ = run(images, settings(server.base_url), cache)
    again, _, metrics = run(images, settings(server.base_url, "online"), cache)
    assert server.online == 0 and metrics["calls"] == 0 and again == batched


CHILD = """
import sys
from pathlib import Path
from reverie.settings import GenerateSettings
from reverie.teachers.chat_transport import TeacherConfigError
from reverie.teachers.openai_compat import generate_with_openai
gen = GenerateSettings.model_validate_json(sys.argv[1])
images = [(p.stem, p) for p in sorted(Path(sys.argv[2]).glob('*.png'))]
generate_with_openai(images, gen, sys.argv[3], progress=False)
"""


def test_a_killed_batch_run_resumes_without_submitting_finished_work(tmp_path):
    images = write_photos(tmp_path / "photos", 4, (8, 8))
    reference_server = BatchServer().start()
    try:
        reference, _, ref_metrics = run(images, settings(reference_server.base_url), tmp_path / "reference.sqlite")
        every_request = sum(reference_server.submitted.values())
    finally:
        reference_server.stop()

    srv = BatchServer().start()
    cache = tmp_path / "killed.sqlite"
    gen = settings(srv.base_url)
    srv.hold(from_batch=1)  # the QA batch completes; the rationales' batch stays in progress
    child = subprocess.Popen([sys.executable, "-c", CHILD, gen.model_dump_json(), str(images[0][1].parent), str(cache)],
                             cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (len(srv.order) == 2 and srv.batches[srv.order[1]]["status"] == "in_progress"):
            time.sleep(0.02)
        assert len(srv.order) == 2, "the child did not submit its second batch"
        os.kill(child.pid, signal.SIGKILL)  # while it polls the rationales' batch
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    with sqlite3.connect(cache) as db:
        pending = db.execute("SELECT COUNT(*) FROM batch_requests WHERE batch_id = ?", (srv.order[1],)).fetchone()[0]
    assert pending == 2 * QUESTIONS * 4  # recorded before the kill
    srv.release()
    try:
        records, quarantined, metrics = run(images, gen, cache)
    finally:
        srv.stop()
    assert records == reference and quarantined == []
    assert max(srv.submitted.values()) == 1 and sum(srv.submitted.values()) == every_request  # nothing twice
    assert metrics["batches_resumed"] == 1 and metrics["batches"] == 1  # waited for the rationales, sent the judgements
    assert metrics["batch_requests"] == QUESTIONS * 4 and metrics["cache_hits"] == 4  # the QA answers
    assert ref_metrics["batches"] == 3


def test_the_stand_in_refuses_what_the_batch_api_refuses(server):
    lines = [{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m-qa", "messages": []}},
             {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m-rat", "messages": []}},
             {"custom_id": "b", "method": "GET", "url": "/v1/embeddings", "body": {"model": "m-qa", "messages": []}}]
    data = "\n".join(json.dumps(x) for x in lines).encode()
    with httpx.Client(base_url=server.base_url) as http:
        assert http.post("/files", files={"file": ("x.jsonl", data)}, data={"purpose": "fine-tune"}).status_code == 400
        file_id = http.post("/files", files={"file": ("x.jsonl", data)}, data={"purpose": "batch"}).json()["id"]
        assert http.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                           "completion_window": "1h"}).status_code == 400
        batch = http.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h"}).json()
        assert batch["status"] == "validating"
        batch = http.get(f"/batches/{batch['id']}").json()
    assert batch["status"] == "failed"
    assert {e["code"] for e in batch["errors"]["data"]} == {"duplicate_custom_id", "invalid_method",
                                                             "mismatched_endpoint", "mismatched_model"}


def test_a_batch_the_provider_refuses_stops_the_run_naming_the_url(server, tmp_path, monkeypatch):
    import reverie.teachers.batch

    monkeypatch.setattr(reverie.teachers.batch, "ENDPOINT", "/v1/chat/completion")  # a typo the provider refuses
    with pytest.raises(TeacherConfigError) as err:
        run(write_photos(tmp_path / "photos", 1, (8, 8)), settings(server.base_url), tmp_path / "c.sqlite")
    assert f"batch mode at {server.base_url} stopped" in str(err.value) and "HTTP 400" in str(err.value)


# ---- the cost preview --------------------------------------------------------------------------
def test_the_dry_run_counts_calls_tokens_and_price_without_asking(tmp_path):
    srv = ChatServer().start()
    try:
        write_photos(tmp_path / "photos", 3, (600, 400))
        entries = image_folder(tmp_path / "photos", 0.0)
        gen = settings(srv.base_url, "online", cache_path=str(tmp_path / "c.sqlite"), max_tokens=100)
        cold = preview_openai(gen, entries)
        assert srv.stats()["requests"] == 0
        run(entries[:1], gen, tmp_path / "c.sqlite")  # one image's calls are now in the cache
        srv.reset()
        warm = preview_openai(gen, entries)
        batch = preview_openai(settings(srv.base_url, "batch", cache_path=str(tmp_path / "c.sqlite"), max_tokens=100),
                               entries)
        assert srv.stats()["requests"] == 0
    finally:
        srv.shutdown()
        srv.server_close()
    per_image = 1 + 3 * QUESTIONS  # QA, two rationales and a judgement per question
    assert (cold["calls_known"], cold["calls_estimated"], cold["calls_to_pay"]) == (
        3, {"rationale": 2 * QUESTIONS * 3, "judge": QUESTIONS * 3}, 3 * per_image)
    assert (warm["calls_answered_by_cache"], warm["calls_to_pay"]) == (per_image, 2 * per_image)
    assert (image_tokens(1024, 1024), image_tokens(2048, 4096)) == (765, 1105)  # OpenAI's documented examples
    assert cold["completion_tokens_max"] == 100 * cold["calls_to_pay"]
    assert cold["price_usd_max"] == pytest.approx(cold["prompt_tokens_estimated"] / 1000 * 1.0
                                                  + cold["completion_tokens_max"] / 1000 * 2.0, abs=1e-3)
    assert batch["price_usd_max"] == pytest.approx(warm["price_usd_max"] / 2, abs=1e-3)


def test_generate_dry_run_prints_the_preview_and_writes_nothing(tmp_path):
    data = tiny_params_dict(tmp_path)
    data["generate"].update(teacher="openai")
    data["generate"]["openai"].update(images_dir=str(write_photos(tmp_path / "photos", 2, (8, 8))[0][1].parent),
                                      base_url="http://127.0.0.1:9/v1", cache_path=str(tmp_path / "c.sqlite"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, "-m", "stages.generate", "--params", str(tmp_path / "params.yaml"),
                             "--out", str(tmp_path / "data"), "--metrics", str(tmp_path / "m.json"), "--dry-run"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    preview = json.loads(result.stdout)
    assert preview["images"] == 2 and preview["calls_to_pay"] == 2 * (1 + 3 * data["generate"]["questions_per_image"])
    assert not (tmp_path / "data").exists() and not Path(tmp_path / "m.json").exists()
