"""The RPC transport in-process: frames, error mapping at the boundary, token auth, TLS, transport limits."""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Iterator
from typing import Any

import pyarrow.flight as flight
import pytest

import semcache.errors as errors_module
from semcache.cluster._flight import NodeClient, map_flight_error
from semcache.cluster._local import free_ports
from semcache.cluster._server import FlightNodeServer
from semcache.cluster._wire import (
    ERROR_CODES,
    WIRE_VERSION,
    WIRE_VERSION_FIELD,
    decode_frame,
    decode_request,
    encode_frame,
    encode_request,
    error_from_reply,
    error_to_header,
)
from semcache.errors import (
    AuthenticationError,
    ClosedError,
    ClusterError,
    ConfigurationError,
    InvalidInputError,
    LimitExceededError,
    NotLeaderError,
    SemcacheError,
    ShardUnavailableError,
)


def test_frames_round_trip_binary_blobs() -> None:
    blobs = [b"", b"\x00\xff" * 1000, "ünïcode".encode()]
    header = {"key": "key", "keys": ["a", "b"]}
    assert decode_frame(encode_frame(header, blobs)) == (header, blobs)
    assert decode_request(encode_request(header, blobs)) == (header, blobs)  # the version travels, then goes
    assert decode_frame(encode_request(header))[0] == {WIRE_VERSION_FIELD: WIRE_VERSION, **header}


@pytest.mark.parametrize(("sent", "speaks", "advice"), [
    (None, 1, "upgrade the client"),  # an unversioned request: the format before versions
    (WIRE_VERSION - 1, WIRE_VERSION - 1, "upgrade the client"),
    (WIRE_VERSION + 1, WIRE_VERSION + 1, "upgrade the cluster's nodes"),
])
def test_a_request_of_another_wire_version_is_refused_naming_both_versions(
    sent: int | None, speaks: int, advice: str
) -> None:
    header = {"key": "k"} if sent is None else {WIRE_VERSION_FIELD: sent, "key": "k"}
    with pytest.raises(ConfigurationError) as info:
        decode_request(encode_frame(header))
    message = str(info.value)
    assert f"the client speaks wire version {speaks}, this node speaks {WIRE_VERSION}: {advice}" in message


@pytest.mark.parametrize("garbage", [b"", b"\x01", b"\x02\x00\x00\x00{}", b"\x02\x00\x00\x00{}\x01\x00\x00\x00\x09"])
def test_malformed_frames_are_invalid_input(garbage: bytes) -> None:
    with pytest.raises(InvalidInputError):
        decode_frame(garbage)


def _all_error_classes() -> list[type[SemcacheError]]:
    return [
        cls for _, cls in inspect.getmembers(errors_module, inspect.isclass)
        if issubclass(cls, SemcacheError) and cls is not SemcacheError
    ]


def _example(cls: type[SemcacheError]) -> SemcacheError:
    if cls is LimitExceededError:
        return LimitExceededError("value", 70_000, 49_152)
    if cls is NotLeaderError:
        return NotLeaderError("not me", shard_id="shard-1", leader_hint="grpc://127.0.0.1:1")
    if issubclass(cls, ClusterError):
        return cls("boom", shard_id="shard-1")
    return cls("boom")


@pytest.mark.parametrize("cls", _all_error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_class_has_a_code_and_survives_the_wire(cls: type[SemcacheError]) -> None:
    assert cls in ERROR_CODES.values(), f"{cls.__name__} has no wire code"
    original = _example(cls)
    rebuilt = error_from_reply(decode_frame(encode_frame(error_to_header(original)))[0])
    assert type(rebuilt) is cls
    assert str(rebuilt) == str(original)
    if isinstance(original, ClusterError):
        assert isinstance(rebuilt, ClusterError) and rebuilt.shard_id == "shard-1"
        assert rebuilt.retryable == original.retryable
    if isinstance(original, NotLeaderError):
        assert isinstance(rebuilt, NotLeaderError) and rebuilt.leader_hint == "grpc://127.0.0.1:1"
    if isinstance(original, LimitExceededError):
        assert isinstance(rebuilt, LimitExceededError) and (rebuilt.limit, rebuilt.actual) == (49_152, 70_000)


def test_unexpected_exceptions_travel_as_internal_errors() -> None:
    header = error_to_header(KeyError("surprise"))
    assert header["error"] == "internal"
    assert type(error_from_reply(header)) is SemcacheError


@pytest.mark.parametrize(
    ("flight_error", "expected"),
    [
        (flight.FlightUnauthenticatedError("no"), AuthenticationError),
        (flight.FlightUnauthorizedError("no"), AuthenticationError),
        (flight.FlightTimedOutError("slow"), ShardUnavailableError),
        (flight.FlightUnavailableError("down"), ShardUnavailableError),
        (flight.FlightCancelledError("cancelled"), ShardUnavailableError),
        (flight.FlightInternalError("bug"), ClusterError),
        (flight.FlightServerError("bug"), ClusterError),
    ],
)
def test_flight_failures_map_to_semcache_errors(flight_error: flight.FlightError, expected: type) -> None:
    assert type(map_flight_error(flight_error, "grpc://x:1")) is expected


def _echo(action: str, header: dict[str, Any], blobs: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    if action == "fail":
        raise NotLeaderError("follower here", leader_hint="grpc://127.0.0.1:9")
    if action == "crash":
        raise ZeroDivisionError("handler bug")
    return {"action": action, **header}, blobs[::-1]


@pytest.fixture
def echo_server() -> Iterator[str]:
    address = f"grpc://127.0.0.1:{free_ports(1)[0]}"
    server = FlightNodeServer(address, _echo, token="secret-token")
    yield address
    server.shutdown()


def test_token_is_required_on_every_call_and_errors_come_back_typed(echo_server: str) -> None:
    with NodeClient(echo_server, token="secret-token") as client:
        assert client.call("ping", {"a": 1}, [b"x", b"y"]) == ({"action": "ping", "a": 1}, [b"y", b"x"])
        with pytest.raises(NotLeaderError) as info:
            client.call("fail", {})
        assert info.value.leader_hint == "grpc://127.0.0.1:9"
        with pytest.raises(SemcacheError, match="handler bug"):
            client.call("crash", {})
        assert client.call("ping", {})[0] == {"action": "ping"}  # the server survived the crash
    for token in (None, "wrong-token"):
        with NodeClient(echo_server, token=token) as anonymous, pytest.raises(AuthenticationError):
            anonymous.call("ping", {})


def test_the_server_refuses_a_client_of_another_wire_version_before_the_handler(echo_server: str) -> None:
    raw = flight.FlightClient(echo_server)
    options = flight.FlightCallOptions(timeout=5.0, headers=[(b"authorization", b"Bearer secret-token")])
    try:
        body = encode_frame({WIRE_VERSION_FIELD: WIRE_VERSION + 1, "a": 1})
        (result,) = raw.do_action(flight.Action("ping", body), options)
    finally:
        raw.close()
    reply = decode_frame(result.body.to_pybytes())[0]
    assert reply["error"] == "configuration" and "action" not in reply  # the echo handler never ran
    error = error_from_reply(reply)
    assert type(error) is ConfigurationError
    assert f"the client speaks wire version {WIRE_VERSION + 1}, this node speaks {WIRE_VERSION}" in str(error)


def test_unreachable_node_and_closed_client_errors() -> None:
    client = NodeClient(f"grpc://127.0.0.1:{free_ports(1)[0]}", timeout=0.5)
    with pytest.raises(ShardUnavailableError):
        client.health()
    client.close()
    with pytest.raises(ClosedError):
        client.health()


def self_signed_cert() -> tuple[bytes, bytes]:
    """A throwaway certificate for localhost and 127.0.0.1, and its key (PEM)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_tls_server_talks_only_to_clients_that_trust_it() -> None:
    cert, key = self_signed_cert()
    address = f"grpc+tls://localhost:{free_ports(1)[0]}"
    server = FlightNodeServer(address, _echo, tls_cert=cert, tls_key=key)
    try:
        with NodeClient(address, tls_root_certs=cert) as client:
            assert client.call("ping", {})[0] == {"action": "ping"}
        with NodeClient(address, timeout=2.0) as untrusting, pytest.raises(ShardUnavailableError):
            untrusting.call("ping", {})
    finally:
        server.shutdown()
