"""Every training text encoded once by the package's embedder, kept on disk (``cache/*.npz``).

The verifier's inputs come from :meth:`semcache.embeddings.SentenceTransformerEmbedding.embed_with_tokens`,
the very call the cache makes (one forward pass gives the sentence vector and the
word-piece vectors), so training and serving compute identical inputs.  Texts are
encoded in their normalised form (:func:`semcache._cache.cache.normalize_prompt`), in
batches of 64 texts of similar length (the order only changes padding, which moves
nothing beyond float rounding, but a fixed order keeps the stored encodings reproducible).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import paths  # noqa: F401  (first: puts the checkout on sys.path)

from semcache._cache.cache import normalize_prompt
from semcache.embeddings import SentenceTransformerEmbedding

BATCH = 64


@dataclass(frozen=True)
class Encoded:
    """One text's model outputs: the unit sentence vector, and the word pieces' vectors and ids."""

    sentence: np.ndarray  # (384,) float32
    tokens: np.ndarray  # (n, 384) float32, [CLS]/[SEP] dropped
    ids: np.ndarray  # (n,) int32


def encode(texts: Sequence[str], embedder: SentenceTransformerEmbedding | None = None) -> list[Encoded]:
    """Encode normalised ``texts`` with the package's embedder, length-sorted batches of :data:`BATCH`."""
    embedder = embedder or SentenceTransformerEmbedding(memo_size=0)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[Encoded | None] = [None] * len(texts)
    for start in range(0, len(order), BATCH):
        rows = order[start : start + BATCH]
        sentences, tokens = embedder.embed_with_tokens([texts[i] for i in rows])
        for i, sentence, tok in zip(rows, sentences, tokens, strict=True):
            out[i] = Encoded(np.ascontiguousarray(sentence, dtype=np.float32), tok.vectors, tok.ids)
    return out  # type: ignore[return-value]


class EncodedStore:
    """Many texts' encodings in flat arrays (saved as one ``.npz``).

    ``tokens`` is float16 to halve the disk footprint; token features are computed
    in float32 after loading (the precision loss moves cosines by < 1e-3).
    """

    def __init__(self, texts: list[str], sentence: np.ndarray, tokens: np.ndarray, ids: np.ndarray,
                 offsets: np.ndarray) -> None:
        self.texts = texts
        self.sentence = sentence
        self.tokens = tokens
        self.ids = ids
        self.offsets = offsets
        self.index = {t: i for i, t in enumerate(texts)}

    @classmethod
    def build(cls, texts: list[str], encoded: list[Encoded]) -> EncodedStore:
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(e.ids) for e in encoded])
        return cls(
            list(texts),
            np.stack([e.sentence for e in encoded]).astype(np.float32),
            np.concatenate([e.tokens for e in encoded]).astype(np.float16),
            np.concatenate([e.ids for e in encoded]).astype(np.int32),
            offsets,
        )

    def get(self, text: str) -> Encoded:
        i = self.index[text]
        a, b = self.offsets[i], self.offsets[i + 1]
        return Encoded(self.sentence[i], self.tokens[a:b].astype(np.float32), self.ids[a:b])

    def save(self, path: str) -> None:
        np.savez(path, texts=np.array(self.texts, dtype=object), sentence=self.sentence, tokens=self.tokens,
                 ids=self.ids, offsets=self.offsets)

    @classmethod
    def load(cls, path: str) -> EncodedStore:
        z = np.load(path, allow_pickle=True)
        return cls(list(z["texts"]), z["sentence"], z["tokens"], z["ids"], z["offsets"])

    def merged(self, other: EncodedStore) -> EncodedStore:
        new = [t for t in other.texts if t not in self.index]
        if not new:
            return self
        enc = [self.get(t) for t in self.texts] + [other.get(t) for t in new]
        return EncodedStore.build(self.texts + new, enc)


def encode_cached(texts: Sequence[str], path: str, progress: bool = False) -> EncodedStore:
    """Encodings of ``texts`` (normalised here), read from ``path`` and extended there when some are missing."""
    wanted = list(dict.fromkeys(normalize_prompt(t) for t in texts))
    store = EncodedStore.load(path) if os.path.exists(path) else None
    missing = [t for t in wanted if store is None or t not in store.index]
    if missing:
        embedder = SentenceTransformerEmbedding(memo_size=0)
        encoded: list[Encoded] = []
        chunk = 2048
        for start in range(0, len(missing), chunk):
            encoded += encode(missing[start : start + chunk], embedder)
            if progress:
                print(f"  encoded {min(start + chunk, len(missing))}/{len(missing)}", flush=True)
        fresh = EncodedStore.build(missing, encoded)
        store = fresh if store is None else store.merged(fresh)
        tmp = path + ".tmp.npz"
        store.save(tmp)
        os.replace(tmp, path)
    assert store is not None
    return store
