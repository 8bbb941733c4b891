"""Every chat answer's Server-Timing header (lookup, embed, verify, model) from its result, and
the deployed metrics: CloudWatch EMF records that validate against the format, with bounded
dimensions."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from promptcache._types import ChatResult, Tier, Usage
from promptcache.http.observability import invocation, record
from promptcache.http.wire import server_timing
from promptcache_tools.server import LocalContext, from_result, to_event
from tests.support.emf import validate
from tests.unit.test_handlers import handlers  # noqa: F401 - the fixture

TIMING = re.compile(
    r"^lookup;dur=[\d.e-]+, embed;dur=[\d.e-]+, verify;dur=[\d.e-]+, model;dur=[\d.e-]+$"
)


def send(
    handlers: dict[str, Any],  # noqa: F811
    path: str,
    body: dict[str, Any],
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "Authorization": "Bearer secret-key"}
    event = to_event("POST", path, headers, json.dumps(body).encode())
    module = handlers["modules"]["chat"]
    status, head, payload = from_result(module.lambda_handler(event, LocalContext("chat")))
    return status, {k.lower(): v for k, v in head}, payload


def parts(header: str) -> dict[str, float]:
    assert TIMING.match(header), header
    return {p.split(";dur=")[0]: float(p.split(";dur=")[1]) for p in header.split(", ")}


def test_server_timing_names_the_parts_of_each_answer(handlers: dict[str, Any]) -> None:  # noqa: F811
    status, headers, _ = send(handlers, "/chat", {"prompt": "time me"})
    assert status == 200 and headers["x-promptcache-tier"] == "miss"
    miss = parts(headers["server-timing"])
    assert miss["lookup"] > 0 and miss["embed"] > 0 and miss["model"] > 0
    status, headers, _ = send(handlers, "/chat", {"prompt": "time me"})
    hit = parts(headers["server-timing"])
    assert headers["x-promptcache-tier"] == "exact"
    assert hit["lookup"] > 0 and hit["embed"] == hit["model"] == hit["verify"] == 0
    status, headers, _ = send(handlers, "/chat", {"prompt": "time me", "cache": "skip"})
    assert parts(headers["server-timing"])["lookup"] == 0  # a bypass looks nothing up


def test_server_timing_on_the_openai_routes(handlers: dict[str, Any]) -> None:  # noqa: F811
    messages = [{"role": "user", "content": "openai timing"}]
    status, headers, _ = send(
        handlers, "/v1/chat/completions", {"model": "m", "messages": messages}
    )
    assert status == 200 and parts(headers["server-timing"])["model"] > 0
    body = {"model": "m", "messages": messages, "stream": True}
    status, headers, payload = send(handlers, "/v1/chat/completions", body)  # a replayed hit
    assert status == 200 and b"data:" in payload and parts(headers["server-timing"])["lookup"] > 0
    body = {"model": "m", "messages": [{"role": "user", "content": "a live one"}], "stream": True}
    status, headers, _ = send(handlers, "/v1/chat/completions", body)  # a live miss
    live = parts(headers["server-timing"])
    assert live["lookup"] > 0 and live["embed"] > 0
    body = {"model": "m", "messages": messages, "n": 2}
    status, headers, _ = send(handlers, "/v1/chat/completions", body)
    assert status == 200 and parts(headers["server-timing"])["model"] > 0


def test_server_timing_format() -> None:
    assert server_timing({}) == "lookup;dur=0, embed;dur=0, verify;dur=0, model;dur=0"
    shown = server_timing({"lookup": 0.12345, "model": 812.5, "other": 1})
    assert shown == "lookup;dur=0.123, embed;dur=0, verify;dur=0, model;dur=812.5"


def emf_records(out: str) -> list[dict[str, Any]]:
    return [
        r
        for r in (json.loads(line) for line in out.splitlines() if line.startswith("{"))
        if "_aws" in r
    ]


@pytest.fixture
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")  # the suite's default: off


def test_each_chat_invocation_emits_valid_emf_from_its_result(
    handlers: dict[str, Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    metrics_on: None,
) -> None:
    capsys.readouterr()
    _, miss_headers, _ = send(handlers, "/chat", {"prompt": "metered"})
    _, hit_headers, _ = send(handlers, "/chat", {"prompt": "metered"})
    records = emf_records(capsys.readouterr().out)
    assert len(records) == 2
    for record_, tier in zip(records, ("miss", "exact"), strict=True):
        validate(record_)
        [directive] = record_["_aws"]["CloudWatchMetrics"]
        assert [sorted(d) for d in directive["Dimensions"]] == [["service", "tier"]] and record_[
            "tier"
        ] == tier
        names = {m["Name"] for m in directive["Metrics"]}
        assert {"requests", f"tier_{tier}", "AnswerDuration", "LookupDuration"} <= names
        units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
        assert units["LookupDuration"] == "Milliseconds" and units[f"tier_{tier}"] == "Count"
    miss, hit = records
    assert (
        "ModelDuration" in miss and miss["TokensUsed"] in (30, [30]) and "TokensSaved" not in miss
    )
    assert hit["TokensSaved"] in (30, [30]) and "ModelDuration" not in hit
    entry = hit_headers["x-promptcache-entry"]
    assert entry not in json.dumps(records) and "metered" not in json.dumps(records)


def test_the_emf_validator_refuses_what_the_format_does(
    capsys: pytest.CaptureFixture[str], metrics_on: None
) -> None:
    timings = {"lookup": 1.0, "embed": 2.0, "verify": 0.1}
    result = ChatResult(
        "x", Tier.SEMANTIC, "m", Usage(0, 0), 3.0, 0.97, "e" * 32, timings=timings, saved_tokens=7
    )

    @invocation(correlation_id_path="requestContext.requestId")
    def handler(event: dict[str, Any], context: Any) -> None:
        record(result)

    handler({"requestContext": {"requestId": "r1"}}, LocalContext("x"))
    [good] = emf_records(capsys.readouterr().out)
    validate(good)
    assert good["VerifyDuration"] in (0.1, [0.1]) and good["TokensSaved"] in (7, [7])
    for broken in (
        {k: v for k, v in good.items() if k != "tier"},  # a dimension with no member
        {**good, "LookupDuration": "fast"},  # a metric that is no number
        {**good, "_aws": {**good["_aws"], "Timestamp": "now"}},
    ):
        with pytest.raises(Exception):  # noqa: B017 - jsonschema's or the reference check's
            validate(broken)
