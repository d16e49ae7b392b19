#!/usr/bin/env bash
# Creates the separate MONAI Label environment (default: <repo>/.venv-monailabel).
#
# Why a separate venv: monailabel 0.8.5 pins numpy<2 and jsonschema<4 (through pydicom-seg) and pulls
# sam2, itk, mlflow, openslide, ...; the project's own .venv stays on numpy 2.
# Why the order below:
#   * torch==2.13.0 is installed first: on these machines it resolves to the local CPU wheel, and every
#     later step sees it as satisfied instead of pulling several GB of CUDA packages.
#   * sam2 (a monailabel requirement on Python >= 3.10) is only an sdist whose build imports torch, so
#     it is built with --no-build-isolation against the torch above, with SAM2_BUILD_CUDA=0 (no CUDA
#     extension). Our app never enables SAM2 (--conf sam2 false), it just has to install.
#   * numpy<2 and setuptools/wheel are pre-installed for the same --no-build-isolation builds.
# monailabel itself is installed unmodified from PyPI. Idempotent: re-running with an up-to-date stamp is a no-op.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${MONAILABEL_VENV:-$REPO/.venv-monailabel}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.installed"
MONAILABEL_VERSION="0.8.5"

if [ -f "$STAMP" ] && [ "$STAMP" -nt "$REPO/pyproject.toml" ] && [ "$STAMP" -nt "${BASH_SOURCE[0]}" ]; then
  echo "monailabel env up to date: $VENV"
  exit 0
fi

"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q "setuptools>=68" wheel "numpy<2" "torch==2.13.0"
SAM2_BUILD_CUDA=0 "${PIP[@]}" install -q --no-build-isolation \
  "monailabel==$MONAILABEL_VERSION" "monai==1.6.1" "torch==2.13.0" "numpy<2"
# Our package (editable, with the OpenVINO backend the app serves with `--conf backend openvino`) into the same
# env; the pins keep pip from touching torch or numpy.
"${PIP[@]}" install -q --no-build-isolation -e "$REPO[openvino]" "torch==2.13.0" "numpy<2" "monailabel==$MONAILABEL_VERSION"
"$VENV/bin/python" -c "import monailabel, tinyusfm_monai, numpy, torch, openvino; print('monailabel', monailabel.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__, 'openvino', openvino.__version__)"
touch "$STAMP"
echo "monailabel env ready: $VENV"
