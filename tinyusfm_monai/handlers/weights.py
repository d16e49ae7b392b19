"""Handlers that move trained weights in and out of a run: load them before predicting, export a backbone."""

from __future__ import annotations

import logging
from pathlib import Path

from ignite.engine import Engine, Events
from torch import nn

from tinyusfm_monai.networks import read_state_dict, save_official
from tinyusfm_monai.utils import is_rank_zero, unwrap

logger = logging.getLogger(__name__)


class TrainedWeightsLoader:
    """Load `models/model.pt` when inference or evaluation starts, or stop with a message saying how to get it.

    Predicting with random weights would produce plausible-looking nonsense; this is the guard. It loads at the
    engine's start rather than when attached, so a config can be built and checked (MONAI's `ConfigWorkflow
    .check_properties`, model-zoo's CI) before weights exist.

    Args:
        load_path: the trained weights (bare state dict, or one under "model").
        network: the network to load them into (a DDP wrapper is unwrapped).
        bundle_root: named in the message that says how to train weights.
    """

    def __init__(self, load_path: str, network: nn.Module, bundle_root: str = ".") -> None:
        self.load_path = Path(load_path)
        self.network = network
        self.bundle_root = bundle_root

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.load())

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
        # one reader for every checkpoint: never unpickles code, names the file and the cause of any failure
        # (text file, truncated, NaN/inf weights) as a CheckpointError
        state = read_state_dict(self.load_path)
        try:
            unwrap(self.network).load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise RuntimeError(f"{self.load_path}: does not fit this bundle's network ({first})") from None
        logger.info("loaded trained weights from %s", self.load_path)


class ExportBackbone:
    """At `COMPLETED`, write a backbone in the official TinyUSFM/USFM key layout (bare state dict): the distilled
    student (the file the task bundles and the official repository load) or a pretrained teacher (what
    `--teacher_weights` and `load_pretrained` read). Only rank 0 writes.

    Args:
        backbone: the backbone, or a module holding it as `.encoder` / `.student` (a DDP wrapper is unwrapped).
        path: where to write it (`.pth` or `.safetensors`).
    """

    def __init__(self, backbone: nn.Module, path: str) -> None:
        self.backbone = backbone
        self.path = path

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_rank_zero():
            return
        module = unwrap(self.backbone)
        for name in ("encoder", "student"):
            module = getattr(module, name, module)
        path = save_official(module, self.path)
        logger.info("%s exported in the official key layout: %s", type(module).__name__, path)
