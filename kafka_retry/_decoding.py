"""Decoders: how a record's value becomes the payload a typed handler takes.

A :class:`Decoder` is asked once per typed handler, at registration, for the
function that decodes values into that handler's payload annotation; the
function then runs for every message, before the handler. Splitting the two
steps keeps the per-message work small (a pydantic validator, a msgspec decoder
or a dataclass's nested fields are prepared once) and lets an annotation that
a decoder cannot produce fail at registration rather than on the first message.

pydantic and msgspec are never imported here: a class can only be a pydantic
model or a msgspec Struct if its module imported the library already, so the
default decoder looks in ``sys.modules``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, Protocol

from kafka_retry.errors import DecodeError
from kafka_retry.message import Message

__all__ = ["Decode", "Decoder", "default_decoder", "describe_annotation"]

#: ``decode(value, message) -> payload``: a plain function or an ``async def``.
#: Raises :class:`~kafka_retry.DecodeError` for a value that no retry can fix.
Decode = Callable[[bytes | None, Message], Any]

_SUPPORTED = (
    "bytes, str, dict, list, Any, a pydantic v2 BaseModel, a msgspec Struct, "
    "a dataclass, or one of them | None"
)


class Decoder(Protocol):
    """Makes the function that decodes values into one payload annotation.

    Called once per typed handler, when it is registered, with the handler's
    payload annotation as written (``Annotated`` metadata and ``| None``
    included). Returns ``decode(value, message) -> payload`` (which may be an
    ``async def``), called for each message before the handler runs.

    ``decode`` raises :class:`~kafka_retry.DecodeError` for a value that can
    never decode: the message goes to the dead letter at once. Any other
    exception fails the attempt like a handler's would (a schema registry that
    is unreachable is retried).

    Raises:
        TypeError: The decoder cannot produce ``annotation``; the consumer
            turns it into a :class:`~kafka_retry.SetupError` naming the handler.
    """

    def __call__(self, annotation: Any, /) -> Decode:
        """Return the decode function for ``annotation``."""
        ...


def describe_annotation(annotation: Any) -> str:
    """``Order``, ``dict``, ``bytes | None``: an annotation as a reader writes it."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def default_decoder(annotation: Any) -> Decode:
    """The built-in decoder: bytes, UTF-8 text, JSON, pydantic, msgspec and dataclasses.

    ``bytes`` is the value as is, ``str`` the value as UTF-8, ``dict``,
    ``list`` and ``Any`` its JSON, a pydantic v2 ``BaseModel`` or a msgspec
    ``Struct`` the model of its JSON, a dataclass its JSON object passed as the
    fields. A null value is refused, unless the annotation allows ``None``
    (``Order | None``, or ``Any``), which it then is.

    Raises:
        TypeError: ``annotation`` is none of these.
    """
    inner, nullable = _split_optional(_strip_annotated(annotation))
    inner = _strip_annotated(inner)
    decode = _decoder_for(inner)
    if decode is None:
        raise TypeError(
            f"the payload annotation {describe_annotation(annotation)} is not supported "
            f"by the default decoder ({_SUPPORTED}); pass decoder=... for other formats"
        )
    name = describe_annotation(inner)
    if nullable or inner is Any:
        return _none_or(decode)
    return _refuse_null(decode, name)


def _strip_annotated(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        return annotation.__origin__
    return annotation


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``; ``(annotation, False)`` otherwise."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return annotation, False
    others = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if len(others) != 1:
        return annotation, False  # a union of two payload types: not supported
    return others[0], True


def _none_or(decode: Callable[[bytes], Any]) -> Decode:
    def decode_nullable(value: bytes | None, message: Message) -> Any:
        return None if value is None else decode(value)

    return decode_nullable


def _refuse_null(decode: Callable[[bytes], Any], name: str) -> Decode:
    def decode_value(value: bytes | None, message: Message) -> Any:
        if value is None:
            raise DecodeError(f"the value is null, and the handler takes {name}, not None")
        return decode(value)

    return decode_value


def _decoder_for(annotation: Any) -> Callable[[bytes], Any] | None:
    """The function decoding a non-null value into ``annotation``, or None if unsupported."""
    if annotation is bytes:
        return _as_bytes
    if annotation is str:
        return _as_text
    if annotation is Any:
        return _json
    container = _json_container(annotation)
    if container is not None:
        return _json_of(container)
    if not isinstance(annotation, type):
        return None
    model = _pydantic_decoder(annotation)
    if model is not None:
        return model
    struct = _msgspec_decoder(annotation)
    if struct is not None:
        return struct
    if dataclasses.is_dataclass(annotation):
        return _DataclassDecoder(annotation)
    return None


def _json_container(annotation: Any) -> type | None:
    """``dict`` or ``list`` for those, ``dict[str, Any]`` and ``list[Any]``; else None.

    Other parameters (``dict[str, int]``) are refused: plain JSON would not
    check them, and a handler should not believe they were checked.
    """
    if annotation in (dict, list):
        return typing.cast(type, annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and args in ((str, Any), (Any, Any)):
        return dict
    if origin is list and args == (Any,):
        return list
    return None


def _as_bytes(value: bytes) -> bytes:
    return value


def _as_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"the value is not UTF-8 text: {exc}") from exc


def _json(value: bytes) -> Any:
    try:
        return json.loads(value)
    except RecursionError as exc:  # hostile input: nested deeper than the interpreter goes
        raise DecodeError("invalid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not text
        raise DecodeError(f"invalid JSON: {exc}") from exc


def _json_of(kind: type) -> Callable[[bytes], Any]:
    def decode(value: bytes) -> Any:
        data = _json(value)
        if not isinstance(data, kind):
            raise DecodeError(f"the JSON value is {_json_type(data)}, not {kind.__name__}")
        return data

    return decode


def _json_type(data: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if data is None:
        return "null"
    return names.get(type(data), "a number")


def _pydantic_decoder(annotation: type) -> Callable[[bytes], Any] | None:
    main = sys.modules.get("pydantic.main")
    base = getattr(main, "BaseModel", None)
    if base is None or not issubclass(annotation, base):
        return None
    validate = getattr(annotation, "model_validate_json", None)
    if validate is None:  # a pydantic v1 model
        return None
    _complete(annotation)
    from pydantic import ValidationError

    def decode(value: bytes) -> Any:
        try:
            return validate(value)
        except ValidationError as exc:
            raise DecodeError(str(exc)) from exc

    return decode


def _complete(model: Any) -> None:
    """Make sure a pydantic model can validate: else every message would fail, and be retried.

    Raises:
        TypeError: A field type still does not resolve (a forward reference).
    """
    if getattr(model, "__pydantic_complete__", True):
        return
    try:
        model.model_rebuild()
    except Exception as exc:  # pydantic's PydanticUndefinedAnnotation names the missing type
        raise TypeError(
            f"the pydantic model {model.__qualname__} is not fully defined: {exc}"
        ) from exc


def _msgspec_decoder(annotation: type) -> Callable[[bytes], Any] | None:
    msgspec = sys.modules.get("msgspec")
    base = getattr(msgspec, "Struct", None)
    if msgspec is None or base is None or not issubclass(annotation, base):
        return None
    decoder = msgspec.json.Decoder(annotation)
    error: type[Exception] = msgspec.DecodeError  # its ValidationError is a subclass

    def decode(value: bytes) -> Any:
        try:
            return decoder.decode(value)
        except error as exc:
            raise DecodeError(f"{annotation.__qualname__}: {exc}") from exc

    return decode


class _DataclassDecoder:
    """A JSON object into a dataclass: its keys are the fields; nested dataclasses are built too.

    The fields' types are not checked (pydantic or msgspec do that). Keys that
    are no field are ignored, as pydantic and msgspec do by default, so a
    producer may add fields; a required field that is missing is a DecodeError.
    """

    def __init__(self, cls: type, known: dict[type, _DataclassDecoder] | None = None) -> None:
        self._cls = cls
        self._fields = frozenset(f.name for f in dataclasses.fields(cls) if f.init)
        self._nested: dict[str, _DataclassDecoder] = {}
        known = {} if known is None else known
        known[cls] = self  # a dataclass that refers to itself reuses this decoder
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # a field type that does not resolve is just not built as nested
            hints = {}
        for name in self._fields:
            hint = hints.get(name)
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                self._nested[name] = known.get(hint) or _DataclassDecoder(hint, known)

    def __call__(self, value: bytes) -> Any:
        return self.build(_json(value), self._cls.__qualname__)

    def build(self, data: Any, path: str) -> Any:
        """The dataclass from ``data``, a decoded JSON object; ``path`` names it in errors."""
        if not isinstance(data, dict):
            raise DecodeError(f"{path}: the JSON value is {_json_type(data)}, not an object")
        fields = {name: item for name, item in data.items() if name in self._fields}
        for name, nested in self._nested.items():
            if name in fields:
                fields[name] = nested.build(fields[name], f"{path}.{name}")
        try:
            return self._cls(**fields)
        except (TypeError, ValueError) as exc:  # a missing field, or __post_init__ refusing it
            raise DecodeError(f"{path}: {exc}") from exc
