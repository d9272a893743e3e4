"""A teacher endpoint that misbehaves: answers in every form real models use, 429s, 500s and
stalls (records from at least 90 % of images, a warm rerun byte-identical); one that is dead,
misspelt or refuses every call (the stage stops within seconds, non-zero, naming the URL and
the params key); an images folder that is not there (its params key named)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

import reverie.generate
from reverie.generate import generate_dataset
from reverie.settings import GenerateSettings, OpenAITeacherSettings, Params, ParamsError, load_params
from reverie.teachers.chat_transport import TeacherConfigError
from reverie.teachers.openai_compat import generate_with_openai

from .chat_server import MODELS, ChatServer, Fault
from .conftest import ROOT, tiny_params_dict, write_photos


def teacher(base_url: str, **openai) -> dict:
    return {"base_url": base_url, "qa_model": MODELS["qa"], "rationale_model": MODELS["rationale"],
            "judge_model": MODELS["judge"], "api_key_env": "REVERIE_TEST_NO_KEY", "concurrency": 4, "timeout_s": 5,
            "max_retries": 3, "backoff_base_s": 0.02, "backoff_max_s": 0.2, **openai}


def params_for(tmp_path: Path, **openai) -> Params:
    data = tiny_params_dict(tmp_path)
    data["generate"].update(teacher="openai", questions_per_image=3)
    data["generate"]["openai"] = {**data["generate"]["openai"], **openai}
    return Params.model_validate(data)


def photos(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):  # distinct pixels, so that distinct images make distinct prompts
        Image.new("RGB", (16, 16), (i * 19 % 256, 255 - i * 7, i * 53 % 256)).save(folder / f"photo{i:02d}.png")
    return folder


# ---- a misbehaving server -------------------------------------------------------------------------
def test_a_misbehaving_server_yields_records_from_nine_in_ten_images_and_a_byte_identical_rerun(tmp_path, monkeypatch):
    monkeypatch.setattr(reverie.generate, "log_generation_run", lambda params, metrics: None)  # MLflow costs seconds
    folder = photos(tmp_path / "photos", 14)
    (folder / "photo99.png").write_bytes((folder / "photo03.png").read_bytes())  # a duplicate photo
    srv = ChatServer(wild=True, stall_s=1.0).start()
    try:
        params = params_for(tmp_path, **teacher(srv.base_url, images_dir=str(folder), eval_fraction=0.2,
                                                cache_path=str(tmp_path / "cache.sqlite"), timeout_s=0.3,
                                                max_retries=4, concurrency=8))
        first = generate_dataset(params, tmp_path / "data", progress=False)
        stats = srv.stats()
        files = {name: (tmp_path / "data" / "records" / name).read_bytes()
                 for name in ("raw.jsonl", "filtered.jsonl", "quarantine.jsonl")}
        statuses = [r["status"] for r in srv.requests]
        srv.reset()
        again = generate_dataset(params, tmp_path / "data", progress=False)  # a forced rerun on the warm cache
        rerun = srv.stats()
    finally:
        srv.shutdown()
        srv.server_close()
    assert {429, 500} <= set(statuses) and first.metrics["teacher_retries"] > 0  # it did misbehave
    images_with_records = {r["image"] for r in first.raw}
    assert len(images_with_records) >= 0.9 * 15
    quarantine = [json.loads(line) for line in files["quarantine.jsonl"].decode().splitlines()]
    failed = [q for q in quarantine if "record" not in q]  # the rest are records the judge rejected
    assert failed and len(failed) + sum(r["judge"]["consistent"] is False for r in first.raw) == len(quarantine)
    for q in failed:  # each with its step and reason and, where an answer was unusable, its raw text
        assert q["reason"].split(":")[0] in ("qa", "rationale", "judge")
        assert "raw" in q or "gave up after" in q["reason"]
    assert stats["duplicates_in_flight"] == 0 and first.metrics["teacher_merged"] + first.metrics["teacher_cache_hits"] > 0
    # the rerun asks only what failed: nothing answered usably before is sent again
    assert set(rerun["answered"]).isdisjoint(stats["usable"])
    assert again.metrics["teacher_calls"] == len(rerun["answered"]) < first.metrics["teacher_calls"]
    for name, data in files.items():
        assert (tmp_path / "data" / "records" / name).read_bytes() == data, name


# ---- fail fast ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_endpoint_stops_the_stage_within_seconds_naming_the_url_and_key(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    data = tiny_params_dict(tmp_path)
    data["generate"].update(teacher="openai")
    # retries that would take minutes against a dead port if each call found out for itself
    data["generate"]["openai"] = {**data["generate"]["openai"], **teacher(url, max_retries=6, backoff_base_s=5.0),
                                  "images_dir": str(photos(tmp_path / "photos", 3))}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "stages.generate", "--params", str(tmp_path / "params.yaml"),
                             "--out", str(tmp_path / "data"), "--metrics", str(tmp_path / "m.json")],
                            cwd=ROOT, capture_output=True, text=True, env=dict(os.environ), timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert f"cannot connect to {url} (generate.openai.base_url)" in result.stderr
    assert "Traceback" not in result.stderr and elapsed < 30  # the retries alone would take over 5 minutes
    assert not (tmp_path / "data" / "records").exists()


def test_a_url_without_scheme_is_refused_before_any_work(tmp_path):
    data = tiny_params_dict(tmp_path)
    data["generate"]["openai"]["base_url"] = "127.0.0.1:8000/v1"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match=r"'generate\.openai\.base_url': .*'127\.0\.0\.1:8000/v1' is not an http\(s\) URL"):
        load_params(tmp_path / "params.yaml")


def test_an_endpoint_that_fails_most_early_calls_stops_the_run(tmp_path):
    srv = ChatServer().start()
    srv.add_faults("qa", *[Fault(status=400, body='{"error": {"message": "Invalid model for this API"}}')] * 200)
    try:
        gen = GenerateSettings(teacher="openai", openai=OpenAITeacherSettings(
            **teacher(srv.base_url, fail_fast_calls=10, fail_fast_error_rate=0.5)))
        with pytest.raises(TeacherConfigError) as err:
            generate_with_openai(write_photos(tmp_path / "p", 30, (8, 8)), gen, tmp_path / "c.sqlite", progress=False)
        sent = srv.stats()["requests"]
    finally:
        srv.shutdown()
        srv.server_close()
    message = str(err.value)
    assert f"of the first 6 requests to {srv.base_url} failed (last: HTTP 400)" in message
    assert "generate.openai.fail_fast_error_rate=0.5" in message and "generate.openai.fail_fast_calls=10" in message
    assert sent <= 6 + 4  # the sixth failure stops it; at most the other lanes' calls were in flight


def test_rate_limits_alone_do_not_stop_the_run(tmp_path):
    srv = ChatServer().start()
    srv.add_faults("qa", *[Fault(status=429, headers={"Retry-After": "0"})] * 8)
    try:
        gen = GenerateSettings(teacher="openai", questions_per_image=2, openai=OpenAITeacherSettings(
            **teacher(srv.base_url, fail_fast_calls=4, fail_fast_error_rate=0.25, max_retries=8)))
        records, quarantined, metrics = generate_with_openai(write_photos(tmp_path / "p", 3, (8, 8)), gen,
                                                             tmp_path / "c.sqlite", progress=False)
    finally:
        srv.shutdown()
        srv.server_close()
    assert len(records) == 6 and quarantined == [] and metrics["retries"] == 8


@pytest.mark.parametrize("teacher_name", ["openai", "local"])
def test_a_missing_or_empty_images_folder_names_its_params_key(tmp_path, teacher_name):
    data = tiny_params_dict(tmp_path)
    data["generate"].update(teacher=teacher_name)
    data["generate"][teacher_name]["images_dir"] = str(tmp_path / "nowhere")
    with pytest.raises(ParamsError, match=rf"generate\.{teacher_name}\.images_dir: images folder .*nowhere does not exist"):
        generate_dataset(Params.model_validate(data), tmp_path / "data", progress=False)
    (tmp_path / "empty").mkdir()
    data["generate"][teacher_name]["images_dir"] = str(tmp_path / "empty")
    with pytest.raises(ParamsError, match=rf"generate\.{teacher_name}\.images_dir: no images"):
        generate_dataset(Params.model_validate(data), tmp_path / "data", progress=False)
