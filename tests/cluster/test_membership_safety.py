"""Membership changes cannot brick a shard: checked before anything is logged, one at a time, never costing the
live majority; and a shard that lost its quorum for good comes back with ``semcache cluster recover``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from semcache.cluster._config import ClusterConfig, Replica, ShardConfig
from semcache.cluster._local import free_ports
from semcache.cluster._raft.compat import FAIL_REASON
from semcache.cluster._raft.membership import Membership, MemberTable
from semcache.cluster._wire import Topology
from semcache.errors import ClusterError, InvalidInputError
from tests.support.harness import ClusterHarness, wait_until

# ------------------------------------------------------------ in-process


class _Node:
    def __init__(self, address: str) -> None:
        self.id = address


class FakeShard:
    """What :class:`Membership` uses of a replica: a leader whose pysyncobj calls commit when told to."""

    def __init__(self, members: list[Replica], connected: set[str]) -> None:
        self.shard_id, self.replica_id = "shard-0", members[0].id
        self.config = ClusterConfig(secret="s", shards=(ShardConfig("shard-0", tuple(members)),))
        self.otherNodes = {_Node(m.raft) for m in members[1:]}
        self._connected = connected
        self.release = threading.Event()
        self.release.set()
        self.logged: list[tuple[Any, ...]] = []

    def require_leader(self) -> None:
        pass

    def leader_rpc(self) -> str:
        return "grpc://127.0.0.1:1"

    def isNodeConnected(self, node: _Node) -> bool:  # noqa: N802 - pysyncobj's name
        return node.id in self._connected

    def _commit(self, entry: tuple[Any, ...], callback: Callable[[Any, Any], None]) -> None:
        def later() -> None:
            self.release.wait(30)
            self.logged.append(entry)
            callback(True, FAIL_REASON.SUCCESS)

        threading.Thread(target=later, daemon=True).start()

    def set_member(self, *args: Any, callback: Callable[[Any, Any], None]) -> None:
        self._commit(("set_member", *args), callback)

    def addNodeToCluster(self, raft: str, callback: Callable[[Any, Any], None]) -> None:  # noqa: N802
        self._commit(("add", raft), callback)

    def removeNodeFromCluster(self, raft: str, callback: Callable[[Any, Any], None]) -> None:  # noqa: N802
        self._commit(("remove", raft), callback)


def _members(count: int) -> list[Replica]:
    ports = iter(free_ports(2 * count))
    return [Replica(f"r{i}", f"127.0.0.1:{next(ports)}", f"grpc://127.0.0.1:{next(ports)}") for i in range(count)]


@pytest.fixture
def listening() -> Iterator[Replica]:
    """A replica-to-be whose 'node' listens on its Raft port."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield Replica("new", f"127.0.0.1:{server.getsockname()[1]}", f"grpc://127.0.0.1:{free_ports(1)[0]}")
    server.close()


def _membership(members: list[Replica], connected: set[str]) -> tuple[Membership, FakeShard]:
    shard = FakeShard(members, connected)
    return Membership(shard, MemberTable(members), commit_timeout=10.0), shard  # type: ignore[arg-type]


@pytest.mark.parametrize(("raft", "rpc", "why"), [
    ("127.0.0.0:99999", "grpc://127.0.0.1:9", "host:port"),  # the port overflowed in every tick loop
    ("not-an-address", "grpc://127.0.0.1:9", "host:port"),
    ("10.1.2.3:7000", "grpc://127.0.0.1:9", "loopback"),
    ("127.0.0.1:7000", "http://127.0.0.1:9", "grpc://"),
    ("127.0.0.1:7000", "grpc://10.1.2.3:9", "loopback"),
])
def test_an_invalid_address_is_refused_before_anything_is_logged(raft: str, rpc: str, why: str) -> None:
    members = _members(3)
    membership, shard = _membership(members, {m.raft for m in members})
    with pytest.raises(InvalidInputError, match=why):
        membership.add_replica("new", raft, rpc)
    assert shard.logged == []


def test_a_taken_address_is_refused(listening: Replica) -> None:
    members = _members(3)
    membership, shard = _membership(members, {m.raft for m in members})
    with pytest.raises(InvalidInputError, match="duplicate"):
        membership.add_replica("new", members[1].raft, listening.rpc)
    assert shard.logged == []


def test_an_address_where_no_node_listens_never_becomes_a_member() -> None:
    members = _members(3)
    membership, shard = _membership(members, {m.raft for m in members})
    for attempt in range(3):  # the probe's three adds of unused loopback ports made six members
        raft, rpc = free_ports(2)
        with pytest.raises(ClusterError, match="nothing listens"):
            membership.add_replica(f"ghost{attempt}", f"127.0.0.1:{raft}", f"grpc://127.0.0.1:{rpc}")
    assert shard.logged == []


def test_a_change_that_would_leave_no_live_majority_is_refused(listening: Replica) -> None:
    members = _members(3)
    membership, shard = _membership(members, {members[1].raft})  # r2 is down: 2 of 3 live
    with pytest.raises(ClusterError, match="only 1 would be connected"):
        membership.remove_replica("r1")  # r0 + r2(down): 2 voters, 1 live
    membership, shard = _membership(_members(4), set())  # 1 of 4 live already
    with pytest.raises(ClusterError, match="need 3 for a quorum"):
        membership.add_replica(listening.id, listening.raft, listening.rpc)
    assert shard.logged == []


def test_removing_a_dead_member_is_allowed_and_a_good_add_logs_both_steps(listening: Replica) -> None:
    members = _members(3)
    membership, shard = _membership(members, {members[1].raft})
    membership.remove_replica("r2")  # down: removing it leaves 2 voters, both live
    assert shard.logged == [("remove", members[2].raft), ("set_member", "r2", "", "", False)]
    membership, shard = _membership(members, {m.raft for m in members})
    membership.add_replica(listening.id, listening.raft, listening.rpc)
    assert shard.logged == [("set_member", "new", listening.raft, listening.rpc, True), ("add", listening.raft)]


def test_one_membership_change_at_a_time(listening: Replica) -> None:
    members = _members(3)
    membership, shard = _membership(members, {m.raft for m in members})
    shard.release.clear()  # the first change's entries do not commit yet
    first = threading.Thread(target=membership.add_replica, args=(listening.id, listening.raft, listening.rpc))
    first.start()
    wait_until(lambda: not membership._changing.acquire(blocking=False) or membership._changing.release(), 10,
               what="the first change to start")
    with pytest.raises(ClusterError, match="in progress"):
        membership.remove_replica("r2")
    shard.release.set()
    first.join(timeout=30)
    membership.remove_replica("r2")  # once the first is done, the next may go
    assert [entry[0] for entry in shard.logged] == ["set_member", "add", "remove", "set_member"]


# ------------------------------------------------------------ real nodes


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterHarness]:
    with ClusterHarness(tmp_path, shards=1, replicas=3) as harness:
        yield harness


def semcache(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "semcache", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"semcache {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def members_of(cluster: ClusterHarness, replica_id: str) -> list[str]:
    with cluster.node(replica_id, timeout=5.0) as node:
        topology = Topology.from_header(node.topology())
    return sorted(r.id for s in topology.shards if s.id == topology.answered_for for r in s.replicas)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_real_leader_refuses_bad_members_and_keeps_its_quorum(cluster: ClusterHarness) -> None:
    leader = cluster.leader_of("shard-0")
    before = cluster.health(leader)
    assert before is not None
    with cluster.node(leader, timeout=15.0) as node:
        for raft in ("127.0.0.0:99999", "not-an-address"):
            with pytest.raises(InvalidInputError):
                node.add_replica("ghost", raft, "grpc://127.0.0.1:1")
        for attempt in range(3):
            raft, rpc = free_ports(2)
            with pytest.raises(ClusterError, match="nothing listens"):
                node.add_replica(f"ghost{attempt}", f"127.0.0.1:{raft}", f"grpc://127.0.0.1:{rpc}")
    assert members_of(cluster, leader) == ["shard-0-r0", "shard-0-r1", "shard-0-r2"]
    after = cluster.health(leader)
    assert after is not None and after["role"] == "leader" and after["term"] == before["term"]
    kv = cluster.client()
    kv.put("still", "writable")
    assert kv.get("still") == b"writable"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_shard_that_lost_its_majority_for_good_is_recovered_from_its_survivor(cluster: ClusterHarness) -> None:
    kv = cluster.client()
    for i in range(20):
        kv.put(f"k{i}", f"value {i}")
    semcache("cluster", "add-replica", "--shard", "shard-0", "--dir", str(cluster.local.directory))  # journaled
    survivor = cluster.leader_of("shard-0")
    lost = [r for r in cluster.local.config().shards[0].replicas if r.id != survivor]
    assert len(lost) == 3  # three of four machines gone, with their disks: no majority, ever
    config = cluster.local.config()
    for replica in lost:
        cluster.kill9(replica.id)
        shutil.rmtree(config.data_dir_of(replica.id))
    wait_until(lambda: (cluster.health(survivor) or {}).get("role") != "leader", what="the survivor to step down")

    out = semcache("cluster", "recover", "--shard", "shard-0", "--replicas", survivor, "--dir",
                   str(cluster.local.directory))
    assert f"recovered from {survivor}" in out and "forgot shard-0-r3" in out  # the journaled member too
    assert [r.id for r in cluster.local.config().replicas()] == [survivor]
    assert members_of(cluster, survivor) == [survivor]
    kv.refresh_topology()
    assert kv.get("k7") == b"value 7"  # what was committed is there
    kv.put("after", "recovery")

    for _ in range(2):  # back to three replicas
        semcache("cluster", "add-replica", "--shard", "shard-0", "--dir", str(cluster.local.directory))
    replicas = [r.id for r in cluster.local.config().replicas()]
    assert len(replicas) == 3 and members_of(cluster, survivor) == sorted(replicas)
    kv.refresh_topology()
    cluster.kill9(survivor)  # the recovered shard survives losing its seed
    assert cluster.leader_of("shard-0", other_than=survivor) != survivor
    assert kv.get("after") == b"recovery" and kv.get("k19") == b"value 19"
