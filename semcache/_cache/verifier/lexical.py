"""Lexical signals of a (cached, new) prompt pair: the hit guard's rules as *features*, not vetoes.

A cached prompt's :class:`TextInfo` can be computed once at store time (or lazily and
memoised); a pair's features then cost a few set operations.

>>> f = pair_features(TextInfo("How do I enable dark mode?"), TextInfo("How do I disable dark mode?"))
>>> f[NAMES.index("antonym")], f[NAMES.index("guard")]
(1.0, 1.0)
"""

from __future__ import annotations

import math
import re

import numpy as np

from semcache._cache.guard import (
    _STOPWORDS,
    ANTONYMS,
    NEGATION_MIN_OVERLAP,
    NEGATIONS,
    _clean,
    _entities,
    _negated,
    _numbers,
    _Vocabulary,
    _words,
)

_EXTRA_STOP = frozenset(
    "me some any get make best way use using good need want know one there here up out just like much many "
    "more most very really s t".split()
)
STOP = _STOPWORDS | _EXTRA_STOP
_PUNCT = re.compile(r"[^\w\s]")

NAMES = [
    "numbers",  # the guard's number rule fires (different multisets of numbers)
    "num_only_a",  # numbers in the cached prompt missing from the new one
    "num_only_b",
    "negation",  # the guard's negation rule fires
    "neg_mismatch",  # one is negated, the other not (whatever the overlap)
    "antonym",
    "ent_only_a",  # entities of the cached prompt unknown to the new one
    "ent_only_b",
    "entity",  # the guard's entity rule fires
    "guard",  # any guard rule fires
    "word_jaccard",  # content words
    "words_only_a",  # content words only in the cached prompt (light stemming)
    "words_only_b",
    "char3_jaccard",
    "len_a",  # log(1 + words)
    "len_b",
    "len_ratio",  # |log(words_a / words_b)|
    "question_mismatch",  # one ends with "?" and the other looks imperative (no wh-/aux start)
]


def _stem(word: str) -> str:
    word = word.lower().strip("'")
    for suffix in ("'s", "ies", "es", "s", "ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


_QUESTION_START = frozenset(
    "what how why when where who which whose whom is are was were do does did can could should would will shall "
    "may might has have had am".split()
)


class TextInfo:
    """Everything the lexical features need from one prompt (compute once per cached entry)."""

    __slots__ = ("text", "words", "numbers", "negated", "entities", "vocabulary", "content", "char3", "n_words",
                 "question")

    def __init__(self, prompt: str) -> None:
        self.text = _clean(prompt)
        tokens = _words(self.text)
        self.words = {w.lower() for w in tokens}
        self.numbers = _numbers(self.text, self.words)
        self.negated = _negated(self.text, self.words)
        self.entities = _entities(self.text)
        self.vocabulary = _Vocabulary(self.text)
        self.content = {_stem(w) for w in self.words if w not in STOP and w not in NEGATIONS}
        low = " ".join(_PUNCT.sub(" ", self.text.lower()).split())
        self.char3 = {low[i : i + 3] for i in range(max(0, len(low) - 2))}
        self.n_words = max(1, len(tokens))
        first = tokens[0].lower() if tokens else ""
        self.question = self.text.rstrip().endswith("?") or first in _QUESTION_START


def pair_features(a: TextInfo, b: TextInfo) -> list[float]:
    """Lexical features of (cached ``a``, new ``b``), in the order of :data:`NAMES`."""
    numbers = a.numbers != b.numbers
    num_a = sum((a.numbers - b.numbers).values())
    num_b = sum((b.numbers - a.numbers).values())
    neg_mismatch = a.negated != b.negated
    wa, wb = a.words - NEGATIONS - _STOPWORDS, b.words - NEGATIONS - _STOPWORDS
    overlap = len(wa & wb) / len(wa | wb) if wa | wb else 1.0
    negation = neg_mismatch and overlap >= NEGATION_MIN_OVERLAP
    antonym = any(ANTONYMS.get(w, frozenset()) & (b.words - a.words) for w in a.words - b.words)
    ent_a = sum(1 for e in a.entities if not b.vocabulary.knows(e))
    ent_b = sum(1 for e in b.entities if not a.vocabulary.knows(e))
    entity = ent_a > 0 and ent_b > 0
    guard = numbers or negation or antonym or entity
    ca, cb = a.content, b.content
    jac = len(ca & cb) / len(ca | cb) if ca | cb else 1.0
    c3 = len(a.char3 & b.char3) / len(a.char3 | b.char3) if a.char3 | b.char3 else 1.0
    return [
        float(numbers), float(num_a), float(num_b), float(negation), float(neg_mismatch), float(antonym),
        float(ent_a), float(ent_b), float(entity), float(guard), jac, float(len(ca - cb)), float(len(cb - ca)), c3,
        math.log1p(a.n_words), math.log1p(b.n_words), abs(math.log(a.n_words / b.n_words)),
        float(a.question != b.question),
    ]


def features_array(a: TextInfo, b: TextInfo) -> np.ndarray:
    return np.asarray(pair_features(a, b), dtype=np.float32)
