"""A STAND-IN for USFM's knowledge on the ultrasound phantom: a small USFM-architecture teacher trained with labels.

Not part of the method. No USFM weights exist on the development machines, and the masked-image-model teacher that
`configs/pretrain.json` trains within CPU minutes does not beat the vanilla student on held-out phantom tasks
(README, "Distillation bundle"), so it has nothing worth distilling. To show the distillation chain with a teacher
that *knows* the phantom, the demo and the ablation benchmark use this one: multi-task cross-entropy on phantom
classification tasks that neither the probe tasks of the benchmark (aul, stmus, uf1990, cubs) nor the demo's task
(busi) belong to. It is clearly labelled wherever it is used; it stands for what USFM learnt from 2M images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tinyusfm_monai.networks import VisionTransformer, save_official

from .shards import normalize_on_device

logger = logging.getLogger(__name__)

STANDIN_TASKS = ("mmotu_classification", "fetal_planes_classification", "tn3k_classification")


def small_teacher_def(image_size: int = 64, embed_dim: int = 192, depth: int = 6, num_heads: int = 6) -> dict:
    """Config of a USFM-architecture teacher (q/v bias, relative position bias, layer scale 0.1), narrower and
    shallower than USFM for CPU runs: the `teacher_def` override of the bundle's configs."""
    return {
        "_target_": "tinyusfm_monai.networks.VisionTransformer",
        "img_size": image_size,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": num_heads,
        "qv_bias": True,
        "use_abs_pos_emb": False,
        "use_rel_pos_bias": True,
        "init_values": 0.1,
    }


def build(definition: dict) -> VisionTransformer:
    """Instantiate a `teacher_def`-style dict (`_target_` + keyword arguments)."""
    from monai.bundle import ConfigParser

    return ConfigParser({"net": definition}).get_parsed_content("net")


def phantom_task_images(
    task: str, n: int, image_size: int, seed: int, split: str = "training"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 (n, 3, S, S), labels (n,)) of a phantom classification task, rendered in memory (grey → RGB)."""
    from tinyusfm_monai.data.phantom import render_sample

    images, labels = [], []
    for i in range(n):
        image, _, label = render_sample(task, split, i, image_size, seed)
        images.append(np.repeat(image[None], 3, 0) if image.ndim == 2 else image.transpose(2, 0, 1))
        labels.append(int(label))
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


def train_standin_teacher(
    out_path: str | Path,
    image_size: int = 64,
    steps: int = 600,
    n_train: int = 400,
    tasks: Sequence[str] = STANDIN_TASKS,
    definition: dict[str, Any] | None = None,
    batch_per_task: int = 16,
    lr: float = 5e-4,
    seed: int = 0,
    data_seed: int = 1,
    device: str | torch.device = "cpu",
) -> Path:
    """Train the stand-in teacher (see the module docstring) and write it in the official USFM key layout.

    Multi-task cross-entropy, one linear head per task, AdamW (weight decay 0.05), `batch_per_task` images of every
    task per step, horizontal flip every other step. Returns `out_path`.
    """
    definition = definition or small_teacher_def(image_size)
    device = torch.device(device)
    torch.manual_seed(seed)
    net = build(definition).to(device)
    data = [tuple(t.to(device) for t in phantom_task_images(t, n_train, image_size, data_seed)) for t in tasks]
    heads = torch.nn.ModuleList([torch.nn.Linear(net.embed_dim, int(y.max()) + 1) for _, y in data]).to(device)
    opt = torch.optim.AdamW(list(net.parameters()) + list(heads.parameters()), lr=lr, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    t0 = time.time()
    for step in range(steps):
        loss = torch.zeros((), device=device)
        for (x, y), head in zip(data, heads):
            idx = torch.randint(len(x), (batch_per_task,), generator=gen).to(device)
            xb = normalize_on_device(x[idx])
            loss = loss + F.cross_entropy(head(net(xb.flip(-1) if step % 2 else xb)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    path = save_official(net.cpu(), out_path)
    logger.info("stand-in teacher (supervised on %s): %d steps in %.0f s -> %s", ", ".join(tasks), steps,
                time.time() - t0, path)  # fmt: skip
    return path
