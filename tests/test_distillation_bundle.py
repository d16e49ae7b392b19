"""End-to-end runs of the distillation bundle with `python -m monai.bundle run` (tiny settings), including a
SIGKILL in the middle of training followed by an exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tinyusfm_monai.distillation.pool import manifest_datalist
from tinyusfm_monai.networks import TinyUSFM, load_pretrained

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "tinyusfm_distillation"
CONFIGS = BUNDLE / "configs"

TINY_TEACHER = {
    "_target_": "tinyusfm_monai.networks.VisionTransformer",
    "img_size": 32,
    "embed_dim": 48,
    "depth": 12,
    "num_heads": 12,
    "qv_bias": True,
    "use_abs_pos_emb": False,
    "use_rel_pos_bias": True,
    "init_values": 0.1,
}


def bundle_cmd(config: str, root: Path, args: dict, *extra: str) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    args_file = root / "args.json"
    args_file.write_text(json.dumps(args))
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(CONFIGS / config),
        "--logging_file",
        str(CONFIGS / "logging.conf"),
        "--bundle_root",
        str(root),
        "--args_file",
        str(args_file),
        *extra,
    ]


def run_bundle(config: str, root: Path, args: dict, *extra: str, timeout: int = 300) -> str:
    proc = subprocess.run(
        bundle_cmd(config, root, args, *extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


TRAIN_ARGS = {
    "image_size": 32,
    "phantom_pool_size": 8,
    "batch_size": 2,
    "max_epochs": 4,
    "base_lr": 0.05,
    "teacher_def": TINY_TEACHER,
}


def _final_state(root: Path) -> dict:
    return torch.load(root / "models" / "last.pt", weights_only=True)


@pytest.mark.slow
def test_train_kill_and_exact_resume(tmp_path):
    # reference: one uninterrupted run
    ref = tmp_path / "ref"
    log = run_bundle("train.json", ref, TRAIN_ARGS)
    assert "NO TEACHER WEIGHTS GIVEN" in log  # said loudly
    exported = ref / "models" / "model.pt"
    student = TinyUSFM(img_size=32)
    report = load_pretrained(student, exported)  # official layout, strict
    assert len(report.loaded) == len(student.state_dict()) and not report.skipped

    # interrupted run: SIGKILL as soon as the first epoch's checkpoint is complete (written atomically)
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        bundle_cmd("train.json", run, TRAIN_ARGS),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    first = run / "models" / "last.pt"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if first.is_file():
                try:
                    torch.load(first, weights_only=True)
                    break
                except Exception:  # still being written
                    pass
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run / "models" / "model.pt").exists(), "the kill came too late: training had completed"

    log = run_bundle("train.json", run, TRAIN_ARGS)
    assert "resumed from" in log and "last.pt at epoch 1 of 4" in log

    a, b = _final_state(ref), _final_state(run)
    for key in a["distiller"]:
        assert torch.equal(a["distiller"][key], b["distiller"][key]), key
    assert a["lr_scheduler"] == b["lr_scheduler"]
    sa, sb = a["training_state"], b["training_state"]
    assert sa["engine"] == sb["engine"] and torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ref_student = torch.load(exported, weights_only=True)
    run_student = torch.load(run / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(ref_student[k], run_student[k]) for k in ref_student)


@pytest.mark.slow
def test_coreset_then_train_on_coreset(tmp_path):
    root = tmp_path / "b"
    args = {
        "image_size": 32,
        "phantom_pool_size": 16,
        "teacher_def": TINY_TEACHER,
        "coreset#budget": 0.25,
        "coreset#shard_size": 6,
        "coreset#proxy_epochs": 2,
        "coreset#num_clusters": 3,
    }
    log = run_bundle("coreset.json", root, args)
    out = root / "eval" / "coreset"
    datalist = json.loads((out / "coreset_datalist.json").read_text())
    assert datalist["strategy"] == "dual" and len(datalist["training"]) == 4
    assert len((out / "scores.csv").read_text().splitlines()) == 17
    assert (out / "score_distributions.png").stat().st_size > 0
    assert "features: rank 0/1 computed 16" in log
    # crash-safe resume: a second run reuses every feature shard and gradient record
    log = run_bundle("coreset.json", root, args, "--coreset#strategy", "random")
    assert json.loads((out / "coreset_datalist.json").read_text())["strategy"] == "random"
    # the coreset datalist is what train.json consumes
    items = manifest_datalist(root / "eval" / "pool_manifest.json", out / "coreset_datalist.json")
    assert len(items) == 4 and {"image", "frame"} <= set(items[0])
    run_bundle(
        "train.json",
        root,
        {**TRAIN_ARGS, "phantom_pool_size": 16, "max_epochs": 1},
        "--coreset_datalist",
        str(out / "coreset_datalist.json"),
    )
    assert (root / "models" / "model.pt").is_file()


def test_metadata_validates_and_names_the_student():
    from monai.bundle import verify_metadata

    schema = Path(__file__).resolve().parents[1] / "tinyusfm_monai" / "bundle" / "schema" / "meta_schema_20240725.json"
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema))
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert list(fmt["inputs"]) == ["image"] and list(fmt["outputs"]) == ["pred"]
    assert fmt["outputs"]["pred"]["num_channels"] == 192 and meta["version"] in meta["changelog"]
    for name in ("train.json", "coreset.json"):
        cfg = json.loads((CONFIGS / name).read_text())
        assert cfg["bundle_root"]["_target_"] == "tinyusfm_monai.bundle.components.default_bundle_root"
        assert cfg["network_def"]["_target_"] == "tinyusfm_monai.networks.TinyUSFM"
        assert cfg["teacher_def"]["_target_"] == "tinyusfm_monai.networks.USFM"  # the default teacher is USFM
    for path in (
        "LICENSE",
        "large_files.yml",
        "docs/README.md",
        "docs/data_license.txt",
        "configs/logging.conf",
        "configs/multi_gpu_train.json",
    ):
        assert (BUNDLE / path).is_file(), path


@pytest.mark.slow
def test_verify_net_in_out_on_the_student():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "train.json"),
        device="cpu",
    )
