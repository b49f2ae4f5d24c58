"""Throwaway certificate authorities and certificates for the TLS tests.

Everything is generated with ``cryptography`` into a directory the test owns:
a CA, a server certificate valid for ``localhost`` and ``127.0.0.1``, client
certificates (one with an encrypted key), and a second, unrelated CA that must
never be trusted.

The certificates carry what a real CA writes and what strict verification
(``ssl.VERIFY_X509_STRICT``, on by default from Python 3.13) demands: a Subject
Key Identifier on every certificate, an Authority Key Identifier on every issued
one, critical basic constraints and key usages. ``key_identifiers=False`` leaves
the identifiers out, like a hand-made legacy CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_KEY_PASSWORD = "client-key-passphrase"


@attrs.frozen
class Authority:
    """A CA: its certificate and key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@attrs.frozen
class TLSMaterial:
    """PEM files of one test PKI.

    Attributes:
        ca: The CA certificate clients and servers trust.
        wrong_ca: A different CA that signed nothing here.
        server_cert: Server certificate (SAN localhost, 127.0.0.1), then the CA.
        server_key: Its unencrypted PKCS#8 key.
        client_cert: Client certificate with CN ``client_name``.
        client_key: Its unencrypted key.
        client_key_encrypted: The same key, encrypted with :data:`CLIENT_KEY_PASSWORD`.
        client_name: The client certificate's common name.
    """

    ca: Path
    wrong_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path
    client_name: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(
    subject: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
    )


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _subject_key_id(
    builder: x509.CertificateBuilder, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    return builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)


def authority(common_name: str, *, key_identifiers: bool = True) -> Authority:
    """A self-signed CA; without ``key_identifiers``, one that lacks its Subject Key Identifier."""
    key = _key()
    builder = (
        _builder(common_name, _name(common_name), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(ca=True), critical=True)
    )
    if key_identifiers:
        builder = _subject_key_id(builder, key.public_key())
    return Authority(builder.sign(key, hashes.SHA256()), key)


def issue(
    ca: Authority,
    common_name: str,
    *,
    server: bool,
    hosts: tuple[str, ...] = (),
    key_identifiers: bool = True,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate signed by ``ca``: for a server (with ``hosts`` as SANs) or a client.

    Without ``key_identifiers`` it has neither a Subject nor an Authority Key Identifier.
    """
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(common_name, ca.cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if key_identifiers:
        builder = _subject_key_id(builder, key.public_key()).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, hashes.SHA256()), key


def _cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def _key_pem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password.encode())
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def generate(
    directory: Path, *, client_name: str = "kafka-retry-client", key_identifiers: bool = True
) -> TLSMaterial:
    """Write a fresh PKI into ``directory`` (created if missing).

    Args:
        directory: Where the PEM files go.
        client_name: The client certificate's common name.
        key_identifiers: False makes the CA and the certificates it issues
            without Subject and Authority Key Identifiers (the untrusted CA keeps them).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca = authority("kafka-retry test CA", key_identifiers=key_identifiers)
    wrong = authority("kafka-retry untrusted CA")
    server_cert, server_key = issue(
        ca,
        "localhost",
        server=True,
        hosts=("localhost", "127.0.0.1"),
        key_identifiers=key_identifiers,
    )
    client_cert, client_key = issue(ca, client_name, server=False, key_identifiers=key_identifiers)
    return TLSMaterial(
        ca=_write(directory / "ca.pem", _cert_pem(ca.cert)),
        wrong_ca=_write(directory / "wrong-ca.pem", _cert_pem(wrong.cert)),
        server_cert=_write(directory / "server.pem", _cert_pem(server_cert, ca.cert)),
        server_key=_write(directory / "server.key", _key_pem(server_key)),
        client_cert=_write(directory / "client.pem", _cert_pem(client_cert)),
        client_key=_write(directory / "client.key", _key_pem(client_key)),
        client_key_encrypted=_write(
            directory / "client-encrypted.key", _key_pem(client_key, CLIENT_KEY_PASSWORD)
        ),
        client_name=client_name,
    )


def handshake(material: TLSMaterial, client: ssl.SSLContext, host: str = "localhost") -> None:
    """A TLS handshake in memory between ``client`` and a server with ``material``'s certificate.

    OpenSSL verifies the chain exactly as over a socket, without one.

    Raises:
        ssl.SSLError: The client refused the server (``SSLCertVerificationError``).
    """
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(material.server_cert, material.server_key)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, to_server, server_hostname=host)
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    done: set[int] = set()
    # TLS 1.3 needs at most three flights; each round moves one in each direction.
    for _round in range(5):
        for number, side in enumerate((client_side, server_side)):
            try:
                side.do_handshake()
                done.add(number)
            except ssl.SSLWantReadError:
                pass
        if done == {0, 1}:
            return
    raise ssl.SSLError("the in-memory handshake did not finish")
