"""The claim step (promptcache._claim): which request asks the model for a prompt that missed.
In-process single-flight and the cross-process fill lock, as both chat paths use them."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from promptcache import CacheMode, ChatRequest, Completion, Entry, Message, Usage
from promptcache._boundary import GuardedLocks
from promptcache._claim import FROM_PEER, Claims, Filled, Lead
from promptcache._query import Query
from promptcache.adapters.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def query(prompt: str = "What is a claim?", cache: CacheMode = CacheMode.USE) -> Query:
    request = ChatRequest(messages=(Message("user", prompt),), model="m", cache=cache)
    return Query.of(request, embedder_id="fake", dim=8, semantic_max_chars=2000)


def entry(q: Query, clock: Clock, ttl: float = 100.0) -> Entry:
    return Entry(
        id="e" * 32, namespace=q.namespace, exact_key=q.key, prompt=q.text, response="stored",
        model="m", usage=Usage(1, 2), created_at=clock(), expires_at=clock() + ttl,
    )  # fmt: skip


def claims(
    clock: Clock, locks: Any = None, peek: Any = lambda q: None, wait: float = 2.0
) -> Claims:
    return _Claims(peek, locks=GuardedLocks(locks), clock=clock, lock_ttl=10.0, wait=wait)


class _Claims(Claims):
    """Claims whose ``claim`` reads the stored entry with the same ``peek`` each time (the
    cache passes its own lookup)."""

    def __init__(self, peek: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.peek = peek

    def claim(self, query: Any, peek: Any = None) -> Any:
        return super().claim(query, peek or self.peek)


def test_a_request_arriving_just_after_an_identical_miss_shares_its_answer() -> None:
    """B's lookup ran while A's identical miss was being answered; B reaches the claim after A's
    flight ended: B still gets A's answer, unless it has expired; a refresh never reuses it."""
    clock = Clock()
    c, q = claims(clock), query()
    lead = c.claim(q)
    assert isinstance(lead, Lead)
    with lead:
        lead.resolve(Filled(Completion("stored", "m"), entry(q, clock)))
    shared = c.claim(q)  # B arrives
    assert isinstance(shared, Filled) and shared.entry is not None and shared.entry.id == "e" * 32

    refresh = c.claim(query(cache=CacheMode.REFRESH))
    assert isinstance(refresh, Lead)  # a refresh never reuses it
    refresh.end()
    clock.now += 1000  # expired: a lingering answer is never reused
    again = c.claim(q)
    assert isinstance(again, Lead)
    again.end()


def test_followers_wait_for_the_leader_and_share_its_answer_or_its_error() -> None:
    c, q = claims(Clock()), query()
    lead = c.claim(q)
    assert isinstance(lead, Lead)
    got: list[Any] = []
    follower = threading.Thread(target=lambda: got.append(c.claim(q)))
    follower.start()
    time.sleep(0.1)
    assert got == []  # waiting
    with lead:
        lead.resolve(Filled(Completion("answer", "m"), None, "store_error: down"))
    follower.join(5)
    assert got == [Filled(Completion("answer", "m"), None, "store_error: down")]

    lead = c.claim(query("another"))
    assert isinstance(lead, Lead)
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            c.claim(query("another"))
        except RuntimeError as exc:
            errors.append(exc)

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.1)
    with pytest.raises(RuntimeError), lead:
        raise RuntimeError("the model broke")
    follower.join(5)
    assert [str(e) for e in errors] == ["the model broke"]


def test_followers_of_an_abandoned_lead_claim_again() -> None:
    c, q = claims(Clock()), query()
    lead = c.claim(q)
    assert isinstance(lead, Lead)
    got: list[Any] = []
    follower = threading.Thread(target=lambda: got.append(c.claim(q)))
    follower.start()
    time.sleep(0.1)
    with pytest.raises(GeneratorExit), lead:  # a closed stream
        raise GeneratorExit
    follower.join(5)
    assert len(got) == 1 and isinstance(got[0], Lead)  # the follower leads now
    got[0].end()


def test_the_fill_lock_makes_another_process_wait_for_the_entry() -> None:
    clock, store = Clock(), MemoryStore()
    stored: list[Entry] = []
    a = claims(clock, store)
    b = claims(clock, store, peek=lambda q: stored[0] if stored else None)  # another process
    q = query()
    lead = a.claim(q)
    assert isinstance(lead, Lead)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(b.claim(q)))
    waiter.start()
    time.sleep(0.1)
    assert got == []  # b waits for a's lock
    stored.append(entry(q, clock))
    with lead:
        lead.resolve(Filled(Completion("stored", "m"), stored[0]))
    waiter.join(5)
    assert got[0] == Filled(Completion("stored", "m", Usage()), stored[0], FROM_PEER)
    assert store.try_lock(f"fill:{q.key}", "someone-else", 1)  # released


def test_a_waiter_asks_the_model_itself_when_the_holder_stores_nothing_in_time() -> None:
    clock, store = Clock(), MemoryStore()
    q = query()
    assert store.try_lock(f"fill:{q.key}", "a-holder-that-died", 60)
    started = time.monotonic()
    lead = claims(clock, store, wait=0.2).claim(q)
    assert isinstance(lead, Lead) and time.monotonic() - started >= 0.2
    lead.end()


class BrokenLocks:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def try_lock(self, name: str, token: str, ttl: float) -> bool:
        raise self.exc

    def unlock(self, name: str, token: str) -> None:
        raise self.exc


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyError("lock"), OSError("reset")])
def test_lock_trouble_never_blocks_an_answer(exc: Exception) -> None:
    lead = claims(Clock(), BrokenLocks(exc)).claim(query())
    assert isinstance(lead, Lead)  # asks the model, without the lock
    lead.end()


def test_a_held_lock_whose_release_fails_is_left_to_expire() -> None:
    class ReleaseBroken(MemoryStore):
        def unlock(self, name: str, token: str) -> None:
            raise RuntimeError("connection reset")

    lead = claims(Clock(), ReleaseBroken()).claim(query())
    assert isinstance(lead, Lead)
    lead.end()  # logged, not raised
    lead.end()  # idempotent
