"""Outer contours of a binary mask as closed polygons in DICOM image coordinates.

Why: the cine fallback (see write.py) stores segmentation results as TID 1500 planar ROIs, whose geometry is an
SR SCOORD POLYGON. DICOM image coordinates put (0, 0) at the top-left corner of the top-left pixel (PS3.3
C.18.6.1.2), so tracing the pixel *edges* (crack following) gives polygons that enclose exactly the mask pixels.
No scipy/scikit-image/OpenCV is installed, and this is ~40 lines of numpy.

Connectivity is 4-connected: at a corner where two foreground pixels touch only diagonally the trace stays on
the pixel it came from. Holes are not reported: with our edge orientation outer boundaries have a positive
signed area in (x, y-down) coordinates and holes a negative one.
"""

from __future__ import annotations

import numpy as np


def _edges(mask: np.ndarray) -> list[tuple[tuple[int, int], tuple[int, int], int]]:
    """Directed boundary edges (start vertex, end vertex, pixel id) with the foreground on the traveller's right."""
    m = np.pad(mask.astype(bool), 1)
    core = m[1:-1, 1:-1]
    rows, cols = core.shape
    pid = np.arange(rows * cols).reshape(rows, cols)
    out: list[tuple[tuple[int, int], tuple[int, int], int]] = []
    # (neighbour is background) -> edge from corner a to corner b of pixel (r, c); corners as (x, y)
    sides = (
        (~m[:-2, 1:-1], (0, 0), (1, 0)),  # top: left -> right
        (~m[1:-1, 2:], (1, 0), (1, 1)),  # right: top -> bottom
        (~m[2:, 1:-1], (1, 1), (0, 1)),  # bottom: right -> left
        (~m[1:-1, :-2], (0, 1), (0, 0)),  # left: bottom -> top
    )
    for open_side, (ax, ay), (bx, by) in sides:
        r, c = np.nonzero(core & open_side)
        for rr, cc in zip(r.tolist(), c.tolist()):
            out.append(((cc + ax, rr + ay), (cc + bx, rr + by), int(pid[rr, cc])))
    return out


def _signed_area(loop: np.ndarray) -> float:
    x, y = loop[:, 0], loop[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def _drop_collinear(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    pts = loop[:-1]
    keep = []
    n = len(pts)
    for i in range(n):
        (x0, y0), (x1, y1), (x2, y2) = pts[i - 1], pts[i], pts[(i + 1) % n]
        if (x1 - x0) * (y2 - y1) - (y1 - y0) * (x2 - x1) != 0:
            keep.append(pts[i])
    return keep + keep[:1]


def outer_polygons(mask: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Closed outer polygons of `mask` as ((N, 2) float32 (x, y) array with first == last, enclosed pixel count).

    The pixel count is that of the whole region inside the outer boundary (holes included).
    """
    edges = _edges(mask)
    outgoing: dict[tuple[int, int], list[int]] = {}
    for i, (a, _b, _p) in enumerate(edges):
        outgoing.setdefault(a, []).append(i)
    used = [False] * len(edges)
    polygons: list[tuple[np.ndarray, int]] = []
    for start in range(len(edges)):
        if used[start]:
            continue
        loop = [edges[start][0]]
        i = start
        while not used[i]:
            used[i] = True
            a, b, pixel = edges[i]
            loop.append(b)
            candidates = [j for j in outgoing.get(b, ()) if not used[j]]
            if not candidates:
                break
            same_pixel = [j for j in candidates if edges[j][2] == pixel]
            i = same_pixel[0] if same_pixel else candidates[0]
        if loop[-1] != loop[0]:
            continue  # cannot happen for a well-formed mask; skip rather than emit an open polygon
        area = _signed_area(np.asarray(loop, dtype=np.float64))
        if area <= 0:  # holes run the other way round
            continue
        simplified = _drop_collinear(loop)
        polygons.append((np.asarray(simplified, dtype=np.float32), int(round(area))))
    return polygons
