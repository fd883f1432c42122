"""One call on one shard, through leader changes and unreachable replicas, until an answer or a deadline.

A :class:`ShardCall` sweeps the shard's replicas (the believed leader first)
and reacts to each failure with one named step:

==========================  ==============================================================
the replica says            step
==========================  ==============================================================
``NotLeaderError`` + hint   :meth:`~ShardCall._follow_hint`: remember the hinted leader and
                            sweep again at once (at most ``MAX_REDIRECTS`` times in a row)
``NotLeaderError``          forget the leader, try the next replica
``ShardUnavailableError``   :meth:`~ShardCall._rotate`: forget it as leader, start the
                            rotation one further, try the next replica
``NoQuorumError``           the leader is up but cannot commit: stop the sweep
(answers)                   :meth:`~ShardCall._accept`: cache it as the leader, return
==========================  ==============================================================

After a sweep without an answer it backs off (:meth:`~ShardCall._back_off`:
``FIRST_BACKOFF`` doubling up to ``MAX_BACKOFF``, jittered) and sweeps again,
until the deadline.  Then it gives up (:meth:`~ShardCall._give_up`) with
:class:`~semcache.errors.NoQuorumError` if some replica answered (even "not
the leader") or took the call and timed out (:func:`timed_out`), else with
:class:`~semcache.errors.ShardUnavailableError`.  A write that failed either
way may still commit later.

>>> from semcache.cluster._client.topology import ShardRoute
>>> from semcache.cluster._config import Replica
>>> class Follower:
...     def get(self):
...         raise NotLeaderError("not me", leader_hint="fake://b")
>>> class Leader:
...     def get(self):
...         return "value"
>>> pool = ConnectionPool(lambda address: Leader() if address == "fake://b" else Follower())
>>> route = ShardRoute("shard-0", [Replica("a", "", "fake://a"), Replica("b", "", "fake://b")])
>>> caller = ShardCaller({"shard-0": route}, pool)
>>> caller.run("shard-0", lambda node: node.get(), leader=True, timeout=1.0), route.leader
('value', 'fake://b')
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from semcache.cluster._client.connections import ConnectionPool, NodeConnection
from semcache.cluster._client.topology import ShardRoute
from semcache.errors import ClusterError, NoQuorumError, NotLeaderError, ShardUnavailableError

T = TypeVar("T")

FIRST_BACKOFF = 0.02  # seconds before the first retry; doubles each time
MAX_BACKOFF = 0.1  # while a shard elects, ask its replicas again this often (a refused connection: at once)
MAX_REDIRECTS = 3  # fresh leader hints followed at once before backing off


def timed_out(exc: ShardUnavailableError) -> bool:
    """True if the node took the call but did not finish it in time (not: could not be reached).

    A write that timed out may still commit; a refused connection never reached a node.
    """
    return type(exc.__cause__).__name__ == "FlightTimedOutError" or getattr(exc, "timed_out", False) is True


@dataclass(frozen=True)
class _Answer(Generic[T]):
    value: T


class _Sweep:
    """How a sweep over the replicas ended without an answer."""

    REDIRECTED = "redirected"  # a fresh leader hint: sweep again at once
    EXHAUSTED = "exhausted"  # every candidate failed, or the leader has no quorum: back off


class ShardCaller:
    """Runs calls on shards' replicas with retries (owns the clock and sleep they use).

    Args:
        routes: ``{shard id: route}``; the routes' cached leaders are updated as calls learn them.
        pool: the connections to use.
        clock, sleep: monotonic seconds and the sleep between retries (injectable for tests).
    """

    def __init__(
        self,
        routes: dict[str, ShardRoute],
        pool: ConnectionPool,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._routes = routes
        self._pool = pool
        self._clock = clock
        self._sleep = sleep

    def run(self, shard_id: str, call: Callable[[NodeConnection], T], *, leader: bool, timeout: float) -> T:
        """Run ``call`` on the shard's leader (or, ``leader=False``, any replica), retrying until ``timeout``.

        Raises:
            NoQuorumError: some replica answered but none could commit or lead.
            ShardUnavailableError: no replica answered.
        """
        attempt = ShardCall(self._routes[shard_id], call, leader=leader, pool=self._pool, clock=self._clock,
                            sleep=self._sleep, timeout=timeout)
        return attempt.run()


class ShardCall(Generic[T]):
    """One call's way through a shard's replicas: what it learnt so far, and the steps it takes."""

    def __init__(
        self,
        route: ShardRoute,
        call: Callable[[NodeConnection], T],
        *,
        leader: bool,
        pool: ConnectionPool,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        timeout: float,
    ) -> None:
        self._route = route
        self._call = call
        self._leader = leader
        self._pool = pool
        self._clock = clock
        self._sleep = sleep
        self._timeout = timeout
        self._deadline = clock() + timeout
        self._answered = False  # did any replica answer at all (even "not leader"), or take the call and time out?
        self._last: ClusterError | None = None
        self._redirects = 0

    def run(self) -> T:
        """Sweep, back off, sweep again... until an answer (returned) or the deadline (raised)."""
        backoffs = 0
        while True:
            answer = self._sweep_following_hints()
            if answer is not None:
                return answer.value
            if not self._back_off(backoffs):
                raise self._give_up() from self._last
            backoffs += 1

    def _sweep_following_hints(self) -> _Answer[T] | None:
        """Sweep the replicas; a fresh leader hint starts another sweep at once, up to ``MAX_REDIRECTS`` times."""
        self._redirects = 0
        while True:
            outcome = self._sweep()
            if isinstance(outcome, _Answer):
                return outcome
            if outcome == _Sweep.EXHAUSTED or self._clock() >= self._deadline:
                return None

    def _sweep(self) -> _Answer[T] | str:
        """Try the candidates in order until one answers: the answer, or how the sweep ended."""
        candidates = self._route.candidates() if self._leader else self._route.spread()
        for address in candidates:
            try:
                result = self._call(self._pool.get(address))
            except NotLeaderError as exc:
                if self._follow_hint(exc, address):
                    return _Sweep.REDIRECTED
            except NoQuorumError as exc:
                self._answered, self._last = True, exc
                return _Sweep.EXHAUSTED  # the leader is up but cannot commit: back off rather than hop replicas
            except ShardUnavailableError as exc:
                self._rotate(exc, address)
            else:
                return self._accept(address, result)
        return _Sweep.EXHAUSTED

    def _follow_hint(self, exc: NotLeaderError, address: str) -> bool:
        """Remember the leader ``address`` names (or forget the leader); True to sweep again at once."""
        self._answered, self._last = True, exc
        hint = exc.leader_hint
        self._route.leader = hint if hint and hint != address else None
        if self._route.leader is not None and self._redirects < MAX_REDIRECTS:
            self._redirects += 1
            return True
        return False

    def _rotate(self, exc: ShardUnavailableError, address: str) -> None:
        """``address`` did not answer: not the leader any more, and the next rotation starts past it."""
        self._last = exc
        self._answered = self._answered or timed_out(exc)  # reachable, but could not finish in time
        if self._route.leader == address:
            self._route.leader = None
        self._route.next_replica += 1

    def _accept(self, address: str, result: T) -> _Answer[T]:
        if self._leader:
            self._route.leader = address
        return _Answer(result)

    def _back_off(self, backoffs: int) -> bool:
        """Sleep before the next sweep; False when the deadline leaves no time for it."""
        pause = min(MAX_BACKOFF, FIRST_BACKOFF * 2**backoffs) * (0.5 + random.random() / 2)
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            return False
        self._sleep(min(pause, remaining))
        return True

    def _give_up(self) -> ClusterError:
        """The error for a call that found no answer in time: no quorum if anyone answered, else unavailable."""
        shard_id = self._route.id
        if self._answered:
            return NoQuorumError(
                f"shard {shard_id} could not serve the request within {self._timeout:.1f}s: "
                f"no leader with a quorum ({self._last})",
                shard_id=shard_id,
            )
        return ShardUnavailableError(
            f"no replica of shard {shard_id} answered within {self._timeout:.1f}s ({self._last})", shard_id=shard_id
        )
