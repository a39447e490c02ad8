"""When to retry an export request, and how long to wait: small predicates the client's loop
asks, one policy.

Transient: HTTP 429 (honouring `Retry-After`), 408 and 5xx, and (decided where the request is
made) timeouts, connection errors and truncated or undecodable bodies. Waits are exponential
backoff with full jitter, bounded both in attempts and in total time.
"""

import datetime as dt
import email.utils
import random
from dataclasses import dataclass

from cdr_pipeline.config import (
    DEFAULT_CALLR_BASE_DELAY_S,
    DEFAULT_CALLR_MAX_ATTEMPTS,
    DEFAULT_CALLR_MAX_DELAY_S,
    DEFAULT_CALLR_MAX_TOTAL_S,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: exponential backoff with full jitter, bounded twice.

    Attributes:
        max_attempts: Requests at most (the first one included).
        base_delay_s: Backoff before the 2nd attempt is drawn from [0, base_delay_s], then the
            bound doubles each attempt.
        max_delay_s: Upper bound of one backoff (a server's Retry-After may ask for longer).
        max_total_s: No new attempt starts, and no wait is begun, that would end after this
            many seconds since the first request.
    """

    max_attempts: int = DEFAULT_CALLR_MAX_ATTEMPTS
    base_delay_s: float = DEFAULT_CALLR_BASE_DELAY_S
    max_delay_s: float = DEFAULT_CALLR_MAX_DELAY_S
    max_total_s: float = DEFAULT_CALLR_MAX_TOTAL_S

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if min(self.base_delay_s, self.max_delay_s) < 0 or self.max_total_s <= 0:
            raise ValueError("RetryPolicy delays must be >= 0 and max_total_s > 0")


DEFAULT_RETRY_POLICY = RetryPolicy()


class Transient(Exception):
    """A failure worth retrying.

    Attributes:
        cause: What went wrong, for messages, e.g. `HTTP 503 Service Unavailable`.
        status: The HTTP status, if an answer came.
        retry_after_s: How long the server asked to wait, if it did.
    """

    def __init__(
        self, cause: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        self.status = status
        self.retry_after_s = retry_after_s


def is_transient_status(status: int) -> bool:
    """Whether an HTTP error status is worth retrying: 429, 408 and 5xx."""
    return status == 429 or status == 408 or status >= 500


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), if usable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def backoff_s(
    policy: RetryPolicy, attempt: int, failure: Transient, jitter: random.Random
) -> float:
    """The wait after failed `attempt` (1-based): the server's Retry-After, else full jitter."""
    if failure.retry_after_s is not None:
        return failure.retry_after_s
    ceiling = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    return jitter.uniform(0, ceiling)


def give_up_reason(
    policy: RetryPolicy, attempt: int, failure: Transient, delay_s: float, remaining_s: float
) -> str | None:
    """Why no further attempt is made after failed `attempt`, or None to retry after `delay_s`.

    Args:
        policy: The retry policy.
        attempt: Attempts made so far.
        failure: The last failure.
        delay_s: The wait `backoff_s` chose.
        remaining_s: Seconds left of the policy's total budget.
    """
    if attempt >= policy.max_attempts:
        return f"the retry policy allows {policy.max_attempts} attempts"
    if delay_s < remaining_s:
        return None
    if failure.retry_after_s is not None:
        return (
            f"the server asked to wait {delay_s:.0f} s (Retry-After), more than the "
            f"{max(remaining_s, 0):.0f} s left of the {policy.max_total_s:g} s retry budget"
        )
    return f"the {policy.max_total_s:g} s retry budget is spent"
