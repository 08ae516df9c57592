#!/usr/bin/env bash
# Create the benchmark environment .venv-bench (repo root) holding tiatoolbox 2.1.3,
# the reference SlideGraph+ graph builder that scripts/bench_graphs.py compares against.
#
# tiatoolbox must never go into the project venv (.venv): it pulls its own torch and a
# newer scikit-learn that break scikit-survival (see DESIGN.md, "Installing on a machine
# with no GPU"). .venv-bench is git-ignored.
#
# Idempotent: rerunning it when tiatoolbox 2.1.3 already imports in .venv-bench does
# nothing. Usage:  bash scripts/setup_bench_env.sh   (PYTHON=python3.11 by default)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO}/.venv-bench"
PYTHON="${PYTHON:-python3.11}"
TIA_VERSION="2.1.3"

installed_version() {
    "${VENV}/bin/python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
import tiatoolbox.tools.graph  # noqa: F401  (fails if a dependency is missing)
print(version("tiatoolbox"))
EOF
}

if [[ -x "${VENV}/bin/python" ]] && [[ "$(installed_version || true)" == "${TIA_VERSION}" ]]; then
    echo "tiatoolbox ${TIA_VERSION} already installed in ${VENV}: nothing to do"
    exit 0
fi

if [[ ! -x "${VENV}/bin/python" ]]; then
    echo "creating ${VENV} with ${PYTHON}"
    "${PYTHON}" -m venv "${VENV}"
fi

"${VENV}/bin/python" -m pip install --upgrade pip
# Plain install from the package index: pip resolves torch/torchvision together (a CUDA
# build, which runs on the CPU too). tiatoolbox's import-time needs beyond its declared
# dependencies, if any, are added below.
"${VENV}/bin/python" -m pip install "tiatoolbox==${TIA_VERSION}"

version="$(installed_version)" || {
    echo "tiatoolbox installed but 'import tiatoolbox.tools.graph' fails:" >&2
    "${VENV}/bin/python" -c "import tiatoolbox.tools.graph" >&2 || true
    exit 1
}
echo "tiatoolbox ${version} ready in ${VENV}"
