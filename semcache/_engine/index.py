"""One HNSW vector index (hnswlib, cosine), made deterministic.

hnswlib builds identical graphs on every replica only when it inserts on one
thread with a fixed seed, so :class:`VectorIndex` pins ``num_threads=1`` and
``random_seed``.  It also chooses labels itself, deterministically: a deleted
label goes on a free list and the smallest free label is reused first.  Adding
a vector under a label that hnswlib has marked deleted overwrites that slot in
place, so freed slots are reused without hnswlib's replace-deleted mode (whose
slot choice depends on an unordered set and so on history).

A restored index keeps inserting exactly as one that never stopped: see
:func:`level_rng_seed`.

Inserting is the expensive part of a write (an ``ef_construction`` walk, about
1 ms at 384 dimensions), so an index may defer it: with ``backlog > 0``,
:meth:`VectorIndex.add` and :meth:`VectorIndex.remove` decide the label at once
and queue the hnswlib call, and :meth:`VectorIndex.index_pending` replays the
queue later, in order, when the owner has a spare moment.  The graph depends
only on the sequence of hnswlib calls, never on when they ran, so replicas
that drain at different times still end byte-identical.  Until a queued vector
is in the graph, searches compare it exactly (a brute-force scan of the
backlog), so a write is searchable the moment it is applied.  The backlog is
bounded: past ``backlog`` queued operations, each new one first indexes the
oldest, which is the eager cost again.

>>> import numpy as np
>>> idx = VectorIndex(dim=2, max_entries=2)
>>> a = idx.add(np.array([1.0, 0.0], dtype=np.float32))
>>> b = idx.add(np.array([0.0, 1.0], dtype=np.float32))
>>> [(label, round(sim, 3)) for label, sim in idx.search(np.array([1.0, 0.1], dtype=np.float32), 1)]
[(0, 0.995)]
"""

from __future__ import annotations

import functools
import heapq
import logging
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import hnswlib
import numpy as np

from semcache.errors import ConfigurationError, CorruptDataError

log = logging.getLogger("semcache")

# hnswlib draws each new element's level from a std::minstd_rand0 engine seeded
# with ``random_seed`` (libstdc++: x <- 16807 x mod 2^31-1), two engine steps per
# draw (generate_canonical<double> over a 31-bit engine).  Its other generator
# only gates neighbour updates with probability 1.0, so its state never matters.
_MINSTD_MULTIPLIER = 16_807
_MINSTD_MODULUS = 2**31 - 1
_ENGINE_STEPS_PER_LEVEL = 2


def level_rng_seed(random_seed: int, elements: int) -> int:
    """The seed that puts hnswlib's level generator where it is after ``elements`` insertions.

    ``load_index`` leaves the generator default-seeded, so a restored replica would
    draw other levels for its next inserts than one that never restarted, and the
    two graphs would drift apart.  Re-seeding with this value (an LCG jumps ahead
    in O(log n)) makes restore-then-continue byte-identical too.

    >>> level_rng_seed(100, 0)
    100
    """
    state = random_seed % _MINSTD_MODULUS or 1  # what minstd_rand0.seed() does
    return state * pow(_MINSTD_MULTIPLIER, _ENGINE_STEPS_PER_LEVEL * elements, _MINSTD_MODULUS) % _MINSTD_MODULUS


@dataclass(frozen=True)
class IndexSettings:
    """HNSW parameters, as in the seed (``max_entries`` is the initial capacity; the index grows)."""

    max_entries: int = 100_000
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    ef_search: int = 48
    random_seed: int = 100

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "random_seed" else 1):
                raise ConfigurationError(f"index setting {name} must be a positive int, got {value!r}")
        if self.hnsw_m < 2:
            raise ConfigurationError(f"hnsw_m must be at least 2, got {self.hnsw_m}")


@dataclass(frozen=True, slots=True)
class _QueuedOp:
    """One deferred hnswlib call: add ``vector`` under ``label``, or mark it deleted (``vector`` None)."""

    label: int
    vector: np.ndarray | None
    grow_to: int  # the slot count hnswlib must have before this call (resize_index), as decided at queue time


# A search whose filter rejects results widens up to this many times k (at least MIN_WIDEN):
# enough to step over the expired entries a purge has not removed yet, bounded whatever they are.
WIDEN_FACTOR = 4
MIN_WIDEN = 64
EXACT_CHUNK = 4096  # vectors read back at a time by the exact fallback


class VectorIndex:
    """An HNSW index over unit vectors with deterministic label reuse and growth."""

    # A fresh index reserves at most this many slots; it doubles as it fills,
    # so a small scope does not pay for max_entries slots up front.
    INITIAL_SLOTS = 1024

    def __init__(
        self, dim: int, settings: IndexSettings | None = None, *, backlog: int = 0, **overrides: int
    ) -> None:
        self.dim = dim
        self.settings = settings or IndexSettings(**overrides)
        self._free: list[int] = []  # heap of deleted labels, smallest reused first
        self._next_label = 0
        self._slots = min(self.settings.max_entries, self.INITIAL_SLOTS)
        self._index = self._new_hnsw(self._slots)
        self._init_backlog(backlog)

    def _init_backlog(self, backlog: int) -> None:
        self.backlog = backlog  # how many hnswlib calls may wait in the queue (0: every call runs at once)
        self._queue: deque[_QueuedOp] = deque()
        self._queued_per_label: dict[int, int] = {}  # labels whose graph state is stale until their ops run
        self._queued_vectors: dict[int, np.ndarray] = {}  # ...and, if their last op adds, the vector it adds
        self._queued_matrix: tuple[np.ndarray, np.ndarray] | None = None  # (labels, vectors) for the scan
        self._indexed_live = 0  # live vectors in the hnswlib graph itself
        # Told of every change in the queue's length (+1 queued, -n indexed), so an owner
        # of many indexes can keep a running total instead of summing them on every write.
        self.on_queue_change: Callable[[int], None] | None = None

    def _new_hnsw(self, slots: int) -> hnswlib.Index:
        index = hnswlib.Index(space="cosine", dim=self.dim)
        index.init_index(
            max_elements=max(slots, 1),
            ef_construction=self.settings.hnsw_ef_construction,
            M=self.settings.hnsw_m,
            random_seed=self.settings.random_seed,
        )
        self._configure(index)
        return index

    def _configure(self, index: hnswlib.Index) -> None:
        index.set_num_threads(1)
        index.set_ef(self.settings.ef_search)

    def set_ef_search(self, ef_search: int) -> None:
        """Change the query-time ``ef`` (it does not affect the graph, only search effort)."""
        self.settings = replace(self.settings, ef_search=ef_search)
        self._index.set_ef(ef_search)

    def __len__(self) -> int:
        """Number of live (not deleted) vectors."""
        return self._next_label - len(self._free)

    @property
    def slots(self) -> int:
        """Slots reserved (grows by doubling), counting growth that queued adds will make."""
        return self._slots

    @property
    def queued(self) -> int:
        """hnswlib calls waiting in the backlog."""
        return len(self._queue)

    def add(self, vector: np.ndarray) -> int:
        """Insert one unit vector and return its label (searchable at once, indexed now or later)."""
        if self._free:
            label = heapq.heappop(self._free)
            # hnswlib overwrites a deleted label's slot in place and un-deletes it.
        else:
            label = self._next_label
            if label >= self._slots:
                self._slots *= 2
            self._next_label += 1
        unit = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        unit = unit / np.linalg.norm(unit)  # what hnswlib's cosine space stores
        self._queued_vectors[label] = unit
        self._enqueue(_QueuedOp(label, unit, self._slots))
        return label

    def remove(self, label: int) -> None:
        """Delete a label; its slot is reused by a later :meth:`add`."""
        self._queued_vectors.pop(label, None)
        heapq.heappush(self._free, label)
        self._enqueue(_QueuedOp(label, None, self._slots))

    def _enqueue(self, op: _QueuedOp) -> None:
        self._queue.append(op)
        self._queued_per_label[op.label] = self._queued_per_label.get(op.label, 0) + 1
        self._queued_matrix = None
        if self.on_queue_change is not None:
            self.on_queue_change(1)
        if len(self._queue) > self.backlog:
            self.index_pending(len(self._queue) - self.backlog)

    def index_pending(self, max_ops: int | None = None) -> int:
        """Run up to ``max_ops`` queued hnswlib calls (all if None), oldest first; return how many ran."""
        done = 0
        while self._queue and (max_ops is None or done < max_ops):
            op = self._queue[0]
            if op.grow_to > self._index.get_max_elements():
                self._index.resize_index(op.grow_to)
            if op.vector is None:
                self._index.mark_deleted(op.label)
                self._indexed_live -= 1
            else:
                self._index.add_items(op.vector.reshape(1, -1), np.array([op.label], dtype=np.int64))
                self._indexed_live += 1
            self._queue.popleft()  # only now: until the call has run, searches must not trust the graph
            left = self._queued_per_label[op.label] - 1
            if left:
                self._queued_per_label[op.label] = left
            else:
                del self._queued_per_label[op.label]
                if self._queued_vectors.pop(op.label, None) is not None:
                    self._queued_matrix = None
            done += 1
        if done and self.on_queue_change is not None:
            self.on_queue_change(-done)
        return done

    def vector(self, label: int) -> np.ndarray:
        """The stored (normalised) vector of a live label."""
        if label in self._queued_per_label:
            return self._queued_vectors[label]
        return np.asarray(self._index.get_items([label])[0], dtype=np.float32)

    def search(
        self, vector: np.ndarray, k: int, accept: Callable[[int], bool] | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest accepted labels as ``(label, cosine similarity)``, best first.

        ``accept`` filters labels (for example, expired entries); when it rejects
        some, the search widens until it has ``k`` or has seen every vector.
        Vectors still in the backlog are compared exactly and merged in.
        """
        if self._queued_per_label:
            stale = self._queued_per_label

            def settled(label: int) -> bool:  # the graph's copy of a label with queued ops is out of date
                return label not in stale and (accept is None or accept(label))

            hits = self._search_graph(vector, k, settled) + self._search_queued(vector, k, accept)
            return sorted(hits, key=lambda hit: -hit[1])[:k]
        return self._search_graph(vector, k, accept)

    def _search_queued(
        self, vector: np.ndarray, k: int, accept: Callable[[int], bool] | None
    ) -> list[tuple[int, float]]:
        """Exact cosine search over the vectors whose adds are still queued."""
        if not self._queued_vectors:
            return []
        if self._queued_matrix is None:
            labels = np.fromiter(self._queued_vectors, dtype=np.int64, count=len(self._queued_vectors))
            self._queued_matrix = (labels, np.stack(list(self._queued_vectors.values())))
        labels, matrix = self._queued_matrix
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        similarities = matrix @ (query / np.linalg.norm(query))
        hits = []
        for position in np.argsort(-similarities, kind="stable"):
            label = int(labels[position])
            if accept is None or accept(label):
                hits.append((label, float(similarities[position])))
                if len(hits) == k:
                    break
        return hits

    def _search_graph(
        self, vector: np.ndarray, k: int, accept: Callable[[int], bool] | None
    ) -> list[tuple[int, float]]:
        """The hnswlib part of :meth:`search`, its work bounded whatever ``k`` is.

        hnswlib is never asked for more neighbours than the graph holds live
        vectors, and ``ef`` is never below the count asked for: then it can
        always gather them and does not raise (when it does raise, it leaks the
        buffers of that query).  When ``accept`` rejects some results (expired
        entries not yet purged), the search widens, at most to
        :data:`WIDEN_FACTOR` times ``k``.  If hnswlib still fails (a graph whose
        deletions cut live vectors off from its entry point), an exact scan answers.
        """
        live = self._indexed_live
        cap = min(live, max(k, MIN_WIDEN) * WIDEN_FACTOR)
        want = min(k, live)
        while want > 0:
            self._index.set_ef(max(self.settings.ef_search, want))
            try:
                labels, distances = self._index.knn_query(vector.reshape(1, -1), k=want)
            except RuntimeError:
                return self._search_exact(vector, k, accept)
            finally:
                self._index.set_ef(self.settings.ef_search)
            hits = [
                (int(label), float(1.0 - distance))
                for label, distance in zip(labels[0], distances[0], strict=True)
                if accept is None or accept(int(label))
            ]
            if len(hits) >= k or want >= cap:
                return hits[:k]
            want = min(cap, want * 2)
        return []

    def _search_exact(
        self, vector: np.ndarray, k: int, accept: Callable[[int], bool] | None
    ) -> list[tuple[int, float]]:
        """Exact cosine search over the graph's live vectors, read back in chunks (bounded memory)."""
        free = set(self._free) | set(self._queued_per_label)
        labels = [label for label in range(self._next_label) if label not in free]
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        query = query / np.linalg.norm(query)
        best: list[tuple[float, int]] = []
        for start in range(0, len(labels), EXACT_CHUNK):
            chunk = labels[start : start + EXACT_CHUNK]
            similarities = np.asarray(self._index.get_items(chunk), dtype=np.float32) @ query
            for label, similarity in zip(chunk, similarities.tolist(), strict=True):
                if accept is None or accept(label):
                    heapq.heappush(best, (similarity, -label))
                    if len(best) > k:
                        heapq.heappop(best)
        return [(-label, similarity) for similarity, label in sorted(best, reverse=True)]

    def save(self, path: Path) -> dict[str, object]:
        """Write the graph to ``path`` (hnswlib format); return the metadata :meth:`load` needs.

        The backlog is indexed first: a snapshot holds the whole graph.
        """
        self.index_pending()
        self._index.save_index(str(path))
        return {"next_label": self._next_label, "free": sorted(self._free), "slots": self.slots}

    @classmethod
    def load(
        cls, path: Path, dim: int, settings: IndexSettings, meta: dict[str, object], *, backlog: int = 0
    ) -> VectorIndex:
        """Read an index written by :meth:`save`."""
        index = cls.__new__(cls)
        index.dim = dim
        index.settings = settings
        free = meta["free"]
        next_label = meta["next_label"]
        slots = meta["slots"]
        if not (isinstance(free, list) and isinstance(next_label, int) and isinstance(slots, int)):
            raise CorruptDataError(f"index metadata for {path} is malformed: {meta!r}")
        index._free = [int(label) for label in free]
        heapq.heapify(index._free)
        index._next_label = next_label
        index._slots = slots
        index._index = _load_reseeded(path, dim, slots, settings.random_seed)
        index._configure(index._index)
        index._init_backlog(backlog)
        index._indexed_live = next_label - len(index._free)
        if not jump_ahead_verified():
            log.warning(
                "semcache: this hnswlib build draws levels differently; a restored index may "
                "build another graph than one that never restarted (search still works)"
            )
        return index


def _load_reseeded(path: Path, dim: int, slots: int, random_seed: int) -> hnswlib.Index:
    """``load_index``, then re-seed the level generator to where the saved index's stood."""
    loaded = hnswlib.Index(space="cosine", dim=dim)
    loaded.load_index(str(path), max_elements=slots)
    # Rebuild through hnswlib's pickle state, whose "seed" seeds the level generator.
    (params, *rest) = loaded.__getstate__()
    params = {**params, "seed": level_rng_seed(random_seed, loaded.element_count)}
    hnsw = hnswlib.Index.__new__(hnswlib.Index)
    hnsw.__setstate__((params, *rest))
    return hnsw


@functools.cache
def jump_ahead_verified() -> bool:
    """Whether :func:`level_rng_seed` reproduces this hnswlib build's level generator.

    Checked once per process on a tiny index (M=2, so levels vary a lot): one
    built straight through must equal one saved, restored and continued.
    """
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(48, 4)).astype(np.float32)
    settings = IndexSettings(max_entries=64, hnsw_m=2, hnsw_ef_construction=8, random_seed=7)
    whole, part = VectorIndex(4, settings), VectorIndex(4, settings)
    for vector in vectors:
        whole.add(vector)
    for vector in vectors[:16]:
        part.add(vector)
    with tempfile.TemporaryDirectory(prefix="semcache-rng-") as tmp:
        part.save(Path(tmp) / "part.bin")
        part._index = _load_reseeded(Path(tmp) / "part.bin", 4, part.slots, settings.random_seed)
        part._configure(part._index)
        for vector in vectors[16:]:
            part.add(vector)
        whole.save(Path(tmp) / "whole.bin")
        part.save(Path(tmp) / "continued.bin")
        return (Path(tmp) / "whole.bin").read_bytes() == (Path(tmp) / "continued.bin").read_bytes()
