"""A local OpenAI-compatible chat completions server for tests: counts calls, can be slowed down
or made to fail. Its answers are labelled as coming from this test upstream.

``stream: true`` answers with server-sent ``chat.completion.chunk`` events, one word per chunk,
``stream_delay`` seconds apart, then ``data: [DONE]`` (and a usage chunk before it when
``stream_options.include_usage`` is set). ``stream_break_after = k`` cuts the stream after k words:
``stream_break_mode = "reset"`` drops the connection in the middle of the chunked body, ``"eof"``
ends the body cleanly but without a finish reason or ``[DONE]``. ``streams_completed`` and
``streams_aborted`` (the reader went away: a write failed) count what happened;
``stream_aborted`` is set at each abort.

Tools: a request with ``tools`` whose last turn is a user turn is answered with one call of each
tool (parallel calls when there are several; arguments ``{"question": ...}``), finish reason
``tool_calls``; streamed, each call goes out as ``delta.tool_calls`` pieces with its arguments in
fragments. A turn ending in tool results is answered with text naming them. ``response_format``
``json_object`` / ``json_schema`` gets a JSON object (``json_answer``, or one built from the
schema's properties). ``n`` > 1 (not streamed) is answered with n choices, each but the first
marked ``(choice i)``. ``requests`` holds every body received, as received."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.http_server import LoopbackServer


def _text(content: Any) -> str:
    """A message's text: a string, or its text parts joined (other parts left out)."""
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
    return content if isinstance(content, str) else ""


class OpenAIUpstream:
    """``answer``: what to answer a question with (default: a numbered answer labelled as this
    test upstream's, quoting the question)."""

    def __init__(self, answer: Callable[[str], str] | None = None) -> None:
        self.answer = answer
        self.json_answer: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.calls = 0
        self.requests: list[dict[str, Any]] = []
        self.delay = 0.0
        self.fail_status: int | None = None
        self.fail_headers: dict[str, str] = {}
        self.fail_body: dict[str, Any] = {
            "error": {"message": "injected failure", "type": "server_error"}
        }
        self.stream_delay = 0.0
        self.stream_break_after: int | None = None
        self.stream_break_mode = "reset"
        self.streams_completed = 0
        self.streams_aborted = 0
        self.stream_aborted = threading.Event()
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

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._json(
                        200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]}
                    )
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
                    self._json(upstream.fail_status, upstream.fail_body, upstream.fail_headers)
                    return
                last = body["messages"][-1]
                question = _text(last.get("content"))
                calls = upstream._calls(n, body, question)
                if calls:
                    text = ""
                elif last.get("role") == "tool":
                    results = [
                        _text(m.get("content")) for m in body["messages"] if m["role"] == "tool"
                    ]
                    text = f"[test upstream answer #{n}] from tool results: {'; '.join(results)}"
                elif (body.get("response_format") or {}).get("type") in (
                    "json_object",
                    "json_schema",
                ):
                    text = json.dumps(upstream._json(n, body, question))
                else:
                    text = (
                        upstream.answer(question)
                        if upstream.answer is not None
                        else f"[test upstream answer #{n}] {question}"
                    )
                if body.get("stream"):
                    self._stream(n, body, question, text, calls)
                    return
                message: dict[str, Any] = {"role": "assistant", "content": text or None}
                if calls:
                    message["tool_calls"] = calls
                self._json(
                    200,
                    {
                        "id": f"chatcmpl-{n}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "test-model"),
                        "choices": [
                            {
                                "index": i,
                                "message": {
                                    **message,
                                    "content": (message["content"] or "")
                                    + (f" (choice {i})" if i else "")
                                    or None,
                                },
                                "finish_reason": "tool_calls" if calls else "stop",
                            }
                            for i in range(int(body.get("n") or 1))
                        ],
                        "usage": {
                            "prompt_tokens": len(question.split()),
                            "completion_tokens": len(text.split()),
                            "total_tokens": len(question.split()) + len(text.split()),
                        },
                    },
                )

            def _stream(
                self,
                n: int,
                body: dict[str, Any],
                question: str,
                text: str,
                calls: list[dict[str, Any]],
            ) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def send(data: bytes) -> None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()

                def event(choices: list[dict[str, Any]], **extra: Any) -> None:
                    chunk = {
                        "id": f"chatcmpl-{n}",
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": body.get("model", "test-model"),
                        "choices": choices,
                        **extra,
                    }
                    send(b"data: " + json.dumps(chunk).encode() + b"\n\n")

                def delta(content: dict[str, Any], finish: str | None = None) -> list[Any]:
                    return [{"index": 0, "delta": content, "finish_reason": finish}]

                words = re.findall(r"\S+\s*", text)
                try:
                    event(delta({"role": "assistant", "content": ""}))
                    for i, word in enumerate(words):
                        cut = upstream.stream_break_after
                        if cut is not None and i >= cut:
                            if upstream.stream_break_mode == "eof":
                                self.wfile.write(b"0\r\n\r\n")
                            self.close_connection = True
                            return
                        if upstream.stream_delay:
                            time.sleep(upstream.stream_delay)
                        event(delta({"content": word}))
                    for index, call in enumerate(calls):
                        head = {"index": index, "id": call["id"], "type": "function"}
                        name = call["function"]["name"]
                        event(delta({"tool_calls": [{**head, "function": {"name": name}}]}))
                        args = call["function"]["arguments"]
                        for at in range(0, len(args), 7):
                            piece = {"index": index, "function": {"arguments": args[at : at + 7]}}
                            event(delta({"tool_calls": [piece]}))
                    event(delta({}, "tool_calls" if calls else "stop"))
                    if (body.get("stream_options") or {}).get("include_usage"):
                        usage = {
                            "prompt_tokens": len(question.split()),
                            "completion_tokens": len(words),
                            "total_tokens": len(question.split()) + len(words),
                        }
                        event([], usage=usage)
                    send(b"data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")
                    with upstream._lock:
                        upstream.streams_completed += 1
                except OSError:  # the reader went away
                    self.close_connection = True
                    with upstream._lock:
                        upstream.streams_aborted += 1
                    upstream.stream_aborted.set()

        self._server = LoopbackServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _calls(self, n: int, body: dict[str, Any], question: str) -> list[dict[str, Any]]:
        """One call of each tool when the last turn is a user turn (parallel when several)."""
        tools = body.get("tools") or []
        if not tools or body["messages"][-1].get("role") != "user":
            return []
        if body.get("parallel_tool_calls") is False:
            tools = tools[:1]
        return [
            {
                "id": f"call_up_{n}_{i}",
                "type": "function",
                "function": {
                    "name": tool["function"]["name"],
                    "arguments": json.dumps({"question": question, "call": i}),
                },
            }
            for i, tool in enumerate(tools)
        ]

    def _json(self, n: int, body: dict[str, Any], question: str) -> dict[str, Any]:
        if self.json_answer is not None:
            return self.json_answer(body)
        schema = ((body["response_format"].get("json_schema") or {}).get("schema")) or {}
        values = {"string": f"#{n} {question}", "integer": n, "number": float(n), "boolean": True}
        props = schema.get("properties") or {"answer": {"type": "string"}}
        return {k: values.get(v.get("type")) for k, v in props.items()}

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
        self.fail_headers = {}
        self.stream_delay = 0.0
        self.stream_break_after = None
        self.stream_break_mode = "reset"
        self.streams_completed = 0
        self.streams_aborted = 0
        self.stream_aborted.clear()

    def __enter__(self) -> OpenAIUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
