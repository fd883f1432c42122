"""GPTCache and semcache side by side, in one run, on the same vectors: ``benchmarks/vs_gptcache.py``.

Run from the checkout, with GPTCache installed (the ``bench-gptcache`` extra)::

    .venv/bin/pip install -e '.[bench-gptcache]'
    SEMCACHE_DATA=../shared/data .venv/bin/python benchmarks/vs_gptcache.py

**The sets.**  GPTCache's mock data (``$SEMCACHE_DATA/gptcache_mock_data.json``,
999 paraphrase pairs) and the LLM-style pairs
(``datasets/llm_pairs/llm_pairs.jsonl``, duplicates and near-miss
non-duplicates).  semcache's verifier was trained on the *train* splits of both
(a hash split of the mock data, a split by group of the LLM pairs), so only the
*test* splits are reported.  Each set is read as a cache the data README's way:
every first text is stored, its answer the ids of the pairs that have it; every
second text is looked up; a hit returning the pair's own id on a duplicate pair
is a right hit, any other hit a wrong hit, no hit a miss.

**GPTCache** (``gptcache`` from PyPI) is set up as its README does: a
``gptcache.Cache`` over ``get_data_manager(CacheBase("sqlite"),
VectorBase("faiss", dimension=384))`` in a temporary folder,
``SearchDistanceEvaluation`` (its default evaluation) and ``get_prompt``, fed
through its own ``gptcache.adapter.api.put`` / ``get``.  Its embedding function
is semcache's packaged all-MiniLM-L6-v2, so both systems search the same
vectors.  Its ``similarity_threshold`` ``t`` is a fraction of the evaluation's
range, not a cosine: faiss returns the squared L2 distance ``d``, the
evaluation scores ``4 - d`` (range 0..4), and a hit needs ``4 - d >= 4 t``.
For unit vectors ``d = 2 - 2 cos``, so a hit needs ``cos >= 2 t - 1``: its
default ``t = 0.8`` is cosine 0.6; ``t = 0.95`` is cosine 0.9.  One lookup pass
at ``t = 0`` records the served answer and score of every lookup (the
``hit_callback`` of ``get``), the curve over the threshold grid is counted from
it, and real passes at the thresholds the tables show check that curve.

**semcache** runs its real cache (``SemanticCache`` over an in-memory
``SemanticKV``, the verifier deciding) through ``semcache._quality.evaluate``,
counted at its operating points (strict, balanced, loose) and along its
verifier-score curve.  "At matched wrong-hit rates": for each semcache operating
point, the GPTCache threshold with the most right hits at no more wrong hits;
and for GPTCache's default threshold, the semcache score threshold that does
the same.

**Latency**: the test split's lookups, interleaved round by round (the order of
the contenders rotates): the bare model call, semcache's ``lookup``, GPTCache's
``get`` with its default ``Config`` (it writes a report row per hit) and with
``disable_report=True``; every call embeds (the model memo is off).
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from semcache._cache.cache import SemanticCache, normalize_prompt  # noqa: E402
from semcache._cli.latency import Summary, Timer, Timing, bare_embed  # noqa: E402
from semcache._engine.kv import SemanticKV  # noqa: E402
from semcache._quality.evaluate import Count, Evaluation, evaluate, run  # noqa: E402
from semcache._quality.pairs import Pair, load_gptcache, load_llm  # noqa: E402
from semcache.embeddings import BaseEmbedding, SentenceTransformerEmbedding  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "benchmarks" / "vs-gptcache-output.txt"
SETS = {"gptcache": "GPTCache mock data", "llm": "LLM-style pairs"}
# GPTCache's similarity_threshold grid: 0.700..1.000 by 0.001 (cosine 0.400..1.000 by 0.002). Fine, since the
# curve is counted from one pass: a coarse grid would hide GPTCache's best threshold near cosine 0.97.
GRID = tuple(round(0.700 + 0.001 * step, 3) for step in range(301))
GPTCACHE_DEFAULT = 0.8  # gptcache.Config's similarity_threshold
# GPTCache's own table on the whole mock file (its README; sqlite + faiss, ONNX albert embedding):
# threshold -> (right, wrong, misses) of 999.
PUBLISHED = {0.95: (425, 25, 549), 0.9: (804, 77, 118), 0.8: (904, 92, 3)}
EXTRA_HINT = ("GPTCache is not installed: pip install 'semcache-llm[bench-gptcache]' "
              "(in a checkout: .venv/bin/pip install -e '.[bench-gptcache]')")
NEEDED = {"gptcache": "gptcache", "faiss": "faiss-cpu", "sqlalchemy": "sqlalchemy"}


# ------------------------------------------------------------------ reading a set as a cache
def read_set(name: str, data_dir: Path, llm_path: Path, split: str | None = "test") -> tuple[Pair, ...]:
    """The pairs of set ``name`` (``"gptcache"`` or ``"llm"``) in ``split`` (None: the whole file)."""
    pairs = load_gptcache(data_dir / "gptcache_mock_data.json") if name == "gptcache" else load_llm(llm_path)
    return pairs if split is None else tuple(pair for pair in pairs if pair.split == split)


def cache_entries(pairs: Sequence[Pair]) -> list[tuple[str, list[str]]]:
    """What a cache stores for ``pairs``: each distinct first text once, its answer the ids of its pairs.

    Texts are told apart as semcache's exact path does (:func:`normalize_prompt`) and the spelling kept
    is the last one, as :func:`semcache._quality.evaluate.run` stores them, so both systems hold the
    same entries.
    """
    ids: dict[str, list[str]] = {}
    spelling: dict[str, str] = {}
    for pair in pairs:
        key = normalize_prompt(pair.first)
        ids.setdefault(key, []).append(pair.id)
        spelling[key] = pair.first
    return [(spelling[key], pair_ids) for key, pair_ids in ids.items()]


def encode_answer(ids: Sequence[str]) -> str:
    """A stored answer: the pair ids as JSON text (GPTCache keeps answers as strings)."""
    return json.dumps(list(ids))


def decode_answer(answer: Any) -> list[str] | None:
    """The pair ids of a served answer (None: a miss)."""
    return None if answer is None else list(json.loads(answer))


def outcome(pair: Pair, served: Sequence[str] | None) -> str:
    """``"right"``, ``"wrong"`` or ``"miss"``: the data README's reading of one lookup."""
    if served is None:
        return "miss"
    return "right" if pair.positive and pair.id in served else "wrong"


def tally(point: str, pairs: Sequence[Pair], served: Sequence[Sequence[str] | None]) -> Count:
    """The right and wrong hits of ``pairs`` whose lookups served ``served`` (in the same order)."""
    outcomes = [outcome(pair, ids) for pair, ids in zip(pairs, served, strict=True)]
    return Count(point, len(pairs), sum(pair.positive for pair in pairs), outcomes.count("right"),
                 outcomes.count("wrong"))


# ------------------------------------------------------------------ GPTCache's threshold and the curve
def cosine_of(threshold: float) -> float:
    """The cosine a GPTCache ``similarity_threshold`` needs with ``SearchDistanceEvaluation`` and unit vectors."""
    return 2 * threshold - 1


def gptcache_point(threshold: float) -> str:
    return f"threshold {threshold:.3f} (cosine >= {cosine_of(threshold):.3f})"


@dataclass(frozen=True)
class Served:
    """One GPTCache lookup at threshold 0: the nearest entry's answer and its score (0..1), or a miss."""

    ids: list[str] | None
    score: float


def curve_from(pairs: Sequence[Pair], served: Sequence[Served], grid: Sequence[float]) -> list[Count]:
    """GPTCache's counts at each threshold of ``grid``: a lookup hits at ``t`` when its score reaches ``t``."""
    return [tally(gptcache_point(t), pairs, [s.ids if s.ids is not None and s.score >= t else None for s in served])
            for t in grid]


def best_within(curve: Sequence[Count], wrong: int) -> Count | None:
    """The point of ``curve`` with the most right hits at no more than ``wrong`` wrong hits.

    Ties go to fewer wrong hits, then to the later point (the curves run from lenient to strict, so
    the strictest setting that does as well is shown).
    """
    within = [(point.right, -point.wrong, order, point) for order, point in enumerate(curve) if point.wrong <= wrong]
    return max(within, key=lambda item: item[:3])[3] if within else None


THRESHOLD_OF = {gptcache_point(t): t for t in GRID}  # a GPTCache curve point's label -> its threshold


@dataclass(frozen=True)
class Row:
    """One line of the quality table."""

    set_name: str
    system: str
    setting: str
    count: Count | None  # None: no point of the other system's curve keeps to the wrong-hit count

    def markdown(self) -> str:
        if self.count is None:
            return f"| {self.set_name} | {self.system} | {self.setting} | - | - | - | - | - |"
        c = self.count
        return (f"| {self.set_name} | {self.system} | {self.setting} | {c.right} | {c.wrong} | {c.misses} | "
                f"{c.right_rate:.1%} | {c.wrong_rate:.2%} |")


def matched_rows(set_name: str, semcache: Evaluation, gptcache: Sequence[Count]) -> list[Row]:
    """Each semcache operating point beside the GPTCache threshold that matches its wrong hits, then
    GPTCache's default threshold beside the semcache score threshold that matches it."""
    rows = []
    for point in semcache.points:
        rows.append(Row(set_name, "semcache", point.point, point))
        best = best_within(gptcache, point.wrong)
        setting = f"{best.point if best else 'no threshold'}, matched to {point.point.split()[0]}"
        rows.append(Row(set_name, "GPTCache", setting, best))
    default = next(c for c in gptcache if c.point == gptcache_point(GPTCACHE_DEFAULT))
    rows.append(Row(set_name, "GPTCache", f"{default.point}, its default", default))
    best = best_within(semcache.verifier, default.wrong)
    rows.append(Row(set_name, "semcache", f"verifier {best.point if best else 'no score'}, matched to GPTCache's "
                                          "default", best))
    return rows


QUALITY_HEADER = ("| set | system | setting | right | wrong | miss | right % | wrong % |\n"
                  "|---|---|---|---|---|---|---|---|")


def shown_thresholds(rows: Sequence[Row]) -> list[float]:
    """The GPTCache thresholds a table shows (each checked by a real pass)."""
    return sorted({THRESHOLD_OF[row.count.point] for row in rows if row.system == "GPTCache" and row.count})


def balanced_match(semcache: Evaluation, gptcache: Sequence[Count]) -> float:
    """The GPTCache threshold matched to semcache's balanced point (1.0 when none keeps to its wrong hits)."""
    balanced = next(point for point in semcache.points if point.point.startswith("balanced"))
    best = best_within(gptcache, balanced.wrong)
    return THRESHOLD_OF[best.point] if best else 1.0


# ------------------------------------------------------------------ GPTCache itself
def require_gptcache() -> None:
    """Exit with status 2 and the install line when GPTCache or a store it needs is missing.

    GPTCache would otherwise run ``pip install`` by itself (in whatever ``pip`` is first on PATH)
    the first time it lacks faiss or SQLAlchemy.
    """
    missing = [package for module, package in NEEDED.items() if importlib.util.find_spec(module) is None]
    if missing:
        print(f"{EXTRA_HINT}; missing: {', '.join(missing)}", file=sys.stderr)
        raise SystemExit(2)


def scratch_folder() -> Path:
    """A temporary folder removed at exit, after GPTCache's own exit hook has flushed into it."""
    folder = Path(tempfile.mkdtemp(prefix="vs-gptcache-"))
    # atexit runs hooks last-registered first: this one is registered before any gptcache.Cache
    # registers its close(), so the folder is still there when GPTCache writes its faiss index.
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


class GPTCacheStore:
    """One GPTCache: sqlite + faiss in ``folder``, ``SearchDistanceEvaluation``, fed by ``api.put`` / ``get``.

    Its embedding function calls :attr:`embed`, which may be swapped (the latency run fills the store
    with a memoised embedder, then looks up with one that embeds every call).
    """

    def __init__(self, folder: Path, embed: Callable[[str], np.ndarray], *, size: int, dim: int = 384,
                 report: bool = True) -> None:
        from gptcache import Cache, Config
        from gptcache.manager import CacheBase, VectorBase, get_data_manager
        from gptcache.processor.pre import get_prompt
        from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

        folder.mkdir(parents=True, exist_ok=True)
        self.embed = embed
        # max_size: GPTCache evicts (LRU) past 1000 entries by default; every entry of a set must stay.
        data = get_data_manager(CacheBase("sqlite", sql_url=f"sqlite:///{folder / 'sqlite.db'}"),
                                VectorBase("faiss", dimension=dim, index_path=str(folder / "faiss.index")),
                                max_size=max(1000, 2 * size))
        self.cache = Cache()
        self.cache.init(pre_embedding_func=get_prompt, embedding_func=lambda text, **_: self.embed(text),
                        data_manager=data, similarity_evaluation=SearchDistanceEvaluation(),
                        config=Config(disable_report=not report))

    def put(self, prompt: str, answer: str) -> None:
        from gptcache.adapter import api

        api.put(prompt, answer, cache_obj=self.cache)

    def get(self, prompt: str, threshold: float, on_hit: Callable[[Any], None] | None = None) -> Any:
        """GPTCache's answer for ``prompt`` at ``threshold`` (None: a miss)."""
        from gptcache.adapter import api

        self.cache.config.similarity_threshold = threshold
        return api.get(prompt, cache_obj=self.cache, hit_callback=on_hit)

    def lookup_at_zero(self, prompt: str) -> Served:
        """The nearest entry's answer and score: ``get`` at threshold 0 serves it whatever its distance."""
        scores: list[float] = []
        answer = self.get(prompt, 0.0, lambda hits: scores.append(float(hits[0][1])))
        return Served(decode_answer(answer), scores[0] if scores else 0.0)


def fill(store: GPTCacheStore, pairs: Sequence[Pair]) -> None:
    for text, ids in cache_entries(pairs):
        store.put(text, encode_answer(ids))


def gptcache_curve(pairs: Sequence[Pair], embed: Callable[[str], np.ndarray], folder: Path) -> tuple[
        GPTCacheStore, list[Count]]:
    """GPTCache's counts along :data:`GRID` on ``pairs``, and the store (to check points with real passes)."""
    store = GPTCacheStore(folder, embed, size=len(pairs), report=False)
    fill(store, pairs)
    served = [store.lookup_at_zero(pair.second) for pair in pairs]
    return store, curve_from(pairs, served, GRID)


def real_pass(store: GPTCacheStore, pairs: Sequence[Pair], threshold: float) -> Count:
    """GPTCache's counts from real lookups at ``threshold``."""
    served = [decode_answer(store.get(pair.second, threshold)) for pair in pairs]
    return tally(gptcache_point(threshold), pairs, served)


def check_curve(store: GPTCacheStore, pairs: Sequence[Pair], curve: Sequence[Count],
                thresholds: Sequence[float]) -> list[str]:
    """The thresholds whose real pass differs from the curve (an empty list: the curve holds)."""
    by_point = {c.point: c for c in curve}
    differ = []
    for threshold in thresholds:
        real = real_pass(store, pairs, threshold)
        if real != by_point[real.point]:
            differ.append(f"{real.point}: real {real.right}/{real.wrong}, curve "
                          f"{by_point[real.point].right}/{by_point[real.point].wrong}")
    return differ


# ------------------------------------------------------------------ semcache
def semcache_evaluation(name: str, pairs: Sequence[Pair], embedding: BaseEmbedding) -> Evaluation:
    """semcache's real cache on ``pairs`` (its default decision: the verifier), counted along its curves."""
    cache = SemanticCache(SemanticKV(embedding=embedding))
    return evaluate(name, run(pairs, cache), cache)


# ------------------------------------------------------------------ latency
def measure_latency(queries: Sequence[str], contenders: dict[str, Callable[[str], Any]],
                    warmup: int = 3) -> dict[str, Timing]:
    """Each contender on each query, interleaved: one round per query, the order rotating every round."""
    names = list(contenders)
    for query in queries[:warmup]:
        for name in names:
            contenders[name](query)
    timers = {name: Timer() for name in names}
    for step, query in enumerate(queries):
        for name in names[step % len(names):] + names[: step % len(names)]:
            timers[name](lambda name=name, query=query: contenders[name](query))
    return {name: timer.timing() for name, timer in timers.items()}


def latency_contenders(pairs: Sequence[Pair], threshold: float, folder: Path,
                       filler: BaseEmbedding) -> dict[str, Callable[[str], Any]]:
    """The bare model call, semcache's lookup and GPTCache's get (report on and off), each embedding every call.

    The stores are filled with ``filler`` (memoised: the fill is not timed), then switched to an embedder
    with no memo.
    """
    embedding = SentenceTransformerEmbedding(memo_size=0)
    semcache = SemanticCache(SemanticKV(embedding=embedding))
    semcache.store_many([(text, encode_answer(ids)) for text, ids in cache_entries(pairs)])
    stores = {}
    for report in (True, False):
        store = GPTCacheStore(folder / f"report-{report}", lambda text: filler.embed([text])[0], size=len(pairs),
                              report=report)
        fill(store, pairs)
        store.embed = lambda text: embedding.embed([text])[0]
        stores[report] = store
    return {
        "bare embedding (model call)": bare_embed(embedding),
        "semcache lookup": lambda text: semcache.lookup(text),
        "GPTCache get, default Config": lambda text: stores[True].get(text, threshold),
        "GPTCache get, disable_report=True": lambda text: stores[False].get(text, threshold),
    }


def format_latency(set_name: str, timings: dict[str, Timing], threshold: float, load: str = "not taken") -> str:
    """A table of p50/p99 per contender, then semcache / GPTCache ratios."""
    base = timings["bare embedding (model call)"].wall
    lines = [f"Latency on {set_name} (test split, {base.count} lookups each, interleaved; GPTCache at "
             f"{gptcache_point(threshold)}, semcache balanced; load average {load}):", "",
             "| path | p50 ms | p99 ms | CPU p50 ms | p50 / bare embedding |", "|---|---|---|---|---|"]
    for name, timing in timings.items():
        lines.append(f"| {name} | {timing.wall.median * 1e3:.2f} | {timing.wall.p99 * 1e3:.2f} | "
                     f"{timing.cpu.median * 1e3:.2f} | {timing.wall.median / base.median:.2f}x |")
    mine = timings["semcache lookup"].wall
    lines.append("")
    for name in ("GPTCache get, default Config", "GPTCache get, disable_report=True"):
        theirs = timings[name].wall
        lines.append(f"semcache / {name}: p50 {ratio(mine, theirs, 'median')}, p99 {ratio(mine, theirs, 'p99')}")
    return "\n".join(lines)


def ratio(mine: Summary, theirs: Summary, field: str) -> str:
    return f"{getattr(mine, field) / getattr(theirs, field):.2f}x"


# ------------------------------------------------------------------ the run
def versions() -> str:
    """The machine and the library versions, one line."""
    names = ("semcache-llm", "gptcache", "faiss-cpu", "SQLAlchemy", "numpy", "torch", "sentence-transformers")
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return (f"{platform.machine()} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} "
            f"python {platform.python_version()}, " + ", ".join(found) + ", all-MiniLM-L6-v2 (packaged)")


def compare_set(name: str, pairs: Sequence[Pair], folder: Path, *, latency: int) -> tuple[list[Row], str]:
    """The quality rows and the latency table of one set (its test split)."""
    label = SETS[name]
    sweep = SentenceTransformerEmbedding(memo_size=4 * len(pairs) + 16)
    sweep.embed([text for pair in pairs for text in (pair.first, pair.second)])  # fills the memo in batches
    store, curve = gptcache_curve(pairs, lambda text: sweep.embed([text])[0], folder / f"{name}-quality")
    evaluation = semcache_evaluation(label, pairs, SentenceTransformerEmbedding())
    rows = matched_rows(label, evaluation, curve)
    differ = check_curve(store, pairs, curve, shown_thresholds(rows))
    if differ:
        raise RuntimeError(f"GPTCache's real passes differ from the curve: {differ}")
    threshold = balanced_match(evaluation, curve)
    queries = [pair.second for pair in pairs][:latency]
    contenders = latency_contenders(pairs, threshold, folder / f"{name}-latency", sweep)
    before = os.getloadavg()[0]
    timings = measure_latency(queries, contenders)
    return rows, format_latency(label, timings, threshold, f"{before:.1f} before, {os.getloadavg()[0]:.1f} after")


def whole_file(data_dir: Path, folder: Path) -> str:
    """GPTCache alone on the whole mock file at its published thresholds, beside its published figures."""
    pairs = read_set("gptcache", data_dir, Path(), split=None)
    embedding = SentenceTransformerEmbedding(memo_size=4 * len(pairs) + 16)
    embedding.embed([text for pair in pairs for text in (pair.first, pair.second)])
    store = GPTCacheStore(folder / "whole-file", lambda text: embedding.embed([text])[0], size=len(pairs),
                          report=False)
    fill(store, pairs)
    lines = ["GPTCache alone on the whole mock file (999 pairs, all splits; semcache's verifier trained on 60 % "
             "of them, so it is not shown), beside GPTCache's published figures (ONNX albert embedding):", "",
             "| threshold | right | wrong | miss | published right / wrong / miss |", "|---|---|---|---|---|"]
    for threshold, published in PUBLISHED.items():
        c = real_pass(store, pairs, threshold)
        lines.append(f"| {gptcache_point(threshold)} | {c.right} | {c.wrong} | {c.misses} | "
                     f"{' / '.join(map(str, published))} |")
    return "\n".join(lines)


def shown_command(argv: Sequence[str]) -> str:
    """The command line that made a report, less ``--out`` (where it was written is no setting)."""
    shown, skip = [], False
    for arg in argv:
        if skip or arg == "--out" or arg.startswith("--out="):
            skip = arg == "--out"
            continue
        shown.append(arg)
    return " ".join(["python benchmarks/vs_gptcache.py", *shown])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = os.environ.get("SEMCACHE_DATA") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=Path(data), help="folder of gptcache_mock_data.json "
                        "(default: $SEMCACHE_DATA, else ../shared/data beside the checkout)")
    parser.add_argument("--llm-pairs", type=Path, default=Path(os.environ.get(
        "SEMCACHE_LLM_PAIRS", REPO / "datasets" / "llm_pairs" / "llm_pairs.jsonl")))
    parser.add_argument("--limit", type=int, default=None, help="use the first N test pairs of each set")
    parser.add_argument("--latency", type=int, default=300, help="timed lookups per set (default 300)")
    parser.add_argument("--whole-file", action="store_true", help="also GPTCache alone on the whole mock file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where the output goes too ({DEFAULT_OUT})")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    require_gptcache()
    if not (args.data / "gptcache_mock_data.json").is_file() or not args.llm_pairs.is_file():
        print(f"data missing: {args.data}/gptcache_mock_data.json or {args.llm_pairs} (set SEMCACHE_DATA "
              "or --data, --llm-pairs)", file=sys.stderr)
        return 2
    folder = scratch_folder()
    rows, latencies = [], []
    for name in SETS:
        pairs = read_set(name, args.data, args.llm_pairs)[: args.limit]
        print(f"# {SETS[name]}: {len(pairs)} test pairs ...", file=sys.stderr, flush=True)
        set_rows, latency = compare_set(name, pairs, folder, latency=args.latency)
        rows += set_rows
        latencies.append(latency)
    command = shown_command(sys.argv[1:] if argv is None else argv)
    report = [f"Run: `{command}`", "", f"Machine and versions: {versions()}", "",
              "Right hits, wrong hits and misses on the TEST splits (semcache's verifier was trained on the train "
              "splits of both sets); right % of duplicate pairs, wrong % of lookups:", "", QUALITY_HEADER,
              *(row.markdown() for row in rows), "", *("\n\n".join(latencies).splitlines())]
    if args.whole_file:
        report += ["", whole_file(args.data, folder)]
    text = "\n".join(report) + "\n"
    print(text, end="")
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
