"""Teacher throughput and resumability against a loopback chat-completions server with a
fixed latency per request (200 ms by default).

- reference design (the paper's scripts): one worker process per core, each sending one
  blocking request at a time;
- this project: `generate_with_openai` (async, concurrency-limited, cached) on images whose
  three steps make `--images` x (1 + 3 x questions) requests;
- a full rerun with the cache (its HTTP requests are the repeated calls: should be 0);
- a run killed with SIGKILL part-way and resumed: the calls the resume repeats, split into
  calls that were in flight at the kill (answered by the server, never stored) and finished
  calls (stored before the kill: should be 0).

`python -m benchmarks.teacher [--images 30] [--latency 0.2]`; the last line is one JSON object.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

from PIL import Image

from reverie.settings import GenerateSettings, OpenAITeacherSettings
from reverie.teachers.openai_compat import generate_with_openai
from tests.chat_server import MODELS, ChatServer

QUESTIONS = 3


def serve(latency_s: float, conn) -> None:
    """The server in its own process, so that its threads and the client share no GIL."""
    server = ChatServer(latency_s=latency_s).start()
    conn.send(server.server_address[1])
    signal.sigwait([signal.SIGTERM])


def server_stats(port: int) -> dict:
    with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=30)) as c:
        c.request("GET", "/v1/stats")
        return json.loads(c.getresponse().read())


def reference_worker(args) -> tuple[float, float, int]:
    """One process of the reference design: sequential blocking requests on one connection."""
    port, worker, count = args
    with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=30)) as conn:
        started = time.perf_counter()
        for i in range(count):
            body = json.dumps({"model": MODELS["rationale"], "temperature": 0.2, "max_tokens": 256,
                               "messages": [{"role": "user", "content": f"Explain item {worker}-{i}."}]})
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            answer = json.loads(conn.getresponse().read())
            assert answer["choices"][0]["message"]["content"]
        return started, time.perf_counter(), count


def reference_throughput(port: int, requests: int) -> float:
    workers = os.cpu_count() or 1
    shares = [requests // workers + (w < requests % workers) for w in range(workers)]
    with mp.Pool(workers) as pool:
        spans = pool.map(reference_worker, [(port, w, n) for w, n in enumerate(shares)])
    return sum(n for _, _, n in spans) / (max(e for _, e, _ in spans) - min(s for s, _, _ in spans))


def make_images(folder: Path, n: int) -> list[tuple[str, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"img{i:04d}.png"
        Image.effect_noise((64, 64), 40 + i).convert("RGB").save(path)
        out.append((path.stem, path))
    return out


def settings(port: int, concurrency: int) -> GenerateSettings:
    return GenerateSettings(teacher="openai", judge="openai", questions_per_image=QUESTIONS, openai=OpenAITeacherSettings(
        base_url=f"http://127.0.0.1:{port}/v1", qa_model=MODELS["qa"], rationale_model=MODELS["rationale"],
        judge_model=MODELS["judge"], concurrency=concurrency, timeout_s=30, max_retries=3))


CHILD = """
import sys
from pathlib import Path
from reverie.settings import GenerateSettings
from reverie.teachers.openai_compat import generate_with_openai
images = [(p.stem, p) for p in sorted(Path(sys.argv[2]).glob('*.png'))]
generate_with_openai(images, GenerateSettings.model_validate_json(sys.argv[1]), sys.argv[3], progress=False)
"""


def cached_rows(path: Path) -> int:
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:  # `with db` alone never closes
            return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def kill_and_resume(port: int, gen: GenerateSettings, images, folder: Path, cache: Path, kill_at: int) -> dict:
    before = len(server_stats(port)["answered"])
    child = subprocess.Popen([sys.executable, "-c", CHILD, gen.model_dump_json(), str(folder), str(cache)])
    deadline = time.monotonic() + 60
    while cached_rows(cache) < kill_at and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    time.sleep(0.5)  # let the server finish answering what was in flight
    stored = cached_rows(cache)
    answered = server_stats(port)["answered"][before:]
    _, _, metrics = generate_with_openai(images, gen, cache, progress=False)
    resumed = server_stats(port)["answered"][before + len(answered):]
    repeated = len(set(answered) & set(resumed))
    lost_in_flight = len(answered) - stored
    return {"resume_calls_before_kill": len(answered), "resume_stored_at_kill": stored,
            "resume_calls_after_kill": metrics["calls"], "resume_repeated_calls": repeated,
            "resume_repeated_in_flight_calls": lost_in_flight,
            "repeated_finished_calls_on_resume": repeated - lost_in_flight}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=30, help=f"images; each makes 1 + 3 x {QUESTIONS} requests")
    p.add_argument("--latency", type=float, default=0.2, help="server latency per request, seconds")
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--reference-requests", type=int, default=100)
    args = p.parse_args()

    parent, child_end = mp.Pipe()
    server = mp.Process(target=serve, args=(args.latency, child_end), daemon=True)
    server.start()
    port = parent.recv()
    try:
        with tempfile.TemporaryDirectory(prefix="reverie-teacher-bench-") as tmp:
            tmp = Path(tmp)
            images = make_images(tmp / "images", args.images)
            gen = settings(port, args.concurrency)
            reference = reference_throughput(port, args.reference_requests)
            print(f"reference ({os.cpu_count()} processes, one request at a time): {reference:.1f} requests/s")

            started = time.perf_counter()
            _, _, first = generate_with_openai(images, gen, tmp / "cache.sqlite", progress=False)
            ours = first["calls"] / (time.perf_counter() - started)
            print(f"async teacher (concurrency {args.concurrency}): {first['calls']} calls, {ours:.1f} requests/s")

            started = time.perf_counter()
            _, _, rerun = generate_with_openai(images, gen, tmp / "cache.sqlite", progress=False)
            rerun_s = time.perf_counter() - started
            print(f"rerun: {rerun['requests']} requests, {rerun['cache_hits']} cache hits, {rerun_s:.2f} s")

            resume = kill_and_resume(port, gen, images, tmp / "images", tmp / "killed.sqlite", first["calls"] * 2 // 5)
            print(f"kill and resume: {resume}")
    finally:
        server.terminate()
        server.join(5)
    result = {
        "benchmark": "teacher",
        "latency_s": args.latency,
        "cpu_count": os.cpu_count(),
        "requests": first["calls"],
        "reference_requests": args.reference_requests,
        "reference_requests_per_s": reference,
        "requests_per_s": ours,
        "concurrency": args.concurrency,
        "speedup_vs_reference": ours / reference,
        "repeated_calls_on_rerun": rerun["requests"],
        "rerun_cache_hits": rerun["cache_hits"],
        "rerun_seconds": rerun_s,
        **resume,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
