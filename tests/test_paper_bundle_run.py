"""Real `python -m monai.bundle run` of the `paper` preset (classification and binary segmentation) on a tiny
phantom, then the reproduction harness's resume rule on real cells."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinyusfm_monai.bundle.reproduce import reproduce
from tinyusfm_monai.data.phantom import generate_task

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--image_size", "64", "--batch_size", "4", "--num_workers", "0"]
pytestmark = pytest.mark.slow


def _run(configs: list[Path], *args: object) -> str:
    files = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["busi_classification", "ddti_segmentation"])
def test_paper_preset_trains_and_evaluates(name, tmp_path):
    bundle = tmp_path / name
    shutil.copytree(ROOT / "bundles" / name, bundle)
    data = tmp_path / "data"
    generate_task(name, data, n_train=8, n_val=4, n_test=4, image_size=64, seed=1)
    configs = [bundle / "configs" / "train.json", bundle / "configs" / "train_paper.json"]
    log = _run(configs, "--dataset_dir", data, "--max_epochs", 3, *TINY)
    last = torch.load(bundle / "models" / "last.pt", weights_only=True)
    # the paper schedule after 3 epoch-end steps: the LR epoch 3 would train at, 0.8 x 1e-4
    assert last["lr_scheduler"]["last_epoch"] == 3
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(8e-5)
    assert len(last["optimizer"]["param_groups"]) == 1 and last["optimizer"]["param_groups"][0]["weight_decay"] == 0
    seg = name.endswith("segmentation")
    if seg:
        assert "paper_val_loss" in log  # the train-mode validation pass ran
        assert last["model"]["decode_head.conv_seg.weight"].shape[0] == 1  # official binary head
    _run([*configs, bundle / "configs" / "evaluate.json"], "--dataset_dir", data, *TINY)
    metrics = json.loads((bundle / "eval" / "metrics.json").read_text())
    if seg:
        assert 0.0 <= metrics["official"]["Dice"] <= 1.0 and "HD95" in metrics["official"]
        # paper-preset weights through inference.json + inference_paper.json: label PNGs with values {0, 1}
        out = tmp_path / "pred"
        _run(
            [bundle / "configs" / "inference.json", bundle / "configs" / "inference_paper.json"],
            "--dataset_dir", data, "--output_dir", out, "--image_size", 64,
        )  # fmt: skip
        assert len(list(out.rglob("*.png"))) == 4
    else:
        assert 0.0 <= metrics["accuracy"] <= 1.0


def test_reproduce_skips_finished_cells_and_reruns_the_rest(tmp_path):
    kwargs = dict(
        tasks="busi_classification", seeds="1,2", out=str(tmp_path / "r"), bundles=str(ROOT / "bundles"), gpus="cpu",
        max_epochs=1, image_size=64, batch_size=4, num_workers=0, phantom="8,4,4", phantom_size=64,
    )  # fmt: skip
    table = Path(reproduce(**kwargs)).read_text()
    assert "busi_classification" in table and "84.91" in table and "± " in table
    cell1, cell2 = (tmp_path / "r" / "busi_classification" / f"seed{s}" for s in (1, 2))
    runs = lambda cell: (cell / "run.log").read_text().count("$ ")  # noqa: E731
    assert runs(cell1) == runs(cell2) == 2  # train + evaluate
    (cell2 / "result.json").unlink()  # as if killed before the end
    reproduce(**kwargs)
    assert runs(cell1) == 2 and runs(cell2) == 4
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [r["seed"] for r in results] == [1, 2]
