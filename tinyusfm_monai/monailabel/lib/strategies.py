"""MONAI Label wrappers of the active-learning selection (`activelearning.py`): strategies and the scoring pass.

* `FeatureScoring` (`POST /scoring/tinyusfm_features`, and MONAI Label runs it in the background at start-up,
  after every /train and after every /activelearning request; the app skips that background run when
  `up_to_date` says there is nothing to do, since each run is a subprocess that loads the whole app): for each
  served bundle with weights, every datastore image whose (content hash, weights fingerprint) row is missing goes
  once through the bundle's own inference preprocessing and network (PyTorch: the pooled backbone feature is read
  from the network itself), giving its feature, 16 x 16 thumbnail signature and the model's uncertainty. Then the
  selection index (near-duplicate groups, hybrid clusters) is rebuilt and written atomically. A pass over an
  unchanged datastore only hashes new files (a (path, size, mtime) memo).
* `ActiveLearningStrategy` (`POST /activelearning/diversity|uncertainty|hybrid`, body `{"model": NAME}`; default
  the first served bundle with weights): reads the index (re-read only when its file changed), marks labelled
  images (classification: a `class` or `final` label; segmentation: `final`) and images proposed within
  `al_proposal_ttl_s` (MONAI Label records each proposal's time in the image info) as taken, and answers one
  image with `al_model`, `al_weights` (the fingerprint the index was built with), `al_uncertainty`, `al_stale`
  (the weights changed since; the background pass will refresh) and `al_unscored` (images added since the pass).

Cache folder: `--conf al_cache` (default `<studies>/.tinyusfm_activelearning`), one subfolder per bundle.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

from tinyusfm_monai.monailabel.lib.activelearning import (
    ActiveLearningSettings,
    ContentHashes,
    FeatureCache,
    SelectionIndex,
    build_index,
    features_and_uncertainty,
    select,
    signatures_of,
    weights_fingerprint,
)
from tinyusfm_monai.monailabel.lib.labels import CLASSIFICATION_LABEL_TAGS
from tinyusfm_monai.utils import atomic_write

logger = logging.getLogger(__name__)

SCORING_NAME = "tinyusfm_features"
DESCRIPTIONS = {
    "diversity": "TinyUSFM features: k-center greedy, never a near-duplicate of a labelled or proposed image",
    "uncertainty": "TinyUSFM model uncertainty (entropy / mean pixel entropy), one image per near-duplicate group",
    "hybrid": "TinyUSFM: most uncertain image of the least covered feature cluster",
}


def _weights(bundle: str) -> str:
    return os.path.join(bundle, "models", "model.pt")


def _classification(bundle: str) -> bool:
    return os.path.basename(bundle).endswith("_classification")


class _Shared:
    """What the strategies and the scoring method share: the served bundles, settings, cache paths."""

    def __init__(self, models: dict[str, str], conf: dict[str, str], studies: str) -> None:
        self.models = models
        self.conf = conf
        self.settings = ActiveLearningSettings.from_conf(conf)
        self.root = Path(conf.get("al_cache") or Path(studies) / ".tinyusfm_activelearning")

    def model_name(self, request: dict[str, Any]) -> str:
        name = request.get("model")
        if name:
            if name not in self.models:
                raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"model {name!r}: not served here")
            return name
        for candidate, path in self.models.items():
            if os.path.isfile(_weights(path)):
                return candidate
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT, "no served bundle has models/model.pt yet: nothing to take features from"
        )

    def folder(self, model: str) -> Path:
        return self.root / model

    def labelled(self, datastore: Datastore, model: str, image_id: str) -> bool:
        tags = CLASSIFICATION_LABEL_TAGS if _classification(self.models[model]) else ("final",)
        labels = datastore.get_labels_by_image_id(image_id)
        return any(tag in labels for tag in tags)


class FeatureScoring(ScoringMethod):
    """The background scoring pass (see the module docstring)."""

    def __init__(self, models: dict[str, str], conf: dict[str, str], studies: str, batch_size: int = 32) -> None:
        super().__init__("TinyUSFM backbone features and model uncertainty for the active-learning strategies")
        self.shared = _Shared(models, conf, studies)
        self.batch_size = batch_size
        self._hashers: dict[str, ContentHashes] = {}
        self._known: dict[str, tuple[int, str, set[str]]] = {}

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        names = [request["model"]] if request.get("model") else list(self.shared.models)
        out = {}
        for name in names:
            if os.path.isfile(_weights(self.shared.models[name])):
                out[name] = self.score(name, datastore, request.get("device", "cpu"))
        return out

    def up_to_date(self, datastore: Datastore) -> bool:
        """True when every served bundle with weights has an index built with its current weights that holds
        every datastore image (hashes memoised in memory: a check costs one stat per image, no subprocess)."""
        for name, bundle in self.shared.models.items():
            if not os.path.isfile(_weights(bundle)):
                continue
            path = self.shared.folder(name) / "index.npz"
            if not path.is_file():
                return False
            hasher = self._hashers.setdefault(name, ContentHashes(self.shared.folder(name) / "hashes.json"))
            mtime = path.stat().st_mtime_ns
            if self._known.get(name, (None,))[0] != mtime:
                index = SelectionIndex.load(path)
                self._known[name] = (mtime, index.fingerprint, set(index.hashes))
            _, fingerprint, hashes = self._known[name]
            if hasher(_weights(bundle))[:16] != fingerprint:
                return False
            try:
                if any(hasher(datastore.get_image_uri(i)) not in hashes for i in datastore.list_images()):
                    return False
            except OSError:
                return False
        return True

    def _network(self, bundle: str, device: torch.device) -> tuple[torch.nn.Module, Any]:
        parser = ConfigParser()
        parser.read_config(os.path.join(bundle, "configs", "inference.json"))
        parser["bundle_root"] = bundle
        parser["device"] = f"$torch.device('{device}')"
        network = parser.get_parsed_content("network_def", instantiate=True)
        state = torch.load(_weights(bundle), map_location="cpu", weights_only=True)
        network.load_state_dict(state)
        pre = parser.get_parsed_content("preprocessing", instantiate=True)
        return network.to(device).eval(), pre

    def score(self, name: str, datastore: Datastore, device: str = "cpu") -> dict[str, Any]:
        t0 = time.perf_counter()
        bundle = self.shared.models[name]
        folder = self.shared.folder(name)
        fingerprint = weights_fingerprint(_weights(bundle))
        hasher = ContentHashes(folder / "hashes.json")
        ids = datastore.list_images()
        files = {i: datastore.get_image_uri(i) for i in ids}
        hashes = {}
        for i, f in files.items():
            try:
                hashes[i] = hasher(f)
            except OSError as e:
                logger.warning("active learning: %s (%s): cannot read it (%s); skipped", i, f, e)
        hasher.save()
        cache = FeatureCache(folder)
        rows = cache.rows(fingerprint)
        todo = sorted({h: i for i, h in hashes.items() if h not in rows}.items())
        dev = torch.device(device)
        failed = []
        if todo:
            network, pre = self._network(bundle, dev)
            for s in range(0, len(todo), self.batch_size):
                batch, keys = [], []
                for h, image_id in todo[s : s + self.batch_size]:
                    try:
                        batch.append(torch.as_tensor(pre({"image": files[image_id]})["image"]))
                        keys.append(h)
                    except Exception as e:  # noqa: BLE001 - one bad file must not stop the pass; it is named
                        logger.warning("active learning: %s (%s): %s; skipped", image_id, files[image_id], e)
                        failed.append(image_id)
                if not batch:
                    continue
                x = torch.stack(batch).to(dev)
                feats, unc = features_and_uncertainty(
                    network, x, _classification(bundle), self.shared.settings.uncertainty
                )
                sigs = signatures_of(x)
                for k, h in enumerate(keys):
                    rows[h] = (feats[k], sigs[k], float(unc[k]))
            cache.update(fingerprint, rows)
        t1 = time.perf_counter()
        present = sorted({h for h in hashes.values() if h in rows})
        index = build_index(
            fingerprint,
            present,
            np.stack([rows[h][0] for h in present]) if present else np.zeros((0, 1), np.float32),
            np.stack([rows[h][1] for h in present]) if present else np.zeros((0, 1), np.float32),
            np.array([rows[h][2] for h in present], np.float32),
            self.shared.settings,
        )
        index.save(folder / "index.npz")
        t2 = time.perf_counter()
        result = {
            "images": len(ids),
            "computed": len(todo) - len(failed),
            "failed": failed,
            "weights": fingerprint,
            "features_s": round(t1 - t0, 3),
            "index_s": round(t2 - t1, 3),
            "images_per_s": round((len(todo) - len(failed)) / max(t1 - t0, 1e-9), 1) if todo else None,
            **index.info,
        }
        logger.info("active learning scoring %s: %s", name, result)
        if result["computed"]:  # the last pass that computed features (its speed), for benchmarks and the curious
            atomic_write(folder / "last_pass.json", json.dumps(result))
        return result


class ActiveLearningStrategy(Strategy):
    """`diversity`, `uncertainty` or `hybrid` over the scoring pass's index (see the module docstring)."""

    def __init__(self, strategy: str, models: dict[str, str], conf: dict[str, str], studies: str) -> None:
        super().__init__(DESCRIPTIONS[strategy])
        self.strategy = strategy
        self.shared = _Shared(models, conf, studies)
        self._index: dict[str, tuple[float, SelectionIndex]] = {}
        self._hashers: dict[str, ContentHashes] = {}
        self._paths: dict[str, str] = {}  # image id -> file (resolved once; a vanished file is resolved again)

    @staticmethod
    def _images(datastore: Datastore) -> list[tuple[str, Any, dict]]:
        """(image id, its label tags, its image info) of every image: one `Datastore.json()` dump (the local
        datastore's whole state in one call), else the per-image calls. The per-image route resolves two real
        paths per image, most of a request's time on a 5,000-image datastore."""
        dump = datastore.json()
        objects = dump.get("objects") if isinstance(dump, dict) else None
        if isinstance(objects, dict):
            return [
                (image_id, set((obj.get("labels") or {}).keys()), (obj.get("image") or {}).get("info") or {})
                for image_id, obj in objects.items()
            ]
        return [
            (i, set(datastore.get_labels_by_image_id(i)), datastore.get_image_info(i)) for i in datastore.list_images()
        ]

    def _load_index(self, model: str) -> SelectionIndex:
        path = self.shared.folder(model) / "index.npz"
        if not path.is_file():
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT,
                f"{model}: the feature scoring pass has not run yet (it starts with the server and after /train); "
                f"run POST /scoring/{SCORING_NAME} and try again",
            )
        mtime = path.stat().st_mtime_ns
        cached = self._index.get(model)
        if cached is None or cached[0] != mtime:
            cached = (mtime, SelectionIndex.load(path))
            self._index[model] = cached
        return cached[1]

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        t0 = time.perf_counter()
        model = self.shared.model_name(request)
        index = self._load_index(model)
        folder = self.shared.folder(model)
        hasher = self._hashers.setdefault(model, ContentHashes(folder / "hashes.json"))
        row_of = {h: r for r, h in enumerate(index.hashes)}
        taken = np.zeros(len(index), bool)
        candidates = np.zeros(len(index), bool)
        ids_of_row: dict[int, list[str]] = {}
        now = time.time()
        ttl = self.shared.settings.proposal_ttl_s
        unscored = 0
        tags = CLASSIFICATION_LABEL_TAGS if _classification(self.shared.models[model]) else ("final",)
        for image_id, labels, info in self._images(datastore):
            row = None
            path = self._paths.get(image_id)
            for _attempt in range(2):  # a cached path that vanished is resolved again once
                if path is None:
                    path = self._paths[image_id] = datastore.get_image_uri(image_id)
                try:
                    row = row_of.get(hasher(path))
                    break
                except OSError:
                    self._paths.pop(image_id, None)
                    path = None
            if row is None:
                unscored += 1
                continue
            ids_of_row.setdefault(row, []).append(image_id)
            proposals = info.get("strategy", {})
            recent = any(now - float(p.get("ts", 0)) < ttl for p in proposals.values() if isinstance(p, dict))
            if any(tag in labels for tag in tags) or recent:
                taken[row] = True
            else:
                candidates[row] = True
        picks = select(index, self.strategy, taken, 1, candidates)
        if not picks:
            logger.info("%s (%s): nothing left to propose", self.strategy, model)
            return None
        row = picks[0]
        fingerprint = hasher(_weights(self.shared.models[model]))[:16]  # = weights_fingerprint, memoised
        answer = {
            "id": sorted(ids_of_row[row])[0],
            "al_model": model,
            "al_weights": index.fingerprint,
            "al_stale": index.fingerprint != fingerprint,
            "al_uncertainty": float(index.uncertainty[row]),
            "al_unscored": unscored,
            "al_seconds": round(time.perf_counter() - t0, 4),
        }
        if answer["al_stale"]:
            logger.warning("%s: index built with weights %s, model now %s; the scoring pass will refresh it",
                           model, index.fingerprint, fingerprint)  # fmt: skip
        logger.info("%s (%s): %s", self.strategy, model, answer)
        return answer
