"""A loopback stand-in for OpenAI's Batch API, behaving as the real one does.

- `POST /v1/files` takes multipart/form-data with `purpose` (must be `batch`) and `file`, and
  answers a file object (`id`, `object: file`, `bytes`, `filename`, `purpose`).
- `POST /v1/batches` takes `input_file_id`, `endpoint` and `completion_window` (`24h`) and
  answers a batch object in status `validating`.
- `GET /v1/batches/{id}` moves a batch on by one step per poll: `validating` -> `in_progress`
  (or `failed`, with `errors.data[]` naming the line, when the file breaks the rules: a blank
  or unreadable line, a repeated `custom_id`, a `url` other than the batch's endpoint, a
  method other than POST, a second model in one file) -> `finalizing` -> `completed`, with an
  `output_file_id` and, when some requests failed, an `error_file_id`. A held batch stays
  `in_progress` until released (a run is killed meanwhile).
- `GET /v1/batches` lists batches, newest first; `GET /v1/files/{id}/content` serves a file.
- Output and error lines are `{"id", "custom_id", "response": {"status_code", "request_id",
  "body"}, "error"}`, in an order unrelated to the input's.

The answers are those of the chat server (`chat_server.ANSWERS`), so a batch run and an online
run can be compared. Every `custom_id` of every created batch is counted, so a test can prove
that no request was submitted twice.
"""
from __future__ import annotations

import email.parser
import email.policy
import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .chat_server import ANSWERS

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")


class BatchServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, expected_key: str | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.expected_key = expected_key
        self.lock = threading.Lock()
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.order: list[str] = []  # batch ids, oldest first
        self.submitted: Counter = Counter()  # custom_id -> created batches it was in
        self.uploads: list[list[dict]] = []  # the request lines of each upload
        self.hold_from: int | None = None  # batches created from this index on stay in progress
        self.fail_once: dict[str, int] = {}  # a request whose body holds this text fails once with the status
        self.polls = 0
        self.online = 0  # chat completions answered online

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request, client_address) -> None:
        """A client that hung up (a time-out, a killed run) is not news; anything else is."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)

    def start(self) -> "BatchServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def hold(self, from_batch: int) -> None:
        self.hold_from = from_batch

    def release(self) -> None:
        self.hold_from = None

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    # ---- the batch's life -------------------------------------------------------------------
    def new_file(self, content: bytes, filename: str, purpose: str) -> dict:
        file_id = f"file-{len(self.files) + 1:04d}{random.Random(len(self.files)).getrandbits(32):08x}"
        obj = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose}
        self.files[file_id] = {**obj, "content": content}
        return obj

    def validate(self, batch: dict) -> list[dict]:
        errors, seen, models = [], set(), set()
        text = self.files[batch["input_file_id"]]["content"].decode("utf-8", errors="replace")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for n, line in enumerate(lines, 1):
            try:
                req = json.loads(line)
            except ValueError:
                errors.append({"code": "invalid_json_line", "message": f"Line {n} is not valid JSON.", "line": n})
                continue
            if req.get("custom_id") in seen:
                errors.append({"code": "duplicate_custom_id", "message": f"The custom_id on line {n} is a duplicate.",
                               "line": n})
            seen.add(req.get("custom_id"))
            if req.get("method") != "POST":
                errors.append({"code": "invalid_method", "message": "Only POST is supported.", "line": n})
            if req.get("url") != batch["endpoint"]:
                errors.append({"code": "mismatched_endpoint", "line": n,
                               "message": f"The url on line {n} does not match the batch endpoint."})
            models.add((req.get("body") or {}).get("model"))
        if len(models) > 1:
            errors.append({"code": "mismatched_model", "message": "Every request of a batch must use the same model.",
                           "line": None})
        return errors

    def finish(self, batch: dict) -> None:
        """Answers every request; the order of the output lines is not that of the input."""
        text = self.files[batch["input_file_id"]]["content"].decode("utf-8")
        outputs, failures = [], []
        for n, line in enumerate(text.splitlines()):
            req = json.loads(line)
            body, raw = req["body"], json.dumps(req["body"])
            status = next((s for marker, s in self.fail_once.items() if marker in raw), None)
            if status is not None:
                self.fail_once = {m: s for m, s in self.fail_once.items() if m not in raw}
                failures.append({"id": f"batch_req_{batch['id']}_{n}", "custom_id": req["custom_id"], "error": None,
                                 "response": {"status_code": status, "request_id": f"req_{n}",
                                              "body": {"error": {"message": "The server had an error", "type": "server_error"}}}})
                continue
            content = ANSWERS[body["model"]](body["messages"])
            usage = {"prompt_tokens": len(raw) // 4, "completion_tokens": len(content) // 4}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            completion = {"id": f"chatcmpl-{n}", "object": "chat.completion", "model": body["model"],
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                       "finish_reason": "stop"}], "usage": usage}
            outputs.append({"id": f"batch_req_{batch['id']}_{n}", "custom_id": req["custom_id"], "error": None,
                            "response": {"status_code": 200, "request_id": f"req_{n}", "body": completion}})
        rng = random.Random(batch["id"])
        rng.shuffle(outputs)
        rng.shuffle(failures)

        def jsonl(rows):
            return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()

        batch["output_file_id"] = self.new_file(jsonl(outputs), "batch_output.jsonl", "batch_output")["id"] if outputs else None
        batch["error_file_id"] = self.new_file(jsonl(failures), "batch_errors.jsonl", "batch_output")["id"] if failures else None
        batch["request_counts"] = {"total": len(outputs) + len(failures), "completed": len(outputs),
                                   "failed": len(failures)}

    def advance(self, batch: dict) -> None:
        held = self.hold_from is not None and self.order.index(batch["id"]) >= self.hold_from
        now = int(time.time())
        if batch["status"] == "validating":
            errors = self.validate(batch)
            if errors:
                batch.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
            else:
                batch.update(status="in_progress", in_progress_at=now)
        elif batch["status"] == "in_progress" and not held:
            batch.update(status="finalizing", finalizing_at=now)
        elif batch["status"] == "finalizing":
            self.finish(batch)
            batch.update(status="completed", completed_at=now)

    def public(self, batch: dict) -> dict:
        return dict(batch)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as real servers do: no 40 ms delayed-ACK stall per answer
    server: BatchServer

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, payload, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": "invalid_request_error"}})

    def _authorised(self) -> bool:
        key = self.server.expected_key
        if key is not None and self.headers.get("Authorization") != f"Bearer {key}":
            self._error(401, "Incorrect API key provided.")
            return False
        return True

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self) -> None:
        if not self._authorised():
            return
        srv, path = self.server, self.path.split("?")[0].rstrip("/")
        with srv.lock:
            if path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in ANSWERS]})
            elif path == "/v1/batches":
                self._send(200, {"object": "list", "has_more": False,
                                 "data": [srv.public(srv.batches[b]) for b in reversed(srv.order)]})
            elif path.startswith("/v1/batches/"):
                batch = srv.batches.get(path.rsplit("/", 1)[1])
                if batch is None:
                    self._error(404, "No batch found with that id.")
                    return
                srv.polls += 1
                srv.advance(batch)
                self._send(200, srv.public(batch))
            elif path.startswith("/v1/files/") and path.endswith("/content"):
                f = srv.files.get(path.split("/")[3])
                if f is None:
                    self._error(404, "No such File object.")
                else:
                    self._send(200, f["content"], "application/octet-stream")
            else:
                self._error(404, f"Unknown request URL: GET {path}.")

    def do_POST(self) -> None:
        if not self._authorised():
            return
        srv, path, raw = self.server, self.path.rstrip("/"), self._body()
        with srv.lock:
            if path == "/v1/files":
                form = self._multipart(raw)
                if form.get("purpose", (b"",))[0].decode() != "batch" or "file" not in form:
                    self._error(400, "purpose must be 'batch' and a file must be given.")
                    return
                content, filename = form["file"]
                srv.uploads.append([json.loads(line) for line in content.decode().splitlines() if line.strip()])
                self._send(200, srv.new_file(content, filename or "upload.jsonl", "batch"))
            elif path == "/v1/batches":
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._error(400, "We could not parse the JSON body of your request.")
                    return
                if body.get("input_file_id") not in srv.files:
                    self._error(400, f"Invalid 'input_file_id': '{body.get('input_file_id')}'.")
                elif body.get("endpoint") not in ENDPOINTS or body.get("completion_window") != "24h":
                    self._error(400, "endpoint must be a supported one and completion_window '24h'.")
                else:
                    batch_id = f"batch_{len(srv.order) + 1:04d}"
                    now = int(time.time())
                    srv.batches[batch_id] = {
                        "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                        "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
                        "output_file_id": None, "error_file_id": None, "created_at": now, "expires_at": now + 86400,
                        "request_counts": {"total": 0, "completed": 0, "failed": 0},
                        "metadata": body.get("metadata")}
                    srv.order.append(batch_id)
                    for line in srv.files[body["input_file_id"]]["content"].decode(errors="replace").splitlines():
                        try:  # a created batch is paid for: count what it holds
                            srv.submitted[json.loads(line).get("custom_id")] += 1
                        except ValueError:
                            pass
                    self._send(200, srv.public(srv.batches[batch_id]))
            elif path == "/v1/chat/completions":  # the same server answers online too, as OpenAI's does
                body = json.loads(raw)
                content = ANSWERS[body["model"]](body["messages"])
                srv.online += 1
                self._send(200, {"id": "chatcmpl-online", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                              "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": len(raw) // 4, "completion_tokens": len(content) // 4}})
            else:
                self._error(404, f"Unknown request URL: POST {path}.")

    def _multipart(self, raw: bytes) -> dict[str, tuple[bytes, str | None]]:
        head = f"Content-Type: {self.headers.get('Content-Type', '')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        parts = {}
        for part in message.iter_parts() if message.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            parts[name] = (part.get_payload(decode=True) or b"", part.get_filename())
        return parts
