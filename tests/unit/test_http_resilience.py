"""adapters/_http: which failures are retried, how long it waits, when the breaker opens."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from promptcache import ConfigError
from promptcache.adapters._http import (
    CircuitBreaker,
    CircuitOpenError,
    ResilientHTTP,
    RetryPolicy,
    transient_status,
)

URL = "https://api.example.test/thing"


class FakeTime:
    """An injected clock and sleep: sleeping advances the clock and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Script:
    """A MockTransport handler answering a scripted sequence (status codes or exceptions)."""

    def __init__(self, *steps: int | type[Exception] | httpx.Response) -> None:
        self.steps = list(steps)
        self.calls = 0
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, httpx.Response):
            return step
        if isinstance(step, type):
            raise step("scripted failure", request=request)  # type: ignore[call-arg]
        return httpx.Response(step, json={"status": step})


def make(
    script: Script,
    t: FakeTime,
    *,
    policy: RetryPolicy | None = None,
    breaker: CircuitBreaker | None = None,
    retryable: Callable[[httpx.Response], bool] | None = None,
) -> ResilientHTTP:
    client = httpx.Client(transport=httpx.MockTransport(script))
    return ResilientHTTP(
        client,
        policy=policy or RetryPolicy(attempts=3, backoff=0.1, max_backoff=1.0),
        breaker=breaker,
        retryable=retryable,
        sleep=t.sleep,
        clock=t.clock,
    )


# ---------------------------------------------------------------------------- retries
def test_success_is_not_retried() -> None:
    t, script = FakeTime(), Script(200)
    assert make(script, t).request("GET", URL).status_code == 200
    assert script.calls == 1 and t.sleeps == []


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 520, 599])
def test_429_and_5xx_are_retried_until_success(status: int) -> None:
    t, script = FakeTime(), Script(status, status, 200)
    response = make(script, t).request("POST", URL, json={"a": 1})
    assert response.status_code == 200
    assert script.calls == 3
    assert len(t.sleeps) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 408, 409, 410, 413, 422, 499])
def test_other_4xx_are_never_retried(status: int) -> None:
    t, script = FakeTime(), Script(status, 200)
    assert make(script, t).request("GET", URL).status_code == status
    assert script.calls == 1 and t.sleeps == []


def test_3xx_is_not_retried() -> None:
    t, script = FakeTime(), Script(304)
    assert make(script, t).request("GET", URL).status_code == 304
    assert script.calls == 1


def test_exhausted_attempts_return_the_last_response() -> None:
    t, script = FakeTime(), Script(503)
    response = make(script, t, policy=RetryPolicy(attempts=4)).request("GET", URL)
    assert response.status_code == 503
    assert script.calls == 4 and len(t.sleeps) == 3


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout,
        httpx.ConnectTimeout,
        httpx.WriteTimeout,
        httpx.PoolTimeout,
        httpx.ConnectError,
    ],
)
def test_timeouts_and_connect_errors_are_retried_then_raised(exc: type[Exception]) -> None:
    t, script = FakeTime(), Script(exc)
    with pytest.raises(exc):
        make(script, t).request("GET", URL)
    assert script.calls == 3 and len(t.sleeps) == 2


def test_a_timeout_then_success_returns_the_success() -> None:
    t, script = FakeTime(), Script(httpx.ReadTimeout, 200)
    assert make(script, t).request("GET", URL).status_code == 200
    assert script.calls == 2


@pytest.mark.parametrize(
    "exc", [httpx.RemoteProtocolError, httpx.ReadError, httpx.UnsupportedProtocol]
)
def test_other_transport_errors_are_not_retried(exc: type[Exception]) -> None:
    t, script = FakeTime(), Script(exc)
    with pytest.raises(exc):
        make(script, t).request("GET", URL)
    assert script.calls == 1


def test_backoff_is_full_jitter_within_exponential_bounds() -> None:
    policy = RetryPolicy(attempts=5, backoff=0.1, max_backoff=0.3)
    firsts: list[float] = []
    for _ in range(200):
        t, script = FakeTime(), Script(503)
        make(script, t, policy=policy).request("GET", URL)
        assert len(t.sleeps) == 4
        for n, slept in enumerate(t.sleeps, start=1):
            assert 0.0 <= slept <= min(0.3, 0.1 * 2 ** (n - 1)) + 1e-12
        firsts.append(t.sleeps[0])
    # full jitter: the delays spread over the whole window, not a fixed or half window
    assert min(firsts) < 0.02 and max(firsts) > 0.08


def test_deadline_stops_retrying_before_it_is_exceeded() -> None:
    t = FakeTime()

    def slow(request: httpx.Request) -> httpx.Response:
        t.now += 0.6  # each attempt takes 0.6 s
        return httpx.Response(503)

    client = httpx.Client(transport=httpx.MockTransport(slow))
    http = ResilientHTTP(
        client,
        policy=RetryPolicy(attempts=10, backoff=0.0, max_backoff=0.0, deadline=1.0),
        sleep=t.sleep,
        clock=t.clock,
    )
    assert http.request("GET", URL).status_code == 503
    assert t.now - 1000.0 <= 1.0 + 0.6  # no attempt started after the deadline


def test_retry_after_raises_the_delay() -> None:
    t = FakeTime()
    script = Script(httpx.Response(429, headers={"Retry-After": "0.75"}), 200)
    assert make(script, t).request("GET", URL).status_code == 200
    assert t.sleeps and t.sleeps[0] >= 0.75


def test_retry_after_longer_than_max_backoff_is_not_retried() -> None:
    t = FakeTime()
    script = Script(httpx.Response(429, headers={"Retry-After": "120"}), 200)
    assert make(script, t).request("GET", URL).status_code == 429
    assert script.calls == 1


def test_an_adapter_can_veto_retrying_a_permanent_answer() -> None:
    t, script = FakeTime(), Script(429, 200)
    http = make(script, t, retryable=lambda response: False)
    assert http.request("GET", URL).status_code == 429
    assert script.calls == 1


def test_policy_timeout_is_sent_with_each_attempt() -> None:
    t, script = FakeTime(), Script(200)
    make(script, t, policy=RetryPolicy(timeout=1.5)).request("GET", URL)
    assert script.requests[0].extensions["timeout"]["read"] == 1.5


def test_open_stream_retries_before_the_first_byte_then_streams() -> None:
    t = FakeTime()
    script = Script(503, httpx.Response(200, content=b"data: 1\n\ndata: 2\n\n"))
    response = make(script, t).open_stream("POST", URL, json={})
    try:
        assert response.status_code == 200
        assert list(response.iter_lines()) == ["data: 1", "", "data: 2", ""]
    finally:
        response.close()
    assert script.calls == 2


def test_open_stream_reads_error_bodies() -> None:
    t, script = FakeTime(), Script(httpx.Response(400, json={"errors": [{"code": 5007}]}))
    response = make(script, t).open_stream("POST", URL)
    assert response.json() == {"errors": [{"code": 5007}]}


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"backoff": -1.0}, {"max_backoff": -0.5}, {"deadline": 0.0}]
)
def test_invalid_policy_is_a_config_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_transient_status_table() -> None:
    assert [s for s in range(100, 600) if transient_status(s)] == [429, *range(500, 600)]


# ---------------------------------------------------------------------------- breaker
def breaker(t: FakeTime, threshold: int = 3, reset: float = 30.0) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, reset_timeout=reset, clock=t.clock, name="x")


def test_breaker_opens_after_consecutive_failures_and_fails_fast() -> None:
    t, script = FakeTime(), Script(503)
    cb = breaker(t, threshold=3)
    http = make(script, t, policy=RetryPolicy(attempts=1), breaker=cb)
    for _ in range(3):
        assert http.request("GET", URL).status_code == 503
    assert cb.state == CircuitBreaker.OPEN
    with pytest.raises(CircuitOpenError) as info:
        http.request("GET", URL)
    assert script.calls == 3  # the open circuit sent nothing
    assert 0 < info.value.retry_in <= 30.0


def test_retries_count_towards_the_breaker_and_stop_when_it_opens() -> None:
    t, script = FakeTime(), Script(500)
    cb = breaker(t, threshold=2)
    http = make(script, t, policy=RetryPolicy(attempts=5), breaker=cb)
    with pytest.raises(CircuitOpenError):
        http.request("GET", URL)
    assert script.calls == 2


def test_success_and_4xx_reset_the_consecutive_count() -> None:
    t = FakeTime()
    script = Script(503, 503, 200, 503, 503, 404, 503, 503)
    cb = breaker(t, threshold=3)
    http = make(script, t, policy=RetryPolicy(attempts=1), breaker=cb)
    for _ in range(8):
        http.request("GET", URL)
    assert cb.state == CircuitBreaker.CLOSED


def test_half_open_probe_success_closes() -> None:
    t, script = FakeTime(), Script(503, 503, 200)
    cb = breaker(t, threshold=2, reset=10.0)
    http = make(script, t, policy=RetryPolicy(attempts=1), breaker=cb)
    http.request("GET", URL)
    http.request("GET", URL)
    with pytest.raises(CircuitOpenError):
        http.request("GET", URL)
    t.now += 10.0
    assert cb.state == CircuitBreaker.HALF_OPEN
    assert http.request("GET", URL).status_code == 200
    assert cb.state == CircuitBreaker.CLOSED
    assert script.calls == 3


def test_half_open_probe_failure_reopens_for_a_new_cool_down() -> None:
    t, script = FakeTime(), Script(503)
    cb = breaker(t, threshold=1, reset=10.0)
    http = make(script, t, policy=RetryPolicy(attempts=1), breaker=cb)
    http.request("GET", URL)
    t.now += 10.0
    assert http.request("GET", URL).status_code == 503  # the probe went out and failed
    assert cb.state == CircuitBreaker.OPEN
    t.now += 9.0
    with pytest.raises(CircuitOpenError):
        http.request("GET", URL)
    assert script.calls == 2


def test_half_open_lets_one_probe_through_at_a_time() -> None:
    t = FakeTime()
    cb = breaker(t, threshold=1, reset=5.0)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if cb.state != CircuitBreaker.OPEN and not seen:
            # while the probe is in flight, a concurrent caller must fail fast
            try:
                cb.before_call()
                seen.append("let through")
            except CircuitOpenError:
                seen.append("failed fast")
        return httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    http = ResilientHTTP(
        client, policy=RetryPolicy(attempts=1), breaker=cb, sleep=t.sleep, clock=t.clock
    )
    cb.record_failure()
    t.now += 5.0
    assert http.request("GET", URL).status_code == 200
    assert seen == ["failed fast"]
    assert cb.state == CircuitBreaker.CLOSED


def test_a_probe_ending_without_verdict_frees_the_half_open_slot() -> None:
    t, script = FakeTime(), Script(httpx.UnsupportedProtocol, 200)
    cb = breaker(t, threshold=1, reset=5.0)
    http = make(script, t, policy=RetryPolicy(attempts=1), breaker=cb)
    cb.record_failure()
    t.now += 5.0
    with pytest.raises(httpx.UnsupportedProtocol):
        http.request("GET", URL)
    assert http.request("GET", URL).status_code == 200  # not stuck in "probe in flight"
    assert cb.state == CircuitBreaker.CLOSED


def test_timeouts_open_the_breaker() -> None:
    t, script = FakeTime(), Script(httpx.ConnectTimeout)
    cb = breaker(t, threshold=3)
    http = make(script, t, policy=RetryPolicy(attempts=3), breaker=cb)
    with pytest.raises(httpx.ConnectTimeout):
        http.request("GET", URL)
    assert cb.state == CircuitBreaker.OPEN


@pytest.mark.parametrize("kwargs", [{"failure_threshold": 0}, {"reset_timeout": -1.0}])
def test_invalid_breaker_is_a_config_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
