"""A mixed concurrent workload against a running promptcache server, every answer checked against
the request that was sent, so that an answer handed to the wrong request cannot look right.

Prompts are distinct (and, across tenants, the *same* texts with different stored answers), so an
answer that belongs to another request, another route or another tenant cannot look right.

``prepare`` stores each tenant's prompts one at a time and records what each must answer from
then on (entry id and text); ``run`` sends ``requests`` requests from ``clients`` threads (each its
own keep-alive connection), drawn at random from: exact hits on ``/chat``, on ``/v1`` plain and
streamed; semantic hits (paraphrases recorded in ``prepare``); misses, plain and streamed (unique
prompts, ``threshold`` 1.0 so that only their own text can match); ``GET /entries/{id}`` of one's
own entries and of the other tenant's (404); a miss, then ``DELETE`` of its entry, then the same
prompt again (a new answer); invalid requests (their own 4xx). It returns every discrepancy.

``answer_of(prompt, text)`` decides whether an upstream answer was written for ``prompt``: the test
upstreams echo the question in their answers.
"""

from __future__ import annotations

import json
import random
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

VERBS = [
    "sort", "reverse", "filter", "merge", "split", "parse", "validate", "serialize",
    "compress", "encrypt", "paginate", "deduplicate",
]  # fmt: skip
OBJECTS = [
    "a list of strings", "a nested dictionary", "a csv file", "a json document",
    "a binary tree", "a priority queue", "a log file", "a sparse matrix",
]  # fmt: skip
CONTEXTS = ["in python", "in rust", "in javascript", "on the command line"]


def normalized(text: str) -> str:
    """The stored prompt as ``GET /entries/{id}`` shows it (the cache's canonical form, for the
    one-line prompts sent here: NFC, whitespace runs made one space, trimmed; case kept)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


@dataclass(frozen=True)
class Known:
    """What a prompt must be answered with, for one tenant."""

    prompt: str
    entry_id: str
    response: str


@dataclass
class Tenant:
    name: str
    key: str | None
    exact: list[Known] = field(default_factory=list)
    semantic: list[Known] = field(default_factory=list)  # prompt = the paraphrase sent

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}


@dataclass
class Outcome:
    requests: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def chats(self) -> int:
        """Chat requests sent (each counted once in the stats)."""
        return sum(n * self.by_kind.get(kind, 0) for kind, n in Workload.CHATS.items())

    def count(self, kind: str) -> None:
        with self.lock:
            self.requests += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1

    def fail(self, kind: str, message: str) -> None:
        with self.lock:
            self.problems.append(f"{kind}: {message}")


def stored_prompts(count: int) -> list[str]:
    """``count`` distinct questions ("how do i sort a csv file in rust?")."""
    combos = [(v, o, c) for v in VERBS for o in OBJECTS for c in CONTEXTS]
    random.Random(7).shuffle(combos)
    return [f"How do I {v} {o} {c}?" for v, o, c in combos[:count]]


def paraphrase(prompt: str) -> str:
    return "What is the best way to " + prompt[len("How do I ") :]


class Workload:
    def __init__(
        self,
        base_url: str,
        tenants: list[Tenant],
        answer_of: Callable[[str, str], bool],
        *,
        model: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.tenants = tenants
        self.answer_of = answer_of
        self.model = model
        self.timeout = timeout

    # ---------------------------------------------------------------- requests
    def _chat_body(self, prompt: str, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": prompt, **extra}
        if self.model:
            body["model"] = self.model
        return body

    def _v1_body(self, prompt: str, stream: bool, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], **extra}
        if stream:
            body["stream"] = True
        if self.model:
            body["model"] = self.model
        return body

    def chat(self, client: httpx.Client, tenant: Tenant, prompt: str, **extra: Any) -> Any:
        r = client.post(
            self.base + "/chat", json=self._chat_body(prompt, **extra), headers=tenant.headers()
        )
        if r.status_code != 200:
            raise AssertionError(f"/chat {prompt!r}: {r.status_code} {r.text[:300]}")
        return r.json()

    # ---------------------------------------------------------------- setup
    def prepare(self, per_tenant: int, paraphrases: int) -> None:
        """Store ``per_tenant`` prompts for every tenant (the same texts), one at a time, then
        record how each of ``paraphrases`` rewordings is answered (a semantic hit, or its own
        miss): from then on that is its answer."""
        prompts = stored_prompts(per_tenant)
        with httpx.Client(timeout=self.timeout) as client:
            for tenant in self.tenants:
                for prompt in prompts:
                    body = self.chat(client, tenant, prompt)
                    assert body["tier"] == "miss", (tenant.name, prompt, body)
                    assert self.answer_of(prompt, body["response"]), (prompt, body)
                    tenant.exact.append(Known(prompt, body["entry_id"], body["response"]))
            for tenant in self.tenants:
                for known in tenant.exact[:paraphrases]:
                    query = paraphrase(known.prompt)
                    body = self.chat(client, tenant, query)
                    tenant.semantic.append(Known(query, body["entry_id"], body["response"]))
        responses = [k.response for t in self.tenants for k in t.exact]
        assert len(set(responses)) == len(responses), "every stored answer must be distinct"

    # ---------------------------------------------------------------- the operations
    def _check_known(
        self, out: Outcome, kind: str, known: Known, tier: str, entry: str, text: str
    ) -> None:
        if text != known.response:
            out.fail(kind, f"{known.prompt!r} answered {text[:120]!r}, not {known.response!r}")
        if entry != known.entry_id:
            out.fail(kind, f"{known.prompt!r}: entry {entry}, expected {known.entry_id}")
        if tier not in ("exact", "semantic"):
            out.fail(kind, f"{known.prompt!r}: tier {tier}, expected a hit")

    def _hit_chat(self, c: httpx.Client, t: Tenant, rnd: random.Random, out: Outcome) -> None:
        known = rnd.choice(t.exact + t.semantic)
        r = c.post(self.base + "/chat", json=self._chat_body(known.prompt), headers=t.headers())
        if r.status_code != 200 or not r.headers.get("content-type", "").startswith(
            "application/json"
        ):
            out.fail("hit /chat", f"{r.status_code} {r.headers.get('content-type')} {r.text[:200]}")
            return
        body = r.json()
        self._check_known(
            out, "hit /chat", known, body.get("tier"), body.get("entry_id"), body.get("response")
        )
        if r.headers.get("x-promptcache-entry") != body.get("entry_id"):
            out.fail("hit /chat", "the X-Promptcache-Entry header disagrees with the body")

    def _hit_v1(self, c: httpx.Client, t: Tenant, rnd: random.Random, out: Outcome) -> None:
        known = rnd.choice(t.exact + t.semantic)
        r = c.post(
            self.base + "/v1/chat/completions",
            json=self._v1_body(known.prompt, stream=False),
            headers=t.headers(),
        )
        kind = "hit /v1"
        if r.status_code != 200 or not r.headers.get("content-type", "").startswith(
            "application/json"
        ):
            out.fail(kind, f"{r.status_code} {r.headers.get('content-type')} {r.text[:200]}")
            return
        body = r.json()
        if body.get("object") != "chat.completion":
            out.fail(kind, f"not a chat.completion: {str(body)[:200]}")
            return
        text = body["choices"][0]["message"]["content"]
        tier, entry = r.headers.get("x-promptcache-tier", ""), r.headers.get("x-promptcache-entry")
        self._check_known(out, kind, known, tier, entry or "", text)

    def _sse(self, r: httpx.Response, kind: str, out: Outcome) -> str | None:
        if r.status_code != 200 or not r.headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            out.fail(kind, f"{r.status_code} {r.headers.get('content-type')} {r.text[:200]}")
            return None
        parts, done = [], False
        for line in r.text.splitlines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    out.fail(kind, f"error event {chunk['error']}")
                    return None
                for choice in chunk["choices"]:
                    parts.append(choice["delta"].get("content") or "")
        if not done:
            out.fail(kind, "the event stream did not end with [DONE]")
        return "".join(parts)

    def _hit_stream(self, c: httpx.Client, t: Tenant, rnd: random.Random, out: Outcome) -> None:
        known = rnd.choice(t.exact + t.semantic)
        r = c.post(
            self.base + "/v1/chat/completions",
            json=self._v1_body(known.prompt, stream=True),
            headers=t.headers(),
        )
        text = self._sse(r, "hit stream", out)
        if text is not None:
            tier = r.headers.get("x-promptcache-tier", "")
            entry = r.headers.get("x-promptcache-entry", "")
            self._check_known(out, "hit stream", known, tier, entry, text)

    def _fresh(self, t: Tenant) -> str:
        return f"Tenant {t.name} asks for the warehouse code of parcel {uuid.uuid4().hex[:12]}"

    def _miss(self, c: httpx.Client, t: Tenant, rnd: random.Random, out: Outcome) -> None:
        prompt = self._fresh(t)
        r = c.post(
            self.base + "/chat", json=self._chat_body(prompt, threshold=1.0), headers=t.headers()
        )
        if r.status_code != 200:
            out.fail("miss /chat", f"{r.status_code} {r.text[:200]}")
            return
        body = r.json()
        if body.get("tier") != "miss" or not self.answer_of(prompt, body.get("response", "")):
            out.fail("miss /chat", f"{prompt!r} answered {str(body)[:200]}")

    def _miss_stream(self, c: httpx.Client, t: Tenant, rnd: random.Random, out: Outcome) -> None:
        prompt = self._fresh(t)
        body = self._v1_body(prompt, stream=True, promptcache={"threshold": 1.0})
        r = c.post(self.base + "/v1/chat/completions", json=body, headers=t.headers())
        text = self._sse(r, "miss stream", out)
        if text is not None and (
            r.headers.get("x-promptcache-tier") != "miss" or not self.answer_of(prompt, text)
        ):
            out.fail("miss stream", f"{prompt!r}: {r.headers.get('x-promptcache-tier')} {text!r}")

    def _entries(self, c: httpx.Client, t: Tenant, rnd: random.Random, out: Outcome) -> None:
        known = rnd.choice(t.exact)
        r = c.get(f"{self.base}/entries/{known.entry_id}", headers=t.headers())
        body = r.json() if r.status_code == 200 else {}
        if (
            r.status_code != 200
            or body.get("prompt") != normalized(known.prompt)
            or body.get("response") != known.response
        ):
            out.fail("GET /entries", f"{known.prompt!r}: {r.status_code} {r.text[:200]}")
        others = [o for o in self.tenants if o is not t and o.key]
        if others:
            other = rnd.choice(others)
            r = c.get(f"{self.base}/entries/{known.entry_id}", headers=other.headers())
            if r.status_code != 404:
                out.fail("GET /entries", f"tenant {other.name} read {t.name}'s entry: {r.text}")

    def _delete(self, c: httpx.Client, t: Tenant, rnd: random.Random, out: Outcome) -> None:
        prompt = self._fresh(t)
        kind = "DELETE"
        r = c.post(
            self.base + "/chat", json=self._chat_body(prompt, threshold=1.0), headers=t.headers()
        )
        if r.status_code != 200 or r.json().get("tier") != "miss":
            out.fail(kind, f"storing {prompt!r}: {r.status_code} {r.text[:200]}")
            return
        first = r.json()
        r = c.delete(f"{self.base}/entries/{first['entry_id']}", headers=t.headers())
        if r.status_code != 200 or r.json().get("prompt") != normalized(prompt):
            out.fail(kind, f"{prompt!r} entry {first['entry_id']}: {r.status_code} {r.text[:200]}")
            return
        r = c.get(f"{self.base}/entries/{first['entry_id']}", headers=t.headers())
        if r.status_code != 404:
            out.fail(kind, f"deleted entry still readable: {r.status_code} {r.text[:200]}")
        again = self.chat(c, t, prompt, threshold=1.0)
        if (
            again.get("tier") != "miss"
            or again.get("entry_id") == first["entry_id"]
            or not self.answer_of(prompt, again.get("response", ""))
        ):
            out.fail(kind, f"after DELETE {prompt!r} answered {str(again)[:200]}")

    def _invalid(self, c: httpx.Client, t: Tenant, rnd: random.Random, out: Outcome) -> None:
        case = rnd.randrange(4)
        if case == 0:
            r = c.post(
                self.base + "/chat",
                content=b"null",
                headers={**t.headers(), "Content-Type": "application/json"},
            )
            expected = (422, "unprocessable")
        elif case == 1:
            r = c.post(
                self.base + "/chat",
                content=b"0",
                headers={**t.headers(), "Content-Type": "application/json"},
            )
            expected = (422, "unprocessable")
        elif case == 2:
            r = c.post(
                self.base + "/chat",
                content=b"hello",
                headers={**t.headers(), "Content-Type": "text/plain"},
            )
            expected = (415, "unsupported_media_type")
        else:
            r = c.get(self.base + "/chat", headers=t.headers())
            expected = (405, "method_not_allowed")
        try:
            code = r.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if (r.status_code, code) != expected:
            out.fail("invalid", f"case {case}: {r.status_code} {r.text[:200]}, wanted {expected}")

    #: Chat requests each operation sends (each one the stats count once).
    CHATS = {"hit /chat": 1, "hit /v1": 1, "hit stream": 1, "miss /chat": 1, "miss stream": 1,
             "DELETE": 2}  # fmt: skip

    OPERATIONS: dict[str, tuple[int, str]] = {
        # name: (weight, method)
        "hit /chat": (30, "_hit_chat"),
        "hit /v1": (15, "_hit_v1"),
        "hit stream": (15, "_hit_stream"),
        "miss /chat": (8, "_miss"),
        "miss stream": (6, "_miss_stream"),
        "GET /entries": (10, "_entries"),
        "DELETE": (3, "_delete"),
        "invalid": (8, "_invalid"),
    }

    # ---------------------------------------------------------------- the run
    def run(
        self, clients: int, requests: int, seed: int = 11, seconds: float | None = None
    ) -> Outcome:
        """``requests`` requests from ``clients`` clients; with ``seconds``, as many as the
        clients send in that time instead."""
        out = Outcome()
        names = list(self.OPERATIONS)
        weights = [self.OPERATIONS[n][0] for n in names]
        per_client = [requests // clients + (i < requests % clients) for i in range(clients)]
        start = threading.Barrier(clients)
        deadline = [0.0]

        def turns(i: int) -> Iterator[int]:
            if seconds is None:
                yield from range(per_client[i])
                return
            n = 0
            while time.monotonic() < deadline[0]:
                yield n
                n += 1

        def client(i: int) -> None:
            rnd = random.Random(seed * 1000 + i)
            with httpx.Client(timeout=self.timeout) as c:
                if start.wait() == 0:
                    deadline[0] = time.monotonic() + (seconds or 0.0)
                start.wait()
                for _ in turns(i):
                    name = rnd.choices(names, weights)[0]
                    tenant = rnd.choice(self.tenants)
                    try:
                        getattr(self, self.OPERATIONS[name][1])(c, tenant, rnd, out)
                    except (httpx.HTTPError, AssertionError, ValueError, KeyError) as exc:
                        out.fail(name, f"{type(exc).__name__}: {exc}")
                    out.count(name)

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(client, range(clients)))
        out.seconds = time.monotonic() - started
        return out
