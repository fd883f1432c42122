"""Who leads a shard, as one replica sees it, and the read barrier a new leader passes before serving reads."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from semcache.cluster._raft.applier import Applier
from semcache.cluster._raft.compat import election_noop_index, is_leader, leader_node
from semcache.cluster._raft.membership import MemberTable
from semcache.errors import NotLeaderError

if TYPE_CHECKING:
    from semcache.cluster._raft.compat import SyncObj

logger = logging.getLogger(__name__)

READ_BARRIER_TIMEOUT = 2.0  # seconds a new leader may take to apply its log before refusing leader reads
ROLES = {0: "follower", 1: "candidate", 2: "leader"}  # pysyncobj's raft states


class Leadership:
    """This replica's view of its shard's leader: checks, the leader's RPC address, the read barrier, role changes.

    Args:
        syncobj: the replica.
        members: the shard's member table (maps the leader's Raft address to its RPC address).
        applier: the applier (the read barrier waits for it).
        shard_id, replica_id: for errors and log messages.
    """

    def __init__(self, syncobj: SyncObj, *, members: MemberTable, applier: Applier, shard_id: str,
                 replica_id: str) -> None:
        self._syncobj = syncobj
        self._members = members
        self._applier = applier
        self._shard_id = shard_id
        self._replica_id = replica_id
        self._read_ready_noop: int | None = None  # the election no-op index a leader read barrier passed
        self.role_changes = 0

    def on_state_changed(self, old: int, new: int) -> None:
        """pysyncobj's ``onStateChanged`` hook: count and log the change of role."""
        self.role_changes += 1
        logger.info("replica %s: %s -> %s", self._replica_id, ROLES.get(old), ROLES.get(new))

    def is_leader(self) -> bool:
        return is_leader(self._syncobj)

    def leader_rpc(self) -> str | None:
        """RPC address of the replica this one believes leads, or None."""
        leader = leader_node(self._syncobj)
        return None if leader is None else self._members.rpc_of_raft(leader.id)

    def wait_leader(self, timeout: float) -> bool:
        """Wait until this replica knows a leader; True if it does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if leader_node(self._syncobj) is not None:
                return True
            time.sleep(0.05)
        return False

    def require_leader(self, *, for_read: bool = False) -> None:
        """Raise :class:`NotLeaderError` (with the leader's RPC address) unless this replica leads.

        With ``for_read``, also pass the read barrier (:meth:`_read_barrier`).
        """
        if not self.is_leader():
            raise NotLeaderError(
                f"replica {self._replica_id} of {self._shard_id} is not the leader",
                shard_id=self._shard_id,
                leader_hint=self.leader_rpc(),
            )
        if for_read:
            self._read_barrier()

    def _read_barrier(self) -> None:
        """Wait until this leader has applied every entry committed before its election.

        pysyncobj has no read index: a newly elected leader holds every committed
        entry but may not have applied them yet (after a whole-cluster restart it
        replays the journal), so a leader read could miss acknowledged writes.
        pysyncobj appends a no-op entry on election; once that entry and every
        batch queued before it are applied here, leader reads are current.  The
        check is paid once per term.  Past READ_BARRIER_TIMEOUT the read is
        refused with a retryable NotLeaderError that names this replica again.
        """
        noop = election_noop_index(self._syncobj)
        if noop is None or noop == self._read_ready_noop:
            return
        deadline = time.monotonic() + READ_BARRIER_TIMEOUT
        while self._syncobj.raftLastApplied < noop:
            if time.monotonic() > deadline:
                raise self._catching_up()
            time.sleep(0.002)
        if not self._applier.wait_queued_applied(deadline):
            raise self._catching_up()
        self._read_ready_noop = noop

    def _catching_up(self) -> NotLeaderError:
        return NotLeaderError(
            f"replica {self._replica_id} leads {self._shard_id} but is still applying its log; retry",
            shard_id=self._shard_id,
            leader_hint=self.leader_rpc(),
        )
