"""TLS, mutual TLS and SASL against a real Apache Kafka with secured listeners."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kafka_retry import (
    AuthenticationError,
    Consumer,
    Message,
    ServiceUnavailableError,
    TLSError,
    _kafka,
)
from kafka_retry._devstack.secure import SecureKafka
from tests import certs

from .secure_services import SASL_USERS, secure_config, secure_topic, start_fails
from .support import eventually, fresh, produce

pytestmark = pytest.mark.integration

# With connect_attempts=20 and 1 s apart, retrying a hopeless connection takes
# 19 s or more; a security failure must be reported well before.
FAST = 5.0
WRONG_PASSWORD = "not-the-password-7f3a"

Settings = Callable[[certs.TLSMaterial], dict[str, Any]]


def _sasl(mechanism: str, user: str = "alice", password: str | None = None) -> Settings:
    def settings(material: certs.TLSMaterial) -> dict[str, Any]:
        return {
            "tls_ca_file": str(material.ca),
            "sasl_mechanism": mechanism,
            "sasl_username": user,
            "sasl_password": SASL_USERS[user] if password is None else password,
        }

    return settings


def _mtls(material: certs.TLSMaterial) -> dict[str, Any]:
    return {
        "tls_ca_file": str(material.ca),
        "tls_cert_file": str(material.client_cert),
        "tls_key_file": str(material.client_key_encrypted),
        "tls_key_password": certs.CLIENT_KEY_PASSWORD,
    }


def _plaintext_sasl(mechanism: str) -> Settings:
    def settings(material: certs.TLSMaterial) -> dict[str, Any]:
        return {
            "sasl_mechanism": mechanism,
            "sasl_username": "bob",
            "sasl_password": SASL_USERS["bob"],
        }

    return settings


# listener, settings
SETUPS: dict[str, tuple[str, Settings]] = {
    "tls-ca": ("SSL", lambda m: {"tls_enabled": True, "tls_ca_file": str(m.ca)}),
    "mtls-encrypted-key": ("MTLS", _mtls),
    "sasl-ssl-plain": ("SASL_SSL", _sasl("PLAIN")),
    "sasl-ssl-scram-sha-256": ("SASL_SSL", _sasl("SCRAM-SHA-256")),
    "sasl-ssl-scram-sha-512": ("SASL_SSL", _sasl("SCRAM-SHA-512")),
    "sasl-plaintext-scram-sha-256": ("SASL_PLAINTEXT", _plaintext_sasl("SCRAM-SHA-256")),
}


def _chain_text(error: BaseException) -> str:
    parts = []
    current: BaseException | None = error
    while current is not None:
        parts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("setup", list(SETUPS))
async def test_every_client_connects_with_the_right_settings(
    secure_kafka: SecureKafka, tls_material: certs.TLSMaterial, setup: str
) -> None:
    """Admin, producer and consumer connect, write and read over each secured listener."""
    listener, settings = SETUPS[setup]
    topic = await secure_topic(secure_kafka)
    config = secure_config(secure_kafka, listener, topic, **settings(tls_material))
    transport = _kafka.AIOKafkaTransport()
    admin = await _kafka.start_admin(config, transport)
    try:
        assert topic in await admin.list_topics()
    finally:
        await admin.close()
    producer = await _kafka.start_producer(config, transport)
    try:
        await (await producer.send(topic, b"over " + setup.encode()))
    finally:
        await producer.stop()
    consumer = transport.consumer(config, fresh("g"), "main", "earliest")
    await _kafka.start_within_bound(config, "Kafka", consumer.start)
    try:
        consumer.subscribe([topic])
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert record.value == b"over " + setup.encode()


@pytest.mark.parametrize("setup", ["sasl-ssl-plain", "mtls-encrypted-key"])
async def test_consumer_retries_over_a_secured_listener_and_logs_no_secret(
    secure_kafka: SecureKafka,
    tls_material: certs.TLSMaterial,
    setup: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failure goes through the retry topic and back; no secret in logs, metrics or reprs."""
    listener, settings = SETUPS[setup]
    topic = await secure_topic(secure_kafka)
    await produce(secure_kafka.listeners["PLAINTEXT"], topic, [(b"k", b"v", [])])
    config = secure_config(
        secure_kafka, listener, topic, retry_intervals=[0.5], **settings(tls_material)
    )
    calls: list[int] = []

    async def handler(message: Message) -> None:
        calls.append(message.attempt)
        if message.attempt == 1:
            raise RuntimeError("first try fails")

    caplog.set_level(logging.DEBUG)
    registry = CollectorRegistry()
    consumer = Consumer(config, {topic: handler}, registry=registry)
    async with consumer:
        await eventually(lambda: calls == [1, 2])
    logged = caplog.text + "".join(repr(record.__dict__) for record in caplog.records)
    exposed = generate_latest(registry).decode()
    assert "kafka_retry_messages_handled_total" in exposed
    for secret in (SASL_USERS["alice"], certs.CLIENT_KEY_PASSWORD):
        assert secret not in logged
        assert secret not in exposed
        assert secret not in repr(config) + repr(consumer)


async def test_wrong_ca_fails_fast_with_a_tls_error(
    secure_kafka: SecureKafka, tls_material: certs.TLSMaterial
) -> None:
    """A broker certificate from an untrusted CA is a TLSError at once, naming the CA setting."""
    topic = await secure_topic(secure_kafka)
    config = secure_config(
        secure_kafka, "SSL", topic, tls_enabled=True, tls_ca_file=str(tls_material.wrong_ca)
    )
    error, elapsed = await start_fails(config)
    assert isinstance(error, TLSError)
    assert elapsed < FAST
    assert secure_kafka.listeners["SSL"] in str(error)
    assert "not trusted" in str(error)
    assert "tls_ca_file" in str(error)


async def test_system_cas_do_not_trust_a_private_ca(
    secure_kafka: SecureKafka, tls_material: certs.TLSMaterial
) -> None:
    """TLS on without a CA file verifies against the system CAs, which refuse the test CA."""
    topic = await secure_topic(secure_kafka)
    config = secure_config(secure_kafka, "SSL", topic, tls_enabled=True)
    error, elapsed = await start_fails(config)
    assert isinstance(error, TLSError)
    assert "system" in str(error)
    assert elapsed < FAST


async def test_skip_verify_peer_accepts_an_untrusted_certificate(
    secure_kafka: SecureKafka, tls_material: certs.TLSMaterial
) -> None:
    """tls_skip_verify_peer (self-signed test setups) connects despite the wrong CA."""
    topic = await secure_topic(secure_kafka)
    config = secure_config(
        secure_kafka,
        "SSL",
        topic,
        tls_enabled=True,
        tls_ca_file=str(tls_material.wrong_ca),
        tls_skip_verify_peer=True,
    )
    admin = await _kafka.start_admin(config, _kafka.AIOKafkaTransport())
    try:
        assert topic in await admin.list_topics()
    finally:
        await admin.close()


@pytest.mark.parametrize(
    ("listener", "mechanism"),
    [
        ("SASL_SSL", "PLAIN"),
        ("SASL_SSL", "SCRAM-SHA-256"),
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ],
)
async def test_wrong_password_fails_fast_without_revealing_it(
    secure_kafka: SecureKafka, tls_material: certs.TLSMaterial, listener: str, mechanism: str
) -> None:
    """A refused SASL login is an AuthenticationError at once; the password appears nowhere."""
    topic = await secure_topic(secure_kafka)
    settings = _sasl(mechanism, password=WRONG_PASSWORD)(tls_material)
    if listener == "SASL_PLAINTEXT":
        settings.pop("tls_ca_file")
    config = secure_config(secure_kafka, listener, topic, **settings)
    error, elapsed = await start_fails(config)
    assert isinstance(error, AuthenticationError)
    assert elapsed < FAST
    assert mechanism in str(error)
    assert "'alice'" in str(error)
    assert WRONG_PASSWORD not in _chain_text(error)


async def test_unknown_user_fails_fast(
    secure_kafka: SecureKafka, tls_material: certs.TLSMaterial
) -> None:
    """A user the broker does not know is refused like a wrong password."""
    topic = await secure_topic(secure_kafka)
    settings = _sasl("SCRAM-SHA-256", user="alice", password="x")(tls_material)
    config = secure_config(
        secure_kafka, "SASL_SSL", topic, **{**settings, "sasl_username": "mallory"}
    )
    error, elapsed = await start_fails(config)
    assert isinstance(error, AuthenticationError)
    assert "'mallory'" in str(error)
    assert elapsed < FAST


async def test_missing_client_certificate_is_a_tls_error(
    secure_kafka: SecureKafka, tls_material: certs.TLSMaterial
) -> None:
    """A listener that requires a client certificate refuses a client without one, clearly."""
    topic = await secure_topic(secure_kafka)
    config = secure_config(secure_kafka, "MTLS", topic, tls_ca_file=str(tls_material.ca))
    error, elapsed = await start_fails(config)
    assert isinstance(error, TLSError)
    assert "tls_cert_file" in str(error)
    assert elapsed < FAST


async def test_plaintext_client_on_a_tls_listener_is_told_to_enable_tls(
    secure_kafka: SecureKafka,
) -> None:
    """TLS off against a TLS listener says so instead of timing out."""
    topic = await secure_topic(secure_kafka)
    config = secure_config(secure_kafka, "SSL", topic)
    error, elapsed = await start_fails(config)
    assert isinstance(error, TLSError)
    assert "tls_enabled" in str(error)
    assert elapsed < FAST


async def test_sasl_client_on_a_plain_listener_is_an_authentication_error(
    secure_kafka: SecureKafka,
) -> None:
    """SASL against a listener without SASL is refused at once and says why."""
    topic = await secure_topic(secure_kafka)
    config = secure_config(
        secure_kafka,
        "PLAINTEXT",
        topic,
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="bob",
        sasl_password=SASL_USERS["bob"],
    )
    error, elapsed = await start_fails(config)
    assert isinstance(error, AuthenticationError)
    assert "SASL listener" in str(error)
    assert elapsed < FAST


async def test_tls_client_on_a_plaintext_listener_stays_bounded(
    secure_kafka: SecureKafka, tls_material: certs.TLSMaterial
) -> None:
    """A broker that resets the TLS handshake looks like an outage: retried within the bound."""
    topic = await secure_topic(secure_kafka)
    config = secure_config(
        secure_kafka,
        "PLAINTEXT",
        topic,
        tls_ca_file=str(tls_material.ca),
        connect_attempts=2,
        connect_interval=0.1,
    )

    async def handler(message: Message) -> None:
        pass

    with pytest.raises(ServiceUnavailableError):
        await Consumer(config, {topic: handler}).run()
