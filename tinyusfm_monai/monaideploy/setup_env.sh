#!/usr/bin/env bash
# Creates the MONAI Deploy App SDK environment (default: <repo>/.venv-monaideploy) where the app runs.
#
# Why a separate venv: monai-deploy-app-sdk 4.x brings Holoscan (holoscan-cu13, ~570 MB with cupy and the CUDA
# runtime wheels) that the project itself never needs. Holoscan runs on CPU-only machines: without a CUDA driver
# it logs "Initializing CudaObjectHandler with support for CPU data only" and schedules operators normally.
# torch==2.13.0 is installed first so that pip takes the local CPU wheel instead of pulling CUDA packages.
# Idempotent: re-running with an up-to-date stamp is a no-op.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${MONAIDEPLOY_VENV:-$REPO/.venv-monaideploy}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.installed"
SDK_VERSION="$(sed -n 's/^SDK_VERSION = "\(.*\)"/\1/p' "$REPO/tinyusfm_monai/monaideploy/app_info.py")"

if [ -f "$STAMP" ] && [ "$STAMP" -nt "$REPO/pyproject.toml" ] && [ "$STAMP" -nt "${BASH_SOURCE[0]}" ]; then
  echo "monai-deploy env up to date: $VENV"
  exit 0
fi

"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q "torch==2.13.0"
"${PIP[@]}" install -q "monai-deploy-app-sdk==$SDK_VERSION" "torch==2.13.0"
"${PIP[@]}" install -q -e "$REPO[openvino]" "torch==2.13.0" "monai-deploy-app-sdk==$SDK_VERSION"
"$VENV/bin/python" -c "import monai.deploy, holoscan, tinyusfm_monai, monai, torch; print('monai-deploy-app-sdk', monai.deploy.__version__, 'holoscan', holoscan.__version__, 'monai', monai.__version__, 'torch', torch.__version__)"
touch "$STAMP"
echo "monai-deploy env ready: $VENV"
