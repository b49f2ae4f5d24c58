"""JSON lines with the extra fields, and no SASL secret in aiokafka's debug log."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from aiokafka.protocol.admin import SaslAuthenticateRequest_v1

from kafka_retry import Config
from kafka_retry._kafka import security_kwargs
from kafka_retry.logs import JsonFormatter


def test_json_formatter_writes_one_object_with_extra_fields() -> None:
    """A record becomes one JSON line with time, level, message and the extra fields."""
    record = logging.makeLogRecord(
        {
            "name": "kafka_retry",
            "levelname": "WARNING",
            "msg": "handler failed for %s",
            "args": ("orders",),
            "topic": "orders",
            "partition": 3,
            "offset": 42,
            "attempt": 2,
            "tier": "retry1",
            "error_type": "ValueError",
            "odd": {1, 2},
        }
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "handler failed for orders"
    assert data["level"] == "WARNING"
    assert data["time"].endswith("Z")
    assert (data["topic"], data["partition"], data["offset"]) == ("orders", 3, 42)
    assert (data["attempt"], data["tier"], data["error_type"]) == (2, "retry1", "ValueError")
    assert data["odd"] == "{1, 2}"
    assert "args" not in data and "msg" not in data


def test_json_formatter_includes_the_traceback() -> None:
    """An exception logged with exc_info is in the exc_info field."""
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    data = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in data["exc_info"]


def test_sasl_bytes_are_hidden_from_aiokafka_debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """With SASL configured, aiokafka's DEBUG line for the authenticate request hides the bytes."""
    config = Config(
        bootstrap_servers="k:9092",
        group="g",
        topics=["orders"],
        sasl_mechanism="PLAIN",
        sasl_username="svc",
        sasl_password="hunter2-secret",
    )
    security_kwargs(config)
    security_kwargs(config)  # installing twice adds one filter
    aiokafka_log = logging.getLogger("aiokafka.conn")
    assert sum(type(f).__name__ == "_HideSaslRequests" for f in aiokafka_log.filters) == 1
    request = SaslAuthenticateRequest_v1(b"\x00svc\x00hunter2-secret")
    with caplog.at_level(logging.DEBUG, logger="aiokafka.conn"):
        aiokafka_log.debug("Request to %s:%d %d: %s", "k", 9092, 7, request)
    assert "hunter2-secret" not in caplog.text
    assert "Request to k:9092 7: SaslAuthenticateRequest(<hidden>)" in caplog.text
