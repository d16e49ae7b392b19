"""The `paper` preset's parts: the official LR schedule, optimiser, loss, metric rules, augmentations, configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyusfm_monai.bundle.configs import paper_differences, train_paper_config
from tinyusfm_monai.bundle.paper import paper_training_parts
from tinyusfm_monai.data.registry import TASKS
from tinyusfm_monai.evaluation.metrics import OfficialSegmentationScores, hd95_pooled, official_image_scores
from tinyusfm_monai.handlers.paper import PaperLRSchedule, PaperSegLoss, build_paper_optimizer, paper_lr
from tinyusfm_monai.transforms.paper import RandContrastJitterd, RandGammaUint8d, RandScaleCropd

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def _sequence(epochs: int) -> list[float]:
    opt = build_paper_optimizer(torch.nn.Linear(2, 2), lr=1e-4)
    sched = PaperLRSchedule(opt, base_lr=1e-4, warmup_epochs=5, max_epochs=epochs)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_double_warm_up_and_linear_decay():
    """Epochs 0-4: 0.2..1.0; epochs 4-9: 1, 1, 0.6, 0.8, 1, 1 (the second warm-up); then linear; last epoch 2.25e-6
    (400 epochs) / 1.5e-6 (1000); the scheduler and the closed form agree at every epoch."""
    lrs = _sequence(400)
    assert [round(v / 1e-4, 10) for v in lrs[:10]] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.6, 0.8, 1.0, 1.0]
    assert lrs == [paper_lr(e, 1e-4, 5, 400) for e in range(400)]
    assert np.all(np.diff(lrs[9:]) < 0)  # strictly decreasing after epoch 9
    assert lrs[-1] == pytest.approx(1e-6 + 9.9e-5 * 5 / 395, rel=1e-12) and round(lrs[-1], 8) == 2.25e-6
    assert round(_sequence(1000)[-1], 7) == 1.5e-6


def test_schedule_resumes_from_its_state():
    opt = build_paper_optimizer(torch.nn.Linear(2, 2))
    sched = PaperLRSchedule(opt, max_epochs=50)
    for _ in range(7):
        sched.step()
    state = sched.state_dict()
    opt2 = build_paper_optimizer(torch.nn.Linear(2, 2))
    sched2 = PaperLRSchedule(opt2, max_epochs=50)
    sched2.load_state_dict(state)
    sched.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == paper_lr(8, 1e-4, 5, 50)


def test_one_group_no_weight_decay():
    parts = paper_training_parts("busi_segmentation", overrides={"image_size": 64})
    groups = parts["optimizer"].param_groups
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0 and groups[0]["betas"] == (0.9, 0.999)
    assert groups[0]["lr"] == pytest.approx(2e-5)  # epoch 0 of the warm-up
    net = parts["network"]
    assert net.decoder == "official" and net.out_channels == 1
    assert net.backbone.blocks[11].drop_path.drop_prob == pytest.approx(0.1)  # linear 0 -> 0.1 over the blocks
    assert isinstance(net.backbone.blocks[0].drop_path, torch.nn.Identity)
    cls = paper_training_parts("busi_classification", overrides={"image_size": 64})["network"]
    assert isinstance(cls.blocks[11].drop_path, torch.nn.Identity)  # drop path 0 in classification


def test_paper_seg_loss_binary_is_bce_on_one_channel_multiclass_is_ce():
    logits = torch.randn(2, 1, 8, 8)
    label = (torch.rand(2, 1, 8, 8) > 0.5).long()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, label.float())
    assert torch.allclose(PaperSegLoss(2)(logits, label), expected)
    logits4 = torch.randn(2, 4, 8, 8)
    label4 = torch.randint(0, 4, (2, 1, 8, 8))
    assert torch.allclose(PaperSegLoss(4)(logits4, label4), torch.nn.functional.cross_entropy(logits4, label4[:, 0]))


def test_official_binary_rules():
    empty = np.zeros((16, 16), dtype=np.uint8)
    blob = empty.copy()
    blob[4:8, 4:8] = 1
    both_empty = official_image_scores(empty, empty, 2)
    assert both_empty["Dice"] == 0.0 and both_empty["HD95"] == 0.0 and both_empty["IoU"] == 1.0  # medpy dc
    one_empty = official_image_scores(empty, blob, 2)
    assert one_empty["Dice"] == 0.0 and one_empty["HD95"] == 224.0
    same = official_image_scores(blob, blob, 2)
    assert same["Dice"] == 1.0 and same["HD95"] == 0.0
    scores = OfficialSegmentationScores(2)
    scores.add(blob, blob)
    scores.add(empty, empty)
    assert scores.aggregate()["Dice"] == 0.5  # the both-empty image counts as 0


def test_official_multiclass_rules():
    label = np.zeros((16, 16), dtype=np.uint8)
    label[2:6, 2:6] = 1
    pred = label.copy()
    scores = OfficialSegmentationScores(4)
    s = scores.add(pred, label)  # class 1 perfect; classes 2, 3 absent from both
    assert s["Dice"][2] == 1.0 and np.isnan(s["HD95"][2]) and np.isnan(s["Sensitivity"][3])
    pred2 = label.copy()
    pred2[10:12, 10:12] = 2  # class 2 predicted, absent from the reference
    s2 = scores.add(pred2, label)
    assert s2["HD95"][2] == 224.0 and s2["Dice"][2] == 0.0
    agg = scores.aggregate()
    # Dice per class over images: class 1 (1, 1) -> 1; class 2 (1, 0) -> 0.5; class 3 (1, 1) -> 1; mean 5/6
    assert agg["Dice"] == pytest.approx(5 / 6)
    # HD95 skips NaN: class 1 -> 0, class 2 -> 224 (only image 2), class 3 -> all NaN (skipped)
    assert agg["HD95"] == pytest.approx(112.0)


def test_hd95_pools_both_directions():
    """medpy's hd95: one percentile over both directions' distances pooled: a→b [0], b→a [0, 10] → percentile 95 of
    [0, 0, 10] = 9.0 (the larger directed percentile, MONAI's rule, would be 9.5)."""
    a = np.zeros((20, 20), dtype=bool)
    b = a.copy()
    a[5, 5] = True
    b[5, 5] = True
    b[5, 15] = True
    assert hd95_pooled(a, b) == pytest.approx(9.0)


def test_paper_augmentations_keep_values_in_range_and_labels_discrete():
    data = {"image": torch.arange(3 * 32 * 32, dtype=torch.float32).reshape(3, 32, 32) % 256}
    data["label"] = (torch.arange(32 * 32).reshape(1, 32, 32) % 3).float()
    transforms = (RandGammaUint8d("image", 1.0), RandScaleCropd(["image", "label"], 1.0))
    transforms += (RandContrastJitterd("image", 1.0),)
    for t in transforms:
        t.set_random_state(3)
        out = t(data)
        assert out["image"].shape == (3, 32, 32) and 0 <= out["image"].min() and out["image"].max() <= 255
        assert torch.equal(out["image"], out["image"].floor())  # 8-bit values, as the official uint8 pipeline
        assert set(out["label"].unique().tolist()) <= {0.0, 1.0, 2.0}
    g = RandGammaUint8d("image", 1.0)
    g.set_random_state(0)
    g.randomize()
    assert g.gamma in {x / 10 for x in range(5, 20)}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_bundle_has_the_preset_and_the_difference_table(name):
    task = TASKS[name]
    committed = json.loads((BUNDLES / name / "configs" / "train_paper.json").read_text())
    assert committed == json.loads(json.dumps(train_paper_config(task)))
    assert committed["max_epochs"] == (1000 if task.task_type == "segmentation" else 400)
    assert committed["train#trainer#amp"] is False and committed["weight_decay"] == 0.0
    readme = (BUNDLES / name / "docs" / "README.md").read_text()
    for item, ours, paper in paper_differences(task):
        assert f"| {item} | {ours} | {paper} |" in readme
    assert "double warm-up" in readme and "layer decay off" in readme and "worker reseeding" in readme
    assert ("train-mode validation pass" in readme) == (task.task_type == "segmentation")


def test_worker_reseeding_replays_the_same_augmentations_every_epoch():
    """The official quirk: workers reseeded to 42 + id at every epoch, so (in the same order) epoch 2 draws exactly
    what epoch 1 drew; MONAI's default worker seeding draws anew."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose

    from tinyusfm_monai.handlers.paper import paper_worker_init_fn

    data = [{"image": torch.arange(16.0).reshape(1, 4, 4) * 15} for _ in range(8)]
    ds = Dataset(data, transform=Compose([RandContrastJitterd("image", 1.0), RandGammaUint8d("image", 0.5)]))

    def epoch(loader):
        return torch.cat([b["image"] for b in loader])

    paper = DataLoader(ds, batch_size=2, num_workers=2, worker_init_fn=paper_worker_init_fn)
    assert torch.equal(epoch(paper), epoch(paper))
    monai_default = DataLoader(ds, batch_size=2, num_workers=2)
    assert not torch.equal(epoch(monai_default), epoch(monai_default))
