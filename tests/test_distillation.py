"""Unit tests of the distillation components (tiny sizes, seconds)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinyusfm_monai.distillation import coreset as cs
from tinyusfm_monai.distillation.consistency import (
    ConsistencyWeighting,
    batch_percentile,
    effective_sample_size,
    token_spread,
)
from tinyusfm_monai.distillation.engine import loss_terms
from tinyusfm_monai.distillation.features import FeatureStore, extract_features
from tinyusfm_monai.distillation.losses import DistillationLoss, _token_weights, patchify
from tinyusfm_monai.distillation.masks import (
    DomainMasker,
    FrequencyMask,
    SpatialMask,
    build_masker,
    radial_frequency,
    ring_index,
)
from tinyusfm_monai.distillation.model import DistillationModel, FrozenTeacher
from tinyusfm_monai.distillation.pool import build_manifest, manifest_datalist, pool_indices
from tinyusfm_monai.distillation.quality import last_layer_grad_norm
from tinyusfm_monai.distillation.shards import PoolImageDataset, ensure_pool_images, normalize_on_device
from tinyusfm_monai.distillation.standin import build as build_teacher
from tinyusfm_monai.distillation.standin import small_teacher_def
from tinyusfm_monai.networks import TinyUSFM, VisionTransformer
from tinyusfm_monai.transforms.pipelines import build_pool_transform

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "tinyusfm_distillation"


def tiny_teacher(img: int = 32) -> VisionTransformer:
    """USFM architecture (q/v bias, relative position bias, layer scale) at a fraction of the width."""
    return build_teacher(small_teacher_def(img, embed_dim=48, depth=12, num_heads=12))


def write_pngs(folder: Path, n: int, size: int = 40, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (size, size + 8), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


# ---- masks ---------------------------------------------------------------------------------------------------


def test_spatial_mask_ratio_and_fills():
    x = torch.randn(3, 3, 64, 64)
    masked, mask = SpatialMask(patch_size=16, ratio=0.5, fill="zero")(x)
    assert mask.shape == (3, 4, 4) and mask.flatten(1).sum(1).tolist() == [8, 8, 8]
    pixel = mask.repeat_interleave(16, 1).repeat_interleave(16, 2).unsqueeze(1).expand_as(x)
    assert torch.equal(masked[~pixel], x[~pixel]) and torch.all(masked[pixel] == 0)
    # USFM's noise *addition* (the default): the content stays under the noise, it is not replaced
    g = torch.Generator().manual_seed(0)
    added, mask = SpatialMask(patch_size=16, ratio=0.5, noise_std=0.5)(x, g)
    pixel = mask.repeat_interleave(16, 1).repeat_interleave(16, 2).unsqueeze(1).expand_as(x)
    assert torch.equal(added[~pixel], x[~pixel])
    assert torch.corrcoef(torch.stack((added[pixel], x[pixel])))[0, 1] > 0.85  # replaced noise would give ~0
    replaced, _ = SpatialMask(patch_size=16, ratio=0.5, fill="noise")(x, torch.Generator().manual_seed(0))
    assert torch.corrcoef(torch.stack((replaced[pixel], x[pixel])))[0, 1].abs() < 0.1
    with pytest.raises(ValueError):
        SpatialMask(fill="blur")


def test_frequency_mask_never_stops_the_low_ring_and_rings_end_at_nyquist():
    x = torch.randn(64, 3, 32, 32)
    fm = FrequencyMask(num_bands=8, ratio=0.5, protect_low_bands=1)
    out, stop = fm(x, torch.Generator().manual_seed(0))
    ring = ring_index(32, 32, 8)
    assert not stop[:, ring == 0].any()  # the low-frequency core is kept in every draw
    assert stop.any() and stop[:, ring == 7].any()
    assert ring[radial_frequency(32, 32) > 1].eq(7).all()  # corners (beyond Nyquist) join the last ring
    assert set(ring[stop.any(0)].unique().tolist()) == set(range(1, 8))  # every other ring is stopped sometimes
    assert torch.allclose(out.mean((2, 3)), x.mean((2, 3)), atol=1e-5)  # DC kept
    spectrum = torch.fft.fft2(out)
    assert spectrum.abs()[stop.unsqueeze(1).expand_as(spectrum)].max() < 1e-3  # stopped bins are empty
    low, stop = FrequencyMask(bands=[[0.5, 2.0]])(x[:2])  # explicit band: everything above half Nyquist
    assert stop[0].equal(stop[1]) and (low - x[:2]).abs().mean() > 0
    with pytest.raises(ValueError):
        FrequencyMask(num_bands=4, protect_low_bands=4)


def test_masker_ablations():
    assert build_masker(True, False).views == ["spatial"]
    assert build_masker(False, True).views == ["frequency"]
    with pytest.raises(ValueError):
        build_masker(False, False)
    views = DomainMasker(SpatialMask(), FrequencyMask())(torch.randn(2, 3, 32, 32))
    assert set(views) == {"spatial", "frequency"}


# ---- consistency ---------------------------------------------------------------------------------------------


def test_rank_mapping_keeps_the_signal_whatever_the_cosines():
    """The rank mapping's weights follow the order of the cosines, have mean 1 and an ESS >= 0.85 of the batch even
    when one image's cosine is extreme (the softmax over the batch at T 0.1 collapses onto a few images)."""
    cos = torch.rand(16, generator=torch.Generator().manual_seed(0)) * 0.2
    cos[3] = 1.0  # an outlier
    rank = ConsistencyWeighting(schedule="constant").raw_weights(cos)
    assert torch.equal(rank.argsort(), cos.argsort()) and torch.isclose(rank.mean(), torch.tensor(1.0))
    assert float(effective_sample_size(rank)) > 0.85 and float(rank.min()) > 0.3
    soft = ConsistencyWeighting(schedule="constant", mapping="softmax", temperature=0.1).raw_weights(cos)
    assert float(effective_sample_size(soft)) < 0.6
    ties = batch_percentile(torch.tensor([[0.5, 0.5, 0.1]]))
    assert ties[0, 0] == ties[0, 1] and ties[0, 2] == 0


def test_consistency_readings_and_schedule():
    cw = ConsistencyWeighting(schedule="constant")
    h = torch.randn(4, 5, 8)
    other = h.clone()
    other[0] = -other[0]  # image 0: the two views disagree
    w = cw({"spatial": h, "frequency": other}, 0.5)
    assert w.shape == (1, 4) and w[0, 0] < w[0, 1:].min() and torch.isclose(w.mean(), torch.tensor(1.0))
    assert ConsistencyWeighting(enabled=False)({"spatial": h, "frequency": other}, 0.5) is None
    assert cw({"spatial": h}, 0.5) is None  # single-view ablation: no weighting possible
    ramp = ConsistencyWeighting(schedule="linear", ramp_fraction=0.5)
    assert ramp.strength(0.0) == 0 and ramp.strength(0.25) == 0.5 and ramp.strength(0.9) == 1
    assert torch.allclose(ramp({"spatial": h, "frequency": other}, 0.0), torch.ones(1, 4))
    assert ConsistencyWeighting(granularity="token")({"spatial": h, "frequency": other}, 1.0).shape == (1, 4, 4)
    clean = ConsistencyWeighting(reading="clean", schedule="constant")
    freq = h.clone()
    freq[2] = -freq[2]
    w = clean({"spatial": other, "frequency": freq, "clean": h}, 1.0)  # one weight per view
    assert w.shape == (2, 4) and w[0].argmin() == 0 and w[1].argmin() == 2


def test_token_spread_content_turns_the_weight_of_an_empty_frame_down():
    """A content-free frame is represented most consistently (nothing for a mask to destroy): consistency alone
    gives it the top weight; with content "token_spread" its identical tokens put it at the bottom."""
    g = torch.Generator().manual_seed(0)
    spa = torch.randn(8, 5, 16, generator=g)
    freq = spa + 0.5 * torch.randn(8, 5, 16, generator=g)
    spa[0] = freq[0] = torch.ones(5, 16)  # the empty frame: every token the same, views identical
    views = {"spatial": spa, "frequency": freq}
    alone = ConsistencyWeighting(schedule="constant")(views, 1.0)[0]
    both = ConsistencyWeighting(schedule="constant", content="token_spread")(views, 1.0)[0]
    assert alone.argmax() == 0 and both.argmin() == 0
    assert float(effective_sample_size(both)) > 0.85
    assert token_spread(spa)[0] < 1e-6 < token_spread(spa)[1:].min()


def test_token_weights_follow_the_stacked_views():
    one = torch.tensor([[1.0, 3.0]])  # one row for every view
    assert _token_weights(one, 2, 3).tolist() == [[1.0] * 3, [3.0] * 3, [1.0] * 3, [3.0] * 3]
    per_view = torch.tensor([[1.0, 3.0], [2.0, 4.0]])
    assert _token_weights(per_view, 2, 2)[:, 0].tolist() == [1.0, 3.0, 2.0, 4.0]
    with pytest.raises(ValueError):
        _token_weights(per_view, 3, 2)


# ---- losses / model ------------------------------------------------------------------------------------------


def test_patchify_matches_token_order():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    p = patchify(x, 16)
    assert p.shape == (2, 4, 16 * 16 * 3)
    # token 1 = top-right patch (row-major, as the ViT flattens its patch grid)
    assert torch.equal(p[0, 1].view(16, 16, 3).permute(2, 0, 1), x[0, :, :16, 16:])


@pytest.fixture
def teacher():
    return FrozenTeacher(tiny_teacher(), None, feature_layers=[3, 11], attn_layers=[11])


def test_frozen_teacher_is_frozen_and_loud(caplog):
    with caplog.at_level(logging.WARNING):
        t = FrozenTeacher(tiny_teacher(), None, feature_layers=[3], attn_layers=[11])
    assert "NO TEACHER WEIGHTS" in caplog.text and not t.pretrained
    assert not t.network.training and all(not p.requires_grad for p in t.network.parameters())
    t.network.train()
    out = t(torch.randn(2, 3, 32, 32))
    assert not t.network.training and not out["final"].requires_grad
    assert out["features"][0].shape == (2, 5, 48) and out["attn"][0].shape == (2, 12, 5, 5)


def test_teacher_loads_weights(tmp_path):
    src = tiny_teacher()
    torch.save(src.state_dict(), tmp_path / "t.pth")
    t = FrozenTeacher(tiny_teacher(), str(tmp_path / "t.pth"))
    assert t.pretrained and torch.equal(t.network.blocks[0].attn.q_bias, src.blocks[0].attn.q_bias)


def test_distillation_model_and_loss(teacher):
    student = TinyUSFM(img_size=32)
    model = DistillationModel(student, teacher, student_layers=[3, 11], student_attn_layers=[11])
    x = torch.randn(2, 3, 32, 32)
    views = DomainMasker(SpatialMask(), FrequencyMask())(x)
    stacked = torch.cat([views["spatial"][0], views["frequency"][0]])
    s, t = model(stacked), teacher(stacked)
    assert s["features"][0].shape == (4, 5, 48) and s["recon"].shape == (4, 4, 768)
    loss = DistillationLoss()
    masks = {k: v[1] for k, v in views.items()}
    terms = loss(s, t, x, ["spatial", "frequency"], masks, None)
    assert set(terms) == {"loss", "feature", "attn", "recon"} and all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    assert student.patch_embed.proj.weight.grad is not None
    assert all(p.grad is None for p in teacher.network.parameters())
    weighted = loss(s, t, x, ["spatial", "frequency"], masks, torch.tensor([[2.0, 0.0]]))
    assert not torch.isclose(weighted["feature"], terms["feature"])
    assert torch.isclose(weighted["recon"], terms["recon"])  # reconstruction is never teacher-weighted


def test_components_switch_off(teacher):
    model = DistillationModel(
        TinyUSFM(img_size=32), teacher, [3, 11], [11], feature_weight=0, attn_weight=0, recon_weight=1
    )
    assert len(model.projectors) == 0 and len(model.attn_adapters) == 0 and model.decoder is not None
    model = DistillationModel(TinyUSFM(img_size=32), teacher, [3, 11], [11], recon_weight=0)
    assert model.decoder is None
    with pytest.raises(ValueError):
        DistillationModel(TinyUSFM(img_size=32), teacher, [3], [11])  # 1 student layer vs 2 teacher layers


# ---- pool ----------------------------------------------------------------------------------------------------


def test_manifest_lists_unreadable_and_cine_frames(tmp_path):
    write_pngs(tmp_path / "pool" / "a", 3)
    (tmp_path / "pool" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "pool" / "notes.txt").write_text("not an image")
    from pydicom.data import get_testdata_file

    cine = Path(get_testdata_file("examples_ybr_color.dcm", download=False))  # 30-frame ultrasound cine
    (tmp_path / "pool" / "cine.dcm").write_bytes(cine.read_bytes())
    m = json.loads(build_manifest([tmp_path / "pool"], tmp_path / "m.json").read_text())
    assert m["num_samples"] == 3 + 30
    assert {Path(u["path"]).name for u in m["unreadable"]} == {"broken.png", "notes.txt"}
    frames = [s for s in m["training"] if s["image"].endswith("cine.dcm")]
    assert [s["frame"] for s in frames] == list(range(30)) and len({s["sha256"] for s in frames}) == 30
    items = manifest_datalist(tmp_path / "m.json")
    t = build_pool_transform(32)
    png, frame = t(items[0]), t(frames[5] | {"frame": 5})
    assert png["image"].shape == (3, 32, 32) and frame["image"].shape == (3, 32, 32)
    assert not torch.equal(t(frames[0] | {"frame": 0})["image"], frame["image"])


def test_decoded_pool_is_the_shared_pipeline_on_the_device(tmp_path):
    """uint8 shards + on-device normalisation give the tensor of the file pipeline (within uint8 rounding)."""
    write_pngs(tmp_path / "imgs", 5, size=50)
    build_manifest([tmp_path / "imgs"], tmp_path / "m.json")
    images = ensure_pool_images(tmp_path / "m.json", tmp_path / "decoded", image_size=32, shard_size=2)
    assert images.num_samples == 5 and images.missing() == [] and images.read(0, 5).dtype == np.uint8
    reference = build_pool_transform(32)
    for i, item in enumerate(manifest_datalist(tmp_path / "m.json")):
        on_device = normalize_on_device(PoolImageDataset(images)[i]["image"][None])[0]
        torch.testing.assert_close(on_device, reference(item)["image"].as_tensor(), atol=0.01, rtol=0)
    again = ensure_pool_images(tmp_path / "m.json", tmp_path / "decoded", image_size=32, shard_size=2)
    assert again.root == images.root  # decoded once: a second call reuses the shards
    coreset = PoolImageDataset(images, [4, 1])
    assert len(coreset) == 2 and coreset[0]["index"] == 4


def test_coreset_datalist_rows_map_to_the_pool(tmp_path):
    write_pngs(tmp_path / "imgs", 4)
    m = json.loads(build_manifest([tmp_path / "imgs"], tmp_path / "m.json").read_text())
    with_index = {"training": [{**m["training"][3], "index": 3}, {**m["training"][0], "index": 0}]}
    without = {"training": [m["training"][2]]}
    (tmp_path / "a.json").write_text(json.dumps(with_index))
    (tmp_path / "b.json").write_text(json.dumps(without))
    assert pool_indices(tmp_path / "m.json", tmp_path / "a.json") == [3, 0]
    assert pool_indices(tmp_path / "m.json", tmp_path / "b.json") == [2]
    assert pool_indices(tmp_path / "m.json", "") is None
    (tmp_path / "c.json").write_text(json.dumps({"training": [{"image": "/elsewhere.png", "frame": -1}]}))
    with pytest.raises(ValueError, match="not in the pool"):
        pool_indices(tmp_path / "m.json", tmp_path / "c.json")


# ---- features / coreset / quality ----------------------------------------------------------------------------


def _embed(x: torch.Tensor) -> torch.Tensor:
    return x.mean((2, 3)).repeat(1, 4)  # (B, 12), a deterministic stand-in for the teacher


def test_feature_shards_resume_and_ranks(tmp_path):
    write_pngs(tmp_path / "imgs", 7)
    build_manifest([tmp_path / "imgs"], tmp_path / "m.json")
    images = ensure_pool_images(tmp_path / "m.json", tmp_path / "decoded", image_size=32)
    store = FeatureStore(tmp_path / "feat")
    r1 = extract_features(images, _embed, 12, store, batch_size=2, shard_size=3, rank=1, world_size=2)
    assert r1["computed"] == 3 and store.missing() == [0, 2]  # rank 1 owns shard 1 only
    r0 = extract_features(images, _embed, 12, store, batch_size=2, shard_size=3, rank=0, world_size=2)
    assert r0["computed"] == 4 and store.missing() == []
    again = extract_features(images, _embed, 12, store, batch_size=2, shard_size=3, rank=0, world_size=1)
    assert again["computed"] == 0 and again["skipped"] == 7  # resumed: nothing recomputed
    full = store.read(0, 7)
    t = build_pool_transform(32)
    direct = torch.cat([_embed(t(it)["image"][None]) for it in manifest_datalist(tmp_path / "m.json")]).numpy()
    assert np.allclose(full, direct, atol=2e-2)  # float16 storage, uint8 decoded pool
    other = FeatureStore(tmp_path / "feat")
    with pytest.raises(ValueError, match="another pool or setting"):
        other.init("another-pool", 7, 12, 3, "float16")


def test_head_gradient_norm_is_exact():
    head = torch.nn.Linear(6, 4)
    h, t = torch.randn(3, 6), torch.tensor([0, 3, 1])
    closed = last_layer_grad_norm(h, head(h), t)
    for i in range(3):
        head.zero_grad()
        torch.nn.functional.cross_entropy(head(h[i : i + 1]), t[i : i + 1]).backward()
        g = torch.cat([head.weight.grad.flatten(), head.bias.grad])
        assert torch.isclose(closed[i], g.norm(), rtol=1e-4)


def test_write_outputs(tmp_path):
    samples = [{"image": f"/x/{i}.png", "frame": -1} for i in range(20)]
    cols = {"cluster": np.repeat([0, 1], 10), "distance": np.linspace(0, 1, 20), "quality": np.zeros(20)}
    sel = cs.Selection("composite", 5, np.arange(5), cols, {})
    files = cs.write_outputs(tmp_path, sel, samples, {"pool_hash": "h"})
    dl = json.loads(Path(files["datalist"]).read_text())
    assert len(dl["training"]) == 5 and dl["strategy"] == "composite" and dl["training"][4]["index"] == 4
    rows = Path(files["csv"]).read_text().splitlines()
    assert len(rows) == 21 and rows[0] == "index,image,frame,cluster,distance,quality,selected"
    assert Image.open(files["plot"]).size[0] == 640


# ---- engine --------------------------------------------------------------------------------------------------


def test_loss_terms_transform():
    out = {"loss": torch.tensor(1.5), "feature": torch.tensor(1.0), "image": torch.zeros(1), "recon": None}
    assert loss_terms(out) == {"loss": 1.5, "feature": 1.0}


# ---- GPU-scale mechanics, checked on CPU ---------------------------------------------------------------------


def test_masks_draw_only_from_their_generator():
    """Masks come from the masker's own generator (a device generator on GPUs): the global RNG is untouched and
    the same generator state gives the same views (what the training checkpoint restores)."""
    masker = DomainMasker.from_settings({}, device="cpu", seed=3)
    x = torch.randn(4, 3, 32, 32)
    before = torch.get_rng_state()
    state = masker.generator.get_state()
    first = masker(masker.augment(x))
    assert torch.equal(torch.get_rng_state(), before)
    masker.generator.set_state(state)
    again = masker(masker.augment(x))
    for name in first:
        assert torch.equal(first[name][0], again[name][0]) and torch.equal(first[name][1], again[name][1])


def test_bf16_teacher_and_student_match_the_fp32_step():
    """One distillation step in bf16 (teacher weights cast once, student under bf16 autocast) agrees with fp32:
    loss terms within 5 % and the student's gradients pointing the same way (cosine > 0.98)."""
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    results = {}
    for dtype in ("float32", "bfloat16"):
        torch.manual_seed(0)
        teacher = FrozenTeacher(tiny_teacher(), None, [3, 11], [11], dtype=dtype)
        student = TinyUSFM(img_size=32)
        model = DistillationModel(student, teacher, [3, 11], [11])
        views = DomainMasker.from_settings({}, seed=1)(x)
        stacked = torch.cat([views["spatial"][0], views["frequency"][0]])
        masks = {k: v[1] for k, v in views.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            t_out = teacher(stacked)
            terms = DistillationLoss()(model(stacked), t_out, x, ["spatial", "frequency"], masks, None)
        terms["loss"].backward()
        assert t_out["final"].dtype == getattr(torch, dtype)
        assert next(teacher.network.parameters()).dtype == getattr(torch, dtype)
        grad = torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])
        results[dtype] = ({k: float(v) for k, v in terms.items()}, grad)
    (ref, g32), (low, g16) = results["float32"], results["bfloat16"]
    for key in ("loss", "feature", "attn", "recon"):
        assert abs(low[key] - ref[key]) <= 0.05 * abs(ref[key]) + 1e-4, key
    assert torch.nn.functional.cosine_similarity(g32, g16.float(), dim=0) > 0.98


def _engine(model, teacher, iteration_args: dict):
    from types import SimpleNamespace

    from tinyusfm_monai.distillation.engine import DistillationIteration

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine = SimpleNamespace(
        state=SimpleNamespace(device=torch.device("cpu"), iteration=5, max_epochs=1, epoch_length=5),
        non_blocking=False,
        network=model,
        optimizer=opt,
        amp=False,
    )
    masker = DomainMasker.from_settings({}, seed=0)
    return engine, DistillationIteration(teacher, masker, **iteration_args)


def test_clean_reading_step_weights_each_view(teacher):
    """reading "clean": the teacher also encodes the clean image (in the same pass) and each view gets its own
    weight row; the step reports them with the pool rows of the batch."""
    model = DistillationModel(TinyUSFM(img_size=32), teacher, [3, 11], [11])
    cons = ConsistencyWeighting(reading="clean", schedule="constant")
    engine, step = _engine(model, teacher, {"loss": DistillationLoss(), "consistency": cons})
    batch = {"image": torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), "index": torch.arange(10, 14)}
    out = step(engine, batch)
    assert out["weights"].shape == (2, 4) and out["index"].tolist() == [10, 11, 12, 13]
    assert torch.isfinite(out["loss"]) and torch.allclose(out["weights"].mean(1), torch.ones(2))


def test_vanilla_step_never_runs_the_teacher(teacher):
    """With the feature and attention terms off (the vanilla ablation) the teacher is not run at all."""

    class Refuse:
        def __call__(self, x):
            raise AssertionError("the teacher ran")

    model = DistillationModel(TinyUSFM(img_size=32), teacher, [3, 11], [11], feature_weight=0, attn_weight=0)
    loss = DistillationLoss(feature_weight=0, attn_weight=0)
    engine, step = _engine(model, Refuse(), {"loss": loss, "consistency": ConsistencyWeighting()})
    out = step(engine, {"image": torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)})
    assert out["recon"] > 0 and "weights" not in out
