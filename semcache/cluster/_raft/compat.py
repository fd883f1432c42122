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
    follower campaign at its next tick and depose a healthy leader.
``SyncObj._SyncObj__raftLog`` (:func:`journal`)
    A node stopped between writing a snapshot and trimming its journal restarts
    with a journal that begins before the snapshot, and pysyncobj would then
    discard all of it, committed entries newer than the snapshot included;
    the snapshot restore trims it first (:mod:`.snapshots`).
``pysyncobj.tcp_connection.zlib`` (:func:`send_raft_messages_uncompressed`)
    Replaced by a stand-in whose ``compress`` stores (level 0): embeddings do
    not compress, and zlib cost CPU on every message.
``SyncObj._isLeader`` / ``SyncObj._getLeader`` (:func:`is_leader`, :func:`leader_node`)
    Protected, but documented for subclasses; routed through here all the same.
``SyncObj.getStatus`` (:func:`raw_status`)
    Public, but it iterates dicts the tick thread may resize meanwhile, so it
    is retried.

Hazards of pysyncobj 0.3.17 handled elsewhere: pickle transport (the replica
always sets ``password``), entries of 64 KiB or more take a broken chunked path
(:mod:`semcache.cluster._sizes`, :mod:`.group_commit`), default snapshots stall
the tick thread (:mod:`.snapshots`), retried commands may apply twice (every
command is idempotent), an exception in a ``@replicated`` method wedges the
apply loop (``apply_batch`` never raises).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from typing import Any

try:
    from pysyncobj import (
        FAIL_REASON,
        SERIALIZER_STATE,
        SyncObj,
        SyncObjConf,
        SyncObjException,
        replicated,
        tcp_connection,
    )
    from pysyncobj.node import TCPNode
    from pysyncobj.pipe_notifier import PipeNotifier
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    from semcache.errors import missing_extra

    raise missing_extra("pysyncobj", "cluster", "Raft replication") from exc

__all__ = [
    "EAGER_SEND",
    "FAIL_REASON",
    "SERIALIZER_STATE",
    "PipeNotifier",
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
    "leader_node",
    "on_peer_disconnected",
    "raw_status",
    "replicated",
    "restart_election_timer",
    "send_append_entries",
    "send_raft_messages_uncompressed",
    "tick_wakeup",
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


def current_log_index(syncobj: SyncObj) -> int:
    """The index of the last entry in this node's log (committed or not)."""
    return int(syncobj._SyncObj__getCurrentLogIndex())


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
    syncobj._SyncObj__raftElectionDeadline = time.monotonic() + seconds


def journal(syncobj: SyncObj) -> Any:
    """pysyncobj's Raft log (entries ``(command, index, term)``, ``deleteEntriesTo``), or None."""
    return getattr(syncobj, "_SyncObj__raftLog", None)


def is_leader(syncobj: SyncObj) -> bool:
    """Whether ``syncobj`` is in the leader state now (two nodes may briefly both be)."""
    return bool(syncobj._isLeader())


def leader_node(syncobj: SyncObj) -> TCPNode | None:
    """The node ``syncobj`` last heard lead (``.id`` is its Raft address), or None."""
    return syncobj._getLeader()


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
