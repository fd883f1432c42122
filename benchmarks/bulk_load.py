"""Loading many entries at once (``put_many``, ``store_many``) against one call per entry, in the same run.

Run: ``.venv/bin/python benchmarks/bulk_load.py [--rounds 3] [--per-round 256]``.

Each row loads ``--per-round`` distinct questions from the Quora pairs in
``../shared/data`` per round, one way and then the other (which goes first alternates), ``--rounds``
times, on fresh texts every time (the model memo is off, so every text is embedded).
Embeddings are the packaged all-MiniLM-L6-v2.  Rows:

* ``SemanticKV``: ``put`` per entry against ``put_many``;
* ``SemanticCache`` on it: ``store`` per entry against ``store_many``;
* ``DistributedSemanticKV`` on a local cluster of 2 shards × 3 replicas:
  ``put`` per entry (one thread) against ``put_many``.

It prints entries per second for each way and their ratio.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from semcache import SemanticCache, SemanticKV  # noqa: E402
from semcache._quality.calibrate import load_datasets  # noqa: E402
from semcache.cluster._client import DistributedSemanticKV  # noqa: E402
from semcache.cluster._local import LocalCluster  # noqa: E402
from semcache.embeddings import SentenceTransformerEmbedding  # noqa: E402

Loader = Callable[[list[str]], None]


def questions() -> Iterator[str]:
    """Distinct questions from the Quora pairs, in file order."""
    seen: set[str] = set()
    for pair in load_datasets(names=["qqp"])[0].pairs:
        for text in (pair.first, pair.second):
            if text.lower() not in seen:
                seen.add(text.lower())
                yield text


def race(one_by_one: Loader, at_once: Loader, texts: Iterator[str], rounds: int, per_round: int) -> tuple[float, float]:
    """Entries per second of each loader, rounds alternating (fresh texts each time)."""
    spent = {"one": 0.0, "many": 0.0}
    ways = [("one", one_by_one), ("many", at_once)]
    for round_ in range(rounds):
        for way, load in ways if round_ % 2 == 0 else ways[::-1]:  # each way goes first in turn
            batch = list(itertools.islice(texts, per_round))
            start = time.perf_counter()
            load(batch)
            spent[way] += time.perf_counter() - start
    total = rounds * per_round
    return total / spent["one"], total / spent["many"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=256)
    args = parser.parse_args()
    texts = questions()
    embedding = SentenceTransformerEmbedding(memo_size=0)
    rows: list[tuple[str, str, float, float]] = []
    counter = itertools.count()

    def keyed(batch: list[str]) -> list[tuple[str, str, str]]:
        return [(f"k{next(counter)}", "a cached answer", text) for text in batch]

    with SemanticKV(embedding=embedding) as kv:
        rows.append(("SemanticKV", "put each / put_many", *race(
            lambda batch: [kv.put(key, value, text=text) for key, value, text in keyed(batch)],
            lambda batch: kv.put_many(keyed(batch)), texts, args.rounds, args.per_round)))
        cache = SemanticCache(kv)
        rows.append(("SemanticCache", "store each / store_many", *race(
            lambda batch: [cache.store(text, "a cached answer") for text in batch],
            lambda batch: cache.store_many([(text, "a cached answer") for text in batch]),
            texts, args.rounds, args.per_round)))
    with tempfile.TemporaryDirectory(prefix="semcache-bulk-") as tmp:
        cluster = LocalCluster(tmp)
        try:
            cluster.up(2, 3, embedding=embedding.model_id)
            token = cluster.config().token
            with DistributedSemanticKV(cluster.addresses(), embedding=embedding, token=token) as remote:
                rows.append(("DistributedSemanticKV, 2 x 3", "put each / put_many", *race(
                    lambda batch: [remote.put(key, value, text=text) for key, value, text in keyed(batch)],
                    lambda batch: remote.put_many(keyed(batch)), texts, args.rounds, args.per_round)))
        finally:
            cluster.down()
    print(f"# bulk_load: {args.rounds} rounds of {args.per_round} fresh questions per way, alternating")
    print("| store | one call per entry vs bulk | one per entry, entries/s | bulk, entries/s | bulk / one |")
    print("|---|---|---|---|---|")
    for store, ways, one, many in rows:
        print(f"| {store} | {ways} | {one:,.0f} | {many:,.0f} | {many / one:.1f}x |")
    print(f"\n- python {platform.python_version()}, model {embedding.model_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
