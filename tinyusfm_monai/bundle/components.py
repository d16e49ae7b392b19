"""Small components the bundle configs name in `_target_` (so the JSON stays declarative)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from torch import nn

from tinyusfm_monai.networks import LoadReport, backbone_of, load_pretrained

logger = logging.getLogger(__name__)

_NO_DECAY_NAMES = ("cls_token", "pos_embed", "relative_position_bias_table", "gamma_1", "gamma_2")


def _layer_id(name: str, prefix: str, depth: int) -> int:
    """0 for the embeddings, i+1 for block i, depth+1 for everything after the backbone (norm, head, decoder)."""
    if not name.startswith(prefix):
        return depth + 1
    local = name[len(prefix) :]
    if local.startswith(("cls_token", "pos_embed", "patch_embed")):
        return 0
    match = re.match(r"blocks\.(\d+)\.", local)
    return int(match.group(1)) + 1 if match else depth + 1


def layer_decay_param_groups(
    model: nn.Module, lr: float, weight_decay: float = 0.05, layer_decay: float = 0.75
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning-rate decay (BEiT/MAE fine-tuning).

    Layer l of L gets lr × layer_decay^(L+1-l): the embeddings learn slowest, the head and decoder at
    the full rate. Biases, norms, layer-scale, position and cls parameters get no weight decay.
    A model without a ViT backbone gets one group per decay setting.
    """
    backbone, prefix = backbone_of(model) or (None, "")
    depth = backbone.depth if backbone is not None else 0
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = _layer_id(name, prefix, depth) if backbone is not None else 0
        no_decay = p.ndim == 1 or name.endswith(_NO_DECAY_NAMES) or name.split(".")[-1] in _NO_DECAY_NAMES
        scale = layer_decay ** (depth + 1 - layer) if backbone is not None else 1.0
        key = (layer, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "lr": lr * scale, "weight_decay": 0.0 if no_decay else weight_decay}
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def default_bundle_root(argv: list[str] | None = None) -> str:
    """The bundle folder of the config being run, so `--config_file bundles/<task>/configs/train.json`
    works from any directory (model-zoo bundles use "." and must be run from inside the bundle).

    Taken from `--config_file` on the command line (first file if a list); "." when it cannot be told.
    MONAI Label and MONAI Deploy pass `bundle_root` themselves and never reach this.
    """
    import ast
    import sys

    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value is None:
            continue
        if value.startswith("["):
            try:
                value = ast.literal_eval(value)[0]
            except (ValueError, SyntaxError, IndexError):
                return "."
        config_dir = Path(value).expanduser().resolve().parent
        return str(config_dir.parent if config_dir.name == "configs" else config_dir)
    return "."


def maybe_load_pretrained(network: nn.Module, path: str | None) -> LoadReport | None:
    """Load backbone weights when a path is given (`--pretrained /path/TinyUSFM.pth`); say so when not."""
    if not path:
        logger.warning(
            "no --pretrained checkpoint given: the backbone starts from random weights. Fine-tuning from the "
            "official TinyUSFM/USFM weights (see large_files.yml) is what the published results assume."
        )
        return None
    report = load_pretrained(network, Path(path).expanduser())
    logger.info("pretrained backbone: %s", report)
    return report
