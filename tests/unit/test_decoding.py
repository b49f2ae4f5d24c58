"""The default decoder: each supported payload annotation, null values, and what it refuses."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Annotated, Any, Optional

import msgspec
import pydantic
import pytest

from kafka_retry import DecodeError, Message, default_decoder

MESSAGE = Message("t", 0, 0, None, None, (), 0, "t")


class Order(pydantic.BaseModel):
    """A pydantic model."""

    id: int
    qty: int = 1


class Shipment(msgspec.Struct):
    """A msgspec Struct."""

    id: int
    carrier: str


@dataclasses.dataclass
class Address:
    """A dataclass nested in another."""

    city: str


@dataclasses.dataclass
class Customer:
    """A dataclass with a nested one and a default."""

    name: str
    address: Address
    vip: bool = False


@dataclasses.dataclass
class Node:
    """A dataclass that refers to itself."""

    name: str
    parent: Node | None = None


def decode(annotation: Any, value: bytes | None) -> Any:
    """Decode ``value`` the way a handler taking ``annotation`` gets it."""
    return default_decoder(annotation)(value, MESSAGE)


def test_bytes_is_the_value_as_is() -> None:
    """bytes: any value, not text, not JSON, empty too."""
    assert decode(bytes, b"\xff\x00 not text") == b"\xff\x00 not text"
    assert decode(bytes, b"") == b""


def test_str_is_utf8() -> None:
    """str: the value as UTF-8 text; other bytes are a DecodeError."""
    assert decode(str, "café".encode()) == "café"
    with pytest.raises(DecodeError, match="not UTF-8"):
        decode(str, b"\xff\xfe")


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        (dict, b'{"a": 1}', {"a": 1}),
        (dict[str, Any], b'{"a": [1]}', {"a": [1]}),
        (list, b"[1, 2]", [1, 2]),
        (list[Any], b'["x"]', ["x"]),
        (Any, b'"text"', "text"),
        (Any, b"3.5", 3.5),
        (Any, b"null", None),
    ],
)
def test_json_annotations(annotation: Any, value: bytes, expected: Any) -> None:
    """dict, list and Any get the value's JSON."""
    assert decode(annotation, value) == expected


@pytest.mark.parametrize(
    ("annotation", "value", "error"),
    [
        (dict, b"{not json", "invalid JSON"),
        (dict, b"[1]", "the JSON value is an array, not dict"),
        (list, b'{"a": 1}', "the JSON value is an object, not list"),
        (Any, b"\xff\xfe\x00", "invalid JSON"),
        (dict, b"", "invalid JSON"),
        (list, b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
    ],
)
def test_json_that_does_not_fit_is_a_decode_error(
    annotation: Any, value: bytes, error: str
) -> None:
    """Invalid JSON, the wrong JSON type, bytes that are not text, hostile nesting."""
    with pytest.raises(DecodeError, match=error):
        decode(annotation, value)


def test_pydantic_model_is_validated() -> None:
    """A pydantic model: its JSON validated; the DecodeError's text is pydantic's."""
    assert decode(Order, b'{"id": 7}') == Order(id=7, qty=1)
    with pytest.raises(DecodeError) as caught:
        decode(Order, b'{"id": "seven"}')
    text = str(caught.value)
    assert "1 validation error for Order" in text
    assert "id" in text and "valid integer" in text
    assert isinstance(caught.value.__cause__, pydantic.ValidationError)
    with pytest.raises(DecodeError, match="Invalid JSON"):
        decode(Order, b"{bad")


def test_msgspec_struct_is_validated() -> None:
    """A msgspec Struct: its JSON validated; errors say where."""
    assert decode(Shipment, b'{"id": 1, "carrier": "ups"}') == Shipment(1, "ups")
    with pytest.raises(DecodeError, match=r"Shipment: Expected `str`, got `int` - at `\$.carrier`"):
        decode(Shipment, b'{"id": 1, "carrier": 5}')
    with pytest.raises(DecodeError, match="Shipment: JSON is malformed"):
        decode(Shipment, b"{bad")


def test_dataclass_gets_its_fields() -> None:
    """A dataclass: the JSON object's keys are its fields; nested dataclasses are built."""
    value = b'{"name": "Ada", "address": {"city": "London"}, "extra": 1}'
    assert decode(Customer, value) == Customer("Ada", Address("London"))
    assert decode(Node, b'{"name": "leaf"}') == Node("leaf")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b'{"address": {"city": "x"}}', "Customer: .*missing 1 required positional argument"),
        (b'{"name": "Ada", "address": {}}', "Customer.address: .*missing"),
        (b'{"name": "Ada", "address": []}', "Customer.address: .*an array, not an object"),
        (b"[1]", "Customer: the JSON value is an array, not an object"),
    ],
)
def test_dataclass_that_does_not_fit_is_a_decode_error(value: bytes, error: str) -> None:
    """Missing fields and non-objects name the dataclass (and the nested field)."""
    with pytest.raises(DecodeError, match=error):
        decode(Customer, value)


@pytest.mark.parametrize("annotation", [bytes, str, dict, list, Order, Shipment, Customer])
def test_null_value_is_refused_unless_none_is_allowed(annotation: Any) -> None:
    """A null value is a DecodeError for X, and None for X | None and Optional[X]."""
    with pytest.raises(DecodeError, match="the value is null"):
        decode(annotation, None)
    assert decode(annotation | None, None) is None
    assert decode(Optional[annotation], None) is None  # noqa: UP045 - the old spelling too


def test_optional_decodes_a_present_value() -> None:
    """X | None decodes a value that is there as X."""
    assert decode(bytes | None, b"\x00") == b"\x00"
    assert decode(Order | None, b'{"id": 1}') == Order(id=1)


def test_any_takes_a_null_value_as_none() -> None:
    """Any includes None: a null value is None."""
    assert decode(Any, None) is None


def test_annotated_metadata_is_ignored() -> None:
    """Annotated[X, ...] decodes as X (the metadata is for custom decoders)."""
    assert decode(Annotated[Order, "v1"], b'{"id": 2}') == Order(id=2)
    assert decode(Annotated[bytes | None, "raw"], None) is None


@pytest.mark.parametrize(
    "annotation",
    [int, float, bytearray, object, dict[str, int], list[Order], Order | Shipment, "Order"],
)
def test_unsupported_annotations_are_a_type_error(annotation: Any) -> None:
    """Anything else is refused at once, naming what is supported."""
    with pytest.raises(TypeError, match=r"not supported by the default decoder.*bytes, str"):
        default_decoder(annotation)


def test_plain_handlers_import_neither_pydantic_nor_msgspec() -> None:
    """A consumer with a Message handler and a dict handler never imports pydantic or msgspec."""
    code = """
import sys
from kafka_retry import Config, Consumer, Message

async def raw(message: Message) -> None: ...
async def as_dict(data: dict) -> None: ...

config = Config(bootstrap_servers="k:9092", group="g", topics=["a", "b"])
Consumer(config, {"a": raw, "b": as_dict})
import kafka_retry.testing
print(sorted(name for name in ("pydantic", "msgspec") if name in sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


class Incomplete(pydantic.BaseModel):
    """A model with a field type that is defined nowhere."""

    later: Later  # type: ignore[name-defined]  # noqa: F821


def test_pydantic_model_not_fully_defined_is_refused_at_once() -> None:
    """A model pydantic cannot build is refused at registration, not retried per message."""
    with pytest.raises(TypeError, match=r"pydantic model Incomplete is not fully defined.*Later"):
        default_decoder(Incomplete)
