"""Fault tests on real node processes: kill -9, SIGSTOP/SIGCONT, whole-cluster restart, lost majority, catch-up.

Also: leader kills and pauses under large writes (no follower ever truncates an
entry it applied), and network partitions of Raft links (tests/support/partition.py).

Every test starts its own cluster in ``tmp_path`` and the harness stops every
process it started, also when the test fails.  Waits are bounded; nothing
asserts on speed (the gaps measured are printed, ``pytest -s`` shows them, and
docs/internals/testing.md, "Fault tests", quotes them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.harness import ClusterHarness, History, Op, check_history, wait_until
from support.partition import RaftPartitions

from semcache.cluster._client import DistributedSemanticKV
from semcache.errors import ClusterError, NoQuorumError, NotLeaderError, ShardUnavailableError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def cluster_2x3(tmp_path: Path) -> Iterator[ClusterHarness]:
    with ClusterHarness(tmp_path, shards=2, replicas=3) as cluster:
        yield cluster


@pytest.fixture
def shard_1x3(tmp_path: Path) -> Iterator[ClusterHarness]:
    # A small compaction threshold, so a returning or new replica has to take a snapshot.
    with ClusterHarness(tmp_path, shards=1, replicas=3, compaction_entries=100) as cluster:
        yield cluster


class PaddedValues:
    """A client whose values are padded to ``size`` bytes in the cluster, and stripped again when read.

    The history keeps the short values (a 40 KB copy per operation would not
    fit in memory); a padding that came back damaged is returned as is, so the
    checker reports it as a value no write wrote.  Only the key is embedded.
    """

    PAD = b"."

    def __init__(self, kv: DistributedSemanticKV, size: int) -> None:
        self.kv, self.size = kv, size
        self.shard_ids = kv.shard_ids
        self.shard_for = kv.shard_for

    def put(self, key: str, value: bytes) -> None:
        self.kv.put(key, value.ljust(self.size, self.PAD), text=key)

    def get(self, key: str) -> bytes | None:
        value = self.kv.get(key)
        if value is None or len(value) != self.size:
            return value
        return value.rstrip(self.PAD)


class WriteLoad:
    """Writer threads putting distinct values to their own keys (and reading some back) until stopped."""

    def __init__(self, kv: DistributedSemanticKV | PaddedValues, history: History, *, threads: int = 4,
                 keys: int = 12) -> None:
        self.kv, self.history = kv, history
        # Each thread writes the keys of one shard, so a stalled shard does not hold up the others' writers.
        names = [f"k{i}" for i in range(threads * keys * len(kv.shard_ids) * 2)]
        self.keys = [
            [f"t{t}:{n}" for n in names if kv.shard_for(f"t{t}:{n}") == kv.shard_ids[t % len(kv.shard_ids)]][:keys]
            for t in range(threads)
        ]
        self.stop = threading.Event()
        self.workers = [threading.Thread(target=self._run, args=(own,), daemon=True) for own in self.keys]

    def _run(self, own: list[str]) -> None:
        seq = 0
        while not self.stop.is_set():
            key = own[seq % len(own)]
            self.history.write(self.kv, key, f"{key}#{seq}".encode())
            if seq % 4 == 0:
                self.history.read(self.kv, own[(seq * 7) % len(own)])
            seq += 1

    def __enter__(self) -> WriteLoad:
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=60)
        assert not any(w.is_alive() for w in self.workers), "a writer did not stop"

    def all_keys(self) -> list[str]:
        return [key for own in self.keys for key in own]


def ack_gap(history: History, kv: DistributedSemanticKV, shard_id: str, since: float) -> float:
    """The longest pause between acknowledged writes to ``shard_id`` after ``since`` (seconds)."""
    acks = sorted(
        op.end for op in history.ops
        if op.kind == "write" and op.outcome == "ok" and kv.shard_for(op.key) == shard_id and op.end >= since
    )
    points = [since, *acks]
    return max(b - a for a, b in zip(points, points[1:], strict=False)) if len(points) > 1 else float("inf")


# ---------------------------------------------------------------- 1. kill -9
def test_kill9_of_a_leader_under_write_load_loses_no_acknowledged_write(cluster_2x3: ClusterHarness) -> None:
    kv = cluster_2x3.client(embedding=None, connection_timeout=1.0)
    history = History()
    load = WriteLoad(kv, history)
    with load:
        time.sleep(1.5)
        victim = cluster_2x3.leader_of("shard-0")
        killed_at = time.monotonic()
        cluster_2x3.kill9(victim)
        # Keep the load on until shard-0 has acknowledged writes again for a while (bounded).
        wait_until(
            lambda: sum(
                1 for op in history.ops
                if op.outcome == "ok" and op.kind == "write" and op.end > killed_at + 0.5
                and kv.shard_for(op.key) == "shard-0"
            ) >= 50,
            60,
            what="shard-0 to acknowledge writes again",
        )
    gap0 = ack_gap(history, kv, "shard-0", killed_at)
    gap1 = ack_gap(history, kv, "shard-1", killed_at)
    new_leader = cluster_2x3.leader_of("shard-0")
    assert new_leader != victim
    for key in load.all_keys():  # final reads: every acknowledged write must still be there
        history.read(kv, key)
    problems = check_history(history.ops)
    acked = sum(1 for op in history.ops if op.kind == "write" and op.outcome == "ok")
    unknown = sum(1 for op in history.ops if op.kind == "write" and op.outcome == "unknown")
    print(f"\n[fault 1] kill -9 of {victim}: {acked} writes acknowledged, {unknown} unknown; "
          f"longest ack gap shard-0 {gap0:.2f}s (killed shard), shard-1 {gap1:.2f}s; new leader {new_leader}")
    assert problems == []
    assert acked > 100
    # The killed replica comes back with its data and converges with the others.
    cluster_2x3.restart(victim)
    cluster_2x3.converge("shard-0")


# ------------------------------------------------------------ 2. SIGSTOP
def test_a_paused_leader_acknowledges_nothing_it_did_not_commit(shard_1x3: ClusterHarness) -> None:
    kv = shard_1x3.client(embedding=None, connection_timeout=1.0)
    history = History()
    for i in range(20):
        assert history.write(kv, f"before:{i}", f"before:{i}#0".encode()) == "ok"
    old = shard_1x3.leader_of("shard-0")
    old_term = (shard_1x3.health(old) or {})["term"]
    shard_1x3.pause(old)
    stale_outcome: list[object] = []

    def write_to_the_paused_leader() -> None:
        with shard_1x3.node(old, timeout=60.0) as node:
            try:
                node.put("stale-only", b"from the old leader", scope="", vector=None, ttl_ms=0)
                stale_outcome.append("ok")
            except ClusterError as exc:
                stale_outcome.append(exc)

    writer = threading.Thread(target=write_to_the_paused_leader, daemon=True)
    writer.start()
    try:
        new = shard_1x3.leader_of("shard-0", other_than=old)
        paused_for = time.monotonic()
        for i in range(30):  # acknowledged by the new majority while the old leader sleeps
            assert history.write(kv, f"during:{i}", f"during:{i}#0".encode()) == "ok"
    finally:
        shard_1x3.resume(old)
    writer.join(timeout=90)
    assert not writer.is_alive()
    print(f"\n[fault 2] paused {old}; {new} took over; the request held by the old leader ended with "
          f"{stale_outcome[0]!r} {time.monotonic() - paused_for:.1f}s later")
    # The old leader rejoins as a follower of a later term.
    health = wait_until(lambda: (h := shard_1x3.health(old)) and h.get("role") == "follower" and h, 30)
    assert health["term"] > old_term
    digest = shard_1x3.converge("shard-0")
    # Acknowledged => committed: if the old leader said yes, the value is there; and nothing else was lost.
    stale = kv.get("stale-only")
    if stale_outcome[0] == "ok":
        assert stale == b"from the old leader"
    else:
        assert isinstance(stale_outcome[0], ClusterError)
    for key in [f"before:{i}" for i in range(20)] + [f"during:{i}" for i in range(30)]:
        history.read(kv, key)
    assert check_history(history.ops) == []
    assert all(op.value is not None for op in history.ops if op.kind == "read")
    assert len(digest) == 64


# -------------------------------------------------- 3. whole-cluster restart
def same_top_k(first: list[tuple[str, float]], second: list[tuple[str, float]]) -> bool:
    """Whether two top-k lists agree: the same similarities, and the same keys above the cut-off.

    Keys tied at the k-th similarity may differ: which of them make the cut
    depends on whether a vector was still in the index backlog (exact scan) or
    already in the graph when the search ran.
    """
    if [sim for _, sim in first] != [sim for _, sim in second]:
        return False
    cutoff = first[-1][1] if first else 0.0
    by_sim = lambda hits: {(key, sim) for key, sim in hits if sim > cutoff}  # noqa: E731
    return by_sim(first) == by_sim(second)


def test_the_whole_cluster_killed_and_started_again_keeps_everything(cluster_2x3: ClusterHarness) -> None:
    kv = cluster_2x3.client(embedding=None)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    for i in range(150):
        kv.put(f"doc:{i}", f"{words[i % 10]} {words[(i * 3) % 10]} item {i}", scope="s" if i % 5 == 0 else None)
    kv.delete("doc:7")
    queries = ["alpha beta", "gamma item", "theta kappa"]
    before_search = {q: [(r.key, round(r.similarity, 5)) for r in kv.search(q, top_k=10)] for q in queries}
    before_scoped = sorted((r.key, round(r.similarity, 5)) for r in kv.search("alpha", top_k=50, scope="s"))
    before_keys = kv.scan("doc:", 1000)
    before_digests = {s: cluster_2x3.converge(s) for s in kv.shard_ids}
    replicas = [r.id for r in cluster_2x3.local.config().replicas()]
    for replica_id in replicas:
        cluster_2x3.kill9(replica_id)
    for replica_id in replicas:
        cluster_2x3.restart(replica_id)
    cluster_2x3.local.wait_for_leaders(60)
    after = cluster_2x3.client(embedding=None)
    assert after.scan("doc:", 1000) == before_keys and len(before_keys) == 149
    assert after.get("doc:7") is None
    for i in (0, 1, 42, 149):
        assert after.get(f"doc:{i}") is not None
    after_search = {q: [(r.key, round(r.similarity, 5)) for r in after.search(q, top_k=10)] for q in queries}
    assert {q: same_top_k(after_search[q], before_search[q]) for q in queries} == dict.fromkeys(queries, True)
    # The scope holds 30 entries, so all come back (in an order that may differ among ties).
    assert sorted((r.key, round(r.similarity, 5)) for r in after.search("alpha", top_k=50, scope="s")) == before_scoped
    assert len(before_scoped) == 30
    assert {s: cluster_2x3.converge(s) for s in kv.shard_ids} == before_digests


# ----------------------------------------------------- 4. majority down
def test_without_a_majority_writes_fail_clearly_and_nothing_appears_later(shard_1x3: ClusterHarness) -> None:
    kv = shard_1x3.client(embedding=None, connection_timeout=1.0, request_timeout=4.0)
    kv.put("kept", "committed before the outage")
    leader = shard_1x3.leader_of("shard-0")
    follower, survivor = shard_1x3.followers_of("shard-0")
    shard_1x3.kill9(leader)
    shard_1x3.kill9(follower)
    started = time.monotonic()
    with pytest.raises((NoQuorumError, ShardUnavailableError)) as info:
        kv.put("orphan", "written with no majority")
    failed_after = time.monotonic() - started
    assert info.value.shard_id == "shard-0" and "shard-0" in str(info.value)
    with pytest.raises(ClusterError):
        kv.get("kept")  # leader reads need a leader too
    print(f"\n[fault 4] with 2 of 3 down the write failed after {failed_after:.1f}s with "
          f"{type(info.value).__name__}: {info.value}")
    shard_1x3.restart(leader)
    shard_1x3.restart(follower)
    shard_1x3.leader_of("shard-0")
    shard_1x3.converge("shard-0")
    assert kv.get("orphan") is None  # no leader ever took it: it must not appear
    assert "orphan" not in kv.scan("", 100)
    assert all(r.key != "orphan" for r in kv.search("written with no majority", top_k=10))
    assert kv.get("kept") == b"committed before the outage"
    with shard_1x3.node(survivor) as node:
        assert node.get("orphan", read_from="any") is None


def test_a_write_the_leader_could_not_commit_is_all_or_nothing(shard_1x3: ClusterHarness) -> None:
    kv = shard_1x3.client(embedding=None, connection_timeout=1.0, request_timeout=3.0)
    leader = shard_1x3.leader_of("shard-0")
    followers = shard_1x3.followers_of("shard-0")
    for replica_id in followers:
        shard_1x3.kill9(replica_id)
    with pytest.raises(NoQuorumError):
        kv.put("maybe", "alpha beta maybe")
    for replica_id in followers:
        shard_1x3.restart(replica_id)
    shard_1x3.converge("shard-0")
    # The leader had it in its log: it may commit once the followers return, but only whole.
    value = kv.get("maybe")
    found = [r.key for r in kv.search("alpha beta maybe", top_k=5)]
    assert (value, "maybe" in found) in {(None, False), (b"alpha beta maybe", True)}
    print(f"\n[fault 4b] uncommitted write on a lone leader ({leader}) after the majority returned: "
          f"{'committed whole' if value else 'absent'}")


# ----------------------------------------------- 5. catch-up and membership
def test_a_restarted_and_a_new_follower_catch_up_and_the_new_one_votes(shard_1x3: ClusterHarness) -> None:
    kv = shard_1x3.client(embedding=None, connection_timeout=1.0, request_timeout=30.0)  # rides out elections
    lagging = shard_1x3.followers_of("shard-0")[0]
    shard_1x3.kill9(lagging)
    for i in range(300):  # past the compaction threshold: the log it missed is gone
        kv.put(f"k{i}", f"value {i}")
    shard_1x3.restart(lagging)
    digest = shard_1x3.converge("shard-0")
    with shard_1x3.node(lagging) as node:
        assert node.get("k299", read_from="any") == b"value 299"
    # A brand-new replica joins while the shard serves, and catches up by snapshot.
    added = shard_1x3.local.add_replica("shard-0", timeout=60)
    assert added.id in shard_1x3.replicas("shard-0") and len(shard_1x3.replicas("shard-0")) == 4
    assert shard_1x3.converge("shard-0") == digest
    # It votes: with 4 members a majority is 3, so losing the leader leaves a quorum only with it.
    old_leader = shard_1x3.leader_of("shard-0")
    shard_1x3.kill9(old_leader)
    kv.put("after", "written by the new majority")
    assert shard_1x3.leader_of("shard-0") != old_leader
    # And a dead member is removed while the shard serves.
    shard_1x3.local.remove_replica(old_leader)
    assert old_leader not in shard_1x3.replicas("shard-0")
    kv.put("after-remove", "still serving")
    with shard_1x3.node(added.id) as node:
        assert wait_until(lambda: node.get("after-remove", read_from="any"), 30) == b"still serving"


# -------------------------------------------------- 6. the history checker
def _op(kind: str, key: str, value: bytes | None, start: float, end: float, outcome: str = "ok") -> Op:
    return Op(kind, key, value, start, end, outcome)


def test_the_checker_accepts_a_correct_history_with_unknown_writes() -> None:
    ops = [
        _op("write", "k", b"1", 0, 1),
        _op("read", "k", b"1", 1.5, 2),
        _op("write", "k", b"2", 2, 3, "unknown"),  # may have happened
        _op("read", "k", b"1", 4, 5),
        _op("read", "k", b"2", 6, 7),
        _op("write", "k", b"3", 8, 9),
        _op("read", "k", b"3", 10, 11),
        _op("read", "other", None, 0, 1),
    ]
    assert check_history(ops) == []


def test_the_checker_finds_a_lost_acknowledged_write() -> None:
    ops = [_op("write", "k", b"1", 0, 1), _op("write", "k", b"2", 2, 3), _op("read", "k", b"1", 4, 5)]
    assert len(check_history(ops)) == 1 and "overwritten" in check_history(ops)[0]
    assert "read None" in check_history([_op("write", "k", b"1", 0, 1), _op("read", "k", None, 2, 3)])[0]


def test_the_checker_finds_a_value_never_written() -> None:
    assert "no write" in check_history([_op("write", "k", b"1", 0, 1), _op("read", "k", b"9", 2, 3)])[0]
    # A value from a write that started only after the read ended cannot explain it either.
    assert check_history([_op("read", "k", b"1", 0, 1), _op("write", "k", b"1", 2, 3)]) != []


def test_the_checker_treats_concurrent_writes_as_either_order() -> None:
    ops = [
        _op("write", "k", b"1", 0, 3),
        _op("write", "k", b"2", 1, 2),
        _op("read", "k", b"1", 4, 5),  # 1 may have been applied after 2
    ]
    assert check_history(ops) == []


# ------------------------------------- 7. no follower truncates what it applied
TRUNCATED_APPLIED = "truncating already-applied"  # pysyncobj's CRITICAL line when a follower cuts applied entries
LARGE_VALUE = 40_000  # two entries fill pysyncobj's 64 KiB append batch: resends cover fewer entries than sent


def acknowledged_since(history: History, since: float) -> int:
    return sum(1 for op in history.ops if op.kind == "write" and op.outcome == "ok" and op.end > since)


def every_replica_follows_a_leader(cluster: ClusterHarness, shard_id: str) -> bool:
    reports = [cluster.health(replica_id) for replica_id in cluster.replicas(shard_id)]
    return all(report is not None and report.get("leader") for report in reports)


@pytest.mark.timeout(600)
def test_leader_kills_and_pauses_under_large_writes_never_truncate_an_applied_entry(tmp_path: Path) -> None:
    """20 rounds of kill -9 / SIGSTOP of the leader while 4 writers put 40 KB values.

    A follower answering an old resend must keep the entries it already holds
    (Raft: delete only from the first conflicting entry), so no replica ever
    logs pysyncobj's "truncating already-applied" line, every acknowledged
    write reads back, and the replicas end identical.
    """
    with ClusterHarness(tmp_path, shards=1, replicas=3) as cluster:
        kv = PaddedValues(cluster.client(embedding=None, connection_timeout=1.0), LARGE_VALUE)
        history = History()
        load = WriteLoad(kv, history, threads=4, keys=8)
        started = time.monotonic()
        with load:
            for round_ in range(20):
                wait_until(lambda: every_replica_follows_a_leader(cluster, "shard-0"), what="every replica back")
                leader = cluster.leader_of("shard-0")
                faulted_at = time.monotonic()
                if round_ % 2 == 0:
                    cluster.kill9(leader)
                    cluster.restart(leader)
                else:
                    cluster.pause(leader)
                    cluster.leader_of("shard-0", other_than=leader)
                    cluster.resume(leader)
                wait_until(lambda since=faulted_at: acknowledged_since(history, since) >= 8, 60,
                           what="writes acknowledged after the fault")
        for key in load.all_keys():  # every acknowledged write must still be there
            history.read(kv, key)
        cluster.converge("shard-0")
        acked = sum(1 for op in history.ops if op.kind == "write" and op.outcome == "ok")
        logs = {r: (cluster.local.directory / "logs" / f"{r}.log").read_text(errors="replace")
                for r in cluster.replicas("shard-0")}
    truncations = {replica_id: text.count(TRUNCATED_APPLIED) for replica_id, text in logs.items()}
    print(f"\n[fault 7] 20 leader faults in {time.monotonic() - started:.0f}s: {acked} writes of {LARGE_VALUE} bytes "
          f"acknowledged; truncations of applied entries: {truncations}")
    assert check_history(history.ops) == []
    assert all(op.value is not None for op in history.ops[-len(load.all_keys()):])
    assert truncations == dict.fromkeys(logs, 0)


# ------------------------------------------------------- 8. network partitions
@pytest.fixture
def partitioned_1x3(tmp_path: Path) -> Iterator[tuple[ClusterHarness, RaftPartitions]]:
    cluster = ClusterHarness(tmp_path, shards=1, replicas=3)
    with RaftPartitions(cluster.local) as net, cluster:  # the proxies start first, the nodes behind them
        yield cluster, net


def put_directly(cluster: ClusterHarness, replica_id: str, key: str, value: bytes) -> object:
    """Put through one replica's RPC endpoint (no client retries); "ok" or the error it answered with."""
    with cluster.node(replica_id, timeout=30.0) as node:
        try:
            node.put(key, value, scope="", vector=None, ttl_ms=0)
            return "ok"
        except ClusterError as exc:
            return exc


def test_an_isolated_leader_commits_nothing_and_the_majority_carries_on(
    partitioned_1x3: tuple[ClusterHarness, RaftPartitions],
) -> None:
    cluster, net = partitioned_1x3
    kv = cluster.client(embedding=None, connection_timeout=1.0, request_timeout=20.0)
    history = History()
    for i in range(10):
        assert history.write(kv, f"before:{i}", f"before:{i}#0".encode()) == "ok"
    old = cluster.leader_of("shard-0")
    old_term = (cluster.health(old) or {})["term"]
    net.partition(old)
    cut_at = time.monotonic()
    # The isolated leader cannot commit: a write sent to it fails (no quorum, or it stepped down meanwhile).
    isolated = put_directly(cluster, old, "isolated", b"written to the isolated leader")
    assert isinstance(isolated, NoQuorumError | NotLeaderError), isolated
    # It steps down once it has not heard from a majority for leaderFallbackTimeout.
    wait_until(lambda: (h := cluster.health(old)) is not None and h["role"] != "leader", 30,
               what="the isolated leader to step down")
    stepped_down_after = time.monotonic() - cut_at
    new = cluster.leader_of("shard-0", other_than=old)
    during = [history.write(kv, f"during:{i}", f"during:{i}#0".encode()) for i in range(20)]
    assert during.count("ok") >= 15, during
    # The minority side refuses writes.
    minority = put_directly(cluster, old, "minority", b"written to the minority")
    assert isinstance(minority, NoQuorumError | NotLeaderError), minority
    net.heal()
    digest = cluster.converge("shard-0")
    health = wait_until(lambda: (h := cluster.health(old)) and h.get("role") == "follower" and h, 30)
    assert health["term"] > old_term
    print(f"\n[fault 8] isolated leader {old} refused with {type(isolated).__name__}, stepped down after "
          f"{stepped_down_after:.1f}s; {new} led the majority; healed and converged ({digest[:12]})")
    for key in [f"before:{i}" for i in range(10)] + [f"during:{i}" for i in range(20)]:
        history.read(kv, key)
    assert check_history(history.ops) == []
    assert kv.get("isolated") is None and kv.get("minority") is None  # never reached a majority
    assert net.unidentified == 0  # every Raft connection was told apart by the proxies


def test_partitions_under_write_load_lose_no_acknowledged_write(
    partitioned_1x3: tuple[ClusterHarness, RaftPartitions],
) -> None:
    cluster, net = partitioned_1x3
    kv = cluster.client(embedding=None, connection_timeout=1.0)
    history = History()
    load = WriteLoad(kv, history, threads=3, keys=8)
    with load:
        for victim in (cluster.followers_of("shard-0")[0], cluster.leader_of("shard-0")):
            was_leader = victim == cluster.leader_of("shard-0")
            net.partition(victim)
            cut_at = time.monotonic()
            if was_leader:
                cluster.leader_of("shard-0", other_than=victim)
            wait_until(lambda since=cut_at: acknowledged_since(history, since) >= 20, 60,
                       what="the majority to acknowledge writes during the partition")
            assert (cluster.health(victim) or {}).get("has_quorum") is False
            net.heal()
            healed_at = time.monotonic()
            wait_until(lambda since=healed_at: acknowledged_since(history, since) >= 10, 60,
                       what="writes acknowledged after the heal")
    for key in load.all_keys():
        history.read(kv, key)
    cluster.converge("shard-0")
    acked = sum(1 for op in history.ops if op.kind == "write" and op.outcome == "ok")
    unknown = sum(1 for op in history.ops if op.kind == "write" and op.outcome == "unknown")
    print(f"\n[fault 8b] a follower, then the leader, partitioned under load: {acked} acknowledged, {unknown} unknown")
    assert check_history(history.ops) == []
