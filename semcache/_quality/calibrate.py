"""Threshold calibration: right-hit and wrong-hit rates per threshold on labelled pairs.

Each dataset is read *as a cache*, the way ``../shared/data/README.md`` says:
the first text of every pair is stored (its answer is the pair's id) and the
second text is looked up.  A hit returning the pair's own id on a duplicate
pair is a right hit; any other hit (on a non-duplicate pair, or returning
another pair's id) is a wrong hit; no hit is a miss.

Lookups are simulated exactly as :meth:`semcache.SemanticCache.lookup` decides,
but in one batched pass instead of one call per query:

1. **exact path**: a query whose normalised text equals a cached prompt hits it;
2. **semantic path**: the :data:`~semcache._cache.cache.SEMANTIC_CANDIDATES` nearest
   cached prompts at or above the threshold are tried in order, and the first
   that the hit guard (:func:`semcache._cache.guard.conflict`) lets through is served.

Every text is embedded once (batched), the nearest neighbours come from one
exact numpy pass, and the guard runs once per (query, candidate); sweeping
the threshold after that costs only array comparisons.

>>> import numpy as np
>>> from semcache.embeddings import CallableEmbedding
>>> table = {"a": [1.0, 0.0], "a'": [0.96, 0.28], "b": [0.0, 1.0], "c": [0.6, 0.8]}
>>> emb = CallableEmbedding(lambda texts: np.array([table[t] for t in texts]), dim=2)
>>> data = Dataset("toy", (Pair(0, "a", "a'", True), Pair(1, "b", "c", False)))
>>> [(r.threshold, r.right, r.wrong) for r in sweep(prepare(data, emb), [0.5, 0.9])]
[(0.5, 1, 1), (0.9, 1, 0)]
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semcache._cache.guard import conflict
from semcache._cache.keys import normalize_prompt
from semcache.embeddings import BaseEmbedding
from semcache.errors import ConfigurationError, InvalidInputError

# Only the nearest entry is a candidate, as in the cache (semcache._cache.decision).
SEMANTIC_CANDIDATES = 1

DATA_FILES = {
    "gptcache": "gptcache_mock_data.json",
    "qqp": "qqp_val.csv",
    "paws": "paws_wiki_dev.tsv",
}
# 0.70, 0.71, ... 0.98: the sweep of `semcache calibrate`.
DEFAULT_THRESHOLDS = tuple(round(0.70 + 0.01 * step, 2) for step in range(29))
MAX_WRONG_RATE = 0.01  # the default threshold's target on gptcache_mock_data.json
EMBED_CHUNK = 256  # texts per model call; small enough for a live progress bar

Guard = Callable[[str, str], str | None]


@dataclass(frozen=True)
class Pair:
    """One labelled pair: ``first`` is cached, ``second`` is looked up."""

    id: int
    first: str
    second: str
    positive: bool


@dataclass(frozen=True)
class Dataset:
    name: str
    pairs: tuple[Pair, ...]

    @property
    def positives(self) -> int:
        return sum(pair.positive for pair in self.pairs)


@dataclass(frozen=True)
class Rates:
    """Outcome of every lookup of a dataset at one threshold."""

    threshold: float
    queries: int
    positives: int
    right: int
    wrong: int

    @property
    def misses(self) -> int:
        return self.queries - self.right - self.wrong

    @property
    def right_rate(self) -> float:
        """Right hits per duplicate pair (the share of cacheable queries served)."""
        return self.right / self.positives if self.positives else 0.0

    @property
    def wrong_rate(self) -> float:
        """Wrong hits per query: the share of all lookups answered wrongly."""
        return self.wrong / self.queries if self.queries else 0.0


@dataclass
class Prepared:
    """A dataset read as a cache, with each query's nearest cached prompts.

    Attributes:
        entries: the cached prompts (first texts, deduplicated by normalised form).
        answers: for each entry, the ids of the pairs that stored it.
        exact: per query, the entry its normalised text equals, or -1.
        neighbours, similarities: per query, the nearest entries, best first, ``(n, k)``.
        vetoes: per (query, neighbour), the guard's reason or None.
    """

    dataset: Dataset
    entries: list[str]
    answers: list[frozenset[int]]
    exact: np.ndarray
    neighbours: np.ndarray
    similarities: np.ndarray
    vetoes: list[list[str | None]]


# ----------------------------------------------------------------- datasets
DATA_ENV = "SEMCACHE_DATA"


def default_data_dir() -> Path:
    """The labelled data folder named by the ``SEMCACHE_DATA`` environment variable.

    There is no built-in default: the data is not shipped with the package, so its
    folder is always named, by ``--data`` or by this variable.

    Raises:
        ConfigurationError: the variable is not set.
    """
    folder = os.environ.get(DATA_ENV)
    if not folder:
        raise ConfigurationError(
            f"name the labelled data folder with --data DIR or the {DATA_ENV} environment variable "
            "(in a checkout of semcache: ../shared/data)"
        )
    return Path(folder)


def load_gptcache(path: Path) -> Dataset:
    """GPTCache's mock data: a JSON list of ``{"origin", "similar"}``, all paraphrases."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    pairs = tuple(Pair(n, row["origin"], row["similar"], True) for n, row in enumerate(rows))
    return Dataset("gptcache", pairs)


def load_qqp(path: Path) -> Dataset:
    """Quora Question Pairs: CSV with header ``question1,question2,is_duplicate``."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    pairs = tuple(
        Pair(n, row["question1"], row["question2"], row["is_duplicate"].strip() == "1")
        for n, row in enumerate(rows)
        if row["question1"].strip() and row["question2"].strip()
    )
    return Dataset("qqp", pairs)


def load_paws(path: Path) -> Dataset:
    """PAWS-Wiki: TSV without header ``id, sentence1, sentence2, label``."""
    pairs = []
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) == 4 and row[1].strip() and row[2].strip():
                pairs.append(Pair(int(row[0]), row[1], row[2], row[3].strip() == "1"))
    return Dataset("paws", tuple(pairs))


_LOADERS: dict[str, Callable[[Path], Dataset]] = {"gptcache": load_gptcache, "qqp": load_qqp, "paws": load_paws}


def load_datasets(data_dir: Path | None = None, names: Iterable[str] = DATA_FILES) -> list[Dataset]:
    """Read the named datasets from ``data_dir`` (default :func:`default_data_dir`).

    Raises:
        InvalidInputError: an unknown name, or the folder or a file is missing.
    """
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    datasets = []
    for name in names:
        if name not in DATA_FILES:
            raise InvalidInputError(f"unknown dataset {name!r}; known: {', '.join(DATA_FILES)}")
        path = folder / DATA_FILES[name]
        if not path.is_file():
            raise InvalidInputError(f"{path} not found (see ../shared/data/README.md)")
        datasets.append(_LOADERS[name](path))
    return datasets


# ------------------------------------------------------------- computation
def embed_all(embedding: BaseEmbedding, texts: Sequence[str], *, progress: bool = False) -> dict[str, np.ndarray]:
    """Embed each distinct text once, in batches (shortest first, so batches pad little)."""
    distinct = sorted(set(texts), key=len)
    chunks = range(0, len(distinct), EMBED_CHUNK)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="embedding", unit="batch", total=len(chunks))
    vectors: dict[str, np.ndarray] = {}
    for start in chunks:
        batch = distinct[start : start + EMBED_CHUNK]
        for text, vector in zip(batch, embedding.embed(batch), strict=True):
            vectors[text] = vector
    return vectors


def nearest(entries: np.ndarray, queries: np.ndarray, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` cosine neighbours of each query among unit-length ``entries``.

    Returns:
        ``(indices, similarities)``, both ``(len(queries), min(k, len(entries)))``, best first.
    """
    k = min(k, len(entries))
    indices = np.empty((len(queries), k), dtype=np.int64)
    sims = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ entries.T
        top = (
            np.argpartition(-scores, k - 1, axis=1)[:, :k]
            if k < len(entries)
            else np.tile(np.arange(len(entries)), (len(scores), 1))
        )
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        indices[start : start + chunk] = np.take_along_axis(top, order, axis=1)
        sims[start : start + chunk] = np.take_along_axis(top_scores, order, axis=1)
    return indices, sims


def prepare(
    dataset: Dataset,
    embedding: BaseEmbedding,
    *,
    vectors: dict[str, np.ndarray] | None = None,
    guard: Guard = conflict,
    k: int = SEMANTIC_CANDIDATES,
) -> Prepared:
    """Read ``dataset`` as a cache and find each query's candidates and guard verdicts.

    Args:
        vectors: normalised text -> embedding, precomputed (see :func:`embed_all`);
            missing texts are embedded here.
        guard: ``(cached_prompt, new_prompt) -> reason or None``, as in the cache.
    """
    if not dataset.pairs:
        raise InvalidInputError(f"dataset {dataset.name} has no pairs")
    slot: dict[str, int] = {}
    entries: list[str] = []
    answers: list[set[int]] = []
    for pair in dataset.pairs:
        normalized = normalize_prompt(pair.first)
        if normalized not in slot:
            slot[normalized] = len(entries)
            entries.append(pair.first)
            answers.append(set())
        answers[slot[normalized]].add(pair.id)
    queries = [normalize_prompt(pair.second) for pair in dataset.pairs]
    keys = [normalize_prompt(text) for text in entries]
    vectors = dict(vectors or {})
    missing = [text for text in keys + queries if text not in vectors]
    if missing:
        vectors.update(embed_all(embedding, missing))
    entry_matrix = np.stack([vectors[text] for text in keys])
    query_matrix = np.stack([vectors[text] for text in queries])
    neighbours, similarities = nearest(entry_matrix, query_matrix, k)
    vetoes = [
        [guard(entries[entry], pair.second) for entry in row]
        for pair, row in zip(dataset.pairs, neighbours.tolist(), strict=True)
    ]
    exact = np.array([slot.get(text, -1) for text in queries], dtype=np.int64)
    return Prepared(dataset, entries, [frozenset(a) for a in answers], exact, neighbours, similarities, vetoes)


def served(prepared: Prepared, threshold: float, *, use_guard: bool = True) -> np.ndarray:
    """The entry each query is served at ``threshold`` (-1 for a miss), as ``lookup`` decides."""
    passing = prepared.similarities >= np.float32(threshold)
    if use_guard:
        passing &= np.array([[reason is None for reason in row] for row in prepared.vetoes], dtype=bool)
    else:
        passing[:, 1:] = False  # no guard: the nearest entry or nothing
    first = passing.argmax(axis=1)
    entry = np.where(passing.any(axis=1), prepared.neighbours[np.arange(len(first)), first], -1)
    return np.where(prepared.exact >= 0, prepared.exact, entry)


def rates(prepared: Prepared, threshold: float, *, use_guard: bool = True) -> Rates:
    """Right and wrong hits of ``prepared`` at ``threshold``."""
    right = wrong = 0
    entries = served(prepared, threshold, use_guard=use_guard).tolist()
    for pair, entry in zip(prepared.dataset.pairs, entries, strict=True):
        if entry < 0:
            continue
        if pair.positive and pair.id in prepared.answers[entry]:
            right += 1
        else:
            wrong += 1
    return Rates(threshold, len(prepared.dataset.pairs), prepared.dataset.positives, right, wrong)


def sweep(
    prepared: Prepared, thresholds: Iterable[float] = DEFAULT_THRESHOLDS, *, use_guard: bool = True
) -> list[Rates]:
    """:func:`rates` at each threshold."""
    return [rates(prepared, threshold, use_guard=use_guard) for threshold in thresholds]


def choose_threshold(table: Sequence[Rates], max_wrong_rate: float = MAX_WRONG_RATE) -> Rates | None:
    """The row with the lowest threshold whose wrong-hit rate is at most ``max_wrong_rate``."""
    within = [row for row in table if row.wrong_rate <= max_wrong_rate]
    return min(within, key=lambda row: row.threshold) if within else None


@dataclass
class Calibration:
    """Everything ``semcache calibrate`` measures."""

    model_id: str
    raw: dict[str, list[Rates]]
    guarded: dict[str, list[Rates]]
    vetoes: dict[str, dict[str, int]]
    chosen: Rates | None
    seconds: float


def calibrate(
    datasets: Sequence[Dataset],
    embedding: BaseEmbedding,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    guard: Guard = conflict,
    select_on: str = "gptcache",
    progress: bool = False,
) -> Calibration:
    """Sweep ``thresholds`` on every dataset, with and without the guard, in one model pass.

    The chosen threshold is the lowest with at most 1 % wrong hits on
    ``select_on`` with the guard (None if that dataset is absent or no threshold qualifies).
    """
    started = time.perf_counter()
    texts = [normalize_prompt(text) for data in datasets for pair in data.pairs for text in (pair.first, pair.second)]
    vectors = embed_all(embedding, texts, progress=progress)
    raw: dict[str, list[Rates]] = {}
    guarded: dict[str, list[Rates]] = {}
    vetoes: dict[str, dict[str, int]] = {}
    for data in datasets:
        prepared = prepare(data, embedding, vectors=vectors, guard=guard)
        raw[data.name] = sweep(prepared, thresholds, use_guard=False)
        guarded[data.name] = sweep(prepared, thresholds, use_guard=True)
        vetoes[data.name] = veto_counts(prepared, min(thresholds))
    chosen = choose_threshold(guarded[select_on]) if select_on in guarded else None
    return Calibration(embedding.model_id, raw, guarded, vetoes, chosen, time.perf_counter() - started)


def veto_counts(prepared: Prepared, threshold: float) -> dict[str, int]:
    """How often each guard reason vetoed a top candidate at or above ``threshold``."""
    counts: dict[str, int] = {}
    for row, sims, exact in zip(prepared.vetoes, prepared.similarities.tolist(), prepared.exact.tolist(), strict=True):
        if exact < 0 and row and row[0] is not None and sims[0] >= threshold:
            counts[row[0]] = counts.get(row[0], 0) + 1
    return dict(sorted(counts.items()))


# --------------------------------------------------------------- reporting
def format_table(calibration: Calibration, thresholds: Sequence[float] | None = None) -> str:
    """A Markdown table: per threshold and dataset, right/wrong hit rates raw and with the guard."""
    names = list(calibration.guarded)
    wanted = None if thresholds is None else {round(t, 4) for t in thresholds}
    head = "| threshold | " + " | ".join(f"{n} right (raw / guard) | {n} wrong (raw / guard)" for n in names) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(names))]
    rows = zip(*(zip(calibration.raw[n], calibration.guarded[n], strict=True) for n in names), strict=True)
    for per_dataset in rows:
        threshold = per_dataset[0][0].threshold
        if wanted is not None and round(threshold, 4) not in wanted:
            continue
        cells = [f"{threshold:.2f}"]
        for raw, guarded in per_dataset:
            cells.append(f"{raw.right_rate:6.1%} / {guarded.right_rate:6.1%}")
            cells.append(f"{raw.wrong_rate:5.1%} / {guarded.wrong_rate:5.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_report(calibration: Calibration) -> str:
    """The table plus the vetoes and the chosen threshold, as ``semcache calibrate`` prints it."""
    parts = [
        f"model: {calibration.model_id}   ({calibration.seconds:.0f} s)",
        "right = right hits / duplicate pairs; wrong = wrong hits / all queries",
        "",
        format_table(calibration),
        "",
    ]
    for name, counts in calibration.vetoes.items():
        detail = ", ".join(f"{reason} {count}" for reason, count in counts.items()) or "none"
        parts.append(f"guard vetoes of the nearest candidate on {name} (>= lowest threshold): {detail}")
    chosen = calibration.chosen
    if chosen is not None:
        parts.append(
            f"\nchosen threshold: {chosen.threshold:.2f} (lowest with <= {MAX_WRONG_RATE:.0%} wrong hits on "
            f"gptcache with the guard: {chosen.right} right, {chosen.wrong} wrong, {chosen.misses} misses "
            f"of {chosen.queries})"
        )
    else:
        parts.append("\nno threshold in the sweep meets the target on gptcache")
    return "\n".join(parts)
