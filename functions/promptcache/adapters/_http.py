"""Resilient httpx calls for the HTTP adapters: timeouts, bounded retries, a circuit breaker.

Policy (one place, shared by Workers AI and KV):

- A call is *transient* when it ends in HTTP 429, any 5xx, ``httpx.TimeoutException`` or
  ``httpx.ConnectError``. Only transient calls are retried; every other answer (2xx, 3xx, other
  4xx) is returned to the adapter at once, and any other exception propagates at once.
- Retries: at most ``RetryPolicy.attempts`` attempts in all; before retry *n* the caller sleeps
  a "full jitter" delay, uniform in ``[0, min(max_backoff, backoff * 2**(n-1))]`` (tenacity's
  ``wait_random_exponential``). A ``Retry-After`` header raises the delay to what the server
  asked for; when it asks for more than ``max_backoff`` the call is not retried. No retry starts
  once ``deadline`` seconds would be exceeded. An adapter may veto the retry of a response it
  knows to be permanent (``retryable=``), e.g. a daily quota that is used up.
- Circuit breaker (per backend): ``failure_threshold`` consecutive transient attempts open it;
  while open every call fails fast with ``CircuitOpenError`` without touching the network; after
  ``reset_timeout`` seconds one probe is let through (half-open): success closes the circuit,
  failure opens it again for another ``reset_timeout``. Any non-transient answer (a 4xx too)
  proves the service is up and closes it.
- When attempts run out, the last response is returned (the adapter maps its status and body),
  or the last transport exception is raised. Adapters translate all of these into the project's
  exceptions with ``raise ... from exc``.

``sleep`` and ``clock`` are injected so tests run without waiting. tenacity (a well-kept
library) runs the retry loop; the breaker is small and written here because the available
breakers read the wall clock directly and cannot be driven by an injected one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import tenacity

from .._errors import ConfigError

log = logging.getLogger("promptcache.http")

#: Transport errors worth retrying. Everything else (e.g. a malformed URL, a protocol error
#: after the request was sent) is raised at once.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (httpx.TimeoutException, httpx.ConnectError)


def transient_status(status: int) -> bool:
    """429 (rate limited) and 5xx: the only statuses that are retried."""
    return status == 429 or 500 <= status <= 599


class CircuitOpenError(Exception):
    """The breaker is open: the call was not attempted. ``retry_in`` = seconds until a probe."""

    def __init__(self, name: str, retry_in: float) -> None:
        super().__init__(
            f"{name or 'backend'}: circuit open after repeated failures; "
            f"next probe in {max(retry_in, 0.0):.1f}s"
        )
        self.retry_in = max(retry_in, 0.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float = 2.0
    #: Seconds from the first attempt after which no new attempt starts (None: attempts only).
    deadline: float | None = None
    #: Per-attempt timeout in seconds (None: the client's own timeout).
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("RetryPolicy.attempts must be >= 1")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ConfigError("RetryPolicy backoff values must be >= 0")
        if self.deadline is not None and self.deadline <= 0:
            raise ConfigError("RetryPolicy.deadline must be > 0")


class CircuitBreaker:
    """Consecutive-failure circuit breaker; thread-safe; clock injected."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        if failure_threshold < 1:
            raise ConfigError("failure_threshold must be >= 1")
        if reset_timeout < 0:
            raise ConfigError("reset_timeout must be >= 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == self.OPEN and self._clock() - self._opened_at >= self.reset_timeout:
                return self.HALF_OPEN
            return self._state

    def before_call(self) -> None:
        """Raise CircuitOpenError unless a call may go out now."""
        with self._lock:
            if self._state == self.CLOSED:
                return
            if self._state == self.OPEN:
                waited = self._clock() - self._opened_at
                if waited < self.reset_timeout:
                    raise CircuitOpenError(self.name, self.reset_timeout - waited)
                self._state = self.HALF_OPEN
                self._probing = False
            if self._probing:  # half-open: one probe at a time, everyone else fails fast
                raise CircuitOpenError(self.name, 0.0)
            self._probing = True

    def record_success(self) -> None:
        with self._lock:
            if self._state != self.CLOSED:
                log.info("%s: circuit closed", self.name or "backend")
            self._state = self.CLOSED
            self._failures = 0
            self._probing = False

    def record_failure(self) -> None:
        with self._lock:
            if self._state == self.HALF_OPEN:
                self._open()
                return
            self._failures += 1
            if self._state == self.CLOSED and self._failures >= self.failure_threshold:
                self._open()

    def release(self) -> None:
        """A call ended without a verdict (neither transient nor a served answer)."""
        with self._lock:
            self._probing = False

    def _open(self) -> None:
        log.warning("%s: circuit open for %.1fs", self.name or "backend", self.reset_timeout)
        self._state = self.OPEN
        self._opened_at = self._clock()
        self._probing = False


def retry_after(response: httpx.Response) -> float | None:
    """The response's ``Retry-After`` in seconds, or None (absent, or an HTTP date)."""
    return _retry_after(response)


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        return None  # an HTTP date: ignore it, the jittered backoff applies


class _StopAtDeadline(tenacity.stop.stop_base):
    """Stop when the next attempt would start after ``deadline`` seconds (injected clock)."""

    def __init__(self, clock: Callable[[], float], deadline: float | None) -> None:
        self._clock = clock
        self._deadline = deadline
        self._started = clock()

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        if self._deadline is None:
            return False
        elapsed = self._clock() - self._started + (retry_state.upcoming_sleep or 0.0)
        return elapsed > self._deadline


class ResilientHTTP:
    """Wraps an injected ``httpx.Client`` with the policy above."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        retryable: Callable[[httpx.Response], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.policy = policy or RetryPolicy()
        self.breaker = breaker
        self._retryable = retryable
        self._sleep = sleep
        self._clock = clock
        self._jitter = tenacity.wait_random_exponential(
            multiplier=self.policy.backoff, max=self.policy.max_backoff
        )

    # ------------------------------------------------------------------ public
    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send with retries; return the final response (any status). Raises the last transport
        error, or CircuitOpenError."""
        kwargs = self._with_timeout(kwargs)
        return self._run(lambda: self.client.request(method, url, **kwargs))

    def open_stream(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Like ``request`` but the body of a successful (< 400) answer is left unread: iterate
        it and close the response. Retries happen only before the first byte is handed over;
        error bodies are read so they can be parsed."""
        kwargs = self._with_timeout(kwargs)

        def send() -> httpx.Response:
            request = self.client.build_request(method, url, **kwargs)
            response = self.client.send(request, stream=True)
            if response.status_code >= 400:
                try:
                    response.read()
                finally:
                    response.close()
            return response

        return self._run(send)

    # ------------------------------------------------------------------ internals
    def _with_timeout(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.policy.timeout is not None and "timeout" not in kwargs:
            return {**kwargs, "timeout": self.policy.timeout}
        return kwargs

    def _should_retry_response(self, response: httpx.Response) -> bool:
        if not transient_status(response.status_code):
            return False
        if self._retryable is not None and not self._retryable(response):
            return False
        after = _retry_after(response)
        return after is None or after <= self.policy.max_backoff

    def _wait(self, state: tenacity.RetryCallState) -> float:
        delay = float(self._jitter(state))
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            after = _retry_after(outcome.result())
            if after is not None:
                delay = max(delay, after)
        return delay

    def _attempt(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        breaker = self.breaker
        if breaker is not None:
            breaker.before_call()
        try:
            response = send()
        except TRANSIENT_ERRORS:
            if breaker is not None:
                breaker.record_failure()
            raise
        except BaseException:
            if breaker is not None:
                breaker.release()
            raise
        if breaker is not None:
            if transient_status(response.status_code):
                breaker.record_failure()
            else:
                breaker.record_success()
        return response

    def _run(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        past_deadline = _StopAtDeadline(self._clock, self.policy.deadline)

        def last_outcome(state: tenacity.RetryCallState) -> httpx.Response:
            assert state.outcome is not None
            response: httpx.Response = state.outcome.result()  # re-raises a final exception
            return response

        def before_sleep(state: tenacity.RetryCallState) -> None:
            outcome = state.outcome
            assert outcome is not None
            if outcome.failed:
                why = repr(outcome.exception())
            else:
                why = f"HTTP {outcome.result().status_code}"
            log.info(
                "attempt %d failed (%s); retrying in %.2fs",
                state.attempt_number,
                why,
                state.upcoming_sleep,
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_any(
                tenacity.stop_after_attempt(self.policy.attempts), past_deadline
            ),
            wait=self._wait,
            retry=tenacity.retry_any(
                tenacity.retry_if_exception_type(TRANSIENT_ERRORS),
                tenacity.retry_if_result(self._should_retry_response),
            ),
            sleep=self._sleep,
            before_sleep=before_sleep,
            retry_error_callback=last_outcome,
            reraise=True,
        )
        result: httpx.Response = retrying(self._attempt, send)
        return result
