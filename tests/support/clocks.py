"""A millisecond clock for SemanticKV tests that moves only when told to."""

from __future__ import annotations


class Clock:
    """Milliseconds for SemanticKV, moved by hand (``clock.now += ms`` or ``clock.advance(ms)``)."""

    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms
