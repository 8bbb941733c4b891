"""A local stand-in for Claude's Messages API, speaking the protocol as Anthropic documents it:
counts calls, records what it received, can be slowed down or made to fail.

- ``POST /v1/messages`` needs ``x-api-key`` (the key given, else 401 ``authentication_error``),
  ``anthropic-version`` and ``max_tokens`` (else 400 ``invalid_request_error``), and a
  ``temperature`` in 0..1. It answers a ``message`` object (``content`` blocks, ``stop_reason``,
  ``usage``); with ``"stream": true`` the named events ``message_start``, ``ping``,
  ``content_block_start`` / ``content_block_delta`` (``text_delta``, ``input_json_delta``,
  ``thinking_delta``, ``signature_delta``) / ``content_block_stop``, ``message_delta`` and
  ``message_stop``.
- The answer: text labelled as this stand-in's, quoting the last user turn's text; with
  ``tools`` and a last turn that asks (not one of ``tool_result`` blocks), one ``tool_use`` of
  each tool (one only with ``disable_parallel_tool_use``, none with ``tool_choice`` ``none``),
  stop reason ``tool_use``, input ``{"question": ..., "call": i}``; a turn of tool results is
  answered with text naming them; ``output_config.format`` (a JSON schema) gets a JSON object;
  ``thinking`` enabled adds a ``thinking`` block with a signature before the answer;
  ``stop_sequences`` containing ``"STOP"`` ends with ``stop_sequence``.
- ``GET /v1/models``: a one-model list. Errors are in Anthropic's shape
  (``{"type": "error", "error": {"type", "message"}, "request_id"}``): ``fail_status`` (429 with
  ``retry-after``, 529 ``overloaded_error``, ...) answers every message request with it;
  ``stream_error_after = k`` sends an ``error`` event after k text deltas; ``stream_cut_after = k``
  ends the body after k deltas, without ``message_stop``.
- ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, N the words of the system prompt,
  the messages' text and the tools' JSON (a stand-in's count, not Claude's tokenizer); it takes
  the fields the endpoint documents (model, messages, system, tools, tool_choice, thinking,
  output_config) and refuses others, as Claude does. ``counted`` holds the bodies received.
- ``requests`` holds every message body received, ``headers`` their headers; ``model_calls``
  counts model list requests."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.http_server import LoopbackServer

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if b.get("type") == "text")
    return content if isinstance(content, str) else ""


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_x"}


class AnthropicUpstream:
    def __init__(self, api_key: str = "sk-ant-test", answer: Callable[[str], str] | None = None):
        self.api_key = api_key
        self.answer = answer
        self.calls = 0
        self.model_calls = 0
        self.requests: list[dict[str, Any]] = []
        self.counted: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.delay = 0.0
        self.fail_status: int | None = None
        self.fail_headers: dict[str, str] = {}
        self.stream_error_after: int | None = None
        self.stream_cut_after: int | None = None
        self.streams_completed = 0
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _refused(self) -> bool:
                """The checks Claude makes of every request (key, version)."""
                if self.headers.get("x-api-key") != upstream.api_key:
                    self._json(401, error_body(401, "invalid x-api-key"))
                    return True
                if not self.headers.get("anthropic-version"):
                    self._json(400, error_body(400, "anthropic-version: header is required"))
                    return True
                return False

            def do_GET(self) -> None:
                if self._refused():
                    return
                if self.path.split("?")[0].rstrip("/") != "/v1/models":
                    self._json(404, error_body(404, "Not found"))
                    return
                with upstream._lock:
                    upstream.model_calls += 1
                model = {
                    "type": "model",
                    "id": "claude-test-1",
                    "display_name": "Claude Test",
                    "created_at": "2026-01-01T00:00:00Z",
                }
                page = {"data": [model], "has_more": False, "first_id": "claude-test-1"}
                self._json(200, {**page, "last_id": "claude-test-1"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) or b"{}"
                if self.path.rstrip("/") == "/v1/messages/count_tokens":
                    if not self._refused():
                        self._count(json.loads(raw))
                    return
                if self.path.rstrip("/") != "/v1/messages":
                    self._json(404, error_body(404, "Not found"))
                    return
                if self._refused():
                    return
                body = json.loads(raw)
                n = upstream._record(body, dict(self.headers))
                if upstream.delay:
                    time.sleep(upstream.delay)
                if upstream.fail_status is not None:
                    status = upstream.fail_status
                    self._json(status, error_body(status, "injected"), upstream.fail_headers)
                    return
                problem = _invalid(body)
                if problem:
                    self._json(400, error_body(400, problem))
                    return
                message = upstream._message(n, body)
                if body.get("stream"):
                    self._stream(message)
                else:
                    self._json(200, message)

            def _count(self, body: dict[str, Any]) -> None:
                with upstream._lock:
                    upstream.counted.append(body)
                extra = sorted(set(body) - COUNTED)
                if extra:
                    self._json(400, error_body(400, f"{extra[0]}: Extra inputs are not permitted"))
                    return
                if not isinstance(body.get("messages"), list) or "model" not in body:
                    self._json(400, error_body(400, "messages: Field required"))
                    return
                words = json.dumps([body.get("system"), body["messages"], body.get("tools")])
                self._json(200, {"input_tokens": len(re.findall(r"\w+", words))})

            def _stream(self, message: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent = 0

                def event(name: str, **data: Any) -> None:
                    payload = json.dumps({"type": name, **data})
                    chunk = f"event: {name}\ndata: {payload}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()

                start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
                start["usage"] = {**message["usage"], "output_tokens": 1}
                event("message_start", message=start)
                event("ping")
                for index, block in enumerate(message["content"]):
                    kind = block["type"]
                    if kind == "text":
                        event(
                            "content_block_start", index=index, content_block={**block, "text": ""}
                        )
                        for word in re.findall(r"\S+\s*", block["text"]):
                            if upstream.stream_error_after == sent:
                                error = error_body(529, "Overloaded")["error"]
                                event("error", error=error)
                                self.wfile.write(b"0\r\n\r\n")
                                return
                            if upstream.stream_cut_after == sent:
                                self.wfile.write(b"0\r\n\r\n")
                                return
                            delta = {"type": "text_delta", "text": word}
                            event("content_block_delta", index=index, delta=delta)
                            sent += 1
                    elif kind == "tool_use":
                        event(
                            "content_block_start",
                            index=index,
                            content_block={**block, "input": {}},
                        )
                        args = json.dumps(block["input"])
                        for at in range(0, len(args), 7):
                            delta = {"type": "input_json_delta", "partial_json": args[at : at + 7]}
                            event("content_block_delta", index=index, delta=delta)
                    else:  # thinking
                        start_block = {"type": "thinking", "thinking": "", "signature": ""}
                        event("content_block_start", index=index, content_block=start_block)
                        for word in re.findall(r"\S+\s*", block["thinking"]):
                            delta = {"type": "thinking_delta", "thinking": word}
                            event("content_block_delta", index=index, delta=delta)
                        delta = {"type": "signature_delta", "signature": block["signature"]}
                        event("content_block_delta", index=index, delta=delta)
                    event("content_block_stop", index=index)
                stop = {
                    "stop_reason": message["stop_reason"],
                    "stop_sequence": message["stop_sequence"],
                }
                usage = {"output_tokens": message["usage"]["output_tokens"]}
                event("message_delta", delta=stop, usage=usage)
                event("message_stop")
                self.wfile.write(b"0\r\n\r\n")
                with upstream._lock:
                    upstream.streams_completed += 1

        self._server = LoopbackServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _message(self, n: int, body: dict[str, Any]) -> dict[str, Any]:
        last = body["messages"][-1]
        content = last.get("content")
        results = [
            _text(b.get("content")) if isinstance(b.get("content"), list) else b.get("content")
            for b in (content if isinstance(content, list) else [])
            if b.get("type") == "tool_result"
        ]
        question = _text(content)
        blocks: list[dict[str, Any]] = []
        if (body.get("thinking") or {}).get("type") == "enabled":
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": f"Thinking about {question}",
                    "signature": SIGNATURE,
                }
            )
        calls = [] if results else self._calls(n, body, question)
        fmt = (body.get("output_config") or {}).get("format")
        if results:
            text = f"[claude stand-in answer #{n}] from tool results: {'; '.join(results)}"
        elif calls:
            text = ""
        elif fmt:
            props = fmt["schema"].get("properties") or {"answer": {"type": "string"}}
            text = json.dumps({k: f"#{n} {question}" for k in props})
        elif self.answer is not None:
            text = self.answer(question)
        else:
            text = f"[claude stand-in answer #{n}] {question}"
        if text:
            blocks.append({"type": "text", "text": text})
        blocks.extend(calls)
        stop = "tool_use" if calls else "end_turn"
        if "STOP" in (body.get("stop_sequences") or ()):
            stop = "stop_sequence"
        return {
            "id": f"msg_{n:04d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": "STOP" if stop == "stop_sequence" else None,
            "usage": {
                "input_tokens": len(question.split()) or 1,
                "output_tokens": len(text.split()) + len(calls),
            },
        }

    def _calls(self, n: int, body: dict[str, Any], question: str) -> list[dict[str, Any]]:
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        if not tools or choice.get("type") == "none":
            return []
        if choice.get("type") == "tool":
            tools = [t for t in tools if t["name"] == choice["name"]]
        if choice.get("disable_parallel_tool_use"):
            tools = tools[:1]
        return [
            {
                "type": "tool_use",
                "id": f"toolu_{n:02d}{i:02d}",
                "name": tool["name"],
                "input": {"question": question, "call": i},
            }
            for i, tool in enumerate(tools)
        ]

    def _record(self, body: dict[str, Any], headers: dict[str, str]) -> int:
        with self._lock:
            self.calls += 1
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in headers.items()})
            return self.calls

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self) -> None:
        with self._lock:
            self.calls = 0
            self.model_calls = 0
            self.requests.clear()
            self.counted.clear()
            self.headers.clear()
        self.delay = 0.0
        self.fail_status = None
        self.fail_headers = {}
        self.stream_error_after = None
        self.stream_cut_after = None
        self.streams_completed = 0

    def __enter__(self) -> AnthropicUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


#: The fields Claude's count_tokens documents.
COUNTED = {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config"}


def _invalid(body: dict[str, Any]) -> str | None:
    """What Claude's validation would refuse in ``body`` (the part the stand-in checks)."""
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required"
    if any(m.get("role") not in ("user", "assistant") for m in messages):
        return "messages: roles must be user or assistant (the system prompt is 'system')"
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        return "temperature: Input should be less than or equal to 1"
    for field in ("n", "seed", "logit_bias", "frequency_penalty", "presence_penalty", "user"):
        if field in body:
            return f"{field}: Extra inputs are not permitted"
    return None
