"""Do a few dozen wrong-hit reports move a namespace's wrong-hit rate?  Measured on held-out pairs.

Run: ``.venv/bin/python -m benchmarks.feedback_refit [--set qqp] [--reports 30]``.

A namespace's traffic is one labelled set's test split (never used to fit or
choose the verifier), cut in two halves by pair id:

1. the first half goes through a cache of the namespace at the default
   operating point; the first ``--reports`` wrong semantic hits it serves are
   reported with ``SemanticCache.report_wrong_hit`` (as a user would);
2. ``semcache calibrate --feedback``'s refit runs on those reports and stores
   the namespace's new operating point;
3. the second half (held out: nothing of it was reported) goes through a cache
   of the namespace before the refit and one after, and the table shows right
   and wrong hits of both, beside a namespace that reported nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from semcache import SemanticCache, SemanticKV
from semcache._cache import feedback
from semcache._quality import pairs as pairsets
from semcache._quality.evaluate import Count, count, run
from semcache._quality.pairs import Pair
from semcache.embeddings import SentenceTransformerEmbedding

CHECKOUT = Path(__file__).resolve().parent.parent
# The labelled sets, named explicitly: the shared data beside this checkout, and the checkout's LLM-style pairs.
os.environ.setdefault("SEMCACHE_DATA", str(CHECKOUT.parent / "shared" / "data"))
os.environ.setdefault("SEMCACHE_LLM_PAIRS", str(CHECKOUT / "datasets" / "llm_pairs" / "llm_pairs.jsonl"))


def report_wrong_hits(cache: SemanticCache, pairs: Sequence[Pair], limit: int) -> int:
    """Look ``pairs`` up in a fresh scope of ``cache`` and report its first ``limit`` wrong semantic hits."""
    scope = "feedback-run"
    answers: dict[str, list[str]] = {}
    for pair in pairs:
        answers.setdefault(pair.first, []).append(pair.id)
    cache.store_many(list(answers.items()), scope=scope)
    reported = 0
    for pair in pairs:
        seen = cache.explain(pair.second, scope=scope)
        if seen.hit is None or seen.exact:
            continue
        if not (pair.positive and pair.id in seen.hit.response):
            cache.report_wrong_hit(seen.hit)
            reported += 1
            if reported == limit:
                break
    cache.clear(scope=scope)
    return reported


def held_out(cache: SemanticCache, pairs: Sequence[Pair], label: str) -> Count:
    return count(run(pairs, cache), lambda row: row.served, label)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.feedback_refit")
    parser.add_argument("--set", default="qqp", choices=("qqp", "mrpc", "paws", "llm"))
    parser.add_argument("--reports", type=int, default=30)
    args = parser.parse_args(argv)
    test = list(pairsets.load(args.set, "test"))
    first, second = test[: len(test) // 2], test[len(test) // 2 :]
    embedding = SentenceTransformerEmbedding()
    backend = SemanticKV(embedding=embedding, purge_interval=3600)
    reporter = SemanticCache(backend, namespace="reported")
    reported = report_wrong_hits(reporter, first, args.reports)
    base = reporter.decision.score_threshold  # type: ignore[union-attr]
    point = feedback.refit(reporter.reports(), base)
    feedback.write_operating_point(backend, "reported", point)
    rows = [
        held_out(SemanticCache(backend, namespace="untouched"), second, "a namespace with no reports"),
        held_out(SemanticCache(backend, namespace="reported"), second, f"after {reported} reports, refitted"),
    ]
    print(f"{args.set} test split: {len(first)} pairs for reporting, {len(second)} held out "
          f"({embedding.model_id})")
    print(f"operating point of the reporting namespace: verifier score {base:.4f} -> {point.score_threshold:.4f}\n")
    print("| held-out lookups | score threshold | right hits | wrong hits | right rate | wrong rate |")
    print("|---|---|---|---|---|---|")
    for row, threshold in zip(rows, (base, point.score_threshold), strict=True):
        print(f"| {row.point} | {threshold:.4f} | {row.right} | {row.wrong} | {row.right_rate:.1%} | "
              f"{row.wrong_rate:.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
