"""Active-learning selection (tinyusfm_monai/monailabel/lib/activelearning.py) on synthetic features: no server."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyusfm_monai.monailabel.lib.activelearning import (
    ActiveLearningSettings,
    FeatureCache,
    SelectionIndex,
    build_index,
    entropy_uncertainty,
    features_and_uncertainty,
    margin_uncertainty,
    select,
    weights_fingerprint,
)


def _pool(seed: int = 0, n_distinct: int = 120, n_bursts: int = 10, burst_len: int = 6, dim: int = 32):
    """Distinct images scattered in 4 blobs plus bursts of near-identical copies (cine frames); truth groups."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim)) * 3
    x = centres[rng.integers(4, size=n_distinct)] + rng.normal(size=(n_distinct, dim))
    truth = list(range(n_distinct))
    rows = [x]
    for b in range(n_bursts):
        base = x[b]
        rows.append(base + 0.005 * rng.normal(size=(burst_len, dim)))
        truth += [b] * burst_len
    feats = np.concatenate(rows).astype(np.float32)
    sig = feats[:, :16] + 0.0  # thumbnails: the bursts are near-identical there too
    return feats, sig, np.array(truth)


def _index(unc: np.ndarray | None = None, **kw) -> tuple[SelectionIndex, np.ndarray]:
    feats, sig, truth = _pool(**kw)
    n = len(feats)
    unc = np.random.default_rng(1).random(n).astype(np.float32) if unc is None else unc
    index = build_index("w0", [f"h{i}" for i in range(n)], feats, sig, unc, ActiveLearningSettings(num_clusters=4))
    return index, truth


def test_bursts_form_duplicate_groups():
    index, truth = _index()
    for b in range(10):
        members = np.flatnonzero(truth == b)
        assert len(set(index.groups[members].tolist())) == 1, f"burst {b} split over groups"
    # distinct images are not merged with each other
    distinct = index.groups[10:120]
    assert len(set(distinct.tolist())) >= 100


@pytest.mark.parametrize("strategy", ["diversity", "uncertainty", "hybrid"])
def test_never_labelled_nor_duplicate_of_labelled_or_picked(strategy):
    index, truth = _index()
    n = len(index)
    taken = np.zeros(n, bool)
    taken[[0, 1, 2, 50]] = True  # 0, 1, 2 have bursts: none of their frames may come back
    picks = select(index, strategy, taken, count=40)
    assert len(picks) == 40
    assert not taken[picks].any()
    assert not set(truth[picks]) & set(truth[taken]), "proposed a near-duplicate of a labelled image"
    assert len(set(truth[picks].tolist())) == len(picks), "two frames of one burst in one batch"


def test_uncertainty_is_most_uncertain_first_one_per_burst():
    feats, _, truth = _pool()
    unc = np.zeros(len(feats), np.float32)
    burst = np.flatnonzero(truth == 3)
    unc[burst] = 1.0  # a whole burst is the most uncertain: only one of its frames may be proposed
    unc[7] = 0.9
    index, _ = _index(unc=unc)
    picks = select(index, "uncertainty", np.zeros(len(unc), bool), count=2)
    assert picks[0] in burst and picks[1] == 7


def test_diversity_is_k_center_greedy():
    """Each pick is the unblocked point farthest from every taken point (and earlier pick)."""
    index, _ = _index()
    n = len(index)
    taken = np.zeros(n, bool)
    taken[[5, 60]] = True
    picks = select(index, "diversity", taken, count=5)
    x = index.features
    centres = list(np.flatnonzero(taken))
    for p in picks:
        d = np.linalg.norm(x[:, None] - x[centres][None], axis=2).min(1)
        blocked = np.isin(index.groups, index.groups[centres])
        d[blocked] = -np.inf
        assert np.isclose(d[p], d.max(), atol=1e-4), "not the farthest point"
        centres.append(p)
    # covering radius after the picks is smaller than with as many random picks (the k-center property)
    rng = np.random.default_rng(0)
    rand = rng.choice(np.flatnonzero(~taken), size=5, replace=False)
    radius = lambda sel: np.linalg.norm(x[:, None] - x[sel][None], axis=2).min(1).max()  # noqa: E731
    assert radius(centres) <= radius(list(np.flatnonzero(taken)) + list(rand)) + 1e-6


def test_hybrid_picks_most_uncertain_within_under_covered_clusters():
    feats, _, truth = _pool()
    index, _ = _index()
    big = int(np.bincount(index.clusters).argmax())
    unc = np.where(index.clusters == big, 0.5, 0.0) + np.linspace(0, 0.1, len(feats))
    unc = unc.astype(np.float32)
    index.uncertainty = unc  # the largest cluster is the most uncertain everywhere
    n = len(index)
    picks = select(index, "hybrid", np.zeros(n, bool), count=8)
    plain = select(index, "uncertainty", np.zeros(n, bool), count=8)
    assert set(index.clusters[plain].tolist()) == {big}, "plain uncertainty stays in one cluster"
    assert set(index.clusters[picks].tolist()) == set(range(4)), "hybrid should cover every cluster"
    blocked = np.zeros(n, bool)
    for p in picks:  # each pick: the most uncertain open member of its cluster at that moment
        open_same = np.flatnonzero(~blocked & (index.clusters == index.clusters[p]))
        assert index.uncertainty[p] == index.uncertainty[open_same].max(), "not the most uncertain of its cluster"
        blocked |= index.groups == index.groups[p]
    assert picks[0] == int(np.flatnonzero(index.clusters == big)[np.argmax(unc[index.clusters == big])])


def test_uncertainty_measures():
    p = np.array([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(entropy_uncertainty(p)[:2], [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(margin_uncertainty(p), [1.0, 0.0, 1.0], atol=1e-6)


def test_cache_invalidates_on_new_weights(tmp_path):
    w = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(3)}, w)
    fp0 = weights_fingerprint(w)
    cache = FeatureCache(tmp_path / "cache")
    row = (np.ones(4, np.float32), np.zeros(2, np.float32), 0.5)
    cache.update(fp0, {"h1": row})
    assert set(cache.rows(fp0)) == {"h1"}
    torch.save({"a": torch.ones(3)}, w)  # retrained
    fp1 = weights_fingerprint(w)
    assert fp1 != fp0
    assert cache.rows(fp1) == {}, "rows of the old weights served for the new ones"
    cache.update(fp1, {"h2": row})
    assert cache.rows(fp0) == {} and set(cache.rows(fp1)) == {"h2"}


def test_index_roundtrip(tmp_path):
    index, _ = _index()
    index.save(tmp_path / "index.npz")
    back = SelectionIndex.load(tmp_path / "index.npz")
    assert back.fingerprint == "w0" and back.hashes == index.hashes
    np.testing.assert_array_equal(back.groups, index.groups)
    assert select(back, "hybrid", np.zeros(len(back), bool), 3) == select(index, "hybrid", np.zeros(len(back), bool), 3)


@pytest.mark.parametrize("classification", [True, False])
def test_features_and_uncertainty_from_bundle_networks(classification):
    from tinyusfm_monai.networks import VisionTransformer, ViTSegmenter

    torch.manual_seed(0)
    tiny = {"img_size": 32, "embed_dim": 192, "depth": 4, "num_heads": 3}
    if classification:
        net = VisionTransformer(num_classes=3, **tiny)
    else:
        net = ViTSegmenter(VisionTransformer(**tiny), num_classes=2, img_size=32, out_indices=(0, 1, 2, 3))
    net.eval()
    feats, unc = features_and_uncertainty(net, torch.rand(2, 3, 32, 32), classification)
    assert feats.shape == (2, 192) and unc.shape == (2,)
    assert np.all((unc >= 0) & (unc <= 1))
    if classification:  # the feature is exactly what the head reads
        with torch.no_grad():
            logits = net.head(torch.from_numpy(feats))
        probs = torch.softmax(logits, 1).numpy()
        np.testing.assert_allclose(unc, entropy_uncertainty(probs), atol=1e-5)
