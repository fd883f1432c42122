"""Shard membership: the replicated member table, and adding or removing a replica.

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

import dataclasses
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from semcache.cluster._config import Replica
from semcache.cluster._raft.compat import FAIL_REASON
from semcache.cluster._raft.group_commit import TIMEOUT, map_failure
from semcache.errors import InvalidInputError

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
    """Adding and removing replicas of a shard (on its leader): the member table, then pysyncobj's cluster.

    Args:
        shard: the replica (its ``set_member`` and pysyncobj's ``addNodeToCluster``/``removeNodeFromCluster``).
        table: the shard's member table.
        commit_timeout: seconds each step may take to commit.
    """

    def __init__(self, shard: ReplicatedShard, table: MemberTable, *, commit_timeout: float) -> None:
        self._shard = shard
        self._table = table
        self._commit_timeout = commit_timeout

    def add_replica(self, replica_id: str, raft: str, rpc: str, timeout: float | None = None) -> None:
        """Add a replica to this shard (call on the leader); it catches up from the log or a snapshot."""
        shard = self._shard
        shard.require_leader()
        if replica_id in self._table.copy():
            raise InvalidInputError(f"replica {replica_id!r} is already a member of {shard.shard_id}")
        self._sync(lambda cb: shard.set_member(replica_id, raft, rpc, True, callback=cb), timeout)
        self._sync(lambda cb: shard.addNodeToCluster(raft, callback=cb), timeout)

    def remove_replica(self, replica_id: str, timeout: float | None = None) -> None:
        """Remove a replica from this shard (call on the leader; a leader cannot remove itself)."""
        shard = self._shard
        shard.require_leader()
        member = self._table.copy().get(replica_id)
        if member is None:
            raise InvalidInputError(f"replica {replica_id!r} is not a member of {shard.shard_id}")
        if member.id == shard.replica_id:
            raise InvalidInputError("the leader cannot remove itself; remove it from another replica once it leads")
        self._sync(lambda cb: shard.removeNodeFromCluster(member.raft, callback=cb), timeout)
        self._sync(lambda cb: shard.set_member(replica_id, "", "", False, callback=cb), timeout)

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
