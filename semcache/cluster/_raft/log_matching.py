"""Raft's AppendEntries rule for a follower, as a plan pysyncobj can carry out without losing entries.

pysyncobj 0.3.17 (``SyncObj.__onMessageReceived``, ``append_entries``) handles a
message whose ``prevLogIdx`` lies before its last entry by deleting *every*
entry after ``prevLogIdx`` and appending the message's entries.  Raft (§5.3,
receiver rule 3) deletes only from the first entry whose term *conflicts* with
the leader's, and keeps the entries that match.  The difference bites whenever
a leader sends a follower an older range again, which pysyncobj does routinely:

* every ``append_entries`` the follower cannot place (it lacks ``prevLogIdx``)
  is answered with ``next_node_idx`` and ``reset=True``, and each such answer
  rewinds the leader's ``nextIndex``.  A leader that sent several messages
  before the first answer came back (the tick callback that sends new entries
  at once, then the heartbeat) gets several answers, rewinds several times and
  resends the same range each time;
* a resend is cut to ``appendEntriesBatchSizeBytes`` (64 KiB: one or two
  40 KB entries), so it ends well before what the follower has received since.

The follower then cut its log back to the end of that short resend: entries it
had acknowledged (so the leader counted them towards a majority) and often
applied were gone, its commit index went below its last applied index, and if
the leader died at that moment a replica missing a committed entry could win
the election: an acknowledged write lost, or a replica whose state no longer
matches its log (pysyncobj then logs CRITICAL "truncating already-applied log
entries").  See also bakwc/PySyncObj#166 (the follower's commit index was not
monotonic) and willemt/raft#37 (the same bug in another implementation: a
heartbeat deleting entries a previous message appended).

:func:`plan_append` rewrites such a message before pysyncobj sees it, so that
pysyncobj's own code does exactly what Raft says:

* entries the follower holds with the same term are dropped from the message;
* the message is re-anchored at the entry before the first new or conflicting
  one, so pysyncobj deletes entries only at a real conflict (never one that
  matches the leader's log);
* when everything in the message is already held, it becomes a heartbeat at
  the follower's last entry, the commit index it carries is capped at the last
  entry known to match the leader (Raft: ``min(leaderCommit, index of last new
  entry)``), and the acknowledgement names that entry, not the end of the log.

An entry is *known to match* the leader's log if the message carried it with
the same term, or if it is the follower's last entry and was written in the
leader's current term (only that leader writes entries of its term, and a
leader never deletes its own entries; by the log matching property everything
before it matches too).

>>> log = [(b"", 1, 1), (b"a", 2, 1), (b"b", 3, 1), (b"c", 4, 2), (b"d", 5, 2)]
>>> plan_append(log, prev_index=1, prev_term=1, entries=[(b"a", 2, 1), (b"b", 3, 1)], leader_commit=5,
...             leader_term=2)  # an old, shorter resend: nothing is deleted, the ack names what matched
AppendPlan(prev_index=5, prev_term=2, entries=[], leader_commit=5, ack_index=None)
>>> plan_append(log, prev_index=1, prev_term=1, entries=[(b"a", 2, 1), (b"b", 3, 1)], leader_commit=5,
...             leader_term=3)  # entries 4-5 are of an older term: not known to match this leader's yet
AppendPlan(prev_index=5, prev_term=2, entries=[], leader_commit=3, ack_index=3)
>>> plan_append(log, prev_index=3, prev_term=1, entries=[(b"x", 4, 3)], leader_commit=4, leader_term=3)
AppendPlan(prev_index=3, prev_term=1, entries=[(b'x', 4, 3)], leader_commit=4, ack_index=None)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

LogEntry = tuple[Any, int, int]  # pysyncobj's (command, index, term)


@dataclass(frozen=True)
class AppendPlan:
    """The ``append_entries`` message pysyncobj should process instead of the one received.

    Attributes:
        prev_index, prev_term: the entry the new entries follow (one this follower holds, same term).
        entries: the entries to append after it (pysyncobj deletes whatever follows
            ``prev_index`` first: only ever entries that conflict with these).
        leader_commit: the commit index to take from the message.
        ack_index: when not None, the last entry this follower may acknowledge
            (pysyncobj would acknowledge its whole log).
    """

    prev_index: int
    prev_term: int
    entries: list[LogEntry]
    leader_commit: int
    ack_index: int | None


def plan_append(log: Sequence[LogEntry], *, prev_index: int | None, prev_term: int | None,
                entries: Sequence[LogEntry], leader_commit: int, leader_term: int) -> AppendPlan | None:
    """How a follower holding ``log`` should take an ``append_entries`` message; None: as pysyncobj would.

    None is returned when the message cannot be placed (``prev_index`` is not in
    the log, or holds another term): pysyncobj then answers with a reset and
    changes nothing, which is what Raft asks.

    Args:
        log: the follower's journal (consecutive indexes).
        prev_index, prev_term, entries, leader_commit: the message's fields.
        leader_term: the term of the leader that sent it.
    """
    if not log or prev_index is None:
        return None
    first, last = log[0][1], log[-1][1]
    if not first <= prev_index <= last or log[prev_index - first][2] != prev_term:
        return None
    held = 0  # leading entries of the message this follower already holds with the same term
    for _, index, term in entries:
        if index > last or log[index - first][2] != term:
            break
        held += 1
    if held < len(entries):  # new entries (after ``last``) or a real conflict: anchor just before them
        anchor = entries[held][1] - 1
        return AppendPlan(anchor, log[anchor - first][2], list(entries[held:]), leader_commit, None)
    message_end = entries[-1][1] if entries else prev_index
    last_term = log[-1][2]
    known_match = last if message_end == last or last_term == leader_term else message_end
    return AppendPlan(last, last_term, [], min(leader_commit, known_match),
                      None if known_match == last else known_match)
