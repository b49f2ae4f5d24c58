"""Typed handlers: the signature decides what a handler gets; bad shapes fail at registration."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import pydantic
import pytest

from kafka_retry import (
    Config,
    Consumer,
    DatabaseConfig,
    DecodeError,
    Message,
    SetupError,
    default_decoder,
)
from kafka_retry._decoding import Decode
from kafka_retry._typed import TypedHandler
from kafka_retry.retry.table import DEAD_LETTERED
from kafka_retry.testing import TestConsumer

if TYPE_CHECKING:
    from collections.abc import Callable

    import kafka_retry as hidden  # the name does not exist at run time, on purpose


class Order(pydantic.BaseModel):
    """A pydantic model."""

    id: int
    qty: int


class Shipment(msgspec.Struct):
    """A msgspec Struct."""

    id: int


@dataclasses.dataclass
class Refund:
    """A dataclass."""

    id: int


def make_config(backend: Literal["kafka", "postgres"] = "kafka", **fields: Any) -> Config:
    """One topic, one retry tier; the postgres backend runs on the in-memory table."""
    fields.setdefault("retry_intervals", [5])
    if backend == "postgres":
        fields["database"] = DatabaseConfig()
    return Config(
        bootstrap_servers="localhost:9092",
        group="shop",
        topics=["orders"],
        retry_backend=backend,
        **fields,
    )


def message(value: bytes | None) -> Message:
    """A first-attempt message of ``orders`` holding ``value``."""
    return Message("orders", 0, 3, b"k", value, (), 0, "orders")


def registered(function: Any, **options: Any) -> Any:
    """What the consumer runs for ``function`` registered with the decorator."""
    consumer = Consumer(make_config())
    assert consumer.handler("orders", **options)(function) is function
    return consumer.handlers["orders"]


async def test_message_handler_is_kept_as_is() -> None:
    """A handler taking the Message is what runs: no wrapper, no cost."""

    async def plain(message: Message) -> None: ...

    async def unannotated(message) -> None:  # type: ignore[no-untyped-def]
        ...

    async def with_default(message: Message, extra: int = 1) -> None: ...

    for function in (plain, unannotated, with_default):
        assert registered(function) is function


async def test_message_handler_whose_annotation_only_type_checkers_see() -> None:
    """``message: Message`` with Message imported under TYPE_CHECKING stays a Message handler."""

    async def handle(message: hidden.Message) -> None: ...

    assert registered(handle) is handle


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        (bytes, b"\xff\x00", b"\xff\x00"),
        (str, "né".encode(), "né"),
        (dict, b'{"a": 1}', {"a": 1}),
        (list, b"[1]", [1]),
        (Any, b"2", 2),
        (Order, b'{"id": 1, "qty": 2}', Order(id=1, qty=2)),
        (Shipment, b'{"id": 4}', Shipment(4)),
        (Refund, b'{"id": 9}', Refund(9)),
        (bytes | None, None, None),
    ],
)
async def test_payload_handler_gets_the_decoded_value(
    annotation: Any, value: bytes | None, expected: Any
) -> None:
    """Each supported annotation reaches the handler decoded."""
    got: list[Any] = []

    async def handle(payload: Any) -> None:
        got.append(payload)

    handle.__annotations__["payload"] = annotation
    runs = registered(handle)
    assert isinstance(runs, TypedHandler) and runs.function is handle
    await runs(message(value))
    assert got == [expected]


async def test_payload_and_message_in_either_order() -> None:
    """The Message is found by its annotation: after the payload, before it, or by keyword."""
    got: list[tuple[Any, Message]] = []

    async def after(order: Order, message: Message) -> None:
        got.append((order, message))

    async def before(message: Message, order: Order) -> None:
        got.append((order, message))

    async def keyword(order: Order, *, message: Message) -> None:
        got.append((order, message))

    incoming = message(b'{"id": 1, "qty": 1}')
    for function in (after, before, keyword):
        await registered(function)(incoming)
    assert got == [(Order(id=1, qty=1), incoming)] * 3


class OrderHandler:
    """A callable class handler with state."""

    def __init__(self) -> None:
        self.seen: list[Order] = []

    async def __call__(self, order: Order, message: Message) -> None:
        self.seen.append(order)


async def test_callable_class_partial_and_method() -> None:
    """Callable instances, bound methods and partials are read like functions."""
    handler = OrderHandler()

    async def with_tenant(tenant: str, order: Order) -> None:
        handler.seen.append(order)

    incoming = message(b'{"id": 5, "qty": 1}')
    assert repr(registered(handler)) == (
        "<kafka_retry typed handler tests.unit.test_typed_handlers.OrderHandler(Order)>"
    )
    assert "test_callable_class_partial_and_method.<locals>.with_tenant(Order)" in repr(
        registered(functools.partial(with_tenant, "eu"))
    )
    await registered(handler)(incoming)
    await registered(handler.__call__)(incoming)
    await registered(functools.partial(with_tenant, "eu"))(incoming)
    assert handler.seen == [Order(id=5, qty=1)] * 3


async def test_decode_error_means_the_handler_is_not_called() -> None:
    """A value that does not validate raises DecodeError before the handler runs."""
    called: list[Order] = []

    async def handle(order: Order) -> None:
        called.append(order)

    with pytest.raises(DecodeError, match="validation error for Order"):
        await registered(handle)(message(b'{"id": "x", "qty": 1}'))
    with pytest.raises(DecodeError, match="the value is null"):
        await registered(handle)(message(None))
    assert called == []


async def no_parameters() -> None:
    """No parameters at all."""


async def two_payloads(order: Order, other: Order) -> None:
    """Two payload parameters."""


async def two_messages(first: Message, second: Message) -> None:
    """Two Message parameters."""


async def unannotated_payload(order, message: Message) -> None:  # type: ignore[no-untyped-def]
    """A payload without a type next to a Message."""


async def required_keyword(order: Order, *, tenant: str) -> None:
    """A keyword-only parameter nobody fills."""


async def unsupported(amount: int) -> None:
    """A payload type no decoder here makes."""


async def unresolvable(order: Undefined) -> None:  # type: ignore[name-defined]  # noqa: F821
    """An annotation naming something that does not exist."""


@pytest.mark.parametrize(
    ("function", "error"),
    [
        (no_parameters, "takes no parameters"),
        (two_payloads, r"takes 2 parameters \(order, other\)"),
        (two_messages, "more than one parameter annotated Message: first, second"),
        (unannotated_payload, "annotate the payload parameter 'order'"),
        (required_keyword, r"keyword-only parameter\(s\) without a default: \['tenant'\]"),
        (unsupported, "the payload annotation int is not supported by the default decoder"),
        (unresolvable, r"annotations cannot be resolved \(NameError: name 'Undefined'"),
    ],
)
def test_unusable_signatures_are_a_setup_error(function: Any, error: str) -> None:
    """A wrong shape or type raises SetupError naming the handler and topic, at registration."""
    name = f"tests.unit.test_typed_handlers.{function.__name__}"
    expected = f"handler {name} for topic 'orders'.*{error}"
    with pytest.raises(SetupError, match=expected):
        registered(function)
    with pytest.raises(SetupError, match=expected):
        Consumer(make_config(), {"orders": function})
    with pytest.raises(SetupError, match=expected):
        TestConsumer(make_config(), {"orders": function})


def test_local_class_under_future_annotations_is_a_clear_setup_error() -> None:
    """A model defined inside a function cannot be resolved from its string annotation."""

    class Local(pydantic.BaseModel):
        id: int

    async def handle(item: Local) -> None: ...

    with pytest.raises(SetupError, match=r"'Local' is not defined.*at module level"):
        registered(handle)


def test_a_decoder_for_a_message_handler_is_a_setup_error() -> None:
    """A per-handler decoder on a handler that takes the Message has nothing to decode."""

    async def plain(message: Message) -> None: ...

    with pytest.raises(SetupError, match="a decoder was given, but the handler takes the Message"):
        registered(plain, decoder=default_decoder)


def test_a_sync_typed_handler_is_refused_as_before() -> None:
    """A function that is not async is left for the start check, which refuses it."""

    def sync(order: Order) -> None: ...

    assert registered(sync) is sync


def test_config_decoder_must_be_callable() -> None:
    """Config(decoder=...) names the field when it is not callable."""
    with pytest.raises(Exception, match="decoder: must be callable"):
        make_config(decoder="json")


def upper_decoder(seen: list[Any]) -> Callable[[Any], Decode]:
    """A custom decoder for str payloads that records the annotation it was asked for."""

    def decoder(annotation: Any) -> Decode:
        seen.append(annotation)
        if annotation is not str:
            raise TypeError("upper_decoder makes str only")

        def decode(value: bytes | None, message: Message) -> str:
            return (value or b"").decode().upper()

        return decode

    return decoder


async def test_custom_decoder_from_config_and_per_handler() -> None:
    """Config.decoder is the default; a handler's own decoder wins; refusals name the handler."""
    seen: list[Any] = []
    got: list[str] = []

    async def handle(text: str) -> None:
        got.append(text)

    consumer = Consumer(make_config(decoder=upper_decoder(seen)), {"orders": handle})
    await consumer.handlers["orders"](message(b"abc"))
    other = Consumer(make_config())
    other.handler("orders", decoder=upper_decoder(seen))(handle)
    await other.handlers["orders"](message(b"def"))
    assert (seen, got) == ([str, str], ["ABC", "DEF"])

    async def takes_order(order: Order) -> None: ...

    with pytest.raises(SetupError, match="takes_order for topic 'orders': upper_decoder makes str"):
        Consumer(make_config(decoder=upper_decoder(seen)), {"orders": takes_order})
    with pytest.raises(SetupError, match="the decoder gave None for Order, not a decode"):
        Consumer(make_config(decoder=lambda annotation: None), {"orders": takes_order})


async def test_async_decode_function_is_awaited() -> None:
    """A decoder may return an async decode function (a schema registry lookup, say)."""

    def decoder(annotation: Any) -> Decode:
        async def decode(value: bytes | None, message: Message) -> dict[str, Any]:
            return {"offset": message.offset, "value": value}

        return decode

    got: list[dict[str, Any]] = []

    async def handle(record: dict[str, Any]) -> None:
        got.append(record)

    await registered(handle, decoder=decoder)(message(b"x"))
    assert got == [{"offset": 3, "value": b"x"}]


@pytest.mark.parametrize("backend", ["kafka", "postgres"])
async def test_retry_reaches_the_typed_handler_with_the_same_model(
    backend: Literal["kafka", "postgres"],
) -> None:
    """A failed typed call is retried, and the retry decodes into the same model (both backends)."""
    got: list[tuple[Order, int]] = []

    async def handle(order: Order, message: Message) -> None:
        got.append((order, message.attempt))
        if message.attempt == 1:
            raise ConnectionError("stock service down")

    consumer = Consumer(make_config(backend))
    consumer.handler("orders")(handle)
    async with TestConsumer(consumer) as t:
        await t.publish("orders", b'{"id": 1, "qty": 3}')
        await t.drain()
    assert got == [(Order(id=1, qty=3), 1), (Order(id=1, qty=3), 2)]
    assert t.dead_letters("orders") == []


@pytest.mark.parametrize("backend", ["kafka", "postgres"])
async def test_undecodable_values_are_dead_lettered_at_once(
    backend: Literal["kafka", "postgres"],
) -> None:
    """Invalid JSON and a failed validation skip the handler and every retry tier."""
    called: list[Order] = []

    async def handle(order: Order) -> None:
        called.append(order)

    bad = [b"{not json", b'{"id": 1, "qty": "many"}', b"\xff\x00"]
    async with TestConsumer(make_config(backend, retry_intervals=[5, 10]), {"orders": handle}) as t:
        for value in bad:
            await t.publish("orders", value, key=b"k", headers=[("h", b"\x00")])
        await t.drain()
    assert called == []
    letters = t.dead_letters("orders")
    assert [(d.value, d.key, d.attempts) for d in letters] == [(v, b"k", 1) for v in bad]
    assert {d.error_type for d in letters} == {"kafka_retry.DecodeError"}
    assert "Invalid JSON" in str(letters[0].error_message)
    assert "1 validation error for Order\nqty" in str(letters[1].error_message)
    if backend == "kafka":
        for retry_topic in make_config().topic_chain("orders")[1:-1]:
            assert t.broker.records(retry_topic) == []
    else:
        assert t.table is not None  # every row went straight to dead-lettered, none pending
        assert [(r["state"], r["attempts"]) for r in t.table.rows()] == [(DEAD_LETTERED, 1)] * 3


async def test_other_decoder_errors_are_retried() -> None:
    """A decode function failing with another exception (registry down) is an ordinary failure."""
    attempts: list[int] = []

    def flaky(annotation: Any) -> Decode:
        def decode(value: bytes | None, message: Message) -> bytes:
            attempts.append(message.attempt)
            if message.attempt == 1:
                raise ConnectionError("schema registry unreachable")
            return value or b""

        return decode

    got: list[bytes] = []

    async def handle(payload: bytes) -> None:
        got.append(payload)

    consumer = Consumer(make_config())
    consumer.handler("orders", decoder=flaky)(handle)
    async with TestConsumer(consumer) as t:
        await t.publish("orders", b"v")
        await t.drain()
    assert (attempts, got) == ([1, 2], [b"v"])
