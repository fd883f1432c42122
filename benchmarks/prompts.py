"""Prompt-like texts and their real embeddings, for the search benchmark.

Random unit vectors are the worst case for HNSW (no structure at all); a
semantic cache holds prompt embeddings, which cluster.  This module builds a
corpus of distinct prompt-like texts from the labelled pairs in
``../shared/data`` (read at run time, never copied into the repository) and
embeds it with the real model, caching the matrix on disk so a re-run does not
embed again.

The corpus, for ``size`` stored texts and ``queries`` queries of each kind:

* **paraphrase queries**: ``queries`` duplicate pairs; the pair's first text is
  stored (they are the first stored texts, so every size from ``queries`` up
  holds all of them), the second text is the query and is never stored;
* **unrelated queries**: the first text of ``queries`` non-duplicate pairs; both
  texts of those pairs are held out, so neither the query nor its pair partner
  is stored;
* **stored texts**: the query pairs' first texts, then every other distinct
  sentence of the data in a seeded shuffle, then, when that is not enough,
  **composed** texts: two stored sentences joined into one two-part prompt
  (``"A Also, b"`` or ``"<first clause of A>, and b"``), seeded, distinct.

Texts count as the same when they differ only in whitespace, Unicode form or
case (MiniLM lowercases its input, so such texts would embed identically).

>>> data = [Dataset("toy", (Pair(0, "How do I bake bread?", "How can I bake bread?", True),
...                         Pair(1, "What is rust?", "What is Rust used for?", False),
...                         Pair(2, "Is tea healthy?", "Is green tea good for you?", True)))]
>>> corpus = build_corpus(data, size=5, queries=1, seed=1)
>>> corpus.paraphrases, corpus.unrelated
((Paraphrase(entry=0, query='How can I bake bread?'),), ('What is rust?',))
>>> for text in corpus.stored: print(text)
How do I bake bread?
Is tea healthy?
Is green tea good for you?
How do I bake bread, and is tea healthy?
Is tea healthy? Also, is green tea good for you?
>>> corpus.originals  # the rest are composed
3
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semcache._cache.cache import normalize_prompt
from semcache._quality.calibrate import Dataset, Pair, embed_all
from semcache.embeddings import BaseEmbedding
from semcache.errors import InvalidInputError

__all__ = [
    "Dataset",
    "Pair",
    "Paraphrase",
    "PromptCorpus",
    "build_corpus",
    "cache_file",
    "compose",
    "compose_all",
    "default_cache_dir",
    "embed_cached",
]

COMPOSE_ATTEMPTS = 20  # draws per composed text before giving up (duplicates are rare)
_CLAUSE_END = re.compile(r"[,;:?!.]")


@dataclass(frozen=True)
class Paraphrase:
    """A duplicate pair read as a cache: ``stored[entry]`` is cached, ``query`` is looked up."""

    entry: int
    query: str


@dataclass(frozen=True)
class PromptCorpus:
    """Texts to store (in insertion order) and the two query sets.

    Attributes:
        stored: distinct texts, stored in this order.
        paraphrases: paraphrase queries, their stored partner first in ``stored``.
        unrelated: held-out texts: neither they nor their pair partners are stored.
        originals: how many of ``stored`` are sentences of the data (the rest are composed).
    """

    stored: tuple[str, ...]
    paraphrases: tuple[Paraphrase, ...]
    unrelated: tuple[str, ...]
    originals: int

    def texts(self) -> list[str]:
        """Every text to embed: stored, then paraphrase queries, then unrelated queries."""
        return [*self.stored, *(p.query for p in self.paraphrases), *self.unrelated]


def same_text_key(text: str) -> str:
    """The form two texts are compared in: normalised like a prompt, then case-folded."""
    return normalize_prompt(text).casefold()


def first_clause(text: str) -> str:
    """``text`` up to its first punctuation mark, if that leaves at least three words.

    >>> first_clause("How do I learn Python, and is it hard?")
    'How do I learn Python'
    >>> first_clause("Why? Because.")
    'Why? Because'
    """
    text = normalize_prompt(text)
    match = _CLAUSE_END.search(text)
    if match is not None and len(text[: match.start()].split()) >= 3:
        return text[: match.start()]
    return text.rstrip(",;:?!. ")


def _lower_first(text: str) -> str:
    """Lowercase the first letter unless it starts a name, an acronym or "I"."""
    words = text.split(maxsplit=1)
    if not words or words[0] == "I" or len(words[0]) < 2 or not words[0][1:].islower():
        return text
    return text[0].lower() + text[1:]


def compose(first: str, second: str, template: int) -> str:
    """One two-part prompt from two sentences, by ``template`` (0 or 1).

    >>> compose("How do I bake bread?", "Is tea healthy?", 0)
    'How do I bake bread? Also, is tea healthy?'
    >>> compose("How do I bake bread at home?", "Is tea healthy?", 1)
    'How do I bake bread at home, and is tea healthy?'
    """
    first, second = normalize_prompt(first), normalize_prompt(second)
    if template == 0:
        return f"{first} Also, {_lower_first(second)}"
    return f"{first_clause(first)}, and {_lower_first(second)}"


def compose_all(sources: Sequence[str], count: int, *, seed: int, exclude: Iterable[str] = ()) -> list[str]:
    """``count`` distinct composed texts from ``sources``, deterministic for a seed.

    Raises:
        InvalidInputError: fewer than two sources, or too few distinct compositions.
    """
    if count <= 0:
        return []
    if len(sources) < 2:
        raise InvalidInputError("composing texts needs at least two source sentences")
    rng = np.random.default_rng([seed, 1])  # a stream of its own: sizes do not shift the shuffle
    seen = {same_text_key(text) for text in exclude}
    out: list[str] = []
    for _ in range(COMPOSE_ATTEMPTS * count):
        first, second = rng.choice(len(sources), size=2, replace=False).tolist()
        text = compose(sources[first], sources[second], int(rng.integers(2)))
        key = same_text_key(text)
        if key not in seen:
            seen.add(key)
            out.append(text)
            if len(out) == count:
                return out
    raise InvalidInputError(f"only {len(out)} distinct composed texts from {len(sources)} sources, wanted {count}")


def _pick_pairs(pairs: Sequence[Pair], count: int, taken: set[str]) -> list[Pair]:
    """Up to ``count`` pairs whose texts differ from each other and from ``taken`` (which grows)."""
    picked = []
    for pair in pairs:
        first, second = same_text_key(pair.first), same_text_key(pair.second)
        if first == second or first in taken or second in taken:
            continue
        taken.update((first, second))
        picked.append(pair)
        if len(picked) == count:
            break
    return picked


def build_corpus(datasets: Sequence[Dataset], size: int, queries: int, *, seed: int = 7) -> PromptCorpus:
    """``size`` distinct stored texts and ``queries`` queries of each kind (see the module docstring).

    The same arguments always give the same corpus.

    Raises:
        InvalidInputError: not enough duplicate or non-duplicate pairs for ``queries``.
    """
    if size < 1 or queries < 1:
        raise InvalidInputError(f"size and queries must be >= 1, got {size} and {queries}")
    rng = np.random.default_rng(seed)
    pairs = [pair for data in datasets for pair in data.pairs]
    order = rng.permutation(len(pairs)).tolist()
    shuffled = [pairs[i] for i in order]
    taken: set[str] = set()
    duplicates = _pick_pairs([p for p in shuffled if p.positive], queries, taken)
    others = _pick_pairs([p for p in shuffled if not p.positive], queries, taken)
    if len(duplicates) < queries or len(others) < queries:
        raise InvalidInputError(
            f"the data has {len(duplicates)} usable duplicate and {len(others)} non-duplicate pairs; "
            f"{queries} of each are needed"
        )
    stored = [normalize_prompt(pair.first) for pair in duplicates]
    rest: dict[str, str] = {}  # key -> first spelling seen, in data order
    for pair in pairs:
        for text in (pair.first, pair.second):
            key = same_text_key(text)
            if key not in taken:
                rest.setdefault(key, normalize_prompt(text))
    sentences = list(rest.values())
    stored += [sentences[i] for i in rng.permutation(len(sentences)).tolist()]
    originals = min(size, len(stored))
    # Composed from every data sentence stored at full size, so a bigger corpus extends a smaller one.
    extra = compose_all(stored, size - originals, seed=seed, exclude=[*stored, *taken])
    paraphrases = tuple(Paraphrase(n, normalize_prompt(pair.second)) for n, pair in enumerate(duplicates))
    unrelated = tuple(normalize_prompt(pair.first) for pair in others)
    return PromptCorpus(tuple(stored[:originals] + extra), paraphrases, unrelated, originals)


# ------------------------------------------------------------------ embedding
def default_cache_dir() -> Path:
    """Where embedded corpora are kept: ``$XDG_CACHE_HOME/semcache`` (default ``~/.cache/semcache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "semcache"


def cache_file(embedding: BaseEmbedding, texts: Sequence[str], cache_dir: Path) -> Path:
    """The cache file of ``texts`` embedded by ``embedding``: named by a hash of both."""
    digest = hashlib.sha256(f"{embedding.model_id}\0{embedding.dim}\0{len(texts)}".encode())
    for text in texts:
        digest.update(b"\0" + text.encode("utf-8"))
    return Path(cache_dir) / f"bench-{digest.hexdigest()[:24]}.npy"


def embed_cached(
    embedding: BaseEmbedding,
    texts: Sequence[str],
    *,
    cache_dir: Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> np.ndarray:
    """The ``(len(texts), dim)`` float32 embeddings of ``texts``, from the disk cache when there.

    Args:
        cache_dir: folder of the cache files; None embeds without reading or writing one.
        progress: a progress bar while embedding.
        log: receives one line saying whether the cache was used.

    A cache file whose shape or type does not match is ignored and rewritten.
    The file is written atomically (a temporary file, then a rename).
    """
    path = cache_file(embedding, texts, cache_dir) if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log(f"ignoring unreadable {path}: {exc}")
        else:
            if cached.shape == (len(texts), embedding.dim) and cached.dtype == np.float32:
                log(f"embeddings of {len(texts):,} texts read from {path}")
                return cached
            log(f"ignoring {path}: shape {cached.shape} {cached.dtype}, wanted ({len(texts)}, {embedding.dim})")
    vectors = embed_all(embedding, texts, progress=progress)
    matrix = np.stack([vectors[text] for text in texts]).astype(np.float32, copy=False)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False) as handle:
            np.save(handle, matrix, allow_pickle=False)
        os.replace(handle.name, path)
        log(f"embeddings of {len(texts):,} texts saved to {path}")
    return matrix
