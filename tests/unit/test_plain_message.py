"""The main tier's fast Message construction makes what ``Message(...)`` makes."""

from __future__ import annotations

import pickle
from typing import Any

import attrs
import pytest
from aiokafka import ConsumerRecord

from kafka_retry import Message
from kafka_retry.message import plain_message, plain_messages


def _record(offset: int, headers: list[tuple[str, bytes]] | None = None) -> Any:
    return ConsumerRecord(
        "product", 3, offset, 1_700_000_000_000, 0, b"k", b"v", None, 0, 1, headers or []
    )


def _expected(offset: int) -> Message:
    return Message("product", 3, offset, b"k", b"v", (), 1_700_000_000_000, "main", 2)


def test_plain_message_is_the_message_attrs_builds() -> None:
    """Same type, every field set, equal, same hash, same repr."""
    made = plain_message("product", 3, 7, b"k", b"v", 1_700_000_000_000, "main", 2)
    expected = _expected(7)
    assert type(made) is Message
    assert set(vars(made)) == {field.name for field in attrs.fields(Message)}
    assert made == expected
    assert hash(made) == hash(expected)
    assert repr(made) == repr(expected)


def test_plain_message_is_frozen_and_evolves() -> None:
    """It refuses assignment like any Message, and attrs.evolve and pickle work on it."""
    made = plain_message("product", 3, 7, None, None, 1, "main", 1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.offset = 8  # type: ignore[misc]
    assert attrs.evolve(made, blocking_attempt=2).blocking_attempt == 2
    assert pickle.loads(pickle.dumps(made)) == made


def test_plain_messages_in_order_with_headers_made_by_the_callback() -> None:
    """Records without headers are made plainly; those with headers by ``with_headers``."""
    records = [_record(1), _record(2, [("h", b"1")]), _record(3)]
    seen: list[int] = []

    def with_headers(record: Any) -> Message:
        seen.append(record.offset)
        return attrs.evolve(_expected(record.offset), headers=(("h", b"1"),))

    made = plain_messages(records, "product", 3, "main", 2, with_headers)
    assert seen == [2]
    assert made == [_expected(1), attrs.evolve(_expected(2), headers=(("h", b"1"),)), _expected(3)]
