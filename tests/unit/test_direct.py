"""The fetcher hook of :mod:`kafka_retry._direct` stands back when aiokafka is not what it knows."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiokafka.consumer import fetcher

from kafka_retry import _direct


class _Changed:
    """A PartitionRecords whose _consumer_record reads something new."""

    def _consumer_record(self, tp: Any, record: Any) -> Any:
        return (tp, record, record.something_new)


def test_install_leaves_an_unknown_fetcher_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not installed, said once at INFO, and the method is the original."""
    monkeypatch.setattr(_direct, "_installed", None)
    monkeypatch.setattr(fetcher, "PartitionRecords", _Changed)
    original = _Changed._consumer_record
    with caplog.at_level(logging.INFO, logger="kafka_retry"):
        assert _direct.install() is False
        assert _direct.install() is False
    assert _Changed._consumer_record is original
    assert sum("not as expected" in r.getMessage() for r in caplog.records) == 1


def test_install_knows_the_pinned_aiokafka() -> None:
    """With the aiokafka this project pins, the fetcher builds Messages."""
    assert _direct.install() is True
    assert fetcher.PartitionRecords._consumer_record.__module__ == _direct.__name__


def test_direct_messages_is_the_identity() -> None:
    """The marker deserializer hands the value over as it is."""
    value = b"\x00\xff"
    assert _direct.direct_messages(value) is value
    assert _direct.direct_messages(None) is None
