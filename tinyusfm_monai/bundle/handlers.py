"""Ignite handlers for crash-safe training and honest inference.

MONAI's CheckpointSaver writes non-atomically and forgets the best score on restart, so a resumed
run could overwrite `models/model.pt` with a worse model. These handlers keep one atomic
`last.pt` with everything needed to continue (model, optimizer, scheduler, epoch, RNG, best score)
and write the best model only when the restored best is beaten.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from ignite.engine import Engine, Events
from torch import nn

logger = logging.getLogger(__name__)


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def rng_state() -> dict[str, torch.Tensor]:
    """Random states as tensors, so `torch.load(weights_only=True)` can read them back."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_meta": torch.tensor([np_state[2], np_state[3]], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_state[4]], dtype=torch.float64),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_meta": torch.tensor([py_version], dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if py_gauss is None else py_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    meta = state["numpy_meta"].tolist()
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), meta[0], meta[1], float(state["numpy_gauss"][0]))
    )
    gauss = float(state["python_gauss"][0])
    random.setstate((int(state["python_meta"][0]), tuple(state["python"].tolist()), None if gauss != gauss else gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


class BestModelSaver:
    """Save the network to `path` whenever the evaluator's `metric_name` beats the best so far."""

    def __init__(self, network: nn.Module, path: str, metric_name: str, greater_is_better: bool = True) -> None:
        self.network = network
        self.path = Path(path)
        self.metric_name = metric_name
        self.sign = 1.0 if greater_is_better else -1.0
        self.best = -float("inf")
        self.best_epoch = -1

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        value = float(engine.state.metrics[self.metric_name])
        if value == value and self.sign * value > self.best:  # NaN never wins
            self.best = self.sign * value
            trainer_epoch = getattr(getattr(engine, "trainer", None), "state", None)
            self.best_epoch = trainer_epoch.epoch if trainer_epoch is not None else engine.state.epoch
            atomic_save(_unwrap(self.network).state_dict(), self.path)
            logger.info("new best %s = %.4f: saved %s", self.metric_name, value, self.path)

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])


class ResumeHandler:
    """Save everything needed to continue after each epoch; continue from it when the run starts again."""

    def __init__(self, path: str, save_dict: Mapping[str, Any], enabled: bool = True) -> None:
        self.path = Path(path)
        self.save_dict = dict(save_dict)
        self.enabled = enabled

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def save(self, engine: Engine) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
            return  # one writer; every rank loads the same file on restart
        state: dict[str, Any] = {}
        for name, obj in self.save_dict.items():
            obj = _unwrap(obj) if isinstance(obj, nn.Module) else obj
            state[name] = obj.state_dict()
        state["trainer"] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        state["rng"] = rng_state()
        atomic_save(state, self.path)

    def load(self, engine: Engine) -> None:
        if not self.enabled or not self.path.is_file():
            return
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        for name, obj in self.save_dict.items():
            if name not in state:
                raise KeyError(f"{self.path}: resume checkpoint has no {name!r}; delete it to start afresh")
            obj = _unwrap(obj) if isinstance(obj, nn.Module) else obj
            obj.load_state_dict(state[name])
        engine.state.epoch = int(state["trainer"]["epoch"])
        engine.state.iteration = int(state["trainer"]["iteration"])
        set_rng_state(state["rng"])
        logger.info("resumed from %s at epoch %d of %d", self.path, engine.state.epoch, engine.state.max_epochs)


class TrainedWeightsLoader:
    """Load `models/model.pt` before inference or evaluation, or stop with a message saying how to get it.

    Predicting with random weights would produce plausible-looking nonsense; this is the guard.
    """

    def __init__(self, load_path: str, network: nn.Module, bundle_root: str = ".") -> None:
        self.load_path = Path(load_path)
        self.network = network
        self.bundle_root = bundle_root

    def attach(self, engine: Engine) -> None:
        self.load()

    def load(self) -> None:
        if not self.load_path.is_file():
            root = self.bundle_root
            raise FileNotFoundError(
                f"{self.load_path}: no trained weights, refusing to predict with random ones. Train them with "
                f"`python -m monai.bundle run --config_file {root}/configs/train.json --dataset_dir DATA "
                f"--pretrained {root}/models/pretrained/TinyUSFM.pth` (the pretrained backbones are listed in "
                f"{root}/large_files.yml: `python -m monai.bundle download_large_files --bundle_path {root}`), "
                f"or copy a fine-tuned model.pt there."
            )
        state = torch.load(self.load_path, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
            state = state["model"]
        try:
            _unwrap(self.network).load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise RuntimeError(f"{self.load_path}: does not fit this bundle's network ({first})") from None
        logger.info("loaded trained weights from %s", self.load_path)
