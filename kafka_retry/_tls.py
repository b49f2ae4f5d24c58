"""TLS material for Kafka clients, loaded with errors that name the setting at fault.

Loading happens before any connection, so a missing file, a key that does not
match its certificate or a wrong key password is a :class:`~kafka_retry.ConfigError`
at start, not a handshake failure later. An encrypted key without a password is
refused outright: OpenSSL would otherwise prompt for one on the terminal.
"""

from __future__ import annotations

import os
import ssl

from kafka_retry.config import Config
from kafka_retry.errors import ConfigError

__all__ = ["client_context"]


def client_context(config: Config) -> ssl.SSLContext:
    """The SSL context of every Kafka client: CA, client certificate, verification.

    The user's own ``tls_context`` is returned as it is.

    Raises:
        ConfigError: A file is missing or unreadable, is not what its setting
            says, or the key cannot be decrypted; names the setting.
    """
    if config.tls_context is not None:
        return config.tls_context
    ca_file = config.tls_ca_file
    if ca_file:
        _check_readable("tls_ca_file", ca_file)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls_ca_file", f"{ca_file} holds no PEM CA certificate ({exc})") from exc
    if config.tls_cert_file and config.tls_key_file:
        _load_client_certificate(context, config.tls_cert_file, config.tls_key_file, config)
    if config.tls_skip_verify_peer:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _check_readable(field: str, path: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(field, f"no such file: {path}")
    if not os.access(path, os.R_OK):
        raise ConfigError(field, f"cannot read {path} (permissions)")


def _is_encrypted(key_file: str) -> bool:
    try:
        with open(key_file, "rb") as handle:
            head = handle.read(64 * 1024)
    except OSError:
        return False
    # PKCS#8 "ENCRYPTED PRIVATE KEY" or a traditional key's "Proc-Type: 4,ENCRYPTED".
    return b"ENCRYPTED" in head


def _no_password() -> bytes:
    # Never called for an unencrypted key; for an encrypted one it stops OpenSSL
    # from prompting on the terminal.
    return b""


def _load_client_certificate(
    context: ssl.SSLContext, cert_file: str, key_file: str, config: Config
) -> None:
    _check_readable("tls_cert_file", cert_file)
    _check_readable("tls_key_file", key_file)
    encrypted = _is_encrypted(key_file)
    if encrypted and not config.tls_key_password:
        raise ConfigError("tls_key_password", f"the key in {key_file} is encrypted: set it")
    try:
        context.load_cert_chain(cert_file, key_file, config.tls_key_password or _no_password)
    except ssl.SSLError as exc:
        if encrypted:
            raise ConfigError(
                "tls_key_password", f"cannot decrypt the key in {key_file} (wrong password?)"
            ) from exc
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                "tls_key_file", f"{key_file} is not the key of the certificate in {cert_file}"
            ) from exc
        raise ConfigError(
            "tls_cert_file",
            f"cannot load {cert_file} with the key {key_file}: not PEM? ({exc.reason or exc})",
        ) from exc
