#!/usr/bin/env bash
# Create the RecBole 1.2.1 peer environment in .peer-recbole (repo root, git-ignored).
# Idempotent: when the pinned stack already imports, nothing is installed.
#
# Pins (reasons in README.md next to this file):
#   torch==2.13.0 (CPU wheel), recbole==1.2.1, numpy<2, pandas<2.3, scipy<1.12, setuptools<70
#
# Install order matters. torch 2.13.0 declares `setuptools>=77.0.3`, which contradicts the
# `setuptools<70` that RecBole's ray import needs (pkg_resources). Given both in one resolve, pip
# backtracks torch down to 2.12.1 and pulls the multi-GB CUDA build. So:
#   1. torch==2.13.0 alone;
#   2. recbole + numpy/pandas/scipy pins, with torch held at 2.13.0 by a constraint;
#   3. setuptools<70 with --no-deps (torch does not need setuptools at import time;
#      `pip check` will report that one declared-requirement mismatch, and only that).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${PEER_RECBOLE_VENV:-$REPO_ROOT/.peer-recbole}"
PY="$VENV/bin/python"
PIP="$VENV/bin/pip"
TORCH_PIN="2.13.0"

# Exit 0 only when the whole pinned stack is present and imports.
check() {
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$PY" - <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
def vt(name, n=2):
    return tuple(int(x) for x in version(name).split("+")[0].split(".")[:n])
ok = (
    version("torch").split("+")[0] == "2.13.0"
    and version("recbole") == "1.2.1"
    and vt("numpy", 1) < (2,)
    and vt("scipy") < (1, 12)
    and vt("pandas") < (2, 3)
    and vt("setuptools", 1) < (70,)
)
import pkg_resources  # noqa: F401
import recbole.quick_start  # noqa: F401  (imports ray)
from recbole.model.general_recommender import LightGCN  # noqa: F401
sys.exit(0 if ok else 1)
PY
}

torch_ok() {
    "$PY" -c 'import sys; from importlib.metadata import version; sys.exit(version("torch").split("+")[0] != "'"$TORCH_PIN"'")' 2>/dev/null
}

if [ -x "$PY" ] && check; then
    echo "[setup_recbole] pinned stack already installed in $VENV; nothing to do"
else
    if [ -x "$PY" ] && "$PY" -c 'import torch' 2>/dev/null && ! torch_ok; then
        # A venv holding another torch (e.g. a CUDA build from an unconstrained resolve):
        # start over rather than leave GBs of CUDA wheels behind.
        echo "[setup_recbole] $VENV holds a torch other than $TORCH_PIN; recreating it"
        rm -rf "$VENV"
    fi
    if [ ! -x "$PY" ]; then
        echo "[setup_recbole] creating venv at $VENV"
        python3 -m venv "$VENV"
    fi
    if ! torch_ok; then
        echo "[setup_recbole] installing torch==$TORCH_PIN"
        "$PIP" install "torch==$TORCH_PIN"
    fi
    CONSTRAINTS="$(mktemp)"
    trap 'rm -f "$CONSTRAINTS"' EXIT
    echo "torch==$TORCH_PIN" > "$CONSTRAINTS"
    echo "[setup_recbole] installing recbole==1.2.1 and its pins"
    "$PIP" install -c "$CONSTRAINTS" "recbole==1.2.1" "numpy<2" "pandas<2.3" "scipy<1.12"
    echo "[setup_recbole] installing setuptools<70 (provides pkg_resources for ray)"
    "$PIP" install --no-deps "setuptools<70"
    if ! check; then
        echo "[setup_recbole] ERROR: the pinned stack does not import cleanly:" >&2
        TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$PY" -c 'import recbole.quick_start' || true
        exit 1
    fi
fi

"$PY" - <<'PY'
from importlib.metadata import version
for p in ("torch", "recbole", "numpy", "scipy", "pandas", "setuptools", "ray"):
    print(f"[setup_recbole] {p}=={version(p)}")
PY
