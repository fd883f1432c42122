"""One replica of a Raft-replicated shard: a pysyncobj ``SyncObj`` around a :class:`ShardState`.

Every replica of a shard runs a :class:`ReplicatedShard`.  The leader turns
writes into :mod:`semcache._engine.commands`, encodes them and appends them to the Raft
log; every replica applies committed entries, in order, through the one
``@replicated`` method :meth:`ReplicatedShard.apply_batch` (a batch of
encoded commands: concurrent writes share one entry).  Commands carry
everything that could differ between replicas (vectors, timestamps, the keys
to evict), so replicas never consult their own clock or model while applying.

This class composes the parts; each says why it works as it does:
:mod:`.compat` (pysyncobj and every private access to it), :mod:`.group_commit`
(batching writes into entries), :mod:`.applier` (applying entries off the tick
thread), :mod:`.leadership` (the leader and the read barrier),
:mod:`.membership`, :mod:`.snapshots`, :mod:`.status`, and
:mod:`semcache._engine.housekeeping` (expiry and eviction, leader only).

How pysyncobj 0.3.17 is configured here, and why:

* ``password`` is always set: pysyncobj unpickles what arrives on the Raft
  port, so only peers holding the secret (Fernet-encrypted traffic) may talk.
* ``bindAddress`` is always the configured Raft address (or the replica's
  ``raft_bind``, when peers reach it through a proxy): pysyncobj would
  otherwise bind ``0.0.0.0``.
* ``appendEntriesUseBatch`` is on when new entries can be sent by a tick
  callback (:data:`.compat.EAGER_SEND`, see :mod:`.group_commit`).
* Messages go out uncompressed (:func:`.compat.send_raft_messages_uncompressed`)
  and pickled with protocol 4 (:func:`.compat.pickle_raft_messages_with_protocol_4`).
* Snapshots use the hooks of :mod:`.snapshots`; the journal is on disk
  (checksummed, :mod:`.journal`; fsynced with ``raft_fsync``), so a restarted
  replica replays snapshot + journal.
* Followers follow Raft's AppendEntries rule, not pysyncobj's (:mod:`.log_matching`).
* The Raft port refuses frames over
  :data:`~semcache.cluster._sizes.MAX_RAFT_FRAME_BYTES` and closes idle,
  unidentified connections (:class:`.compat.BoundedTcpConnection`,
  :meth:`.compat.RaftNode.reap_idle_connections`).
* A retried command may be applied twice: every command is idempotent.
* ``apply_batch`` never raises: an exception there would stop pysyncobj's
  tick thread from making progress.  Writes are validated before they are logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from semcache._engine.clock import SteadyClock
from semcache._engine.commands import Command, Put
from semcache._engine.eviction import AccessLog
from semcache._engine.housekeeping import Housekeeping, MaintenanceLoop
from semcache._engine.inputs import Limits
from semcache._engine.state import ShardState
from semcache.cluster._config import ClusterConfig, Replica
from semcache.cluster._raft.applier import AppliedBatch, Applier, GuardedState
from semcache.cluster._raft.compat import (
    EAGER_SEND,
    RaftNode,
    SyncObjConf,
    SyncObjException,
    bound_raft_connections,
    current_log_index,
    ignore_membership_history,
    last_log_index,
    leader_commit_index,
    on_peer_disconnected,
    pickle_raft_messages_with_protocol_4,
    raw_status,
    replicated,
    send_raft_messages_uncompressed,
    use_checksummed_journals,
)
from semcache.cluster._raft.group_commit import GroupCommit, encode_for_entry
from semcache.cluster._raft.journal import JOURNAL_FILE, JournalFile
from semcache.cluster._raft.leadership import Leadership
from semcache.cluster._raft.membership import ForcedMembership, Membership, MemberTable
from semcache.cluster._raft.snapshots import SNAPSHOT_FILE, Snapshots
from semcache.cluster._raft.status import StateCounts, catch_up_reason, replica_status
from semcache.cluster._raft.transfer import SnapshotTransfer
from semcache.cluster._sizes import MAX_ENTRY_BYTES, RAFT_MESSAGE_LIMIT, RAFT_SOCKET_BUFFER_BYTES
from semcache.errors import ClusterError, SemcacheError

logger = logging.getLogger(__name__)


class ReplicatedShard(RaftNode):
    """One replica of one shard: the pysyncobj node, and the parts that apply, batch, snapshot and housekeep.

    Args:
        config: the cluster file.
        replica_id: which replica of ``config`` this is.
        clock: milliseconds since the epoch, used only by the leader when it
            issues commands (timestamps, expiry).
        force_membership: the members are the cluster file's, whatever the journal and
            snapshot say (:class:`.membership.ForcedMembership`; recovery only).

    Example (one-replica shard, so it is its own majority)::

        shard = ReplicatedShard(config, "r0")
        shard.wait_leader(5.0)
        shard.submit(Put("k", b"v", "", None, 0, 0))
    """

    def __init__(self, config: ClusterConfig, replica_id: str, *, clock: Callable[[], int] | None = None,
                 force_membership: bool = False) -> None:
        # Everything pysyncobj may call from its tick thread while SyncObj.__init__ runs
        # (apply_batch replaying the journal, the snapshot hooks, onStateChanged) exists
        # before it; so do the properties, which SyncObj.__init__ reads through dir(self).
        self.config = config
        self.replica_id = replica_id
        self.shard_id = config.shard_of(replica_id).id
        self._clock = clock or SteadyClock()  # the leader stamps commands with it: see semcache._engine.clock
        self._model_id, self.dim = config.embedding_identity()
        self._limits = Limits(max_value_bytes=config.max_value_bytes)
        self._stopping = threading.Event()
        self._guarded = GuardedState(self._new_state())
        self._members = MemberTable(config.shard_of(replica_id).replicas)
        self._access = AccessLog()  # reads and writes seen here, for the eviction policy (never replicated)
        self._applier = Applier(self._guarded, index_backlog=config.index_backlog, replica_id=replica_id,
                                stopping=self._stopping)
        self._leadership = Leadership(self, members=self._members, applier=self._applier, shard_id=self.shard_id,
                                      replica_id=replica_id, leader_loss_election=config.leader_loss_election)
        data_dir = config.data_dir_of(replica_id)
        data_dir.mkdir(parents=True, exist_ok=True)
        self._snapshots = Snapshots(
            self, guarded=self._guarded, members=self._members, applier=self._applier, data_dir=data_dir,
            fork=config.fork_snapshots, restore_state=self._restore_state,
            election_timeout=config.election_timeout_max,
        )
        self.snapshot_transfer = SnapshotTransfer(self._snapshots, data_dir=data_dir, send=self.send_snapshot_payload,
                                                  backlog=self.snapshot_backlog, heartbeat=config.heartbeat)
        self._membership = Membership(self, self._members, commit_timeout=config.commit_timeout)
        self._housekeeping = Housekeeping(
            read=lambda fn: self.read(lambda state, _now: fn(state)), submit=self.submit, access=self._access,
            policy=config.eviction, capacity=config.capacity, evict_budget=MAX_ENTRY_BYTES // 2,
        )
        send_raft_messages_uncompressed()
        pickle_raft_messages_with_protocol_4()
        use_checksummed_journals()
        bound_raft_connections()
        on_peer_disconnected(self, self._leadership.on_peer_disconnected)
        self._forced = ForcedMembership(self) if force_membership else None
        if self._forced is not None:
            ignore_membership_history(self, self._forced.replaying_entry, self._forced.replaying_snapshot)
        members = self._members.copy()
        partners = [m.raft for m in members.values() if m.id != replica_id]
        address = members[replica_id].raft
        try:
            super().__init__(address, partners, raft_conf(config, replica_id, data_dir, self._snapshots,
                                                          on_state_changed=self._leadership.on_state_changed))
        except BaseException:  # e.g. a damaged journal (CorruptDataError): stop what already runs
            self._stopping.set()
            self._applier.close()
            self.snapshot_transfer.close()
            raise
        if self._forced is not None:
            self._forced.startup_index = current_log_index(self)
        self._commits = GroupCommit(self, commit_timeout=config.commit_timeout, leader_rpc=self.leader_rpc)
        self.addOnTickCallback(self._on_tick)
        self._maintenance = MaintenanceLoop("semcache-maint", config.maintenance_interval, self._maintenance_round)
        self._maintenance.start()

    def _new_state(self) -> ShardState:
        return ShardState(
            self.dim, self._model_id, self.config.index_settings(), self._limits,
            index_backlog=self.config.index_backlog,
        )

    def _restore_state(self, directory: Path) -> ShardState:
        """A state restored from a snapshot's ``state`` directory, with this replica's limits and backlog."""
        state = ShardState.restore(directory, model_id=self._model_id, dim=self.dim)
        state.limits = self._limits
        state.set_index_backlog(self.config.index_backlog)
        return state

    # ------------------------------------------------------------ replicated
    # pysyncobj requires @replicated methods on the SyncObj subclass itself; they delegate.
    @replicated
    def apply_batch(self, data: bytes) -> AppliedBatch:
        """Apply a committed batch of encoded commands (every replica, in log order; see :mod:`.applier`).

        Never raises: an exception here would wedge pysyncobj's apply loop.
        """
        return self._applier.apply_entry(data)

    @replicated
    def set_member(self, replica_id: str, raft: str, rpc: str, present: bool) -> bool:
        """Record (or forget) a replica's addresses, so every replica can name the leader's RPC address."""
        self._members.record(replica_id, raft, rpc, present=present)
        return True

    def _on_tick(self) -> None:
        """pysyncobj tick callback (it runs after the tick appended queued writes to the log)."""
        self._applier.new_tick()
        self._commits.on_tick()
        self._leadership.on_tick()

    # ---------------------------------------------------------------- writes
    def submit(self, command: Command, timeout: float | None = None) -> int:
        """Commit ``command`` on a majority and apply it here; return its result.

        Raises:
            InvalidInputError, LimitExceededError, EmbeddingMismatchError: the
                command is invalid; nothing was logged.
            NotLeaderError: this replica is not the leader (``leader_hint`` names it),
                or leadership changed before the command committed (it did not apply).
            NoQuorumError: no commit within ``timeout``; the command may still commit later.
        """
        (outcome,) = self.submit_many([command], timeout)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def submit_many(self, commands: Sequence[Command], timeout: float | None = None) -> list[int | SemcacheError]:
        """Commit ``commands`` together (they share batch entries) and return each one's result or error.

        An invalid command gets its validation error and is not logged; the
        others still are.  Errors that concern the whole shard come back for
        every command: a write that timed out (NoQuorumError) may still commit.

        Raises:
            NotLeaderError: this replica is not the leader (nothing was logged).
        """
        outcomes: list[int | SemcacheError] = []
        items: list[bytes | None] = []
        for command in commands:
            try:
                self._guarded.state.validate(command)
                items.append(encode_for_entry(command))
                outcomes.append(0)
            except SemcacheError as exc:
                outcomes.append(exc)
                items.append(None)
        if all(item is None for item in items):
            return outcomes
        self.require_leader()
        committed = self._commits.commit(items, timeout)
        for position, (command, result) in enumerate(zip(commands, committed, strict=True)):
            if result is None:
                continue
            outcomes[position] = result
            if isinstance(command, Put) and not isinstance(result, ClusterError):
                self._access.touch(command.key, command.created_at_ms)
                if self._housekeeping.over_capacity():
                    self._maintenance.wake()
        return outcomes

    # ----------------------------------------------------------------- reads
    def read(self, fn: Callable[[ShardState, int], Any], *, touch: str | None = None) -> Any:
        """Run ``fn(state, now_ms)`` under the state lock (reads never see a half-applied command)."""
        now = self._clock()
        with self._guarded.lock:
            result = fn(self._guarded.state, now)
        if touch is not None:
            self._access.touch(touch, now)
        return result

    def touch(self, key: str) -> None:
        """Record a read of ``key`` for the eviction policy (local, never replicated)."""
        self._access.touch(key, self._clock())

    def now_ms(self) -> int:
        """The clock the leader stamps commands with."""
        return self._clock()

    def digest(self) -> tuple[int, str]:
        """``(commands applied, SHA-256 of the state)``: equal pairs mean identical replicas."""
        with self._guarded.lock:
            return self._guarded.state.applied, self._guarded.state.digest()

    def wait_applied(self, timeout: float | None = None) -> bool:
        """Block until every committed batch handed to the applier has been applied; False on timeout."""
        return self._applier.wait_applied(timeout)

    # ------------------------------------------------------------ leadership
    def require_leader(self, *, for_read: bool = False) -> None:
        """Raise NotLeaderError unless this replica leads; with ``for_read``, pass the read barrier too.

        See :meth:`.leadership.Leadership.require_leader`.
        """
        self._leadership.require_leader(for_read=for_read)

    def is_leader(self) -> bool:
        return self._leadership.is_leader()

    def leader_rpc(self) -> str | None:
        """RPC address of the replica this one believes leads, or None."""
        return self._leadership.leader_rpc()

    def wait_leader(self, timeout: float) -> bool:
        """Wait until this replica knows a leader; True if it does."""
        return self._leadership.wait_leader(timeout)

    # ------------------------------------------------------------ membership
    @property
    def members(self) -> dict[str, Replica]:
        return self._members.copy()

    def add_replica(self, replica_id: str, raft: str, rpc: str, timeout: float | None = None) -> None:
        """Add a replica to this shard (call on the leader); it catches up from the log or a snapshot."""
        self._membership.add_replica(replica_id, raft, rpc, timeout)

    def remove_replica(self, replica_id: str, timeout: float | None = None) -> None:
        """Remove a replica from this shard (call on the leader; a leader cannot remove itself)."""
        self._membership.remove_replica(replica_id, timeout)

    # ---------------------------------------------------------------- health
    @property
    def snapshots(self) -> int:
        """Snapshots this replica has written."""
        return self._snapshots.stats.taken

    @property
    def role_changes(self) -> int:
        return self._leadership.role_changes

    def status(self) -> dict[str, Any]:
        """Role, leader, term, commit and apply positions, entries, and per-replica progress."""
        raw = raw_status(self)
        with self._guarded.lock:
            state = self._guarded.state
            counts = StateCounts(len(state.entries), state.applied, state.queued_index_ops)
        report = replica_status(
            raw, members=self.members, replica_id=self.replica_id, shard_id=self.shard_id,
            leader_rpc=self.leader_rpc(), counts=counts, role_changes=self.role_changes,
            snapshots=self._snapshots.stats,
        )
        report["early_elections"] = self._leadership.early_elections  # leader connection drops acted on
        report["last_log_index"] = last_log_index(self)  # appended, committed or not
        report["catching_up"] = self.catching_up()
        report["ready"] = report["healthy"] and report["catching_up"] is None
        report["snapshot_receive"] = self.snapshot_transfer.receiver.status()
        report["snapshot_sends"] = self.snapshot_transfer.sender.status()
        if self._forced is not None:  # recovery: where the forced membership's history ends
            report["membership_forced_at"] = self._forced.startup_index
        return report

    def catching_up(self) -> str | None:
        """Why this replica must not serve ``read_from="any"`` now (see :func:`.status.catch_up_reason`), or None."""
        receiver = self.snapshot_transfer.receiver
        heard = leader_commit_index(self)
        return catch_up_reason(
            leader=self.is_leader(), receiving=receiver.status() if receiver.active() else None,
            applied=int(self.raftLastApplied or 0),
            leader_commit=None if heard is None else max(heard, receiver.leader_commit),
        )

    # ----------------------------------------------- expiry and eviction
    def _maintenance_round(self) -> None:
        """Leader only: expire, then evict down to capacity (see :mod:`semcache._engine.housekeeping`)."""
        if self._stopping.is_set() or not self.is_leader():
            return
        try:
            self.expire_now()
            self.evict_over_capacity()
        except (ClusterError, SyncObjException) as exc:
            logger.info("replica %s: maintenance postponed: %s", self.replica_id, exc)

    def expire_now(self) -> int:
        """Leader only: replicate ``Expire(now)`` if anything has expired; returns entries removed."""
        return self._housekeeping.expire(self._clock())

    def evict_over_capacity(self) -> int:
        """Leader only: evict down to 99 % of capacity, in commands that each fit one Raft entry."""
        return self._housekeeping.evict_over_capacity()

    # ------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Stop the maintenance loop and pysyncobj's threads; close the journal."""
        self._stopping.set()
        self._maintenance.stop()
        self.destroy_synchronous()
        self.snapshot_transfer.close()
        self._applier.close()


def raft_conf(config: ClusterConfig, replica_id: str, data_dir: Path, snapshots: Snapshots, *,
              on_state_changed: Callable[[int, int], None]) -> Any:
    """pysyncobj's settings for ``replica_id`` (see the module docstring for the choices)."""
    replica = config.replica(replica_id)
    return SyncObjConf(
        password=config.secret,
        bindAddress=replica.raft_bind or replica.raft,
        appendEntriesBatchSizeBytes=RAFT_MESSAGE_LIMIT,
        logCompactionBatchSize=RAFT_MESSAGE_LIMIT,
        appendEntriesUseBatch=EAGER_SEND,
        appendEntriesPeriod=config.heartbeat,
        raftMinTimeout=config.election_timeout_min,
        raftMaxTimeout=config.election_timeout_max,
        connectionTimeout=max(3.5, config.election_timeout_max * 1.5),
        connectionRetryTime=0.5,
        sendBufferSize=RAFT_SOCKET_BUFFER_BYTES,
        recvBufferSize=RAFT_SOCKET_BUFFER_BYTES,
        leaderFallbackTimeout=config.election_timeout_max * 2,
        journalFile=JournalFile(data_dir / JOURNAL_FILE, fsync=config.raft_fsync),
        fullDumpFile=str(data_dir / SNAPSHOT_FILE),
        serializer=snapshots.serialize,
        serializeChecker=snapshots.check,
        deserializer=snapshots.deserialize,
        logCompactionMinEntries=config.compaction_entries,
        logCompactionMinTime=config.compaction_seconds,
        dynamicMembershipChange=True,
        commandsWaitLeader=False,
        onStateChanged=on_state_changed,
    )
