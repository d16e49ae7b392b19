"""MONAI Label app serving TinyUSFM task bundles from a local folder, offline.

    monailabel start_server --app tinyusfm_monai/monailabel --studies DATASTORE \
        --conf bundles bundles --conf models busi_classification,busi_segmentation

Bundles are used in place from `--conf bundles` (default: the repository's `bundles/`), not copied into
`<app>/model/` like the stock monaibundle app does: the app folder is part of the installed package, and
training must write `models/model.pt` where the bundle lives. Point `--conf bundles` at a working copy to keep
the originals untouched. Nothing is downloaded: no model zoo lookup (`zoo_source` is never consulted), no SAM2.

`--conf models` is a comma list of bundle names (or `all`: every *_classification / *_segmentation bundle).
`--conf backend` is the runtime of inference, as `tinyusfm-monai dicom infer --backend`: auto (default: OpenVINO on
CPU, PyTorch on CUDA), pytorch, onnx, onnx-int8, openvino, openvino-bf16 or openvino-int8.
A bundle without `models/model.pt` gets a trainer only; its inferer appears as soon as training has written
the weights (checked on every /info and /infer request, no restart needed).

Active learning (`POST /activelearning/<strategy>`, body `{"model": NAME}`): MONAI Label's `random` and `first`,
and `diversity`, `uncertainty`, `hybrid` over the bundle backbone's features (lib/activelearning.py), which the
scoring method `tinyusfm_features` precomputes in the background (lib/strategies.py; `--conf al_<setting>`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

from tinyusfm_monai.monailabel.lib.activelearning import STRATEGIES
from tinyusfm_monai.monailabel.lib.infers import TinyUSFMInferTask
from tinyusfm_monai.monailabel.lib.strategies import SCORING_NAME, ActiveLearningStrategy, FeatureScoring
from tinyusfm_monai.monailabel.lib.trainers import TinyUSFMTrainTask

logger = logging.getLogger(__name__)

_SUFFIXES = ("_classification", "_segmentation")
_REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def resolve_bundles(conf: dict[str, str]) -> dict[str, str]:
    """{name: bundle folder} for `--conf models`, looked up in `--conf bundles`; unknown names fail loudly."""
    root = Path(conf.get("bundles") or _REPO_BUNDLES).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"--conf bundles {root}: no such folder")
    available = sorted(p.name for p in root.iterdir() if p.name.endswith(_SUFFIXES) and (p / "configs").is_dir())
    wanted = [m.strip() for m in conf.get("models", "all").split(",") if m.strip()]
    if wanted == ["all"]:
        wanted = available
    missing = [m for m in wanted if m not in available]
    if missing:
        raise ValueError(f"--conf models: {missing} not found in {root}; available: {available}")
    if not wanted:
        raise ValueError(f"--conf models: no *_classification / *_segmentation bundle in {root}")
    return {m: str(root / m) for m in wanted}


class MyApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.models = resolve_bundles(conf)
        logger.info("TinyUSFM bundles: %s", self.models)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"TinyUSFM bundles (MONAI Label {monailabel.__version__})",
            description="TinyUSFM ultrasound classification / segmentation bundles",
            version=monailabel.__version__,
        )

    def _infer_task(self, path: str) -> TinyUSFMInferTask | None:
        task = TinyUSFMInferTask(path, self.conf)
        return task if task.is_valid() else None

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.models.items():
            task = self._infer_task(path)
            if task is None:
                logger.warning("%s: no models/model.pt yet; serving its trainer only until training writes it", name)
                continue
            infers[name] = task
        return infers

    def _add_trained_infers(self) -> None:
        """Register inferers for bundles whose weights appeared since start-up (written by /train)."""
        for name, path in self.models.items():
            if name not in self._infers and os.path.isfile(os.path.join(path, "models", "model.pt")):
                task = self._infer_task(path)
                if task is not None:
                    logger.info("+++ Adding Inferer (weights now present):: %s", name)
                    self._infers[name] = task

    def info(self) -> dict[str, Any]:
        self._add_trained_infers()
        return super().info()

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        self._add_trained_infers()
        name = request.get("model")
        if name in self.models and name not in self._infers:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                f"{name}: no models/model.pt yet, so no inference (never with random weights); train it first "
                f"(POST /train/{name}) or copy fine-tuned weights to {self.models[name]}/models/model.pt",
            )
        return super().infer(request, datastore)

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for name, path in self.models.items():
            task = TinyUSFMTrainTask(path, self.conf)
            if task.is_valid():
                trainers[name] = task
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        strategies: dict[str, Strategy] = {"random": Random(), "first": First()}
        for name in STRATEGIES:
            strategies[name] = ActiveLearningStrategy(name, self.models, self.conf, self.studies)
        return strategies

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        return {SCORING_NAME: FeatureScoring(self.models, self.conf, self.studies)}

    def async_scoring(self, method: str | None, params: dict | None = None) -> Any:
        """MONAI Label starts every scoring method in a subprocess after each /activelearning and /train request;
        skip that background run when the feature index is already current (same weights, no new image)."""
        scoring = self._scoring_methods.get(SCORING_NAME)
        if not method and isinstance(scoring, FeatureScoring) and scoring.up_to_date(self.datastore()):
            logger.info("active learning features up to date: background scoring skipped")
            return {}
        return super().async_scoring(method, params)
