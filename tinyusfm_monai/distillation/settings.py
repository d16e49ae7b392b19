"""The distillation bundle's open choices as typed settings, each with its default and where that default comes from.

The paper leaves most of the method unpublished, so every choice is a config value. Each one is a
dataclass field declared with `setting(default, source, doc)`: the bundle generator writes the field defaults into
`configs/*.json` and the same fields (default, source, meaning) into the bundle's documentation table, so the two
can never disagree. Sources: "paper" (the TinyUSFM abstract or official figure), "MAE-Lite/USFM" (the MAE-Lite
distillation recipe or the USFM release), "ours" (chosen here).

A config section is handed to its component whole (`settings: "@distill"`), never re-passed one reference per
argument; `from_mapping` rejects unknown keys, so a mistyped override fails instead of being ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

PAPER = "paper"
MAE_LITE = "MAE-Lite/USFM"
OURS = "ours"

T = TypeVar("T")


def setting(default: Any, source: str, doc: str) -> Any:
    """A dataclass field with its documentation: `default`, where it comes from, what it means."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={"source": source, "doc": doc}
        )
    return dataclasses.field(default=default, metadata={"source": source, "doc": doc})


def from_mapping(cls: type[T], settings: Mapping[str, Any] | T | None) -> T:
    """`cls(**settings)` with a clear error naming unknown keys; an instance of `cls` is returned as it is."""
    if isinstance(settings, cls):
        return settings
    settings = dict(settings or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(settings) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown setting(s) {unknown}; known: {sorted(names)}")
    return cls(**settings)


def defaults(cls: type) -> dict[str, Any]:
    """The default of every field, as the config section the bundle generator writes."""
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    return out


def documented_fields(cls: type, prefix: str) -> list[tuple[str, Any, str, str]]:
    """(config id, default, source, meaning) of every documented field of `cls`, config ids under `prefix`."""
    rows = []
    for f in dataclasses.fields(cls):
        if "doc" in f.metadata:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            rows.append((f"{prefix}{f.name}", default, f.metadata["source"], f.metadata["doc"]))
    return rows


@dataclass
class DistillSettings:
    """What is distilled and how it is weighed (config section `distill`)."""

    student_layers: list = setting([3, 7, 11], OURS, "student blocks whose tokens are distilled (zero-based)")
    teacher_layers: list = setting(
        [3, 7, 11], OURS, "teacher blocks they are matched to (the figure draws 3 × 4 blocks)"
    )
    student_attn_layers: list = setting([11], MAE_LITE, "student blocks whose attention maps are distilled")
    teacher_attn_layers: list = setting([11], MAE_LITE, "teacher blocks they are matched to (the last block)")
    feature_weight: float = setting(1.0, MAE_LITE, "weight of the feature loss (0 = off, no projection heads built)")
    attn_weight: float = setting(1.0, MAE_LITE, "weight of the attention loss (0 = off)")
    recon_weight: float = setting(1.0, MAE_LITE, "weight of the pixel reconstruction loss (0 = no decoder)")
    feature_loss: str = setting("mse", MAE_LITE, "per-token feature loss: mse | smooth_l1 | cosine")
    target_norm: bool = setting(True, OURS, "layer-normalise teacher tokens before matching (data2vec/MaskFeat)")
    attn_loss: str = setting("kl", OURS, "attention loss: kl (teacher ‖ student per query row) | mse (MAE-Lite)")
    norm_pix: bool = setting(True, MAE_LITE, "per-patch normalised pixel targets (MAE norm_pix_loss)")
    recon_region: str = setting(
        "masked", OURS, "reconstruct masked patches of the spatial view and all of the frequency view | all"
    )
    decoder_dim: int = setting(128, OURS, "width of the light reconstruction decoder")
    decoder_depth: int = setting(2, OURS, "transformer blocks of the decoder")
    decoder_heads: int = setting(4, OURS, "attention heads of the decoder")
    clip_grad_norm: float = setting(0.0, OURS, "gradient-norm clipping (0 = off)")


@dataclass
class MaskSettings:
    """Which masked views the teacher and the student see (config section `masks`; the mask shapes are the
    `masks#spatial` and `masks#frequency` subsections)."""

    spatial_enabled: bool = setting(True, PAPER, "spatial (patch) masked view (ablation: false)")
    frequency_enabled: bool = setting(True, PAPER, "frequency (band-stop) masked view (ablation: false)")
    hflip_prob: float = setting(0.5, MAE_LITE, "horizontal flip of the clean image before masking")
