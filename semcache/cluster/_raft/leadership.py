"""Who leads a shard, as one replica sees it, and the read barrier a new leader passes before serving reads."""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING

from semcache.cluster._raft.applier import Applier
from semcache.cluster._raft.compat import election_noop_index, hasten_election, is_leader, leader_node
from semcache.cluster._raft.membership import MemberTable
from semcache.errors import NotLeaderError

if TYPE_CHECKING:
    from semcache.cluster._raft.compat import SyncObj

logger = logging.getLogger(__name__)

READ_BARRIER_TIMEOUT = 2.0  # seconds a new leader may take to apply its log before refusing leader reads
LEADER_LOSS_STAGGER = 0.3  # seconds between the followers' early elections (longer than a vote's round trip)
HURRY_WINDOW = 3.0  # seconds after a leader's connection dropped during which a failed election is retried soon
RETRY_AFTER = 0.3  # seconds a candidate waits for votes before it retries, within the hurry window
RETRY_JITTER = (0.05, 0.35)  # its random extra wait (seconds), so two candidates stop colliding
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
                 replica_id: str, leader_loss_election: float = 0.0) -> None:
        self._syncobj = syncobj
        self._members = members
        self._applier = applier
        self._shard_id = shard_id
        self._replica_id = replica_id
        self._read_ready_noop: int | None = None  # the election no-op index a leader read barrier passed
        self._leader_loss_election = leader_loss_election
        self.role_changes = 0
        self.early_elections = 0
        self._role = 0  # pysyncobj's raft state, as on_state_changed last said
        self._hurry_until = 0.0  # monotonic: until then, a candidate that gets no majority retries soon
        self._retry_at = 0.0  # monotonic: when this candidate retries its election

    def on_state_changed(self, old: int, new: int) -> None:
        """pysyncobj's ``onStateChanged`` hook: count and log the change of role."""
        self.role_changes += 1
        self._role = new
        if new == 1:  # candidate
            self._retry_at = time.monotonic() + RETRY_AFTER
        logger.info("replica %s: %s -> %s", self._replica_id, ROLES.get(old), ROLES.get(new))

    def is_leader(self) -> bool:
        return is_leader(self._syncobj)

    def on_peer_disconnected(self, node: object, was_connected: bool) -> None:
        """pysyncobj dropped ``node``'s connection: if it was this follower's leader, campaign soon.

        A leader whose process died (kill -9, a crash) resets its connections at
        once, long before a follower's election timeout (1-2 s) would fire.  The
        followers do not all campaign at once, which would split the vote: each
        waits ``leader_loss_election`` plus ``LEADER_LOSS_STAGGER`` per follower
        ranked before it (by replica id), so the first wins before the next
        starts.  Only an established connection counts (not a failed reconnect),
        and the election is only ever brought forward.  A paused or partitioned
        leader keeps its connections: the usual timeout applies.
        """
        leader = leader_node(self._syncobj)
        if (not was_connected or self._leader_loss_election <= 0 or leader is None
                or leader.id != getattr(node, "id", None) or self.is_leader()):
            return
        others = sorted(m.id for m in self._members.copy().values() if m.raft != leader.id)
        rank = others.index(self._replica_id) if self._replica_id in others else len(others)
        delay = self._leader_loss_election + rank * LEADER_LOSS_STAGGER
        logger.info("replica %s: the connection to leader %s dropped; campaigning within %.2fs",
                    self._replica_id, leader.id, delay)
        self.early_elections += 1
        self._hurry_until = time.monotonic() + HURRY_WINDOW
        hasten_election(self._syncobj, delay)

    def on_tick(self) -> None:
        """pysyncobj tick: soon after a leader was lost, a candidate that got no majority retries soon.

        Two followers may still campaign together (the first one's log may be
        behind, so the next one campaigns as well); pysyncobj would then wait a
        whole election timeout (1-2 s) before trying again.  Within
        ``HURRY_WINDOW`` of the leader's loss, a candidate that has not won after
        ``RETRY_AFTER`` retries after a random ``RETRY_JITTER`` instead.
        """
        if self._role != 1 or not self._hurry_until:
            return
        now = time.monotonic()
        if now >= self._hurry_until:
            self._hurry_until = 0.0
        elif now >= self._retry_at:
            delay = random.uniform(*RETRY_JITTER)
            self._retry_at = now + delay + RETRY_AFTER
            hasten_election(self._syncobj, delay)

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
