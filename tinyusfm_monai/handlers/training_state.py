"""Training state: everything an exactly resumed run needs, saved in one atomic file and restored in one place.

Used by every training config of the project (the task bundles and the distillation bundle alike):

* `TrainingState` — the engine's progress (epoch, iteration) and every random generator (Python, NumPy, torch
  CPU, every CUDA device, and any extra `torch.Generator` a component draws from, e.g. a device generator for
  masks), as one checkpointable object, so the shuffle order, augmentations and masks after a resume are the ones
  the uninterrupted run would have drawn.
* `BestModelSaver` — writes `models/model.pt` when the validation metric beats the best so far; its best score is
  part of the checkpoint, so a resumed run never overwrites a better model with a worse one.
* `TrainingCheckpoint` — after every epoch, writes `{name: state_dict}` of the model, optimizer, scheduler, grad
  scaler, best-model saver and `TrainingState` to one file with `utils.atomic_path` (a kill during the write
  leaves the previous complete file); when the run starts again it restores them with MONAI's own
  `CheckpointLoader` (strict, `weights_only`, max-epochs guard).

Why not MONAI's `CheckpointSaver` for the periodic file: it writes non-atomically (its DiskSaver uses
`atomic=False`), so a kill during the write could leave the only resume point truncated, and a resumed run does
not know the files the previous run wrote. All values are tensors or numbers, so `torch.load(weights_only=True)`
reads them.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader
from torch import nn

from tinyusfm_monai.utils import atomic_path, is_rank_zero, unwrap

logger = logging.getLogger(__name__)


def rng_state(generators: Sequence[torch.Generator] = ()) -> dict[str, torch.Tensor]:
    """Every random state as tensors: Python, NumPy, torch CPU, all CUDA devices, and `generators`."""
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_meta": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_gauss], dtype=torch.float64),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_meta": torch.tensor([py_version], dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if py_gauss is None else py_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    for i, generator in enumerate(generators):
        state[f"generator_{i}"] = generator.get_state()
    return state


def set_rng_state(state: Mapping[str, torch.Tensor], generators: Sequence[torch.Generator] = ()) -> None:
    """Restore what `rng_state` returned (CUDA states only where this machine has the devices)."""
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    pos, has_gauss = (int(v) for v in state["numpy_meta"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, pos, has_gauss, float(state["numpy_gauss"].reshape(-1)[0])))
    gauss = float(state["python_gauss"][0])
    py_state = tuple(int(v) for v in state["python"])
    random.setstate((int(state["python_meta"][0]), py_state, None if gauss != gauss else gauss))
    if "cuda" in state and torch.cuda.is_available():
        saved = list(state["cuda"].cpu().to(torch.uint8))
        for device, device_state in enumerate(saved[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, device)
    for i, generator in enumerate(generators):
        key = f"generator_{i}"
        if key not in state:
            raise KeyError(f"checkpoint has no state for random generator {i}; it was saved by another configuration")
        generator.set_state(state[key].to(torch.uint8))


@contextmanager
def preserved_rng(generators: Sequence[torch.Generator] = ()) -> Iterator[None]:
    """Run a block without changing any random stream: e.g. building a cache that exists in a first run but not
    in a resumed one must not shift the numbers the rest of the run draws (model initialisation, shuffles)."""
    state = rng_state(generators)
    try:
        yield
    finally:
        set_rng_state(state, generators)


class TrainingState:
    """The engine's progress plus every random generator, as one checkpointable object.

    A handler (attached like the others) so a config can list it in the checkpoint dict without a circular
    reference to the trainer. Under DDP only rank 0's state is saved; on restore the other ranks derive a distinct,
    deterministic stream from it (deterministic, but not bit-identical to an uninterrupted multi-GPU run).

    Args:
        generators: extra `torch.Generator`s to save and restore (e.g. a device generator that draws masks).
    """

    def __init__(self, generators: Sequence[torch.Generator] = ()) -> None:
        self.generators = list(generators)
        self.engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        self.engine = engine

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": rng_state(self.generators)}
        if self.engine is not None:
            state["engine"] = dict(self.engine.state_dict())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.engine is not None and "engine" in state:
            self.engine.load_state_dict(state["engine"])
        set_rng_state(state["rng"], self.generators)
        if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) + dist.get_rank()
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            for generator in self.generators:
                generator.manual_seed(seed)


class BestModelSaver:
    """Save the network to `path` (atomically) whenever the evaluator's `metric_name` beats the best so far.

    Args:
        network: the trained network (a DDP wrapper is unwrapped).
        path: where the best weights go (a bare state dict, the model-zoo `models/model.pt`).
        metric_name: the evaluator metric to compare.
        greater_is_better: False for losses.
    """

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
            trainer_state = getattr(getattr(engine, "trainer", None), "state", None)
            self.best_epoch = trainer_state.epoch if trainer_state is not None else engine.state.epoch
            if is_rank_zero():
                with atomic_path(self.path) as tmp:
                    torch.save(unwrap(self.network).state_dict(), tmp)
                logger.info("new best %s = %.4f: saved %s", self.metric_name, value, self.path)

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])


class TrainingCheckpoint:
    """After every epoch save `save_dict` and the `TrainingState` to `path`; when the run starts again, continue.

    Args:
        path: the checkpoint file (`models/last.pt`).
        save_dict: name -> object with `state_dict` / `load_state_dict` (model, optimizer, scheduler, grad scaler,
            `BestModelSaver`). The engine's progress and every RNG are added as "training_state".
        resume: restore from `path` at start when it exists (False: always start afresh; the file is overwritten).
        generators: extra `torch.Generator`s whose state is saved and restored with the others.
    """

    def __init__(
        self, path: str, save_dict: Mapping[str, Any], resume: bool = True, generators: Sequence[torch.Generator] = ()
    ) -> None:
        self.path = Path(path)
        self.training_state = TrainingState(generators)
        self.save_dict = {**save_dict, "training_state": self.training_state}
        self.resume = resume
        self.resumed = False

    def attach(self, engine: Engine) -> None:
        self.training_state.attach(engine)
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def save(self, engine: Engine) -> None:
        if not is_rank_zero():
            return  # one writer; every rank loads the same file on restart
        state = {
            name: unwrap(obj).state_dict() if isinstance(obj, nn.Module) else obj.state_dict()
            for name, obj in self.save_dict.items()
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def load(self, engine: Engine) -> None:
        if not self.resume or not self.path.is_file():
            return
        CheckpointLoader(load_path=str(self.path), load_dict=self.save_dict, map_location="cpu", strict=True)(engine)
        self.resumed = True
        logger.info("resumed from %s at epoch %d of %d", self.path, engine.state.epoch, engine.state.max_epochs)
