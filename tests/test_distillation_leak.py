"""The coreset never reads the phantom pool's ground truth: a run with `ground_truth.json` hidden, from EMPTY
caches (decoded images, features, signatures, quality scores, duplicate groups), selects exactly what a run with
the truth visible selects. A planted truth-dependent quality step shows that this check can fail, and that the old
check (the hidden-truth run reusing the caches of the visible one) could not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tinyusfm_monai.data.phantom import generate_pool
from tinyusfm_monai.data.phantom_junk import GROUND_TRUTH
from tinyusfm_monai.distillation import coreset as cs
from tinyusfm_monai.distillation.pool import build_manifest
from tinyusfm_monai.distillation.shards import ensure_pool_images
from tinyusfm_monai.networks import VisionTransformer

torch.set_num_threads(1)

SETTINGS = {"budget": 0.25, "shard_size": 40, "block_size": 40, "quality": {"inits": 1, "epochs": 2}}


def _teacher() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        img_size=32, embed_dim=48, depth=2, num_heads=4, qv_bias=True, use_abs_pos_emb=False, use_rel_pos_bias=True,
        init_values=0.1,
    ).eval()  # fmt: skip


def _pool(tmp_path: Path) -> tuple[Path, Path]:
    datalist = generate_pool(tmp_path / "pool", n=80, image_size=32, seed=3, junk=True)
    manifest = build_manifest([datalist], tmp_path / "manifest.json")
    return manifest, datalist.parent / GROUND_TRUTH


def _run(manifest: Path, work: Path) -> list[int]:
    """One whole coreset run in `work` (its decoded images and every cache live there)."""
    images = ensure_pool_images(manifest, work / "decoded", image_size=32)
    cs.CoresetPipeline(str(manifest), str(work / "coreset"), _teacher(), images, SETTINGS, diagnostics=False).run()
    datalist = json.loads((work / "coreset" / "coreset_datalist.json").read_text())
    return [s["index"] for s in datalist["training"]]


def _visible_then_hidden(tmp_path: Path, fresh: bool) -> tuple[list[int], list[int]]:
    manifest, truth = _pool(tmp_path)
    visible = _run(manifest, tmp_path / "visible")
    truth.rename(truth.with_suffix(".hidden"))
    try:
        work = tmp_path / "hidden" if fresh else tmp_path / "visible"
        if not fresh:
            (work / "coreset" / "coreset_datalist.json").unlink()
        hidden = _run(manifest, work)
    finally:
        truth.with_suffix(".hidden").rename(truth)
    return visible, hidden


def _plant_truth_dependent_quality(monkeypatch, truth_path: Path) -> None:
    """A quality step that cheats: when ground_truth.json is readable it scores junk frames lowest."""
    honest = cs.quality_scores

    def cheating(x, settings, seed=0):
        result = honest(x, settings, seed)
        if truth_path.is_file():
            samples = json.loads(truth_path.read_text())["samples"]
            junk = np.array([samples[k]["type"] != "clean" for k in sorted(samples)])
            result.score = np.where(junk[: len(result.score)], -1e6, result.score).astype(result.score.dtype)
        return result

    monkeypatch.setattr(cs, "quality_scores", cheating)


def test_hidden_truth_run_from_empty_caches_selects_the_same(tmp_path):
    visible, hidden = _visible_then_hidden(tmp_path, fresh=True)
    assert len(visible) == 20 and visible == hidden


def test_the_leak_check_catches_a_planted_truth_dependent_step(tmp_path, monkeypatch):
    _plant_truth_dependent_quality(monkeypatch, tmp_path / "pool" / GROUND_TRUTH)
    visible, hidden = _visible_then_hidden(tmp_path, fresh=True)
    assert visible != hidden  # the check fails, as it must


def test_reusing_the_visible_runs_caches_would_hide_the_planted_leak(tmp_path, monkeypatch):
    """Why the check starts from empty caches: the quality scores cached with the truth visible are reused."""
    _plant_truth_dependent_quality(monkeypatch, tmp_path / "pool" / GROUND_TRUTH)
    visible, hidden = _visible_then_hidden(tmp_path, fresh=False)
    assert visible == hidden
