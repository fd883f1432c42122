"""``get_or_compute``'s misses: each missing answer computed once, however many callers miss it at the same time.

The first caller to miss a prompt leads a flight (:mod:`semcache._cache.single_flight`):
it computes, stores and lands the answer; callers missing the same prompt
meanwhile wait and take it.  A follower of a failed leader computes its own
(the single flight's failure semantic), so it gets its own answer or its own exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from semcache._cache.keys import Address, normalize_prompt
from semcache._cache.lookup import Count
from semcache._cache.records import read_record
from semcache._cache.single_flight import Follow, SingleFlight
from semcache._engine.backend import Backend


class ComputeOnce:
    """Computes one answer per missing prompt at a time, stores it, and hands it to the callers that waited.

    Args:
        backend: the cache's store (the leader re-checks the prompt's key there).
        count: adds one to a :class:`~semcache.CacheStats` counter (``computes``, ``single_flight_waits``).
    """

    def __init__(self, backend: Backend, count: Count) -> None:
        self._backend = backend
        self._count = count
        self._flights: SingleFlight[Any] = SingleFlight()

    def run(self, address: Address, fn: Callable[[], Any], store: Callable[[Any], object]) -> Any:
        """The answer for a prompt that missed: ``fn()``, stored with ``store``, or another caller's."""

        def compute() -> Any:
            self._count("computes")
            response = fn()
            store(response)
            return response

        flight = self._flights.begin(address.key)
        if isinstance(flight, Follow):
            self._count("single_flight_waits")
            landed = flight.wait()
            if landed is not None:
                return landed.value
            return compute()  # the leader failed
        with flight:
            # A previous leader may have stored the answer between our lookup and
            # taking the lead; re-check the exact key so the answer is still computed once.
            record = read_record(address.key, self._backend.get(address.key))
            if record is not None and normalize_prompt(record.prompt) == address.normalized:
                response = record.response
            else:
                response = compute()
            flight.land(response)
            return response
