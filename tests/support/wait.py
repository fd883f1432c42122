"""The one way tests wait: poll a condition, bounded (a bound on a stuck run, never a speed check)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

WAIT = 45.0  # upper bound on any settling wait on a loaded 2-core machine


def wait_until(predicate: Callable[[], T], timeout: float = WAIT, *, interval: float = 0.01, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; that value.

    Raises:
        TimeoutError: still falsy after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
        time.sleep(interval)
