"""TLS: material loads with errors naming the setting; handshake failures are classified."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from cryptography import x509

from kafka_retry import AuthenticationError, Config, ConfigError, DatabaseConfig, TLSError
from kafka_retry._handshake import classify
from kafka_retry._tls import client_context
from kafka_retry.retry._pg_connect import security_error, ssl_option
from tests import certs


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> certs.TLSMaterial:
    """A throwaway PKI."""
    return certs.generate(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> certs.TLSMaterial:
    """A PKI whose CA and certificates have no key identifiers, like a hand-made CA."""
    return certs.generate(tmp_path_factory.mktemp("legacy-pki"), key_identifiers=False)


def kafka_config(**fields: Any) -> Config:
    return Config(bootstrap_servers="k:9093", group="g", topics=["t"], tls_enabled=True, **fields)


def test_default_context_verifies_chain_and_host(material: certs.TLSMaterial) -> None:
    """TLS on means the certificate and the host name are checked."""
    context = client_context(kafka_config(tls_ca_file=str(material.ca)))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_skip_verify_peer_turns_both_checks_off(material: certs.TLSMaterial) -> None:
    """tls_skip_verify_peer is for self-signed test setups: no chain, no host check."""
    context = client_context(kafka_config(tls_skip_verify_peer=True))
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname


def test_encrypted_client_key_loads_with_its_password(material: certs.TLSMaterial) -> None:
    """A client certificate with an encrypted key loads when the password is right."""
    client_context(
        kafka_config(
            tls_cert_file=str(material.client_cert),
            tls_key_file=str(material.client_key_encrypted),
            tls_key_password=certs.CLIENT_KEY_PASSWORD,
        )
    )


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"tls_ca_file": "/nonexistent/ca.pem"}, "tls_ca_file", "no such file"),
        ({"tls_ca_file": "KEY"}, "tls_ca_file", "no PEM CA certificate"),
        (
            {"tls_cert_file": "CERT", "tls_key_file": "/nonexistent/key.pem"},
            "tls_key_file",
            "no such file",
        ),
        ({"tls_cert_file": "CERT", "tls_key_file": "ENCRYPTED"}, "tls_key_password", "encrypted"),
        (
            {"tls_cert_file": "CERT", "tls_key_file": "ENCRYPTED", "tls_key_password": "nope"},
            "tls_key_password",
            "wrong password",
        ),
        ({"tls_cert_file": "CERT", "tls_key_file": "SERVERKEY"}, "tls_key_file", "not the key"),
        ({"tls_cert_file": "KEY", "tls_key_file": "KEY"}, "tls_cert_file", "cannot load"),
    ],
)
def test_bad_material_names_the_setting(
    material: certs.TLSMaterial, fields: dict[str, str], field: str, words: str
) -> None:
    """Each kind of bad file is a ConfigError naming the setting to fix, never prompting."""
    files = {
        "CERT": material.client_cert,
        "KEY": material.client_key,
        "ENCRYPTED": material.client_key_encrypted,
        "SERVERKEY": material.server_key,
    }
    resolved = {name: str(files.get(value, value)) for name, value in fields.items()}
    if "tls_key_password" in fields:
        resolved["tls_key_password"] = fields["tls_key_password"]
    with pytest.raises(ConfigError) as caught:
        client_context(kafka_config(**resolved))
    assert caught.value.field == field
    assert words in caught.value.reason


def test_postgres_encrypted_key_needs_sslpassword(material: certs.TLSMaterial) -> None:
    """libpq's sslpassword: required for an encrypted key, checked, and then it loads."""
    base: dict[str, Any] = {
        "sslmode": "verify-full",
        "sslrootcert": str(material.ca),
        "sslcert": str(material.client_cert),
        "sslkey": str(material.client_key_encrypted),
    }
    with pytest.raises(ConfigError) as caught:
        ssl_option(DatabaseConfig(**base))
    assert caught.value.field == "database.sslpassword"
    with pytest.raises(ConfigError) as caught:
        ssl_option(DatabaseConfig(**base, sslpassword="wrong"))
    assert "wrong sslpassword" in caught.value.reason
    context = ssl_option(DatabaseConfig(**base, sslpassword=certs.CLIENT_KEY_PASSWORD))
    assert isinstance(context, ssl.SSLContext)


def _verify_error(message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    error.verify_message = message
    return error


def test_untrusted_certificate_names_the_ca_setting() -> None:
    """An unknown issuer points at tls_ca_file, naming the file in use."""
    config = kafka_config(tls_ca_file="/etc/ca.pem")
    error = classify(_verify_error("unable to get local issuer certificate"), "k:9093", config)
    assert isinstance(error, TLSError)
    assert "tls_ca_file" in str(error)
    assert "/etc/ca.pem" in str(error)
    assert error.address == "k:9093"


def test_host_name_mismatch_is_told_apart() -> None:
    """A certificate for another host says so, instead of blaming the CA."""
    mismatch = _verify_error("Hostname mismatch, certificate is not valid for 'k'.")
    error = classify(mismatch, "k:9093", kafka_config())
    assert isinstance(error, TLSError)
    assert "does not name this host" in str(error)


def test_closed_connection_caused_by_a_tls_alert_is_a_tls_error() -> None:
    """aiokafka's "connection closed" whose cause is a TLS alert: client certificate hint."""
    closed = KafkaConnectionError("Connection at k:9093 closed")
    alert = ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate")
    alert.reason = "SSLV3_ALERT_BAD_CERTIFICATE"
    closed.__cause__ = alert
    error = classify(closed, "k:9093", kafka_config())
    assert isinstance(error, TLSError)
    assert "tls_cert_file" in str(error)


def test_tls_listener_answering_a_plaintext_client_says_enable_tls() -> None:
    """A TLS alert read as a Kafka size prefix (0x15 0x03 ...) means TLS is off."""
    closed = KafkaConnectionError("Connection at k:9093 closed")
    closed.__cause__ = asyncio.IncompleteReadError(b"\x15\x03\x03", 0x15030300)
    error = classify(closed, "k:9093", Config(bootstrap_servers="k:9093", group="g", topics=["t"]))
    assert isinstance(error, TLSError)
    assert "tls_enabled" in str(error)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (SaslAuthenticationFailed("Invalid username or password"), "check the credentials"),
        (UnsupportedSaslMechanismError("only PLAIN"), "does not offer SASL"),
        (IllegalSaslStateError(), "is it a SASL listener"),
    ],
)
def test_sasl_refusals_are_authentication_errors(error: Exception, words: str) -> None:
    """Every SASL refusal is an AuthenticationError that says what to check."""
    config = Config(
        bootstrap_servers="k:9093",
        group="g",
        topics=["t"],
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="alice",
        sasl_password="pw",
    )
    found = classify(error, "k:9093", config)
    assert isinstance(found, AuthenticationError)
    assert words in str(found)


@pytest.mark.parametrize(
    "error",
    [ConnectionRefusedError(), TimeoutError(), KafkaConnectionError("Unable to bootstrap")],
)
def test_outages_stay_transient(error: Exception) -> None:
    """Refused, timed out or unexplained failures are retried within the bound."""
    assert classify(error, "k:9093", kafka_config()) is None


def test_postgres_refusals_are_classified() -> None:
    """Password, pg_hba and certificate problems of PostgreSQL are SecurityErrors with hints."""
    database = DatabaseConfig(host="db", user="app", sslmode="verify-full")
    password = asyncpg.InvalidPasswordError('password authentication failed for user "app"')
    hba = asyncpg.InvalidAuthorizationSpecificationError(
        'no pg_hba.conf entry for host "10.0.0.1", user "app", database "app", no encryption'
    )
    for error, words in ((password, "DATABASE_PASSWORD"), (hba, "set sslmode")):
        found = security_error(error, database)
        assert isinstance(found, AuthenticationError)
        assert words in str(found)
    mismatch = _verify_error("IP address mismatch, certificate is not valid for 'db'.")
    found = security_error(mismatch, database)
    assert isinstance(found, TLSError)
    assert "does not name db" in str(found)
    assert security_error(ConnectionRefusedError(), database) is None


def test_generated_server_certificate_names_loopback(material: certs.TLSMaterial) -> None:
    """The test PKI's server certificate is valid for 127.0.0.1 and localhost (verify-full)."""
    text = Path(material.server_cert).read_bytes()
    assert text.count(b"BEGIN CERTIFICATE") == 2  # leaf, then the CA


@pytest.mark.parametrize(
    "error", [ssl.SSLEOFError(8, "EOF occurred"), ssl.SSLZeroReturnError(6, "closed")]
)
def test_tls_connections_cut_short_are_retried(error: ssl.SSLError) -> None:
    """A handshake cut off (a restarting server) is an outage, not a refusal."""
    closed = KafkaConnectionError("Connection at k:9093 closed")
    closed.__cause__ = error
    assert classify(closed, "k:9093", kafka_config()) is None
    assert security_error(error, DatabaseConfig(sslmode="require")) is None


def _strict(ca: Path) -> ssl.SSLContext:
    # What Python 3.13's create_default_context() sets, on any Python.
    context = ssl.create_default_context(cafile=ca)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def _certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_test_pki_is_issued_like_a_real_ca(material: certs.TLSMaterial) -> None:
    """Every certificate has a Subject Key Identifier; each issued one its CA's as Authority's."""
    (ca,) = _certificates(material.ca)
    ca_id = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).critical
    for path in (material.server_cert, material.client_cert):
        leaf = _certificates(path)[0]
        leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        authority = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        assert authority.value.key_identifier == ca_id
        assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature


def test_test_pki_passes_strict_verification(material: certs.TLSMaterial) -> None:
    """A client with VERIFY_X509_STRICT (Python 3.13's default) accepts the test server."""
    certs.handshake(material, _strict(material.ca))


def test_strict_refusal_of_a_legacy_ca_says_how_to_keep_verifying(
    legacy: certs.TLSMaterial,
) -> None:
    """OpenSSL's refusal of a CA without key identifiers gets the hint, for Kafka and PostgreSQL."""
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        certs.handshake(legacy, _strict(legacy.ca))
    kafka = classify(caught.value, "k:9093", kafka_config(tls_ca_file=str(legacy.ca)))
    assert isinstance(kafka, TLSError)
    assert "Key Identifier" in str(kafka)
    assert "Python 3.13+" in str(kafka)
    assert "ssl.VERIFY_X509_STRICT" in str(kafka)
    assert "pass tls_context" in str(kafka)
    database = DatabaseConfig(sslmode="verify-full", sslrootcert=str(legacy.ca))
    postgres = security_error(caught.value, database)
    assert isinstance(postgres, TLSError)
    assert "pass database.tls_context" in str(postgres)


def test_legacy_ca_is_trusted_without_the_strict_flag(legacy: certs.TLSMaterial) -> None:
    """The recipe: the same CA, VERIFY_X509_STRICT cleared, chain and host still checked."""
    context = ssl.create_default_context(cafile=legacy.ca)
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    certs.handshake(legacy, context)
    with pytest.raises(ssl.SSLCertVerificationError):
        certs.handshake(legacy, context, host="not-localhost")
    wrong = ssl.create_default_context(cafile=legacy.wrong_ca)
    wrong.verify_flags &= ~ssl.VERIFY_X509_STRICT
    with pytest.raises(ssl.SSLCertVerificationError):
        certs.handshake(legacy, wrong)


@pytest.mark.parametrize(
    "message",
    [
        "Missing Authority Key Identifier",
        "Missing Subject Key Identifier",
        "Basic Constraints of CA cert not marked critical",
        "CA cert does not include key usage extension",
        "Subject empty and Subject Alt Name extension not critical",
    ],
)
def test_refusals_only_strict_verification_makes_get_the_hint(message: str) -> None:
    """Each OpenSSL verify message of a strict-only check names the flag and tls_context."""
    kafka = classify(_verify_error(message), "k:9093", kafka_config())
    postgres = security_error(_verify_error(message), DatabaseConfig(sslmode="verify-full"))
    for error in (kafka, postgres):
        assert isinstance(error, TLSError)
        assert "VERIFY_X509_STRICT" in str(error)


@pytest.mark.parametrize(
    "message",
    [
        "unable to get local issuer certificate",
        "self-signed certificate in certificate chain",
        "certificate has expired",
        "Hostname mismatch, certificate is not valid for 'k'.",
    ],
)
def test_refusals_of_any_verification_get_no_strict_hint(message: str) -> None:
    """An untrusted, expired or misnamed certificate is not blamed on strictness."""
    kafka = classify(_verify_error(message), "k:9093", kafka_config())
    postgres = security_error(_verify_error(message), DatabaseConfig(sslmode="verify-full"))
    for error in (kafka, postgres):
        assert isinstance(error, TLSError)
        assert "VERIFY_X509_STRICT" not in str(error)
