"""The training parts of the `paper` preset: what the official TinyUSFM fine-tuning scripts do, quirks included.

The official scripts (`train_cls.py`, `train_seg.py` of the MacDunno/TinyUSFM repository) train with:

* AdamW, betas (0.9, 0.999), weight decay 0, and ONE learning rate for every parameter. They build layer-decay
  parameter groups, but the classification names never match the rule (every parameter lands in the top group)
  and in segmentation every group's LR is overwritten by the warm-up loop and by the scheduler, which returns one
  value for all groups: layer decay is effectively off (`paper_param_groups`).
* an epoch-level schedule with a double warm-up (`paper_lr`, `PaperLRSchedule`): LR·(e+1)/5 for epochs 0-4 set by
  hand, then a warm-up-then-linear scheduler stepped at the end of each epoch from epoch 5 on, which starts its
  own warm-up over again (multipliers 1, 1, 0.6, 0.8, 1, 1 for epochs 4-9) and decays linearly towards 1e-6,
  ending at 2.25e-6 after 400 epochs and 1.5e-6 after 1000.
* segmentation losses on the official decoder's output (`PaperSegLoss`): one sigmoid channel with
  BCE-with-logits for a binary task, cross-entropy otherwise.
* in segmentation, a validation-loss pass with the network still in TRAIN mode before the evaluation
  (`TrainModeValidationPass`): BatchNorm statistics move on the validation images, dropout and drop path draw.
* data-loader workers reseeded to 42 + worker id at every epoch (`paper_worker_init_fn`).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

logger = logging.getLogger(__name__)

PAPER_END_LR = 1e-6
PAPER_BETAS = (0.9, 0.999)
PAPER_WORKER_SEED = 42


def paper_param_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """One AdamW parameter group, weight decay 0: what the official groups amount to (see the module docstring).

    Parameters without `requires_grad` are left out; AdamW would skip them anyway (they never get a gradient).
    """
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr, "weight_decay": 0.0}]


def build_paper_optimizer(model: nn.Module, lr: float = 1e-4) -> torch.optim.AdamW:
    """AdamW(betas (0.9, 0.999), eps 1e-8, weight decay 0) over one group at `lr`."""
    return torch.optim.AdamW(paper_param_groups(model, lr), lr=lr, betas=PAPER_BETAS, weight_decay=0.0)


def paper_lr(
    epoch: int,
    base_lr: float,
    warmup_epochs: int = 5,
    max_epochs: int = 400,
    end_lr: float = PAPER_END_LR,
    power: float = 1.0,
) -> float:
    """The learning rate the official scripts train epoch `epoch` (0-based) at.

    Epochs `e < W` (W = warm-up epochs) run at base·(e+1)/W, set by hand. From epoch W on, the official
    `WarmupPolyLR` is stepped at the end of every epoch; after k = e - W steps its own closed form gives, with
    j = k + 1: base·(j+1)/W while j < W (a second warm-up), else end + (base - end)·(1 - (j - W)/(N - W))^power.
    Epoch W itself (k = 0) still runs at the last hand-set value, base.
    """
    if epoch < warmup_epochs:  # as the official hand-set warm-up: (lr * (e + 1)) / W
        return base_lr * (epoch + 1) / warmup_epochs
    k = epoch - warmup_epochs
    if k == 0:
        return base_lr
    j = k + 1
    if j < warmup_epochs:  # floating-point order as the official scheduler: the factor first
        return base_lr * ((j + 1) / warmup_epochs)
    factor = (1 - (j - warmup_epochs) / (max_epochs - warmup_epochs)) ** power
    return end_lr + (base_lr - end_lr) * factor


class PaperLRSchedule(LRScheduler):
    """`paper_lr` as a PyTorch scheduler stepped once at the END of every epoch (MONAI `LrScheduleHandler`,
    epoch level). After construction every group trains at `paper_lr(0)`; after k steps at `paper_lr(k)`. Its
    state dict (the step count) is saved and restored with the training state, so a resumed run continues the
    sequence.

    Args:
        optimizer: the optimiser whose groups all get the one LR.
        base_lr: the official `--lr` (1e-4).
        warmup_epochs: the official `--warmup_epochs` (5).
        max_epochs: the official `--num_epochs` (400 classification, 1000 segmentation).
        end_lr: the official scheduler's end LR (1e-6).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float = 1e-4,
        warmup_epochs: int = 5,
        max_epochs: int = 400,
        end_lr: float = PAPER_END_LR,
        last_epoch: int = -1,
    ) -> None:
        self.base_lr = base_lr
        self.warmup_epochs = warmup_epochs
        self.max_epochs = max_epochs
        self.end_lr = end_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        lr = paper_lr(self.last_epoch, self.base_lr, self.warmup_epochs, self.max_epochs, self.end_lr)
        return [lr for _ in self.optimizer.param_groups]


class PaperSegLoss(nn.Module):
    """The official segmentation loss on the official decoder's output.

    Binary task (`num_classes == 2`, one output channel): `BCEWithLogitsLoss(pred, label.float())`. More classes:
    `CrossEntropyLoss(pred, label)`. `label` is the pipeline's (B, 1, H, W) label map.

    Args:
        num_classes: classes, background included.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bce = nn.BCEWithLogitsLoss()
        self.ce = nn.CrossEntropyLoss()

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        label = torch.as_tensor(label)
        if label.ndim == pred.ndim:
            label = label[:, 0]
        if self.num_classes == 2:
            return self.bce(pred, (label > 0).to(pred.dtype).unsqueeze(1))
        return self.ce(pred, label.long())


def paper_worker_init_fn(worker_id: int) -> None:
    """Seed python, numpy and torch with 42 + worker id in each data-loader worker (the official rule).

    Workers are not persistent, so every epoch each worker replays the same augmentation stream; only the shuffled
    order (drawn in the main process) changes. MONAI's random transforms keep their own generators, so they are
    reseeded from the same seed, as MONAI's own `worker_init_fn` does.
    """
    from monai.data.utils import set_rnd

    seed = PAPER_WORKER_SEED + worker_id
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        set_rnd(info.dataset, seed=seed)  # type: ignore[arg-type]


def paper_determinism(seed: int = 42) -> None:
    """The official `set_seed`: python, numpy and torch seeded, cuDNN deterministic and not benchmarking."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


class TrainModeValidationPass:
    """Before each validation, a loss pass over the validation loader with the network in TRAIN mode.

    The official segmentation script computes its validation loss without switching to eval mode, so the pass moves
    BatchNorm running statistics with the validation images and draws dropout / drop-path masks from the torch
    generator; both change every later number. Attach it after the LR handler and before the `ValidationHandler`
    (the official order: train, scheduler step, this pass, evaluation). The mean loss is logged and kept in
    `engine.state.metrics["paper_val_loss"]`.

    Args:
        data_loader: the validation loader.
        network: the network being trained.
        loss_function: the training loss.
        device: where the batches go.
        interval: run every `interval` epochs (the validation interval).
    """

    def __init__(
        self,
        data_loader: Any,
        network: nn.Module,
        loss_function: nn.Module,
        device: torch.device | str = "cpu",
        interval: int = 1,
    ) -> None:
        self.data_loader = data_loader
        self.network = network
        self.loss_function = loss_function
        self.device = torch.device(device)
        self.interval = interval

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Any) -> float:
        self.network.train()
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in self.data_loader:
                image = torch.as_tensor(batch["image"]).to(self.device)
                label = torch.as_tensor(batch["label"]).to(self.device)
                loss = self.loss_function(self.network(image), label)
                total += float(loss) * image.shape[0]
                count += image.shape[0]
        value = total / max(count, 1)
        engine.state.metrics["paper_val_loss"] = value
        logger.info("epoch %d: validation loss (train mode, as the official script) %.4f", engine.state.epoch, value)
        return value
