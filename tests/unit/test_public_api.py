"""The public surface: sorted __all__, reprs that show kafka_retry.X."""

from __future__ import annotations

import kafka_retry


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted and every name in it exists."""
    assert kafka_retry.__all__ == sorted(kafka_retry.__all__)
    for name in kafka_retry.__all__:
        assert hasattr(kafka_retry, name)


def test_exported_names_show_public_module() -> None:
    """Exported classes present themselves as kafka_retry.X."""
    assert repr(kafka_retry.Config).endswith("kafka_retry.Config'>")
    assert kafka_retry.ConfigError.__module__ == "kafka_retry"


def test_one_exception_tree() -> None:
    """Every exported error derives from KafkaRetryError."""
    for name in kafka_retry.__all__:
        obj = getattr(kafka_retry, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, kafka_retry.KafkaRetryError), name
