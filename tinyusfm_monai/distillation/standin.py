"""A STAND-IN for USFM's knowledge on the ultrasound phantom: a small USFM-architecture teacher trained with labels.

Not part of the method. No USFM weights exist on the development machines, and the masked-image-model teacher that
`configs/pretrain.json` trains within CPU minutes does not beat the vanilla student on held-out phantom tasks
(README, "Distillation bundle"), so it has nothing worth distilling. To show the distillation chain with a teacher
that *knows* the phantom, the demo and the ablation benchmark use this one: multi-task cross-entropy on phantom
classification tasks that neither the probe tasks of the benchmark (aul, stmus, uf1990, cubs) nor the demo's task
(busi) belong to. It is clearly labelled wherever it is used; it stands for what USFM learnt from 2M images.

Two stand-ins (`kind`):

* `shared` (the one the README's numbers so far were measured with): labels of other phantom tasks. The phantom
  draws every classification task's class c from the same recipe `CURATED_RECIPES[c]` (`data/phantom_tasks.py`:
  class 0 no lesion, 1 a smooth hypoechoic lesion, 2 a spiculated attenuating one, ...), so mmotu's classes 0-2 are
  busi's and aul's "normal / benign / malignant": this teacher has seen the probes' *concepts* (its mmotu head
  applied zero-shot to aul is far above chance), and distillation gains measured with it include that leak.
* `disjoint`: labels only over recipes that no probe or demo task uses (`DISJOINT_RECIPES`: every evaluated task
  has at most 3 classes, recipes 0-2), rendered in the anatomies of the teacher's own tasks; every teacher image
  holds a lesion, so "lesion or not" is not a label it learns either. `zero_shot_accuracy` checks that its heads
  carry nothing of the probe labels (tests/test_distillation_standin.py).
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

from tinyusfm_monai.data.phantom_tasks import CURATED_RECIPES, ClassRecipe
from tinyusfm_monai.networks import VisionTransformer, save_official

from .shards import normalize_on_device

logger = logging.getLogger(__name__)

STANDIN_TASKS = ("mmotu_classification", "fetal_planes_classification", "tn3k_classification")
# the tasks the stand-ins must not have seen: the benchmarks' probe tasks and the demo's task
EVALUATED_TASKS = (
    "aul_classification",
    "stmus_classification",
    "uf1990_classification",
    "cubs_classification",
    "busi_classification",
)
# recipes no evaluated task uses (they use classes 0-2 = CURATED_RECIPES[:3]); all with a lesion
DISJOINT_RECIPES: tuple[ClassRecipe, ...] = (
    CURATED_RECIPES[3],  # several small anechoic cysts
    CURATED_RECIPES[4],  # a lobulated hyperechoic lesion
    CURATED_RECIPES[7],  # a rimmed cyst with a solid component
    ClassRecipe(lesion="isoechoic", margin="smooth", radius=0.14, aspect=1.2),  # an iso-echoic nodule with a halo
)
KINDS = ("shared", "disjoint")


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


def disjoint_task_images(anatomy: str, n: int, image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 (n, 3, S, S), labels (n,)) of the concept-disjoint teacher task in `anatomy`'s organ and probe:
    class c shows `DISJOINT_RECIPES[c]` (classes cycle with the index: balanced)."""
    from tinyusfm_monai.data.phantom_physics import render
    from tinyusfm_monai.data.phantom_tasks import classification_scene, sample_rng
    from tinyusfm_monai.data.registry import get_task

    task = get_task(anatomy)
    images, labels = [], []
    for i in range(n):
        label = i % len(DISJOINT_RECIPES)
        rng = sample_rng(seed, f"standin-disjoint/{anatomy}", "training", i)
        image, _ = render(classification_scene(task, label, rng, recipe=DISJOINT_RECIPES[label]), rng, image_size)
        images.append(np.repeat(image[None], 3, 0) if image.ndim == 2 else image.transpose(2, 0, 1))
        labels.append(label)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


def standin_data(kind: str, tasks: Sequence[str], n: int, image_size: int, seed: int) -> list[tuple]:
    """Per teacher task, (images, labels): its own labels (`shared`) or the disjoint recipes in its anatomy."""
    if kind not in KINDS:
        raise ValueError(f"stand-in kind {kind!r}: choose one of {KINDS}")
    render_task = phantom_task_images if kind == "shared" else disjoint_task_images
    return [render_task(t, n, image_size, seed) for t in tasks]


def fit_standin(
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
    kind: str = "shared",
) -> tuple[VisionTransformer, torch.nn.ModuleList]:
    """The trained stand-in network (eval mode) and its heads, one per teacher task (see the module docstring).

    Multi-task cross-entropy, one linear head per task, AdamW (weight decay 0.05), `batch_per_task` images of every
    task per step, horizontal flip every other step.
    """
    definition = definition or small_teacher_def(image_size)
    device = torch.device(device)
    torch.manual_seed(seed)
    net = build(definition).to(device)
    data = [tuple(t.to(device) for t in pair) for pair in standin_data(kind, tasks, n_train, image_size, data_seed)]
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
    heads.eval()
    logger.info("stand-in teacher (%s, supervised on %s): %d steps in %.0f s", kind, ", ".join(tasks), steps,
                time.time() - t0)  # fmt: skip
    return net, heads


def train_standin_teacher(out_path: str | Path, *args: Any, kind: str = "shared", **kwargs: Any) -> Path:
    """Train the stand-in teacher (`fit_standin`, same arguments) and write it in the official USFM key layout.

    `kind`: `shared` (labels of other phantom tasks: shares the probes' concepts) or `disjoint` (recipes no
    evaluated task uses). Returns `out_path`."""
    net, _ = fit_standin(*args, kind=kind, **kwargs)
    path = save_official(net.cpu(), out_path)
    logger.info("stand-in teacher (%s) -> %s", kind, path)
    return path


@torch.no_grad()
def zero_shot_accuracy(
    net: VisionTransformer, head: torch.nn.Module, task: str, image_size: int, n_fit: int = 120, n_eval: int = 240,
    seed: int = 7,
) -> float:  # fmt: skip
    """How much of `task`'s labels a teacher head carries, without training on them: the head's argmax class is
    mapped to the task label it co-occurs with most on `n_fit` images (a majority mapping, the most any reading of
    the head's decision can get), then scored on `n_eval` other images. At chance: 1 / number of classes."""
    x, y = phantom_task_images(task, n_fit + n_eval, image_size, seed)
    logits = torch.cat([head(net(normalize_on_device(b))) for b in x.split(64)])
    pred = logits.argmax(1).numpy()
    y = y.numpy()
    k = int(y.max()) + 1
    table = np.zeros((logits.shape[1], k))
    np.add.at(table, (pred[:n_fit], y[:n_fit]), 1)
    prior = int(np.bincount(y[:n_fit], minlength=k).argmax())
    mapping = np.where(table.sum(1) > 0, table.argmax(1), prior)
    return float((mapping[pred[n_fit:]] == y[n_fit:]).mean())
