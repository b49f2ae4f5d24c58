"""Typed handlers: the handler's signature decides what it gets.

At registration a handler's signature is read once. A handler that takes the
:class:`~kafka_retry.Message` is kept as it is, so the runtime calls it
directly at no extra cost. A handler that takes a payload (and, optionally, a
parameter annotated ``Message``) is wrapped in a :class:`TypedHandler`: a
``Message`` handler like any other, which decodes the value and then calls the
function. The runtime never knows the difference.

:func:`payload_decoder` is the part that does not depend on the handler's
shape (resolve a decoder for an annotation, with errors naming the handler),
so other handler kinds can decode the same way.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kafka_retry._decoding import Decode, Decoder, describe_annotation
from kafka_retry.errors import SetupError
from kafka_retry.message import Message

__all__ = ["AnyHandler", "TypedHandler", "adapt_handler", "adapt_handlers", "payload_decoder"]

#: What users register: ``async def (message: Message)``, ``async def (order: Order)``, ...
AnyHandler = Callable[..., Awaitable[Any]]
#: Calls the user's function with the decoded payload and the message.
_Call = Callable[[AnyHandler, Any, Message], Awaitable[Any]]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class TypedHandler:
    """A handler that takes a payload, as the runtime calls it: with a Message.

    Attributes:
        function: The handler as registered.
        annotation: Its payload annotation.
    """

    __slots__ = ("_call", "_decode", "_decode_awaits", "annotation", "function")

    def __init__(self, function: AnyHandler, annotation: Any, decode: Decode, call: _Call) -> None:
        self.function = function
        self.annotation = annotation
        self._decode = decode
        self._decode_awaits = _is_async(decode)
        self._call = call

    def __repr__(self) -> str:
        payload = describe_annotation(self.annotation)
        return f"<kafka_retry typed handler {_name(self.function)}({payload})>"

    async def __call__(self, message: Message) -> Any:
        """Decode ``message.value``, then await the function with the payload.

        Raises:
            DecodeError: The value does not decode (the function is not called).
        """
        payload = self._decode(message.value, message)
        if self._decode_awaits:
            payload = await payload
        return await self._call(self.function, payload, message)


def adapt_handlers(
    handlers: Mapping[str, AnyHandler], decoder: Decoder
) -> dict[str, Callable[[Message], Awaitable[Any]]]:
    """:func:`adapt_handler` for each topic's handler."""
    return {topic: adapt_handler(function, topic, decoder) for topic, function in handlers.items()}


def adapt_handler(
    function: AnyHandler, topic: str, decoder: Decoder, *, explicit: bool = False
) -> Callable[[Message], Awaitable[Any]]:
    """What the runtime calls for ``function``: itself if it takes a Message, else a TypedHandler.

    A function that is not async is returned as it is: the consumer refuses it
    when it starts, as it always did. A TypedHandler is returned as it is.

    Args:
        function: The handler as the user wrote it.
        topic: Its main topic, for error messages.
        decoder: Makes the payload's decode function.
        explicit: The decoder was given for this handler: then it must take a payload.

    Raises:
        SetupError: The signature has no usable shape, its annotations cannot
            be resolved, or the decoder cannot produce the payload type.
    """
    if isinstance(function, TypedHandler) or not _is_async(function):
        return function
    where = f"handler {_name(function)} for topic {topic!r}"
    shape = _shape(function, where)
    if shape is None:
        if explicit:
            raise SetupError(f"{where}: a decoder was given, but the handler takes the Message")
        return function
    annotation, call = shape
    return TypedHandler(function, annotation, payload_decoder(annotation, decoder, where), call)


def payload_decoder(annotation: Any, decoder: Decoder, where: str) -> Decode:
    """``decoder``'s decode function for ``annotation``.

    Raises:
        SetupError: The decoder refused the annotation (TypeError), or gave
            something that is not callable; names ``where``.
    """
    try:
        decode = decoder(annotation)
    except TypeError as exc:
        raise SetupError(f"{where}: {exc}") from exc
    if not callable(decode):
        raise SetupError(
            f"{where}: the decoder gave {decode!r} for {describe_annotation(annotation)}, "
            "not a decode(value, message) function"
        )
    return decode


def _shape(function: AnyHandler, where: str) -> tuple[Any, _Call] | None:
    """``(payload annotation, call)`` for a typed handler; None for a Message handler."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None  # nothing to read (a builtin): it is called with the Message, as always
    parameters = list(signature.parameters.values())
    if not parameters:
        raise SetupError(
            f"{where} takes no parameters; it must take the Message, "
            "or a payload and optionally a parameter annotated Message"
        )
    hints = _hints(function, parameters, where)
    messages = [p for p in parameters if hints.get(p.name) is Message]
    if len(messages) > 1:
        names = ", ".join(p.name for p in messages)
        raise SetupError(f"{where} has more than one parameter annotated Message: {names}")
    message = messages[0] if messages else None
    payload = _payload_parameter(parameters, message, hints, where)
    if payload is None:
        return None
    return hints[payload.name], _caller(parameters, payload, message)


def _payload_parameter(
    parameters: list[inspect.Parameter],
    message: inspect.Parameter | None,
    hints: Mapping[str, Any],
    where: str,
) -> inspect.Parameter | None:
    """The parameter that gets the payload; None when the handler takes only the Message."""
    required = [p for p in parameters if p is not message and _required(p)]
    keyword = [p.name for p in required if p.kind not in _POSITIONAL]
    if keyword:
        raise SetupError(f"{where} has keyword-only parameter(s) without a default: {keyword}")
    if len(required) > 1:
        names = ", ".join(p.name for p in required)
        raise SetupError(
            f"{where} takes {len(required)} parameters ({names}); it takes one payload "
            "and, optionally, a parameter annotated Message"
        )
    if not required:
        if message is not None and message.kind not in _POSITIONAL:
            raise SetupError(f"{where}: the Message parameter {message.name!r} is keyword-only")
        return None  # (message: Message), or only optional parameters: called with the Message
    payload = required[0]
    if payload.name in hints:
        return payload
    if message is None:
        return None  # an unannotated single parameter: the Message, as always
    raise SetupError(f"{where}: annotate the payload parameter {payload.name!r} with its type")


def _required(parameter: inspect.Parameter) -> bool:
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return parameter.kind not in variadic and parameter.default is inspect.Parameter.empty


def _caller(
    parameters: list[inspect.Parameter],
    payload: inspect.Parameter,
    message: inspect.Parameter | None,
) -> _Call:
    if message is None:
        return _payload_only
    if message.kind not in _POSITIONAL:
        return functools.partial(_message_by_keyword, message.name)
    if parameters.index(message) < parameters.index(payload):
        return _message_first
    return _payload_first


def _payload_only(function: AnyHandler, payload: Any, message: Message) -> Awaitable[Any]:
    return function(payload)


def _payload_first(function: AnyHandler, payload: Any, message: Message) -> Awaitable[Any]:
    return function(payload, message)


def _message_first(function: AnyHandler, payload: Any, message: Message) -> Awaitable[Any]:
    return function(message, payload)


def _message_by_keyword(
    name: str, function: AnyHandler, payload: Any, message: Message
) -> Awaitable[Any]:
    return function(payload, **{name: message})


def _hints(function: AnyHandler, parameters: list[inspect.Parameter], where: str) -> dict[str, Any]:
    """The parameters' annotations, resolved (``from __future__ import annotations`` too).

    Raises:
        SetupError: An annotation names something that cannot be found at
            registration, unless the handler still reads as a Message handler.
    """
    try:
        hints = typing.get_type_hints(_annotated(function), include_extras=True)
    except Exception as exc:
        if _reads_as_message_handler(parameters):
            return {}
        raise SetupError(
            f"{where}: its annotations cannot be resolved ({type(exc).__name__}: {exc}); "
            "define or import the types it names at module level, "
            "not only under TYPE_CHECKING or inside a function"
        ) from exc
    names = {p.name for p in parameters}
    return {name: hint for name, hint in hints.items() if name in names}


def _reads_as_message_handler(parameters: list[inspect.Parameter]) -> bool:
    """One parameter annotated with the string ``Message``: it kept working before typed handlers.

    Such a handler imports ``Message`` only under ``TYPE_CHECKING``, so the
    string does not resolve; it is still a Message handler, not an error.
    """
    required = [p for p in parameters if _required(p)]
    if len(required) != 1:
        return False
    annotation = required[0].annotation
    return annotation is inspect.Parameter.empty or (
        isinstance(annotation, str) and annotation.rsplit(".", 1)[-1] == "Message"
    )


def _annotated(function: Any) -> Any:
    """The object whose annotations are the handler's: the function behind a partial or __call__."""
    function = inspect.unwrap(function)
    while isinstance(function, functools.partial):
        function = inspect.unwrap(function.func)
    if inspect.isfunction(function) or inspect.ismethod(function):
        return function
    return type(function).__call__


def _is_async(function: Any) -> bool:
    call = getattr(function, "__call__", None)  # noqa: B004 - async callables count too
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)


def _name(function: Any) -> str:
    """``module.qualname`` of the function (behind a partial), or of a callable's class."""
    while isinstance(function, functools.partial):
        function = function.func
    target = function if hasattr(function, "__qualname__") else type(function)
    name = getattr(target, "__qualname__", repr(target))
    module = getattr(target, "__module__", None)
    return f"{module}.{name}" if module and module != "__main__" else name
