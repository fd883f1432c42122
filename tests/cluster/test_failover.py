"""Fast failover: a follower campaigns as soon as its leader's connection drops, and clients find the new leader
without waiting out their timeouts.  Outcomes and ordering only: the seconds are benchmarks/chaos.py's."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from semcache.cluster._client.connections import ConnectionPool
from semcache.cluster._client.retry import MAX_BACKOFF, ShardCaller
from semcache.cluster._client.topology import ShardRoute
from semcache.cluster._config import Replica
from semcache.cluster._raft.leadership import LEADER_LOSS_STAGGER, Leadership
from semcache.cluster._raft.membership import MemberTable
from semcache.errors import NoQuorumError, NotLeaderError, ShardUnavailableError
from tests.support.harness import ClusterHarness, History, check_history, wait_until

# ------------------------------------------------------------ the follower


class _Node:
    def __init__(self, address: str) -> None:
        self.id = address


class FakeSyncObj:
    """The pysyncobj state :class:`Leadership` reads and the election deadline it may bring forward."""

    def __init__(self, leader: str | None, *, leading: bool = False) -> None:
        self._leader = None if leader is None else _Node(leader)
        self._leading = leading
        self._SyncObj__raftElectionDeadline = time.monotonic() + 1.5  # noqa: N815 - pysyncobj's private name

    def _getLeader(self) -> _Node | None:  # noqa: N802
        return self._leader

    def _isLeader(self) -> bool:  # noqa: N802
        return self._leading

    def due_in(self) -> float:
        return self._SyncObj__raftElectionDeadline - time.monotonic()


MEMBERS = [Replica(f"r{i}", f"127.0.0.1:700{i}", f"grpc://127.0.0.1:800{i}") for i in range(3)]


def _leadership(syncobj: FakeSyncObj, replica_id: str, leader_loss_election: float = 0.1) -> Leadership:
    return Leadership(syncobj, members=MemberTable(MEMBERS), applier=None,  # type: ignore[arg-type]
                      shard_id="shard-0", replica_id=replica_id, leader_loss_election=leader_loss_election)


def test_followers_campaign_soon_after_their_leaders_connection_drops_one_after_the_other() -> None:
    first, second = FakeSyncObj(leader="127.0.0.1:7000"), FakeSyncObj(leader="127.0.0.1:7000")
    _leadership(first, "r1").on_peer_disconnected(_Node("127.0.0.1:7000"), True)
    _leadership(second, "r2").on_peer_disconnected(_Node("127.0.0.1:7000"), True)
    assert first.due_in() <= 0.1  # the first by replica id campaigns first...
    assert 0.1 < second.due_in() <= 0.1 + LEADER_LOSS_STAGGER  # ...the next later, so they do not split the vote
    assert first.due_in() < second.due_in() < 1.0


@pytest.mark.parametrize(("case", "node", "was_connected", "leader", "leading", "setting"), [
    ("another peer dropped", "127.0.0.1:7002", True, "127.0.0.1:7000", False, 0.1),
    ("a failed reconnect, not a drop", "127.0.0.1:7000", False, "127.0.0.1:7000", False, 0.1),
    ("no leader known", "127.0.0.1:7000", True, None, False, 0.1),
    ("this replica leads", "127.0.0.1:7000", True, "127.0.0.1:7000", True, 0.1),
    ("turned off", "127.0.0.1:7000", True, "127.0.0.1:7000", False, 0.0),
])
def test_anything_else_leaves_the_election_timeout_alone(
    case: str, node: str, was_connected: bool, leader: str | None, leading: bool, setting: float
) -> None:
    syncobj = FakeSyncObj(leader=leader, leading=leading)
    leadership = _leadership(syncobj, "r1", setting)
    leadership.on_peer_disconnected(_Node(node), was_connected)
    assert syncobj.due_in() > 1.0 and leadership.early_elections == 0, case


def test_an_election_is_only_ever_brought_forward() -> None:
    syncobj = FakeSyncObj(leader="127.0.0.1:7000")
    syncobj._SyncObj__raftElectionDeadline = time.monotonic() + 0.01  # already due sooner
    _leadership(syncobj, "r2").on_peer_disconnected(_Node("127.0.0.1:7000"), True)
    assert syncobj.due_in() <= 0.01


# -------------------------------------------------------------- the client


class Electing:
    """A replica of a shard that is electing: no leader to name."""

    def put(self) -> None:
        raise NotLeaderError("electing", leader_hint=None)


class Refusing:
    """A replica whose process is gone: the connection is refused at once."""

    def put(self) -> None:
        raise ShardUnavailableError("connection refused")


def test_a_client_asks_an_electing_shard_again_at_least_every_tenth_of_a_second() -> None:
    sleeps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    replicas = {"fake://a": Refusing(), "fake://b": Electing(), "fake://c": Electing()}
    route = ShardRoute("shard-0", [Replica(name[-1], "", name) for name in replicas])
    route.leader = "fake://a"
    caller = ShardCaller({"shard-0": route}, ConnectionPool(lambda address: replicas[address]),  # type: ignore[arg-type, return-value]
                         clock=lambda: now[0], sleep=sleep)
    with pytest.raises(NoQuorumError):
        caller.run("shard-0", lambda node: node.put(), leader=True, timeout=3.0)
    assert MAX_BACKOFF <= 0.1 and max(sleeps) <= 0.1
    assert len(sleeps) >= 25  # about ten sweeps a second over the 3 s
    assert route.leader is None  # the refused one is no longer taken for the leader


def test_a_refused_connection_moves_to_the_next_replica_without_sleeping() -> None:
    sleeps: list[float] = []

    class Leader:
        def put(self) -> str:
            return "stored"

    replicas: dict[str, Any] = {"fake://a": Refusing(), "fake://b": Leader()}
    route = ShardRoute("shard-0", [Replica(name[-1], "", name) for name in replicas])
    route.leader = "fake://a"
    caller = ShardCaller({"shard-0": route}, ConnectionPool(lambda address: replicas[address]),
                         sleep=sleeps.append)
    assert caller.run("shard-0", lambda node: node.put(), leader=True, timeout=3.0) == "stored"
    assert sleeps == [] and route.leader == "fake://b"


# ------------------------------------------------------------- real nodes


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterHarness]:
    with ClusterHarness(tmp_path, shards=2, replicas=3) as harness:
        yield harness


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_leader_is_replaced_by_an_early_election_and_the_other_shard_keeps_writing(
    cluster: ClusterHarness,
) -> None:
    kv = cluster.client(connection_timeout=1.0, request_timeout=30.0)
    history = History()
    stop = threading.Event()
    keys = {shard: [k for k in (f"key-{i}" for i in range(400)) if kv.shard_for(k) == shard][:20]
            for shard in kv.shard_ids}

    def write(shard: str, writer: int) -> None:
        seq = 0
        while not stop.is_set():
            key = keys[shard][seq % len(keys[shard])]
            # Every value unique (the writer's number in it): the history check finds a read's write by its value.
            history.write(kv, key, f"{key}#{writer}.{seq}".encode())
            seq += 1

    writers = [threading.Thread(target=write, args=(shard, n), daemon=True)
               for shard in kv.shard_ids for n in (0, 1)]
    for writer in writers:
        writer.start()
    try:
        wait_until(lambda: len(history.ops) > 50, what="writes to flow")
        victim = cluster.leader_of("shard-0")
        before = cluster.health(victim)
        assert before is not None
        killed_at = time.monotonic()
        cluster.local.signal(victim, signal.SIGKILL)

        def acked_after(shard: str, since: float) -> list[float]:
            """When the writes to ``shard`` started after ``since`` were acknowledged (a write in flight at the
            kill may have committed before it)."""
            return sorted(op.end for op in list(history.ops) if op.kind == "write" and op.outcome == "ok"
                          and kv.shard_for(op.key) == shard and op.start > since)

        resumed = wait_until(lambda: (acked_after("shard-0", killed_at) or [None])[0], 60,
                             what="shard-0 to take writes again")
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=60)
    survivors = [r for r in cluster.replicas("shard-0") if r != victim]
    health = {r: cluster.health(r) for r in survivors}
    assert all(h is not None for h in health.values())
    assert sum(h["early_elections"] for h in health.values() if h) >= 1  # the drop was noticed and acted on
    assert any(h and h["role"] == "leader" and h["term"] > before["term"] for h in health.values())
    other = [t for t in acked_after("shard-1", killed_at) if t < resumed]
    print(f"\n[failover] shard-0 resumed {resumed - killed_at:.2f}s after the kill; shard-1 acknowledged "
          f"{len(other)} writes meanwhile")
    if resumed - killed_at > 5.0:  # so long that only waiting on shard-0 explains a silent shard-1
        assert other, "shard-1's writers waited for shard-0's election"
    for shard in kv.shard_ids:  # nothing acknowledged was lost
        for key in keys[shard]:
            history.read(kv, key)
    assert check_history(history.ops) == []
