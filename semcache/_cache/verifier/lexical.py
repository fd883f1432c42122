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
    "wh_mismatch",  # both ask with a question word and the first ones differ ("how do I stop" vs "why does")
    "typo_pairs",  # words only in one prompt that have a near-identical spelling only in the other
    "unexplained_a",  # words only in the cached prompt, less those explained as a typo of a word of the new one
    "unexplained_b",
    "added_a",  # words only in the cached prompt joined by and/or/plus ("horizontally and vertically")
    "added_b",
    "direction_swap",  # shared words that are a source ("from X", "X to") in one and a target ("to X") in the other
]


def _stem(word: str) -> str:
    word = word.lower().strip("'")
    for suffix in ("'s", "ies", "es", "s", "ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


_WH = frozenset("what how why when where who which whose whom".split())
# "how" followed by one of these asks a quantity, another question than a bare "how".
_HOW_QUANTITY = frozenset("many much long often far old big tall large fast".split())
_JOINERS = frozenset("and or plus & both".split())
_TO = frozenset("to into in2 ->".split())
_FROM = frozenset(["from"])
_ROLE_SKIP = STOP - {"list"}
_QUESTION_START = frozenset(
    "what how why when where who which whose whom is are was were do does did can could should would will shall "
    "may might has have had am".split()
)


class TextInfo:
    """Everything the lexical features need from one prompt (compute once per cached entry)."""

    __slots__ = ("text", "words", "numbers", "negated", "entities", "vocabulary", "content", "char3", "n_words",
                 "question", "wh", "bigrams", "added", "sources", "targets")

    def __init__(self, prompt: str) -> None:
        self.text = _clean(prompt)
        tokens = _words(self.text)
        self.words = {w.lower() for w in tokens}
        self.numbers = _numbers(self.text, self.words)
        self.negated = _negated(self.text, self.words)
        self.entities = _entities(self.text)
        self.vocabulary = _Vocabulary(self.text)
        stems = (_stem(w) for w in self.words if w not in STOP and w not in NEGATIONS)
        self.content = {w for w in stems if w not in STOP}  # "whats" stems to a stopword
        low = " ".join(_PUNCT.sub(" ", self.text.lower()).split())
        self.char3 = {low[i : i + 3] for i in range(max(0, len(low) - 2))}
        self.n_words = max(1, len(tokens))
        first = tokens[0].lower() if tokens else ""
        self.question = self.text.rstrip().endswith("?") or first in _QUESTION_START
        lowered = [_stem(w) if w.lower() not in _WH else w.lower() for w in tokens]
        self.wh = _question_word(lowered)
        self.bigrams = {w: _bigrams(w) for w in self.content}
        self.added = _joined(lowered)
        self.sources, self.targets = _roles(lowered)


def _question_word(words: list[str]) -> str:
    """The first question word ("how many" apart from "how"), or "" when there is none."""
    for i, word in enumerate(words):
        if word in _WH:
            follower = words[i + 1] if i + 1 < len(words) else ""
            return f"how {follower}" if word == "how" and follower in _HOW_QUANTITY else word
    return ""


def _bigrams(word: str) -> frozenset[str]:
    padded = f"^{word}$"
    return frozenset(padded[i : i + 2] for i in range(len(padded) - 1))


def _joined(words: list[str]) -> frozenset[str]:
    """Content words right after a joiner ("and vertically"): a qualifier that can be dropped or added."""
    return frozenset(w for prev, w in zip(words, words[1:], strict=False) if prev in _JOINERS and w not in STOP)


def _roles(words: list[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(sources, targets): the words a "to"/"into" goes from and to, and the words after "from".

    Up to two words each side of the pivot, skipping stopwords ("list" counts: it is
    often the thing converted) and stopping at another pivot.
    """
    sources: set[str] = set()
    targets: set[str] = set()
    for i, word in enumerate(words):
        if word in _TO:
            targets.update(_near(words[i + 1 :]))
            sources.update(_near(words[:i][::-1]))
        elif word in _FROM:
            sources.update(_near(words[i + 1 :]))
    return frozenset(sources), frozenset(targets)


def _near(words: list[str]) -> list[str]:
    """The first two content words of ``words`` within three, up to the next pivot."""
    found = []
    for word in words[:3]:
        if word in _TO or word in _FROM:
            break
        if word not in _ROLE_SKIP:
            found.append(word)
    return found[:2]


def _typo_pairs(only_a: set[str], only_b: set[str], a: TextInfo, b: TextInfo) -> int:
    """How many words only in ``a`` have a spelling within a typo of a word only in ``b`` (bigram Dice >= 0.6)."""
    count = 0
    for word in only_a:
        grams = a.bigrams[word]
        for other in only_b:
            theirs = b.bigrams[other]
            if 2 * len(grams & theirs) >= 0.6 * (len(grams) + len(theirs)):
                count += 1
                break
    return count


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
    only_a, only_b = ca - cb, cb - ca
    typos = _typo_pairs(only_a, only_b, a, b)
    swapped = (a.sources & b.targets) | (a.targets & b.sources)
    return [
        float(numbers), float(num_a), float(num_b), float(negation), float(neg_mismatch), float(antonym),
        float(ent_a), float(ent_b), float(entity), float(guard), jac, float(len(only_a)), float(len(only_b)), c3,
        math.log1p(a.n_words), math.log1p(b.n_words), abs(math.log(a.n_words / b.n_words)),
        float(a.question != b.question),
        float(bool(a.wh) and bool(b.wh) and a.wh != b.wh), float(typos),
        float(len(only_a) - typos), float(len(only_b) - typos),
        float(len(a.added - b.content)), float(len(b.added - a.content)), float(len(swapped)),
    ]


def features_array(a: TextInfo, b: TextInfo) -> np.ndarray:
    return np.asarray(pair_features(a, b), dtype=np.float32)
