"""Verifier features of a (cached entry, new query) candidate pair. numpy only.

What is computed when:

* **store time** (once per cached prompt, kept with the entry): :class:`Entry` =
  the prompt's :class:`~lexical.TextInfo` (re-derivable from the stored prompt text,
  ~50 us) and its *content* word-piece vectors, compressed by :class:`TokenCodec`
  (projected to ``dim`` dimensions, int8 per value + one float16 scale per token)
  plus their vocabulary ids (uint16).  See :meth:`Entry.nbytes`.
* **lookup time** (once per query): :class:`Query` = the query's TextInfo and its
  content word-piece vectors, taken from the same forward pass that made its
  sentence embedding (``embed_one_with_tokens``), projected with the same codec (no
  quantisation needed on this side).
* **per candidate**: :func:`pair_features` = the search cosine, token alignment
  statistics (a (m, n) similarity matrix of unit token vectors) and the lexical
  features of :mod:`lexical`.

Token weights (an IDF over word-piece ids, zero for punctuation and stopwords) and
the projection are parameters, shipped in the verifier's ``.npz``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from semcache._cache.verifier import lexical
from semcache._cache.verifier.lexical import TextInfo

TOKEN_NAMES = [
    "cos",  # sentence-embedding cosine (from the search)
    "tok_b_mean",  # weighted mean over query content tokens of their best match in the entry
    "tok_a_mean",  # the same, entry -> query
    "tok_b_min",  # worst-matched query content token
    "tok_a_min",
    "tok_b_min2",  # second worst
    "tok_a_min2",
    "tok_b_un60",  # weighted share of query content tokens whose best match is < 0.6
    "tok_a_un60",
    "tok_b_un80",
    "tok_a_un80",
    "tok_b_maxmiss",  # max over query tokens of weight * (1 - best match): a rare word left unmatched
    "tok_a_maxmiss",
    "id_b_only",  # weighted share of query content ids absent from the entry's ids
    "id_a_only",
    "id_b_only_best",  # worst best-match among query tokens whose id is absent from the entry (1 if none)
    "id_a_only_best",
    "order_inv",  # share of inverted pairs in the query->entry alignment (word order swaps)
    "wcos",  # cosine of the weighted means of the content token vectors
    "n_a",  # log(1 + content tokens) of the entry
    "n_b",
]
NAMES = TOKEN_NAMES + ["lex_" + n for n in lexical.NAMES]


# --------------------------------------------------------------------- tables
def build_token_weights(vocab: Sequence[str], id_lists: Iterable[np.ndarray], stop: Iterable[str]) -> np.ndarray:
    """Per vocabulary id: IDF over the given texts (one id list each), 0 for punctuation, stopwords, specials.

    ``log((N + 1) / (df + 1)) + 1``; ids never seen get the maximum IDF.
    """
    df = np.zeros(len(vocab), dtype=np.int64)
    n = 0
    for ids in id_lists:
        df[np.unique(ids)] += 1
        n += 1
    idf = np.log((n + 1) / (df + 1)) + 1.0
    stop = set(stop)
    mask = np.array(
        [not (tok.startswith("[") and tok.endswith("]")) and any(ch.isalnum() for ch in tok) and tok not in stop
         for tok in vocab],
        dtype=bool,
    )
    return (idf * mask).astype(np.float32)


def read_vocab(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


# --------------------------------------------------------------------- codec
@dataclass(frozen=True)
class TokenCodec:
    """How an entry's token vectors are stored: an optional projection, then int8 (or float16) rows.

    ``projection`` is (384, dim) (orthonormal columns, e.g. PCA) or None for all 384
    dimensions.  ``bits`` is 8 (int8 + float16 scale per token) or 16 (float16).
    """

    projection: np.ndarray | None = None
    bits: int = 8

    @property
    def dim(self) -> int:
        return 384 if self.projection is None else int(self.projection.shape[1])

    def project(self, tokens: np.ndarray) -> np.ndarray:
        """Unit rows in the stored space (float32)."""
        x = tokens if self.projection is None else tokens @ self.projection
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return (x / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(stored rows, per-row scales or None)."""
        x = self.project(tokens)
        if self.bits == 16:
            return x.astype(np.float16), None
        scale = np.abs(x).max(axis=1, keepdims=True) / 127.0
        scale = np.maximum(scale, 1e-8).astype(np.float16)
        q = np.clip(np.rint(x / scale.astype(np.float32)), -127, 127).astype(np.int8)
        return q, scale

    def decode(self, rows: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
        x = rows.astype(np.float32) if scales is None else rows.astype(np.float32) * scales.astype(np.float32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(norms, 1e-12)


# ------------------------------------------------------------------ sides
@dataclass
class Side:
    """One prompt's verifier data: lexical info, unit content-token vectors (in codec space), ids, weights."""

    info: TextInfo
    vectors: np.ndarray  # (t, dim) float32 unit rows
    ids: np.ndarray  # (t,) int
    weights: np.ndarray  # (t,) float32
    stored_bytes: int = 0


def make_side(prompt: str, tokens: np.ndarray, ids: np.ndarray, weights: np.ndarray, codec: TokenCodec,
              *, stored: bool) -> Side:
    """A prompt's Side from its word-piece vectors (specials already dropped) and ids.

    Only content pieces (weight > 0) are kept.  ``stored=True`` round-trips the
    vectors through the codec's storage format (what a cached entry would hold).
    """
    keep = weights[ids] > 0
    if not keep.any():  # all stopwords/punctuation: keep everything, weight 1
        keep = np.ones(len(ids), dtype=bool)
        w = np.ones(int(keep.sum()), dtype=np.float32)
    else:
        w = weights[ids][keep]
    kept_ids = ids[keep]
    if stored:
        rows, scales = codec.encode(tokens[keep])
        vecs = codec.decode(rows, scales)
        nbytes = rows.nbytes + (0 if scales is None else scales.nbytes) + 2 * len(kept_ids)
    else:
        vecs, nbytes = codec.project(tokens[keep]), 0
    return Side(TextInfo(prompt), vecs, kept_ids, w.astype(np.float32), nbytes)


# ------------------------------------------------------------ stored form
_COUNT = struct.Struct("<H")


def pack_entry(tokens: np.ndarray, ids: np.ndarray, weights: np.ndarray, codec: TokenCodec) -> bytes:
    """What a cached entry keeps for the verifier: its content word pieces, compressed (see :class:`TokenCodec`).

    Layout: ``u16 count``, then ``count`` rows (int8, or float16 when the codec
    stores 16 bits), ``count`` float16 scales (int8 rows only), ``count`` uint16 ids.
    """
    keep = _content(ids, weights)
    rows, scales = codec.encode(tokens[keep])
    parts = [_COUNT.pack(len(rows)), rows.tobytes()]
    if scales is not None:
        parts.append(scales.astype("<f2").tobytes())
    parts.append(ids[keep].astype("<u2").tobytes())
    return b"".join(parts)


def unpack_entry(prompt: str, data: bytes, weights: np.ndarray, codec: TokenCodec) -> Side:
    """The :class:`Side` of a cached entry from its prompt text and :func:`pack_entry`'s bytes.

    Raises:
        ValueError: the bytes are not what :func:`pack_entry` writes for this codec.
    """
    (count,) = _COUNT.unpack_from(data, 0)
    row_type = np.dtype("<f2") if codec.bits == 16 else np.dtype(np.int8)
    pos = _COUNT.size
    rows = np.frombuffer(data, dtype=row_type, count=count * codec.dim, offset=pos).reshape(count, codec.dim)
    pos += rows.nbytes
    scales = None
    if codec.bits != 16:
        scales = np.frombuffer(data, dtype="<f2", count=count, offset=pos).reshape(count, 1)
        pos += scales.nbytes
    ids = np.frombuffer(data, dtype="<u2", count=count, offset=pos).astype(np.int64)
    if pos + 2 * count != len(data):
        raise ValueError(f"verifier data of {len(data)} bytes does not hold {count} word pieces")
    kept = weights[ids]
    return Side(TextInfo(prompt), codec.decode(rows, scales), ids, np.where(kept > 0, kept, 1.0).astype(np.float32),
                len(data))


def _content(ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Which word pieces count: those with a weight (all of them when none has, a prompt of stopwords only)."""
    keep = weights[ids] > 0
    return keep if keep.any() else np.ones(len(ids), dtype=bool)


# --------------------------------------------------------------- features
def _two_smallest(x: np.ndarray) -> tuple[float, float]:
    if len(x) == 1:
        return float(x[0]), float(x[0])
    p = np.partition(x, 1)
    return float(p[0]), float(p[1])


def token_features(a: Side, b: Side) -> list[float]:
    """Alignment statistics of cached ``a`` vs query ``b`` (without the cosine), order of TOKEN_NAMES[1:]."""
    s = a.vectors @ b.vectors.T  # (m, n)
    a_best, b_best = s.max(axis=1), s.max(axis=0)
    wa, wb = a.weights, b.weights
    sa, sb = float(wa.sum()), float(wb.sum())
    b_min, b_min2 = _two_smallest(b_best)
    a_min, a_min2 = _two_smallest(a_best)
    in_a = np.isin(b.ids, a.ids)
    in_b = np.isin(a.ids, b.ids)
    id_b_only = float(wb[~in_a].sum() / sb)
    id_a_only = float(wa[~in_b].sum() / sa)
    id_b_best = float(b_best[~in_a].min()) if (~in_a).any() else 1.0
    id_a_best = float(a_best[~in_b].min()) if (~in_b).any() else 1.0
    # word order: align query tokens (well matched ones) to entry positions, count inversions
    good = b_best >= 0.6
    inv = 0.0
    if good.sum() >= 2:
        j = s.argmax(axis=0)[good]
        d = np.sign(j[None, :] - j[:, None])
        upper = np.triu(np.ones((len(j), len(j)), dtype=bool), 1)
        inv = float((d[upper] < 0).mean())
    ma = (wa[:, None] * a.vectors).sum(0)
    mb = (wb[:, None] * b.vectors).sum(0)
    wcos = float(ma @ mb / max(np.linalg.norm(ma) * np.linalg.norm(mb), 1e-12))
    wmax = max(float(wa.max()), float(wb.max()), 1e-6)
    return [
        float(wb @ b_best / sb), float(wa @ a_best / sa),
        b_min, a_min, b_min2, a_min2,
        float(wb[b_best < 0.6].sum() / sb), float(wa[a_best < 0.6].sum() / sa),
        float(wb[b_best < 0.8].sum() / sb), float(wa[a_best < 0.8].sum() / sa),
        float((wb * (1 - b_best)).max() / wmax), float((wa * (1 - a_best)).max() / wmax),
        id_b_only, id_a_only, id_b_best, id_a_best,
        inv, wcos, math.log1p(len(a.ids)), math.log1p(len(b.ids)),
    ]


def pair_features(cos: float, a: Side, b: Side) -> np.ndarray:
    """The full feature vector (order of :data:`NAMES`) of cached ``a`` vs query ``b`` at search cosine ``cos``."""
    return np.asarray([cos] + token_features(a, b) + lexical.pair_features(a.info, b.info), dtype=np.float32)


CONTEXT_NAMES = [
    "ctx_rank",  # the candidate's rank among the nearest (capped at 3)
    "ctx_gap_top",  # cosine of the nearest minus this candidate's
    "ctx_margin_next",  # this candidate's cosine minus the next one's (0 when there is none searched)
    "ctx_gap_prev",  # the previous candidate's cosine minus this one's (0 for the nearest)
]
ALL_NAMES = NAMES + CONTEXT_NAMES


def context_features(sims: Sequence[float], rank: int) -> list[float]:
    """Where candidate ``rank`` sits among the searched cosines ``sims`` (best first)."""
    cos = sims[rank]
    nxt = sims[rank + 1] if rank + 1 < len(sims) else 0.0
    prev = sims[rank - 1] if rank > 0 else cos
    return [float(min(rank, 3)), float(sims[0] - cos), float(cos - nxt), float(prev - cos)]
