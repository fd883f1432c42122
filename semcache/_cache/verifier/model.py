"""The hit verifier at inference: load ``verifier.npz``, score candidate feature vectors. numpy only.

The model is a gradient-boosted tree ensemble (fitted by scikit-learn's
HistGradientBoostingClassifier in :mod:`train`, exported as flat node arrays) over
the features of :mod:`features` (``ALL_NAMES``).  All trees are walked at once,
one depth level per numpy step, so a candidate costs a few tens of microseconds.

The file also carries what feature extraction needs (token weights per vocabulary
id, the token projection, the int8/float16 choice) and the operating points
(score thresholds calibrated to a target wrong-hit rate).

>>> import numpy as np
>>> v = Verifier.load()                                   # doctest: +SKIP
>>> v.score(np.zeros((1, len(v.feature_names))))          # doctest: +SKIP
array([...])
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semcache._cache.verifier.features import (
    ALL_NAMES,
    Side,
    TokenCodec,
    context_features,
    make_side,
    pack_entry,
    pair_features,
    unpack_entry,
)
from semcache.embeddings import TokenVectors
from semcache.errors import ConfigurationError, CorruptDataError

DEFAULT_PATH = Path(__file__).resolve().parent / "verifier.npz"
# The wrong-hit rate each named operating point of the file was calibrated for (training/verifier/train.py).
TARGETS = {"strict": 0.003, "default": 0.01, "loose": 0.03}


@dataclass
class Verifier:
    """A loaded verifier: trees, feature tables, operating points."""

    feature: np.ndarray  # (nodes,) int32, feature index of a split node
    threshold: np.ndarray  # (nodes,) float64, go left when x <= threshold
    left: np.ndarray  # (nodes,) int32, global node index
    right: np.ndarray  # (nodes,) int32
    leaf: np.ndarray  # (nodes,) bool
    value: np.ndarray  # (nodes,) float64, leaf value (raw score)
    roots: np.ndarray  # (trees,) int32
    depth: int  # max depth of any tree
    baseline: float  # raw score before the trees
    token_weights: np.ndarray  # (vocab,) float32
    codec: TokenCodec
    operating_points: dict[str, float]  # name -> score threshold
    settings: dict  # candidates, search_k, cosine floor, ...
    feature_names: list[str]

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> Verifier:
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        if list(meta["feature_names"]) != ALL_NAMES:
            raise CorruptDataError(f"{path} was trained on other features than this version computes")
        projection = z["projection"] if z["projection"].size else None
        return cls(
            z["feature"], z["threshold"], z["left"], z["right"], z["leaf"], z["value"], z["roots"],
            int(meta["depth"]), float(meta["baseline"]), z["token_weights"],
            TokenCodec(projection, int(meta["bits"])), dict(meta["operating_points"]), dict(meta["settings"]),
            list(meta["feature_names"]),
        )

    def __post_init__(self) -> None:
        # Leaves point to themselves, so a walk needs no leaf test: stepping from a leaf stays on it.
        own = np.arange(len(self.leaf), dtype=np.int32)
        self._left = np.where(self.leaf, own, self.left)
        self._right = np.where(self.leaf, own, self.right)
        self._feature = np.where(self.leaf, 0, self.feature)

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Raw (logit) scores of feature rows ``X`` (n, features)."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[0] == 1:  # the lookup case: one candidate, all trees at once
            x, node = X[0], self.roots
            feature, threshold, left, right = self._feature, self.threshold, self._left, self._right
            for level in range(self.depth):
                go_left = x.take(feature.take(node)) <= threshold.take(node)
                node = np.where(go_left, left.take(node), right.take(node))
                if level % 4 == 3 and self.leaf.take(node).all():
                    break
            return np.array([self.baseline + self.value.take(node).sum()])
        rows = np.arange(X.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (X.shape[0], len(self.roots)))
        for _ in range(self.depth):
            node = np.where(X[rows, self._feature[node]] <= self.threshold[node], self._left[node], self._right[node])
        return self.baseline + self.value[node].sum(axis=1)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Probability that serving the candidate is right, per row of ``X``."""
        return 1.0 / (1.0 + np.exp(-self.raw(X)))

    # ------------------------------------------------------------ the cache's calls
    def entry_data(self, tokens: TokenVectors) -> bytes:
        """Store time: what a cached prompt keeps for the verifier (its compressed content word pieces)."""
        return pack_entry(tokens.vectors, tokens.ids, self.token_weights, self.codec)

    def query_side(self, prompt: str, tokens: TokenVectors) -> Side:
        """Lookup time: the new prompt's side, from the word pieces of the pass that embedded it."""
        return make_side(prompt, tokens.vectors, tokens.ids, self.token_weights, self.codec, stored=False)

    def entry_side(self, prompt: str, data: bytes) -> Side:
        """A cached prompt's side, from its text and :meth:`entry_data`'s bytes."""
        return unpack_entry(prompt, data, self.token_weights, self.codec)

    def score_candidate(self, query: Side, entry: Side, similarity: float, similarities: Sequence[float]) -> float:
        """The probability that serving ``entry`` for ``query`` is right.

        ``similarities`` are the cosines of the nearest entries searched, best
        first, ``entry`` being the first of them.
        """
        features = np.concatenate([pair_features(similarity, entry, query), context_features(similarities, 0)])
        return float(self.score(features[None])[0])

    @property
    def cos_floor(self) -> float:
        """Candidates below this cosine are not scored (never served)."""
        return float(self.settings["cos_floor"])

    def threshold_for(self, max_wrong_rate: float) -> float:
        """The lowest score threshold whose wrong-hit rate on the calibration split is at most ``max_wrong_rate``.

        From the calibration sweep recorded in the file (every threshold at and
        above the one chosen stays within the rate); a file without a sweep
        answers with the strictest named operating point whose target is within
        the rate (the strict one when none is).
        """
        sweep = self.settings.get("calibration")
        if sweep:
            chosen = None
            for threshold, wrong_rate in sorted(sweep, reverse=True):  # from the strictest down
                if wrong_rate > max_wrong_rate:
                    break
                chosen = float(threshold)
            if chosen is not None:
                return chosen
        targets = {name: TARGETS[name] for name in self.operating_points if name in TARGETS}
        within = [name for name, target in targets.items() if target <= max_wrong_rate + 1e-12]
        name = max(within, key=lambda n: targets[n]) if within else min(targets, key=lambda n: targets[n])
        return self.operating_points[name]

    def serving_threshold(self, point: str) -> float:
        """The score an operating point (``"strict"``, ``"default"``, ``"loose"``) serves from.

        Raises:
            ConfigurationError: no such operating point.
        """
        if point not in self.operating_points:
            raise ConfigurationError(
                f"unknown operating point {point!r}; choose one of {', '.join(sorted(self.operating_points))}"
            )
        return self.operating_points[point]


@functools.cache
def shipped_verifier() -> Verifier:
    """The verifier shipped with the package (loaded once per process)."""
    return Verifier.load(DEFAULT_PATH)
