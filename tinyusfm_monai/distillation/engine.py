"""The distillation step for MONAI's `SupervisedTrainer`, and what it reports.

`SupervisedTrainer` runs the loop; `DistillationIteration` replaces its iteration (views → frozen teacher →
student → consistency-weighted loss → AMP-aware step). Resume, checkpointing and the student export are the
project's shared handlers (`tinyusfm_monai.handlers`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine

from .consistency import ConsistencyWeighting
from .losses import DistillationLoss
from .masks import CLEAN, DomainMasker
from .model import FrozenTeacher
from .shards import normalize_on_device

logger = logging.getLogger(__name__)

LOSS_TERMS = ("loss", "feature", "attn", "recon", "consistency")


class DistillationIteration:
    """`iteration_update` for `SupervisedTrainer`: one distillation step.

    The clean batch (uint8 from the decoded pool, normalised here on the device) is augmented, turned into the
    masked views, all views are stacked so the teacher and the student each run once; the teacher's final tokens
    of the two views give the consistency weights. Mixed precision follows the trainer (`amp`, `amp_kwargs`:
    bfloat16 needs no grad scaler; float16 uses `grad_scaler`).
    """

    def __init__(
        self,
        teacher: FrozenTeacher,
        masker: DomainMasker,
        loss: DistillationLoss,
        consistency: ConsistencyWeighting,
        grad_scaler: torch.amp.GradScaler | None = None,
        image_key: str = "image",
        clip_grad_norm: float = 0.0,
    ) -> None:
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

    def __call__(self, engine: Engine, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        device = engine.state.device
        x = batchdata[self.image_key]
        x = (x.as_tensor() if hasattr(x, "as_tensor") else x).to(device, non_blocking=engine.non_blocking)
        x = self.masker.augment(normalize_on_device(x))
        views = self.masker(x)
        names = list(views)
        stacked = torch.cat([views[n][0] for n in names])
        masks = {n: views[n][1] for n in names}
        b = x.shape[0]
        n_student = len(names) * b
        clean = self.consistency.needs_clean
        amp = bool(getattr(engine, "amp", False)) and device.type == "cuda"
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, enabled=amp, **(getattr(engine, "amp_kwargs", None) or {})):
            t_out, weights = None, None
            if self.loss.feature_weight > 0 or self.loss.attn_weight > 0:  # the vanilla ablation needs no teacher
                t_out = self.teacher(torch.cat((stacked, x)) if clean else stacked)  # one pass for all views
                final = t_out["final"]
                h = {n: final[i * b : (i + 1) * b] for i, n in enumerate(names)}  # type: ignore[index]
                if clean:
                    h[CLEAN] = final[n_student:]  # type: ignore[index]
                    t_out = _first_rows(t_out, n_student)
                weights = self.consistency(h, self.progress(engine))
            s_out = engine.network(stacked)
            terms = self.loss(s_out, t_out, x, names, masks, weights)
        optimizer_step(engine, terms["loss"], self.grad_scaler if amp else None, self.clip_grad_norm)
        out: dict[str, Any] = {"image": x, "pred": None, "label": None}
        out.update({k: v.detach() for k, v in terms.items()})
        if weights is not None:
            out["weights"] = weights.detach()  # (1 or V, B[, N]): ConsistencyDiagnostics summarises them
            out["consistency"] = weights.detach().float().std()  # spread of the weights: 0 = uniform
        if "index" in batchdata:
            out["index"] = batchdata["index"]
        return out


def optimizer_step(
    engine: Engine, loss: torch.Tensor, grad_scaler: torch.amp.GradScaler | None, clip_grad_norm: float
) -> None:
    """Backward and step, with the float16 grad scaler when one is enabled (bfloat16 needs none) and optional
    gradient-norm clipping (after unscaling)."""
    scaler = grad_scaler if grad_scaler is not None and grad_scaler.is_enabled() else None
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_grad_norm > 0:
            scaler.unscale_(engine.optimizer)
            torch.nn.utils.clip_grad_norm_(engine.network.parameters(), clip_grad_norm)
        scaler.step(engine.optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(engine.network.parameters(), clip_grad_norm)
        engine.optimizer.step()


def _first_rows(t_out: Mapping[str, Any], n: int) -> dict[str, Any]:
    """Teacher outputs restricted to the first `n` rows of the stacked batch (the masked views)."""
    return {
        "final": t_out["final"][:n],
        "features": [t[:n] for t in t_out["features"]],
        "attn": [a[:n] for a in t_out["attn"]],
        "pooled": t_out["pooled"][:n],
    }


def loss_terms(output: Any) -> dict[str, float]:
    """StatsHandler / TensorBoard / progress output transform: the scalar loss terms of an iteration."""
    if isinstance(output, list):  # decollated
        output = output[0]
    return {k: float(output[k]) for k in LOSS_TERMS if k in output and output[k] is not None}
