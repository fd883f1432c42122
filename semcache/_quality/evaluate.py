"""``semcache eval``: a labelled pair set run through the real cache, counted at every operating point.

Every first text is stored in a fresh namespace of the cache (its answer: the
ids of the pairs that stored it), every second text is looked up with
:meth:`~semcache.SemanticCache.explain`, which runs the real lookup (the
exact path, the embedding, the backend's search, the verifier) and says what
decided it.  A hit is right when it returns the pair's own id on a duplicate
pair, wrong otherwise; no hit is a miss (the data README's reading).  Since
``explain`` reports the nearest candidate's similarity and verifier score, the
outcome at every verifier operating point and every plain cosine threshold is
counted from one pass.

>>> from semcache._quality.pairs import Pair
>>> rows = [Outcome(exact=False, exact_right=False, similarity=0.9, score=0.95, right=True, positive=True,
...                 guard=False, served=True)]
>>> counted = count(rows, lambda row: row.score is not None and row.score >= 0.5)
>>> (counted.right, counted.wrong, counted.misses)
(1, 0, 0)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from semcache._cache.cache import SemanticCache
from semcache._cache.decision import PRESETS, VerifierDecision
from semcache._cache.keys import normalize_prompt
from semcache._cache.verifier.model import shipped_verifier
from semcache._quality.pairs import Pair

# Plain cosine thresholds swept for the comparison curve, and verifier scores swept for its curve.
COSINE_THRESHOLDS = tuple(round(0.50 + 0.01 * step, 2) for step in range(50))
SCORE_THRESHOLDS = tuple(round(0.02 * step, 2) for step in range(51))


@dataclass(frozen=True)
class Outcome:
    """One lookup of a pair set, as :meth:`SemanticCache.explain` saw it.

    Attributes:
        exact: the query's normalised text equals a stored prompt (served whatever the threshold).
        exact_right: that exact entry holds the pair's own id on a duplicate pair.
        similarity: the nearest stored prompt's cosine (None: the scope was empty).
        score: the verifier's score of that candidate (None: no verifier, or an exact hit).
        right: serving the nearest candidate would be a right hit.
        positive: the pair is labelled a duplicate.
        guard: the hit guard objects to the nearest candidate.
        served: the cache served it (as it is set: its operating point or threshold).
    """

    exact: bool
    exact_right: bool
    similarity: float | None
    score: float | None
    right: bool
    positive: bool
    guard: bool
    served: bool


@dataclass(frozen=True)
class Count:
    """Right hits, wrong hits and misses of a set at one operating point."""

    point: str
    queries: int
    positives: int
    right: int
    wrong: int

    @property
    def misses(self) -> int:
        return self.queries - self.right - self.wrong

    @property
    def right_rate(self) -> float:
        """Right hits per duplicate pair."""
        return self.right / self.positives if self.positives else 0.0

    @property
    def wrong_rate(self) -> float:
        """Wrong hits per lookup."""
        return self.wrong / self.queries if self.queries else 0.0


def count(rows: Sequence[Outcome], serves: Callable[[Outcome], bool], point: str = "") -> Count:
    """Count ``rows`` when a semantic candidate is served exactly when ``serves(row)``; exact hits always are."""
    right = wrong = 0
    for row in rows:
        if row.exact:
            right += row.exact_right
            wrong += not row.exact_right
        elif row.similarity is not None and serves(row):
            right += row.right
            wrong += not row.right
    return Count(point, len(rows), sum(row.positive for row in rows), right, wrong)


def run(
    pairs: Sequence[Pair], cache: SemanticCache, *, progress: bool = False, scope: str | None = None
) -> list[Outcome]:
    """Store every first text of ``pairs`` in a fresh scope of ``cache``, look up every second; the outcomes.

    The scope is removed afterwards, so a shared backend keeps nothing of the run.
    """
    scope = scope or f"semcache-eval/{uuid.uuid4().hex}"
    answers: dict[str, list[str]] = {}
    for pair in pairs:
        answers.setdefault(normalize_prompt(pair.first), []).append(pair.id)
    firsts = {normalize_prompt(pair.first): pair.first for pair in pairs}
    try:
        cache.store_many([(firsts[text], ids) for text, ids in answers.items()], scope=scope)
        steps: Iterable[Pair] = pairs
        if progress:
            from tqdm import tqdm

            steps = tqdm(pairs, desc="looking up", unit="pair")
        return [_outcome(cache, pair, scope) for pair in steps]
    finally:
        cache.clear(scope=scope)


def _outcome(cache: SemanticCache, pair: Pair, scope: str) -> Outcome:
    seen = cache.explain(pair.second, scope=scope)
    own = pair.positive and seen.candidate_response is not None and pair.id in seen.candidate_response
    return Outcome(seen.exact, seen.exact and own, seen.similarity, seen.score, own, pair.positive,
                   seen.guard is not None, seen.hit is not None)


@dataclass
class Evaluation:
    """What ``semcache eval`` prints, writes as JSON and plots."""

    name: str
    model_id: str
    points: list[Count]  # the cache's named operating points (or its threshold)
    cosine: list[Count]  # plain cosine thresholds over the same lookups
    verifier: list[Count]  # the verifier's score thresholds (empty without a verifier)
    default: Count

    def to_json(self) -> dict[str, Any]:
        def rows(counts: list[Count]) -> list[dict[str, Any]]:
            return [{**asdict(c), "misses": c.misses, "right_rate": c.right_rate, "wrong_rate": c.wrong_rate}
                    for c in counts]

        return {"name": self.name, "model_id": self.model_id, "points": rows(self.points),
                "cosine": rows(self.cosine), "verifier": rows(self.verifier), "default": rows([self.default])[0]}


def evaluate(name: str, rows: Sequence[Outcome], cache: SemanticCache) -> Evaluation:
    """Count ``rows`` at the verifier's named operating points (or the cache's threshold), along the cosine
    curve and the verifier's score curve, and as the cache itself decided."""
    points = [count(rows, serves, point) for point, serves in _points(cache)]
    cosine = [count(rows, _cosine_at(threshold), f"cosine {threshold:.2f}") for threshold in COSINE_THRESHOLDS]
    verifier = (
        [count(rows, _score_at(score), f"score {score:.2f}") for score in SCORE_THRESHOLDS]
        if any(row.score is not None for row in rows) else []
    )
    default = count(rows, lambda row: row.served, f"this cache: {cache.decision.describe()}")
    return Evaluation(name, cache.embedding.model_id, points, cosine, verifier, default)


def _points(cache: SemanticCache) -> list[tuple[str, Callable[[Outcome], bool]]]:
    """The named operating points of the cache's kind of decision, each with what it serves."""
    if isinstance(cache.decision, VerifierDecision):
        verifier = shipped_verifier()
        return [(f"{name} (<= {rate:.1%} wrong)", _score_at(verifier.threshold_for(rate))) for name, rate in
                PRESETS.items()]
    threshold = cache.threshold or 0.0

    def serves(row: Outcome) -> bool:
        return row.similarity is not None and row.similarity >= threshold and not (cache.guard and row.guard)

    return [(cache.decision.describe(), serves)]


def _cosine_at(threshold: float) -> Callable[[Outcome], bool]:
    return lambda row: row.similarity is not None and row.similarity >= threshold


def _score_at(threshold: float) -> Callable[[Outcome], bool]:
    return lambda row: row.score is not None and row.score >= threshold


def format_table(result: Evaluation) -> str:
    """A Markdown table: each operating point, and the cosine threshold with the nearest wrong-hit rate."""
    lines = [
        f"{result.name}: {result.default.queries} lookups, {result.default.positives} duplicate pairs "
        f"({result.model_id})",
        "",
        "| operating point | right hits | wrong hits | misses | right rate | wrong rate |",
        "|---|---|---|---|---|---|",
    ]
    for row in [*result.points, result.default, *_cosine_beside(result)]:
        lines.append(f"| {row.point} | {row.right} | {row.wrong} | {row.misses} | {row.right_rate:.1%} | "
                     f"{row.wrong_rate:.2%} |")
    return "\n".join(lines)


def _cosine_beside(result: Evaluation) -> list[Count]:
    """For each operating point, the plain cosine threshold with the most right hits at no more wrong hits."""
    out = []
    for point in result.points:
        within = [c for c in result.cosine if c.wrong <= point.wrong]
        if within:
            best = max(within, key=lambda c: (c.right, -c.wrong))
            out.append(Count(f"{best.point} (same wrong hits as {point.point})", best.queries, best.positives,
                             best.right, best.wrong))
    return out


def write_json(result: Evaluation, path: Path) -> None:
    path.write_text(json.dumps(result.to_json(), indent=1, sort_keys=True))


def write_plot(result: Evaluation, path: Path) -> None:
    """Right-hit rate against wrong-hit rate: the verifier's curve, the cosine curve, the default marked.

    Raises:
        MissingDependencyError: matplotlib (the ``eval`` extra) is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        from semcache.errors import missing_extra

        raise missing_extra("matplotlib", "eval", "semcache eval's plot") from exc
    figure, axes = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    axes.plot([c.wrong_rate * 100 for c in result.cosine], [c.right_rate * 100 for c in result.cosine],
              color="0.55", marker=".", label="plain cosine threshold")
    if result.verifier:
        axes.plot([c.wrong_rate * 100 for c in result.verifier], [c.right_rate * 100 for c in result.verifier],
                  color="tab:blue", marker=".", label="verifier score threshold")
    for number, point in enumerate(result.points):
        axes.scatter([point.wrong_rate * 100], [point.right_rate * 100], s=40, zorder=3)
        axes.annotate(point.point, (point.wrong_rate * 100, point.right_rate * 100), textcoords="offset points",
                      xytext=(8, -12 - 11 * number), fontsize=8)
    axes.scatter([result.default.wrong_rate * 100], [result.default.right_rate * 100], marker="*", s=180,
                 color="tab:red", zorder=4, label="default")
    axes.set_xlabel("wrong hits, % of lookups")
    axes.set_ylabel("right hits, % of duplicate pairs")
    axes.set_title(f"{result.name}: {result.default.queries} lookups")
    axes.set_xlim(left=0)
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
