"""Certificate checks that only strict X.509 verification makes, and the hint for them.

Python 3.13's ``ssl.create_default_context()`` sets ``ssl.VERIFY_X509_STRICT``,
under which OpenSSL also refuses certificates that are merely old-fashioned:
no Authority or Subject Key Identifier, a CA whose basic constraints are not
critical, and the like. Hand-made internal CAs often look like that. Such a
refusal gets a hint that names the cause and the way out (``tls_context``)
instead of only "not trusted".
"""

from __future__ import annotations

import ssl

__all__ = ["strict_hint", "strict_only"]

#: OpenSSL 3's verify messages (X509_verify_cert_error_string) for the checks it
#: makes only under X509_V_FLAG_X509_STRICT.
_STRICT_ONLY = frozenset(
    message.lower()
    for message in (
        "Missing Authority Key Identifier",
        "Missing Subject Key Identifier",
        "Authority Key Identifier marked critical",
        "Subject Key Identifier marked critical",
        "Basic Constraints of CA cert not marked critical",
        "CA cert does not include key usage extension",
        "Path length invalid for non-CA cert",
        "Path length given without key usage keyCertSign",
        "Key usage keyCertSign invalid for non-CA cert",
        "Issuer name empty",
        "Subject name empty",
        "Empty Subject Alternative Name extension",
        "Subject empty and Subject Alt Name extension not critical",
        "Using cert extension requires at least X509v3",
        "Certificate public key has explicit ECC parameters",
        "cert info signature and signature algorithm mismatch",
    )
)


def strict_only(error: ssl.SSLCertVerificationError) -> bool:
    """Whether ``error`` is a refusal that only strict verification makes."""
    return (error.verify_message or "").strip().lower() in _STRICT_ONLY


def strict_hint(field: str) -> str:
    """What to tell the user whose certificate fails a strict-only check.

    Args:
        field: The setting that takes the user's own context, as they spell it
            (``tls_context`` or ``database.tls_context``).
    """
    return (
        "only strict X.509 verification (ssl.VERIFY_X509_STRICT) checks this, and Python "
        "3.13+ turns it on by default; reissue the certificates with the extension, or keep "
        f"verification on and pass {field}: your own ssl.SSLContext with "
        "ssl.VERIFY_X509_STRICT cleared from its verify_flags"
    )
