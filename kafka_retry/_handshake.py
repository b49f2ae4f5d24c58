"""Telling a Kafka connection that can never work from one worth retrying.

aiokafka's bootstrap logs why each address failed and then raises a bare
"Unable to bootstrap"; the reason is lost. When a start fails that way,
:func:`diagnose` connects once more the way the clients do, and
:func:`classify` turns a TLS or SASL refusal into a :class:`~kafka_retry.TLSError`
or :class:`~kafka_retry.AuthenticationError` that names the address and the
setting to check. Everything else (refused, reset, timed out) stays transient.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator

from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from kafka_retry._strict_tls import strict_hint, strict_only
from kafka_retry.config import Config
from kafka_retry.errors import AuthenticationError, SecurityError, TLSError

__all__ = ["TRANSIENT_SSL", "classify", "diagnose"]

# One diagnostic connection: enough for a TLS + SASL exchange on a live broker.
_PROBE_TIMEOUT = 5.0
_CLOSE_WAIT = 1.0
_TLS_RECORD_TYPES = (0x15, 0x16)  # alert, handshake
#: TLS errors of a connection cut short (say, by a restarting broker): retried.
TRANSIENT_SSL = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def _addresses(config: Config) -> Iterator[tuple[str, int]]:
    for server in config.bootstrap_servers:  # validated as host:port
        host, _, port = server.rpartition(":")
        yield host.strip("[]"), int(port)


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _speaks_tls(error: asyncio.IncompleteReadError) -> bool:
    # A TLS record read as a Kafka size prefix: type 0x15/0x16, then version 3.x.
    expected = error.expected or 0
    return expected >> 24 in _TLS_RECORD_TYPES and (expected >> 16) & 0xFF == 3


def _scrub(text: str, config: Config) -> str:
    for secret in (config.sasl_password, config.tls_key_password):
        if secret:
            text = text.replace(secret, "***")
    return text


def _verify_hint(error: ssl.SSLCertVerificationError, config: Config) -> str:
    if strict_only(error):
        return strict_hint("tls_context")
    if "mismatch" in (error.verify_message or str(error)).lower():
        return "the certificate does not name this host; connect by a name it lists"
    if config.tls_context is not None:
        return "check the CAs loaded into tls_context"
    where = config.tls_ca_file or "the system's CA store"
    return f"check tls_ca_file (the trusted CAs come from {where})"


def _tls_error(error: ssl.SSLError, address: str, config: Config) -> TLSError:
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or error.reason or str(error)
        hint = _verify_hint(error, config)
        return TLSError(
            f"Kafka at {address}: TLS certificate not trusted ({reason}); {hint}",
            address=address,
        )
    reason = error.reason or str(error)
    if "CERTIFICATE" in reason.upper():
        hint = (
            "the broker refused the client certificate (tls_cert_file): is it signed by a CA "
            "the broker trusts?"
            if config.tls_cert_file
            else "the broker may require a client certificate (tls_cert_file, tls_key_file)"
        )
    elif "WRONG_VERSION" in reason.upper() or "RECORD" in reason.upper():
        hint = "does this listener speak TLS?"
    else:
        hint = "check the TLS settings of the client and the listener"
    return TLSError(f"Kafka at {address}: TLS handshake failed ({reason}); {hint}", address=address)


def _sasl_error(error: KafkaError, address: str, config: Config) -> AuthenticationError:
    mechanism, user = config.sasl_mechanism, config.sasl_username
    if isinstance(error, UnsupportedSaslMechanismError):
        text = f"the listener does not offer SASL {mechanism} ({_scrub(str(error), config)})"
    elif isinstance(error, IllegalSaslStateError):
        text = "the listener refused the SASL handshake: is it a SASL listener?"
    else:
        detail = _scrub(str(error), config) or type(error).__name__
        text = f"SASL {mechanism} login as {user!r} refused ({detail}); check the credentials"
    return AuthenticationError(f"Kafka at {address}: {text}", address=address)


def classify(error: BaseException, address: str, config: Config) -> SecurityError | None:
    """The security error behind ``error`` (or its causes), or None if it may be transient."""
    for cause in _causes(error):
        if isinstance(cause, TRANSIENT_SSL):
            continue
        if isinstance(cause, ssl.SSLError):
            return _tls_error(cause, address, config)
        if isinstance(
            cause,
            SaslAuthenticationFailed
            | AuthenticationFailedError
            | UnsupportedSaslMechanismError
            | IllegalSaslStateError,
        ):
            return _sasl_error(cause, address, config)
        if isinstance(cause, asyncio.IncompleteReadError) and _speaks_tls(cause):
            return TLSError(
                f"Kafka at {address} speaks TLS, but TLS is off for this client: "
                "set tls_enabled (KAFKA_TLS_ENABLE=true)",
                address=address,
            )
    return None


async def diagnose(config: Config, security: dict[str, object]) -> SecurityError | None:
    """Connect to each bootstrap address as the clients do; return a security error found.

    Args:
        config: The consumer's settings.
        security: The clients' TLS/SASL keyword arguments.

    Returns:
        The first TLS or authentication error met, or None when every address
        either works or fails in a way that retrying may fix.
    """
    for host, port in _addresses(config):
        address = f"{host}:{port}"
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT):
                await _probe(host, port, config, security)
        except (OSError, KafkaError, TimeoutError, ValueError) as exc:
            found = classify(exc, address, config)
            if found is not None:
                return found
    return None


async def _probe(host: str, port: int, config: Config, security: dict[str, object]) -> None:
    conn = AIOKafkaConnection(
        host,
        port,
        client_id=f"{config.client_id}-probe",
        request_timeout_ms=round(_PROBE_TIMEOUT * 1000),
        **security,
    )
    try:
        await conn.connect()
    finally:
        # Wait until the socket is closed (a TLS close_notify included): one left
        # to the garbage collector, as the caller raises at once, would warn.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(conn.close()), _CLOSE_WAIT)
