"""A broker certificate from a CA without key identifiers, on Python 3.11 to 3.13.

Python 3.13's default TLS context verifies strictly (``ssl.VERIFY_X509_STRICT``)
and refuses such a CA; older Pythons accept it. Either way, a user's own
``tls_context`` with only that flag cleared connects with verification on.
"""

from __future__ import annotations

import platform
import ssl

import pytest
from prometheus_client import CollectorRegistry

from kafka_retry import Consumer, Message, TLSError, _kafka
from kafka_retry._devstack.secure import SecureKafka
from kafka_retry.deadletter import DeadLetterQuery, open_dead_letters
from tests import certs

from .secure_services import secure_config, secure_topic, start_fails
from .support import eventually, produce

pytestmark = pytest.mark.integration

STRICT_BY_DEFAULT = bool(ssl.create_default_context().verify_flags & ssl.VERIFY_X509_STRICT)
_PYTHON = f"Python {platform.python_version()}"


def _context(ca: object, *, strict: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if strict:
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    else:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


def _assert_strict_hint(error: BaseException, broker: SecureKafka) -> None:
    assert isinstance(error, TLSError)
    assert broker.listeners["LEGACY"] in str(error)
    assert "Missing Authority Key Identifier" in str(error)
    assert "Python 3.13+" in str(error)
    assert "pass tls_context" in str(error)


@pytest.mark.skipif(
    not STRICT_BY_DEFAULT,
    reason=f"{_PYTHON}: the default TLS context does not verify strictly (3.13+ does); "
    "the strict refusal is tested with an explicitly strict tls_context",
)
async def test_default_settings_refuse_a_legacy_ca_with_the_hint(
    secure_kafka: SecureKafka, legacy_tls_material: certs.TLSMaterial
) -> None:
    """tls_ca_file with a CA lacking key identifiers: a TLSError that points to tls_context."""
    topic = await secure_topic(secure_kafka)
    config = secure_config(secure_kafka, "LEGACY", topic, tls_ca_file=str(legacy_tls_material.ca))
    error, _elapsed = await start_fails(config)
    _assert_strict_hint(error, secure_kafka)


@pytest.mark.skipif(
    STRICT_BY_DEFAULT,
    reason=f"{_PYTHON}: the default TLS context verifies strictly and refuses this CA "
    "(tested by test_default_settings_refuse_a_legacy_ca_with_the_hint)",
)
async def test_default_settings_accept_a_legacy_ca_before_3_13(
    secure_kafka: SecureKafka, legacy_tls_material: certs.TLSMaterial
) -> None:
    """Without strict verification by default, tls_ca_file alone trusts a legacy CA."""
    topic = await secure_topic(secure_kafka)
    config = secure_config(secure_kafka, "LEGACY", topic, tls_ca_file=str(legacy_tls_material.ca))
    admin = await _kafka.start_admin(config, _kafka.AIOKafkaTransport())
    try:
        assert topic in await admin.list_topics()
    finally:
        await admin.close()


async def test_strict_context_refuses_a_legacy_ca_with_the_hint(
    secure_kafka: SecureKafka, legacy_tls_material: certs.TLSMaterial
) -> None:
    """A tls_context that verifies strictly (3.13's default, on any Python) gets the hint."""
    topic = await secure_topic(secure_kafka)
    context = _context(legacy_tls_material.ca, strict=True)
    config = secure_config(secure_kafka, "LEGACY", topic, tls_context=context)
    error, _elapsed = await start_fails(config)
    _assert_strict_hint(error, secure_kafka)


async def test_context_without_the_strict_flag_carries_every_client(
    secure_kafka: SecureKafka, legacy_tls_material: certs.TLSMaterial
) -> None:
    """The recipe: main and retry consumers, producer, admin and dead-letter reader all connect."""
    topic = await secure_topic(secure_kafka)
    await produce(secure_kafka.listeners["PLAINTEXT"], topic, [(b"k", b"legacy", [])])
    context = _context(legacy_tls_material.ca, strict=False)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    config = secure_config(
        secure_kafka, "LEGACY", topic, retry_intervals=[0.2], tls_context=context
    )
    attempts: list[int] = []

    async def handler(message: Message) -> None:
        attempts.append(message.attempt)
        raise RuntimeError("always fails")

    def dead_lettered() -> float:
        labels = {"topic": topic, "tier": "retry1", "outcome": "dead_letter"}
        return registry.get_sample_value("kafka_retry_messages_handled_total", labels) or 0.0

    registry = CollectorRegistry()
    async with Consumer(config, {topic: handler}, registry=registry):
        await eventually(lambda: dead_lettered() == 1)
    assert attempts == [1, 2]
    async with open_dead_letters(config) as store:
        entries = [entry async for entry in store.entries(DeadLetterQuery())]
    assert [entry.value for entry in entries] == [b"legacy"]


async def test_context_without_the_strict_flag_still_refuses_a_wrong_ca(
    secure_kafka: SecureKafka, legacy_tls_material: certs.TLSMaterial
) -> None:
    """Clearing the flag keeps verification: an untrusted CA is refused, with no strict hint."""
    topic = await secure_topic(secure_kafka)
    context = _context(legacy_tls_material.wrong_ca, strict=False)
    config = secure_config(secure_kafka, "LEGACY", topic, tls_context=context)
    error, _elapsed = await start_fails(config)
    assert isinstance(error, TLSError)
    assert "not trusted" in str(error)
    assert "VERIFY_X509_STRICT" not in str(error)
    assert "tls_context" in str(error)
