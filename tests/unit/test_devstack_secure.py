"""The secured test broker's configuration (pure: no broker is started)."""

from __future__ import annotations

from pathlib import Path

from kafka_retry._devstack.secure import SCRAM_MECHANISMS, kafka_properties


def _properties(text: str) -> dict[str, str]:
    # java.util.Properties semantics that matter here: the last value of a key wins.
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        found[key] = value
    return found


def test_each_listener_has_its_security_protocol() -> None:
    """SSL, MTLS (client certificate required), SASL_SSL, SASL_PLAINTEXT, plus PLAINTEXT."""
    ports = {"PLAINTEXT": 1, "SSL": 2, "MTLS": 3, "SASL_SSL": 4, "SASL_PLAINTEXT": 5}
    base = "listeners=PLAINTEXT://127.0.0.1:9\nnode.id=1\n"
    text = kafka_properties(
        base, {**ports, "CONTROLLER": 6}, Path("/k.pem"), Path("/ca.pem"), {"alice": "pw1"}
    )
    props = _properties(text)
    assert props["node.id"] == "1"
    assert props["listeners"].split(",")[-1] == "CONTROLLER://127.0.0.1:6"
    assert "MTLS://127.0.0.1:3" in props["advertised.listeners"]
    assert "MTLS:SSL" in props["listener.security.protocol.map"].split(",")
    assert props["listener.name.mtls.ssl.client.auth"] == "required"
    assert (props["ssl.keystore.type"], props["ssl.truststore.location"]) == ("PEM", "/ca.pem")
    plain = props["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    assert 'user_alice="pw1"' in plain
    for mechanism in SCRAM_MECHANISMS:
        key = f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config"
        assert "ScramLoginModule" in props[key]


def test_legacy_listener_presents_its_own_certificate() -> None:
    """LEGACY, when asked for, is a TLS listener with its own keystore and truststore."""
    ports = {"PLAINTEXT": 1, "SSL": 2, "MTLS": 3, "SASL_SSL": 4, "SASL_PLAINTEXT": 5}
    ports |= {"LEGACY": 7, "CONTROLLER": 6}
    text = kafka_properties(
        "",
        ports,
        Path("/k.pem"),
        Path("/ca.pem"),
        {},
        legacy=(Path("/legacy-k.pem"), Path("/legacy-ca.pem")),
    )
    props = _properties(text)
    assert "LEGACY://127.0.0.1:7" in props["advertised.listeners"]
    assert "LEGACY:SSL" in props["listener.security.protocol.map"].split(",")
    assert props["listener.name.legacy.ssl.keystore.location"] == "/legacy-k.pem"
    assert props["listener.name.legacy.ssl.truststore.location"] == "/legacy-ca.pem"
    assert props["ssl.keystore.location"] == "/k.pem"
    without = kafka_properties("", ports, Path("/k.pem"), Path("/ca.pem"), {})
    assert "LEGACY" not in without
