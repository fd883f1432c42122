"""Where the training data lives and where the trained verifier goes (these scripts run in the source checkout).

The public pair sets are read from the folder named by ``SEMCACHE_DATA``; by
default the nearest ``shared/data`` folder above the checkout, as the project
keeps it.  The LLM-style pairs are ``datasets/llm_pairs/llm_pairs.jsonl``
(``SEMCACHE_LLM_PAIRS``).  Importing this module also puts the checkout first on
``sys.path``, so the scripts train and evaluate the checkout's ``semcache``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("SEMCACHE_VERIFIER_CACHE", HERE / "cache"))  # encodings (not committed)
SHIPPED = REPO / "semcache" / "_cache" / "verifier" / "verifier.npz"
CALIBRATION = HERE / "calibration.json"


def _shared_data() -> Path:
    """The first ``shared/data`` folder found walking up from the checkout (the checkout's parent's if none)."""
    for folder in REPO.parents:
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data"
    return REPO.parent / "shared" / "data"


if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("SEMCACHE_DATA", str(_shared_data()))
os.environ.setdefault("SEMCACHE_LLM_PAIRS", str(REPO / "datasets" / "llm_pairs" / "llm_pairs.jsonl"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
