"""Which failed model requests are tried again, and after how long: one policy for every
HTTP client of lmgym (`OpenAIClient`, and the vLLM rollout client of `lmgym.train`).

429, 5xx, timeouts, dropped connections and malformed bodies are transient faults of the
server or the network: they are retried with exponential backoff and equal jitter, or
after the server's `Retry-After` when it sent one (capped at `MAX_RETRY_AFTER_S`). Any
other 4xx, a rejected key and an empty answer are verdicts, raised at once. After
`max_retries` retries the last error is raised, saying how many attempts were made.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping, TypeVar

from lmgym import errors

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_RETRY_AFTER_S = 120.0


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `retry-after` seconds or date)."""
    if not headers:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = parsed.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before retry number `attempt` (0-based): the server's Retry-After when it
    gave one, else exponential backoff with equal jitter, in [d/2, d], d = base·2^attempt."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER_S)
    ceiling = min(cap, base * (2**attempt))
    return ceiling / 2 + rand() * ceiling / 2


def is_retryable(error: errors.ModelError) -> bool:
    """Transient faults of the server or network; never a verdict about the model."""
    if isinstance(error, errors.EmptyResponseError):
        return False
    return isinstance(
        error,
        (
            errors.ModelRateLimitError,
            errors.ModelServerError,
            errors.ModelTimeoutError,
            errors.ModelConnectionError,
            errors.ModelResponseError,
        ),
    )


def status_error(status: int, detail: str) -> errors.ModelError:
    """The error for an HTTP status other than 200; `detail` is what the server said."""
    if status in (401, 403):
        return errors.ModelAuthError(f"the server rejected the API key (HTTP {status}): {detail}")
    if status == 429:
        return errors.ModelRateLimitError(f"rate limited (HTTP 429): {detail}")
    if status >= 500:
        return errors.ModelServerError(f"server error (HTTP {status}): {detail}")
    return errors.ModelRequestError(f"request rejected (HTTP {status}): {detail}")


def response_headers(exc: BaseException) -> Mapping[str, str] | None:
    """The headers of the HTTP response an exception carries (SDK and httpx status errors do)."""
    return getattr(getattr(exc, "response", None), "headers", None)


def _never(exc: Exception) -> bool:
    return False


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        translate: Callable[[Exception], errors.ModelError],
        *,
        retry_now: Callable[[Exception], bool] = _never,
    ) -> T:
        """`await attempt()` until it succeeds, retrying what `is_retryable` calls transient.

        `translate` maps whatever an attempt raised onto lmgym's error tree (each client
        knows its own exceptions); `retry_now(exc)` marks a failure to retry at once, with
        no delay, though it is no fault (a vLLM adapter replaced while the request was on
        its way). Cancellation always goes through."""
        for number in range(self.max_retries + 1):
            try:
                return await attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # translated once, here
                error = translate(exc)
                now = retry_now(exc)
                if not (now or is_retryable(error)):
                    raise error from None
                if number == self.max_retries:
                    raise type(error)(f"{error} (gave up after {self.max_retries + 1} attempts)") from None
                delay = 0.0 if now else backoff_delay(
                    number, base=self.backoff_base, cap=self.backoff_max, retry_after=parse_retry_after(response_headers(exc))
                )
                logger.debug("retrying in %.2fs after %s", delay, error)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")
