"""Connecting to PostgreSQL: addresses, TLS options, backoff (no database)."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from kafka_retry import ConfigError, DatabaseConfig
from kafka_retry.retry._pg_connect import Backoff, address, connect_kwargs, ssl_option

CA_FILE = ssl.get_default_verify_paths().cafile


def test_address_names_host_and_port_or_the_socket() -> None:
    """Errors name host:port, or the socket file for a Unix-socket directory."""
    assert address(DatabaseConfig(host="db.example", port=6432)) == "db.example:6432"
    socket_dir = DatabaseConfig(host="/run/postgresql", port=5433)
    assert address(socket_dir) == "/run/postgresql/.s.PGSQL.5433"


def test_password_is_passed_but_not_shown() -> None:
    """The password reaches asyncpg and stays out of the settings' repr."""
    database = DatabaseConfig(password="s3cret")
    assert connect_kwargs(database)["password"] == "s3cret"
    assert "s3cret" not in repr(database)


@pytest.mark.parametrize("mode", [None, "disable"])
def test_no_sslmode_means_plain_tcp(mode: str | None) -> None:
    """Without sslmode (or with disable) no TLS is attempted."""
    assert ssl_option(DatabaseConfig(sslmode=mode)) is False


@pytest.mark.parametrize("mode", ["allow", "prefer"])
def test_opportunistic_modes_are_left_to_asyncpg(mode: str) -> None:
    """allow and prefer fall back to plain TCP as libpq does, verifying nothing."""
    assert ssl_option(DatabaseConfig(sslmode=mode)) == mode


def test_require_encrypts_without_verifying() -> None:
    """require skips certificate and host name checks."""
    context = ssl_option(DatabaseConfig(sslmode="require"))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname


@pytest.mark.skipif(CA_FILE is None, reason="no system CA bundle")
def test_require_with_a_root_certificate_verifies_the_chain() -> None:
    """As in libpq, require with sslrootcert behaves like verify-ca."""
    context = ssl_option(DatabaseConfig(sslmode="require", sslrootcert=CA_FILE))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert not context.check_hostname


@pytest.mark.parametrize(("mode", "hostname"), [("verify-ca", False), ("verify-full", True)])
def test_verify_modes_check_the_chain_and_maybe_the_host(mode: str, hostname: bool) -> None:
    """verify-ca checks the chain; verify-full the host name too."""
    context = ssl_option(DatabaseConfig(sslmode=mode, sslrootcert=CA_FILE))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is hostname


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"sslrootcert": "/nonexistent/root.crt"}, "database.sslrootcert"),
        ({"sslcert": "/nonexistent/client.crt"}, "database.sslcert"),
        ({"sslkey": "/nonexistent/client.key"}, "database.sslkey"),
    ],
)
def test_unloadable_tls_files_raise_config_error(fields: dict[str, Any], field: str) -> None:
    """A certificate or key that cannot be loaded is a ConfigError naming the field."""
    with pytest.raises(ConfigError) as caught:
        ssl_option(DatabaseConfig(sslmode="verify-full", **fields))
    assert caught.value.field == field


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    """Delays double from the first one, stop at the cap, and restart after a reset."""
    backoff = Backoff(first=0.5, cap=3.0)
    assert [backoff.delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.delay() == 0.5
