"""A follower keeps the entries it holds (Raft's AppendEntries rule on top of pysyncobj 0.3.17), durably.

The plan (:func:`plan_append`) is checked on its own, then on a real pysyncobj
follower (:class:`RaftNode`, ticked by hand, with a transport that records what
it sends) fed the messages a leader sends when it rewinds and resends: stock
pysyncobj cut such a follower's log back below what it had applied.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObjConf
from pysyncobj.node import TCPNode
from pysyncobj.transport import Transport

from semcache.cluster._raft.compat import RaftNode, use_checksummed_journals
from semcache.cluster._raft.journal import JOURNAL_FILE, JournalFile
from semcache.cluster._raft.log_matching import plan_append

NOOP = b"\x01"  # pysyncobj's no-op command: applying it changes nothing


def entries(first: int, last: int, term: int) -> list[tuple[bytes, int, int]]:
    return [(NOOP, index, term) for index in range(first, last + 1)]


# ------------------------------------------------------------------ the plan
def test_an_old_shorter_resend_deletes_nothing_and_acknowledges_the_whole_log_of_this_term() -> None:
    log = entries(1, 1, 0) + entries(2, 9, 1)
    plan = plan_append(log, prev_index=3, prev_term=1, entries=entries(4, 5, 1), leader_commit=9, leader_term=1)
    assert plan is not None
    assert (plan.prev_index, plan.entries, plan.leader_commit, plan.ack_index) == (9, [], 9, None)


def test_entries_of_an_older_term_past_the_message_are_kept_but_not_acknowledged() -> None:
    log = entries(1, 1, 0) + entries(2, 9, 1)
    plan = plan_append(log, prev_index=3, prev_term=1, entries=entries(4, 5, 1), leader_commit=9, leader_term=2)
    assert plan is not None
    # Nothing deleted (anchored at the end), commit and acknowledgement only up to what the message matched.
    assert (plan.prev_index, plan.entries, plan.leader_commit, plan.ack_index) == (9, [], 5, 5)


def test_a_real_conflict_deletes_from_the_conflicting_entry_only() -> None:
    log = entries(1, 1, 0) + entries(2, 6, 1)
    sent = entries(4, 4, 1) + entries(5, 7, 2)  # 4 matches, 5 conflicts
    plan = plan_append(log, prev_index=3, prev_term=1, entries=sent, leader_commit=7, leader_term=2)
    assert plan is not None
    assert (plan.prev_index, plan.prev_term, plan.entries, plan.ack_index) == (4, 1, entries(5, 7, 2), None)


def test_new_entries_are_appended_after_the_ones_already_held() -> None:
    log = entries(1, 1, 0) + entries(2, 6, 1)
    plan = plan_append(log, prev_index=3, prev_term=1, entries=entries(4, 8, 1), leader_commit=4, leader_term=1)
    assert plan is not None
    assert (plan.prev_index, plan.entries, plan.leader_commit) == (6, entries(7, 8, 1), 4)


def test_a_message_the_follower_cannot_place_is_left_to_pysyncobj() -> None:
    log = entries(5, 9, 1)  # compacted: starts at 5
    assert plan_append(log, prev_index=12, prev_term=1, entries=[], leader_commit=9, leader_term=1) is None
    assert plan_append(log, prev_index=3, prev_term=1, entries=[], leader_commit=9, leader_term=1) is None
    assert plan_append(log, prev_index=7, prev_term=2, entries=[], leader_commit=9, leader_term=2) is None
    assert plan_append(log, prev_index=None, prev_term=None, entries=[], leader_commit=9, leader_term=1) is None


# ------------------------------------------------- a real pysyncobj follower
class RecordingTransport(Transport):
    """A pysyncobj transport that sends nothing and records what it was asked to send."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:  # noqa: N803 - pysyncobj's names
        super().__init__(syncObj, selfNode, otherNodes)
        self.sent: list[dict[str, Any]] = []

    def send(self, node: Any, message: Any) -> bool:
        self.sent.append(message)
        return True


LEADER = TCPNode("127.0.0.1:1")


@pytest.fixture
def follower() -> Iterator[RaftNode]:
    conf = SyncObjConf(autoTick=False, raftMinTimeout=60, raftMaxTimeout=61, connectionTimeout=61)
    node = RaftNode("127.0.0.1:2", ["127.0.0.1:1"], conf, transportClass=RecordingTransport)
    yield node
    node.destroy()


def deliver(node: RaftNode, *, prev: int, prev_term: int, sent: list[Any], commit: int, term: int = 1) -> int:
    """Hand ``node`` one append_entries from LEADER, tick it (it applies what is committed); its answer."""
    node._SyncObj__onMessageReceived(LEADER, {
        "type": "append_entries", "term": term, "commit_index": commit,
        "entries": sent, "prevLogIdx": prev, "prevLogTerm": prev_term,
    })
    node.doTick(0.0)
    (answer,) = [m for m in node._SyncObj__transport.sent if m["type"] == "next_node_idx"][-1:]
    return int(answer["next_node_idx"])


def test_a_follower_keeps_applied_entries_when_an_old_range_is_resent(
    follower: RaftNode, caplog: pytest.LogCaptureFixture
) -> None:
    assert deliver(follower, prev=1, prev_term=0, sent=entries(2, 9, 1), commit=9) == 10
    assert follower.raftLastApplied == 9
    with caplog.at_level(logging.CRITICAL, logger="pysyncobj"):
        # What a leader resends after rewinding on a stale reset: a short range it already delivered.
        answer = deliver(follower, prev=3, prev_term=1, sent=entries(4, 5, 1), commit=9)
    log = follower._SyncObj__raftLog
    assert [entry[1] for entry in log[:]] == list(range(1, 10))  # nothing deleted
    assert follower.raftCommitIndex == 9 >= follower.raftLastApplied
    assert answer == 10
    assert not [r for r in caplog.records if "truncating already-applied" in r.getMessage()]


def test_a_follower_replaces_only_conflicting_entries(follower: RaftNode) -> None:
    deliver(follower, prev=1, prev_term=0, sent=entries(2, 6, 1), commit=3)
    # A new leader (term 2) whose log diverges from index 5 on: 5 and 6 were never committed.
    answer = deliver(follower, prev=3, prev_term=1, sent=entries(4, 4, 1) + entries(5, 7, 2), commit=7, term=2)
    log = follower._SyncObj__raftLog
    assert [(entry[1], entry[2]) for entry in log[:]] == [(1, 0), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2), (7, 2)]
    assert answer == 8 and follower.raftCommitIndex == 7


def test_a_follower_commits_only_entries_known_to_match_the_leader(follower: RaftNode) -> None:
    deliver(follower, prev=1, prev_term=0, sent=entries(2, 8, 1), commit=2)
    # Leader of term 2 sends entries 3-4 (matching); 5-8 of term 1 may not be in its log.
    answer = deliver(follower, prev=2, prev_term=1, sent=entries(3, 4, 1), commit=8, term=2)
    assert answer == 5 and follower.raftCommitIndex == 4
    assert len(follower._SyncObj__raftLog) == 8  # kept until a message says whether they conflict


def test_with_raft_fsync_a_follower_fsyncs_its_journal_before_it_acknowledges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_checksummed_journals()
    events: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    conf = SyncObjConf(autoTick=False, raftMinTimeout=60, raftMaxTimeout=61, connectionTimeout=61,
                       journalFile=JournalFile(tmp_path / JOURNAL_FILE, fsync=True))
    node = RaftNode("127.0.0.1:2", ["127.0.0.1:1"], conf, transportClass=RecordingTransport)
    try:
        transport = node._SyncObj__transport
        monkeypatch.setattr(transport, "send", lambda peer, message: (events.append(message["type"]), True)[1])
        events.clear()
        node._SyncObj__onMessageReceived(LEADER, {
            "type": "append_entries", "term": 1, "commit_index": 1,
            "entries": entries(2, 4, 1), "prevLogIdx": 1, "prevLogTerm": 0,
        })
        assert events[-2:] == ["fsync", "next_node_idx"]
    finally:
        node.destroy()
