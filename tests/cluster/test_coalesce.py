"""Combiner: concurrent callers share batches, each gets its own answer, nothing is lost or sent twice."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence

import pytest
from support.wait import wait_until

from semcache.cluster._coalesce import Combiner
from semcache.errors import ClusterError, InvalidInputError, ShardUnavailableError

WAIT = 10.0


def start(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


class GatedSend:
    """A send that records its batches and, while ``gate`` is clear, blocks (a request in flight)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self, batch: list[str]) -> Sequence[BaseException | None]:
        self.batches.append(list(batch))
        self.entered.release()
        assert self.gate.wait(WAIT)
        return [InvalidInputError(f"bad {item}") if item.startswith("bad") else None for item in batch]


def test_a_lone_writer_sends_at_once_in_a_batch_of_its_own() -> None:
    sent: list[list[str]] = []
    combiner = Combiner[str, None](lambda batch: sent.append(batch) or [None] * len(batch), size=len)
    combiner.submit("a")
    combiner.submit("b")
    assert sent == [["a"], ["b"]]
    assert (combiner.batches, combiner.items) == (2, 2)


def test_writers_arriving_while_a_batch_is_in_flight_share_the_next_one() -> None:
    send = GatedSend()
    combiner = Combiner[str, None](send, size=len, depth=1)
    errors: dict[str, BaseException | None] = {}

    def write(item: str) -> None:
        try:
            combiner.submit(item)
            errors[item] = None
        except InvalidInputError as exc:
            errors[item] = exc

    first = start(lambda: write("first"))
    assert send.entered.acquire(timeout=WAIT)  # "first" is in flight, holding the only slot
    later = ["x1", "bad-x2", "x3", "x4"]
    threads = [start(lambda item=item: write(item)) for item in later]
    wait_until(lambda: combiner.queued == len(later), what="the later writers to queue")
    send.gate.set()
    for thread in [first, *threads]:
        thread.join(WAIT)
    assert send.batches[0] == ["first"]
    assert sorted(send.batches[1]) == sorted(later)  # one batch for everyone who waited
    assert len(send.batches) == 2
    assert errors["first"] is None and errors["x1"] is None and errors["x4"] is None
    assert isinstance(errors["bad-x2"], InvalidInputError) and "bad-x2" in str(errors["bad-x2"])


def test_a_failed_batch_fails_every_writer_in_it_and_the_next_batch_still_goes() -> None:
    calls = {"n": 0}

    def send(batch: list[str]) -> list[BaseException | None]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClusterError("shard down")
        return [None] * len(batch)

    combiner = Combiner[str, None](send, size=len)
    with pytest.raises(ClusterError, match="shard down"):
        combiner.submit("a")
    combiner.submit("b")  # the slot was handed back
    with pytest.raises(ClusterError, match="2 answers"):
        Combiner[str, None](lambda batch: [None, None], size=len).submit("c")


@pytest.mark.parametrize(("max_items", "max_bytes", "expected"), [
    (2, 10_000, [["w0", "w1"], ["w2", "w3"], ["w4", "w5"]]),
    (64, 5, [["w0", "w1"], ["w2", "w3"], ["w4", "w5"]]),  # 2 bytes each: two fit in 5
    (64, 1, [["w0"], ["w1"], ["w2"], ["w3"], ["w4"], ["w5"]]),  # an item over the bound still goes, alone
])
def test_batches_respect_the_item_and_byte_bounds(max_items: int, max_bytes: int, expected: list[list[str]]) -> None:
    send = GatedSend()
    combiner = Combiner[str, None](send, size=len, depth=1, max_items=max_items, max_bytes=max_bytes)
    blocker = start(lambda: combiner.submit("b0"))
    assert send.entered.acquire(timeout=WAIT)
    threads = []
    for n in range(6):  # queue in a known order
        threads.append(start(lambda n=n: combiner.submit(f"w{n}")))
        wait_until(lambda n=n: combiner.queued == n + 1, what="a writer to queue")
    send.gate.set()
    for thread in [blocker, *threads]:
        thread.join(WAIT)
    assert send.batches[1:] == expected


def test_many_writers_every_item_sent_exactly_once_and_never_more_than_depth_in_flight() -> None:
    lock = threading.Lock()
    in_flight = {"now": 0, "max": 0}
    seen: list[str] = []

    def send(batch: list[str]) -> list[BaseException | None]:
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
            seen.extend(batch)
        time.sleep(random.uniform(0, 0.002))
        with lock:
            in_flight["now"] -= 1
        return [None] * len(batch)

    combiner = Combiner[str, None](send, size=len, depth=2, max_items=5)
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(150):
                combiner.submit(f"{n}:{i}")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [start(lambda n=n: writer(n)) for n in range(8)]
    for thread in threads:
        thread.join(60)
    assert not failures and not any(t.is_alive() for t in threads)
    assert sorted(seen) == sorted(f"{n}:{i}" for n in range(8) for i in range(150))
    assert in_flight["max"] <= 2
    assert combiner.items == 1200 and combiner.batches < 1200  # concurrent writers did share batches
    assert combiner.queued == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="depth"):
        Combiner[str, None](lambda batch: [], size=len, depth=0)


def test_each_caller_gets_its_own_result() -> None:
    combiner = Combiner[int, int](lambda batch: [n * n for n in batch], size=lambda n: 8)
    results: dict[int, int] = {}
    threads = [start(lambda n=n: results.__setitem__(n, combiner.submit(n))) for n in range(20)]
    for thread in threads:
        thread.join(WAIT)
    assert results == {n: n * n for n in range(20)}


def test_after_a_shard_fails_to_answer_the_callers_queued_behind_it_fail_at_once() -> None:
    gate = threading.Event()
    entered = threading.Event()
    sent: list[list[str]] = []

    def send(batch: list[str]) -> list[BaseException | None]:
        sent.append(batch)
        entered.set()
        assert gate.wait(WAIT)
        raise ShardUnavailableError("no replica answered within 5.0s")

    combiner = Combiner[str, None](send, size=len, depth=1,
                                   fails_queued=lambda exc: isinstance(exc, ShardUnavailableError))
    errors: dict[str, BaseException] = {}

    def call(item: str) -> None:
        try:
            combiner.submit(item)
        except ShardUnavailableError as exc:
            errors[item] = exc

    threads = [start(lambda: call("first"))]
    assert entered.wait(WAIT)
    threads += [start(lambda item=item: call(item)) for item in ("q1", "q2", "q3")]
    wait_until(lambda: combiner.queued == 3, what="the queued callers")
    gate.set()
    for thread in threads:
        thread.join(WAIT)
    assert sent == [["first"]]  # the queued ones did not wait out a timeout of their own
    assert sorted(errors) == ["first", "q1", "q2", "q3"] and combiner.queued == 0
    gate.clear()
    entered.clear()
    threading.Timer(0.05, gate.set).start()
    with pytest.raises(ShardUnavailableError):
        combiner.submit("later")  # the slot was handed back: a later call is sent
    assert sent[-1] == ["later"]


def test_a_caller_interrupted_while_queued_leaves_no_item_or_slot_behind() -> None:
    send = GatedSend()
    combiner = Combiner[str, None](send, size=len, depth=1)
    first = start(lambda: combiner.submit("first"))
    assert send.entered.acquire(timeout=WAIT)  # "first" holds the only send slot

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        with pytest.raises(Interrupted):
            combiner.submit("interrupted")  # this (main) thread waits in the queue, then is interrupted
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert combiner.queued == 0  # its item left the queue
    send.gate.set()
    first.join(WAIT)
    combiner.submit("after")  # the slot came back: this is sent, not stuck behind a vanished caller
    assert send.batches == [["first"], ["after"]]
