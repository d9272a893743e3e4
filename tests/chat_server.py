"""A real chat-completions server on loopback with scripted answers, for the tests and
`benchmarks/teacher.py`.

Answers are deterministic functions of the request (so a rerun and a resume can be compared
with an uninterrupted run); the step is told by the model name (`m-qa`, `m-rat`, `m-judge`).
Faults are scripted per model and consumed in order: a status with headers (429 with
Retry-After, 500), a malformed answer, a slow answer. With `wild=True` the server misbehaves
by itself as real teachers do: answers in eight forms (JSON as asked, the reference layout
without question_type, Python literals, prose around the JSON, other key spellings, cut off,
refusals, an item whose answers are equal), and 429s with Retry-After, 500s and stalls, all
derived from the request body so that they do not depend on arrival order. The server counts
requests in flight (and identical ones in flight at once) and keeps the sha256 of every
answered request body, so tests can prove the concurrency limit, single flight and that no
finished call is repeated. `GET /stats` serves the same counts to a client in another process.
With `rate_limit=(n, window_s)` it enforces a provider's rate limit: at most n requests admitted
in any window_s seconds; a request over it is answered at once with 429 and a Retry-After
(seconds, with decimals) that says when the oldest admitted request leaves the window.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODELS = {"qa": "m-qa", "rationale": "m-rat", "judge": "m-judge"}
TYPES = ("yes_no", "multiple_choice", "short_answer", "open_ended")


@dataclass
class Fault:
    status: int = 200
    headers: dict = field(default_factory=dict)
    content: str | None = None  # replaces the normal answer (a malformed one)
    delay_s: float = 0.0
    body: str | None = None  # a raw error body
    match: str | None = None  # applies only to a request whose body contains this text


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _texts(messages: list[dict]) -> str:
    out = []
    for m in messages:
        parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        out += [p.get("text") or p.get("image_url", {}).get("url", "") for p in parts]
    return "\n".join(out)


def qa_questions(messages: list[dict]) -> list[dict]:
    """Questions of the four formats, derived from the image bytes in the data URL."""
    text = _texts(messages[:1])
    h = _digest(text)
    n = int(re.search(r"write (\d+) questions", text).group(1)) if re.search(r"write (\d+) questions", text) else 3
    questions = []
    for j in range(n):
        kind = TYPES[(int(h[j], 16) + j) % 4]
        thing = f"object-{h[j * 2:j * 2 + 4]}"
        if kind == "yes_no":
            q = {"question": f"Is there a {thing} in the image?", "correct_answer": "yes", "confusing_answer": "no"}
        elif kind == "multiple_choice":
            q = {"question": f"What colour is the {thing}?", "options": ["red", "green", "blue"],
                 "correct_answer": "B", "confusing_answer": "C"}
        elif kind == "short_answer":
            q = {"question": f"How many {thing}s are there?", "correct_answer": str(j + 2), "confusing_answer": str(j + 3)}
        else:
            q = {"question": f"Describe the {thing}.", "correct_answer": f"a small {thing} on the left",
                 "confusing_answer": f"a large {thing} on the right"}
        questions.append({**q, "question_type": kind, "reasoning": "attribute"})
    return questions


def qa_answer(messages: list[dict]) -> str:
    return "Here are the questions:\n```json\n" + json.dumps({"questions": qa_questions(messages)}) + "\n```"


def rationale_answer(messages: list[dict]) -> str:
    h = _digest(_texts(messages))[:10]
    return f"The image shows the objects clearly, so the reasoning holds (trace {h})."


def judge_answer(messages: list[dict]) -> str:
    h = _digest(_texts(messages))
    contradiction = int(h[:2], 16) % 5 == 0
    return json.dumps({"contradiction": "yes" if contradiction else "no",
                       "reason": "the rationales disagree" if contradiction else "consistent"})


ANSWERS = {MODELS["qa"]: qa_answer, MODELS["rationale"]: rationale_answer, MODELS["judge"]: judge_answer}


# ---- a teacher that answers the way real models answer the reference prompts ----------------
def _reference_items(questions: list[dict]) -> list[dict]:
    """The reference QA prompt asks for [{question, correct answer, confusing answer}, ...]:
    no type, no reasoning kind, and the options inside the question."""
    items = []
    for q in questions:
        item = {"question": q["question"], "correct_answer": q["correct_answer"], "confusing_answer": q["confusing_answer"]}
        if q.get("options"):
            marks = " ".join(f"({'ABC'[i]}) {o}" for i, o in enumerate(q["options"]))
            item["question"] = f"{q['question']} {marks}"
            item["correct_answer"] = f"{q['correct_answer']}) {q['options']['ABC'.index(q['correct_answer'])]}"
        items.append(item)
    return items


def wild_qa(messages: list[dict], form: int) -> tuple[str, bool]:
    """(answer, usable) in one of eight forms real chat models use for the QA step."""
    questions = qa_questions(messages)
    plain = _reference_items(questions)
    forms = [
        lambda: ("```json\n" + json.dumps({"questions": questions}) + "\n```", True),  # as asked
        lambda: (json.dumps(plain), True),  # the reference layout: no question_type
        lambda: (repr(plain), True),  # a Python literal: single quotes
        lambda: ("Sure! Here are three questions about the image:\n" + json.dumps(plain, indent=2)
                 + "\nLet me know if you need more.", True),  # wrapped in prose
        lambda: ("```python\n" + repr([{"Question": q["question"], "Correct Answer": q["correct_answer"],
                                         "Confusing Answer": q["confusing_answer"]} for q in plain]) + "\n```", True),
        lambda: (json.dumps(plain)[: len(json.dumps(plain)) * 3 // 5], False),  # cut off at max_tokens
        lambda: ("I'm sorry, but I can't provide questions about this image.", False),  # a refusal
        lambda: ("[{'question': 'What is shown?', 'correct_answer': 'an image', 'confusing_answer': 'an image'}]",
                 False),  # one item, correct == confusing
    ]
    return forms[form % len(forms)]()


def wild_rationale(messages: list[dict], form: int) -> tuple[str, bool]:
    text = rationale_answer(messages)
    forms = [lambda: (text, True), lambda: (json.dumps({"rationale": text}), True),
             lambda: ("```\n" + text + "\n```", True), lambda: ("", False)]
    return forms[form % len(forms)]()


def wild_judge(messages: list[dict], form: int) -> tuple[str, bool]:
    verdict = json.loads(judge_answer(messages))
    word = verdict["contradiction"].capitalize()
    forms = [lambda: (json.dumps(verdict), True), lambda: (f"{word}.", True),
             lambda: (repr({"Contradiction": word, "reason": verdict["reason"]}), True),
             lambda: (f"After reading both analyses: {word}", False)]
    return forms[form % len(forms)]()


WILD = {MODELS["qa"]: wild_qa, MODELS["rationale"]: wild_rationale, MODELS["judge"]: wild_judge}


def wild_fault(sha: str, attempt: int, stall_s: float) -> Fault:
    """HTTP trouble as a function of the request and how often it was sent: a tenth of first
    attempts get a 429 with Retry-After, a tenth a 500, a tenth stall past the client's
    time-out; retries go through. Deterministic, whatever the order requests arrive in."""
    if attempt > 0:
        return Fault()
    kind = int(sha[:8], 16) % 10
    if kind == 0:
        return Fault(status=429, headers={"Retry-After": "1"}, body='{"error": {"message": "Rate limit reached"}}')
    if kind == 1:
        return Fault(status=500, body='{"error": {"message": "The server had an error"}}')
    if kind == 2:
        return Fault(delay_s=stall_s)
    return Fault()


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 would drop bursts of concurrent connections

    def __init__(self, latency_s: float = 0.0, expected_key: str | None = None, wild: bool = False,
                 stall_s: float = 3.0, refuse_every: int = 20, rate_limit: tuple[int, float] | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.latency_s = latency_s
        self.expected_key = expected_key
        # wild: answers in the forms real models use (WILD), with 429s, 500s and stalls
        # (wild_fault); one image in `refuse_every` is refused at every ask
        self.wild, self.stall_s, self.refuse_every = wild, stall_s, refuse_every
        self.lock = threading.Lock()
        self.faults: dict[str, list[Fault]] = {}
        self.hold_after: int | None = None  # admit this many requests, then hold every later one
        self.released = threading.Event()
        self.rate_limit = rate_limit
        self.reset()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def reset(self) -> None:
        with self.lock:
            self.epoch = getattr(self, "epoch", 0) + 1  # a request still running from before is not counted after
            self.requests: list[dict] = []  # every request: model, body sha, time, status
            self.answered: list[str] = []  # sha256 of each request body answered with 200
            self.usable: set[str] = set()  # those answered in a usable form (wild mode tells them apart)
            self.forms: dict[str, int] = {}  # wild mode: the form each answered request got
            self.attempts: dict[str, int] = {}  # requests seen per body
            self.in_flight = 0
            self.max_in_flight = 0
            self.in_flight_bodies: dict[str, int] = {}
            self.duplicates_in_flight = 0  # requests that arrived while an identical one was in flight
            self.admitted = 0
            self.rate_admitted: deque[float] = deque()  # start times of the requests the rate limit let in
            self.rate_limited = 0  # requests answered 429 by the rate limit

    def add_faults(self, step: str, *faults: Fault) -> None:
        with self.lock:
            self.faults.setdefault(MODELS[step], []).extend(faults)

    def take_fault(self, model: str, text: str) -> Fault:
        """The first scripted fault for this model that applies to this request (under the lock)."""
        pending = self.faults.get(model, [])
        for i, fault in enumerate(pending):
            if fault.match is None or fault.match in text:
                return pending.pop(i)
        return Fault()

    def hold(self, after: int) -> None:
        self.released.clear()
        self.hold_after = after

    def release(self) -> None:
        self.hold_after = None
        self.released.set()

    def handle_error(self, request, client_address) -> None:
        """A client that hung up (a time-out, a killed run) is not news; anything else is."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)

    def start(self) -> "ChatServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stats(self) -> dict:
        with self.lock:
            return {"requests": len(self.requests), "answered": list(self.answered), "usable": sorted(self.usable),
                    "max_in_flight": self.max_in_flight, "duplicates_in_flight": self.duplicates_in_flight,
                    "rate_limited": self.rate_limited}

    def wild_answer(self, model: str, messages: list[dict], sha: str) -> tuple[str, bool]:
        """The form depends on the request body, so a retry of one request gets the same form
        and a re-ask (a new conversation) another; an image refused once is refused always."""
        image = next((p["image_url"]["url"] for m in messages if isinstance(m["content"], list)
                      for p in m["content"] if p.get("type") == "image_url"), None)
        if model == MODELS["qa"] and image is not None and int(_digest(image)[:8], 16) % self.refuse_every == 0:
            return "I'm sorry, but I can't help with this image.", False
        return WILD[model](messages, int(sha[8:16], 16))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    # TCP_NODELAY, as real servers set it: http.server writes the headers and the body in two
    # sends, and with Nagle on, the body waits for the client's delayed ACK (40 ms on Linux).
    # That stall, not the client, was most of the latency the benchmark measured over the server's own
    disable_nagle_algorithm = True
    server: ChatServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a time-out): nothing to answer

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/stats"):
            self._send(200, json.dumps(self.server.stats()).encode())
        else:
            self._send(404, b"{}")

    def do_POST(self) -> None:
        srv = self.server
        try:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.loads(raw)
        except (ValueError, OSError):  # a client killed while sending
            self._send(400, b'{"error": {"message": "unreadable request"}}')
            return
        model, sha = body.get("model"), hashlib.sha256(raw).hexdigest()
        with srv.lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            epoch = srv.epoch
            attempt = srv.attempts.get(sha, 0)
            srv.attempts[sha] = attempt + 1
            fault = srv.take_fault(model, raw.decode("utf-8"))
            if srv.wild and fault == Fault():
                fault = wild_fault(sha, attempt, srv.stall_s)
            limited = False
            if srv.rate_limit is not None and fault == Fault():
                limit, window_s = srv.rate_limit
                now = time.monotonic()
                while srv.rate_admitted and srv.rate_admitted[0] <= now - window_s:
                    srv.rate_admitted.popleft()
                if len(srv.rate_admitted) >= limit:
                    limited, srv.rate_limited = True, srv.rate_limited + 1
                    wait = srv.rate_admitted[0] + window_s - now
                    fault = Fault(status=429, headers={"Retry-After": f"{wait:.3f}"},
                                  body='{"error": {"message": "Rate limit reached for requests"}}')
                else:
                    srv.rate_admitted.append(now)
            # an identical request already being answered: a duplicate the client pays twice.
            # (A stalled one does not count: the client has given up on it and retries by design.)
            srv.duplicates_in_flight += srv.in_flight_bodies.get(sha, 0) > 0
            watched = not fault.delay_s
            if watched:
                srv.in_flight_bodies[sha] = srv.in_flight_bodies.get(sha, 0) + 1
            held = srv.hold_after is not None and srv.admitted >= srv.hold_after
            srv.admitted += not held
            srv.requests.append({"model": model, "sha": sha, "t": time.monotonic(), "messages": body["messages"],
                                 "status": fault.status, "held": held, "delay_s": fault.delay_s})
        try:
            if held:  # the run is about to be killed: never answer this one
                srv.released.wait(30)
                self._send(503, b'{"error": "held"}')
                return
            if srv.expected_key is not None and self.headers.get("Authorization") != f"Bearer {srv.expected_key}":
                self._send(401, json.dumps({"error": {"message": "invalid key"}}).encode())
                return
            time.sleep(0.0 if limited else srv.latency_s + fault.delay_s)  # a rate limit answers at once
            if fault.status != 200:
                self._send(fault.status, (fault.body or json.dumps({"error": {"message": "scripted"}})).encode(), fault.headers)
                return
            usable = True
            if fault.content is not None:
                content = fault.content
            elif srv.wild:
                content, usable = srv.wild_answer(model, body["messages"], sha)
            else:
                content = ANSWERS[model](body["messages"])
            usage = {"prompt_tokens": len(raw) // 4, "completion_tokens": len(content) // 4}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            answer = {"id": "chatcmpl-" + sha[:8], "object": "chat.completion", "model": model,
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                   "finish_reason": "stop"}], "usage": usage}
            with srv.lock:
                if epoch == srv.epoch:
                    srv.answered.append(sha)
                    if usable:
                        srv.usable.add(sha)
            self._send(200, json.dumps(answer).encode())
        finally:
            with srv.lock:
                srv.in_flight -= 1
                if watched and srv.in_flight_bodies.get(sha):  # (a reset may have cleared it)
                    srv.in_flight_bodies[sha] -= 1
