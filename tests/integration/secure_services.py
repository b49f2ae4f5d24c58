"""Session fixtures: a test PKI, and Kafka and PostgreSQL instances that demand TLS.

They are separate from the shared services: each runs from its own temporary
directory on free ports and is stopped when the session ends. Import the
fixtures into a test module to use them. The helpers at the end make configs
and topics for the secured broker.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kafka_retry import Config, Consumer, Message, SecurityError
from kafka_retry._devstack import kafka, secure
from kafka_retry._devstack.proc import StartupError
from tests import certs

from .support import create_topics, fresh

#: Users that may log in with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512.
SASL_USERS = {"alice": "alice4sasl", "bob": "bob4sasl"}
#: The password of the TLS-only PostgreSQL's superuser.
POSTGRES_PASSWORD = "pg4tls-3d9b"


def apache_kafka_unavailable() -> str | None:
    """Why no Apache Kafka can be started here, or None if it can."""
    if os.environ.get("KAFKA_RETRY_TEST_BROKER", "").strip().lower() == "tansu":
        return "the Tansu run covers the shared broker only"
    if shutil.which("java") is None:
        return "Apache Kafka needs java"
    version = os.environ.get("KAFKA_RETRY_KAFKA_VERSION", kafka.DEFAULT_VERSION)
    cached = (kafka.cache_root(os.environ) / f"kafka-{version}" / "libs").is_dir()
    if not cached and shutil.which("mvn") is None:
        return "Apache Kafka needs mvn or cached jars"
    return None


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> certs.TLSMaterial:
    """A fresh CA, server and client certificates, and an untrusted CA."""
    return certs.generate(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def legacy_tls_material(tmp_path_factory: pytest.TempPathFactory) -> certs.TLSMaterial:
    """A PKI without key identifiers, like a hand-made CA: the broker's LEGACY listener."""
    return certs.generate(tmp_path_factory.mktemp("legacy-pki"), key_identifiers=False)


def _server_tls(material: certs.TLSMaterial) -> secure.ServerTLS:
    return secure.ServerTLS(ca=material.ca, cert=material.server_cert, key=material.server_key)


@pytest.fixture(scope="session")
def secure_kafka(
    tls_material: certs.TLSMaterial,
    legacy_tls_material: certs.TLSMaterial,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[secure.SecureKafka]:
    """A broker with SSL, MTLS, SASL_SSL, SASL_PLAINTEXT and LEGACY listeners (and PLAINTEXT)."""
    reason = apache_kafka_unavailable()
    if reason:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("secure-kafka")
    broker = secure.start_secure_kafka(
        directory,
        _server_tls(tls_material),
        SASL_USERS,
        env=os.environ,
        legacy_tls=_server_tls(legacy_tls_material),
    )
    try:
        yield broker
    finally:
        secure.stop_secure(broker)


@pytest.fixture(scope="session")
def secure_postgres(
    tls_material: certs.TLSMaterial, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[secure.SecurePostgres]:
    """A PostgreSQL that takes TLS connections only; the client certificate's CN may log in."""
    # When the server's user cannot reach this directory (we are root, it is
    # private), the cluster lives in a scratch directory that stop_secure removes.
    directory = tmp_path_factory.mktemp("secure-postgres")
    try:
        server = secure.start_secure_postgres(
            directory,
            _server_tls(tls_material),
            cert_user=tls_material.client_name,
            password=POSTGRES_PASSWORD,
            env=os.environ,
        )
    except StartupError as exc:
        pytest.skip(f"no PostgreSQL to start: {exc}")
    try:
        yield server
    finally:
        secure.stop_secure(server)


def secure_config(broker: secure.SecureKafka, listener: str, topic: str, **fields: Any) -> Config:
    """A config for ``topic`` on one of ``broker``'s listeners, quick to rebalance and stop."""
    fields.setdefault("group", fresh("g"))
    fields.setdefault("commit_interval", 0.2)
    fields.setdefault("session_timeout_ms", 6000)
    fields.setdefault("rebalance_timeout_ms", 4000)
    fields.setdefault("drain_timeout", 2.0)
    return Config(bootstrap_servers=broker.listeners[listener], topics=[topic], **fields)


async def secure_topic(broker: secure.SecureKafka) -> str:
    """A fresh topic, created over the plaintext listener."""
    topic = fresh("sec")
    await create_topics(broker.listeners["PLAINTEXT"], topic)
    return topic


async def start_fails(config: Config) -> tuple[BaseException, float]:
    """The SecurityError a consumer with ``config`` fails to start with, and how long it took."""

    async def handler(message: Message) -> None:
        pass

    consumer = Consumer(config, {topic: handler for topic in config.topics})
    started = time.monotonic()
    with pytest.raises(SecurityError) as caught:
        await consumer.run()
    return caught.value, time.monotonic() - started
