"""The single-flight helper: one leader per key, followers take its result or, if it failed, call on their own."""

from __future__ import annotations

import asyncio
import threading

import pytest

from semcache._cache.single_flight import Follow, Landed, Lead, SingleFlight


def test_the_first_caller_leads_and_the_others_follow_until_it_lands():
    flights: SingleFlight[str] = SingleFlight()
    lead, follow, other = flights.begin("k"), flights.begin("k"), flights.begin("other key")
    assert isinstance(lead, Lead) and isinstance(follow, Follow) and isinstance(other, Lead)
    assert len(flights) == 2
    lead.land("answer")
    assert follow.wait(timeout=5) == Landed("answer")
    assert isinstance(flights.begin("k"), Lead)  # landed: the next caller starts a new flight


def test_a_failed_flight_hands_its_followers_nothing_to_raise():
    flights: SingleFlight[str] = SingleFlight()
    lead = flights.begin("k")
    follow = flights.begin("k")
    assert isinstance(lead, Lead) and isinstance(follow, Follow)
    lead.fail()
    assert follow.wait(timeout=5) is None
    lead.land("too late")  # a flight lands once
    assert follow.wait(timeout=5) is None


def test_leaving_the_block_on_any_error_lands_the_flight_as_failed():
    flights: SingleFlight[None] = SingleFlight()
    for error in (RuntimeError("upstream down"), KeyboardInterrupt()):
        lead = flights.begin("k")
        assert isinstance(lead, Lead)
        follow = flights.begin("k")
        assert isinstance(follow, Follow)
        with pytest.raises(type(error)), lead:
            raise error
        assert follow.wait(timeout=5) is None and len(flights) == 0


def test_a_block_that_lands_is_not_landed_again():
    flights: SingleFlight[int] = SingleFlight()
    lead = flights.begin("k")
    follow = flights.begin("k")
    assert isinstance(lead, Lead) and isinstance(follow, Follow)
    with lead:
        lead.land(42)
    assert follow.wait(timeout=5) == Landed(42)


def test_followers_in_threads_and_tasks_all_see_the_landing():
    flights: SingleFlight[str] = SingleFlight()
    lead = flights.begin("k")
    assert isinstance(lead, Lead)
    seen: list[Landed[str] | None] = []
    followers = [flights.begin("k") for _ in range(3)]
    threads = [threading.Thread(target=lambda f=f: seen.append(f.wait(timeout=30))) for f in followers[:2]]
    for thread in threads:
        thread.start()

    async def task_follower() -> Landed[str] | None:
        follow = followers[2]
        assert isinstance(follow, Follow)
        waiting = asyncio.ensure_future(follow.wait_async())
        await asyncio.sleep(0)
        lead.land("answer")  # from the loop's thread: the threads and the task are released
        return await waiting

    seen.append(asyncio.run(task_follower()))
    for thread in threads:
        thread.join(timeout=30)
    assert seen == [Landed("answer")] * 3
