"""Integration fixtures beyond the shared services of ``tests/conftest.py``.

The TLS fixtures start their own servers; see :mod:`tests.integration.secure_services`.
"""

from __future__ import annotations

from tests.integration.secure_services import (
    legacy_tls_material,
    secure_kafka,
    secure_postgres,
    tls_material,
)

__all__ = ["legacy_tls_material", "secure_kafka", "secure_postgres", "tls_material"]
