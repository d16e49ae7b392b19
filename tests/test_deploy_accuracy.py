"""Reduced precision keeps the predictions of a trained model on a phantom task (the issue's acceptance figures).

A bundle is trained with its real `train.json` on a 64 x 64 phantom of its task (from scratch: no pretrained
weights offline), then `tinyusfm-monai export --format openvino --int8` calibrates on the task's training split and
checks the exported model at f32 and bf16 against eager fp32 on the 200-image test split. The test reads that
report: fp32 logits within 1e-4; INT8 >= 99 % argmax agreement and accuracy within 1 point (Dice within 0.01
for segmentation); bf16 >= 99.5 % agreement. Speed is measured in benchmarks/, not here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinyusfm_monai.data.phantom import generate_task

pytest.importorskip("openvino")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--image_size", "64", "--batch_size", "16", "--num_workers", "0", "--learning_rate", "1e-3"]
TRAIN += ["--layer_decay", "1.0", "--warmup_epochs", "0"]


def _run(cmd: list[str]) -> str:
    proc = subprocess.run([sys.executable, *map(str, cmd)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.timeout(1800)
@pytest.mark.parametrize(("name", "epochs"), [("busi_classification", 12), ("busi_segmentation", 4)])
def test_int8_and_bf16_keep_the_predictions_of_a_trained_model(name, epochs, tmp_path):
    bundle = tmp_path / name
    shutil.copytree(ROOT / "bundles" / name, bundle, ignore=shutil.ignore_patterns("models", "eval", "runs"))
    data = tmp_path / "data"
    generate_task(name, data, n_train=240, n_val=24, n_test=200, image_size=64, seed=3)
    config = bundle / "configs" / "train.json"
    _run(["-m", "monai.bundle", "run", "--config_file", config, "--dataset_dir", data, "--max_epochs", epochs, *TRAIN])
    export = ["-m", "tinyusfm_monai.cli", "export", "--bundle", bundle, "--format", "openvino", "--image_size", "64"]
    _run([*export, "--dataset_dir", data, "--int8", "--calibration_size", "240"])
    _run([*export, "--dataset_dir", data])
    int8 = json.loads((bundle / "models" / "model_int8.export.json").read_text())
    fp32 = json.loads((bundle / "models" / "model.export.json").read_text())
    assert len(int8["calibration"]["images"]) == 240 and int8["accuracy_check"]["images"] == 200
    rows, fp32_rows = int8["accuracy_check"]["rows"], fp32["accuracy_check"]["rows"]
    assert fp32_rows["OpenVINO fp32 @ f32"]["max_abs_logit_diff"] < 1e-4
    assert fp32_rows["OpenVINO fp32 @ f32"]["agreement"] == 1.0
    assert rows["OpenVINO int8 @ f32"]["agreement"] >= 0.99, rows
    if name.endswith("classification"):
        reference = rows["fp32 eager"]["accuracy"]
        assert reference > 0.5, f"the phantom model did not learn (accuracy {reference:.2%}); the check says little"
        assert abs(rows["OpenVINO int8 @ f32"]["delta_points"]) <= 1.0, rows
    else:
        assert rows["fp32 eager"]["dice"] > 0.3, "the phantom model did not learn; the check says little"
        assert abs(rows["OpenVINO int8 @ f32"]["delta_dice"]) <= 0.01, rows
    if "OpenVINO fp32 @ bf16" in fp32_rows:  # CPUs with AVX-512 BF16 / AMX
        assert fp32_rows["OpenVINO fp32 @ bf16"]["agreement"] >= 0.995, fp32_rows
