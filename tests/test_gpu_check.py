"""benchmarks/gpu_check.sh on its CPU path (tiny sizes): the script a GPU session runs once, with minutes of device
time, must not meet its first bug there. Runs every check (distillation iteration, the real bundle, coreset stages,
task bundles and both multi_gpu_train.json configs under torchrun) and reads the summary table."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_gpu_check_cpu_path(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "PYTHON": sys.executable, "OUT": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    table = proc.stdout[proc.stdout.index("## GPU check summary") :]
    for row in (
        "| full (batch 4, cpu",
        "`monai.bundle run train.json`",
        "| coreset features (2,048 rows)",
        "projected (linear in N",
        "| busi_segmentation-multi_gpu | ok",
        "| distillation-multi_gpu | ok",
    ):
        assert row in table, table
