"""The MONAI training engine pieces of the distillation bundle.

`SupervisedTrainer` runs the loop; `DistillationIteration` replaces its iteration (views → frozen teacher →
student → consistency-weighted loss → AMP-aware step). The handlers add what a multi-day distillation needs:
exact resume after a kill (`ResumeFromCheckpoint` + `RNGState` next to model/optimizer/scheduler/trainer state in
the `CheckpointSaver` dict) and the export of the student in the official TinyUSFM key layout.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from tinyusfm_monai.networks import save_official

from .consistency import ConsistencyWeighting
from .losses import DistillationLoss
from .masks import FREQUENCY, SPATIAL, DomainMasker
from .model import FrozenTeacher, unwrap

logger = logging.getLogger(__name__)

LOSS_TERMS = ("loss", "feature", "attn", "recon", "consistency")
CHECKPOINT_PATTERN = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


class DistillationIteration:
    """`iteration_update` for `SupervisedTrainer`: one distillation step.

    The clean batch is augmented, turned into the masked views, all views are stacked so the teacher and the
    student each run once; the teacher's final tokens of the two views give the consistency weights.
    """

    def __init__(self, teacher: FrozenTeacher, masker: DomainMasker, loss: DistillationLoss,
                 consistency: ConsistencyWeighting, grad_scaler: Optional[torch.amp.GradScaler] = None,
                 image_key: str = "image", clip_grad_norm: float = 0.0) -> None:
        self.teacher = teacher
        self.masker = masker
        self.loss = loss
        self.consistency = consistency
        self.grad_scaler = grad_scaler
        self.image_key = image_key
        self.clip_grad_norm = clip_grad_norm

    @staticmethod
    def progress(engine: Engine) -> float:
        total = (engine.state.max_epochs or 1) * (engine.state.epoch_length or 1)
        return (engine.state.iteration - 1) / max(total, 1)

    def __call__(self, engine: Engine, batchdata: Mapping[str, Any]) -> Dict[str, Any]:
        device = engine.state.device
        x = batchdata[self.image_key]
        x = (x.as_tensor() if hasattr(x, "as_tensor") else x).to(device, non_blocking=engine.non_blocking)
        x = self.masker.augment(x)
        views = self.masker(x)
        names = list(views)
        stacked = torch.cat([views[n][0] for n in names])
        masks = {n: views[n][1] for n in names}
        b = x.shape[0]
        amp = bool(getattr(engine, "amp", False)) and device.type == "cuda"
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, enabled=amp, **(getattr(engine, "amp_kwargs", None) or {})):
            t_out = self.teacher(stacked)
            final = t_out["final"]
            h = {n: final[i * b:(i + 1) * b] for i, n in enumerate(names)}  # type: ignore[index]
            weights = self.consistency(h.get(SPATIAL), h.get(FREQUENCY), self.progress(engine))
            s_out = engine.network(stacked)
            terms = self.loss(s_out, t_out, x, names, masks, weights)
        loss = terms["loss"]
        scaler = self.grad_scaler if (amp and self.grad_scaler is not None and self.grad_scaler.is_enabled()) else None
        if scaler is not None:
            scaler.scale(loss).backward()
            if self.clip_grad_norm > 0:
                scaler.unscale_(engine.optimizer)
                torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.clip_grad_norm)
            scaler.step(engine.optimizer)
            scaler.update()
        else:
            loss.backward()
            if self.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.clip_grad_norm)
            engine.optimizer.step()
        out: Dict[str, Any] = {"image": x, "pred": None, "label": None}
        out.update({k: v.detach() for k, v in terms.items()})
        if weights is not None:
            out["consistency"] = weights.detach().float().std()  # spread of the weights: 0 = uniform
        return out


def loss_terms(output: Any) -> Dict[str, float]:
    """StatsHandler / TensorBoard / progress output transform: the scalar loss terms of an iteration."""
    if isinstance(output, list):  # decollated
        output = output[0]
    return {k: float(output[k]) for k in LOSS_TERMS if k in output and output[k] is not None}


def total_loss(output: Any) -> float:
    return loss_terms(output)["loss"]


class TrainingState:
    """Engine progress (ignite `state_dict`: iteration, epoch length, max epochs) plus every RNG (Python, NumPy,
    torch CPU + CUDA), as one checkpointable object.

    A handler (attached like the others) so the config can put it in the `CheckpointSaver` dict without a
    circular reference to the trainer. Saved at the end of an epoch with the model, optimizer and scheduler, so
    the shuffle order, flips and masks after a resume are the ones the uninterrupted run would have drawn. Under
    DDP only rank 0's state is saved; other ranks derive a distinct stream from it (deterministic, but not
    bit-identical to an uninterrupted multi-GPU run). All values are tensors or ints (`weights_only` loading).
    """

    def __init__(self) -> None:
        self.engine: Optional[Engine] = None

    def attach(self, engine: Engine) -> None:
        self.engine = engine

    def state_dict(self) -> Dict[str, Any]:
        _, keys, pos, has_gauss, cached = np.random.get_state()
        state: Dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "numpy_meta": torch.tensor([pos, has_gauss], dtype=torch.int64),
            "numpy_gauss": torch.tensor(cached, dtype=torch.float64),
            "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        if self.engine is not None:
            state["engine"] = dict(self.engine.state_dict())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.engine is not None and "engine" in state:
            self.engine.load_state_dict(state["engine"])
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
        pos, has_gauss = (int(v) for v in state["numpy_meta"])
        np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                             float(state["numpy_gauss"])))
        random.setstate((3, tuple(int(v) for v in state["python"]), None))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"].cpu().to(torch.uint8))
        if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) + dist.get_rank()
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)


def checkpoint_epochs(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the training checkpoints in `ckpt_dir`, newest first."""
    found = []
    for p in Path(ckpt_dir).glob("*checkpoint_epoch=*.pt"):
        m = CHECKPOINT_PATTERN.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


class ResumeFromCheckpoint:
    """At `STARTED`, restore the newest *readable* training checkpoint of `ckpt_dir` (if any) into `load_dict`.

    MONAI's `CheckpointLoader` needs the path when the config is parsed; a resumable bundle does not know it
    then. A checkpoint cut short by a kill during writing is skipped in favour of the previous one (keep
    `n_saved >= 2` in the saver). `enabled=False` always starts fresh.
    """

    def __init__(self, ckpt_dir: str, load_dict: Dict[str, Any], enabled: bool = True, map_location: Any = "cpu"):
        self.ckpt_dir = ckpt_dir
        self.load_dict = load_dict
        self.enabled = enabled
        self.map_location = map_location
        self.resumed_from: Optional[Path] = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if not self.enabled:
            return
        for epoch, path in checkpoint_epochs(self.ckpt_dir):
            try:
                checkpoint = torch.load(path, map_location=self.map_location, weights_only=True)
            except Exception as exc:  # truncated by a kill: fall back to the previous one
                logger.warning("resume: %s is unreadable (%s), trying an older checkpoint", path, exc)
                continue
            max_epochs = engine.state.max_epochs
            Checkpoint.load_objects(to_load=self.load_dict, checkpoint=checkpoint, strict=True)
            engine.state.max_epochs = max_epochs
            self.resumed_from = path
            logger.info("resume: restored %s (epoch %d, iteration %d)", path, engine.state.epoch,
                        engine.state.iteration)
            return
        logger.info("resume: no checkpoint in %s, starting from scratch", self.ckpt_dir)


class ExportStudent:
    """At `COMPLETED`, write the student backbone in the official TinyUSFM key layout (bare state dict), the file
    the task bundles and the official repository load. Only rank 0 writes."""

    def __init__(self, student: torch.nn.Module, path: str) -> None:
        self.student = student
        self.path = path

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
            return
        path = save_official(unwrap(self.student), self.path)
        logger.info("student exported in the official TinyUSFM layout: %s", path)


class ProgressBar:
    """tqdm progress bar (ignite's) showing the loss terms; MONAI configs attach handlers via `attach(engine)`."""

    def __init__(self, persist: bool = False) -> None:
        self.persist = persist

    def attach(self, engine: Engine) -> None:
        from ignite.handlers import ProgressBar as IgniteProgressBar

        IgniteProgressBar(persist=self.persist).attach(engine, output_transform=loss_terms)


def dist_setup(backend: str = "nccl") -> int:
    """Initialise torch.distributed from the torchrun environment and seed each rank differently; returns rank."""
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    rank = dist.get_rank()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(__import__("os").environ.get("LOCAL_RANK", rank)))
    return rank
