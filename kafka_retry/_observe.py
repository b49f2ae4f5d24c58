"""The hooks the runtime reports through; :mod:`kafka_retry.metrics` implements them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

Outcome = Literal["success", "retry", "dead_letter"]


class Observer(Protocol):
    """Receives what happens in the pipeline. Every method must be cheap and never raise."""

    def success_recorder(self, tier: str, topic: str) -> Callable[[float], None]:
        """A function to call with the duration of each successful handler call.

        The hot path: asked once per tier and topic, then called once per
        successful message (it counts it as ``handled`` with outcome ``success``
        and observes its duration), with no lookups per message.
        """
        ...

    def batch_recorder(self, tier: str, topic: str) -> Callable[[int, int, float], None]:
        """A function to call after each batch handler call, with ``(size, failed, seconds)``.

        Asked once per tier and topic, like :meth:`success_recorder`. It counts
        the ``size - failed`` messages that succeeded as ``handled`` with
        outcome ``success`` (the failed ones are counted by :meth:`handled`),
        and observes the batch's size and duration.
        """
        ...

    def handler_duration(self, tier: str, topic: str, seconds: float) -> None:
        """A failed handler call on ``tier`` for main topic ``topic`` took ``seconds``."""

    def handled(self, tier: str, topic: str, outcome: Outcome) -> None:
        """A message ended its attempt on ``tier`` with ``outcome``."""

    def forward_failed(self, topic: str, error_type: str) -> None:
        """Handing a failure to ``topic`` (or the retry table) failed once; it is retried."""

    def commit_failed(self, tier: str) -> None:
        """An offset commit of ``tier`` failed; a later one will cover it."""

    def rebalanced(self, tier: str) -> None:
        """``tier`` got a new partition assignment."""


def _ignore(seconds: float) -> None:
    pass


def _ignore_batch(size: int, failed: int, seconds: float) -> None:
    pass


class NullObserver:
    """Reports nowhere."""

    def success_recorder(self, tier: str, topic: str) -> Callable[[float], None]:
        return _ignore

    def batch_recorder(self, tier: str, topic: str) -> Callable[[int, int, float], None]:
        return _ignore_batch

    def handler_duration(self, tier: str, topic: str, seconds: float) -> None:
        pass

    def handled(self, tier: str, topic: str, outcome: Outcome) -> None:
        pass

    def forward_failed(self, topic: str, error_type: str) -> None:
        pass

    def commit_failed(self, tier: str) -> None:
        pass

    def rebalanced(self, tier: str) -> None:
        pass
