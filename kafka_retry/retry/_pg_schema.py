"""Versioned migrations of the retry table, applied under an advisory lock.

The SQL files live in ``kafka_retry/retry/migrations`` as ``NNNN_description.sql``
and are applied in name order. They are templated (``${name}``) only with
quoted identifiers derived from validated settings: the qualified table and its
index names. Applied versions are recorded per table in
``<schema>.kafka_retry_migrations``, so applying is idempotent, and all pending
versions are applied in one transaction that holds a transaction-level advisory
lock of the schema, so instances starting together apply each version once.
"""

from __future__ import annotations

import hashlib
import logging
import re
import string
from importlib import resources
from typing import TypeAlias

import asyncpg
import asyncpg.pool
import attrs

from kafka_retry.config import DatabaseConfig
from kafka_retry.errors import ConfigError, ServiceUnavailableError, SetupError
from kafka_retry.retry._pg_connect import address

log = logging.getLogger("kafka_retry")

#: A plain or pooled connection.
Connection: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)

LEDGER_TABLE = "kafka_retry_migrations"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_FILE_NAME = re.compile(r"^(\d{4}_[a-z0-9_]+)\.sql$")
_MAX_IDENTIFIER = 63
# Waiting for another instance's migration longer than this means it is stuck.
_LOCK_TIMEOUT = "60s"
_CONNECTION_ERRORS = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
)


def quote(identifier: str, field: str = "database") -> str:
    """``identifier`` in double quotes, after checking it is a plain SQL identifier.

    Raises:
        ConfigError: It is not ``[A-Za-z_][A-Za-z0-9_]*`` of at most 63 characters.
    """
    if not isinstance(identifier, str) or not _IDENTIFIER.match(identifier):
        raise ConfigError(field, f"must be a plain SQL identifier, got {identifier!r}")
    return f'"{identifier}"'


def index_name(table: str, suffix: str) -> str:
    """``<table>_<suffix>``, shortened with a hash of the table name to fit 63 characters.

    PostgreSQL would silently truncate a longer name, and two long table names
    with a common prefix would then collide.
    """
    name = f"{table}_{suffix}"
    if len(name) <= _MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    keep = _MAX_IDENTIFIER - len(suffix) - len(digest) - 2
    return f"{table[:keep]}_{digest}_{suffix}"


def template_names(database: DatabaseConfig) -> dict[str, str]:
    """Everything a migration may be templated with: quoted identifiers only.

    Raises:
        ConfigError: The schema or table is not a plain identifier, or the
            table is named like the migrations ledger.
    """
    schema = quote(database.schema, "database.schema")
    table = quote(database.table, "database.table")
    if database.table == LEDGER_TABLE:
        raise ConfigError("database.table", f"{LEDGER_TABLE!r} is reserved for migrations")
    names = {"schema": schema, "table": f"{schema}.{table}"}
    for suffix in ("pending", "succeeded", "dead", "keys", "waiting"):
        names[f"ix_{suffix}"] = quote(index_name(database.table, suffix), "database.table")
    return names


def lock_key(schema: str) -> int:
    """The advisory lock key of migrations in ``schema``: a stable signed 64-bit number."""
    digest = hashlib.sha256(f"kafka_retry.migrations:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@attrs.frozen
class Migration:
    """One versioned SQL file.

    Attributes:
        version: The file name without ``.sql``, e.g. ``0001_create_table``.
        sql: The file's text, still templated.
    """

    version: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text, recorded to notice edited migrations."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def render(self, names: dict[str, str]) -> str:
        """The SQL with ``${name}`` placeholders filled in.

        Raises:
            KeyError: The file uses a name that is not provided.
        """
        return string.Template(self.sql).substitute(names)


def load_migrations() -> list[Migration]:
    """The migrations shipped in the package, in version order."""
    folder = resources.files("kafka_retry.retry").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(match.group(1), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda migration: migration.version)


async def migrate(conn: Connection, database: DatabaseConfig) -> list[str]:
    """Apply the migrations that ``database``'s table lacks; return their versions.

    Raises:
        ConfigError: The schema or table name is not a plain identifier.
        ServiceUnavailableError: The connection broke.
        SetupError: PostgreSQL refused a migration (permissions, a foreign
            table of the same name, ...); nothing of this run is kept.
    """
    names = template_names(database)
    version = "(ledger)"
    applied: list[str] = []
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(database.schema))
            done = await _prepare_ledger(conn, database, names["schema"])
            for migration in load_migrations():
                version = migration.version
                if _recorded(done, migration, database):
                    continue
                await conn.execute(migration.render(names))
                await conn.execute(
                    f"INSERT INTO {names['schema']}.{LEDGER_TABLE}"
                    " (table_name, version, checksum) VALUES ($1, $2, $3)",
                    database.table,
                    version,
                    migration.checksum,
                )
                applied.append(version)
    except _CONNECTION_ERRORS as exc:
        where = address(database)
        raise ServiceUnavailableError(
            f"PostgreSQL at {where} failed during migrations: {exc}", address=where
        ) from exc
    except asyncpg.PostgresError as exc:
        raise SetupError(f"migration {version} of {names['table']} failed: {exc}") from exc
    if applied:
        log.info("applied migrations %s to %s", ", ".join(applied), names["table"])
    return applied


async def _prepare_ledger(
    conn: Connection, database: DatabaseConfig, schema: str
) -> dict[str, str]:
    # Existence is checked first because CREATE ... IF NOT EXISTS still needs
    # the CREATE privilege, which a user of an existing schema may lack.
    if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", database.schema):
        await conn.execute(f"CREATE SCHEMA {schema}")
    ledger = f"{schema}.{LEDGER_TABLE}"
    if await conn.fetchval("SELECT to_regclass($1)", ledger) is None:
        await conn.execute(
            f"CREATE TABLE {ledger} ("
            " table_name text NOT NULL,"
            " version text NOT NULL,"
            " checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (table_name, version))"
        )
    rows = await conn.fetch(
        f"SELECT version, checksum FROM {ledger} WHERE table_name = $1", database.table
    )
    return {row["version"]: row["checksum"] for row in rows}


def _recorded(done: dict[str, str], migration: Migration, database: DatabaseConfig) -> bool:
    checksum = done.get(migration.version)
    if checksum is None:
        return False
    if checksum != migration.checksum:
        # Applied migrations are never re-run; an edited file is a packaging mistake.
        log.warning(
            "migration %s of %s.%s was applied from a different file (checksum differs)",
            migration.version,
            database.schema,
            database.table,
        )
    return True
