"""Loading the official USFM / TinyUSFM releases (and our own exports) safely and strictly.

The official files come in several wrappings (bare state dict, under "model"/"state_dict", with
`model.`, `module.` or `module.model.` prefixes, with or without a classification head). A user
who loads one must either get the published model or a one-line error that says why; silently
loading half the weights (what `strict=False` does in the official repos) is the failure this
module exists to prevent.
"""

from __future__ import annotations

import logging
import math
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tinyusfm_monai.utils import atomic_path

from .models import backbone_of
from .vit import VisionTransformer

logger = logging.getLogger(__name__)

KNOWN_PREFIXES = ("module.model.", "module.", "model.")
WRAPPER_KEYS = ("model", "state_dict", "module")
# Keys only a whole official segmentation model (`SegmentationModel` of the official repository) has.
OFFICIAL_SEGMENTATION_MARKERS = ("decode_head.", "neck.projections.")
# The official segmenter's backbone is timm's ViT without global pooling: its final norm is `norm`, ours `fc_norm`
# (unused by both segmentation forwards; kept so the state dicts correspond one to one).
OFFICIAL_SEGMENTATION_RENAMES = (("backbone.norm.", "backbone.fc_norm."),)
# Parts of a model that a backbone checkpoint may legitimately lack: they are task-specific.
TASK_SPECIFIC_PREFIXES = ("head.",)
# Pretraining-only parts of a checkpoint that a backbone has no use for.
IGNORABLE_PREFIXES = ("head.", "norm.", "decoder", "mask_token", "rel_pos_bias.", "lm_head", "teacher", "projector")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the model; the message names the file and the cause."""


@dataclass
class LoadReport:
    path: str
    loaded: list[str] = field(default_factory=list)
    interpolated: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # checkpoint key -> reason
    initialised: list[str] = field(default_factory=list)  # model keys kept at their initial value

    def __str__(self) -> str:
        parts = [f"{self.path}: loaded {len(self.loaded)} tensors"]
        if self.interpolated:
            parts.append(f"interpolated {', '.join(self.interpolated)}")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} ({_summarise(self.skipped)})")
        if self.initialised:
            parts.append(f"kept initial {', '.join(self.initialised)}")
        return "; ".join(parts)


def _summarise(skipped: Mapping[str, str], limit: int = 4) -> str:
    items = [f"{k}: {v}" for k, v in list(skipped.items())[:limit]]
    if len(skipped) > limit:
        items.append(f"... {len(skipped) - limit} more")
    return ", ".join(items)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a .pth/.pt/.ckpt or .safetensors file without unpickling any code.

    Every failure is a `CheckpointError` naming the file and the cause: a missing file, a file that is not a
    checkpoint at all (text, HTML from a failed download), one that needs code unpickling, a truncated one, and
    one whose weights hold NaN or infinity (a diverged training run saves those without complaint, and a
    network with them predicts one class everywhere)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    else:
        _check_torch_format(path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            reason = str(e).splitlines()[0]
            raise CheckpointError(f"{path}: refused, the file needs code unpickling ({reason})") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({reason})") from None
        except Exception as e:  # torch's legacy reader raises KeyError, ValueError, ... on foreign bytes
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e})") from None
    state = _unwrap(obj, path)
    check_finite(state, path)
    return state


def _check_torch_format(path: Path) -> None:
    """A PyTorch checkpoint is a zip archive (torch.save since 1.6) or a pickle (legacy, first byte 0x80);
    anything else (a text file, an HTML error page saved as .pth) is named as such, before torch guesses."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return
    kind = "empty" if not head else ("text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "unknown")
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (a {kind} file, not a zip archive or a pickle)")


def check_finite(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights containing NaN or infinity, naming the first tensor that does."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CheckpointError(f"{path}: tensor {bad[0]}{more} contains NaN or infinity (a diverged training run?)")


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}} at worst
        if not isinstance(obj, Mapping):
            break
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj = inner
    raise CheckpointError(f"{path}: no state dict found (expected tensors, or a 'model'/'state_dict' entry)")


def strip_prefix(state: Mapping[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Remove the one known prefix that makes the most keys match the model."""
    best, best_hits = dict(state), sum(k in expected for k in state)
    for prefix in KNOWN_PREFIXES:
        if not any(k.startswith(prefix) for k in state):
            continue
        cand = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}
        hits = sum(k in expected for k in cand)
        if hits > best_hits:
            best, best_hits = cand, hits
    return best


def interpolate_pos_embed(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a (1, 1+N, D) absolute position embedding to a new patch grid (bicubic on the grid)."""
    cls, tokens = pos[:, :1], pos[:, 1:]
    side = int(math.isqrt(tokens.shape[1]))
    if side * side != tokens.shape[1]:
        raise ValueError(f"position embedding with {tokens.shape[1]} tokens is not a square grid")
    tokens = tokens.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    tokens = F.interpolate(tokens, size=grid, mode="bicubic", align_corners=False)
    tokens = tokens.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(pos.dtype)
    return torch.cat((cls, tokens), dim=1)


def interpolate_rel_pos_table(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a BEiT relative position table ((2S-1)^2 + 3, heads) to a new patch grid.

    The (2S-1)×(2S-1) offset grid is resized bicubically; the three cls rows are kept as they are.
    """
    offsets, extra = table[:-3], table[-3:]
    side = int(math.isqrt(offsets.shape[0]))
    if side * side != offsets.shape[0]:
        raise ValueError(f"relative position table with {offsets.shape[0]} offsets is not a square grid")
    new = (2 * grid[0] - 1, 2 * grid[1] - 1)
    grid_t = offsets.T.reshape(1, -1, side, side).float()
    grid_t = F.interpolate(grid_t, size=new, mode="bicubic", align_corners=False)
    offsets = grid_t.reshape(-1, new[0] * new[1]).T.to(table.dtype)
    return torch.cat((offsets, extra), dim=0)


def _target_backbone(model: nn.Module) -> VisionTransformer:
    found = backbone_of(model)
    if found is not None:
        return found[0]
    raise TypeError(f"load_pretrained expects a TinyUSFM/USFM backbone or a model with one, got {type(model).__name__}")


def _architecture_hint(state: Mapping[str, torch.Tensor]) -> str:
    if any(k.endswith("attn.relative_position_bias_table") for k in state):
        return "USFM (BEiT ViT-B/16)"
    embed = state.get("patch_embed.proj.weight")
    if embed is not None:
        return {192: "TinyUSFM (ViT-Tiny/16)", 768: "ViT-B/16"}.get(embed.shape[0], f"a {embed.shape[0]}-wide ViT")
    return "not a ViT backbone"


def _model_name(model: VisionTransformer) -> str:
    return type(model).__name__


def is_official_segmentation(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is a whole official segmentation model (backbone, neck and decode head)."""
    return any(k.split("module.", 1)[-1].startswith(OFFICIAL_SEGMENTATION_MARKERS) for k in state)


def convert_official_segmentation(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official segmentation state dict → `ViTSegmenter(decoder="official")` names.

    The official model and ours share every module name but one: the backbone's unused final norm (`norm` there,
    `fc_norm` here). A `module.` prefix (DataParallel) is removed. Nothing is dropped: the caller loads strictly.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        for old, new in OFFICIAL_SEGMENTATION_RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = value
    return out


def _load_official_segmentation(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> LoadReport:
    """A whole official fine-tuned segmentation model into `ViTSegmenter(decoder="official")`, strictly."""
    if getattr(model, "decoder", None) != "official":
        raise CheckpointError(
            f"{path}: a whole official segmentation model (backbone, neck, decode head); load it into "
            f"ViTSegmenter(decoder='official') (the model is {type(model).__name__} with decoder "
            f"{getattr(model, 'decoder', None)!r})"
        )
    converted = convert_official_segmentation(state)
    own = model.state_dict()
    missing = [k for k in own if k not in converted]
    unexpected = [k for k in converted if k not in own]
    wrong = [
        f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
        for k, v in converted.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: does not match the official segmenter strictly: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, shape {wrong[:3]} (the number of classes decides the classifier)"
        )
    model.load_state_dict(converted, strict=True)
    report = LoadReport(str(path), loaded=sorted(converted))
    logger.info("%s (whole official segmentation model, strict)", report)
    return report


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load an official (or our exported) TinyUSFM/USFM checkpoint into `model`.

    `model` is a backbone or any network with a `.backbone` (e.g. `ViTSegmenter`). Shapes are strict;
    known prefixes, a missing or different-sized head and pretraining-only keys are tolerated and
    reported; position embeddings and relative-position tables are interpolated for other input
    sizes. A whole official fine-tuned segmentation model (its `decode_head`/`neck` keys tell) is loaded
    into `ViTSegmenter(decoder="official")` strictly, every tensor, through `convert_official_segmentation`.
    Raises `CheckpointError` naming the file and the mismatch.
    """
    path = Path(path)
    raw = read_state_dict(path)
    if is_official_segmentation(raw):
        return _load_official_segmentation(model, raw, path)
    target = _target_backbone(model)
    own = target.state_dict()
    state = strip_prefix(raw, set(own))
    report = LoadReport(str(path))
    to_load: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            if key.startswith(IGNORABLE_PREFIXES):
                report.skipped[key] = "not part of the backbone"
                continue
            raise CheckpointError(
                f"{path}: unexpected key {key!r}; the checkpoint looks like {_architecture_hint(state)}, "
                f"the model is {_model_name(target)}"
            )
        expected = own[key].shape
        if value.shape == expected:
            to_load[key] = value
        elif key == "pos_embed" and value.ndim == 3 and value.shape[-1] == expected[-1]:
            to_load[key] = interpolate_pos_embed(value, target.grid_size)
            report.interpolated.append(f"pos_embed {tuple(value.shape)}->{tuple(expected)}")
        elif key.endswith("relative_position_bias_table") and value.shape[-1] == expected[-1]:
            to_load[key] = interpolate_rel_pos_table(value, target.grid_size)
            if not report.interpolated or "relative_position_bias_table" not in report.interpolated[-1]:
                report.interpolated.append(f"relative_position_bias_table {tuple(value.shape)}->{tuple(expected)}")
        elif key.endswith("relative_position_index"):
            report.skipped[key] = "recomputed for the model's grid"
        elif key.startswith(TASK_SPECIFIC_PREFIXES):
            report.skipped[key] = f"shape {tuple(value.shape)} != model {tuple(expected)} (task head)"
        else:
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(value.shape)} but the model expects {tuple(expected)}; "
                f"the checkpoint looks like {_architecture_hint(state)}, the model is {_model_name(target)}"
            )
    missing = [k for k in own if k not in to_load and not k.endswith("relative_position_index")]
    missing_required = [k for k in missing if not k.startswith(TASK_SPECIFIC_PREFIXES)]
    if missing_required:
        shown = ", ".join(missing_required[:3]) + (
            f" and {len(missing_required) - 3} more" if len(missing_required) > 3 else ""
        )
        raise CheckpointError(
            f"{path}: missing {len(missing_required)} backbone tensors ({shown}); the checkpoint looks like "
            f"{_architecture_hint(state)}, the model is {_model_name(target)}"
        )
    target.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.initialised = sorted({k.split(".")[0] for k in missing})
    logger.info("%s", report)
    return report


def save_official(model: nn.Module, path: str | Path, include_head: bool = False) -> Path:
    """Write a backbone in the official key layout (bare state dict), `.pth` or `.safetensors`."""
    target = _target_backbone(model)
    state = {k: v.detach().cpu().contiguous() for k, v in target.state_dict().items()}
    if not include_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp))
        else:
            torch.save(state, tmp)
    return path
