"""Wrong-hit feedback: reported hits, the log the store keeps of them, and a namespace's refitted operating point.

:meth:`SemanticCache.report_wrong_hit` deletes the entry that answered wrongly
and records the labelled pair (new prompt, cached prompt, scope, similarity,
verifier score) in the store itself, under keys of the namespace's own
feedback scope (``<namespace>~feedback``), so a cluster replicates it and a
``clear()`` of the namespace's entries keeps it.  ``semcache calibrate
--feedback`` reads that log and refits the namespace's operating point
(:func:`refit`), stored under ``<namespace>~settings/operating-point``, which
every :class:`SemanticCache` of the namespace reads when it opens unless it is
given a threshold or a rate of its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from semcache._cache.decision import VerifierDecision
from semcache._cache.records import CacheHit
from semcache._engine.backend import Backend
from semcache.errors import InvalidInputError

log = logging.getLogger("semcache")

# Reports kept per scan (the log of a namespace is read whole; it holds a few hundred reports at most).
MAX_REPORTS = 100_000
# A refit lets at most this share of the reported pairs be served again.
REFIT_ALLOWED_SHARE = 0.1
# ... and never raises the score threshold above this (a cache must still serve near-identical prompts).
REFIT_CEILING = 0.995


@dataclass(frozen=True)
class Report:
    """One wrong hit as it was reported.

    Attributes:
        prompt: the prompt that was looked up.
        cached_prompt: the prompt whose answer was served.
        scope: the backend scope (partition) of the lookup.
        similarity: their cosine similarity.
        score: the verifier's score of the hit (None: a cosine threshold decided it).
        reported_at: epoch seconds.
    """

    prompt: str
    cached_prompt: str
    scope: str
    similarity: float
    score: float | None
    reported_at: float


@dataclass(frozen=True)
class OperatingPoint:
    """A namespace's refitted operating point (what :func:`refit` chose, and from what)."""

    score_threshold: float
    reports: int
    previous: float


def feedback_scope(namespace: str) -> str:
    """The backend scope a namespace's reports live in (outside ``<namespace>/``, so ``clear()`` keeps them)."""
    return f"{namespace}~feedback"


def settings_key(namespace: str) -> str:
    return f"{namespace}~settings/operating-point"


def record_report(backend: Backend, namespace: str, report: Report) -> str:
    """Store ``report`` in the namespace's feedback log; returns its key (a repeated report overwrites itself)."""
    digest = hashlib.sha256(f"{report.scope}\0{report.cached_prompt}\0{report.prompt}".encode()).hexdigest()[:32]
    key = f"{feedback_scope(namespace)}/{digest}"
    backend.put(key, json.dumps(asdict(report), ensure_ascii=False), text=report.prompt,
                scope=feedback_scope(namespace))
    return key


def read_reports(backend: Backend, namespace: str) -> list[Report]:
    """Every report in the namespace's feedback log, oldest first."""
    reports = []
    for key in backend.scan(f"{feedback_scope(namespace)}/", MAX_REPORTS):
        value = backend.get(key)
        if value is not None:
            reports.append(Report(**json.loads(value)))
    return sorted(reports, key=lambda report: report.reported_at)


def read_operating_point(backend: Backend, namespace: str) -> OperatingPoint | None:
    """The namespace's refitted operating point, if ``semcache calibrate --feedback`` wrote one."""
    value = backend.get(settings_key(namespace))
    return None if value is None else OperatingPoint(**json.loads(value))


def write_operating_point(backend: Backend, namespace: str, point: OperatingPoint) -> None:
    backend.put(settings_key(namespace), json.dumps(asdict(point)), text="operating point",
                scope=feedback_scope(namespace))


def refit(reports: list[Report], current: float) -> OperatingPoint:
    """The score threshold that keeps the reported pairs out, never below ``current``.

    The lowest threshold at which at most :data:`REFIT_ALLOWED_SHARE` of the
    reports scored by the verifier would still be served (their scores are
    recorded with them), capped at :data:`REFIT_CEILING`; ``current`` when no
    report carries a score.

    >>> reports = [Report("q", "c", "s", 0.9, score, 0.0) for score in (0.80, 0.85, 0.90)]
    >>> refit(reports, 0.77).score_threshold
    0.9001
    """
    scores = sorted((report.score for report in reports if report.score is not None), reverse=True)
    threshold = current
    if scores:
        allowed = int(REFIT_ALLOWED_SHARE * len(scores))
        threshold = max(current, min(REFIT_CEILING, round(scores[allowed] + 1e-4, 4)))
    return OperatingPoint(threshold, len(reports), current)


def report_of(hit: Any, scope: str) -> Report:
    """The :class:`Report` of a :class:`~semcache._cache.records.CacheHit` that was wrong."""
    return Report(hit.prompt, hit.cached_prompt, scope, float(hit.similarity), hit.score, time.time())


def record_wrong_hit(backend: Backend, namespace: str, hit: CacheHit | str) -> str:
    """The key of a hit reported wrong, its pair recorded in the namespace's log first when ``hit`` is a
    :class:`~semcache._cache.records.CacheHit` (a bare key carries no pair).

    Raises:
        InvalidInputError: not a hit of ``namespace``.
    """
    key = hit.key if isinstance(hit, CacheHit) else hit
    if not isinstance(key, str) or not key.startswith(f"{namespace}/"):
        raise InvalidInputError(f"report_wrong_hit needs a CacheHit or key of namespace {namespace!r}")
    if isinstance(hit, CacheHit):
        record_report(backend, namespace, report_of(hit, key.rsplit("/", 1)[0]))
    return key


def refitted(decision: VerifierDecision, backend: Backend, namespace: str) -> VerifierDecision:
    """``decision`` at the namespace's refitted operating point, when one was written (stricter only)."""
    point = read_operating_point(backend, namespace)
    if point is None or point.score_threshold <= decision.score_threshold:
        return decision
    log.info("semcache: namespace %s serves from verifier score %.3f (refitted from %d wrong-hit reports)",
             namespace, point.score_threshold, point.reports)
    return replace(decision, score_threshold=point.score_threshold)
