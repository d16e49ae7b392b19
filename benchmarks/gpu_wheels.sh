#!/usr/bin/env bash
# Wheels the GPU machine's image lacks, for benchmarks/gpu_check.sh: it has no network, Python 3.12 and its own
# torch. Run on a machine with network, in the repository root; .whl/ is git-ignored and travels with `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "monai==1.6.1" "pytorch-ignite==0.5.5" "pydicom>=3,<4"
ls -la .whl
