"""Shard membership: the replicated member table, safe changes of it, and forced membership for recovery.

pysyncobj's own membership knows Raft addresses only.  Every replica also
needs the others' RPC addresses (to name the leader in a ``NotLeaderError``),
so the table of :class:`~semcache.cluster._config.Replica` records is itself
replicated (the ``@replicated`` ``set_member``) and saved in snapshots.

>>> table = MemberTable([Replica("r0", "127.0.0.1:7000", "grpc://127.0.0.1:8000")])
>>> table.record("r1", "127.0.0.1:7001", "grpc://127.0.0.1:8001", present=True)
>>> table.rpc_of_raft("127.0.0.1:7001")
'grpc://127.0.0.1:8001'
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from semcache.cluster._config import ClusterConfig, Replica, ShardConfig
from semcache.cluster._raft.compat import FAIL_REASON
from semcache.cluster._raft.group_commit import TIMEOUT, map_failure
from semcache.errors import ClusterError, ConfigurationError, InvalidInputError, SemcacheError

if TYPE_CHECKING:
    from semcache.cluster._raft.replica import ReplicatedShard


class MemberTable:
    """The shard's replicas by id: the config's at start, then as ``set_member`` entries and snapshots say."""

    def __init__(self, replicas: Iterable[Replica]) -> None:
        self._lock = threading.Lock()
        self._members = {replica.id: replica for replica in replicas}

    def record(self, replica_id: str, raft: str, rpc: str, *, present: bool) -> None:
        """Apply one ``set_member`` entry: record the replica's addresses, or forget it."""
        with self._lock:
            if present:
                self._members[replica_id] = Replica(replica_id, raft, rpc)
            else:
                self._members.pop(replica_id, None)

    def copy(self) -> dict[str, Replica]:
        """The members by id, as a dict the caller owns."""
        with self._lock:
            return dict(self._members)

    def rpc_of_raft(self, raft: str) -> str | None:
        """The RPC address of the member whose Raft address is ``raft``, or None."""
        with self._lock:
            for member in self._members.values():
                if member.raft == raft:
                    return member.rpc
        return None

    def to_json(self) -> list[dict[str, Any]]:
        """The members as JSON-ready records (for a snapshot)."""
        return [dataclasses.asdict(member) for member in self.copy().values()]

    def restore(self, records: list[dict[str, Any]]) -> None:
        """Replace the table with the records of :meth:`to_json` (from a snapshot)."""
        members = {record["id"]: Replica(**record) for record in records}
        with self._lock:
            self._members = members


class Membership:
    """Adding and removing replicas of a shard (on its leader), safely: the member table, then pysyncobj's cluster.

    pysyncobj counts a new member as a voter from the moment its ``add`` entry is
    appended, and has no way to add a non-voter and promote it later (its
    read-only nodes have no address and cannot become members).  So a change is
    refused, before anything is logged, unless it is safe:

    * every address is valid (host:port, port in range, loopback unless the
      cluster file sets ``allow_remote``, a ``grpc://`` RPC address) and unused;
    * a new replica's node is already listening on its Raft address (start it
      first), so a dead or mistyped address never becomes a voter;
    * after the change, the replicas this leader is connected to (itself
      included) are still a majority of the new membership;
    * one change at a time: a second is refused while one is in progress.

    A new member is a voter while it catches up; with the checks above that
    costs no quorum unless the shard had a single replica (then writes wait
    until the second has caught up).

    Args:
        shard: the replica (its ``set_member`` and pysyncobj's ``addNodeToCluster``/``removeNodeFromCluster``).
        table: the shard's member table.
        commit_timeout: seconds each step may take to commit.
    """

    def __init__(self, shard: ReplicatedShard, table: MemberTable, *, commit_timeout: float) -> None:
        self._shard = shard
        self._table = table
        self._commit_timeout = commit_timeout
        self._changing = threading.Lock()

    def add_replica(self, replica_id: str, raft: str, rpc: str, timeout: float | None = None) -> None:
        """Add a replica to this shard (call on the leader, with the new node running); it catches up from the
        log or a snapshot.

        Raises:
            NotLeaderError: this replica does not lead.
            InvalidInputError: an invalid or taken id or address.
            ClusterError: another change is in progress, the new node is not listening, or the change would
                leave the shard without a live majority (nothing was logged); a step failed to commit.
        """
        shard = self._shard
        shard.require_leader()
        new = Replica(replica_id, raft, rpc)
        with self._one_change(f"add {replica_id}"):
            members = self._table.copy()
            if replica_id in members:
                raise InvalidInputError(f"replica {replica_id!r} is already a member of {shard.shard_id}")
            check_addresses(shard.config, shard.shard_id, [*members.values(), new])
            probe_listening(new)
            voters, live = self._voters_and_live()
            self._check_live_majority(voters + 1, live + 1, f"adding {replica_id}")
            self._sync(lambda cb: shard.set_member(replica_id, raft, rpc, True, callback=cb), timeout)
            try:
                self._sync(lambda cb: shard.addNodeToCluster(raft, callback=cb), timeout)
            except SemcacheError:  # no phantom: forget the addresses again (best effort; a retry is idempotent)
                with contextlib.suppress(SemcacheError):
                    self._sync(lambda cb: shard.set_member(replica_id, "", "", False, callback=cb), timeout)
                raise

    def remove_replica(self, replica_id: str, timeout: float | None = None) -> None:
        """Remove a replica from this shard (call on the leader; a leader cannot remove itself).

        A replica in the member table that pysyncobj does not count (left over by a forced recovery) is only
        forgotten.

        Raises:
            NotLeaderError: this replica does not lead.
            InvalidInputError: not a member, or the leader itself.
            ClusterError: another change is in progress, or the removal would leave the shard without a live
                majority (nothing was logged); a step failed to commit.
        """
        shard = self._shard
        shard.require_leader()
        with self._one_change(f"remove {replica_id}"):
            member = self._table.copy().get(replica_id)
            if member is None:
                raise InvalidInputError(f"replica {replica_id!r} is not a member of {shard.shard_id}")
            if member.id == shard.replica_id:
                raise InvalidInputError("the leader cannot remove itself; remove it from another replica once it leads")
            node = next((n for n in shard.otherNodes if n.id == member.raft), None)
            if node is not None:
                voters, live = self._voters_and_live()
                self._check_live_majority(voters - 1, live - shard.isNodeConnected(node), f"removing {replica_id}")
                self._sync(lambda cb: shard.removeNodeFromCluster(member.raft, callback=cb), timeout)
            self._sync(lambda cb: shard.set_member(replica_id, "", "", False, callback=cb), timeout)

    @contextlib.contextmanager
    def _one_change(self, what: str) -> Iterator[None]:
        if not self._changing.acquire(blocking=False):
            raise ClusterError(f"cannot {what}: another membership change of {self._shard.shard_id} is in "
                               "progress; retry once it finished", shard_id=self._shard.shard_id)
        try:
            yield
        finally:
            self._changing.release()

    def _voters_and_live(self) -> tuple[int, int]:
        """pysyncobj's voting members (this one included), and how many of them this leader is connected to."""
        others = self._shard.otherNodes
        return len(others) + 1, 1 + sum(bool(self._shard.isNodeConnected(node)) for node in others)

    def _check_live_majority(self, voters: int, live: int, what: str) -> None:
        majority = voters // 2 + 1
        if live < majority:
            raise ClusterError(
                f"refused {what}: {voters} voting replicas need {majority} for a quorum, and only {live} would be "
                "connected; bring the missing replicas back first (or recover the shard: semcache cluster recover)",
                shard_id=self._shard.shard_id,
            )

    def _sync(self, start: Callable[[Callable[[Any, Any], None]], None], timeout: float | None) -> None:
        """Start a pysyncobj call with a callback and wait for it to commit; raise its failure."""
        done = threading.Event()
        outcome: list[Any] = []

        def callback(result: Any, error: Any) -> None:
            outcome.append(error)
            done.set()

        start(callback)
        if not done.wait(timeout or self._commit_timeout):
            raise map_failure(TIMEOUT, self._shard.shard_id, self._shard.leader_rpc())
        if outcome[0] != FAIL_REASON.SUCCESS:
            raise map_failure(outcome[0], self._shard.shard_id, self._shard.leader_rpc())


def check_addresses(config: ClusterConfig, shard_id: str, replicas: list[Replica]) -> None:
    """Check a shard's would-be replicas as the cluster file would be checked (address forms, loopback unless
    ``allow_remote``, TLS scheme, no address or id used twice in the cluster).

    Raises:
        InvalidInputError: what the cluster file's check said.
    """
    shard = ShardConfig(shard_id, tuple(replicas))
    try:
        config.with_shard(shard)
    except ConfigurationError as exc:
        raise InvalidInputError(f"invalid replica for {shard_id}: {exc}") from exc


def probe_listening(replica: Replica, timeout: float = 1.0) -> None:
    """Raise unless something accepts TCP connections on ``replica``'s Raft address (its node runs).

    Raises:
        ClusterError: nothing listens there.
    """
    host, _, port = replica.raft.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(
            f"nothing listens on {replica.id}'s Raft address {replica.raft} ({exc}): start its node before "
            "adding it, so that a wrong or dead address never becomes a voting member"
        ) from exc


class ForcedMembership:
    """``semcache node --force-membership``: this replica's members are the cluster file's, whatever its journal
    and snapshot say (the way back for a shard that lost its quorum; see docs/operations/nodes.md).

    While the replica replays what it held at start (entries up to :attr:`startup_index`,
    and the snapshot), pysyncobj's membership changes are ignored (:func:`.compat.ignore_membership_history`);
    entries appended after the start apply as usual.
    """

    def __init__(self, shard: ReplicatedShard) -> None:
        self._shard = shard
        self.startup_index: int | None = None  # None until the journal is loaded: ignore everything meanwhile

    def replaying_entry(self) -> bool:
        """True while the entry being applied was in the journal at start (its index <= startup_index)."""
        return self.startup_index is None or self._shard.raftLastApplied < self.startup_index

    def replaying_snapshot(self) -> bool:
        """True for the snapshot loaded at start (its index <= startup_index)."""
        return self.startup_index is None or self._shard.raftLastApplied <= self.startup_index
