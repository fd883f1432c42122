"""Labelled pair sets (the public ones in ``/work/shared/data`` and our LLM-style JSONL) and their splits.

Every set is a tuple of :class:`Pair`; ``first`` is cached, ``second`` is looked up.

Splits are deterministic:

* public sets: by a SHA-256 hash of ``"<set>:<pair id>"`` -> bucket 0..99;
  buckets 0-59 train, 60-79 dev, 80-99 test (:func:`hash_split`);
* ``llm_pairs.jsonl``: the ``split`` field written by ``make_llm_pairs.py``
  (assigned by group, seeded), so all pairs of one base prompt share a split.

>>> hash_split("qqp", 0), hash_split("qqp", 1)
('test', 'test')
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from semcache.errors import ConfigurationError, InvalidInputError

SPLITS = ("train", "dev", "test")
DATA_ENV = "SEMCACHE_DATA"  # the folder of the public sets (../shared/data in the source checkout)
LLM_PAIRS_ENV = "SEMCACHE_LLM_PAIRS"  # the LLM-style pairs file (datasets/llm_pairs/llm_pairs.jsonl in the checkout)
FILES = {
    "gptcache": "gptcache_mock_data.json",
    "qqp": "qqp_val.csv",
    "mrpc": "mrpc_train.txt",
    "paws": "paws_wiki_dev.tsv",
}


def _named_file(name: str) -> Path:
    """Where set ``name`` lives: named by the environment (never a path relative to this package)."""
    variable = LLM_PAIRS_ENV if name == "llm" else DATA_ENV
    folder = os.environ.get(variable)
    if not folder:
        raise ConfigurationError(f"set {variable} to read the {name} pairs (see datasets/ and ../shared/data)")
    return Path(folder) if name == "llm" else Path(folder) / FILES[name]


@dataclass(frozen=True)
class Pair:
    """One labelled pair: ``first`` is cached, ``second`` is looked up."""

    id: str
    first: str
    second: str
    positive: bool
    split: str = "train"
    kind: str = ""
    domain: str = ""
    group: str = ""


def hash_split(name: str, pair_id: object) -> str:
    """Deterministic 60/20/20 split of a public set's pair by its id."""
    bucket = int(hashlib.sha256(f"{name}:{pair_id}".encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 60 else "dev" if bucket < 80 else "test"


def load_gptcache(path: Path) -> tuple[Pair, ...]:
    """GPTCache mock data: JSON list of ``{"origin", "similar"}``, all positives."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    return tuple(Pair(str(n), r["origin"], r["similar"], True, hash_split("gptcache", n)) for n, r in enumerate(rows))


def load_qqp(path: Path) -> tuple[Pair, ...]:
    """QQP (MeanCache validation split): CSV ``question1,question2,is_duplicate``; empty rows skipped."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return tuple(
        Pair(str(n), r["question1"], r["question2"], r["is_duplicate"].strip() == "1", hash_split("qqp", n))
        for n, r in enumerate(rows)
        if r["question1"].strip() and r["question2"].strip()
    )


def load_paws(path: Path) -> tuple[Pair, ...]:
    """PAWS-Wiki dev: TSV without header ``id, sentence1, sentence2, label``."""
    pairs = []
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) == 4 and row[1].strip() and row[2].strip():
                pairs.append(Pair(row[0], row[1], row[2], row[3].strip() == "1", hash_split("paws", row[0])))
    return tuple(pairs)


def load_mrpc(path: Path) -> tuple[Pair, ...]:
    """MRPC train: TSV with header ``Quality, #1 ID, #2 ID, #1 String, #2 String``; id = row number."""
    pairs = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        for n, row in enumerate(reader):
            if len(row) == 5 and row[3].strip() and row[4].strip():
                pairs.append(Pair(str(n), row[3], row[4], row[0].strip() == "1", hash_split("mrpc", n)))
    return tuple(pairs)


def load_llm(path: Path) -> tuple[Pair, ...]:
    """Our LLM-style pairs (JSONL written by ``make_llm_pairs.py``); split by group."""
    pairs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            pairs.append(Pair(r["id"], r["first"], r["second"], bool(r["label"]), r["split"], r["kind"],
                              r["domain"], r["group"]))
    return tuple(pairs)


LOADERS: dict[str, Callable[[Path], tuple[Pair, ...]]] = {
    "llm": load_llm,
    "gptcache": load_gptcache,
    "qqp": load_qqp,
    "mrpc": load_mrpc,
    "paws": load_paws,
}


def load(name: str, splits: Iterable[str] | str | None = None) -> tuple[Pair, ...]:
    """The pairs of set ``name`` in ``splits`` (one name, several, or None for all)."""
    pairs = LOADERS[name](_named_file(name))
    if splits is None:
        return pairs
    wanted = {splits} if isinstance(splits, str) else set(splits)
    return tuple(p for p in pairs if p.split in wanted)


FORMATS = ("gptcache", "csv", "paws", "mrpc", "jsonl")


def load_jsonl(path: Path) -> tuple[Pair, ...]:
    """A JSONL file of labelled pairs, one object per line.

    Fields: ``first`` (the cached prompt), ``second`` (the prompt looked up),
    ``label`` (1 or true: the same request; 0 or false: a different one), and
    optionally ``id`` (default: the line number) and ``split``, ``kind``,
    ``domain``, ``group`` (kept as they are).  The LLM-style pairs of
    ``datasets/llm_pairs`` are such a file.

    Raises:
        InvalidInputError: a line that is not such an object, named by its number.
    """
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            first, second, label = row["first"], row["second"], row["label"]
            if not (isinstance(first, str) and isinstance(second, str)) or label not in (0, 1, True, False):
                raise ValueError("first and second must be strings, label 0/1")
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{path} line {number}: not a labelled pair ({exc})") from exc
        pairs.append(Pair(str(row.get("id", number)), first, second, bool(label), str(row.get("split", "")),
                          str(row.get("kind", "")), str(row.get("domain", "")), str(row.get("group", ""))))
    return tuple(pairs)


def detect_format(path: Path) -> str:
    """The format of a pairs file, from its name and first line.

    ``.json``: GPTCache's mock data; ``.jsonl``: :func:`load_jsonl`; ``.csv``:
    ``question1,question2,is_duplicate`` (QQP); ``.tsv``/``.txt``: MRPC when the
    first line is its header (``Quality ...``), else PAWS (``id, sentence1,
    sentence2, label``, no header).
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return "gptcache"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    with open(path, encoding="utf-8-sig") as handle:
        first_line = handle.readline()
    return "mrpc" if first_line.lower().startswith("quality") else "paws"


def read_pairs(path: Path, fmt: str = "auto") -> tuple[Pair, ...]:
    """Every labelled pair of a user's file, in one of :data:`FORMATS` (``"auto"``: :func:`detect_format`).

    Raises:
        InvalidInputError: the file is missing, the format unknown, or the file holds no pair.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    readers = {"gptcache": load_gptcache, "csv": load_qqp, "paws": load_paws, "mrpc": load_mrpc,
               "jsonl": load_jsonl}
    if fmt not in readers:
        raise InvalidInputError(f"unknown pairs format {fmt!r}; choose one of auto, {', '.join(FORMATS)}")
    try:
        pairs = readers[fmt](path)
    except (KeyError, ValueError, csv.Error) as exc:
        raise InvalidInputError(f"{path} cannot be read as {fmt}: {exc!r}") from exc
    if not pairs:
        raise InvalidInputError(f"{path} holds no labelled pair (read as {fmt})")
    return pairs
