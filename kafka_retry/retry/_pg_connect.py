"""Connecting to PostgreSQL (TLS options, the pool, bounded retries) and waiting between tries."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import asyncpg
import attrs

from kafka_retry._clock import Clock
from kafka_retry._strict_tls import strict_hint, strict_only
from kafka_retry.config import DatabaseConfig
from kafka_retry.errors import (
    AuthenticationError,
    ConfigError,
    SecurityError,
    ServiceUnavailableError,
    TLSError,
)

log = logging.getLogger("kafka_retry")

T = TypeVar("T")

#: Errors after which an operation is worth trying again: the connection broke,
#: the server is restarting or overloaded, a serialization conflict. Retrying a
#: statement that can never succeed (say, a dropped table) only logs until an
#: operator steps in, which beats losing the message. asyncpg raises
#: InternalClientError too when the server ends a session mid-operation.
TRANSIENT: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

#: TLS errors of a connection cut short (a restarting server): retried, not refused.
_CUT_SHORT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
# One TCP/TLS/auth handshake; without it a black-holed host hangs for a minute.
_CONNECT_TIMEOUT = 10.0
_POOL_CLOSE_TIMEOUT = 10.0


class Executor(Protocol):
    """What the query helpers need: an asyncpg pool, connection or pooled connection."""

    async def execute(self, query: str, *args: object) -> str: ...

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...


def address(database: DatabaseConfig) -> str:
    """``host:port`` (or the socket path) of ``database``, never its password."""
    if database.host.startswith("/"):
        return f"{database.host}/.s.PGSQL.{database.port}"
    return f"{database.host}:{database.port}"


def ssl_option(database: DatabaseConfig) -> ssl.SSLContext | str | bool:
    """The ``ssl`` argument for asyncpg, following libpq's ``sslmode`` meanings.

    No ``sslmode`` (or ``disable``) means plain TCP. ``allow`` and ``prefer`` use
    TLS only if the server offers it and verify nothing. ``require`` encrypts
    without verifying the server, unless ``sslrootcert`` is given, which makes it
    ``verify-ca`` as in libpq. ``verify-ca`` checks the chain against
    ``sslrootcert`` (or the system's CAs); ``verify-full`` checks the host name
    too. ``sslcert`` / ``sslkey`` present a client certificate from ``require`` up.
    The user's own ``tls_context`` is passed as it is, whatever ``sslmode`` says.

    Raises:
        ConfigError: A certificate or key file cannot be loaded; names the field.
    """
    if database.tls_context is not None:
        return database.tls_context
    mode = database.sslmode
    if mode is None or mode == "disable":
        return False
    if mode in ("allow", "prefer"):
        return mode
    verify = mode in ("verify-ca", "verify-full") or bool(database.sslrootcert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = mode == "verify-full"
    if verify:
        context.verify_mode = ssl.CERT_REQUIRED
        _load(context.load_verify_locations, "database.sslrootcert", database.sslrootcert)
        if not database.sslrootcert:
            context.load_default_certs()
    else:
        context.verify_mode = ssl.CERT_NONE
    if database.sslcert:
        _load_client_certificate(context, database)
    elif database.sslkey:
        raise ConfigError("database.sslkey", "a client key needs its certificate (sslcert)")
    return context


def _load_client_certificate(context: ssl.SSLContext, database: DatabaseConfig) -> None:
    key = database.sslkey or database.sslcert
    encrypted = _is_encrypted(key)
    if encrypted and not database.sslpassword:
        raise ConfigError("database.sslpassword", f"the key in {key} is encrypted: set it")

    def no_password() -> bytes:
        return b""  # keeps OpenSSL from prompting on the terminal

    password = database.sslpassword or no_password
    try:
        context.load_cert_chain(database.sslcert or "", database.sslkey, password)
    except (OSError, ssl.SSLError) as exc:
        if encrypted and isinstance(exc, ssl.SSLError):
            reason = f"cannot decrypt the key in {key} (wrong sslpassword?)"
            raise ConfigError("database.sslpassword", reason) from exc
        field = "database.sslkey" if database.sslkey and not _readable(key) else "database.sslcert"
        raise ConfigError(field, f"cannot load {database.sslcert!r} / {key!r}: {exc}") from exc


def _readable(path: str | None) -> bool:
    return bool(path) and os.access(str(path), os.R_OK)


def _is_encrypted(path: str | None) -> bool:
    try:
        with open(str(path), "rb") as handle:
            return b"ENCRYPTED" in handle.read(64 * 1024)
    except OSError:
        return False


def _load(loader: Callable[[str], Any], field: str, path: str | None) -> None:
    if not path:
        return
    try:
        loader(path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(field, f"cannot load {path!r}: {exc}") from None


def connect_kwargs(database: DatabaseConfig) -> dict[str, Any]:
    """Keyword arguments for ``asyncpg.connect`` / ``asyncpg.create_pool``."""
    return {
        "host": database.host,
        "port": database.port,
        "user": database.user,
        "password": database.password,
        "database": database.database,
        "ssl": ssl_option(database),
        "timeout": _CONNECT_TIMEOUT,
    }


async def within_bound(
    database: DatabaseConfig,
    attempts: int,
    interval: float,
    start: Callable[[], Awaitable[T]],
) -> T:
    """Call ``start`` until it succeeds, at most ``attempts`` times, ``interval`` s apart.

    A TLS or authentication failure is raised at once: retrying cannot fix it.

    Raises:
        TLSError: The TLS handshake failed or the server does not offer TLS.
        AuthenticationError: The server refused the password, the client
            certificate, or (``pg_hba.conf``) the connection itself.
        ServiceUnavailableError: Every attempt failed; names ``host:port``.
    """
    where = address(database)
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        try:
            return await start()
        except TRANSIENT as exc:
            refused = security_error(exc, database)
            if refused is not None:
                raise refused from exc
            last = exc
            log.warning(
                "PostgreSQL at %s not reachable (attempt %d of %d): %s",
                where,
                attempt,
                attempts,
                _describe(exc),
            )
            if attempt < attempts:
                await asyncio.sleep(interval)
    raise ServiceUnavailableError(
        f"PostgreSQL at {where} unreachable after {attempts} attempts: {_describe(last)}",
        address=where,
    ) from last


def security_error(error: BaseException, database: DatabaseConfig) -> SecurityError | None:
    """The :class:`~kafka_retry.SecurityError` that ``error`` means, or None if transient."""
    where = address(database)
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or error.reason or str(error)
        if strict_only(error):
            hint = strict_hint("database.tls_context")
        elif "mismatch" in reason.lower():
            hint = f"the certificate does not name {database.host}; connect by a name it lists"
        elif database.tls_context is not None:
            hint = "check the CAs loaded into database.tls_context"
        else:
            hint = f"check sslrootcert ({database.sslrootcert or 'unset: the system CAs'})"
        return TLSError(
            f"PostgreSQL at {where}: TLS certificate not trusted ({reason}); {hint}",
            address=where,
        )
    if isinstance(error, ssl.SSLError) and not isinstance(error, _CUT_SHORT):
        return TLSError(
            f"PostgreSQL at {where}: TLS handshake failed ({error.reason or error})", address=where
        )
    if isinstance(error, ConnectionError) and "SSL upgrade" in str(error):
        return TLSError(
            f"PostgreSQL at {where} does not offer TLS, but sslmode={database.sslmode} needs it",
            address=where,
        )
    if isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):
        return AuthenticationError(_refusal(error, database), address=where)
    return None


def _refusal(error: asyncpg.InvalidAuthorizationSpecificationError, db: DatabaseConfig) -> str:
    text = f"PostgreSQL at {address(db)} refused user {db.user!r}: {error}"
    if isinstance(error, asyncpg.InvalidPasswordError):
        return f"{text}; check the password (DATABASE_PASSWORD or DATABASE_PASSWORD_FILE)"
    if "no encryption" in str(error):
        return f"{text}; the server wants TLS: set sslmode (require, verify-ca or verify-full)"
    if "certificate" in str(error):
        return f"{text}; check sslcert and sslkey"
    return text


def _describe(error: BaseException | None) -> str:
    # asyncpg messages never contain the password; the type helps when they are empty.
    if error is None:
        return "no attempt made"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def open_pool(
    database: DatabaseConfig,
    *,
    attempts: int,
    interval: float,
    max_size: int,
) -> asyncpg.Pool[asyncpg.Record]:
    """A connection pool to ``database``, its first connection made within the bound.

    Raises:
        ConfigError: TLS material cannot be loaded.
        ServiceUnavailableError: PostgreSQL stayed unreachable.
    """
    kwargs = connect_kwargs(database)

    async def start() -> asyncpg.Pool[asyncpg.Record]:
        # min_size=0: with a floor, asyncpg reconnects in the background during an
        # outage and logs a traceback per try; our own retries already log it.
        pool = await asyncpg.create_pool(min_size=0, max_size=max_size, **kwargs)
        try:
            async with pool.acquire():
                pass  # proves the database answers
        except BaseException:
            pool.terminate()
            raise
        return pool

    return await within_bound(database, attempts, interval, start)


async def close_pool(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    """Close gracefully; terminate the connections that are not released in time."""
    try:
        await asyncio.wait_for(pool.close(), _POOL_CLOSE_TIMEOUT)
    except TimeoutError:
        log.warning("PostgreSQL pool did not close in %.0fs; terminating it", _POOL_CLOSE_TIMEOUT)
        pool.terminate()


async def connect(
    database: DatabaseConfig, *, attempts: int = 1, interval: float = 1.0
) -> asyncpg.Connection[asyncpg.Record]:
    """One connection to ``database``, made within the bound.

    Raises:
        ConfigError: TLS material cannot be loaded.
        ServiceUnavailableError: PostgreSQL stayed unreachable.
    """
    kwargs = connect_kwargs(database)

    async def start() -> asyncpg.Connection[asyncpg.Record]:
        return await asyncpg.connect(**kwargs)

    return await within_bound(database, attempts, interval, start)


@attrs.define
class Backoff:
    """Capped exponential delays for retrying a database operation."""

    first: float = 0.2
    cap: float = 10.0
    _next: float = attrs.field(default=0.0, init=False)

    def delay(self) -> float:
        """The next delay: ``first``, doubled each time, at most ``cap``."""
        self._next = self.first if self._next == 0.0 else min(self._next * 2, self.cap)
        return self._next

    def reset(self) -> None:
        """Start again from ``first`` (after a success)."""
        self._next = 0.0


class Sleeper:
    """Sleeps on the clock; :meth:`stop` ends the current and every later nap at once."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._wake = asyncio.Event()
        self.stopping = False

    def stop(self) -> None:
        """End the current nap and make every later one return at once."""
        self.stopping = True
        self._wake.set()

    def poke(self) -> None:
        """End the current nap, or the next one if none is running: something changed."""
        self._wake.set()

    async def nap(self, seconds: float | None) -> None:
        """Sleep ``seconds`` on the clock (None: until poked), or less if poked or stopped."""
        if self.stopping:
            return
        timer = None if seconds is None else self._clock.call_later(seconds, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if not self.stopping:
                self._wake.clear()
