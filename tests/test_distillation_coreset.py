"""The coreset (Quality Rank on cached features, near-duplicate suppression, the paper and composite strategies),
the junk phantom pool and the evaluation-only diagnostics, and the teacher's masked-image-model pretraining step
(tiny sizes, seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components
from scipy.stats import spearmanr

from tinyusfm_monai.data.phantom import generate_pool
from tinyusfm_monai.data.phantom_junk import JunkConfig, build_junk_pool, render_clean, summary
from tinyusfm_monai.distillation import coreset as cs
from tinyusfm_monai.distillation.diagnostics import auroc_low, coreset_report, junk_weight_summary, load_ground_truth
from tinyusfm_monai.distillation.features import thumbnail_signature
from tinyusfm_monai.distillation.losses import patchify
from tinyusfm_monai.distillation.masks import DomainMasker
from tinyusfm_monai.distillation.pool import build_manifest
from tinyusfm_monai.distillation.pretrain import MaskedImageModel, corrupt, mim_loss
from tinyusfm_monai.distillation.quality import QualitySettings, quality_scores
from tinyusfm_monai.networks import VisionTransformer

torch.set_num_threads(1)


def tiny_vit(img: int = 32, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(
        img_size=img, embed_dim=48, depth=2, num_heads=4, qv_bias=True, use_abs_pos_emb=False, use_rel_pos_bias=True,
        init_values=0.1,
    ).eval()  # fmt: skip


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 frames (H x W or H x W x 3) → (N, 3, H, W) uint8, grey repeated to RGB."""
    return torch.stack(
        [torch.from_numpy(np.repeat(i[None], 3, 0) if i.ndim == 2 else i.transpose(2, 0, 1)) for i in images]
    )


# ---- the junk pool -------------------------------------------------------------------------------------------


def test_junk_pool_is_deterministic_composed_and_keeps_runs_together():
    a = build_junk_pool(300, 32, 5)
    b = build_junk_pool(300, 32, 5)
    assert a.truth == b.truth and all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    counts = summary(a.truth)
    assert sum(counts.values()) == 300 and counts["blank"] == round(JunkConfig().blank * 300) and counts["clean"] > 150
    groups = np.array([t["group"] for t in a.truth])
    for g in np.unique(groups[groups >= 0]):  # runs are contiguous and show one scene
        idx = np.flatnonzero(groups == g)
        assert np.all(np.diff(idx) == 1) and len({a.truth[i]["scene"] for i in idx}) == 1
        if a.truth[idx[0]]["type"] == "frozen":
            assert all(np.array_equal(a.images[idx[0]], a.images[i]) for i in idx)
    none = build_junk_pool(100, 32, 5, JunkConfig(**{t: 0.0 for t in ("blank", "dim", "saturated", "noise")}))
    assert summary(none.truth)["blank"] == 0
    with pytest.raises(ValueError):
        JunkConfig.from_value({"blnak": 0.1})


def test_clean_frames_are_the_plain_pools_frames(tmp_path):
    frames, meta, _ = render_clean(3, 32, seed=7)
    plain = generate_pool(tmp_path / "plain", n=3, image_size=32, seed=7)
    from PIL import Image

    for i in range(3):
        assert np.array_equal(np.asarray(Image.open(plain.parent / "images" / f"pool_{i:06d}.png")), frames[i])
    assert meta[0]["organ"] and meta[0]["task"]


def test_ground_truth_is_a_separate_file_the_manifest_does_not_carry(tmp_path):
    datalist = generate_pool(tmp_path / "pool", n=60, image_size=32, seed=1, junk={"blank": 0.1, "burst": 0.1})
    dl = json.loads(datalist.read_text())
    assert all(set(e) == {"image"} for e in dl["training"])  # nothing about junk in the datalist
    manifest = build_manifest([datalist], tmp_path / "m.json")
    m = json.loads(manifest.read_text())
    assert len(m["training"]) == 60 and all("type" not in s for s in m["training"])
    truth = load_ground_truth(manifest)
    assert len(truth) == 60 and summary(truth)["blank"] == 6
    (tmp_path / "pool" / "ground_truth.json").unlink()
    assert load_ground_truth(manifest) is None  # a real pool: no ground truth, no junk diagnostics


# ---- Quality Rank ----------------------------------------------------------------------------------------------


def test_quality_score_does_not_depend_on_the_visiting_order():
    """Snapshot records: every sample is scored by the same frozen proxy after each epoch, so its score does not
    follow its position in the visiting order (the old image proxy: Spearman -0.85)."""
    x = cs.prepare_features(torch.from_numpy(np.random.default_rng(1).standard_normal((1500, 16)).astype(np.float32)))
    q = quality_scores(x, QualitySettings(inits=2, epochs=3, pseudo_classes=8), seed=0)
    assert abs(spearmanr(q.score, q.first_visit_position).correlation) < 0.1
    again = quality_scores(x, QualitySettings(inits=2, epochs=3, pseudo_classes=8), seed=0)
    assert np.array_equal(q.score, again.score)  # seeded: the same scores on a rerun


def test_quality_ranks_a_blob_of_near_identical_frames_low():
    """Samples the proxy fits at once (a dense blob: blank or air frames) get low gradients, hence low quality."""
    rng = np.random.default_rng(0)
    spread = rng.standard_normal((600, 16)).astype(np.float32)
    blob = (np.ones((60, 16)) + 0.01 * rng.standard_normal((60, 16))).astype(np.float32)
    x = cs.prepare_features(torch.from_numpy(np.concatenate([spread, blob])))
    q = quality_scores(x, QualitySettings(inits=2, epochs=4, pseudo_classes=8), seed=0)
    assert auroc_low(q.score, np.r_[np.zeros(600, bool), np.ones(60, bool)]) > 0.8


# ---- near-duplicates and selection ----------------------------------------------------------------------------


def test_knn_within_blocks_is_the_brute_force_answer():
    x = torch.randn(120, 8)
    blocks = torch.from_numpy(np.repeat([0, 1, 2], 40))
    dist, idx = cs.knn_within_blocks(x, blocks, 3)
    for i in (0, 57, 119):
        members = torch.nonzero(blocks == blocks[i]).flatten()
        d = (x[members] - x[i]).norm(dim=1)
        d[members == i] = float("inf")
        best = torch.topk(d, 3, largest=False)
        assert torch.allclose(dist[i], best.values, atol=1e-4) and set(idx[i].tolist()) == set(
            members[best.indices].tolist()
        )


def test_connected_components_match_scipy():
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 200, size=(150, 2))
    ours = cs.connected_components(200, torch.from_numpy(pairs)).numpy()
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(200, 200))
    _, ref = scipy_components(graph, directed=False)
    # same partition: labels map one to one
    assert len({(a, b) for a, b in zip(ours, ref)}) == len(set(ours)) == len(set(ref))
    assert all(ours[i] <= i for i in range(200))  # the component id is its smallest member


def test_cluster_quotas_sum_and_caps():
    q = cs.cluster_quotas(np.array([50, 3, 0, 10]), 20, 1)
    assert q.sum() == 20 and q[2] == 0 and q[1] <= 3 and np.all(q <= [50, 3, 0, 10])
    assert cs.cluster_quotas(np.array([5, 5, 5]), 2, 1).sum() == 2


def test_selection_keeps_one_per_duplicate_group_and_fills_the_budget():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 16)).astype(np.float32)
    dup = np.repeat(base[:20], 5, axis=0) + 1e-3 * rng.standard_normal((100, 16)).astype(np.float32)
    x = cs.prepare_features(torch.from_numpy(np.concatenate([base, dup])))
    group_of = np.r_[np.arange(20), np.full(280, -1), np.repeat(np.arange(20), 5)]
    settings = cs.CoresetSettings(dedup="teacher", budget=0.25, quality_gate=0.0, block_size=100)
    groups, _ = cs.duplicate_groups(x, settings)
    for strategy in ("distance", "composite", "quality"):
        quality = np.random.default_rng(1).random(400).astype(np.float32)
        sel = cs.select(x, 400, cs.CoresetSettings(**{**settings.__dict__, "strategy": strategy}), quality, groups)
        kept = group_of[sel.selected]
        assert len(sel.selected) == 100 == len(set(sel.selected.tolist()))
        assert np.bincount(kept[kept >= 0]).max() == 1, strategy
    assert cs.resolve_budget(0.1, 1000) == 100 and cs.resolve_budget(25, 1000) == 25


def test_paper_strategy_is_the_two_ranks_without_our_additions():
    """`paper` ignores the duplicate groups and our selection settings (it keeps copies: no suppression), runs the
    gate, and equals `composite` with our additions switched off; `dual` (the old, misleading name) is refused."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((200, 16)).astype(np.float32)
    dup = np.repeat(base[:10], 8, axis=0) + 1e-3 * rng.standard_normal((80, 16)).astype(np.float32)
    x = cs.prepare_features(torch.from_numpy(np.concatenate([base, dup])))
    quality = np.random.default_rng(1).random(280).astype(np.float32)
    groups = np.r_[np.arange(10), np.arange(10, 200), np.repeat(np.arange(10), 8)]
    ours = {"within": "subclusters", "dedup": "both", "cluster_on": "distinct", "quota": "distinct"}
    paper = cs.select(x, 280, cs.CoresetSettings(strategy="paper", budget=0.5, **ours), quality, groups)
    plain = cs.select(x, 280, cs.CoresetSettings(strategy="paper", budget=0.5), quality, None)
    composite_off = cs.select(
        x, 280, cs.CoresetSettings(strategy="composite", budget=0.5, **cs.PAPER_OVERRIDES), quality, None
    )
    assert np.array_equal(paper.selected, plain.selected) and np.array_equal(paper.selected, composite_off.selected)
    assert not paper.columns["eligible"][quality < np.quantile(quality, 0.2)].any()  # the gate runs
    composite = cs.select(x, 280, cs.CoresetSettings(strategy="composite", budget=0.5), quality, groups)
    copies = lambda sel: np.bincount(groups[sel.selected]).max()  # noqa: E731
    assert copies(composite) == 1 and copies(paper) > 1
    assert not cs.CoresetSettings(strategy="paper").needs_signatures and cs.CoresetSettings().strategy == "composite"
    with pytest.raises(ValueError, match="renamed"):
        cs.CoresetSettings(strategy="dual")


def test_coreset_on_a_small_junk_pool_keeps_at_most_one_per_run_and_less_junk_than_random():
    """The whole selection on a real (small) junk pool with a random-init teacher: at most one frame of any
    frozen run or cine burst, and clearly less junk than random (the signature space catches the bursts)."""
    pool = build_junk_pool(600, 32, 3)
    images = _tensor(pool.images)
    teacher = tiny_vit()
    from tinyusfm_monai.distillation.shards import normalize_on_device

    with torch.no_grad():
        feats = torch.cat(
            [teacher.pool(teacher.forward_features(normalize_on_device(b), [], [])[0]) for b in images.split(200)]
        )
    x = cs.prepare_features(feats)
    sig = thumbnail_signature(images)
    settings = cs.CoresetSettings(budget=0.2, block_size=300, quality={"inits": 2, "epochs": 4})
    quality = quality_scores(x, settings.quality_settings, seed=0).score
    groups, radii = cs.duplicate_groups(x, settings, sig)
    sel = cs.select(x, len(x), settings, quality, groups)
    report = coreset_report(sel.selected, pool.truth)
    assert report["max_copies_per_run"] <= 1 and set(radii) == {"teacher", "signature"}
    assert report["junk_share"] < 0.6 * report["junk_share_random"]
    assert "junk share" in report["text"]


def test_subclusters_spread_the_picks_over_a_clusters_modes():
    """`within="subclusters"` keeps "closest to a centre first" but takes picks from every mode of a two-mode
    cluster; the literal reading ("closest") takes them all from the mode nearest the centre."""
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.05, (150, 4)) + [1, 0, 0, 0]
    b = rng.normal(0, 0.05, (50, 4)) + [0.7, 0.7, 0, 0]
    x = torch.from_numpy(np.concatenate([a, b]).astype(np.float32))
    base = dict(budget=16, num_clusters=1, quality_gate=0.0, dedup="none", center=False, strategy="distance")
    closest = cs.select(x, 200, cs.CoresetSettings(**base, within="closest"))
    sub = cs.select(x, 200, cs.CoresetSettings(**base, within="subclusters", picks_per_subcluster=4))
    assert (closest.selected >= 150).sum() == 0 and (sub.selected >= 150).sum() >= 2


# ---- diagnostics -------------------------------------------------------------------------------------------------


def test_coreset_report_counts_against_random():
    truth = [{"type": "clean", "group": -1, "organ": "a", "task": "t"} for _ in range(8)]
    truth += [{"type": "blank", "group": -1, "organ": None, "task": None} for _ in range(2)]
    truth += [{"type": "burst", "group": 0, "organ": "b", "task": "u"} for _ in range(4)]
    r = coreset_report(np.array([0, 1, 8, 10, 11]), truth)
    assert r["junk_share"] == pytest.approx(3 / 5) and r["max_copies_per_run"] == 2
    assert r["selected_by_type"] == {"blank": 1, "burst": 2, "clean": 2}
    assert r["coverage"]["organ"]["b"]["selected"] == 1 and r["junk_share_random"] == pytest.approx(6 / 14)


def test_junk_weight_summary_auroc():
    types = np.array(["clean"] * 4 + ["blank"] * 2 + ["burst"] * 2)
    perfect = junk_weight_summary(np.array([1.0, 1.1, 1.2, 1.3, 0.2, 0.3, 0.1, 0.1]), types)
    assert perfect["junk_auroc"] == 1.0 and perfect["mean_weight_by_type"]["blank"] == pytest.approx(0.25)
    assert junk_weight_summary(np.array([0.2, 0.3, 0.2, 0.3, 1.0, 1.1, 1.0, 1.0]), types)["junk_auroc"] == 0.0


# ---- teacher pretraining -------------------------------------------------------------------------------------------


def test_pretraining_corrupts_one_domain_per_image_and_scores_the_corrupted_patches():
    masker = DomainMasker.from_settings({"hflip_prob": 0.0, "frequency": {"ratio": 0.5}}, seed=0)
    x = torch.randn(16, 3, 32, 32)
    out, weight = corrupt(x, masker, "split", 16)
    freq_rows = weight.eq(1).all(1)
    spatial_rows = ~freq_rows
    assert freq_rows.any() and spatial_rows.any()
    assert torch.equal(weight[spatial_rows].sum(1), torch.full((int(spatial_rows.sum()),), 2.0))  # 2 of 4 patches
    untouched = (patchify(out, 16) - patchify(x, 16)).abs().amax(-1) == 0  # (B, N) patches left exactly as they were
    assert torch.equal(untouched[spatial_rows], weight[spatial_rows] == 0) and not untouched[freq_rows].any()
    model = MaskedImageModel(tiny_vit(), decoder_dim=32, decoder_depth=1, heads=2)
    pred = model(out)
    assert pred.shape == (16, 4, 16 * 16 * 3)
    perfect = mim_loss(torch.zeros_like(pred), torch.zeros_like(x), weight, 16)
    assert perfect == 0 and mim_loss(pred, x, weight, 16) > 0
    again = DomainMasker.from_settings({"hflip_prob": 0.0, "frequency": {"ratio": 0.5}}, seed=0)
    assert torch.equal(corrupt(x, again, "split", 16)[0], out)  # the masker's generator decides everything
