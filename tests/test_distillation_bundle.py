"""End-to-end runs of the distillation bundle with `python -m monai.bundle run` (tiny settings), including a
SIGKILL in the middle of training followed by an exact resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tinyusfm_monai.distillation.pool import manifest_datalist
from tinyusfm_monai.distillation.standin import small_teacher_def
from tinyusfm_monai.networks import TinyUSFM, VisionTransformer, load_pretrained

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "tinyusfm_distillation"
CONFIGS = BUNDLE / "configs"

TINY_TEACHER = small_teacher_def(32, embed_dim=48, depth=12, num_heads=12)


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


def _kill_after_first_checkpoint(config: str, root: Path, args: dict, checkpoint: Path) -> None:
    """Start the bundle run and SIGKILL it as soon as its first epoch's checkpoint is complete (written atomically)."""
    proc = subprocess.Popen(
        bundle_cmd(config, root, args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if checkpoint.is_file():
                try:
                    torch.load(checkpoint, weights_only=True)
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


def _assert_resumed_mid_run(log: str, checkpoint: str, max_epochs: int) -> None:
    """The restarted run resumed from `checkpoint`, neither from scratch nor after the end. The SIGKILL lands after
    the first complete checkpoint; on a loaded machine a tiny epoch or two more may finish before it does."""
    found = re.search(rf"resumed from \S*{re.escape(checkpoint)} at epoch (\d+) of {max_epochs}", log)
    assert found and 1 <= int(found.group(1)) < max_epochs, log[-2000:]


def _assert_same_state(a: dict, b: dict, model_key: str) -> None:
    for key in a[model_key]:
        assert torch.equal(a[model_key][key], b[model_key][key]), key
    assert a["lr_scheduler"] == b["lr_scheduler"]
    sa, sb = a["training_state"], b["training_state"]
    assert sa["engine"] == sb["engine"] and torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    assert torch.equal(sa["rng"]["generator_0"], sb["rng"]["generator_0"])  # the masks' device generator
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_train_kill_and_exact_resume(tmp_path):
    # reference: one uninterrupted run
    ref = tmp_path / "ref"
    log = run_bundle("train.json", ref, TRAIN_ARGS)
    assert "NO TEACHER WEIGHTS GIVEN" in log  # said loudly
    assert "consistency weights, epoch 4: ESS" in log  # the run reports its own weighting
    exported = ref / "models" / "model.pt"
    student = TinyUSFM(img_size=32)
    report = load_pretrained(student, exported)  # official layout, strict
    assert len(report.loaded) == len(student.state_dict()) and not report.skipped

    run = tmp_path / "killed"
    _kill_after_first_checkpoint("train.json", run, TRAIN_ARGS, run / "models" / "last.pt")
    assert not (run / "models" / "model.pt").exists(), "the kill came too late: training had completed"
    log = run_bundle("train.json", run, TRAIN_ARGS)
    _assert_resumed_mid_run(log, "/last.pt", 4)

    _assert_same_state(_final_state(ref), _final_state(run), "distiller")
    ref_student = torch.load(exported, weights_only=True)
    run_student = torch.load(run / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(ref_student[k], run_student[k]) for k in ref_student)


PRETRAIN_ARGS = {
    "image_size": 32,
    "phantom_pool_size": 12,
    "batch_size": 4,
    "max_epochs": 3,
    "teacher_def": {**TINY_TEACHER, "depth": 4},
}


@pytest.mark.slow
def test_pretrain_kill_resume_and_export_used_as_teacher(tmp_path):
    """pretrain.json: killed after its first epoch and restarted, it ends bit-identical to an uninterrupted run
    (model, optimiser, schedule, every RNG including the masks' generator); the exported encoder is read by
    `load_pretrained` and is what `--teacher_weights` of coreset.json and train.json load."""
    ref = tmp_path / "ref"
    run_bundle("pretrain.json", ref, PRETRAIN_ARGS)
    run = tmp_path / "killed"
    _kill_after_first_checkpoint("pretrain.json", run, PRETRAIN_ARGS, run / "models" / "pretrain_last.pt")
    assert not (run / "models" / "teacher_pretrained.pth").exists(), "the kill came too late"
    log = run_bundle("pretrain.json", run, PRETRAIN_ARGS)
    _assert_resumed_mid_run(log, "/pretrain_last.pt", 3)
    a = torch.load(ref / "models" / "pretrain_last.pt", weights_only=True)
    b = torch.load(run / "models" / "pretrain_last.pt", weights_only=True)
    _assert_same_state(a, b, "model")
    exported = ref / "models" / "teacher_pretrained.pth"
    teacher = VisionTransformer(**{k: v for k, v in PRETRAIN_ARGS["teacher_def"].items() if k != "_target_"})
    report = load_pretrained(teacher, exported)
    assert len(report.loaded) == len(teacher.state_dict()) and not report.skipped
    assert torch.equal(teacher.blocks[0].attn.q_bias, a["model"]["encoder.blocks.0.attn.q_bias"])
    args = {**PRETRAIN_ARGS, "coreset#budget": 0.5, "coreset#quality#inits": 1, "coreset#quality#epochs": 2}
    log = run_bundle("coreset.json", ref, args, "--teacher_weights", str(exported))
    assert "teacher weights" in log and "NO TEACHER WEIGHTS" not in log


@pytest.mark.slow
def test_coreset_then_train_on_coreset(tmp_path):
    root = tmp_path / "b"
    args = {
        "image_size": 32,
        "phantom_pool_size": 48,
        "phantom_junk": True,
        "teacher_def": TINY_TEACHER,
        "coreset#budget": 0.25,
        "coreset#shard_size": 20,
        "coreset#block_size": 24,
        "coreset#quality#epochs": 2,
        "coreset#quality#inits": 2,
    }
    log = run_bundle("coreset.json", root, args)
    out = root / "eval" / "coreset"
    datalist = json.loads((out / "coreset_datalist.json").read_text())
    assert datalist["strategy"] == "composite" and len(datalist["training"]) == 12
    assert len((out / "scores.csv").read_text().splitlines()) == 49
    assert (out / "score_distributions.png").stat().st_size > 0
    assert "features: rank 0/1 computed 48" in log
    assert "near-duplicates:" in log and "effective budget:" in log  # printed by every run
    assert "coreset diagnostics (evaluation only" in log and "frozen runs and bursts" in log  # junk pool: truth
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    assert diagnostics["size"] == 12
    # the ground truth is read only by the diagnostics: without it, and from EMPTY caches (decoded images,
    # features, signatures, quality scores, duplicate groups: any of them could carry a leak), the selection is the
    # same (tests/test_distillation_leak.py shows this check catches a planted truth-dependent step)
    truth = next((root / "eval" / "phantom_pool").glob("pool-*/ground_truth.json"))
    truth.rename(truth.with_suffix(".hidden"))
    visible_run = root / "eval" / "visible_run"
    visible_run.mkdir()
    for cache in ("coreset", "pool_images"):
        (root / "eval" / cache).rename(visible_run / cache)
    log = run_bundle("coreset.json", root, args)
    assert "reusing" not in log and "features: rank 0/1 computed 48, reused 0" in log
    assert "coreset diagnostics" not in log
    assert json.loads((out / "coreset_datalist.json").read_text())["training"] == datalist["training"]
    truth.with_suffix(".hidden").rename(truth)
    # crash-safe resume: a second run reuses every feature shard
    log = run_bundle("coreset.json", root, args, "--coreset#strategy", "random")
    assert json.loads((out / "coreset_datalist.json").read_text())["strategy"] == "random"
    # the coreset datalist is what train.json consumes
    items = manifest_datalist(root / "eval" / "pool_manifest.json", out / "coreset_datalist.json")
    assert len(items) == 12 and {"image", "frame"} <= set(items[0])
    log = run_bundle(
        "train.json",
        root,
        {**TRAIN_ARGS, "phantom_pool_size": 48, "phantom_junk": True, "max_epochs": 1},
        "--coreset_datalist",
        str(out / "coreset_datalist.json"),
    )
    assert (root / "models" / "model.pt").is_file()
    assert "mean weight by type (ground truth, evaluation only)" in log and "junk AUROC of low weight" in log


def test_metadata_validates_and_names_the_student():
    from monai.bundle import verify_metadata

    schema = Path(__file__).resolve().parents[1] / "tinyusfm_monai" / "bundle" / "schema" / "meta_schema_20240725.json"
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema))
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert list(fmt["inputs"]) == ["image"] and list(fmt["outputs"]) == ["pred"]
    assert fmt["outputs"]["pred"]["num_channels"] == 192 and meta["version"] in meta["changelog"]
    for name in ("train.json", "coreset.json", "pretrain.json"):
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
        "configs/pretrain.json",
        "configs/multi_gpu_pretrain.json",
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
