"""Node side of the cluster with REAL node processes on 127.0.0.1.

Each test starts its own shard of ``python -m semcache node`` processes on
free ports and always stops them in teardown (SIGTERM, then SIGKILL after a
bounded wait).  Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.flight as flight
import pytest

from semcache.cluster._config import ClusterConfig, Replica, ShardConfig
from semcache.cluster._flight import NodeClient
from semcache.cluster._local import free_ports
from semcache.cluster._wire import WIRE_VERSION, PutItem, SearchQuery, decode_frame, encode_frame, encode_request
from semcache.embeddings import HashEmbedding
from semcache.errors import (
    AuthenticationError,
    ClusterError,
    InvalidInputError,
    LimitExceededError,
    NoQuorumError,
    NotLeaderError,
    ShardUnavailableError,
)

from .test_node_transport import self_signed_cert

pytestmark = pytest.mark.slow

DIM = 16
TOKEN = "node-test-token"
WAIT = 30.0  # upper bound on any wait for the cluster to settle (a loaded 2-core machine)


def _vector(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal(DIM).astype(np.float32)
    return (vec / np.linalg.norm(vec)).astype(np.float32).tobytes()


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except ClusterError as exc:  # a node still starting or electing
            last_error = exc
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


class LocalShard:
    """One shard of node processes in ``directory`` (a test harness; always call :meth:`close`)."""

    def __init__(self, directory: Path, replicas: int = 3, *, scheme: str = "grpc",
                 tls_root_certs: bytes | None = None, **settings: Any) -> None:
        self.directory = directory
        self.tls_root_certs = tls_root_certs
        ports = iter(free_ports(2 * replicas))
        shard = ShardConfig(
            "shard-0",
            tuple(
                Replica(f"r{i}", f"127.0.0.1:{next(ports)}", f"{scheme}://127.0.0.1:{next(ports)}")
                for i in range(replicas)
            ),
        )
        settings.setdefault("token", TOKEN)
        settings.setdefault("embedding", f"hash:{DIM}")
        settings.setdefault("data_dir", "data")
        self.config_path = directory / "cluster.toml"
        ClusterConfig(secret="node-test-secret", shards=(shard,), **settings).dump(self.config_path)
        self.config = ClusterConfig.load(self.config_path)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.clients: dict[str, NodeClient] = {}

    @property
    def ids(self) -> list[str]:
        return [replica.id for replica in self.config.replicas()]

    def start(self, replica_id: str, config_path: Path | None = None) -> None:
        log = open(self.directory / f"{replica_id}.log", "ab")  # noqa: SIM115 - the child owns it
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.procs[replica_id] = subprocess.Popen(
            [sys.executable, "-m", "semcache", "node", "--config", str(config_path or self.config_path),
             "--replica", replica_id, "--log-level", "INFO"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()

    def start_all(self) -> None:
        for replica_id in self.ids:
            self.start(replica_id)

    def stop(self, replica_id: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        proc = self.procs.pop(replica_id)
        client = self.clients.pop(replica_id, None)
        if client is not None:
            client.close()
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return int(proc.returncode)

    def close(self) -> None:
        for replica_id in list(self.procs):
            self.stop(replica_id, timeout=10.0)

    def client(self, replica_id: str, **kwargs: Any) -> NodeClient:
        if kwargs:
            return NodeClient(self.config.replica(replica_id).rpc, **kwargs)
        if replica_id not in self.clients:
            self.clients[replica_id] = NodeClient(
                self.config.replica(replica_id).rpc, token=TOKEN, timeout=5.0, tls_root_certs=self.tls_root_certs
            )
        return self.clients[replica_id]

    def leader(self, among: list[str] | None = None) -> str:
        """Wait until exactly one of ``among`` says it leads; its id."""

        def find() -> str | None:
            leaders = [rid for rid in (among or list(self.procs)) if self.client(rid).health()["role"] == "leader"]
            return leaders[0] if len(leaders) == 1 else None

        return str(wait_for(find, what="a single leader"))

    def wait_converged(self, ids: list[str] | None = None, min_applied: int = 0) -> dict[str, Any]:
        """Wait until every replica in ``ids`` applied the same commands with equal digests."""

        def same() -> dict[str, Any] | None:
            digests = {rid: self.client(rid).digest() for rid in (ids or list(self.procs))}
            values = {(d["applied"], d["digest"]) for d in digests.values()}
            applied = next(iter(digests.values()))["applied"]
            return digests if len(values) == 1 and applied >= min_applied else None

        return dict(wait_for(same, what="replica digests to converge"))


@pytest.fixture
def make_shard(tmp_path: Path) -> Iterator[Callable[..., LocalShard]]:
    made: list[LocalShard] = []

    def make(replicas: int = 3, start: bool = True, **settings: Any) -> LocalShard:
        shard = LocalShard(tmp_path, replicas, **settings)
        made.append(shard)
        if start:
            shard.start_all()
        return shard

    yield make
    for shard in made:
        shard.close()


def _put(client: NodeClient, key: str, seed: int = 0, value: bytes | None = None, ttl_ms: int = 0) -> None:
    client.put(key, value if value is not None else key.encode(), scope="", vector=_vector(seed), ttl_ms=ttl_ms)


def _raw_action(address: str, action: str, body: bytes) -> dict[str, Any]:
    """Send an arbitrary body with a bare Flight client (what a buggy or hostile client could send)."""
    raw = flight.FlightClient(address)
    options = flight.FlightCallOptions(timeout=5.0, headers=[(b"authorization", f"Bearer {TOKEN}".encode())])
    try:
        results = list(raw.do_action(flight.Action(action, body), options))
    finally:
        raw.close()
    return decode_frame(results[0].body.to_pybytes())[0]


# --------------------------------------------------------------------- tests
def test_three_replicas_elect_a_leader_and_all_serve_the_write(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard()
    leader = shard.leader()
    _put(shard.client(leader), "greeting", seed=1, value=b"hello")
    assert shard.client(leader).get("greeting") == b"hello"  # read-your-write through the leader
    for rid in shard.ids:
        wait_for(lambda rid=rid: shard.client(rid).get("greeting", read_from="any") == b"hello",
                 what=f"{rid} to apply the put")
    hits = shard.client(leader).search(_vector(1), scope="", top_k=1, threshold=0.99)
    assert [(key, value) for key, value, _ in hits] == [("greeting", b"hello")]
    health = {rid: shard.client(rid).health() for rid in shard.ids}
    assert {h["leader"] for h in health.values()} == {shard.config.replica(leader).rpc}
    assert health[leader]["healthy"] and health[leader]["entries"] == 1
    assert set(health[leader]["replicas"]) == set(shard.ids)
    topology = shard.client(leader).topology()
    assert topology["dim"] == DIM and [r["replica_id"] for r in topology["shards"][0]["replicas"]] == shard.ids
    assert topology["wire_version"] == WIRE_VERSION and topology["max_value_bytes"] == shard.config.max_value_bytes
    shard.wait_converged(min_applied=1)


def test_write_or_leader_read_on_a_follower_names_the_leader(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard()
    leader = shard.leader()
    follower = next(rid for rid in shard.ids if rid != leader)
    with pytest.raises(NotLeaderError) as info:
        _put(shard.client(follower), "k")
    assert info.value.leader_hint == shard.config.replica(leader).rpc
    with pytest.raises(NotLeaderError):
        shard.client(follower).get("k")
    with pytest.raises(NotLeaderError):
        shard.client(follower).delete("k")
    assert shard.client(leader).get("k") is None  # the refused write stored nothing


def test_bad_requests_get_clear_errors_and_the_node_stays_up(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard()
    client_id = shard.leader()
    client = shard.client(client_id)
    with pytest.raises(LimitExceededError) as info:
        _put(client, "big", value=b"x" * (shard.config.max_value_bytes + 1))
    assert info.value.limit == shard.config.max_value_bytes
    with pytest.raises(InvalidInputError, match="dim"):
        client.put("k", b"v", scope="", vector=b"\x00" * 8, ttl_ms=0)
    with pytest.raises(InvalidInputError, match="NaN"):
        client.put("k", b"v", scope="", vector=np.full(DIM, np.nan, dtype=np.float32).tobytes(), ttl_ms=0)
    with pytest.raises(InvalidInputError):
        client.put("", b"v", scope="", vector=None, ttl_ms=0)
    with pytest.raises(InvalidInputError, match="ttl_ms"):
        client.put("k", b"v", scope="", vector=None, ttl_ms=-5)
    with pytest.raises(InvalidInputError, match="unknown action"):
        client.call("drop_tables", {})
    reply = _raw_action(shard.config.replica(client_id).rpc, "get", b"\xff\xff\xff")
    assert reply["error"] == "invalid_input" and "frame" in reply["message"]
    # A client from before wire versions (one-letter fields, no version), and one from the future.
    for body, speaks in ((encode_frame({"k": "still-here", "r": "leader"}), 1),
                         (encode_frame({"wire_version": WIRE_VERSION + 1, "key": "still-here"}), WIRE_VERSION + 1)):
        reply = _raw_action(shard.config.replica(client_id).rpc, "get", body)
        assert reply["error"] == "configuration"
        assert f"the client speaks wire version {speaks}, this node speaks {WIRE_VERSION}: upgrade" in reply["message"]
    _put(client, "still-here", value=b"ok")
    assert client.get("still-here") == b"ok"
    assert client.get("big") is None and client.stats()["entries"] == 1


def test_every_rpc_needs_the_token(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard(replicas=1)
    rid = shard.leader()
    for kwargs in ({}, {"token": "wrong"}):
        anonymous = shard.client(rid, timeout=5.0, **kwargs)
        for call in (anonymous.health, lambda c=anonymous: c.get("k"), lambda c=anonymous: _put(c, "k")):
            with pytest.raises(AuthenticationError):
                call()
        anonymous.close()
    assert shard.client(rid).get("k") is None  # nothing got through


def test_admin_actions_need_the_admin_token_and_data_actions_the_data_token(
    make_shard: Callable[..., LocalShard]
) -> None:
    shard = make_shard(replicas=1, admin_token="node-admin-token")
    rid = shard.leader()
    data = shard.client(rid)
    admin = shard.client(rid, token="node-admin-token", timeout=10.0)
    try:
        _put(data, "k")
        admin_calls = (lambda c: c.clear(""), lambda c: c.call("compact", {}), lambda c: c.remove_replica("nobody"),
                       lambda c: c.add_replica("r9", "127.0.0.1:1", "grpc://127.0.0.1:2"))
        for call in admin_calls:
            with pytest.raises(AuthenticationError, match="admin token"):
                call(data)
        assert data.get("k") == b"k"  # the refused clear removed nothing
        assert admin.get("k") == b"k"  # the admin token admits data calls too
        assert admin.clear("") == 1 and data.get("k") is None
        with shard.client(rid, timeout=5.0) as anonymous, pytest.raises(AuthenticationError):
            anonymous.clear("")
    finally:
        admin.close()


def test_a_cluster_file_without_tokens_still_loads_and_the_node_warns_that_its_port_is_open(
    make_shard: Callable[..., LocalShard]
) -> None:
    shard = make_shard(replicas=1, token="")
    rid = shard.leader()
    with shard.client(rid, timeout=5.0) as anonymous:
        _put(anonymous, "k")
        assert anonymous.clear("") == 1  # a dev setup: open to anyone who can reach the port
    log = (shard.directory / f"{rid}.log").read_text()
    assert "WARNING" in log and "sets no token" in log


def test_a_node_with_the_wrong_secret_cannot_join_vote_or_inject(
    make_shard: Callable[..., LocalShard], tmp_path: Path
) -> None:
    shard = make_shard(start=False)
    rogue_config = tmp_path / "rogue.toml"
    replace(shard.config, secret="not-the-secret", path=None).dump(rogue_config)
    shard.start("r0")
    shard.start("r1")
    shard.start("r2", config_path=rogue_config)  # r2's address, the wrong secret
    leader = shard.leader(among=["r0", "r1"])
    term = shard.client(leader).health()["term"]
    for i in range(20):
        _put(shard.client(leader), f"k{i}")
    time.sleep(3 * shard.config.election_timeout_max)  # long enough for the rogue to campaign repeatedly
    rogue = shard.client("r2").health()
    assert rogue["role"] != "leader" and rogue["leader"] is None
    assert rogue["entries"] == 0 and rogue["applied_commands"] == 0
    assert shard.client(leader).health()["term"] == term  # its vote requests never reached the cluster
    assert shard.client(leader).health()["role"] == "leader"
    assert shard.client(leader).health()["replicas"]["r2"]["connected"] is False


def test_compaction_under_write_load_does_not_stall_or_elect(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard(compaction_entries=400)
    leader = shard.leader()
    terms = {rid: shard.client(rid).health()["term"] for rid in shard.ids}
    latencies: list[float] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def writer(worker: int) -> None:
        client = NodeClient(shard.config.replica(leader).rpc, token=TOKEN, timeout=10.0)
        i = 0
        while not stop.is_set() and i < 5000:
            started = time.perf_counter()
            try:
                _put(client, f"w{worker}-{i}", seed=i, value=b"v" * 200)
            except ClusterError as exc:
                errors.append(exc)
            latencies.append(time.perf_counter() - started)
            i += 1
        client.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: all(shard.client(rid).health()["snapshots"] >= 3 for rid in shard.ids),
             timeout=120, what="three compactions on every replica")
    stop.set()
    for thread in threads:
        thread.join(30)
    health = {rid: shard.client(rid).health() for rid in shard.ids}
    stalls = sorted(latencies)
    print(
        f"\ncompaction under load: {len(latencies)} writes, p50 {stalls[len(stalls) // 2] * 1e3:.1f} ms, "
        f"p99 {stalls[int(len(stalls) * 0.99)] * 1e3:.1f} ms, longest write stall {stalls[-1] * 1e3:.1f} ms; "
        "snapshot write / tick-thread stall seconds per replica: "
        + ", ".join(f"{r}={h['last_snapshot_seconds']}/{h['last_snapshot_stall_seconds']}" for r, h in health.items())
    )
    assert errors == []
    assert {rid: h["term"] for rid, h in health.items()} == terms  # no election happened
    assert health[leader]["role"] == "leader"
    assert all(h["log_len"] < 2 * 400 + 200 for h in health.values())  # the log really was compacted
    shard.wait_converged(min_applied=len(latencies))


def test_restarted_replica_catches_up_from_its_snapshot_and_journal(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard(compaction_entries=50)
    leader = shard.leader()
    follower = next(rid for rid in shard.ids if rid != leader)
    for i in range(120):
        _put(shard.client(leader), f"a{i}", seed=i)
    wait_for(lambda: shard.client(follower).health()["snapshots"] >= 1, what="a follower snapshot")
    assert shard.stop(follower, signal.SIGKILL) == -signal.SIGKILL
    for i in range(30):  # written while the follower is down
        _put(shard.client(leader), f"b{i}", seed=1000 + i)
    shard.start(follower)
    digests = shard.wait_converged(min_applied=150)
    assert digests[follower]["applied"] == digests[leader]["applied"]
    assert shard.client(follower).get("a5", read_from="any") == b"a5"
    assert shard.client(follower).get("b29", read_from="any") == b"b29"


def test_wiped_replica_catches_up_by_snapshot_transfer(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard(compaction_entries=50)
    leader = shard.leader()
    follower = next(rid for rid in shard.ids if rid != leader)
    for i in range(150):
        _put(shard.client(leader), f"k{i}", seed=i)
    wait_for(lambda: shard.client(leader).health()["snapshots"] >= 1, what="a leader snapshot")
    shard.client(leader).call("compact", {})
    wait_for(lambda: shard.client(leader).health()["log_len"] < 100, what="the leader log to be compacted")
    shard.stop(follower, signal.SIGKILL)
    shutil.rmtree(shard.config.data_dir_of(follower))
    shard.start(follower)
    digests = shard.wait_converged(min_applied=150)
    assert len(set(d["digest"] for d in digests.values())) == 1
    assert shard.client(follower).stats()["entries"] == 150
    assert shard.client(follower).get("k149", read_from="any") == b"k149"


def test_ttl_expiry_and_capacity_eviction_are_replicated_commands(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard(capacity=40, maintenance_interval=0.2)
    client = shard.client(shard.leader())
    for i in range(10):
        _put(client, f"ttl{i}", seed=i, ttl_ms=300)
    for i in range(60):
        _put(client, f"keep{i}", seed=100 + i)
    wait_for(lambda: client.stats()["entries"] <= 40, what="eviction down to capacity")
    wait_for(lambda: not any(k.startswith("ttl") for k in client.scan("", 1000)), what="ttl entries to expire")
    digests = shard.wait_converged()
    assert all(shard.client(rid).stats()["entries"] <= 40 for rid in digests)
    assert client.get("keep59") == b"keep59"  # the most recent write survives LRU eviction


def test_membership_add_and_remove_a_replica(make_shard: Callable[..., LocalShard], tmp_path: Path) -> None:
    shard = make_shard(replicas=4, start=False)
    # r3 is in the file but not yet a member: start a 3-replica group, then add it while it serves.
    three = replace(shard.config, path=None).with_shard(
        replace(shard.config.shards[0], replicas=shard.config.shards[0].replicas[:3])
    )
    three_path = tmp_path / "three.toml"
    three.dump(three_path)
    for rid in ("r0", "r1", "r2"):
        shard.start(rid, config_path=three_path)
    leader = shard.leader(among=["r0", "r1", "r2"])
    for i in range(40):
        _put(shard.client(leader), f"k{i}", seed=i)
    r3 = shard.config.replica("r3")
    shard.start("r3")
    wait_for(lambda: shard.client("r3").health(), what="r3 to listen (a leader adds only a running node)")
    shard.client(leader).add_replica("r3", r3.raft, r3.rpc)
    shard.wait_converged(min_applied=40)
    assert shard.client("r3").get("k39", read_from="any") == b"k39"
    assert "r3" in shard.client(leader).health()["replicas"]
    with pytest.raises(InvalidInputError):
        shard.client(leader).add_replica("r3", r3.raft, r3.rpc)
    shard.client(leader).remove_replica("r3")
    assert "r3" not in shard.client(leader).health()["replicas"]
    _put(shard.client(leader), "after-removal")
    time.sleep(1.0)
    assert shard.client("r3").get("after-removal", read_from="any") is None


def test_sigterm_stops_a_node_cleanly_and_it_restarts_with_its_data(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard(replicas=1)
    client = shard.client(shard.leader())
    _put(client, "durable", value=b"kept")
    assert shard.stop("r0", signal.SIGTERM) == 0
    with pytest.raises(ShardUnavailableError):
        NodeClient(shard.config.replica("r0").rpc, token=TOKEN, timeout=1.0).health()
    shard.start("r0")
    shard.leader()
    assert shard.client("r0").get("durable") == b"kept"


def test_concurrent_writes_share_entries_but_each_gets_its_own_result(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard()
    address = shard.config.replica(shard.leader()).rpc
    keys = [f"k{i}" for i in range(80)]
    deleted: list[str] = []

    def run(work: Callable[[NodeClient, str], None], items: list[str]) -> None:
        def worker(part: list[str]) -> None:
            with NodeClient(address, token=TOKEN, timeout=10.0) as client:
                for key in part:
                    work(client, key)

        threads = [threading.Thread(target=worker, args=(items[n::8],)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    run(lambda client, key: _put(client, key, seed=int(key[1:])), keys)
    # Every key deleted twice at once: exactly one delete of each may report that it removed something.
    run(lambda client, key: deleted.append(key) if client.delete(key) else None, keys + keys)
    assert sorted(deleted) == sorted(keys)
    assert shard.client(shard.leader()).stats()["entries"] == 0
    assert shard.wait_converged(min_applied=160)


def test_put_many_answers_each_put_and_stores_only_the_valid_ones(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard()
    leader = shard.client(shard.leader())
    items = [
        PutItem("a", b"va", "", _vector(1), 0),
        PutItem("wrong-dim", b"x", "", b"\x00" * 8, 0),
        PutItem("b", b"vb", "docs", _vector(2), 60_000),
        PutItem("", b"x", "", None, 0),
        PutItem("big", b"x" * (shard.config.max_value_bytes + 1), "", None, 0),
        PutItem("unsearchable", b"\xff", "", None, 0),
    ]
    errors = leader.put_many(items)
    assert errors[0] is None and errors[2] is None and errors[5] is None
    assert isinstance(errors[1], InvalidInputError) and "dim" in str(errors[1])
    assert isinstance(errors[3], InvalidInputError)
    assert isinstance(errors[4], LimitExceededError) and errors[4].limit == shard.config.max_value_bytes
    stored = [leader.get(k) for k in ("a", "b", "unsearchable", "wrong-dim", "big")]
    assert stored == [b"va", b"vb", b"\xff", None, None]
    hits = leader.search(_vector(2), scope="docs", top_k=1, threshold=0.99)
    assert [key for key, _, _ in hits] == ["b"]
    assert leader.stats()["entries"] == 3
    follower = next(rid for rid in shard.ids if rid != shard.leader())
    with pytest.raises(NotLeaderError):
        shard.client(follower).put_many([PutItem("c", b"vc", "", _vector(3), 0)])
    bad_framing = _raw_action(shard.config.replica(shard.leader()).rpc, "put_many",
                              encode_request({"items": [{"key": "d", "has_vector": True}]}, [b"value only"]))
    assert bad_framing["error"] == "invalid_input" and "blobs" in bad_framing["message"]
    assert leader.get("c") is None and leader.get("d") is None
    shard.wait_converged(min_applied=1)


def test_search_many_answers_each_search_and_refuses_bad_ones_alone(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard()
    leader = shard.client(shard.leader())
    leader.put_many([PutItem(f"k{i}", f"v{i}".encode(), "docs" if i % 2 else "", _vector(i), 0) for i in range(6)])
    answers = leader.search_many([
        SearchQuery(_vector(2), "", 1, None),
        SearchQuery(_vector(3), "docs", 2, 0.99),
        SearchQuery(b"\x00" * 8, "", 1, None),
        SearchQuery(_vector(4), "", 0, None),
        SearchQuery(_vector(5), "nowhere", 1, None),
    ])
    assert answers[0] == leader.search(_vector(2), scope="", top_k=1, threshold=None)
    assert [(key, value) for key, value, _ in answers[0]] == [("k2", b"v2")]
    assert [(key, value) for key, value, _ in answers[1]] == [("k3", b"v3")]  # threshold 0.99: one hit
    assert isinstance(answers[2], InvalidInputError) and "bytes" in str(answers[2])
    assert isinstance(answers[3], InvalidInputError) and "top_k" in str(answers[3])
    assert answers[4] == []  # an empty scope has no hits
    follower = next(rid for rid in shard.ids if rid != shard.leader())
    with pytest.raises(NotLeaderError):
        shard.client(follower).search_many([SearchQuery(_vector(1), "", 1, None)])
    wait_for(lambda: shard.client(follower).search_many([SearchQuery(_vector(1), "docs", 1, None)],
                                                        read_from="any")[0][:1] != [], what="a follower to apply")
    bad = _raw_action(shard.config.replica(shard.leader()).rpc, "search_many",
                      encode_request({"queries": [{"top_k": 1}, {"top_k": 1}]}, [_vector(1)]))
    assert bad["error"] == "invalid_input" and "vector blobs" in bad["message"]


def test_node_embeds_only_requests_with_text_and_no_vector(make_shard: Callable[..., LocalShard]) -> None:
    shard = make_shard(replicas=1)
    client = shard.client(shard.leader())
    _put(client, "with-vector")
    assert client.stats()["embedder_loaded"] is False  # vectors come from clients
    client.put("with-text", b"payload", scope="docs", vector=None, ttl_ms=0, text="rust borrow checker")
    assert client.stats()["embedder_loaded"] is True
    query = HashEmbedding(DIM).embed_one("rust borrow checker").tobytes()
    hits = client.search(query, scope="docs", top_k=1, threshold=0.99)
    assert [(key, value) for key, value, _ in hits] == [("with-text", b"payload")]


def test_without_a_majority_writes_fail_with_no_quorum_and_nothing_half_applies(
    make_shard: Callable[..., LocalShard],
) -> None:
    shard = make_shard(commit_timeout=1.5)
    leader = shard.leader()
    _put(shard.client(leader), "before", value=b"1")
    followers = [rid for rid in shard.ids if rid != leader]
    for rid in followers:
        shard.stop(rid, signal.SIGKILL)
    with pytest.raises((NoQuorumError, NotLeaderError)):
        _put(shard.client(leader), "during", value=b"2")
    assert shard.client(leader).get("during", read_from="any") is None  # not applied without a commit
    for rid in followers:
        shard.start(rid)
    new_leader = shard.leader()
    digests = shard.wait_converged(min_applied=1)
    assert shard.client(new_leader).get("before") == b"1"
    # "during" may have committed after all (it was in the old leader's log): either way every replica agrees.
    during = {rid: shard.client(rid).get("during", read_from="any") for rid in digests}
    assert len(set(during.values())) == 1 and set(during.values()) <= {None, b"2"}


def test_a_node_serves_tls_when_the_cluster_file_sets_a_certificate(
    make_shard: Callable[..., LocalShard], tmp_path: Path
) -> None:
    cert, key = self_signed_cert()
    (tmp_path / "node.pem").write_bytes(cert)
    (tmp_path / "node.key").write_bytes(key)
    shard = make_shard(replicas=1, scheme="grpc+tls", tls_root_certs=cert,
                       tls_cert=str(tmp_path / "node.pem"), tls_key=str(tmp_path / "node.key"))
    client = shard.client(shard.leader())
    _put(client, "secret-key", value=b"over tls")
    assert client.get("secret-key") == b"over tls"
    untrusting = NodeClient(shard.config.replica("r0").rpc, token=TOKEN, timeout=3.0)
    with pytest.raises(ShardUnavailableError):
        untrusting.get("secret-key")
    untrusting.close()
