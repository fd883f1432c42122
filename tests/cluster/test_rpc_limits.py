"""The RPC server's limits and credentials in-process: sizes, nesting, concurrency, unimplemented methods, admin."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pyarrow
import pyarrow.flight as flight
import pytest

from semcache.cluster._flight import NodeClient
from semcache.cluster._local import free_ports
from semcache.cluster._server import FlightNodeServer, RpcLimits
from semcache.cluster._sizes import MAX_HEADER_BYTES, MAX_REQUEST_BYTES
from semcache.cluster._wire import ADMIN_ACTIONS, decode_frame, decode_request, encode_frame, encode_request
from semcache.errors import (
    AuthenticationError,
    InvalidInputError,
    LimitExceededError,
    ShardUnavailableError,
)
from tests.support.harness import wait_until

TOKEN, ADMIN = "data-token", "admin-token"


def _echo(action: str, header: dict[str, Any], blobs: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    return {"action": action}, []


def _serve(handler: Any = _echo, **kwargs: Any) -> tuple[FlightNodeServer, str]:
    address = f"grpc://127.0.0.1:{free_ports(1)[0]}"
    return FlightNodeServer(address, handler, **kwargs), address


@pytest.fixture
def server() -> Iterator[str]:
    node, address = _serve(token=TOKEN, admin_token=ADMIN)
    yield address
    node.shutdown()


def _raw_call(address: str, body: bytes, *, token: str | None = TOKEN, action: str = "get",
              headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    """One DoAction with a hand-made body; the reply header."""
    client = flight.FlightClient(address)
    metadata = list(headers or []) + ([(b"authorization", f"Bearer {token}".encode())] if token else [])
    try:
        (result,) = client.do_action(flight.Action(action, body), flight.FlightCallOptions(timeout=10.0,
                                                                                          headers=metadata))
    finally:
        client.close()
    return decode_frame(result.body.to_pybytes())[0]


# ------------------------------------------------------------------- wire
def test_a_deeply_nested_header_is_invalid_input_not_internal(server: str) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    frame = len(nested).to_bytes(4, "little") + nested + (0).to_bytes(4, "little")
    with pytest.raises(InvalidInputError, match="nested too deep"):
        decode_request(frame)
    assert _raw_call(server, frame)["error"] == "invalid_input"


def test_a_header_over_the_limit_is_refused_before_it_is_parsed(server: str) -> None:
    big = encode_request({"key": "x" * (MAX_HEADER_BYTES + 1)})
    with pytest.raises(LimitExceededError) as info:
        decode_request(big)
    assert info.value.limit == MAX_HEADER_BYTES
    assert _raw_call(server, big)["error"] == "limit_exceeded"
    assert decode_frame(encode_frame({"keys": ["x" * (MAX_HEADER_BYTES + 1)]}))  # replies are not bounded


# -------------------------------------------------------------- transport
def test_a_request_over_the_size_limit_is_refused_by_the_transport_and_the_server_lives_on(server: str) -> None:
    body = b"\0" * (MAX_REQUEST_BYTES + 64 * 1024)
    for token in (None, TOKEN):
        with pytest.raises(pyarrow.ArrowException, match="(?i)larger than max|resource exhausted"):
            _raw_call(server, body, token=token)
    with NodeClient(server, token=TOKEN) as client:
        with pytest.raises(LimitExceededError):  # the client does not even send it
            client.call("put", {"key": "k"}, [body])
        assert client.call("get", {})[0] == {"action": "get"}


def test_oversized_metadata_is_refused(server: str) -> None:
    with pytest.raises(pyarrow.ArrowException, match="(?i)metadata"):
        _raw_call(server, encode_request({}), headers=[(b"x-padding", b"p" * (64 * 1024))])


def test_calls_past_the_concurrency_limit_are_refused_at_once_and_threads_stay_bounded() -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def blocking(action: str, header: dict[str, Any], blobs: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
        entered.release()
        release.wait(30)
        return {}, []

    node, address = _serve(blocking, limits=RpcLimits(max_concurrent_calls=4, workers=2))
    outcomes: list[BaseException | None] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            with NodeClient(address, timeout=30.0) as client:
                client.call("get", {})
            outcome: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            outcome = exc
        with lock:
            outcomes.append(outcome)

    callers = [threading.Thread(target=call) for _ in range(12)]
    try:
        for caller in callers:
            caller.start()
        assert entered.acquire(timeout=30) and entered.acquire(timeout=30)  # both workers are busy
        refused_count = 12 - 4  # 2 running + 2 queued; the rest are answered by the serving thread, no worker
        wait_until(lambda: len(outcomes) >= refused_count, 30, what="the refused calls to come back")
        assert not entered.acquire(timeout=0.2)  # no third handler ran: 2 workers, 2 queued
        rpc_threads = [t for t in threading.enumerate() if t.name.startswith(f"semcache-rpc {address[7:]}")]
        assert len(rpc_threads) <= 2
    finally:
        release.set()
        for caller in callers:
            caller.join(timeout=30)
        node.shutdown()
    refused = [o for o in outcomes if o is not None]
    assert len(refused) == refused_count and all(isinstance(o, ShardUnavailableError) for o in refused)
    assert all("busy" in str(o) for o in refused)
    assert outcomes.count(None) == 4


FLIGHT_METHODS = [
    lambda c, o: list(c.list_flights(options=o)),
    lambda c, o: c.get_flight_info(flight.FlightDescriptor.for_command(b"x"), options=o),
    lambda c, o: c.get_schema(flight.FlightDescriptor.for_command(b"x"), options=o),
    lambda c, o: c.do_get(flight.Ticket(b"x"), options=o).read_all(),
    lambda c, o: c.do_put(flight.FlightDescriptor.for_command(b"x"), pyarrow.schema([]), options=o)[0].close(),
    lambda c, o: c.do_exchange(flight.FlightDescriptor.for_command(b"x"), options=o)[1].read_all(),
]


@pytest.mark.parametrize("method", FLIGHT_METHODS, ids=["list_flights", "get_flight_info", "get_schema", "do_get",
                                                         "do_put", "do_exchange"])
def test_flight_methods_a_node_does_not_implement_answer_a_short_error_without_a_traceback(
    server: str, method: Any
) -> None:
    client = flight.FlightClient(server)
    options = flight.FlightCallOptions(timeout=5.0, headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
    try:
        with pytest.raises(pyarrow.ArrowException) as info:
            method(client, options)
    finally:
        client.close()
    message = str(info.value)
    assert "Traceback" not in message and ".py" not in message and len(message) < 300, message


def test_list_actions_names_the_wire_actions(server: str) -> None:
    client = flight.FlightClient(server)
    options = flight.FlightCallOptions(timeout=5.0, headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
    try:
        names = {action.type for action in client.list_actions(options)}
    finally:
        client.close()
    assert {"put", "get", "clear", "add_replica"} <= names


# ------------------------------------------------------------ credentials
def test_admin_actions_need_the_admin_token_and_data_actions_take_either(server: str) -> None:
    with NodeClient(server, token=TOKEN) as data, NodeClient(server, token=ADMIN) as admin:
        assert data.call("get", {})[0] == {"action": "get"}
        assert admin.call("get", {})[0] == {"action": "get"}
        for action in sorted(ADMIN_ACTIONS):
            with pytest.raises(AuthenticationError, match="admin token"):
                data.call(action, {})
            assert admin.call(action, {})[0] == {"action": action}
    for token in (None, "wrong"):
        with NodeClient(server, token=token) as anonymous, pytest.raises(AuthenticationError):
            anonymous.call("get", {})


def test_without_an_admin_token_admin_actions_take_the_data_token() -> None:
    node, address = _serve(token=TOKEN)
    try:
        with NodeClient(address, token=TOKEN) as client:
            assert client.call("clear", {})[0] == {"action": "clear"}
        with NodeClient(address) as anonymous, pytest.raises(AuthenticationError):
            anonymous.call("clear", {})
    finally:
        node.shutdown()


def test_a_taken_port_is_refused_rather_than_shared() -> None:
    node, address = _serve()
    try:
        with pytest.raises(Exception, match="cannot listen"):
            FlightNodeServer(address, _echo)
    finally:
        node.shutdown()
