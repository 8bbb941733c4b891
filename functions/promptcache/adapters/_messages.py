"""The Messages dialect of Claude's API: the internal request (Chat Completions spelling) as a
Messages request, and a Messages answer (whole, or put together from its stream events) as a
Completion. What is translated and what is refused: see ``adapters.anthropic``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .._errors import UnsupportedField, UpstreamError, UpstreamOverloaded
from .._types import ChatRequest, Completion, Message, ToolCall, Usage

UPSTREAM = "the Anthropic upstream"

#: Chat Completions fields Claude has no equivalent for: refused, naming the field.
REFUSED = {
    "logit_bias": "Claude has no token biases",
    "n": "Claude answers one choice per call",
    "seed": "Claude has no sampling seed",
    "frequency_penalty": "Claude has no repetition penalties",
    "presence_penalty": "Claude has no repetition penalties",
    "logprobs": "Claude returns no log probabilities",
    "top_logprobs": "Claude returns no log probabilities",
    "modalities": "Claude answers text only",
    "audio": "Claude answers text only",
    "prediction": "Claude takes no predicted output",
    "reasoning_effort": "set Claude's own 'thinking' instead",
    "verbosity": "Claude has no verbosity setting",
    "web_search_options": "Claude's web search is a server tool in 'tools'",
    "functions": "send 'tools' instead of the legacy 'functions'",
    "function_call": "send 'tool_choice' instead of the legacy 'function_call'",
    "store": "Claude stores no completions",
    "prompt_cache_key": "Claude caches prompts by 'cache_control' blocks",
    "safety_identifier": "send 'user' (Claude's metadata.user_id)",
}

#: stop_reason -> finish_reason (OpenAI's words). ``pause_turn`` (a server tool paused a long
#: turn) and an unknown reason read as ``stop``.
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: Parts in the Chat Completions spelling that Claude has no block for.
_OPENAI_ONLY_PARTS = {"input_audio", "file", "refusal"}
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.S)
_REASONING = ("thinking", "redacted_thinking")
#: Fields handled by name below (everything else in ``options`` / ``forward`` goes as it is).
_MAPPED = {
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "user",
    "metadata",
    "max_completion_tokens",
    "service_tier",
}


def refuse(field: str, why: str) -> UnsupportedField:
    name = field.split(" ", 1)[0]  # "messages[2].role 'x'" names messages[2].role
    return UnsupportedField(f"'{field}' is not supported by {UPSTREAM} (Claude): {why}", param=name)


# ---------------------------------------------------------------------------- request out
def _image(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str):
        raise refuse(f"{where}.image_url", "an image part needs a URL")
    if isinstance(image, Mapping) and image.get("detail") not in (None, "auto"):
        raise refuse(f"{where}.image_url.detail", "Claude reads every image at one detail")
    data = _DATA_URL.match(url)
    if data:
        source = {"type": "base64", "media_type": data["type"], "data": data["data"]}
        return {"type": "image", "source": source}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise refuse(f"{where}.image_url.url", "an image is a data: URL or an http(s) URL")


def _block(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One content part as a Claude content block."""
    kind = part.get("type")
    if kind == "image_url":
        return _image(part, where)
    if kind in _OPENAI_ONLY_PARTS:
        raise refuse(f"{where} of type {kind!r}", "Claude has no content block for it")
    return dict(part)  # text (with cache_control or not) and Anthropic's own blocks


def _content(message: Message, where: str) -> list[dict[str, Any]]:
    if message.parts:
        return [_block(p, f"{where}.content[{i}]") for i, p in enumerate(message.parts)]
    return [{"type": "text", "text": message.content}] if message.content else []


def _tool_use(call: ToolCall, where: str) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise refuse(f"{where}.function.arguments", "Claude takes a tool call's input as an object")
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _system(turns: list[tuple[int, Message]]) -> str | list[dict[str, Any]] | None:
    """The system turns as Claude's ``system``: their text joined, or blocks when a part carries
    something a string cannot (``cache_control``, a non-text block)."""
    blocks = [b for i, m in turns for b in _content(m, f"messages[{i}]")]
    if not blocks:
        return None
    if all(set(b) == {"type", "text"} and b["type"] == "text" for b in blocks):
        return "\n\n".join(b["text"] for b in blocks)
    return blocks


def _turns(messages: tuple[Message, ...]) -> tuple[Any, list[dict[str, Any]]]:
    """(system, messages) of a Messages request; same-role neighbours merged into one turn."""
    system: list[tuple[int, Message]] = []
    out: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if m.name:
            raise refuse(f"{where}.name", "Claude's turns carry no participant names")
        if m.role in ("system", "developer"):
            system.append((i, m))
        elif m.role == "user":
            add("user", _content(m, where))
        elif m.role == "assistant":
            calls = [_tool_use(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(m.tool_calls)]
            add("assistant", _content(m, where) + calls)
        elif m.role == "tool" and len(m.parts) == 1 and m.parts[0].get("type") == "tool_result":
            add("user", [dict(m.parts[0])])  # carried whole in Claude's spelling (is_error...)
        elif m.role == "tool":
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or ""}
            result["content"] = _content(m, where) if m.parts else m.content
            add("user", [result])
        else:
            raise refuse(f"{where}.role {m.role!r}", "Claude takes user and assistant turns")
    for turn in out:  # a plain text turn goes as a string, as Claude's own examples send it
        blocks = turn["content"]
        if len(blocks) == 1 and set(blocks[0]) == {"type", "text"} and blocks[0]["type"] == "text":
            turn["content"] = blocks[0]["text"]
    return _system(system), out


def _tool(tool: Mapping[str, Any], where: str) -> dict[str, Any]:
    if tool.get("type") != "function":
        return dict(tool)  # Anthropic's own spelling (a client tool, or a server tool)
    function = tool.get("function")
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise refuse(f"{where}.function", "a function tool needs a name")
    out: dict[str, Any] = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    if function.get("strict") is not None:
        out["strict"] = bool(function["strict"])
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] | None = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str):
            raise refuse("tool_choice.function.name", "a named tool choice needs a name")
        out = {"type": "tool", "name": name}
    elif isinstance(choice, Mapping) and choice.get("type") in ("auto", "any", "tool", "none"):
        out = dict(choice)  # Anthropic's own spelling
    else:
        raise refuse("tool_choice", f"{choice!r} is not auto, required, none or a named tool")
    if parallel is False and (out is None or out["type"] != "none"):
        out = {"type": "auto", **(out or {}), "disable_parallel_tool_use": True}
    return out


def _output_config(fmt: Any, given: Any) -> dict[str, Any] | None:
    """A JSON-schema ``response_format`` as Claude's structured output (``output_config``)."""
    if fmt is None or (isinstance(fmt, Mapping) and fmt.get("type") == "text"):
        return dict(given) if isinstance(given, Mapping) else None
    kind = fmt.get("type") if isinstance(fmt, Mapping) else fmt
    if kind != "json_schema":
        raise refuse(
            f"response_format of type {kind!r}", "Claude's structured output takes a JSON schema"
        )
    spec = fmt.get("json_schema") if isinstance(fmt, Mapping) else None
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping):
        raise refuse("response_format.json_schema.schema", "a JSON schema object is needed")
    out = dict(given) if isinstance(given, Mapping) else {}
    out["format"] = {"type": "json_schema", "schema": dict(schema)}
    return out


def _metadata(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    metadata = fields.get("metadata")
    if metadata is not None and (not isinstance(metadata, Mapping) or set(metadata) - {"user_id"}):
        raise refuse("metadata", "Claude's metadata holds a user_id only (send 'user')")
    out = dict(metadata or {})
    if fields.get("user") is not None:
        out["user_id"] = str(fields["user"])
    return out or None


def messages_body(request: ChatRequest, *, max_tokens: int, stream: bool = False) -> dict[str, Any]:
    """The Messages request for ``request``; UnsupportedField (400) for what Claude cannot take."""
    fields: dict[str, Any] = {**request.forward, **request.options}
    for name in fields:
        if name in REFUSED and not (name == "store" and fields[name] is False):
            raise refuse(name, REFUSED[name])
    if request.temperature is not None and request.temperature > 1:
        raise refuse("temperature", f"Claude takes 0 to 1, got {request.temperature:g}")
    system, turns = _turns(request.messages)
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens or max_tokens,
        "messages": turns,
    }
    if system is not None:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = request.temperature
    stop = fields.get("stop")
    if stop is not None:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if fields.get("tools"):
        body["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(fields["tools"])]
    choice = _tool_choice(fields.get("tool_choice"), fields.get("parallel_tool_calls"))
    if choice is not None and body.get("tools"):  # no tools: every choice means none
        body["tool_choice"] = choice
    config = _output_config(fields.get("response_format"), fields.get("output_config"))
    if config:
        body["output_config"] = config
    metadata = _metadata(fields)
    if metadata:
        body["metadata"] = metadata
    tier = fields.get("service_tier")
    if tier is not None:
        if tier not in ("auto", "standard_only"):
            raise refuse("service_tier", f"Claude's tiers are auto and standard_only, not {tier!r}")
        body["service_tier"] = tier
    body.update({k: v for k, v in fields.items() if k not in _MAPPED and k not in REFUSED})
    if stream:
        body["stream"] = True
    return body


# ---------------------------------------------------------------------------- answer in
def _usage(usage: Any, before: Usage | None = None) -> Usage:
    """Claude's usage: input tokens (with what its prompt cache wrote and read) and output."""
    if not isinstance(usage, Mapping):
        return before or Usage()
    prompt = sum(
        int(usage.get(k) or 0)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    if before is not None and not any(
        k in usage
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    ):
        prompt = before.prompt_tokens
    return Usage(prompt, int(usage.get("output_tokens") or 0))


def _finish(reason: Any) -> str:
    return FINISH.get(str(reason), "stop")


def completion_of(message: Mapping[str, Any], model: str) -> Completion:
    """A Messages API ``message`` object as a Completion."""
    blocks = message["content"]
    if not isinstance(blocks, list):
        raise TypeError("content is not a list")
    texts: list[str] = []
    calls: list[ToolCall] = []
    thinking: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block["text"]))
        elif kind == "tool_use":
            calls.append(ToolCall(str(block["name"]), json.dumps(block["input"]), str(block["id"])))
        elif kind in _REASONING:
            thinking.append(dict(block))
    sequence = message.get("stop_sequence")
    sequence = message.get("stop_sequence")
    return Completion(
        text="".join(texts),
        model=str(message.get("model") or model),
        usage=_usage(message.get("usage")),
        finish_reason=_finish(message.get("stop_reason")),
        tool_calls=tuple(calls),
        thinking=tuple(thinking),
        stop_sequence=sequence if isinstance(sequence, str) else None,
    )


class Blocks:
    """A streamed message put back together from its events (``content_block_*``)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage = Usage()
        self.stop_reason: Any = None
        self.stop_sequence: Any = None
        self.blocks: dict[int, dict[str, Any]] = {}
        self.json: dict[int, list[str]] = {}
        self.stopped = False

    def read(self, name: str, data: Mapping[str, Any]) -> str:
        """Take one event; return the text it adds (empty for the others)."""
        if name == "message_start":
            message = data["message"]
            self.model = str(message.get("model") or self.model)
            self.usage = _usage(message.get("usage"))
        elif name == "content_block_start":
            block = dict(data["content_block"])
            self.blocks[int(data["index"])] = block
            if block.get("type") == "text" and block.get("text"):
                return str(block["text"])
        elif name == "content_block_delta":
            return self._delta(int(data["index"]), data["delta"])
        elif name == "message_delta":
            delta = data.get("delta", {})
            self.stop_reason = delta.get("stop_reason", self.stop_reason)
            self.stop_sequence = delta.get("stop_sequence", self.stop_sequence)
            self.usage = _usage(data.get("usage"), self.usage)
        elif name == "message_stop":
            self.stopped = True
        elif name == "error":
            error = data.get("error") or {}
            kind = error.get("type") if isinstance(error, Mapping) else None
            message = error.get("message") if isinstance(error, Mapping) else error
            failed = UpstreamOverloaded if kind == "overloaded_error" else UpstreamError
            raise failed(f"{UPSTREAM}'s stream failed ({kind}): {message}")
        return ""  # ping, content_block_stop, and event types added later

    def _delta(self, index: int, delta: Mapping[str, Any]) -> str:
        block = self.blocks[index]
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + str(delta["text"])
            return str(delta["text"])
        if kind == "input_json_delta":
            self.json.setdefault(index, []).append(str(delta["partial_json"]))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(delta["thinking"])
        elif kind == "signature_delta":
            block["signature"] = block.get("signature", "") + str(delta["signature"])
        return ""

    def completion(self) -> Completion:
        for index, pieces in self.json.items():
            joined = "".join(pieces)
            self.blocks[index]["input"] = json.loads(joined) if joined else {}
        message = {
            "model": self.model,
            "content": [self.blocks[i] for i in sorted(self.blocks)],
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
        }
        done = completion_of(message, self.model)
        return Completion(
            text="",
            model=done.model,
            usage=self.usage,
            finish_reason=done.finish_reason,
            tool_calls=done.tool_calls,
            thinking=done.thinking,
            stop_sequence=done.stop_sequence,
        )
