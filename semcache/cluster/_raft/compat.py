"""Everything semcache takes from pysyncobj 0.3.17, and every place it reaches past the public API.

This is the one module that imports :mod:`pysyncobj`; the rest of
:mod:`semcache.cluster._raft` imports pysyncobj's names from here and calls the
small functions below instead of touching a private name.  A pysyncobj upgrade
(or a patched copy) is therefore checked against this file alone.

Private accesses, and why each is needed:

``SyncObj._SyncObj__getCurrentLogIndex`` and ``SyncObj._SyncObj__sendAppendEntries``
    (:func:`current_log_index`, :func:`send_append_entries`).  Stock pysyncobj
    offers either batching (``appendEntriesUseBatch=True``: a new entry waits
    for the next heartbeat, 0.1 s) or none (every commit then costs two more
    messages per follower).  semcache batches and sends what a tick appended
    from a tick callback.  :data:`EAGER_SEND` is False when either method is
    missing; the replica then falls back to the stock unbatched mode.
``SyncObj._SyncObj__pipeNotifier`` (:func:`tick_wakeup`)
    pysyncobj wakes its tick thread for a queued command only in unbatched
    mode; in batched mode semcache makes its own :class:`PipeNotifier` on
    ``SyncObj._poller`` (protected) for the same job.
``SyncObj._SyncObj__noopIDx`` (:func:`election_noop_index`)
    pysyncobj has no read index.  The no-op entry a new leader appends is the
    read barrier: leader reads wait until it is applied.
``SyncObj._SyncObj__raftElectionDeadline`` (:func:`restart_election_timer`)
    Restoring a snapshot runs inside the leader's snapshot message; without
    restarting the timer a restore longer than the election timeout makes the
    follower campaign at its next tick and depose a healthy leader.  Set on
    pysyncobj's own clock (:data:`raft_clock`, ``CLOCK_MONOTONIC_RAW``), which
    drifts away from ``time.monotonic()`` with uptime.
``SyncObj._SyncObj__raftLog`` (:func:`journal`)
    A node stopped between writing a snapshot and trimming its journal restarts
    with a journal that begins before the snapshot, and pysyncobj would then
    discard all of it, committed entries newer than the snapshot included;
    the snapshot restore trims it first (:mod:`.snapshots`).
``pysyncobj.tcp_connection.zlib`` (:func:`send_raft_messages_uncompressed`)
    Replaced by a stand-in whose ``compress`` stores (level 0): embeddings do
    not compress, and zlib cost CPU on every message.
``pysyncobj.tcp_connection.pickle`` (:func:`pickle_raft_messages_with_protocol_4`)
    Replaced by a stand-in whose ``dumps`` uses pickle protocol 4: pysyncobj's
    protocol 2 writes every byte from 0x80 up as two (bytes go through a
    latin-1 string), which made a snapshot chunk half as big again and its
    pickling a thousand times slower (4 ms for 256 KiB); every message an
    entry carries shrinks too.  ``loads`` is pysyncobj's, which reads any
    protocol, so stock peers and these read each other's messages.
``SyncObj._isLeader`` / ``SyncObj._getLeader`` (:func:`is_leader`, :func:`leader_node`)
    Protected, but documented for subclasses; routed through here all the same.
``SyncObj.getStatus`` (:func:`raw_status`)
    Public, but it iterates dicts the tick thread may resize meanwhile, so it
    is retried.

pysyncobj code paths semcache replaces (each also says so where it is done):

``SyncObj.__onMessageReceived`` (``append_entries``) and ``SyncObj.__sendNextNodeIdx`` (:class:`RaftNode`)
    A follower deleted every entry after ``prevLogIdx`` of any message, so an
    old resend (pysyncobj sends them routinely) cut off entries it had
    acknowledged and applied, and its commit index fell below its last applied
    index.  Overridden (name-mangled methods resolve through the subclass) to
    process the message :func:`.log_matching.plan_append` makes of it: Raft's
    rule, deleting only from a real conflict.  See :mod:`.log_matching`.
    ``SyncObj.__onBecomeLeader`` is wrapped too: the no-op it appends is
    synced (:func:`sync_journal`) before the leader counts it.
``pysyncobj.syncobj.createJournal`` (:func:`use_checksummed_journals`)
    pysyncobj's ``FileJournal`` has no checksums; a replica's journal is a
    :class:`.journal.RaftJournal` (CRC32 per record, torn tail told from
    damage).  Only paths given as :class:`.journal.JournalFile` are affected.
``TcpConnection.__processRead`` / ``__processParseMessage`` (:class:`BoundedTcpConnection`)
    pysyncobj buffered whatever length a frame header declared (2 GiB: the
    tick thread spent its time growing a ``bytes`` and leaders were deposed,
    bakwc/PySyncObj#174) and read a fast sender's stream without end.  Frames
    over :data:`~semcache.cluster._sizes.MAX_RAFT_FRAME_BYTES` now close the
    connection before anything is buffered, and one read stops once a full
    frame's worth is buffered.  Installed in ``pysyncobj.transport`` and
    ``pysyncobj.tcp_server`` (:func:`bound_raft_connections`).
``TcpConnection.send`` (:meth:`BoundedTcpConnection.send`)
    pysyncobj stops watching a socket for "writable" once its write buffer
    first empties, so what one ``send`` could not hand to the socket waited for
    the next ``send``: a message larger than the socket buffer (a snapshot
    chunk, a full ``append_entries``) went out one buffer per heartbeat.  The
    socket is watched again whenever bytes are left waiting.
Snapshot transfer: ``SyncObj.__sendAppendEntries``, ``__onMessageReceived``, ``__loadDumpFile`` (:class:`RaftNode`)
    pysyncobj streams a snapshot in unnumbered pieces that the follower never
    acknowledges, so the leader's connection times out mid-transfer (3.5 s
    without reading) and the transfer starts over for ever, or goes on mid-file
    into the old partial file, which is installed truncated.  semcache sends and
    receives snapshots itself (:mod:`.transfer`): a follower that needs one is
    left out of pysyncobj's send loop (taken out of ``__connectedNodes`` for the
    call; ``isNodeConnected`` and ``hasQuorum`` still count it) and gets
    numbered, checksummed chunks as ``append_entries`` messages whose
    ``serialized`` is a dict (pysyncobj sees them as heartbeats; a dict never
    reaches its ``Serializer``), and acknowledges each one
    (:data:`SNAPSHOT_ACK`, which also counts as a response for
    ``__lastResponseTime``).  A verified, restored snapshot is installed
    through ``__loadDumpFile`` and answered with ``__sendNextNodeIdx`` (with
    ``reset``, so the leader's next index moves even when its match index for
    the node is stale), as pysyncobj does at the end of its own transfer.
    Those messages carry the leader's commit index capped at the follower's
    match index (``__raftMatchIndex``): they prove nothing about its log.
``TCPTransport._unknownConnections`` (:meth:`RaftNode.reap_idle_connections`)
    pysyncobj checks a connection's timeout only when it has an event, so a
    connection that never sends anything stays open for ever.  Connections
    that have not identified themselves as a member within the connection
    timeout (the handshake needs the secret), and read-only peers idle that
    long, are closed; at most :data:`MAX_UNIDENTIFIED_CONNECTIONS` wait at once.
    Links between members are left alone: follower-to-follower links carry no
    traffic by design.

Hazards of pysyncobj 0.3.17 handled elsewhere: pickle transport (the replica
always sets ``password``), entries of 64 KiB or more take a broken chunked path
(:mod:`semcache.cluster._sizes`; :mod:`.group_commit` counts an entry as pickled,
bytes >= 0x80 twice), default snapshots stall
the tick thread (:mod:`.snapshots`), retried commands may apply twice (every
command is idempotent), an exception in a ``@replicated`` method wedges the
apply loop (``apply_batch`` never raises).
"""

from __future__ import annotations

import logging
import pickle
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import pysyncobj.pickle as pysyncobj_pickle
    import pysyncobj.syncobj as syncobj_module
    from pysyncobj import (
        FAIL_REASON,
        SERIALIZER_STATE,
        SyncObj,
        SyncObjConf,
        SyncObjException,
        replicated,
        tcp_connection,
        tcp_server,
        transport,
    )
    from pysyncobj.monotonic import monotonic as raft_clock
    from pysyncobj.node import TCPNode
    from pysyncobj.pipe_notifier import PipeNotifier
    from pysyncobj.poller import POLL_EVENT_TYPE
    from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    from semcache.errors import missing_extra

    raise missing_extra("pysyncobj", "cluster", "Raft replication") from exc

from semcache.cluster._raft.journal import JournalFile, RaftJournal
from semcache.cluster._raft.log_matching import plan_append
from semcache.cluster._sizes import MAX_RAFT_FRAME_BYTES

logger = logging.getLogger(__name__)

__all__ = [
    "EAGER_SEND",
    "FAIL_REASON",
    "SERIALIZER_STATE",
    "PipeNotifier",
    "BoundedTcpConnection",
    "RaftNode",
    "SyncObj",
    "SyncObjConf",
    "SyncObjException",
    "TCPNode",
    "current_log_index",
    "election_noop_index",
    "hasten_election",
    "ignore_membership_history",
    "is_leader",
    "journal",
    "last_log_index",
    "leader_commit_index",
    "leader_node",
    "on_peer_disconnected",
    "pickle_raft_messages_with_protocol_4",
    "raw_status",
    "replicated",
    "restart_election_timer",
    "send_append_entries",
    "send_raft_messages_uncompressed",
    "tick_wakeup",
    "bound_raft_connections",
    "use_checksummed_journals",
]

# Batching on, with new entries sent by a tick callback; needs these private methods.
EAGER_SEND = all(hasattr(SyncObj, f"_SyncObj__{name}") for name in ("sendAppendEntries", "getCurrentLogIndex"))


class _StoredZlib:
    """The ``zlib`` pysyncobj's transport sees: ``compress`` stores (level 0), the rest is zlib's."""

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return zlib.compress(data, 0)

    decompress = staticmethod(zlib.decompress)


def send_raft_messages_uncompressed() -> None:
    """Make pysyncobj's transport in this process send messages without compressing them.

    pysyncobj zlib-compresses every message at level 3.  A put's Raft entry is
    mostly its float32 embedding, which does not compress (a 384-dim put: 1,850
    to 1,570 bytes, for about 40 µs on the sender and 10 µs on each receiver,
    paid once per follower).  Level 0 still writes a zlib stream, so replicas
    running stock pysyncobj read these messages unchanged.
    """
    tcp_connection.zlib = _StoredZlib


class _Protocol4Pickle:
    """The ``pickle`` pysyncobj's transport sees: ``dumps`` writes protocol 4, ``loads`` is pysyncobj's."""

    @staticmethod
    def dumps(obj: Any, protocol: int | None = None) -> bytes:
        return pickle.dumps(obj, protocol=4)

    loads = staticmethod(pysyncobj_pickle.loads)


def pickle_raft_messages_with_protocol_4() -> None:
    """Make pysyncobj's transport in this process pickle messages with protocol 4 (bytes stored as they are)."""
    tcp_connection.pickle = _Protocol4Pickle


def current_log_index(syncobj: SyncObj) -> int:
    """The index of the last entry in this node's log (committed or not)."""
    return int(syncobj._SyncObj__getCurrentLogIndex())


def last_log_index(syncobj: SyncObj) -> int | None:
    """:func:`current_log_index` read from outside the tick thread: None while that thread has the log empty
    (a snapshot from the leader replacing it)."""
    try:
        return current_log_index(syncobj)
    except IndexError:
        return None


def send_append_entries(syncobj: SyncObj) -> None:
    """Leader: send every follower the entries it lacks now, as a heartbeat would."""
    syncobj._SyncObj__sendAppendEntries()


def tick_wakeup(syncobj: SyncObj) -> PipeNotifier | None:
    """What wakes ``syncobj``'s tick thread: ours in batched mode, pysyncobj's own otherwise (None if it has none)."""
    if EAGER_SEND:
        return PipeNotifier(syncobj._poller)
    return getattr(syncobj, "_SyncObj__pipeNotifier", None)


def election_noop_index(syncobj: SyncObj) -> int | None:
    """The log index of the no-op this node appended when it last won an election (None before any)."""
    return getattr(syncobj, "_SyncObj__noopIDx", None)


def restart_election_timer(syncobj: SyncObj, seconds: float) -> None:
    """Postpone this follower's next election as if it had just heard from the leader."""
    # pysyncobj's clock (CLOCK_MONOTONIC_RAW), not time.monotonic(): the two drift apart with uptime.
    syncobj._SyncObj__raftElectionDeadline = raft_clock() + seconds


def journal(syncobj: SyncObj) -> Any:
    """pysyncobj's Raft log (entries ``(command, index, term)``, ``deleteEntriesTo``), or None."""
    return getattr(syncobj, "_SyncObj__raftLog", None)


def is_leader(syncobj: SyncObj) -> bool:
    """Whether ``syncobj`` is in the leader state now (two nodes may briefly both be)."""
    return bool(syncobj._isLeader())


def leader_node(syncobj: SyncObj) -> TCPNode | None:
    """The node ``syncobj`` last heard lead (``.id`` is its Raft address), or None."""
    return syncobj._getLeader()


def leader_commit_index(syncobj: SyncObj) -> int | None:
    """The commit index the leader last sent this follower (None: none heard since this node started)."""
    value = getattr(syncobj, "_SyncObj__leaderCommitIndex", None)
    return None if value is None else int(value)


def raw_status(syncobj: SyncObj) -> dict[str, Any]:
    """``getStatus()`` as a dict, or ``{}`` if it kept colliding with the tick thread."""
    # getStatus() iterates pysyncobj's dicts, which the tick thread may resize meanwhile.
    for _ in range(5):
        try:
            return dict(syncobj.getStatus())
        except RuntimeError:
            time.sleep(0.001)
    return {}


# --------------------------------------------------------------------------------------------------------------
# Forced membership (``semcache node --force-membership``, :class:`.membership.ForcedMembership`).
# ``SyncObj._SyncObj__doChangeCluster`` and ``SyncObj._SyncObj__updateClusterConfiguration``
#     pysyncobj applies membership entries again when it replays its journal, and takes the member set stored in
#     a snapshot; a shard that lost its quorum to members that are gone would get them back at every restart.
#     Wrapping both on the instance lets a forced restart ignore them while it replays what it held at start.
def ignore_membership_history(syncobj: SyncObj, replaying_entry: Callable[[], bool],
                              replaying_snapshot: Callable[[], bool]) -> None:
    """Make ``syncobj`` ignore membership changes while ``replaying_entry()`` (a journal entry's) or
    ``replaying_snapshot()`` (a snapshot's member set) is True.  Call before ``SyncObj.__init__``."""
    change_cluster = syncobj._SyncObj__doChangeCluster
    update_configuration = syncobj._SyncObj__updateClusterConfiguration

    def do_change_cluster(request: Any, reverse: bool = False) -> bool:
        return False if replaying_entry() else bool(change_cluster(request, reverse))

    def update_cluster_configuration(nodes: Any) -> None:
        if not replaying_snapshot():
            update_configuration(nodes)

    syncobj._SyncObj__doChangeCluster = do_change_cluster
    syncobj._SyncObj__updateClusterConfiguration = update_cluster_configuration


# --------------------------------------------------------------------------------------------------------------
# Fast failover (:meth:`.leadership.Leadership.on_peer_disconnected`).
# ``SyncObj._SyncObj__onNodeDisconnected`` and ``SyncObj._SyncObj__raftElectionDeadline``
#     pysyncobj notices a peer's connection dropping but only waits out its election timeout; a killed leader's
#     connections drop at once, so a follower that sees its leader's connection drop may campaign early.
def on_peer_disconnected(syncobj: SyncObj, hook: Callable[[Any, bool], None]) -> None:
    """Call ``hook(node, was_connected)`` (on the tick thread) whenever pysyncobj drops a peer's connection or a
    connection attempt fails.  Call before ``SyncObj.__init__``."""
    disconnected = syncobj._SyncObj__onNodeDisconnected

    def on_node_disconnected(node: Any) -> None:
        was_connected = bool(syncobj.isNodeConnected(node))
        disconnected(node)
        hook(node, was_connected)

    syncobj._SyncObj__onNodeDisconnected = on_node_disconnected


def hasten_election(syncobj: SyncObj, seconds: float) -> None:
    """Make this follower campaign within ``seconds`` unless it was due sooner."""
    deadline = time.monotonic() + seconds
    syncobj._SyncObj__raftElectionDeadline = min(syncobj._SyncObj__raftElectionDeadline, deadline)
# ------------------------------------------------------ the replica's SyncObj
REAP_INTERVAL = 0.25  # seconds between two looks for idle connections (in the tick thread)
SNAPSHOT_ACK = "semcache_snapshot_ack"  # a follower's answer to a snapshot chunk or poll (see .transfer)
MAX_UNIDENTIFIED_CONNECTIONS = 64  # connections to the Raft port not yet known as a member; the oldest go first


class RaftNode(SyncObj):
    """pysyncobj's ``SyncObj`` with semcache's corrections; :class:`.replica.ReplicatedShard` derives from it.

    * ``append_entries`` follows Raft's receiver rule (:mod:`.log_matching`);
    * the journal is made durable (:meth:`.journal.RaftJournal.sync`) before a
      follower acknowledges anything and at every tick of a leader, which
      counts its own copy at the next tick (a no-op unless it fsyncs);
    * unidentified and idle read-only connections to the Raft port are closed
      (:meth:`reap_idle_connections`);
    * snapshots travel through :attr:`snapshot_transfer` (a :class:`.transfer.SnapshotTransfer`,
      set by the subclass before ``SyncObj.__init__``), not pysyncobj's transmission.
    """

    _ack_index: int | None = None  # while a planned append_entries is processed: the last entry it may acknowledge
    _next_reap = 0.0
    snapshot_transfer: Any = None
    _hidden_from_send_loop: frozenset[Any] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.addOnTickCallback(self._on_raft_tick)

    # Replaces SyncObj.__onMessageReceived for append_entries: pysyncobj deletes every entry after
    # prevLogIdx; Raft deletes only from a conflict (see log_matching, and bakwc/PySyncObj#166).
    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        if isinstance(message, dict) and self.snapshot_transfer is not None:
            if message.get("type") == SNAPSHOT_ACK:
                self._on_snapshot_ack(node, message)
                return
            if message.get("type") == "append_entries" and isinstance(message.get("serialized"), dict):
                self._on_snapshot_message(node, message)
                return
        plan = self._append_plan(message)
        if plan is not None and self.snapshot_transfer is not None:
            # A leader sends log entries only to a follower it is not sending a snapshot: any transfer is over.
            self.snapshot_transfer.receiver.abandon("the leader sends log entries instead")
        if plan is not None:
            message = {**message, "prevLogIdx": plan.prev_index, "prevLogTerm": plan.prev_term,
                       "entries": plan.entries, "commit_index": plan.leader_commit}
            self._ack_index = plan.ack_index
        try:
            SyncObj._SyncObj__onMessageReceived(self, node, message)
        finally:
            self._ack_index = None

    def _append_plan(self, message: Any) -> Any:
        """Raft's plan for an ``append_entries`` carrying entries (None: anything else, left to pysyncobj)."""
        if not isinstance(message, dict) or message.get("type") != "append_entries":
            return None
        if "prevLogIdx" not in message or "transmission" in message:
            return None  # a snapshot chunk, or pysyncobj's chunked path (entries under 64 KiB never take it)
        if message["term"] < self._SyncObj__raftCurrentTerm:
            return None  # pysyncobj ignores a deposed leader
        return plan_append(self._SyncObj__raftLog, prev_index=message["prevLogIdx"],
                           prev_term=message["prevLogTerm"], entries=message.get("entries", []),
                           leader_commit=message["commit_index"], leader_term=message["term"])

    # Replaces SyncObj.__sendNextNodeIdx: acknowledge only the entries known to match the leader's
    # (pysyncobj names its whole log), and only once they are durable.
    def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False, nextNodeIdx: int | None = None,  # noqa: N803
                                  success: bool = False) -> None:
        if success and not reset and self._ack_index is not None:
            nextNodeIdx = self._ack_index + 1
        if success:
            sync_journal(self)
        SyncObj._SyncObj__sendNextNodeIdx(self, node, reset=reset, nextNodeIdx=nextNodeIdx, success=success)

    # Wraps SyncObj.__onBecomeLeader: the no-op it appends (outside a tick) counts towards a commit at the
    # next tick, so it is made durable first, like every other entry a leader counts.
    def _SyncObj__onBecomeLeader(self) -> None:
        SyncObj._SyncObj__onBecomeLeader(self)
        sync_journal(self)

    # ------------------------------------------------------------ snapshot transfer (see .transfer)
    # Wraps SyncObj.__sendAppendEntries: followers that need the snapshot are taken out of pysyncobj's loop
    # (it skips nodes missing from __connectedNodes) and served by the transfer instead.
    def _SyncObj__sendAppendEntries(self) -> None:
        if self.snapshot_transfer is None:
            SyncObj._SyncObj__sendAppendEntries(self)
            return
        needing = self._nodes_needing_snapshot()
        connected = self._SyncObj__connectedNodes
        self._hidden_from_send_loop = frozenset(needing)  # still connected, for isNodeConnected and hasQuorum
        connected.difference_update(needing)
        try:
            SyncObj._SyncObj__sendAppendEntries(self)
        finally:
            connected.update(needing)  # only the tick thread changes the set; the loop sends to other nodes only
            self._hidden_from_send_loop = frozenset()
        self.snapshot_transfer.sender.pump(needing, self._SyncObj__connectedNodes, self._SyncObj__raftCommitIndex)

    def isNodeConnected(self, node: Any) -> bool:  # noqa: N802 - pysyncobj's name
        """pysyncobj's, counting a node hidden from its send loop for a moment (other threads may ask meanwhile)."""
        return bool(SyncObj.isNodeConnected(self, node)) or node in self._hidden_from_send_loop

    @property
    def hasQuorum(self) -> bool:  # noqa: N802 - pysyncobj's name
        """pysyncobj's, counting the nodes hidden from its send loop for a moment as connected."""
        others = self._SyncObj__otherNodes
        connected = sum(1 for node in others if self.isNodeConnected(node))
        if self._SyncObj__selfNode is None:
            return connected > len(others) / 2
        return connected + 1 > (len(others) + 1) / 2

    def _nodes_needing_snapshot(self) -> set[Any]:
        """Connected followers whose next entry was compacted away (pysyncobj would send them its snapshot)."""
        first = self._SyncObj__raftLog[0][1]
        next_index = self._SyncObj__raftNextIndex
        return {node for node in self._SyncObj__otherNodes
                if node in self._SyncObj__connectedNodes and next_index.get(node, first + 1) <= first}

    def send_snapshot_payload(self, node: Any, payload: dict[str, Any]) -> bool:
        """Leader: send a transfer payload to ``node`` as an ``append_entries`` (False: the link is down)."""
        commit = min(self._SyncObj__raftCommitIndex, self._SyncObj__raftMatchIndex.get(node, 0))
        message = {"type": "append_entries", "term": self._SyncObj__raftCurrentTerm, "commit_index": commit,
                   "serialized": payload}
        return bool(self._SyncObj__transport.send(node, message))

    def snapshot_backlog(self, node: Any) -> int:
        """Bytes queued on the link to ``node`` that the socket has not taken yet."""
        conn = getattr(self._SyncObj__transport, "_connections", {}).get(node)
        return 0 if conn is None else int(conn.getSendBufferSize())

    def _on_snapshot_ack(self, node: Any, message: dict[str, Any]) -> None:
        if not self._isLeader():
            return
        self._SyncObj__lastResponseTime[node] = raft_clock()  # a live follower, for leaderFallbackTimeout
        self.snapshot_transfer.sender.on_ack(node, message)

    def _on_snapshot_message(self, node: Any, message: dict[str, Any]) -> None:
        """Follower: a chunk or poll; pysyncobj handles it as a heartbeat first (term, leader, election timer)."""
        SyncObj._SyncObj__onMessageReceived(self, node, {**message, "serialized": None})
        if message["term"] != self._SyncObj__raftCurrentTerm or self._SyncObj__raftLeader != node:
            return  # a deposed leader's: pysyncobj ignored it too
        receiver = self.snapshot_transfer.receiver
        ack, install = receiver.on_message(message["serialized"])
        if install:
            receiver.installed(self._install_received_snapshot(node, receiver.expected_index()))
            ack = receiver.describe(ack["transfer"])
        self._SyncObj__transport.send(node, {**ack, "type": SNAPSHOT_ACK})

    def _install_received_snapshot(self, node: Any, expected_index: int | None) -> bool:
        """Install the staged snapshot as pysyncobj installs its own, and tell the leader; True if it took."""
        self._SyncObj__loadDumpFile(clearJournal=True)  # calls the deserializer hook; logs and swallows errors
        if expected_index is None or self._SyncObj__raftLastApplied != expected_index:
            return False
        # reset=True: the leader takes this next index even when its match index for this node is no lower (a
        # replica wiped and restarted keeps its old match index there, and pysyncobj moves the next index only
        # with a higher match), as pysyncobj's own transfer sets it at its last chunk.
        self._SyncObj__sendNextNodeIdx(node, reset=True, nextNodeIdx=expected_index + 1, success=True)
        return True

    def _on_raft_tick(self) -> None:
        if self.snapshot_transfer is not None:  # acknowledgements arrived: send what the windows allow now
            if self._isLeader():
                self.snapshot_transfer.sender.pump(self._nodes_needing_snapshot(), self._SyncObj__connectedNodes,
                                                   self._SyncObj__raftCommitIndex)
            elif self.snapshot_transfer.sender.active():
                self.snapshot_transfer.sender.clear()
        sync_journal(self)  # a leader counts its own entries at the next tick
        now = raft_clock()
        if now >= self._next_reap:
            self._next_reap = now + REAP_INTERVAL
            self.reap_idle_connections(now)

    def reap_idle_connections(self, now: float) -> int:
        """Close connections that never identified themselves, or read-only ones gone quiet; how many were closed.

        pysyncobj looks at a connection's timeout only when the connection has
        an event, so one that sends nothing stays open for ever (``now`` is
        pysyncobj's clock, :data:`raft_clock`).  A member identifies itself in
        the first round trips (the handshake needs the secret), so an
        unidentified connection older than ``connectionTimeout`` is closed,
        and so are the oldest beyond :data:`MAX_UNIDENTIFIED_CONNECTIONS`.
        """
        raft_transport = self._SyncObj__transport
        timeout = self.conf.connectionTimeout
        unknown = sorted(getattr(raft_transport, "_unknownConnections", ()),
                         key=lambda conn: getattr(conn, "opened_at", now))
        excess = len(unknown) - MAX_UNIDENTIFIED_CONNECTIONS
        closing = [conn for position, conn in enumerate(unknown)
                   if position < excess or now - getattr(conn, "opened_at", now) > timeout]
        connections = getattr(raft_transport, "_connections", {})
        for node in list(getattr(raft_transport, "_readonlyNodes", ())):
            conn = connections.get(node)
            if conn is not None and now - conn._TcpConnection__lastReadTime > timeout:
                closing.append(conn)
        for conn in closing:
            conn.disconnect()
            raft_transport._unknownConnections.discard(conn)
        if closing:
            logger.info("closed %d idle or unidentified connection(s) to the Raft port", len(closing))
        return len(closing)


def sync_journal(syncobj: SyncObj) -> None:
    """Make the entries ``syncobj`` journalled so far durable (fsync, if its journal is set to)."""
    sync = getattr(journal(syncobj), "sync", None)
    if sync is not None:
        sync()


# ------------------------------------------------------------ the journal
_STOCK_CREATE_JOURNAL = syncobj_module.createJournal


def _create_journal(journalFile: Any = None) -> Any:  # noqa: N803 - pysyncobj's parameter name
    """Replaces ``pysyncobj.syncobj.createJournal``: a :class:`.journal.JournalFile` opens a checksummed journal."""
    if isinstance(journalFile, JournalFile):
        return RaftJournal(Path(journalFile), fsync=journalFile.fsync)
    return _STOCK_CREATE_JOURNAL(journalFile)


def use_checksummed_journals() -> None:
    """Make pysyncobj in this process open a :class:`.journal.RaftJournal` for every ``JournalFile`` path."""
    syncobj_module.createJournal = _create_journal


# -------------------------------------------------------- the Raft port
_FRAME_LENGTH = struct.Struct("i")  # pysyncobj's frame header: a native signed int, then the frame


class BoundedTcpConnection(TcpConnection):
    """pysyncobj's ``TcpConnection``, refusing frames over MAX_RAFT_FRAME_BYTES before buffering them.

    pysyncobj reads everything a socket has into one ``bytes`` (grown with
    ``+=``) and waits for as many bytes as the frame header declares, up to
    2 GiB; a peer streaming fast enough keeps its read loop going for ever
    (bakwc/PySyncObj#174).  Each header is checked as soon as it arrives: one
    over :data:`~semcache.cluster._sizes.MAX_RAFT_FRAME_BYTES` (or negative)
    closes the connection, and a read stops once a whole frame's worth is
    buffered, so the frames are parsed (and an unauthenticated peer's garbage
    refused) before more is read.  At most one frame plus one ``recv`` is
    buffered per connection.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.opened_at = raft_clock()
        self._unchecked_from = 0  # where the first frame header not yet checked starts in the read buffer
        super().__init__(*args, **kwargs)

    def connect(self, host: str, port: int) -> bool:
        self.opened_at, self._unchecked_from = raft_clock(), 0
        return bool(super().connect(host, port))

    def disconnect(self) -> None:
        self._unchecked_from = 0
        super().disconnect()

    # Wraps TcpConnection.send: watch the socket for "writable" while bytes are left waiting (see the module doc).
    def send(self, message: Any) -> None:
        super().send(message)
        fileno = self._TcpConnection__fileno
        if self.state == CONNECTION_STATE.CONNECTED and fileno is not None and self.getSendBufferSize() > 0:
            self._TcpConnection__poller.subscribe(
                fileno, self._TcpConnection__processConnection,
                POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR,
            )

    # Replaces TcpConnection.__processRead (one recv into the read buffer): check the frame headers it completed.
    def _TcpConnection__processRead(self) -> bool:
        more = bool(TcpConnection._TcpConnection__processRead(self))
        if self.state == CONNECTION_STATE.DISCONNECTED:
            return False
        buffered = self._TcpConnection__readBuffer
        position = self._unchecked_from
        while position + _FRAME_LENGTH.size <= len(buffered):
            (length,) = _FRAME_LENGTH.unpack_from(buffered, position)
            if not 0 <= length <= MAX_RAFT_FRAME_BYTES:
                logger.warning("closing a Raft connection: a frame declares %d bytes (the limit is %d)",
                               length, MAX_RAFT_FRAME_BYTES)
                self.disconnect()
                return False
            position += _FRAME_LENGTH.size + length
        self._unchecked_from = position
        # A full frame is buffered: parse it before reading on (the poller reports the rest again).
        return more and len(buffered) <= MAX_RAFT_FRAME_BYTES + _FRAME_LENGTH.size

    # Replaces TcpConnection.__processParseMessage (one frame off the buffer): keep the checked offset aligned.
    def _TcpConnection__processParseMessage(self) -> Any:
        before = len(self._TcpConnection__readBuffer)
        message = TcpConnection._TcpConnection__processParseMessage(self)
        consumed = before - len(self._TcpConnection__readBuffer)
        self._unchecked_from = max(0, self._unchecked_from - consumed)
        return message


def bound_raft_connections() -> None:
    """Make pysyncobj's server and transport in this process use :class:`BoundedTcpConnection`."""
    tcp_server.TcpConnection = BoundedTcpConnection
    transport.TcpConnection = BoundedTcpConnection
