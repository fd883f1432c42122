"""The semantic decision: whether the nearest cached prompt may answer a new one.

Two ways to decide, one chosen per cache (and per call, with ``threshold=``):

* **The verifier** (the default with the packaged all-MiniLM-L6-v2): the
  nearest entry within the cosine floor is scored by the learned verifier
  (:mod:`semcache._cache.verifier`), and served when its score reaches the
  *operating point*: the score at which the wrong-hit rate measured on the
  verifier's calibration data stays at the target (``max_wrong_rate``: 1 % by
  default; presets ``"strict"`` 0.3 %, ``"balanced"`` 1 %, ``"loose"`` 3 %).
* **A cosine threshold** (``threshold=``, or an embedder the verifier was not
  trained for): the nearest entry is served when its cosine reaches the
  threshold and the hit guard (:mod:`semcache._cache.guard`) finds no reason
  against it.  This is how semcache decided before the verifier.

Only the nearest entry is a candidate: serving the next nearest when the first
is refused served almost only wrong answers (measured on GPTCache's and QQP's
pairs: 1 right to 10 wrong).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from semcache._cache.guard import conflict
from semcache._cache.records import Record
from semcache._engine.inputs import similarity
from semcache.embeddings import PACKAGED_MODEL_ID, BaseEmbedding, TokenVectors
from semcache.errors import ConfigurationError

log = logging.getLogger("semcache")

# Chosen by `semcache calibrate` with all-MiniLM-L6-v2 on ../shared/data/gptcache_mock_data.json read as a
# cache (999 origins stored, 999 paraphrases looked up, hit guard on): the lowest threshold of the
# 0.70..0.98 sweep with at most 1 % wrong hits (47.3 % right, 0.9 % wrong); see docs/guides/threshold.md.
DEFAULT_THRESHOLD = 0.94
PRESETS = {"strict": 0.003, "balanced": 0.01, "loose": 0.03}
DEFAULT_MAX_WRONG_RATE = PRESETS["balanced"]


@dataclass(frozen=True)
class Verdict:
    """Why the nearest entry is, or is not, served.

    Attributes:
        serve: it is served.
        similarity: its cosine similarity to the new prompt.
        score: the verifier's score (None when a cosine threshold decided).
        reason: why it is not served (None when it is).
    """

    serve: bool
    similarity: float
    score: float | None
    reason: str | None


class Decision(Protocol):
    """A way to decide semantic hits."""

    @property
    def search_k(self) -> int:
        """How many nearest entries a lookup asks the backend for (the nearest is the candidate)."""

    @property
    def uses_tokens(self) -> bool:
        """Whether it needs the new prompt's word-piece vectors (the embedder must give them)."""

    def describe(self) -> str:
        """One line for logs, the demo and ``semcache eval``."""

    def judge(self, prompt: str, tokens: TokenVectors | None, entry: Record, similarities: Sequence[float]) -> Verdict:
        """The verdict on ``entry``, the nearest stored prompt, whose cosine is ``similarities[0]``."""


@dataclass(frozen=True)
class ThresholdDecision:
    """Serve the nearest entry when its cosine reaches ``threshold`` and the hit guard (if on) lets it through."""

    threshold: float
    guard: bool = True
    search_k: int = 1
    uses_tokens: bool = False

    def describe(self) -> str:
        return f"cosine threshold {self.threshold:.2f}" + (" + hit guard" if self.guard else "")

    def judge(self, prompt: str, tokens: TokenVectors | None, entry: Record, similarities: Sequence[float]) -> Verdict:
        cosine = similarities[0]
        if cosine < self.threshold:
            return Verdict(False, cosine, None, f"below threshold {self.threshold:.2f}")
        reason = conflict(entry.prompt, prompt) if self.guard else None
        return Verdict(reason is None, cosine, None, None if reason is None else f"guard: {reason}")


@dataclass(frozen=True)
class VerifierDecision:
    """Serve the nearest entry when the verifier's score reaches ``score_threshold``.

    Attributes:
        score_threshold: the operating point's score.
        max_wrong_rate: the wrong-hit rate it was chosen for (for the record).
    """

    score_threshold: float
    max_wrong_rate: float
    search_k: int = 2
    uses_tokens: bool = True

    def describe(self) -> str:
        return f"verifier, score >= {self.score_threshold:.3f} (<= {self.max_wrong_rate:.1%} wrong hits)"

    def judge(self, prompt: str, tokens: TokenVectors | None, entry: Record, similarities: Sequence[float]) -> Verdict:
        from semcache._cache.verifier.model import shipped_verifier

        verifier = shipped_verifier()
        cosine = similarities[0]
        if cosine < verifier.cos_floor:
            return Verdict(False, cosine, None, f"below the verifier's floor {verifier.cos_floor:.2f}")
        if tokens is None or entry.verifier is None:
            # An entry stored without the verifier's data (another embedder, an older version): the guard decides.
            fallback = ThresholdDecision(DEFAULT_THRESHOLD).judge(prompt, tokens, entry, similarities)
            return fallback
        score = verifier.score_candidate(
            verifier.query_side(prompt, tokens), verifier.entry_side(entry.prompt, entry.verifier), cosine,
            similarities,
        )
        if score >= self.score_threshold:
            return Verdict(True, cosine, score, None)
        return Verdict(False, cosine, score, f"verifier {score:.2f} < {self.score_threshold:.2f}")


def verifier_fits(embedding: BaseEmbedding) -> bool:
    """Whether the shipped verifier was trained for this embedder (the packaged all-MiniLM-L6-v2)."""
    return embedding.model_id == PACKAGED_MODEL_ID and embedding.has_tokens


def choose_decision(
    embedding: BaseEmbedding, *, threshold: float | None, max_wrong_rate: float | str | None, guard: bool
) -> Decision:
    """The decision a cache makes, from what it was given.

    ``threshold`` chooses a cosine threshold (and the hit guard); otherwise the
    verifier at ``max_wrong_rate`` (a rate, or a preset name) when it fits the
    embedder, else the default cosine threshold.

    Raises:
        ConfigurationError: both were given, an unknown preset, or a verifier
            operating point for an embedder the verifier was not trained for.
        InvalidInputError: a threshold or rate out of range.
    """
    if threshold is not None and max_wrong_rate is not None:
        raise ConfigurationError("give threshold= (a cosine threshold) or max_wrong_rate= (the verifier), not both")
    if threshold is not None:
        return ThresholdDecision(similarity(threshold, "threshold", lowest=0.0), guard)
    if not verifier_fits(embedding):
        if max_wrong_rate is not None:
            raise ConfigurationError(
                f"max_wrong_rate needs the verifier, trained for {PACKAGED_MODEL_ID}; this cache embeds with "
                f"{embedding.model_id}: give threshold= instead"
            )
        return ThresholdDecision(DEFAULT_THRESHOLD, guard)
    return verifier_decision(DEFAULT_MAX_WRONG_RATE if max_wrong_rate is None else max_wrong_rate)


def verifier_decision(max_wrong_rate: float | str) -> VerifierDecision:
    """The verifier at the operating point for ``max_wrong_rate`` (a rate in (0, 1), or a preset name)."""
    from semcache._cache.verifier.model import shipped_verifier

    rate = wrong_rate_of(max_wrong_rate)
    return VerifierDecision(shipped_verifier().threshold_for(rate), rate)


def wrong_rate_of(max_wrong_rate: float | str) -> float:
    """A preset name's wrong-hit rate, or a rate checked to lie in (0, 1)."""
    if isinstance(max_wrong_rate, str):
        if max_wrong_rate not in PRESETS:
            raise ConfigurationError(
                f"unknown preset {max_wrong_rate!r}; choose one of {', '.join(PRESETS)} or a rate such as 0.01"
            )
        return PRESETS[max_wrong_rate]
    rate = similarity(max_wrong_rate, "max_wrong_rate", lowest=0.0)
    if not 0.0 < rate < 1.0:
        raise ConfigurationError(f"max_wrong_rate must be a rate in (0, 1), got {max_wrong_rate!r}")
    return rate
