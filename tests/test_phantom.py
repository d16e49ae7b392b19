"""Ultrasound phantom: physics, exact masks, registry coverage, datalists, caching, learnability."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tinyusfm_monai.data import phantom, phantom_tasks
from tinyusfm_monai.data.phantom import ensure_phantom, ensure_pool, generate_pool, generate_task, render_sample
from tinyusfm_monai.data.phantom_physics import (
    CALCIFICATION,
    CURVILINEAR_PROBE,
    FLUID,
    HYPERECHOIC,
    LINEAR_PROBE,
    PHASED_PROBE,
    Scene,
    Structure,
    analytic_signal,
    render,
    render_full,
)
from tinyusfm_monai.data.phantom_shapes import Ellipse, StarPolygon, random_star_radii
from tinyusfm_monai.data.registry import TASKS

SIZE = 64


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _mean_over_seeds(scene: Scene, seeds: range = range(6), size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Average image over speckle realisations (the geometry and the mask do not depend on the seed)."""
    images = [render(scene, _rng(s), size) for s in seeds]
    return np.mean([im.astype(np.float64) for im, _ in images], axis=0), images[0][1]


# ---- physics --------------------------------------------------------------------------------------------


def test_point_scatterer_gives_band_pass_rf_and_smooth_envelope():
    scatterers = np.zeros((128, 32), np.float32)
    scatterers[64, 16] = 1.0
    analytic = analytic_signal(scatterers)
    rf, envelope = analytic.real[:, 16], np.abs(analytic[:, 16])
    assert int(np.argmax(envelope)) == 64
    assert np.sum(np.diff(np.sign(rf[50:79])) != 0) >= 6  # RF oscillates at the carrier
    assert np.all(np.abs(rf) <= envelope + 1e-5)  # the envelope bounds the RF line
    assert np.abs(analytic[:, 16 + 6]).max() < 0.05 * envelope.max()  # lateral beam is narrow


def test_render_is_deterministic_and_seed_dependent():
    scene = Scene(LINEAR_PROBE, structures=(Structure(Ellipse(0.5, 0.5, 0.2, 0.15), FLUID, 1),))
    a, ma = render(scene, _rng(3), SIZE)
    b, mb = render(scene, _rng(3), SIZE)
    c, _ = render(scene, _rng(4), SIZE)
    assert a.dtype == np.uint8 and a.shape == (SIZE, SIZE) and ma.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("probe", [LINEAR_PROBE, CURVILINEAR_PROBE, PHASED_PROBE], ids=lambda p: p.name)
@pytest.mark.parametrize("tissue, darker", [(FLUID, True), (HYPERECHOIC, False)], ids=["anechoic", "hyperechoic"])
def test_mask_matches_lesion_echogenicity(probe, tissue, darker):
    lesion = StarPolygon(0.5, 0.45, 0.16, 0.13, 0.2, random_star_radii(_rng(1), 0.3, 0.3))
    image, mask = _mean_over_seeds(Scene(probe, structures=(Structure(lesion, tissue, 1),)))
    assert mask.any()
    # the mask is the exact geometry: it equals the shape evaluated at the pixel centres
    centres = (np.arange(SIZE) + 0.5) / SIZE
    u, v = np.meshgrid(centres, centres)
    assert np.array_equal(mask > 0, lesion.contains(u, v))
    inside = image[mask > 0].mean()
    ring = (np.abs(np.add.outer(np.arange(SIZE), -SIZE * 0.45)) < SIZE * 0.3) & (mask == 0)
    outside = image[ring & (image > 0)].mean()
    if darker:
        assert inside < outside - 40
    else:
        assert inside > outside + 20


@pytest.mark.parametrize("probe", [CURVILINEAR_PROBE, PHASED_PROBE], ids=lambda p: p.name)
def test_sector_outside_the_fan_is_black(probe):
    out = render_full(Scene(probe), _rng(0), SIZE)
    assert not out.fov.all() and out.fov[SIZE // 2, SIZE // 2]
    assert np.all(out.image[~out.fov] == 0)
    assert out.image[SIZE - 1, 0] == 0 and out.image[0, 0] == 0  # corners
    assert out.image[out.fov].mean() > 50


def test_linear_probe_fills_the_frame():
    out = render_full(Scene(LINEAR_PROBE), _rng(0), SIZE)
    assert out.fov.all()


def _column_profile(scene: Scene, column: slice, rows: slice) -> float:
    image, _ = _mean_over_seeds(scene, range(8))
    return float(image[rows, column].mean())


def test_calcification_casts_an_acoustic_shadow():
    calc = Structure(Ellipse(0.5, 0.3, 0.08, 0.03), CALCIFICATION)
    below, beside = slice(int(0.5 * SIZE), int(0.9 * SIZE)), slice(int(0.47 * SIZE), int(0.53 * SIZE))
    with_calc = _column_profile(Scene(LINEAR_PROBE, structures=(calc,)), beside, below)
    without = _column_profile(Scene(LINEAR_PROBE), beside, below)
    assert with_calc < without - 40


def test_cyst_gives_posterior_enhancement():
    cyst = Structure(Ellipse(0.5, 0.35, 0.15, 0.15), FLUID, 1)
    below, column = slice(int(0.55 * SIZE), int(0.95 * SIZE)), slice(int(0.44 * SIZE), int(0.56 * SIZE))
    with_cyst = _column_profile(Scene(LINEAR_PROBE, structures=(cyst,)), column, below)
    without = _column_profile(Scene(LINEAR_PROBE), column, below)
    assert with_cyst > without + 5


# ---- tasks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_registry_task_is_covered(name):
    task = TASKS[name]
    n = 2 * task.num_classes if task.task_type == "classification" else 24
    seen_labels, seen_values = set(), set()
    for i in range(n):
        image, mask, label = render_sample(name, "training", i, SIZE)
        assert image.shape == (SIZE, SIZE) and image.dtype == np.uint8 and image.max() > 0
        if task.task_type == "classification":
            assert 0 <= label < task.num_classes
            seen_labels.add(label)
        else:
            assert label is None
            seen_values |= set(np.unique(mask).tolist())
    if task.task_type == "classification":
        assert seen_labels == set(range(task.num_classes))
        assert len(set(phantom_tasks.class_recipes(task.num_classes))) == task.num_classes
    else:
        assert seen_values == set(range(task.num_classes)), f"labels drawn: {sorted(seen_values)}"


def test_class_recipes_extend_beyond_the_curated_list():
    recipes = phantom_tasks.class_recipes(20)
    assert len(set(recipes)) == 20
    assert recipes[:3] == phantom_tasks.class_recipes(3)  # a class keeps its look whatever the class count


def test_empty_masks_follow_the_registry_rule():
    name = next(n for n, t in TASKS.items() if t.empty_mask_note)
    empties = [not render_sample(name, "training", i, SIZE)[1].any() for i in range(40)]
    assert 0 < sum(empties) < 40
    assert not any(not render_sample(name, "training", i, SIZE, empty_fraction=0.0)[1].any() for i in range(10))
    assert all(not render_sample(name, "training", i, SIZE, empty_fraction=1.0)[1].any() for i in range(5))


# ---- files, datalists, caching -------------------------------------------------------------------------


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}


@pytest.mark.parametrize("name", ["busi_classification", "camus_segmentation"])
def test_generate_task_datalist_loads_with_monai(tmp_path, name):
    from monai.data import load_decathlon_datalist

    path = generate_task(name, tmp_path / name, n_train=4, n_val=2, n_test=3, image_size=SIZE, seed=1)
    assert path == tmp_path / name / "datalist.json"
    for key, count in (("training", 4), ("validation", 2), ("test", 3)):
        items = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=key)
        assert len(items) == count
        for item in items:
            assert Path(item["image"]).is_file()
            if TASKS[name].task_type == "segmentation":
                assert Path(item["label"]).is_file()
            else:
                assert isinstance(item["label"], int)
    again = generate_task(name, tmp_path / "again", n_train=4, n_val=2, n_test=3, image_size=SIZE, seed=1)
    assert _digest(path.parent) == _digest(again.parent)  # byte-identical
    assert json.loads(path.read_text())["training"] == json.loads(again.read_text())["training"]


def test_generate_pool(tmp_path):
    from monai.data import load_decathlon_datalist

    path = generate_pool(tmp_path / "pool", n=6, image_size=SIZE, seed=0)
    items = load_decathlon_datalist(str(path), data_list_key="training")
    assert len(items) == 6 and all(Path(i["image"]).is_file() for i in items)


def test_ensure_phantom_is_cached_and_atomic(tmp_path, monkeypatch):
    sizes = dict(n_train=3, n_val=1, n_test=1, image_size=SIZE)
    calls = []
    original = phantom.render_sample

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(phantom, "render_sample", failing)
    with pytest.raises(RuntimeError):
        ensure_phantom("ddti_segmentation", cache_dir=tmp_path, **sizes)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind
    monkeypatch.setattr(phantom, "render_sample", original)

    first = ensure_phantom("ddti_segmentation", cache_dir=tmp_path, **sizes)
    stamp = first.stat().st_mtime_ns
    second = ensure_phantom("ddti_segmentation", cache_dir=tmp_path, **sizes)
    assert first == second and second.stat().st_mtime_ns == stamp
    assert first.parent.name.startswith("ddti_segmentation-")
    assert ensure_phantom("ddti_segmentation", cache_dir=tmp_path, **{**sizes, "seed": 1}) != first


def test_ensure_pool_and_env_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYUSFM_CACHE", str(tmp_path))
    path = ensure_pool(n=3, image_size=SIZE)
    assert path.is_relative_to(tmp_path / "phantom") and path.is_file()
    assert ensure_pool(n=3, image_size=SIZE) == path


def test_cli_writes_tasks_and_pool(tmp_path):
    written = phantom.phantom_cli(
        str(tmp_path),
        task="aul_classification,luss_segmentation",
        n_train=2,
        n_val=1,
        n_test=1,
        pool=2,
        image_size=SIZE,
    )
    assert len(written) == 3
    assert (tmp_path / "luss_segmentation" / "masks" / "train_00000.png").is_file()
    assert (tmp_path / "pool" / "datalist.json").is_file()


# ---- learnability --------------------------------------------------------------------------------------


@pytest.fixture
def single_thread_torch():
    """Tiny convolutions run far faster on one thread, and a busy 2-core CI box makes 2 threads stall."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dataset(name: str, split: str, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    images, targets = [], []
    for i in range(n):
        image, mask, label = render_sample(name, split, i, size)
        images.append(image)
        targets.append(mask if label is None else label)
    return np.stack(images).astype(np.float32)[:, None] / 255.0, np.asarray(targets)


def train_classifier(name: str, n_train: int = 180, n_test: int = 120, size: int = SIZE, epochs: int = 12) -> float:
    """Tiny CNN on CPU; returns test accuracy."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    x, y = _dataset(name, "training", n_train, size)
    xt, yt = _dataset(name, "test", n_test, size)
    k = TASKS[name].num_classes
    net = nn.Sequential(
        nn.Conv2d(1, 16, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, k),
    )
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y).long()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs)).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xs[idx]), ys[idx]).backward()
            opt.step()
    with torch.no_grad():
        pred = net(torch.from_numpy(xt)).argmax(1).numpy()
    return float((pred == yt).mean())


def train_segmenter(
    name: str, n_train: int = 160, n_test: int = 60, size: int = SIZE, epochs: int = 20
) -> tuple[float, float]:
    """Tiny fully convolutional net on CPU; returns (mean foreground Dice, Dice of predicting all foreground)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    x, y = _dataset(name, "training", n_train, size)
    xt, yt = _dataset(name, "test", n_test, size)
    k = TASKS[name].num_classes

    class TinySegmenter(nn.Module):
        """Encoder at 1/4 resolution with dilated context, bilinear upsampling, full-resolution head."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(
                nn.Conv2d(1, 16, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=2, dilation=2),
                nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=4, dilation=4),
                nn.ReLU(),
            )
            self.head = nn.Conv2d(33, k, 3, padding=1)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            features = nn.functional.interpolate(self.encoder(image), size=image.shape[-2:], mode="bilinear")
            return self.head(torch.cat([features, image], 1))

    net = TinySegmenter()
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y).long()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs)).split(16):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xs[idx]), ys[idx]).backward()
            opt.step()
    with torch.no_grad():
        pred = net(torch.from_numpy(xt)).argmax(1).numpy()

    def dice(p: np.ndarray, t: np.ndarray) -> float:
        scores = [2 * ((p == c) & (t == c)).sum() / max(1, (p == c).sum() + (t == c).sum()) for c in range(1, k)]
        return float(np.mean(scores))

    trivial = dice(np.ones_like(yt), yt)  # every pixel called foreground (label 1)
    return dice(pred, yt), trivial


@pytest.mark.slow
def test_classification_is_learnable(single_thread_torch):
    name = "busi_classification"  # 3 classes: chance 0.33
    accuracy = train_classifier(name)
    print(f"{name}: test accuracy {accuracy:.3f} (chance {1 / TASKS[name].num_classes:.3f})")
    assert accuracy > 0.75


@pytest.mark.slow
def test_segmentation_is_learnable(single_thread_torch):
    name = "busi_segmentation"
    score, trivial = train_segmenter(name)
    print(f"{name}: test Dice {score:.3f} (all-foreground baseline {trivial:.3f})")
    assert score > 0.6 and score > trivial + 0.4
