"""What wraps one handler call: the circuit breaker's gate, then quick in-place retries."""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from typing import Any

import attrs

from kafka_retry._clock import Clock
from kafka_retry.config import BLOCKING_JITTER
from kafka_retry.message import Message
from kafka_retry.runtime.breaker import Breaker

#: One handler call: the error the handler failed with, or None.
Call = Callable[[Message], Coroutine[Any, Any, BaseException | None]]
#: Whether an error the handler failed with may be retried.
Retryable = Callable[[BaseException], bool]


def gated(call: Call, breaker: Breaker, retryable: Retryable) -> Call:
    """``call`` behind ``breaker``: it starts only when the breaker lets it, and counts."""

    async def gated_call(message: Message) -> BaseException | None:
        # Closed is the common case: no extra await on the hot path.
        probe = False if breaker.closed else await breaker.admit()
        try:
            error = await call(message)
        except BaseException:
            if probe:  # cancelled or interrupted: it says nothing, let another probe
                breaker.abandon_probe()
            raise
        breaker.record(error is not None and retryable(error), probe)
        return error

    return gated_call


def retrying(
    call: Call,
    retries: int,
    backoff: float,
    retryable: Retryable,
    clock: Clock,
    breaker: Breaker | None,
) -> Call:
    """``call`` tried up to ``retries`` more times in place, with exponential backoff and jitter.

    The message of try ``n`` has ``blocking_attempt == n``; its tier attempt is
    unchanged. A non-retryable error, or a breaker that opened meanwhile, ends
    the tries at once: the failure goes on to its next tier.
    """

    async def retrying_call(message: Message) -> BaseException | None:
        error = await call(message)
        tried = 1
        while error is not None and tried <= retries and retryable(error):
            if breaker is not None and not breaker.closed:
                break
            delay = backoff * 2 ** (tried - 1) * random.uniform(1.0, BLOCKING_JITTER)
            await clock.sleep(delay)
            tried += 1
            error = await call(attrs.evolve(message, blocking_attempt=tried))
        return error

    return retrying_call
