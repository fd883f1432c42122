"""The ``semcache`` command line: ``demo``, ``stats``, ``calibrate`` and ``bench``.

>>> main(["--version"])  # doctest: +ELLIPSIS
semcache ...
0

Progress bars go to stderr, results to stdout, so ``semcache bench > out.md``
keeps only the tables.  The cluster commands are added by
:mod:`semcache._cli.cluster` when it is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semcache._engine.index import IndexSettings
from semcache.embeddings import BaseEmbedding
from semcache.errors import ConfigurationError, SemcacheError


def offline_defaults() -> None:
    """The packaged model loads offline: never let sentence-transformers reach for the hub (set when the CLI runs,
    not when this module is imported, so importing it changes nothing in the caller's process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_model(model: str | None = None, *, memo_size: int | None = None, progress: bool = True) -> Any:
    """The sentence-transformers embedder, with a progress bar while it loads."""
    from semcache.embeddings import DEFAULT_MODEL, SentenceTransformerEmbedding

    kwargs: dict[str, Any] = {} if memo_size is None else {"memo_size": memo_size}
    name = model or DEFAULT_MODEL
    if not progress:
        return SentenceTransformerEmbedding(name, **kwargs)
    from tqdm import tqdm

    with tqdm(total=1, desc=f"loading {name}", bar_format="{desc}: {elapsed}", file=sys.stderr) as bar:
        embedding = SentenceTransformerEmbedding(name, **kwargs)
        bar.update(1)
    return embedding


# --------------------------------------------------------------------- demo
@dataclass(frozen=True)
class DemoQuery:
    text: str
    kind: str  # what the demo expects: "paraphrase", "hard negative", "exact", "unrelated"


DEMO_CACHED = (
    "How do I enable dark mode?",
    "How do I read a file in Python?",
    "What is the capital of Japan?",
    "How many legs does a spider have?",
    "How do I reset my password?",
    "What are the health benefits of green tea?",
    "Is it safe to eat raw eggs?",
    "How do I sort a list in Python in ascending order?",
    "What was the GDP of France in 2019?",
)
DEMO_QUERIES = (
    DemoQuery("How can I enable dark mode?", "paraphrase"),
    DemoQuery("what's the capital of japan", "paraphrase"),
    DemoQuery("how many legs do spiders have", "paraphrase"),
    DemoQuery("What health benefits does green tea have?", "paraphrase"),
    DemoQuery("How do I reset my password?", "exact"),
    DemoQuery("How do I disable dark mode?", "hard negative"),
    DemoQuery("How do I read a file in Rust?", "hard negative"),
    DemoQuery("What is the capital of China?", "hard negative"),
    # Hard negatives the embedding places at 0.95 or more, above any useful cosine threshold.
    DemoQuery("Is it not safe to eat raw eggs?", "hard negative"),
    DemoQuery("How do I sort a list in Python in descending order?", "hard negative"),
    DemoQuery("What was the GDP of France in 2020?", "hard negative"),
    DemoQuery("Recommend a good science fiction novel.", "unrelated"),
)


@dataclass(frozen=True)
class DemoRow:
    """One demo lookup: the nearest cached prompt, its similarity, the verifier's verdict, the result."""

    query: DemoQuery
    nearest: str
    similarity: float
    verdict: str
    outcome: str


def demo_rows(cache: Any, queries: Sequence[DemoQuery] = DEMO_QUERIES) -> list[DemoRow]:
    """Look each query up with :meth:`SemanticCache.explain` and say why it hit or missed."""
    rows = []
    for query in queries:
        seen = cache.explain(query.text)
        verdict = "exact" if seen.exact else "-" if seen.score is None else f"{seen.score:.2f}"
        if seen.hit is not None:
            outcome = "HIT (exact)" if seen.exact else "HIT"
        else:
            outcome = f"miss ({seen.reason})" if seen.reason else "miss"
        rows.append(DemoRow(query, seen.candidate_prompt or "", seen.similarity or 0.0, verdict, outcome))
    return rows


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_demo(rows: Sequence[DemoRow]) -> str:
    head = f"{'query':<44} {'kind':<13} {'nearest cached prompt':<36} {'sim':>5} {'score':>5}  result"
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{_clip(row.query.text, 44):<44} {row.query.kind:<13} {_clip(row.nearest, 36):<36} "
            f"{row.similarity:5.3f} {row.verdict:>5}  {row.outcome}"
        )
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    from semcache._cache.cache import SemanticCache
    from semcache._cli.latency import measure_lookups
    from semcache._engine.kv import SemanticKV

    # memo_size=0: every lookup really embeds, so the latency figures are honest.
    embedding = load_model(args.model, memo_size=0)
    backend = SemanticKV(embedding=embedding, purge_interval=3600)
    with SemanticCache(backend, threshold=args.threshold, max_wrong_rate=args.max_wrong_rate) as cache:
        for prompt in DEMO_CACHED:
            cache.store(prompt, f"(cached answer to: {prompt})")
        print(f"semcache demo: embedded SemanticCache, {embedding.model_id}, {cache.decision.describe()}")
        print(f"cached {len(DEMO_CACHED)} prompts:")
        for prompt in DEMO_CACHED:
            print(f"  - {prompt}")
        print()
        print(format_demo(demo_rows(cache)))
        print(
            "\nsim: the cosine similarity of the nearest cached prompt. score: the verifier's judgement that the"
            "\ncached prompt asks for the same answer (0 to 1); a hit needs the operating point's score. Embeddings"
            "\nplace hard negatives (negation, another number, enable/disable) as close as paraphrases; the"
            "\nverifier tells them apart from the words that differ."
        )
    with SemanticCache(SemanticKV(embedding=embedding, purge_interval=3600)) as timed_cache:
        times = measure_lookups(timed_cache, args.rounds, progress=True)
    base = times.embed.wall.median
    print(f"\nlatency, median of {args.rounds} (p90; CPU time median):")
    for name, timing in (
        ("bare embedding (model call)", times.embed),
        ("semantic hit (embed + search + verifier)", times.semantic),
        ("exact hit (no embedding)", times.exact),
    ):
        print(
            f"  {name:<40} {timing.wall.median * 1000:8.3f} ms ({timing.wall.p90 * 1000:.3f}; "
            f"CPU {timing.cpu.median * 1000:.3f})   {timing.wall.median / base:7.4f}x embedding"
        )
    return 0


# -------------------------------------------------------------------- stats
class StampOnlyEmbedding(BaseEmbedding):
    """Stands in for the embedder when a store is opened only to be inspected: it never embeds.

    It carries the stored model id and dimension, so the store's own check
    (:class:`~semcache.errors.EmbeddingMismatchError`) still applies.
    """

    def __init__(self, model_id: str, dim: int) -> None:
        super().__init__(memo_size=0)
        self.model_id, self.dim = model_id, dim

    def _encode(self, texts: list[str]) -> Any:
        raise ConfigurationError("this store was opened for stats only; it cannot embed")


def stored_stamp(path: Path) -> tuple[str, int] | None:
    """The model id and dimension a persisted store was built with (its ``embedding.json``, else its snapshot)."""
    for stamp in (path / "embedding.json", path / "snapshot" / "state.json"):
        if stamp.is_file():
            data = json.loads(stamp.read_text())
            return str(data["model_id"]), int(data["dim"])
    return None


def _disk_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def cmd_stats(args: argparse.Namespace) -> int:
    from semcache._engine.kv import SemanticKV
    from semcache.embeddings import PACKAGED_MODEL_ID
    from semcache.errors import InvalidInputError

    path = Path(args.path)
    if not ((path / "wal.log").is_file() or (path / "snapshot").is_dir()):
        raise InvalidInputError(f"{path} is not a semcache data directory (no wal.log or snapshot/)")
    model_id, dim = stored_stamp(path) or (PACKAGED_MODEL_ID, 384)
    # No model is needed to count: by default, open with a stand-in carrying the stored stamp.
    embedding = load_model(args.model) if args.model else StampOnlyEmbedding(model_id, dim)
    with SemanticKV(path, embedding=embedding, purge_interval=3600) as kv:
        stats = kv.stats()
    stats["disk_bytes"] = _disk_bytes(path)
    if args.json:
        print(json.dumps(stats, indent=1, sort_keys=True))
        return 0
    rows = [
        ("path", stats["path"]),
        ("model", f"{stats['model_id']} (dim {stats['dim']})"),
        ("entries", f"{stats['entries']:,} ({stats['searchable']:,} searchable)"),
        ("scopes", f"{stats['scopes']:,}"),
        ("index slots", f"{stats['index_slots']:,}"),
        ("value bytes", f"{stats['value_bytes']:,}"),
        ("disk bytes", f"{stats['disk_bytes']:,} (write-ahead log {stats['wal_bytes']:,})"),
        ("commands applied", f"{stats['applied']:,}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


# ------------------------------------------------------------------- repair
def cmd_repair(args: argparse.Namespace) -> int:
    from semcache._engine.repair import repair

    report = repair(Path(args.path), drop_damaged=args.drop_damaged)
    print("\n".join(report.lines()))
    # 0: intact, or repaired; 1: damaged and left as it was (a script can tell).
    return 1 if report.damaged and report.moved_to is None else 0


# ---------------------------------------------------------------- calibrate
def _positive_int(text: str) -> int:
    """An argument that must be an int >= 1 (checked before any model loads)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}")
    return value


def _wrong_rate(text: str) -> float | str:
    """A verifier operating point: a preset name or a rate in (0, 1) (checked before any model loads)."""
    from semcache._cache.decision import PRESETS

    if text in PRESETS:
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(PRESETS)} or a rate in (0, 1), got {text!r}")
    return value


def _threshold(text: str) -> float:
    """A similarity threshold in [0, 1] (checked before any model loads)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def _thresholds(text: str) -> tuple[float, ...]:
    """``0.7:0.98:0.01`` (start:stop:step, inclusive) or ``0.8,0.9,0.95``."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            count = int(round((stop - start) / step)) + 1
            return tuple(round(start + step * n, 4) for n in range(count))
        return tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad thresholds {text!r}: use 0.7:0.98:0.01 or 0.8,0.9") from exc


def cmd_calibrate(args: argparse.Namespace) -> int:
    if args.feedback is not None:
        return refit_from_feedback(args)
    from semcache._quality.calibrate import calibrate, format_report, load_datasets

    datasets = load_datasets(args.data, args.datasets.split(","))
    embedding = load_model(args.model)
    result = calibrate(datasets, embedding, args.thresholds, progress=True)
    print(format_report(result))
    return 0


def refit_from_feedback(args: argparse.Namespace) -> int:
    """``semcache calibrate --feedback DIR``: refit a namespace's operating point from its wrong-hit reports."""
    from semcache._cache import feedback
    from semcache._cache.decision import verifier_decision
    from semcache._engine.kv import SemanticKV

    path = Path(args.feedback)
    embedding = _stored_embedding(path)
    with SemanticKV(path, embedding=embedding, purge_interval=3600) as store:
        reports = feedback.read_reports(store, args.namespace)
        if not reports:
            print(f"namespace {args.namespace!r} of {path} has no wrong-hit reports: nothing to refit")
            return 1
        base = verifier_decision(args.max_wrong_rate or "balanced").score_threshold
        point = feedback.refit(reports, base)
        feedback.write_operating_point(store, args.namespace, point)
    scored = sum(report.score is not None for report in reports)
    print(f"namespace {args.namespace!r}: {len(reports)} wrong-hit reports ({scored} scored by the verifier)")
    print(f"operating point: verifier score {point.previous:.4f} -> {point.score_threshold:.4f} "
          f"(at most {feedback.REFIT_ALLOWED_SHARE:.0%} of the reported pairs would still be served)")
    print("every SemanticCache of this namespace opened on this store now serves from it")
    return 0


def _stored_embedding(path: Path) -> BaseEmbedding:
    """A stand-in carrying a persisted store's stamp (nothing is embedded), or a clear error."""
    stamp = stored_stamp(path)
    if stamp is None:
        from semcache.errors import InvalidInputError

        raise InvalidInputError(f"{path} is not a semcache data directory (no embedding.json)")
    return StampOnlyEmbedding(*stamp)


# --------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from semcache._cache.cache import SemanticCache
    from semcache._quality.evaluate import evaluate, format_table, run, write_json, write_plot
    from semcache._quality.pairs import read_pairs

    pairs = read_pairs(args.pairs, args.format)
    if args.split:
        pairs = tuple(pair for pair in pairs if pair.split == args.split)
    name = args.name or Path(args.pairs).stem
    backend = _eval_backend(args)
    with SemanticCache(backend, threshold=args.threshold, max_wrong_rate=args.max_wrong_rate,
                       namespace="semcache-eval") as cache:
        result = evaluate(name, run(pairs, cache, progress=True), cache)
    print(format_table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(result, args.out / f"{name}.json")
    write_plot(result, args.out / f"{name}.png")
    print(f"\nwrote {args.out / (name + '.json')} and {args.out / (name + '.png')}")
    return 0


def _eval_backend(args: argparse.Namespace) -> Any:
    """The backend ``semcache eval`` runs through: an in-memory store, or a cluster (``--nodes``)."""
    if args.nodes:
        from semcache.cluster import DistributedSemanticKV

        return DistributedSemanticKV(args.nodes.split(","), token=args.token,
                                     embedding=load_model(args.model) if args.model else None)
    from semcache._engine.kv import SemanticKV

    return SemanticKV(embedding=load_model(args.model), purge_interval=3600)


# -------------------------------------------------------------------- bench
def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad sizes {text!r}: use 1000,10000,100000") from exc
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def benchmarks_on_path(checkout: Path | None) -> None:
    """Make the ``benchmarks`` package of a source checkout importable.

    The benchmarks ship with the source, not with the installed package, so
    ``semcache bench`` runs those of the checkout it is asked for (``--checkout``,
    default: the current directory).

    Raises:
        ConfigurationError: that directory holds no ``benchmarks/``.
    """
    root = (checkout or Path.cwd()).resolve()
    if not (root / "benchmarks" / "embedded.py").is_file():
        raise ConfigurationError(
            f"semcache bench runs the benchmarks of a source checkout, and {root} has no benchmarks/: "
            "run it from the checkout or pass --checkout DIR"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def cmd_bench(args: argparse.Namespace) -> int:
    benchmarks_on_path(args.checkout)
    if args.cluster:
        from benchmarks.cluster import run_cluster_bench

        return run_cluster_bench(args)
    from benchmarks.embedded import DEFAULT_SIZES, format_report, run
    from benchmarks.prompts import default_cache_dir

    embedding = load_model(args.model, memo_size=0)
    rounds, queries, durable = (10, 50, 200) if args.quick else (args.rounds, 500, 5_000)
    sizes = args.sizes or DEFAULT_SIZES
    report = run(
        embedding,
        sizes,
        rounds=rounds,
        queries=queries,
        durable_puts=durable,
        ef_search=args.ef_search,
        data_dir=args.data,
        # A quick run embeds a few hundred texts: not worth a cache file.
        cache_dir=None if args.quick else default_cache_dir(),
        progress=True,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(format_report(report))
    return 0


# --------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from semcache import __version__
    from semcache._cache.cache import DEFAULT_THRESHOLD
    from semcache._quality.calibrate import DATA_FILES, DEFAULT_THRESHOLDS
    from semcache._quality.pairs import FORMATS as PAIR_FORMATS

    parser = argparse.ArgumentParser(prog="semcache", description="A semantic cache for LLM calls.")
    parser.add_argument("--version", action="version", version=f"semcache {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="paraphrases hit, hard negatives miss, with latencies (real MiniLM)")
    decide = demo.add_mutually_exclusive_group()
    decide.add_argument("--max-wrong-rate", type=_wrong_rate, default=None,
                        help="the verifier's operating point: a rate such as 0.01, or strict, balanced, loose "
                             "(default: balanced, <= 1%% wrong hits)")
    decide.add_argument("--threshold", type=_threshold, default=None,
                        help=f"decide by a cosine threshold and the hit guard instead (e.g. {DEFAULT_THRESHOLD})")
    demo.add_argument("--rounds", type=_positive_int, default=60, help="timed lookups per latency figure")
    demo.add_argument("--model", help="sentence-transformers model (default: packaged all-MiniLM-L6-v2)")
    demo.set_defaults(handler=cmd_demo)

    stats = commands.add_parser("stats", help="entries, scopes, model and sizes of a persisted store")
    stats.add_argument("--path", required=True, help="the store's data directory")
    stats.add_argument("--model", help="open with this model (default: none is loaded)")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(handler=cmd_stats)

    fix = commands.add_parser("repair", help="check a persisted store; with --drop-damaged, salvage what is intact")
    fix.add_argument("--path", required=True, help="the store's data directory")
    fix.add_argument("--drop-damaged", action="store_true",
                     help="rebuild the store from its intact parts (the damaged files are moved aside, not deleted)")
    fix.set_defaults(handler=cmd_repair)

    cal = commands.add_parser("calibrate", help="right/wrong hit rates per threshold on labelled pairs")
    cal.add_argument("--data", type=Path, default=None, help="folder of the datasets (default: $SEMCACHE_DATA)")
    cal.add_argument("--datasets", default=",".join(DATA_FILES), help=f"comma-separated: {', '.join(DATA_FILES)}")
    cal.add_argument(
        "--thresholds", type=_thresholds, default=DEFAULT_THRESHOLDS, help="start:stop:step or a list (0.7:0.98:0.01)"
    )
    cal.add_argument("--model", help="sentence-transformers model (default: packaged all-MiniLM-L6-v2)")
    cal.add_argument("--feedback", type=Path, default=None, metavar="DIR",
                     help="refit a namespace's operating point from the wrong-hit reports in this store")
    cal.add_argument("--namespace", default="semcache", help="the namespace to refit (with --feedback)")
    cal.add_argument("--max-wrong-rate", type=_wrong_rate, default=None,
                     help="the operating point to refit from (with --feedback; default: balanced)")
    cal.set_defaults(handler=cmd_calibrate)

    ev = commands.add_parser("eval", help="run your labelled pairs through the cache: right/wrong hits, JSON, plot")
    ev.add_argument("--pairs", type=Path, required=True,
                    help="labelled pairs: GPTCache JSON, QQP-style CSV, PAWS or MRPC TSV, or JSONL")
    ev.add_argument("--format", default="auto", choices=("auto", *PAIR_FORMATS), help="the file's format")
    ev.add_argument("--split", default=None, help="only the pairs of this split (a JSONL 'split' field)")
    ev.add_argument("--name", default=None, help="the name in the table and the output files (default: the file's)")
    ev.add_argument("--out", type=Path, default=Path("semcache-eval"), help="folder for the JSON and the plot")
    ev.add_argument("--nodes", default=None, help="run through a cluster: comma-separated grpc:// addresses")
    ev.add_argument("--token", default=None, help="the cluster's data token (with --nodes)")
    decide = ev.add_mutually_exclusive_group()
    decide.add_argument("--max-wrong-rate", type=_wrong_rate, default=None,
                        help="the verifier's operating point (default: balanced)")
    decide.add_argument("--threshold", type=_threshold, default=None, help="decide by a cosine threshold instead")
    ev.add_argument("--model", help="sentence-transformers model (default: packaged all-MiniLM-L6-v2)")
    ev.set_defaults(handler=cmd_eval)

    bench = commands.add_parser("bench", help="latency, throughput and memory figures (tables)")
    target = bench.add_mutually_exclusive_group()
    target.add_argument("--embedded", action="store_true", help="benchmark the embedded store (the default)")
    target.add_argument("--cluster", action="store_true", help="benchmark a local 2x3 cluster of node processes")
    bench.add_argument("--sizes", type=_sizes, default=None, help="index sizes (embedded: 1000,10000,100000)")
    bench.add_argument("--ops", type=_positive_int, default=None, help="operations per cluster figure")
    bench.add_argument("--ef-search", type=_positive_int, default=IndexSettings().ef_search,
                       help=f"query-time HNSW ef of the search store ({IndexSettings().ef_search})")
    bench.add_argument("--rounds", type=_positive_int, default=300, help="timed lookups per latency figure")
    bench.add_argument("--quick", action="store_true", help="few rounds: a smoke run, not a measurement")
    bench.add_argument(
        "--data", type=Path, default=None, help="labelled data for the real-prompt search (default: $SEMCACHE_DATA)"
    )
    bench.add_argument("--model", help="sentence-transformers model (default: packaged all-MiniLM-L6-v2)")
    bench.add_argument("--checkout", type=Path, default=None,
                       help="the source checkout whose benchmarks/ to run (default: the current directory)")
    bench.set_defaults(handler=cmd_bench)

    from semcache._cli.serve import add_serve_command

    add_serve_command(commands)
    try:
        from semcache._cli.cluster import add_cluster_commands
    except ImportError:
        pass  # the cluster commands are optional
    else:
        add_cluster_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for usage errors, 1 for semcache errors)."""
    offline_defaults()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return int(exc.code or 0)
    # Cluster commands (semcache._cli.cluster) name their handler ``func``.
    handler = getattr(args, "handler", None) or getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except SemcacheError as exc:
        print(f"semcache: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
