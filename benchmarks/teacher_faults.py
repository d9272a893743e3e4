"""The teacher against endpoints that misbehave, measured end to end (issue 13's figures).

1. A misbehaving chat server (`tests/chat_server.py`, `wild=True`): answers in the forms real
   models use for the reference prompts (JSON without question_type, Python literals, prose
   around the JSON, other key spellings, cut off, refusals), 429s with Retry-After, 500s and
   stalls past the client's time-out. `generate` runs over `--images` photos (two of them
   duplicated), then again on the warm cache: records kept and quarantined with their
   reasons, calls, calls that repeat a usable answer on the rerun (should be 0), identical
   calls in flight (should be 0), and whether the record files are byte-identical.
2. Fail fast: the `generate` stage (a fresh process, as `dvc repro` runs it) against a port
   nobody listens on, a base URL without scheme, and a server that answers every call 400:
   seconds to stop, exit code, the message.
3. Provider batch mode (`tests/batch_server.py`): a run killed while its second batch is in
   progress, then resumed: batches and requests before and after, requests submitted twice
   (should be 0), and whether the records equal an uninterrupted run's.

`python -m benchmarks.teacher_faults [--images 60]`; the last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml
from PIL import Image

from reverie.generate import generate_dataset
from reverie.settings import GenerateSettings, OpenAITeacherSettings, Params
from reverie.teachers.openai_compat import generate_with_openai
from tests.batch_server import BatchServer
from tests.chat_server import MODELS, ChatServer, Fault

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = 3


def photos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.effect_noise((32, 32), 30 + i).convert("RGB").save(folder / f"photo{i:03d}.png")
    for i in (1, 2):  # two photos twice, under other names: identical prompts
        (folder / f"copy{i:03d}.png").write_bytes((folder / f"photo{i:03d}.png").read_bytes())
    return folder


def params_dict(tmp: Path, **openai) -> dict:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["project"]["mlflow_tracking_uri"] = f"sqlite:///{tmp / 'mlflow.db'}"
    data["generate"].update(teacher="openai", questions_per_image=QUESTIONS)
    data["generate"]["openai"].update(qa_model=MODELS["qa"], rationale_model=MODELS["rationale"],
                                      judge_model=MODELS["judge"], api_key_env="REVERIE_BENCH_NO_KEY", **openai)
    return data


def misbehaving(tmp: Path, n_images: int) -> dict:
    folder = photos(tmp / "photos", n_images)
    srv = ChatServer(wild=True, stall_s=2.0).start()
    try:
        params = Params.model_validate(params_dict(
            tmp, base_url=srv.base_url, images_dir=str(folder), cache_path=str(tmp / "cache.sqlite"), concurrency=16,
            timeout_s=0.5, max_retries=4, backoff_base_s=0.05, backoff_max_s=0.5))
        started = time.perf_counter()
        first = generate_dataset(params, tmp / "data", progress=False)
        first_s = time.perf_counter() - started
        stats = srv.stats()
        statuses = Counter(r["status"] for r in srv.requests)
        stalls = sum(1 for r in srv.requests if r["delay_s"] > 0)
        files = {p.name: p.read_bytes() for p in sorted((tmp / "data" / "records").glob("*.jsonl"))}
        srv.reset()
        started = time.perf_counter()
        again = generate_dataset(params, tmp / "data", progress=False)
        rerun_s = time.perf_counter() - started
        rerun = srv.stats()
    finally:
        srv.shutdown()
        srv.server_close()
    quarantine = [json.loads(line) for line in files["quarantine.jsonl"].decode().splitlines()]
    failed = [q for q in quarantine if "record" not in q]
    reasons = Counter(q["reason"] for q in failed)
    m = first.metrics
    images = m["train_images"] + m["eval_images"]
    with_records = len({r["image"] for r in first.raw})
    return {
        "images": images,
        "images_with_records": with_records,
        "images_with_records_share": with_records / images,
        "records_made": m["raw_records"],
        "records_kept": m["records"],
        "records_judged_out": len(quarantine) - len(failed),
        "items_quarantined_by_teacher": len(failed),
        "quarantine_reasons": dict(reasons.most_common()),
        "calls": m["teacher_calls"],
        "http_requests": m["teacher_requests"],
        "retries": m["teacher_retries"],
        "server_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "stalled_requests": stalls,
        "merged_in_flight": m["teacher_merged"],
        "cache_hits_first_run": m["teacher_cache_hits"],
        "duplicate_calls_in_flight": stats["duplicates_in_flight"],
        "first_run_s": round(first_s, 2),
        "rerun_calls": again.metrics["teacher_calls"],
        "rerun_calls_repeating_a_usable_answer": len(set(rerun["answered"]) & set(stats["usable"])),
        "rerun_cache_hits": again.metrics["teacher_cache_hits"],
        "rerun_s": round(rerun_s, 2),
        "rerun_records_byte_identical": all((tmp / "data" / "records" / name).read_bytes() == data
                                            for name, data in files.items()),
    }


def stage(tmp: Path, name: str, n_photos: int = 3, **openai) -> dict:
    """`python -m stages.generate` in a fresh process with these teacher settings."""
    folder = tmp / f"{name}-photos"
    photos(folder, n_photos)
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(params_dict(tmp, images_dir=str(folder),
                                                                  cache_path=str(tmp / f"{name}.sqlite"), **openai)))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "stages.generate", "--params", str(tmp / f"{name}.yaml"),
                             "--out", str(tmp / f"{name}-data"), "--metrics", str(tmp / f"{name}.json")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = result.stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("[generate]")), max(0, len(lines) - 3))
    message = "\n".join(lines[start:start + 3])
    return {"seconds": round(time.perf_counter() - started, 2), "exit_code": result.returncode, "message": message}


def fail_fast(tmp: Path) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    # the default retry settings (max_retries 5, back-off from 1 s): what each call would sit through
    dead = stage(tmp, "dead", base_url=f"http://127.0.0.1:{dead_port}/v1")
    no_scheme = stage(tmp, "noscheme", base_url=f"127.0.0.1:{dead_port}/v1")
    srv = ChatServer().start()
    srv.add_faults("qa", *[Fault(status=400, body='{"error": {"message": "model not supported"}}')] * 500)
    try:
        all_400 = stage(tmp, "all400", 40, base_url=srv.base_url)
        all_400["requests_sent"] = srv.stats()["requests"]
    finally:
        srv.shutdown()
        srv.server_close()
    return {"dead_port": dead, "url_without_scheme": no_scheme, "every_call_400": all_400}


CHILD = """
import sys
from pathlib import Path
from reverie.settings import GenerateSettings
from reverie.teachers.openai_compat import generate_with_openai
images = [(p.stem, p) for p in sorted(Path(sys.argv[2]).glob('*.png'))]
generate_with_openai(images, GenerateSettings.model_validate_json(sys.argv[1]), sys.argv[3], progress=False)
"""


def batch_settings(url: str) -> GenerateSettings:
    return GenerateSettings(teacher="openai", questions_per_image=QUESTIONS, openai=OpenAITeacherSettings(
        base_url=url, qa_model=MODELS["qa"], rationale_model=MODELS["rationale"], judge_model=MODELS["judge"],
        api_key_env="REVERIE_BENCH_NO_KEY", mode="batch", batch_poll_s=0.05, max_retries=2, backoff_base_s=0.05))


def batch_round_trip(tmp: Path, n_images: int) -> dict:
    folder = photos(tmp / "batch-photos", n_images)
    images = [(p.stem, p) for p in sorted(folder.glob("*.png"))]
    reference_server = BatchServer().start()
    try:
        started = time.perf_counter()
        reference, _, ref = generate_with_openai(images, batch_settings(reference_server.base_url),
                                                 tmp / "batch-reference.sqlite", progress=False)
        reference_s = time.perf_counter() - started
    finally:
        reference_server.stop()
    srv = BatchServer().start()
    srv.hold(from_batch=1)  # the QA batch completes, the rationales' batch stays in progress
    gen, cache = batch_settings(srv.base_url), tmp / "batch-killed.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CHILD, gen.model_dump_json(), str(folder), str(cache)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (len(srv.order) == 2 and srv.batches[srv.order[1]]["status"] == "in_progress"):
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    before = {"batches_created": len(srv.order), "requests_submitted": sum(srv.submitted.values()),
              "batches_completed": sum(srv.batches[b]["status"] == "completed" for b in srv.order)}
    srv.release()
    try:
        started = time.perf_counter()
        records, quarantined, resumed = generate_with_openai(images, gen, cache, progress=False)
        resume_s = time.perf_counter() - started
    finally:
        srv.stop()
    return {
        "images": len(images),
        "uninterrupted_batches": ref["batches"],
        "uninterrupted_requests": ref["batch_requests"],
        "uninterrupted_s": round(reference_s, 2),
        "killed_after": before,
        "resume_batches_waited_for": resumed["batches_resumed"],
        "resume_batches_created": resumed["batches"],
        "resume_requests_submitted": resumed["batch_requests"],
        "resume_cache_hits": resumed["cache_hits"],
        "resume_s": round(resume_s, 2),
        "requests_submitted_twice": sum(1 for n in srv.submitted.values() if n > 1),
        "requests_submitted_in_all": sum(srv.submitted.values()),
        "records_equal_uninterrupted": records == reference and not quarantined,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=60)
    p.add_argument("--batch-images", type=int, default=20)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="reverie-teacher-faults-") as tmp:
        tmp = Path(tmp)
        result = {"benchmark": "teacher_faults", "cpu_count": os.cpu_count(),
                  "misbehaving_server": misbehaving(tmp, args.images)}
        print(json.dumps(result["misbehaving_server"], indent=1))
        result["fail_fast"] = fail_fast(tmp)
        print(json.dumps(result["fail_fast"], indent=1))
        result["batch_kill_resume"] = batch_round_trip(tmp, args.batch_images)
        print(json.dumps(result["batch_kill_resume"], indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
