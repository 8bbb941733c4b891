"""A local OpenAI-compatible chat completions server for tests: counts calls, can be slowed down
or made to fail. Its answers are labelled as coming from this test upstream."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class OpenAIUpstream:
    def __init__(self) -> None:
        self.calls = 0
        self.requests: list[dict[str, Any]] = []
        self.delay = 0.0
        self.fail_status: int | None = None
        self.fail_body: dict[str, Any] = {"error": {"message": "injected failure", "type": "server_error"}}
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._json(404, {"error": {"message": "not found"}})
                    return
                n = upstream._record(body)
                if upstream.delay:
                    time.sleep(upstream.delay)
                if upstream.fail_status is not None:
                    self._json(upstream.fail_status, upstream.fail_body)
                    return
                question = body["messages"][-1]["content"]
                text = f"[test upstream answer #{n}] {question}"
                self._json(
                    200,
                    {
                        "id": f"chatcmpl-{n}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "test-model"),
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        ],
                        "usage": {
                            "prompt_tokens": len(question.split()),
                            "completion_tokens": len(text.split()),
                            "total_tokens": len(question.split()) + len(text.split()),
                        },
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _record(self, body: dict[str, Any]) -> int:
        with self._lock:
            self.calls += 1
            self.requests.append(body)
            return self.calls

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def reset(self) -> None:
        with self._lock:
            self.calls = 0
            self.requests.clear()
        self.delay = 0.0
        self.fail_status = None

    def __enter__(self) -> OpenAIUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
