"""An inferer that runs the network on a plain tensor.

The bundle's preprocessing hands the network a `MetaTensor`; every torch op inside the network then
goes through `MetaTensor.__torch_function__` (~500 calls per TinyUSFM forward, ~900 for the
segmenter), which copies metadata and costs tens of milliseconds per image on CPU: a large part of a
TinyUSFM forward. The metadata is only needed after the network (Invertd reads it from `image`,
SaveImaged from the inverted prediction), so the network gets `as_tensor()` and the output gets the
input's metadata back, which is what MetaTensor propagation would have given it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer


class PlainTensorInferer(Inferer):
    """`SimpleInferer` without MetaTensor dispatch inside the network."""

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        out = network(plain, *args, **kwargs)
        if isinstance(inputs, MetaTensor) and isinstance(out, torch.Tensor) and not isinstance(out, MetaTensor):
            out = MetaTensor(out)
            out.copy_meta_from(inputs, copy_attr=True)
        return out
