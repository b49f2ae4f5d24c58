"""Kafka and PostgreSQL with TLS and authentication, for the security tests.

These instances are separate from the shared devstack services: each lives in a
directory the caller owns, listens on free loopback ports, and is stopped by
the caller. Certificates are the caller's PEM files (nothing here generates
keys). Kafka gets one listener per security setup::

    PLAINTEXT       no TLS, no SASL (inter-broker, and for setting up topics)
    SSL             TLS, server certificate only
    MTLS            TLS, a client certificate signed by the CA is required
    SASL_SSL        TLS + SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512
    SASL_PLAINTEXT  SASL without TLS
    LEGACY          TLS with a second server certificate, when one is given
                    (say, from a CA without key identifiers)

SCRAM users are created when the storage is formatted (``kafka-storage format
--add-scram``); PLAIN users are listed in the listener's JAAS configuration.
PostgreSQL accepts TCP connections only over TLS (``hostssl``), password users
by SCRAM, and the user named like the client certificate's CN by ``cert``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from kafka_retry._devstack import kafka, postgres, proc, wire

__all__ = [
    "SCRAM_MECHANISMS",
    "SecureKafka",
    "SecurePostgres",
    "ServerTLS",
    "start_secure_kafka",
    "start_secure_postgres",
    "stop_secure",
]

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_LISTENERS = ("PLAINTEXT", "SSL", "MTLS", "SASL_SSL", "SASL_PLAINTEXT")
_LEGACY = "LEGACY"
_PROTOCOLS = {"MTLS": "SSL", "LEGACY": "SSL", "CONTROLLER": "PLAINTEXT"}
_PLAIN = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


@attrs.frozen
class ServerTLS:
    """A server's TLS files, all PEM.

    Attributes:
        ca: The CA certificate that signs the server and the trusted client certificates.
        cert: The server certificate chain.
        key: The server's unencrypted PKCS#8 private key.
    """

    ca: Path
    cert: Path
    key: Path


@attrs.frozen
class SecureKafka:
    """A running broker with secured listeners.

    Attributes:
        listeners: ``host:port`` per listener name (see the module docstring).
        pid: The broker's process id.
        marker: Text of its command line that tells it from other processes.
        log: Where it logs.
    """

    listeners: Mapping[str, str]
    pid: int
    marker: str
    log: Path


@attrs.frozen
class SecurePostgres:
    """A running PostgreSQL that takes TLS connections only.

    Attributes:
        host: The address it listens on (``127.0.0.1``; also ``127.0.0.2``, an
            address the server certificate does not name).
        port: Its port.
        user: A superuser that logs in with :attr:`password`.
        password: That user's password.
        database: A database to connect to.
        pid: The postmaster's process id.
        data_dir: The cluster's data directory (also the marker in its command line).
        log: Where it logs.
    """

    host: str
    port: int
    user: str
    password: str = attrs.field(repr=False)
    database: str
    pid: int
    data_dir: Path
    log: Path


def kafka_properties(
    base: str,
    ports: Mapping[str, int],
    keystore: Path,
    truststore: Path,
    plain_users: Mapping[str, str],
    *,
    legacy: tuple[Path, Path] | None = None,
) -> str:
    """``base`` server.properties with the secured listeners appended (later keys win).

    ``legacy`` (keystore, truststore) adds the LEGACY listener with those files.
    """
    names = (*_LISTENERS, _LEGACY) if legacy else _LISTENERS
    listeners = ",".join(f"{name}://127.0.0.1:{ports[name]}" for name in names)
    protocols = {name: _PROTOCOLS.get(name, name) for name in (*names, "CONTROLLER")}
    plain = " ".join(f'user_{name}="{secret}"' for name, secret in plain_users.items())
    settings = {
        "listeners": f"{listeners},CONTROLLER://127.0.0.1:{ports['CONTROLLER']}",
        "advertised.listeners": listeners,
        "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(truststore),
        "ssl.client.auth": "none",
        "listener.name.mtls.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": ",".join(("PLAIN", *SCRAM_MECHANISMS)),
        # A refused login answers at once; the default 100 ms would only slow the tests.
        "connection.failed.authentication.delay.ms": "0",
    }
    if legacy:
        for store, path in zip(("keystore", "truststore"), legacy, strict=True):
            settings[f"listener.name.legacy.ssl.{store}.type"] = "PEM"
            settings[f"listener.name.legacy.ssl.{store}.location"] = str(path)
    for listener in ("sasl_ssl", "sasl_plaintext"):
        prefix = f"listener.name.{listener}"
        settings[f"{prefix}.plain.sasl.jaas.config"] = (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain};"
        )
        for mechanism in SCRAM_MECHANISMS:
            settings[f"{prefix}.{mechanism.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
    return base + "".join(f"{key}={value}\n" for key, value in settings.items())


def _keystore(tls: ServerTLS, service_dir: Path, name: str = "server") -> Path:
    # Kafka's PEM keystore is one file: the private key, then the certificate chain.
    path = service_dir / f"{name}-keystore.pem"
    path.write_bytes(tls.key.read_bytes() + tls.cert.read_bytes())
    path.chmod(0o600)
    return path


def _scram_arguments(users: Mapping[str, str]) -> list[str]:
    arguments = []
    for name, secret in users.items():
        for mechanism in SCRAM_MECHANISMS:
            arguments += ["--add-scram", f"{mechanism}=[name={name},password={secret}]"]
    return arguments


def start_secure_kafka(
    service_dir: Path,
    tls: ServerTLS,
    users: Mapping[str, str],
    *,
    env: Mapping[str, str],
    legacy_tls: ServerTLS | None = None,
    timeout: float = 120.0,
) -> SecureKafka:
    """Format fresh storage with SCRAM ``users`` and start a broker with secured listeners.

    Every user of ``users`` (name -> password) may log in with PLAIN and both
    SCRAM mechanisms. Names and passwords must be plain letters and digits.
    ``legacy_tls`` adds the LEGACY listener, which presents that certificate.

    Raises:
        StartupError: The jars, the storage format or the broker failed; names the log.
    """
    service_dir.mkdir(parents=True, exist_ok=True)
    log = service_dir / "kafka.log"
    version = env.get("KAFKA_RETRY_KAFKA_VERSION", kafka.DEFAULT_VERSION)
    libs = kafka.ensure_libs(version, kafka.cache_root(env), service_dir / "maven.log")
    names = (*_LISTENERS, _LEGACY) if legacy_tls else _LISTENERS
    ports = {name: proc.pick_port() for name in (*names, "CONTROLLER")}
    properties = kafka.write_config(
        service_dir, port=ports["PLAINTEXT"], controller_port=ports["CONTROLLER"]
    )
    keystore = _keystore(tls, service_dir)
    legacy = (_keystore(legacy_tls, service_dir, "legacy"), legacy_tls.ca) if legacy_tls else None
    base = properties.read_text()
    text = kafka_properties(base, ports, keystore, tls.ca, users, legacy=legacy)
    properties.write_text(text)
    properties.chmod(0o600)
    shutil.rmtree(service_dir / "data", ignore_errors=True)
    format_command = kafka.java_command(
        service_dir,
        libs,
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        uuid.uuid4().hex[:22],
        "--config",
        str(properties),
        *_scram_arguments(users),
    )
    postgres.run_logged(format_command, log, "formatting the secure Kafka storage")
    command = kafka.java_command(service_dir, libs, "kafka.Kafka", str(properties))
    process = proc.spawn(command, log_path=log, cwd=service_dir)
    _wait(process, lambda: _answers(ports["PLAINTEXT"]), "secure Kafka", timeout, log)
    listeners = {name: f"127.0.0.1:{ports[name]}" for name in names}
    return SecureKafka(listeners, process.pid, str(properties), log)


def _answers(port: int) -> bool:
    try:
        wire.probe("127.0.0.1", port, timeout=2.0)
    except (OSError, wire.ProbeError):
        return False
    return True


def _wait(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    log: Path,
) -> None:
    try:
        proc.wait_ready(process, ready, what=what, timeout=timeout, log_path=log)
    except BaseException:
        proc.kill(process)
        raise


def _pg_hba(cert_user: str) -> str:
    # TCP only over TLS; no rule matches plain TCP, so it is refused with a clear error.
    return f"hostssl all {cert_user} 127.0.0.0/8 cert\nhostssl all all 127.0.0.0/8 scram-sha-256\n"


def _install_tls(data: Path, tls: ServerTLS, who: postgres.Owner | None) -> dict[str, str]:
    # PostgreSQL refuses a key readable by others or owned by someone else.
    names = {"ssl_cert_file": "server.crt", "ssl_key_file": "server.key", "ssl_ca_file": "ca.crt"}
    sources = {"ssl_cert_file": tls.cert, "ssl_key_file": tls.key, "ssl_ca_file": tls.ca}
    settings = {}
    for setting, name in names.items():
        target = data / name
        shutil.copyfile(sources[setting], target)
        target.chmod(0o600)
        if who is not None:
            shutil.chown(target, *who)
        settings[setting] = str(target)
    return settings


def _create_roles(
    binaries: postgres.Binaries,
    data: Path,
    who: postgres.Owner | None,
    log: Path,
    *,
    cert_user: str,
    password: str,
) -> None:
    for text in (cert_user, password):
        if not _PLAIN.match(text):
            raise proc.StartupError("role names and passwords here are letters, digits, - and _")
    # Single-user mode, like the database itself: no server listens yet.
    single = [binaries.tool("postgres"), "--single", "-D", str(data), postgres.DATABASE]
    statements = (
        f'CREATE ROLE "{cert_user}" LOGIN;\nALTER ROLE "{postgres.USER}" PASSWORD \'{password}\';\n'
    )
    postgres.run_logged(single, log, "creating the roles", who=who, stdin=statements.encode())


def start_secure_postgres(
    service_dir: Path,
    tls: ServerTLS,
    *,
    cert_user: str,
    password: str,
    env: Mapping[str, str],
    timeout: float = 60.0,
) -> SecurePostgres:
    """Create a cluster and serve it over TLS on ``127.0.0.1`` and ``127.0.0.2``.

    ``cert_user`` is the role, created here, that logs in with a client
    certificate whose CN is its name; the superuser's password becomes ``password``.

    Raises:
        StartupError: No binaries, or the cluster failed to start; names the log.
    """
    binaries = postgres.find_binaries(env)
    who = postgres.owner()
    data = postgres.data_dir(service_dir, who)
    log = service_dir / "postgres.log"
    fresh = not (data / "PG_VERSION").exists()
    postgres.init_cluster(binaries, data, who, log)
    if fresh:
        _create_roles(binaries, data, who, log, cert_user=cert_user, password=password)
    (data / "pg_hba.conf").write_text(_pg_hba(cert_user))
    settings = _install_tls(data, tls, who)
    port = proc.pick_port()
    command = postgres.server_command(binaries, data, port)
    command += ["-c", "listen_addresses=127.0.0.1,127.0.0.2", "-c", "ssl=on"]
    for setting, value in settings.items():
        command += ["-c", f"{setting}={value}"]
    process = proc.spawn(command, log_path=log, cwd=data.parent, user=who)
    # pg_isready does not need to log in, so it works before TLS is negotiated.
    _wait(process, lambda: postgres.is_ready(binaries, port), "secure PostgreSQL", timeout, log)
    return SecurePostgres(
        host="127.0.0.1",
        port=port,
        user=postgres.USER,
        password=password,
        database=postgres.DATABASE,
        pid=process.pid,
        data_dir=data,
        log=log,
    )


def stop_secure(server: SecureKafka | SecurePostgres) -> None:
    """Stop a server started here; a PostgreSQL cluster's data is deleted too."""
    if isinstance(server, SecureKafka):
        proc.terminate(server.pid, server.marker)
        return
    # SIGINT is PostgreSQL's fast shutdown.
    proc.terminate(server.pid, str(server.data_dir), sig=signal.SIGINT)
    with contextlib.suppress(OSError):
        shutil.rmtree(server.data_dir.parent if _scratch(server.data_dir) else server.data_dir)


def _scratch(data: Path) -> bool:
    # postgres.data_dir() moves a cluster the server's user could not reach to
    # <tmp>/kafka-retry-pg-<digest>/data; that parent directory is ours too.
    return data.parent.name.startswith("kafka-retry-pg-")
