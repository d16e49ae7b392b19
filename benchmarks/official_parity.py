"""Record the official TinyUSFM fine-tuning code's numbers as fixtures for `tests/test_official_parity.py`.

Why: the `paper` preset may only be called "official" if it reproduces the official scripts step for step.
This script runs the official training loops themselves (`train_cls.train_model`, `train_seg.train_model` of a
checkout of the public MacDunno/TinyUSFM repository) on a small deterministic dataset with deterministic
initial weights, fp32 on the CPU, and writes what they did as numbers only (JSON) under
`tests/data/official_parity/`. The test replays the same batches from the same weights through the product and
compares. Nothing of the official code is copied into this repository; it is imported from the checkout.

What the official code runs unchanged: the models (`model/tinyusfm.py`, `model/tinyusfm_seg.py`), the parameter
groups and AdamW, the scheduler (`utils/schedule.py`), the whole per-epoch loop of `train_model` (warm-up,
scheduler stepping, the loss and validation passes, model selection), the losses, and the metric code
(`utils/evaluate.py` with medpy). What this driver replaces, by monkeypatching attributes of the imported modules
(no file of the checkout is modified):

* `DataProcessor.get_data_loaders` returns fixed, already-normalised batches (`make_batches`) in a fixed order:
  no image files, no augmentation, no shuffling, no worker processes. Augmentation parity is therefore NOT part
  of these fixtures.
* `load_model` / `load_model_seg` build the official model with `pretrained='False'` (their code then loads no
  file), load the deterministic initial state dict (`make_initial_state`, official key layout, every key
  including the heads/decoder, strict) and then reseed torch with `TORCH_SEED`, so that the torch random stream
  at the first training step (drop path, Dropout2d) does not depend on how many numbers timm's weight init drew.
* `torch.optim.AdamW`, `torch.nn.CrossEntropyLoss`, `torch.nn.BCEWithLogitsLoss` and tensorboardX's
  `SummaryWriter` are replaced by subclasses / a stand-in that RECORD (learning rate of every group at every
  optimiser step, every loss value with whether autograd was on, every logged scalar) and otherwise behave as
  the originals.
* Work directory: a temporary folder (their loop writes logs and best-model checkpoints relative to the cwd).

Fixtures written (all small JSON):
* `cls_train.json`, `seg_binary_train.json`, `seg_multiclass_train.json`: settings, input checksums, the initial
  state's key -> shape list and checksums, per-step train losses and learning rates (all groups), the validation
  losses, logged per-epoch scalars, parameter statistics after the first step and at the end (sum, L2 norm and
  the elements at `selected_indices` per tensor, BatchNorm buffers included), and `self_agreement`: each setting
  is trained again with 2, 3 and 4 torch threads (only the float summation order changes) and the largest
  difference of those runs from the recorded 1-thread run is kept per step / per tensor. The official segmentation
  runs disagree with themselves by ~1e-7 at the first step and up to 1e-4 (binary) / 1e-3 (4 classes) by epoch 10
  (Adam turns the float-noise gradient of convolution biases in front of BatchNorm into lr-sized steps), so the
  test's tolerance is never tighter than this envelope.
* `lr_schedule.json`: the learning rate of every epoch of the default runs (cls 400 epochs, seg 1000 epochs),
  taken from the official loop run with a one-parameter stand-in model (schedule only: the loop, warm-up and
  scheduler are theirs, the model is not), both the lr each epoch trains at and the lr their log reports.
* `metrics.json`: the official segmentation metric code (`Evaluator_seg`, medpy 0.4.0) and classification metric
  code (`Evaluator`, scikit-learn) on deterministic masks / predictions: both empty, one empty, overlaps,
  multi-class with absent classes.

How the committed fixtures were produced (2026-12-04, about 10 minutes on 2 busy cores):
* official code: MacDunno/TinyUSFM commit 39b832ae5396ac7a9414174aea2337f023553f7d
* venv (Python 3.11.7, outside the project) with the official requirements.txt pins: numpy 2.1.2, scikit-learn
  1.6.1, pillow 11.0.0, pandas 2.2.3, matplotlib 3.10.1, seaborn 0.13.2, termcolor 3.0.1, tensorboardX 2.6.2.2,
  timm 0.5.4, MedPy 0.4.0; plus torch 2.14.1 and torchvision 0.29.1 (unpinned there; run on the CPU) and scipy
  1.17.1. The numpy pin matters: under numpy >= 2.3 medpy's `dc` of two empty masks is NaN instead of 0.
* command:
      python3 -m venv /path/to/venv-official
      /path/to/venv-official/bin/pip install torch==2.14.1 torchvision==0.29.1
      /path/to/venv-official/bin/pip install -r /path/to/TinyUSFM-checkout/requirements.txt
      /path/to/venv-official/bin/python benchmarks/official_parity.py --official /path/to/TinyUSFM-checkout
  (`--only cls seg_binary seg_multiclass schedule metrics` picks parts; `--threads 1,2,3,4` the repeated runs.)

The module can also be imported without the official code or its dependencies (numpy and torch only): the test
imports `make_initial_state`, `make_batches` and `make_metric_cases` from here, so that the inputs have one
source of truth.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "official_parity"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TORCH_SEED = 1234  # torch seed set after the model is built, before the first training step
SELECTED = 8  # elements recorded per tensor

# The three training settings. Small on purpose: the test replays them on a shared 2-core CPU.
# cls: 12 epochs x 2 steps covers the linear warm-up (epochs 0-4), the second warm-up (5-9) and the decay (10-11)
# and shows that the lr is constant within an epoch. seg: 11 epochs x 1 step, one validation batch per epoch
# (the train-mode validation pass moves BatchNorm statistics and draws from the torch RNG).
SETTINGS = {
    "cls": dict(task="cls", num_classes=2, epochs=12, train_batches=2, val_batches=1, batch_size=2, lr=1e-4, seed=11),
    "seg_binary": dict(
        task="seg", num_classes=2, epochs=11, train_batches=1, val_batches=1, batch_size=2, lr=1e-4, seed=21
    ),
    "seg_multiclass": dict(
        task="seg", num_classes=4, epochs=11, train_batches=1, val_batches=1, batch_size=2, lr=1e-4, seed=31
    ),
}
IMG = 224  # the official models are built for 224 x 224 input


# ---------------------------------------------------------------------------------------------------------------
# Deterministic inputs (shared with the test: numpy RandomState is stable across numpy versions)
# ---------------------------------------------------------------------------------------------------------------


def _key_seed(key: str, seed: int) -> int:
    return (zlib.crc32(key.encode()) + 7919 * seed) % (2**32)


def make_initial_tensor(key: str, shape: list[int], seed: int = 0) -> torch.Tensor:
    """One tensor of the deterministic initial state, from its official key name and shape.

    Scales keep a 12-block ViT and the FPN decoder numerically sane (activations O(1)): LayerNorm/BatchNorm
    weights near 1, biases near 0, ViT weights std 0.02, convolution weights std 1/sqrt(fan_in), BatchNorm running
    variance in [0.5, 1.5]."""
    rs = np.random.RandomState(_key_seed(key, seed))
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if key.endswith("running_var"):
        return torch.from_numpy(rs.uniform(0.5, 1.5, size=shape).astype(np.float32))
    if key.endswith("running_mean"):
        return torch.from_numpy((0.1 * rs.standard_normal(shape)).astype(np.float32))
    normal = rs.standard_normal(shape)
    if len(shape) == 1 and key.endswith("weight"):  # LayerNorm / BatchNorm scale
        arr = 1.0 + 0.05 * normal
    elif len(shape) == 1:  # biases
        arr = 0.02 * normal
    elif len(shape) == 4 and "patch_embed" not in key:  # decoder convolutions
        fan_in = shape[1] * shape[2] * shape[3]
        arr = normal / math.sqrt(fan_in)
    else:  # linear layers, patch embedding, pos_embed, cls_token
        arr = 0.02 * normal
    return torch.from_numpy(arr.astype(np.float32))


def make_initial_state(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """The deterministic initial state dict in the official key layout (`shapes`: key -> shape, in order)."""
    return {k: make_initial_tensor(k, s, seed) for k, s in shapes.items()}


def _blob_mask(rs: np.random.RandomState, num_classes: int, size: int = IMG) -> np.ndarray:
    """A label map with one to three elliptic blobs (class ids 1..C-1; binary: 1)."""
    yy, xx = np.mgrid[0:size, 0:size]
    mask = np.zeros((size, size), dtype=np.int64)
    for _ in range(rs.randint(1, 4)):
        cy, cx = rs.uniform(0.2 * size, 0.8 * size, size=2)
        ry, rx = rs.uniform(0.05 * size, 0.25 * size, size=2)
        cls = 1 if num_classes == 2 else rs.randint(1, num_classes)
        mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0] = cls
    return mask


def make_batches(setting: str, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed batches of a setting ('train' or 'val'): ImageNet-normalised float32 (B, 3, 224, 224) images as the
    official ToTensor+Normalize would give them, and labels (cls: int64 (B,); seg: binary float32 (B, H, W) in
    {0, 1}, multi-class int64 (B, H, W)), in the order the loop sees them."""
    cfg = SETTINGS[setting]
    rs = np.random.RandomState(cfg["seed"] * 100 + (0 if split == "train" else 1))
    n = cfg["train_batches"] if split == "train" else cfg["val_batches"]
    batches = []
    for _ in range(n):
        images, labels = [], []
        for _ in range(cfg["batch_size"]):
            if cfg["task"] == "cls":
                label = int(rs.randint(cfg["num_classes"]))
                img = rs.randint(0, 256, size=(IMG, IMG, 3)).astype(np.float32)
                img[..., label % 3] *= 0.85  # a weak class signal
                labels.append(np.int64(label))
            else:
                mask = _blob_mask(rs, cfg["num_classes"])
                img = rs.randint(0, 200, size=(IMG, IMG, 3)).astype(np.float32)
                img[mask > 0] += 55.0
                labels.append(mask)
            img = (img / np.float32(255.0) - IMAGENET_MEAN) / IMAGENET_STD
            images.append(img.transpose(2, 0, 1).astype(np.float32))
        x = torch.from_numpy(np.stack(images))
        if cfg["task"] == "cls":
            y = torch.from_numpy(np.array(labels, dtype=np.int64))
        elif cfg["num_classes"] == 2:
            y = torch.from_numpy(np.stack(labels).astype(np.float32))
        else:
            y = torch.from_numpy(np.stack(labels).astype(np.int64))
        batches.append((x, y))
    return batches


def make_metric_cases() -> dict[str, dict[str, np.ndarray]]:
    """Deterministic (prediction, ground truth) mask sets for the metric fixtures, 64 x 64.

    binary_*: bool (N, 64, 64) pairs; multiclass: int64 (N, 64, 64) label maps with 4 classes, some classes absent
    from both maps, some from one only."""
    size = 64
    yy, xx = np.mgrid[0:size, 0:size]

    def disc(cy: float, cx: float, r: float) -> np.ndarray:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r

    empty = np.zeros((size, size), bool)
    pairs = {
        "both_empty": (empty, empty),
        "pred_empty": (empty, disc(30, 30, 8)),
        "gt_empty": (disc(20, 40, 6), empty),
        "identical": (disc(32, 32, 10), disc(32, 32, 10)),
        "shifted": (disc(30, 30, 10), disc(34, 37, 10)),
        "nested": (disc(32, 32, 5), disc(32, 32, 12)),
        "two_blobs": (disc(15, 15, 5) | disc(50, 50, 7), disc(16, 14, 6)),
    }
    cases = {f"binary_{k}": {"pred": p[None], "gt": g[None]} for k, (p, g) in pairs.items()}
    cases["binary_all"] = {
        "pred": np.stack([p for p, _ in pairs.values()]),
        "gt": np.stack([g for _, g in pairs.values()]),
    }
    rs = np.random.RandomState(5)
    preds, gts = [], []
    for i in range(5):
        gt = np.zeros((size, size), np.int64)
        pred = np.zeros((size, size), np.int64)
        gt[disc(20, 20, 8 + i)] = 1
        pred[disc(21 + i, 20, 8)] = 1
        if i % 2 == 0:  # class 2 in both
            gt[disc(45, 45, 9)] = 2
            pred[disc(44, 47, 8 + i)] = 2
        if i == 1:  # class 2 only in the prediction
            pred[disc(45, 20, 5)] = 2
        if i == 3:  # class 3 only in the ground truth
            gt[disc(50, 15, 6)] = 3
        if i == 4:  # class 3 in both, small
            gt[disc(10, 50, 3)] = 3
            pred[disc(11, 50, 3 + rs.randint(0, 2))] = 3
        preds.append(pred)
        gts.append(gt)
    cases["multiclass"] = {"pred": np.stack(preds), "gt": np.stack(gts)}
    return cases


def _checksum(t: torch.Tensor) -> dict[str, float]:
    a = t.detach().double()
    return {"sum": float(a.sum()), "sumsq": float((a * a).sum())}


def selected_indices(numel: int) -> list[int]:
    """Flat indices recorded per tensor: spread over the tensor, deterministic."""
    if numel <= SELECTED:
        return list(range(numel))
    return sorted({(i * 7919 + 13) % numel for i in range(SELECTED)})


def tensor_stats(t: torch.Tensor) -> dict[str, object]:
    a = t.detach().double().flatten()
    idx = selected_indices(a.numel())
    return {"sum": float(a.sum()), "norm": float(a.norm()), "values": [float(a[i]) for i in idx]}


def state_stats(state: dict[str, torch.Tensor]) -> dict[str, dict[str, object]]:
    return {k: tensor_stats(v) for k, v in state.items() if v.is_floating_point()}


# ---------------------------------------------------------------------------------------------------------------
# Driving the official code (needs --official and its dependencies)
# ---------------------------------------------------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.steps: list[list[float]] = []  # lr of every param group at each optimiser step
        self.losses: list[dict[str, object]] = []  # every criterion call
        self.scalars: list[tuple[str, float, int]] = []
        self.after_first_step: dict[str, dict[str, object]] | None = None
        self.model: torch.nn.Module | None = None


REC = _Recorder()


class _FixedLoader:
    """Stands in for a DataLoader: the same batches, in the same order, every epoch."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches
        self.dataset = [None] * sum(len(b[0]) for b in batches)  # their loop divides by len(loader.dataset)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Writer:
    """tensorboardX SummaryWriter stand-in that keeps the logged scalars."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def add_scalar(self, tag: str, value, step: int) -> None:
        REC.scalars.append((tag, float(value), int(step)))

    def close(self) -> None:
        pass


def _install_recorders() -> None:
    base_adamw = torch.optim.AdamW
    base_ce = torch.nn.CrossEntropyLoss
    base_bce = torch.nn.BCEWithLogitsLoss

    class RecordingAdamW(base_adamw):
        def step(self, closure=None):
            REC.steps.append([g["lr"] for g in self.param_groups])
            out = super().step(closure)
            if len(REC.steps) == 1 and REC.model is not None:
                REC.after_first_step = state_stats(REC.model.state_dict())
            return out

    def recording(base):
        class Recording(base):
            def forward(self, input, target):
                loss = super().forward(input, target)
                REC.losses.append({"train": torch.is_grad_enabled(), "loss": float(loss.detach())})
                return loss

        return Recording

    torch.optim.AdamW = RecordingAdamW
    torch.nn.CrossEntropyLoss = recording(base_ce)
    torch.nn.BCEWithLogitsLoss = recording(base_bce)


_ORIGINAL: dict[str, object] = {}


def _import_official(path: Path):
    """Import their two scripts once; keep their model loaders before any patch."""
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    import train_cls  # noqa: PLC0415  (the official scripts, importable only with --official)
    import train_seg  # noqa: PLC0415

    if not _ORIGINAL:
        _install_recorders()
        _ORIGINAL["load_model"] = train_cls.load_model
        _ORIGINAL["load_model_seg"] = train_seg.load_model_seg
    train_cls.SummaryWriter = _Writer
    train_seg.SummaryWriter = _Writer
    return train_cls, train_seg


def _args(setting: str, **over) -> SimpleNamespace:
    cfg = SETTINGS[setting]
    common = dict(
        lr=cfg["lr"], batch_size=cfg["batch_size"], num_epochs=cfg["epochs"], num_workers=0, pretrained="False",
        img_size=IMG, wd=0.0, optim="AdamW", checkpoint="", warmup_epochs=5, num_classes=cfg["num_classes"],
        data_dir=f"./data/{setting}",
    )  # fmt: skip
    if cfg["task"] == "cls":
        common["model_name"] = "TinyUSFM"
    else:
        common.update(model_name="TinyUSFM_Seg", task_type="tumor")
    common.update(over)
    return SimpleNamespace(**common)


def _patch_data_and_model(module, loader_attr: str, setting: str, state: dict[str, torch.Tensor]) -> None:
    train = make_batches(setting, "train")
    val = make_batches(setting, "val")
    module.DataProcessor.get_data_loaders = staticmethod(
        lambda args: (_FixedLoader(train), _FixedLoader(val), _FixedLoader(val))
    )
    original = _ORIGINAL[loader_attr]

    def load(args, device):
        model = original(args, device)  # their constructor; pretrained='False' -> no checkpoint read
        model.load_state_dict(state, strict=True)
        torch.manual_seed(TORCH_SEED)
        REC.model = model
        return model

    setattr(module, loader_attr, load)


def run_training(official: Path, setting: str) -> dict[str, object]:
    train_cls, train_seg = _import_official(official)
    cfg = SETTINGS[setting]
    module, attr = (train_cls, "load_model") if cfg["task"] == "cls" else (train_seg, "load_model_seg")
    args = _args(setting)
    # The official constructor gives the key layout; the initial state is generated from it.
    shell = _ORIGINAL[attr](args, torch.device("cpu"))
    shapes = {k: list(v.shape) for k, v in shell.state_dict().items()}
    num_params = sum(p.numel() for p in shell.parameters())
    del shell
    state = make_initial_state(shapes)
    _patch_data_and_model(module, attr, setting, state)
    global REC
    REC = _Recorder()
    with tempfile.TemporaryDirectory() as work, contextlib.chdir(work):
        if cfg["task"] == "seg":
            train_seg.set_seed()  # their __main__ seeds before train_model
        module.train_model(args)
    final = REC.model.state_dict()
    train_losses = [r["loss"] for r in REC.losses if r["train"]]
    val_losses = [r["loss"] for r in REC.losses if not r["train"]]
    return {
        "setting": cfg,
        "torch_seed_before_training": TORCH_SEED,
        "num_parameters": num_params,
        "initial_state_shapes": shapes,
        "initial_state_checksums": {k: _checksum(v) for k, v in state.items() if v.is_floating_point()},
        "input_checksums": {
            split: [[_checksum(x), _checksum(y.double())] for x, y in make_batches(setting, split)]
            for split in ("train", "val")
        },
        "step_lrs": REC.steps,
        "train_losses": train_losses,
        "val_losses": val_losses,
        "logged_scalars": REC.scalars,
        "after_first_step": REC.after_first_step,
        "final": state_stats(final),
        "final_num_batches_tracked": {k: int(v) for k, v in final.items() if k.endswith("num_batches_tracked")},
    }


def self_agreement(main: dict, others: list[dict], threads: list[int]) -> dict[str, object]:
    """How far the official code's own repeated runs (other thread counts: another float summation order, nothing
    else changed) move from the recorded run: per step the largest relative loss difference, per tensor the largest
    absolute difference of the recorded elements and of the sum and the largest relative difference of the norm.

    Why: a training run amplifies rounding differences step by step (Adam turns the pure-noise gradient of a
    convolution bias that feeds a BatchNorm into full-size steps), so no other implementation can agree with the
    official numbers better than the official code agrees with itself; the test's tolerance is never tighter than
    this envelope."""

    def losses(key: str) -> list[float]:
        return [
            max((abs(o[key][i] / v - 1.0) if v else abs(o[key][i])) for o in others) if others else 0.0
            for i, v in enumerate(main[key])
        ]

    def params(key: str) -> dict[str, dict[str, float]]:
        out = {}
        for name, rec in main[key].items():
            alt = [o[key][name] for o in others]
            out[name] = {
                "values": max((max(abs(a - b) for a, b in zip(o["values"], rec["values"])) for o in alt), default=0.0),
                "sum": max((abs(o["sum"] - rec["sum"]) for o in alt), default=0.0),
                "norm_rel": max((abs(o["norm"] / rec["norm"] - 1.0) if rec["norm"] else 0.0 for o in alt), default=0.0),
            }
        return out

    return {
        "threads": threads,
        "train_losses_rel": losses("train_losses"),
        "val_losses_rel": losses("val_losses"),
        "after_first_step": params("after_first_step"),
        "final": params("final"),
    }


class _Tiny(torch.nn.Module):
    """One-parameter stand-in model for the schedule-only runs (cls: (B, 2) logits, seg: (B, 1, H, W))."""

    def __init__(self, seg: bool) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seg = seg

    def forward(self, x):
        if self.seg:
            return x[:, :1] * self.w
        return x.mean(dim=(2, 3))[:, :2] * self.w


def run_schedule(official: Path, task: str, epochs: int) -> dict[str, object]:
    """Their loop for `epochs` epochs with a one-parameter model and one tiny batch per epoch."""
    train_cls, train_seg = _import_official(official)
    module = train_cls if task == "cls" else train_seg
    x = torch.linspace(-1, 1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    y = torch.tensor([0, 1]) if task == "cls" else (x[:, 0] > 0).float()
    batches = [(x, y)]
    module.DataProcessor.get_data_loaders = staticmethod(
        lambda args: (_FixedLoader(batches), _FixedLoader(batches), _FixedLoader(batches))
    )
    attr = "load_model" if task == "cls" else "load_model_seg"
    setattr(module, attr, lambda args, device: _Tiny(task == "seg"))
    args = _args("cls" if task == "cls" else "seg_binary", num_epochs=epochs)
    global REC
    REC = _Recorder()
    with tempfile.TemporaryDirectory() as work, contextlib.chdir(work):
        module.train_model(args)
    logged_tag = "Learning_Rate" if task == "cls" else "LearningRate"
    return {
        "epochs": epochs,
        "base_lr": args.lr,
        "warmup_epochs": args.warmup_epochs,
        "train_lr": [s[0] for s in REC.steps],  # the lr each epoch trains at (one step per epoch)
        "logged_lr": [v for tag, v, _ in REC.scalars if tag == logged_tag],  # what their log reports per epoch
    }


def _evaluate_seg(official: Path, pred: np.ndarray, gt: np.ndarray, num_classes: int) -> dict[str, float]:
    sys.path.insert(0, str(official))
    from utils.evaluate import Evaluator_seg  # noqa: PLC0415

    if num_classes == 2:  # logits whose sigmoid > 0.5 is exactly `pred`
        logits = torch.from_numpy(np.where(pred, 4.0, -4.0).astype(np.float32))[:, None]
        labels = torch.from_numpy(gt.astype(np.float32))
    else:  # logits whose argmax is exactly `pred`
        logits = torch.nn.functional.one_hot(torch.from_numpy(pred), num_classes).permute(0, 3, 1, 2).float() * 4.0
        labels = torch.from_numpy(gt)

    class Replay(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.i = 0

        def forward(self, x):
            out = logits[self.i : self.i + len(x)]
            self.i += len(x)
            return out

    images = torch.zeros(len(pred), 1)
    loader = [(images[i : i + 2], labels[i : i + 2]) for i in range(0, len(pred), 2)]
    metrics = Evaluator_seg.evaluate_model(Replay(), loader, torch.device("cpu"), num_classes)
    return {k: float(v) for k, v in metrics.items()}


def run_metrics(official: Path) -> dict[str, object]:
    sys.path.insert(0, str(official))
    from medpy.metric.binary import dc, hd95  # noqa: PLC0415
    from utils.evaluate import Evaluator  # noqa: PLC0415

    out: dict[str, object] = {"seg": {}, "medpy": {}, "cls": {}}
    for name, case in make_metric_cases().items():
        num_classes = 2 if name.startswith("binary") else 4
        out["seg"][name] = _evaluate_seg(official, case["pred"], case["gt"], num_classes)
    for name, case in make_metric_cases().items():
        if name.startswith("binary") and name != "binary_all":
            p, g = case["pred"][0], case["gt"][0]
            out["medpy"][name] = {
                "dc": float(dc(p, g)),
                "hd95": float(hd95(p, g)) if p.any() and g.any() else None,
            }
    # Classification metrics: deterministic logits for a binary and a 3-class problem.
    rs = np.random.RandomState(9)
    for name, classes, n in (("binary", 2, 20), ("multiclass", 3, 24)):
        labels = torch.from_numpy(np.arange(n) % classes)
        logits = torch.from_numpy(rs.standard_normal((n, classes)).astype(np.float32))
        logits[torch.arange(n), labels] += torch.from_numpy(rs.uniform(-0.5, 2.0, n).astype(np.float32))
        loader = [(logits[i : i + 4], labels[i : i + 4]) for i in range(0, n, 4)]
        metrics, preds, _ = Evaluator.evaluate_model(torch.nn.Identity(), loader, torch.device("cpu"))
        out["cls"][name] = {
            "metrics": {k: float(v) for k, v in metrics.items()},
            "logits_sha256": hashlib.sha256(logits.numpy().tobytes()).hexdigest(),
            "preds": [int(p) for p in preds],
        }
    return out


def _provenance(official: Path) -> dict[str, object]:
    try:
        commit = subprocess.run(
            ["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    versions = {}
    for name in ("torch", "torchvision", "timm", "medpy", "numpy", "scipy", "sklearn", "PIL"):
        try:
            mod = __import__(name)
            versions[name] = getattr(mod, "__version__", "unknown")
        except ImportError:
            versions[name] = "not installed"
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:  # medpy 0.4.0's own __version__ says 0.3.0
        versions["medpy"] = version("MedPy")
    except PackageNotFoundError:
        versions["medpy"] = "not installed"
    return {
        "official_repository": "MacDunno/TinyUSFM",
        "official_commit": commit,
        "python": sys.version.split()[0],
        "versions": versions,
        "torch_threads": torch.get_num_threads(),
        "command": "python benchmarks/official_parity.py --official <checkout>",
    }


def _write(name: str, obj: object, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, type=Path, help="checkout of MacDunno/TinyUSFM")
    parser.add_argument("--out", type=Path, default=FIXTURE_DIR, help="fixture folder")
    parser.add_argument(
        "--only", nargs="*", default=None, help="parts to run: cls seg_binary seg_multiclass schedule metrics"
    )
    parser.add_argument(
        "--threads",
        default="1,2,3,4",
        help="torch thread counts of the repeated training runs; the first is the recorded run, the others measure "
        "how well the official code agrees with itself (float summation order)",
    )
    args = parser.parse_args(argv)
    official = args.official.resolve()
    if not (official / "train_cls.py").is_file() or not (official / "train_seg.py").is_file():
        sys.exit(f"{official}: not a TinyUSFM checkout (train_cls.py / train_seg.py missing)")
    torch.set_num_threads(int(args.threads.split(",")[0]))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parts = args.only or ["cls", "seg_binary", "seg_multiclass", "schedule", "metrics"]
    prov = _provenance(official)
    threads = [int(t) for t in args.threads.split(",")]
    for setting in ("cls", "seg_binary", "seg_multiclass"):
        if setting in parts:
            runs = []
            for t in threads:
                print(f"official training: {setting}, {t} thread(s)", flush=True)
                torch.set_num_threads(t)
                runs.append(run_training(official, setting))
            torch.set_num_threads(threads[0])
            record = {"provenance": {**prov, "torch_threads": threads[0]}, **runs[0]}
            record["self_agreement"] = self_agreement(runs[0], runs[1:], threads)
            _write(f"{setting}_train.json", record, args.out)
    if "schedule" in parts:
        print("official schedule: cls 400 epochs, seg 1000 epochs", flush=True)
        sched = {
            "provenance": prov,
            "cls": run_schedule(official, "cls", 400),
            "seg": run_schedule(official, "seg", 1000),
        }
        _write("lr_schedule.json", sched, args.out)
    if "metrics" in parts:
        print("official metrics", flush=True)
        _write("metrics.json", {"provenance": prov, **run_metrics(official)}, args.out)


if __name__ == "__main__":
    main()
