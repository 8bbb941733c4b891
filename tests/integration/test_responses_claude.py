"""The Responses face answered by Claude: the official ``openai`` client's ``responses`` calls
against a real ``promptcache serve`` whose misses go to the local stand-in speaking Anthropic's
Messages protocol. Claude's thinking blocks come out as reasoning items, are replayed on a hit,
and go back to Claude exactly as it wrote them on a ``previous_response_id`` follow-up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.anthropic_upstream import SIGNATURE, AnthropicUpstream
from tests.support.serve import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "claude-test-1"
THINKING = {"thinking": {"type": "enabled", "budget_tokens": 1024}}


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[openai.OpenAI, AnthropicUpstream]]:
    tmp: Path = tmp_path_factory.mktemp("responses-claude")
    with AnthropicUpstream() as upstream:
        env = {
            "PROMPTCACHE_DATA_DIR": str(tmp / "data"),
            "PROMPTCACHE_LLM": "anthropic",
            "ANTHROPIC_API_KEY": upstream.api_key,
            "ANTHROPIC_BASE_URL": upstream.base_url,
            "PROMPTCACHE_MODEL": MODEL,
            "OPENAI_BASE_URL": "",
            "OPENAI_API_KEY": "",
        }
        server = ServerProcess(env, tmp / "server.log").start()
        try:
            with openai.OpenAI(
                base_url=server.url + "/v1", api_key="k", max_retries=0, timeout=60
            ) as client:
                yield client, upstream
        finally:
            server.stop()


def test_claudes_thinking_is_a_reasoning_item_replayed_and_sent_back_exactly(
    running: tuple[openai.OpenAI, AnthropicUpstream],
) -> None:
    client, up = running
    question = f"Why do cats purr? [{uuid.uuid4().hex[:8]}]"
    first = client.responses.create(
        model=MODEL, instructions="Be brief.", input=question, extra_body=THINKING
    )
    reasoning: Any = next(o for o in first.output if o.type == "reasoning")
    assert reasoning.content[0].text == f"Thinking about {question}"
    assert reasoning.encrypted_content == SIGNATURE
    assert question in first.output_text and up.requests[-1]["system"]
    calls = len(up.requests)

    asked = {"model": MODEL, "instructions": "Be brief.", "input": question}
    with client.responses.stream(**asked, extra_body=THINKING) as stream:
        replay = stream.get_final_response()
    assert len(up.requests) == calls  # a hit, thinking and all
    again: Any = next(o for o in replay.output if o.type == "reasoning")
    assert (
        again.encrypted_content == SIGNATURE and again.content[0].text == reasoning.content[0].text
    )
    assert replay.output_text == first.output_text

    follow = client.responses.create(
        model=MODEL, previous_response_id=first.id, input="And dogs?", extra_body=THINKING
    )
    assert "And dogs?" in follow.output_text
    assistant = up.requests[-1]["messages"][1]
    assert assistant["role"] == "assistant"
    assert {
        "type": "thinking",
        "thinking": f"Thinking about {question}",
        "signature": SIGNATURE,
    } in assistant["content"]  # as Claude wrote it, signature included
    assert "system" not in up.requests[-1] or not up.requests[-1]["system"]  # not carried over
