"""PostgreSQL over TLS: every sslmode, client certificates, clear and fast refusals."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from kafka_retry import (
    AuthenticationError,
    Config,
    Consumer,
    DatabaseConfig,
    Message,
    SecurityError,
    TLSError,
)
from kafka_retry._clock import SystemClock
from kafka_retry._devstack.secure import SecurePostgres
from kafka_retry.retry._pg_connect import connect
from kafka_retry.retry._pg_table import PgRows
from kafka_retry.retry.base import Failure
from kafka_retry.retry.postgres import PostgresStore, apply_migrations, counts
from tests import certs

from .support import config_for, create_topics, eventually, fresh, produce

pytestmark = pytest.mark.integration

FAST = 5.0  # retrying 20 times, 1 s apart, would take 19 s
WRONG_PASSWORD = "definitely-wrong-9c1e"
OTHER_HOST = "127.0.0.2"  # the server listens here too; the certificate does not name it


def _database(server: SecurePostgres, **fields: Any) -> DatabaseConfig:
    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "database": server.database,
    }
    settings.update(fields)
    return DatabaseConfig(**settings)


async def _session(database: DatabaseConfig) -> tuple[bool, str]:
    """Whether the connection is encrypted, and who the server says we are."""
    conn = await connect(database)
    try:
        row = await conn.fetchrow(
            "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
    finally:
        await conn.close()
    assert row is not None
    return row["ssl"], row["current_user"]


async def _refused(database: DatabaseConfig) -> tuple[SecurityError, float]:
    started = time.monotonic()
    with pytest.raises(SecurityError) as caught:
        await connect(database, attempts=20, interval=1.0)
    return caught.value, time.monotonic() - started


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_verify_full_connects_to_a_name_the_certificate_lists(
    secure_postgres: SecurePostgres, tls_material: certs.TLSMaterial, host: str
) -> None:
    """verify-full with the right CA connects by IP address or DNS name, encrypted."""
    database = _database(
        secure_postgres, host=host, sslmode="verify-full", sslrootcert=str(tls_material.ca)
    )
    assert await _session(database) == (True, secure_postgres.user)


async def test_verify_full_refuses_a_host_the_certificate_does_not_name(
    secure_postgres: SecurePostgres, tls_material: certs.TLSMaterial
) -> None:
    """verify-full checks the host name; verify-ca, on the same address, does not."""
    full = _database(
        secure_postgres, host=OTHER_HOST, sslmode="verify-full", sslrootcert=str(tls_material.ca)
    )
    error, elapsed = await _refused(full)
    assert isinstance(error, TLSError)
    assert "does not name 127.0.0.2" in str(error)
    assert elapsed < FAST
    chain_only = _database(
        secure_postgres, host=OTHER_HOST, sslmode="verify-ca", sslrootcert=str(tls_material.ca)
    )
    assert await _session(chain_only) == (True, secure_postgres.user)


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full", "require"])
async def test_wrong_ca_is_a_tls_error_at_once(
    secure_postgres: SecurePostgres, tls_material: certs.TLSMaterial, mode: str
) -> None:
    """An untrusted server certificate is refused at once (require + sslrootcert = verify-ca)."""
    database = _database(secure_postgres, sslmode=mode, sslrootcert=str(tls_material.wrong_ca))
    error, elapsed = await _refused(database)
    assert isinstance(error, TLSError)
    assert "sslrootcert" in str(error)
    assert f"{secure_postgres.host}:{secure_postgres.port}" in str(error)
    assert elapsed < FAST


@pytest.mark.parametrize("mode", ["require", "prefer"])
async def test_modes_without_verification_still_encrypt(
    secure_postgres: SecurePostgres, mode: str
) -> None:
    """require and prefer encrypt without checking the certificate, as in libpq."""
    assert await _session(_database(secure_postgres, sslmode=mode)) == (True, secure_postgres.user)


@pytest.mark.parametrize("mode", [None, "disable"])
async def test_plain_tcp_is_refused_with_a_hint_to_set_sslmode(
    secure_postgres: SecurePostgres, mode: str | None
) -> None:
    """A server that only takes TLS refuses plain TCP; the error says to set sslmode."""
    error, elapsed = await _refused(_database(secure_postgres, sslmode=mode))
    assert isinstance(error, AuthenticationError)
    assert "set sslmode" in str(error)
    assert elapsed < FAST


async def test_wrong_password_is_refused_at_once_and_never_shown(
    secure_postgres: SecurePostgres, tls_material: certs.TLSMaterial
) -> None:
    """A wrong password is an AuthenticationError without the password in it or its causes."""
    database = _database(
        secure_postgres,
        password=WRONG_PASSWORD,
        sslmode="verify-full",
        sslrootcert=str(tls_material.ca),
    )
    error, elapsed = await _refused(database)
    assert isinstance(error, AuthenticationError)
    assert elapsed < FAST
    assert repr(secure_postgres.user) in str(error)
    seen: list[str] = []
    current: BaseException | None = error
    while current is not None:
        seen += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    assert all(WRONG_PASSWORD not in text for text in seen)
    assert WRONG_PASSWORD not in repr(database)


async def test_client_certificate_logs_in_without_a_password(
    secure_postgres: SecurePostgres, tls_material: certs.TLSMaterial
) -> None:
    """The role named like the certificate's CN logs in with the certificate (encrypted key)."""
    database = _database(
        secure_postgres,
        user=tls_material.client_name,
        password=None,
        sslmode="verify-full",
        sslrootcert=str(tls_material.ca),
        sslcert=str(tls_material.client_cert),
        sslkey=str(tls_material.client_key_encrypted),
        sslpassword=certs.CLIENT_KEY_PASSWORD,
    )
    assert await _session(database) == (True, tls_material.client_name)


async def test_own_context_is_what_asyncpg_connects_with(
    secure_postgres: SecurePostgres, tls_material: certs.TLSMaterial
) -> None:
    """database.tls_context with the CA and a client certificate: the certificate logs in."""
    context = ssl.create_default_context(cafile=tls_material.ca)
    context.load_cert_chain(tls_material.client_cert, tls_material.client_key)
    database = _database(
        secure_postgres, user=tls_material.client_name, password=None, tls_context=context
    )
    assert await _session(database) == (True, tls_material.client_name)


async def test_own_context_with_the_wrong_ca_is_a_tls_error(
    secure_postgres: SecurePostgres, tls_material: certs.TLSMaterial
) -> None:
    """A context that does not trust the server's CA is refused, and the hint names it."""
    context = ssl.create_default_context(cafile=tls_material.wrong_ca)
    error, _elapsed = await _refused(_database(secure_postgres, tls_context=context))
    assert isinstance(error, TLSError)
    assert "not trusted" in str(error)
    assert "database.tls_context" in str(error)


async def test_missing_client_certificate_is_refused_clearly(
    secure_postgres: SecurePostgres, tls_material: certs.TLSMaterial
) -> None:
    """Certificate authentication without a certificate points at sslcert/sslkey."""
    database = _database(
        secure_postgres,
        user=tls_material.client_name,
        password=None,
        sslmode="verify-full",
        sslrootcert=str(tls_material.ca),
    )
    error, elapsed = await _refused(database)
    assert isinstance(error, AuthenticationError)
    assert "sslcert" in str(error)
    assert elapsed < FAST


async def test_settings_from_the_environment_with_secret_files(
    secure_postgres: SecurePostgres,
    tls_material: certs.TLSMaterial,
    tmp_path: Path,
    db_schema_secure: str,
) -> None:
    """DATABASE_* variables with *_FILE secrets reach a verify-full server and migrate it."""
    password_file = tmp_path / "db-password"
    password_file.write_text(secure_postgres.password + "\n")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "KAFKA_GROUP": "g",
        "KAFKA_TOPICS": "t",
        "KAFKA_RETRY_BACKEND": "postgres",
        "DATABASE_HOST": "localhost",
        "DATABASE_PORT": str(secure_postgres.port),
        "DATABASE_USER": secure_postgres.user,
        "DATABASE_PASSWORD_FILE": str(password_file),
        "DATABASE_NAME": secure_postgres.database,
        "DATABASE_SCHEMA": db_schema_secure,
        "DATABASE_SSLMODE": "verify-full",
        "DATABASE_SSLROOTCERT": str(tls_material.ca),
    }
    config = Config.from_env(env)
    assert config.database is not None
    assert secure_postgres.password not in repr(config)
    assert "0001_create_table" in await apply_migrations(config.database)
    assert await _session(config.database) == (True, secure_postgres.user)


@pytest.fixture
async def db_schema_secure(
    secure_postgres: SecurePostgres, tls_material: certs.TLSMaterial
) -> AsyncIterator[str]:
    """A fresh schema on the TLS-only server, dropped afterwards."""
    name = f"sec_{fresh('s').split('-')[1]}"
    database = _database(secure_postgres, sslmode="verify-full", sslrootcert=str(tls_material.ca))
    conn = await connect(database)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        yield name
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


async def test_postgres_backend_retries_over_verify_full(
    kafka_service: Any,
    secure_postgres: SecurePostgres,
    tls_material: certs.TLSMaterial,
    db_schema_secure: str,
) -> None:
    """The postgres retry backend runs end to end against a verify-full, TLS-only server."""
    topic = fresh("pgtls")
    await create_topics(kafka_service.bootstrap_servers, topic)
    await produce(kafka_service.bootstrap_servers, topic, [(b"k", b"v", [])])
    database = _database(
        secure_postgres,
        sslmode="verify-full",
        sslrootcert=str(tls_material.ca),
        schema=db_schema_secure,
    )
    config = config_for(
        kafka_service,
        topics=[topic],
        retry_intervals=[0.5],
        retry_backend="postgres",
        database=database,
    )
    attempts: list[int] = []

    async def handler(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise RuntimeError("first try fails")

    async with Consumer(config, {topic: handler}):
        await eventually(lambda: attempts == [1, 2])
    conn = await connect(database)
    try:
        rows = await counts(conn, database, config.group)
    finally:
        await conn.close()
    assert (rows.total_pending, rows.dead_lettered) == (0, 0)


HOSTILE = "x'); DROP TABLE pg_class; --\"; DELETE FROM \"User\" WHERE '1'='1"


async def test_hostile_values_are_stored_as_data(database_url: str, db_schema: str) -> None:
    """Values full of SQL are stored verbatim as parameters; a keyword table name is quoted."""
    database = DatabaseConfig.from_url(database_url, schema=db_schema, table="User")
    assert "0001_create_table" in await apply_migrations(database)
    config = Config(
        bootstrap_servers="k:9092",
        group=HOSTILE,
        topics=["t"],
        retry_intervals=[60],
        retry_backend="postgres",
        database=database,
    )
    message = Message(
        topic="t",
        partition=0,
        offset=1,
        key=HOSTILE.encode(),
        value=b"v",
        headers=((HOSTILE, HOSTILE.encode()),),
        timestamp=1,
        main_topic=HOSTILE,
    )
    failure = Failure(message, HOSTILE, HOSTILE, int(time.time() * 1000), HOSTILE, final=False)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await PostgresStore(PgRows(pool, database), config, SystemClock()).schedule(failure)
        rows = await counts(pool, database, HOSTILE)
        stored = await pool.fetchrow(
            f"SELECT consumer_group, main_topic, last_error, last_error_type, header_names"
            f' FROM "{db_schema}"."User"'
        )
    finally:
        await pool.close()
    assert rows.pending == {1: 1}
    assert stored is not None
    assert [stored[c] for c in ("consumer_group", "main_topic", "last_error")] == [HOSTILE] * 3
    assert stored["header_names"] == [HOSTILE.encode()]
