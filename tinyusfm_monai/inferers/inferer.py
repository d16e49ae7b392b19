"""MONAI inferers for the bundles: the network on a plain tensor, or an exported model in another runtime.

The bundle's preprocessing hands the network a `MetaTensor`; every torch op inside the network then
goes through `MetaTensor.__torch_function__` (~500 calls per TinyUSFM forward, ~900 for the
segmenter), which copies metadata and costs tens of milliseconds per image on CPU: a large part of a
TinyUSFM forward. The metadata is only needed after the network (Invertd reads it from `image`,
SaveImaged from the inverted prediction), so the network gets `as_tensor()` and the output gets the
input's metadata back, which is what MetaTensor propagation would have given it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer


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
    bundle run was not measurably faster (benchmarks/RESULTS.md). The `network` argument is ignored; the
    output is a torch tensor with the input's metadata, so the bundle's postprocessing is unchanged.

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
        # no spinning: image loading and postprocessing run between two inferences in this process
        self.session = onnx_session(onnx_file, inference_threads(threads or None), spinning=False)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from tinyusfm_monai.deploy.onnx import run_onnx

        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        return with_input_meta(torch.from_numpy(run_onnx(self.session, plain)).to(plain.device), inputs)
