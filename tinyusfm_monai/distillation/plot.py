"""Score-distribution plots drawn with Pillow (matplotlib is not a dependency of this project)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ALL_COLOUR = (160, 160, 160)
SELECTED_COLOUR = (214, 90, 40)


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    values: np.ndarray,
    selected: np.ndarray,
    title: str,
    bins: int = 40,
) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((x0 + 6, y0 + 4), title, fill=(0, 0, 0))
    finite = np.isfinite(values)
    if not finite.any():
        draw.text((x0 + 6, y0 + 24), "no values", fill=(0, 0, 0))
        return
    v = values[finite]
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, bins + 1)
    h_all, _ = np.histogram(v, edges)
    h_sel, _ = np.histogram(values[finite & selected], edges)
    top = max(int(h_all.max()), 1)
    plot_top, plot_bottom = y0 + 22, y1 - 18
    width = (x1 - x0 - 12) / bins
    for i in range(bins):
        left = x0 + 6 + i * width
        for counts, colour in ((h_all, ALL_COLOUR), (h_sel, SELECTED_COLOUR)):
            height = (plot_bottom - plot_top) * counts[i] / top
            if height > 0:
                draw.rectangle((left, plot_bottom - height, left + width - 1, plot_bottom), fill=colour)
    draw.text((x0 + 6, y1 - 14), f"{lo:.3g}", fill=(0, 0, 0))
    draw.text((x1 - 60, y1 - 14), f"{hi:.3g}", fill=(0, 0, 0))


def plot_score_distributions(
    path: str | Path, panels: Sequence[tuple[str, np.ndarray]], selected: np.ndarray, title: str = ""
) -> Path:
    """One histogram per score (grey: pool, orange: selected), stacked vertically, written as PNG."""
    w, panel_h = 640, 170
    image = Image.new("RGB", (w, 30 + panel_h * len(panels)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), title + "   grey = pool, orange = selected", fill=(0, 0, 0))
    for i, (name, values) in enumerate(panels):
        y = 30 + i * panel_h
        _panel(draw, (8, y, w - 8, y + panel_h - 8), np.asarray(values, dtype=np.float64), selected, name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
