"""MONAI inferers for the bundles: the network on a plain tensor, or an exported model in another runtime.

The bundle's preprocessing hands the network a `MetaTensor`; every torch op inside the network then
goes through `MetaTensor.__torch_function__` (~500 calls per TinyUSFM forward, ~900 for the
segmenter), which copies metadata and costs tens of milliseconds per image on CPU: a large part of a
TinyUSFM forward. The metadata is only needed after the network (Invertd reads it from `image`,
SaveImaged from the inverted prediction), so the network gets `as_tensor()` and the output gets the
input's metadata back, which is what MetaTensor propagation would have given it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

logger = logging.getLogger(__name__)


def with_input_meta(out: Any, inputs: torch.Tensor) -> Any:
    """The network's plain output with the input's metadata, as MetaTensor propagation would have given it."""
    if isinstance(inputs, MetaTensor) and isinstance(out, torch.Tensor) and not isinstance(out, MetaTensor):
        out = MetaTensor(out)
        out.copy_meta_from(inputs, copy_attr=True)
    return out


class PlainTensorInferer(Inferer):
    """`SimpleInferer` without MetaTensor dispatch inside the network."""

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        return with_input_meta(network(plain, *args, **kwargs), inputs)


class OnnxInferer(Inferer):
    """Runs the bundle's exported ONNX model with ONNX Runtime instead of the PyTorch network.

    The deployment overlay `configs/inference_onnx.json` uses it: the same pipeline without PyTorch in
    the forward pass, for the INT8 model or a runtime other than PyTorch. On the 2-core benchmark machine
    the bare ONNX Runtime forward of TinyUSFM was 1.3-1.6x faster than eager PyTorch, but the whole
    bundle run was not measurably faster (benchmarks/RESULTS.md). The output is a torch tensor with the
    input's metadata, so the bundle's postprocessing is unchanged.

    What runs is never a stale export (the rule of `OpenVinoInferer`): the file is used when its recorded
    weights fingerprint (`weights_sha256`, written by the export) and input size match the network the bundle
    loaded from `models/model.pt`; otherwise (exported before a retraining, or by an older version without the
    fingerprint) the network is exported to ONNX in memory on the first batch (seconds, logged; fp32, also for
    a stale INT8 file), and again whenever its weights change. Given no network (`network=None`), the file is
    run as it is.

    Args:
        onnx_file: written by `tinyusfm-monai export --bundle <bundle> --format onnx [--int8]`.
        threads: intra-op threads; 0 = the bundles' default policy (`deploy.threads.inference_threads`). The
            overlay passes the count that inference.json's `configure_threads` chose for torch, so the CPU is
            sampled once and both runtimes use the same number.
    """

    def __init__(self, onnx_file: str, threads: int = 0) -> None:
        from tinyusfm_monai.deploy.onnx import onnx_session
        from tinyusfm_monai.deploy.threads import inference_threads

        if not Path(onnx_file).is_file():
            raise FileNotFoundError(
                f"{onnx_file}: no exported ONNX model; run `tinyusfm-monai export --bundle <bundle> --format onnx` "
                "(add --int8 for the quantised model and pass --onnx_file <bundle>/models/model_int8.onnx)"
            )
        super().__init__()
        self.onnx_file = onnx_file
        self.threads = inference_threads(threads or None)
        # no spinning: image loading and postprocessing run between two inferences in this process
        stat = Path(onnx_file).stat()
        self._file_id = (onnx_file, stat.st_mtime_ns, stat.st_size)  # a re-export is another file
        self.session = onnx_session(onnx_file, self.threads, spinning=False)
        self.source = onnx_file

    def _session(self, network: Any, spatial: tuple[int, ...]) -> Any:
        """The file's session if it matches the network's weights and the input size, else an in-memory export."""
        from tinyusfm_monai.deploy.onnx import onnx_metadata, onnx_session

        if not isinstance(network, torch.nn.Module):
            return self.session
        fingerprint = _fingerprint(network)
        key = (fingerprint, spatial, self._file_id, self.threads)
        if key in _ONNX_SESSIONS:
            _ONNX_SESSIONS.move_to_end(key)
            session, self.source = _ONNX_SESSIONS[key]
            return session
        meta = onnx_metadata(self.session)
        size = self.session.get_inputs()[0].shape[-1]
        if meta.get("weights_sha256") != fingerprint:
            reason = f"{self.onnx_file} was exported from other weights than the network's (retrained since?)"
            if "weights_sha256" not in meta:
                reason = f"{self.onnx_file} records no weights fingerprint (exported by an older version)"
        elif (size, size) != tuple(spatial):
            reason = f"{self.onnx_file} is for {size}x{size} inputs, not {spatial[0]}x{spatial[1]}"
        else:
            reason = ""
        if reason:
            import io

            from tinyusfm_monai.deploy.onnx import export_onnx

            logger.warning(
                "%s: exporting the PyTorch network to ONNX in memory (fp32; `tinyusfm-monai export --bundle "
                "<bundle> --format onnx [--int8]` avoids this)",
                reason,
            )
            buffer = export_onnx(network, io.BytesIO(), image_size=int(spatial[0]))
            entry = (onnx_session(buffer.getvalue(), self.threads, spinning=False), "in-memory export of the network")
        else:
            entry = (self.session, self.onnx_file)
        _ONNX_SESSIONS[key] = entry
        while len(_ONNX_SESSIONS) > _CACHE_SIZE:
            _ONNX_SESSIONS.popitem(last=False)
        self.source = entry[1]
        return entry[0]

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from tinyusfm_monai.deploy.onnx import run_onnx

        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        with _COMPILE_LOCK:
            session = self._session(network, tuple(int(v) for v in plain.shape[2:]))
        return with_input_meta(torch.from_numpy(run_onnx(session, plain)).to(plain.device), inputs)


# Per process: a network's weight fingerprint (recomputed only when its tensors change), the OpenVINO model for
# those weights (read or converted once) and the compiled models (one per batch shape), the ONNX Runtime session
# for those weights (the file's, or an in-memory export).
# MONAI Label builds a new inferer for every request, so neither may live on the inferer instance.
_FINGERPRINTS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[int, str]] = weakref.WeakKeyDictionary()
_MODELS: OrderedDict[tuple[Any, ...], tuple[Any, str]] = OrderedDict()
_COMPILED: OrderedDict[tuple[Any, ...], tuple[Any, str, threading.Lock]] = OrderedDict()
_ONNX_SESSIONS: OrderedDict[tuple[Any, ...], tuple[Any, str]] = OrderedDict()
_CACHE_SIZE = 4
_COMPILE_LOCK = threading.Lock()


def _fingerprint(network: torch.nn.Module) -> str:
    """`weights_fingerprint`, cached per network until one of its tensors changes (`load_state_dict` copies into
    the parameters in place, which bumps their version counters)."""
    from tinyusfm_monai.deploy.openvino import weights_fingerprint

    version = sum(t._version for t in itertools.chain(network.parameters(), network.buffers()))
    cached = _FINGERPRINTS.get(network)
    if cached is None or cached[0] != version:
        cached = (version, weights_fingerprint(network))
        _FINGERPRINTS[network] = cached
    return cached[1]


class OpenVinoInferer(Inferer):
    """Runs the bundle's network with OpenVINO (CPU) instead of PyTorch, in an explicitly chosen precision.

    The overlay `configs/inference_openvino.json` uses it; the output is a torch tensor with the input's
    metadata, so the bundle's postprocessing is unchanged (as `OnnxInferer`).

    What runs is always the network the bundle loaded from `models/model.pt`:

    - the exported IR (`tinyusfm-monai export --format openvino [--int8]`) when it records the same weights
      (a fingerprint of the state dict, written by the export) and the same input size;
    - otherwise (no IR yet, or the bundle was retrained since, e.g. by MONAI Label) the network is converted in
      memory on the first batch (seconds, logged; fp32 weights), and again whenever its weights change;
    - without OpenVINO installed, the PyTorch network itself, with one log line saying so.

    Compiled models are cached per process (keyed by weights, input shape, file, precision and threads), so a
    caller that builds a new inferer per request (MONAI Label) compiles once; each batch shape is compiled static.

    Args:
        model_file: the IR (.xml) to use when it matches the weights.
        precision: "f32" or "bf16", passed as `INFERENCE_PRECISION_HINT` (OpenVINO's own default on CPUs with
            AVX-512 BF16 is bf16, so it is never left to the plugin). bf16 changes logits by ~1e-2.
        threads: intra-op threads; 0 = the bundles' default policy (`deploy.threads.inference_threads`); the
            overlay passes the count inference.json's `configure_threads` chose.
    """

    def __init__(self, model_file: str, precision: str = "f32", threads: int = 0) -> None:
        from tinyusfm_monai.deploy.openvino import INSTALL_HINT, check_precision, openvino_available
        from tinyusfm_monai.deploy.threads import inference_threads

        super().__init__()
        self.model_file = Path(model_file)
        self.precision = check_precision(precision)
        self.backend = "openvino" if openvino_available() else "pytorch"
        self.threads = inference_threads(threads or None)
        self.source = ""
        if self.backend == "pytorch":
            logger.warning("OpenVINO is not installed (%s): running the PyTorch network instead", INSTALL_HINT)

    def _model(self, network: Any, fingerprint: str, spatial: tuple[int, ...]) -> tuple[Any, str]:
        """The IR if it matches the network's weights and the input size, else the network converted in memory."""
        from tinyusfm_monai.deploy import openvino as ovd

        key = (fingerprint, spatial, str(self.model_file))
        if key in _MODELS:
            return _MODELS[key]
        reason, model = "", None
        if not self.model_file.is_file():
            reason = f"{self.model_file} does not exist"
        else:
            model = ovd.read_ir(self.model_file)
            meta = ovd.metadata(model)
            ir_size = int(meta.get("image_size", 0) or model.inputs[0].get_partial_shape()[-1].get_length())
            if fingerprint and meta.get("weights_sha256") != fingerprint:
                reason = f"{self.model_file} was exported from other weights than the network's (retrained since?)"
            elif (ir_size, ir_size) != spatial:
                reason = f"{self.model_file} is for {ir_size}x{ir_size} inputs, not {spatial[0]}x{spatial[1]}"
        if reason and not fingerprint:
            raise FileNotFoundError(f"{reason}; run `tinyusfm-monai export --bundle <bundle> --format openvino`")
        if reason:
            logger.warning(
                "%s: converting the PyTorch network in memory (fp32; `tinyusfm-monai export --bundle <bundle> "
                "--format openvino [--int8]` avoids this)",
                reason,
            )
            model = ovd.convert_network(network, int(spatial[0]))
        _MODELS[key] = (model, "in-memory conversion of the network" if reason else str(self.model_file))
        while len(_MODELS) > _CACHE_SIZE:
            _MODELS.popitem(last=False)
        return _MODELS[key]

    def _compile(self, network: Any, shape: tuple[int, ...]) -> tuple[Any, str, threading.Lock]:
        """The compiled model for this batch shape (static: faster than the IR's dynamic batch axis)."""
        from tinyusfm_monai.deploy import openvino as ovd

        fingerprint = _fingerprint(network) if isinstance(network, torch.nn.Module) else ""
        key = (fingerprint, shape, str(self.model_file), self.precision, self.threads)
        if key in _COMPILED:
            _COMPILED.move_to_end(key)
            return _COMPILED[key]
        model, source = self._model(network, fingerprint, shape[2:])
        request = ovd.compile_openvino(model, self.precision, self.threads, batch=shape[0]).create_infer_request()
        logger.info(
            "OpenVINO %s: %s, precision %s, %d threads, batch %d",
            ovd.version(),
            source,
            self.precision,
            self.threads,
            shape[0],
        )
        _COMPILED[key] = (request, source, threading.Lock())  # one InferRequest: one call at a time
        while len(_COMPILED) > _CACHE_SIZE:
            _COMPILED.popitem(last=False)
        return _COMPILED[key]

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        if self.backend == "pytorch":
            return with_input_meta(network(plain, *args, **kwargs), inputs)
        from tinyusfm_monai.deploy.openvino import run_openvino

        with _COMPILE_LOCK:
            request, self.source, lock = self._compile(network, tuple(int(v) for v in plain.shape))
        with lock:
            logits = run_openvino(request, plain)
        return with_input_meta(torch.from_numpy(logits).to(plain.device), inputs)
