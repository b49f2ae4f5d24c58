"""Batch handlers: what is registered, and the checks made when it is.

A batch handler is ``async def h(messages: list[Message]) -> None``, registered
for one main topic with its limits: at most ``max_size`` messages per call, and
at most ``max_wait`` seconds between the first message of a batch and the call.
Everything is checked at registration, so a mistake is a ``SetupError`` or a
``ConfigError`` naming the handler before any connection is made.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from kafka_retry._typed import _name as name_of
from kafka_retry.errors import ConfigError, SetupError
from kafka_retry.message import Message

__all__ = [
    "DEFAULT_MAX_SIZE",
    "DEFAULT_MAX_WAIT",
    "BatchFunction",
    "BatchHandler",
    "batch_handler",
    "batch_handlers",
]

#: ``async def handler(messages: list[Message]) -> None``
BatchFunction = Callable[[list[Message]], Awaitable[Any]]

DEFAULT_MAX_SIZE = 500
DEFAULT_MAX_WAIT = 0.05

# Annotations of the parameter that mean "the batch of Messages".
_SEQUENCES = (list, collections.abc.Sequence, collections.abc.Iterable)


@attrs.frozen
class BatchHandler:
    """A batch handler as registered for one main topic.

    Attributes:
        function: The handler.
        max_size: The most messages one call gets.
        max_wait: Seconds a batch may wait for more messages after its first one.
    """

    function: BatchFunction
    max_size: int = DEFAULT_MAX_SIZE
    max_wait: float = DEFAULT_MAX_WAIT


def batch_handler(
    function: Any,
    topic: str,
    max_size: Any = DEFAULT_MAX_SIZE,
    max_wait: Any = DEFAULT_MAX_WAIT,
) -> BatchHandler:
    """Check a batch handler and its limits; return its record.

    Raises:
        ConfigError: ``max_size`` is not an int >= 1, or ``max_wait`` not a
            finite number >= 0 (the field names the argument).
        SetupError: The function is not async, or does not take one
            ``list[Message]``; names the handler.
    """
    where = f"batch handler {name_of(function)} for topic {topic!r}"
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
        raise ConfigError("max_size", f"{where}: must be an int >= 1, got {max_size!r}")
    if (
        isinstance(max_wait, bool)
        or not isinstance(max_wait, int | float)
        or not math.isfinite(max_wait)
        or max_wait < 0
    ):
        raise ConfigError(
            "max_wait", f"{where}: must be a number of seconds >= 0, got {max_wait!r}"
        )
    if not _is_async(function):
        raise SetupError(f"{where} must be an async function")
    _check_signature(function, where)
    return BatchHandler(function, max_size, float(max_wait))


def batch_handlers(functions: Mapping[str, Any]) -> dict[str, BatchHandler]:
    """:func:`batch_handler` with the default limits for each function (or record) given."""
    return {
        topic: given if isinstance(given, BatchHandler) else batch_handler(given, topic)
        for topic, given in functions.items()
    }


def _check_signature(function: Any, where: str) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # nothing to read (a builtin): called with the list, as documented
    required = [
        p
        for p in signature.parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if len(required) != 1 or required[0].kind is inspect.Parameter.KEYWORD_ONLY:
        raise SetupError(f"{where} must take one positional parameter, the list[Message]")
    parameter = required[0]
    if parameter.annotation is inspect.Parameter.empty:
        return
    annotation = _resolved(function, parameter)
    if annotation is None or _is_message_batch(annotation):
        return
    raise SetupError(
        f"{where} takes {parameter.name}: {_spell(annotation)}; a batch handler takes "
        "list[Message] (typed payloads are for handlers of one message)"
    )


def _resolved(function: Any, parameter: inspect.Parameter) -> Any:
    """The parameter's annotation, resolved; None when only a string naming Messages is there."""
    try:
        target = function if inspect.isroutine(function) else type(function).__call__
        return typing.get_type_hints(target).get(parameter.name, parameter.annotation)
    except Exception:
        annotation = parameter.annotation
        if isinstance(annotation, str) and annotation.replace(" ", "").endswith("[Message]"):
            return None  # Message imported under TYPE_CHECKING only: still a Message batch
        raise SetupError(
            f"batch handler {name_of(function)}: its annotation {annotation!r} cannot be resolved"
        ) from None


def _is_message_batch(annotation: Any) -> bool:
    if annotation is Any or annotation in _SEQUENCES:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    return origin in _SEQUENCES and args in ((), (Message,))


def _spell(annotation: Any) -> str:
    if typing.get_args(annotation):
        return repr(annotation)
    return getattr(annotation, "__name__", repr(annotation))


def _is_async(function: Any) -> bool:
    call = getattr(function, "__call__", None)  # noqa: B004 - async callables count too
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)
