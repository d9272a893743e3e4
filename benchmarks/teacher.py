"""Teacher throughput and resumability against a loopback chat-completions server with a
fixed latency per request (200 ms by default).

- reference design (the paper's scripts): one worker process per core, each sending one
  blocking request at a time;
- the same blocking design at equal concurrency: `--concurrency` threads, each with its own
  keep-alive connection, sending the same number of requests as the async run;
- this project: `generate_with_openai` (async, concurrency-limited, cached) on images whose
  three steps make `--images` x (1 + 3 x questions) requests.
  Both are measured against the concurrency bound, `--concurrency` / latency requests/s:
  efficiency = requests/s / bound (goal: at least 0.8). A ratio of throughputs at unequal
  concurrency says nothing about the client;
- a full rerun with the cache (its HTTP requests are the repeated calls: should be 0);
- a run killed with SIGKILL part-way and resumed: the calls the resume repeats, split into
  calls that were in flight at the kill (answered by the server, never stored) and finished
  calls (stored before the kill: should be 0);
- a provider rate limit: a second server admits `--rate-limit` requests per `--rate-window`
  seconds and answers the rest 429 with Retry-After. `generate_with_openai` runs `--rate-images`
  images against it, once pacing itself (`rpm` set to the limit; the client's 60 s window is
  scaled to the server's) and once not (429s and Retry-After only). The share of the limit
  sustained is the shortest time the limit allows for the calls made, (ceil(calls / limit) - 1)
  x window + latency, over the time taken (goal: at least 95 %), with calls lost (quarantined
  for good: goal 0) and 429s received.

`python -m benchmarks.teacher [--images 60] [--latency 0.2] [--concurrency 32]`; the last line is one JSON
object with the figures and `goals` (each with its value, its threshold and whether it was met); the exit
status is 1, naming the missed goals on stderr, when any goal is missed.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from unittest import mock

from PIL import Image

from reverie.settings import GenerateSettings, OpenAITeacherSettings
from reverie.teachers import openai_compat
from reverie.teachers.chat_limits import SlidingWindowLimiter
from reverie.teachers.openai_compat import generate_with_openai
from tests.chat_server import MODELS, ChatServer

QUESTIONS = 3


def serve(latency_s: float, conn, rate_limit: tuple[int, float] | None = None) -> None:
    """The server in its own process, so that its threads and the client share no GIL."""
    server = ChatServer(latency_s=latency_s, rate_limit=rate_limit).start()
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


def threaded_client(port: int, threads: int, requests: int) -> dict:
    """The blocking design at the async client's concurrency: `threads` threads, each with one
    keep-alive connection, taking the next of `requests` requests until none is left."""
    lock, state = threading.Lock(), {"next": 0, "ok": 0, "lost": 0}

    def work() -> None:
        with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=30)) as conn:
            while True:
                with lock:
                    i = state["next"]
                    state["next"] += 1
                if i >= requests:
                    return
                body = json.dumps({"model": MODELS["rationale"], "temperature": 0.2, "max_tokens": 256,
                                   "messages": [{"role": "user", "content": f"Explain item t-{i}."}]})
                try:
                    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                    ok = bool(json.loads(conn.getresponse().read())["choices"][0]["message"]["content"])
                except (OSError, http.client.HTTPException, ValueError, KeyError):
                    ok = False
                    conn.close()
                with lock:
                    state["ok" if ok else "lost"] += 1

    pool = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - started
    return {"requests": state["ok"], "lost": state["lost"], "seconds": seconds, "requests_per_s": state["ok"] / seconds}


def start_server(latency_s: float, rate_limit: tuple[int, float] | None = None):
    parent, child_end = mp.Pipe()
    server = mp.Process(target=serve, args=(latency_s, child_end, rate_limit), daemon=True)
    server.start()
    return server, parent.recv()


def stop(server) -> None:
    server.terminate()
    server.join(5)


def rate_limited(images, gen: GenerateSettings, folder: Path, latency_s: float, limit: int, window_s: float) -> dict:
    """`generate_with_openai` against a server that enforces `limit` requests per `window_s`:
    paced (rpm = limit, the client's window scaled to the server's) and unpaced."""

    class ScaledWindow(SlidingWindowLimiter):  # the client's minute, scaled to the server's window
        def __init__(self, units: int, window: float = window_s, **kwargs):
            super().__init__(units, window, **kwargs)

    out = {}
    for name, rpm in (("paced", limit), ("unpaced", None)):
        server, port = start_server(latency_s, (limit, window_s))
        try:
            settings = gen.model_copy(update={"openai": gen.openai.model_copy(update={
                "base_url": f"http://127.0.0.1:{port}/v1", "rpm": rpm})})
            started = time.perf_counter()
            with mock.patch.object(openai_compat, "SlidingWindowLimiter", ScaledWindow):
                _, quarantined, metrics = generate_with_openai(images, settings, folder / f"rate-{name}.sqlite",
                                                               progress=False)
            seconds = time.perf_counter() - started
            stats = server_stats(port)
        finally:
            stop(server)
        calls = metrics["calls"]
        shortest = (math.ceil(calls / limit) - 1) * window_s + latency_s
        out[name] = {"calls": calls, "seconds": seconds, "requests_per_s": calls / seconds,
                     "limit_per_s": limit / window_s, "share_of_rate_limit": shortest / seconds,
                     "responses_429": stats["rate_limited"], "retries": metrics["retries"],
                     "rate_limit_waits": metrics["rate_limited"],
                     "calls_lost": len(quarantined), "lost_reasons": sorted({q["reason"][:80] for q in quarantined})[:3]}
    return out


def make_images(folder: Path, n: int) -> list[tuple[str, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"img{i:04d}.png"
        Image.effect_noise((64, 64), 40 + i).convert("RGB").save(path)
        out.append((path.stem, path))
    return out


def settings(port: int, concurrency: int) -> GenerateSettings:
    return GenerateSettings(teacher="openai", questions_per_image=QUESTIONS, openai=OpenAITeacherSettings(
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=60, help=f"images; each makes 1 + 3 x {QUESTIONS} requests")
    p.add_argument("--latency", type=float, default=0.2, help="server latency per request, seconds")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--reference-requests", type=int, default=100)
    p.add_argument("--rate-images", type=int, default=30, help="images of the rate-limit runs")
    p.add_argument("--rate-limit", type=int, default=20, help="requests the server admits per window")
    p.add_argument("--rate-window", type=float, default=1.0, help="the rate limit's window, seconds")
    args = p.parse_args(argv)
    bound = args.concurrency / args.latency

    server, port = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory(prefix="reverie-teacher-bench-") as tmp:
            tmp = Path(tmp)
            images = make_images(tmp / "images", args.images)
            gen = settings(port, args.concurrency)
            reference = reference_throughput(port, args.reference_requests)
            print(f"reference ({os.cpu_count()} processes, one request at a time): {reference:.1f} requests/s")

            started = time.perf_counter()
            _, lost, first = generate_with_openai(images, gen, tmp / "cache.sqlite", progress=False)
            ours = first["calls"] / (time.perf_counter() - started)
            print(f"async teacher (concurrency {args.concurrency}): {first['calls']} calls, {ours:.1f} requests/s, "
                  f"efficiency {ours / bound:.2f} of the bound {bound:.0f}/s, {len(lost)} lost")

            threaded = threaded_client(port, args.concurrency, first["calls"])
            print(f"threaded blocking client ({args.concurrency} threads): {threaded['requests']} calls, "
                  f"{threaded['requests_per_s']:.1f} requests/s, efficiency {threaded['requests_per_s'] / bound:.2f}, "
                  f"{threaded['lost']} lost")

            started = time.perf_counter()
            _, _, rerun = generate_with_openai(images, gen, tmp / "cache.sqlite", progress=False)
            rerun_s = time.perf_counter() - started
            print(f"rerun: {rerun['requests']} requests, {rerun['cache_hits']} cache hits, {rerun_s:.2f} s")

            resume = kill_and_resume(port, gen, images, tmp / "images", tmp / "killed.sqlite", first["calls"] * 2 // 5)
            print(f"kill and resume: {resume}")
        stop(server)
        with tempfile.TemporaryDirectory(prefix="reverie-teacher-bench-") as tmp:
            tmp = Path(tmp)
            rate_images = make_images(tmp / "images", args.rate_images)
            rate = rate_limited(rate_images, gen, tmp, args.latency, args.rate_limit, args.rate_window)
            for name, r in rate.items():
                print(f"rate limit {args.rate_limit}/{args.rate_window:g} s, {name}: {r['calls']} calls in "
                      f"{r['seconds']:.1f} s, {r['share_of_rate_limit']:.1%} of the limit, {r['responses_429']} 429s, "
                      f"{r['calls_lost']} lost")
    finally:
        stop(server)
    result = {
        "benchmark": "teacher",
        "latency_s": args.latency,
        "cpu_count": os.cpu_count(),
        "requests": first["calls"],
        "reference_requests": args.reference_requests,
        "reference_requests_per_s": reference,
        "requests_per_s": ours,
        "concurrency": args.concurrency,
        "concurrency_bound_per_s": bound,
        "efficiency": ours / bound,
        "calls_lost": len(lost),
        "threaded_requests_per_s": threaded["requests_per_s"],
        "threaded_efficiency": threaded["requests_per_s"] / bound,
        "threaded_calls_lost": threaded["lost"],
        "speedup_vs_threaded": ours / threaded["requests_per_s"],
        "speedup_vs_reference_unequal_concurrency": ours / reference,
        "repeated_calls_on_rerun": rerun["requests"],
        "rerun_cache_hits": rerun["cache_hits"],
        "rerun_seconds": rerun_s,
        **resume,
        "rate_limit": {"requests": args.rate_limit, "window_s": args.rate_window, "images": args.rate_images, **rate},
    }
    result["goals"] = goals(result)
    print(json.dumps(result))
    return result


EFFICIENCY_GOAL, RATE_SHARE_GOAL = 0.8, 0.95


def goals(result: dict) -> dict:
    """The issue's goals, each {value, goal, met}: the async teacher and the threaded client
    each at least 0.8 of the concurrency bound, each rate-limit run (paced and not) at least
    95 % of the limit, and no call lost anywhere."""
    rate = {k: v for k, v in result["rate_limit"].items() if isinstance(v, dict)}
    lost = result["calls_lost"] + result["threaded_calls_lost"] + sum(r["calls_lost"] for r in rate.values())
    out = {"efficiency": {"value": result["efficiency"], "goal": f">= {EFFICIENCY_GOAL}"},
           "threaded_efficiency": {"value": result["threaded_efficiency"], "goal": f">= {EFFICIENCY_GOAL}"}}
    for name, r in rate.items():
        out[f"share_of_rate_limit_{name}"] = {"value": r["share_of_rate_limit"], "goal": f">= {RATE_SHARE_GOAL}"}
    out["calls_lost"] = {"value": lost, "goal": "== 0", "met": lost == 0}
    for name, g in out.items():
        if "met" not in g:
            g["met"] = g["value"] >= (RATE_SHARE_GOAL if name.startswith("share") else EFFICIENCY_GOAL)
    return out


def missed(result: dict) -> list[str]:
    return [f"{name} = {g['value']:.3g} (goal {g['goal']})" for name, g in result["goals"].items() if not g["met"]]


def cli(argv: list[str] | None = None) -> int:
    """Runs the benchmark; 1, naming the missed goals on stderr, when any is missed."""
    misses = missed(main(argv))
    if misses:
        print("benchmarks.teacher: goal(s) missed: " + "; ".join(misses), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
