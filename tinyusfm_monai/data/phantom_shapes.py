"""Geometry of phantom structures, in normalised image coordinates.

Every shape is a pure point-membership function of (u, v): u runs left to right across the image,
v from the transducer face down (both 0..1 over the square output image). The same function decides
which simulation samples carry a structure's tissue and which output pixels carry its label, so a
mask is the exact geometry in the final image grid, not a blurred or scan-converted approximation.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BBox = tuple[float, float, float, float]  # u_min, u_max, v_min, v_max


class Shape(ABC):
    @abstractmethod
    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Boolean array, True where (u, v) lies inside."""

    @abstractmethod
    def bbox(self) -> BBox:
        """A box that holds the whole shape; lets painting skip the points that cannot be inside."""


def _to_local(u: np.ndarray, v: np.ndarray, cu: float, cv: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    du, dv = u - cu, v - cv
    c, s = math.cos(angle), math.sin(angle)
    return du * c + dv * s, -du * s + dv * c


def _rotated_half_extent(ru: float, rv: float, angle: float) -> tuple[float, float]:
    c, s = abs(math.cos(angle)), abs(math.sin(angle))
    return math.hypot(ru * c, rv * s), math.hypot(ru * s, rv * c)


@dataclass(frozen=True)
class Ellipse(Shape):
    """Smooth, well-circumscribed outline: cysts, benign-looking lesions, cardiac cavities, the fetal skull."""

    cu: float
    cv: float
    ru: float  # semi-axis along the rotated u axis, image widths
    rv: float  # semi-axis along the rotated v axis, image heights
    angle: float = 0.0  # radians, counter-clockwise in (u, v)

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        x, y = _to_local(u, v, self.cu, self.cv, self.angle)
        return (x / self.ru) ** 2 + (y / self.rv) ** 2 <= 1.0

    def bbox(self) -> BBox:
        hu, hv = _rotated_half_extent(self.ru, self.rv, self.angle)
        return self.cu - hu, self.cu + hu, self.cv - hv, self.cv + hv

    def scaled(self, factor_u: float, factor_v: float | None = None) -> Ellipse:
        factor_v = factor_u if factor_v is None else factor_v
        return Ellipse(self.cu, self.cv, self.ru * factor_u, self.rv * factor_v, self.angle)


@dataclass(frozen=True)
class StarPolygon(Shape):
    """Polygon whose vertices follow a random radial function: lobulated or spiculated margins.

    Vertex k sits at angle 2*pi*k/N and relative radius radii[k] in the frame of an ellipse with
    semi-axes (ru, rv); the polygon is star-shaped about its centre, so a point is inside exactly when
    it lies left of the edge that spans its polar angle. Irregular, angular and spiculated margins are
    the sonographic signs of malignancy the classification recipes use.
    """

    cu: float
    cv: float
    ru: float
    rv: float
    angle: float
    radii: tuple[float, ...]

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        x, y = _to_local(u, v, self.cu, self.cv, self.angle)
        x, y = x / self.ru, y / self.rv
        n = len(self.radii)
        vx, vy = _star_vertices(self.radii)
        phi = np.arctan2(y, x)  # -pi..pi; vertex k sits at angle 2*pi*k/n
        k = (phi * (n / (2.0 * math.pi)) + n).astype(np.int64) % n
        ex, ey = vx[k + 1] - vx[k], vy[k + 1] - vy[k]
        cross = ex * (y - vy[k]) - ey * (x - vx[k])
        return cross >= 0.0

    def bbox(self) -> BBox:
        r = max(self.radii)
        hu, hv = _rotated_half_extent(self.ru * r, self.rv * r, self.angle)
        return self.cu - hu, self.cu + hu, self.cv - hv, self.cv + hv

    def scaled(self, factor_u: float, factor_v: float | None = None) -> StarPolygon:
        factor_v = factor_u if factor_v is None else factor_v
        return StarPolygon(self.cu, self.cv, self.ru * factor_u, self.rv * factor_v, self.angle, self.radii)


@dataclass(frozen=True)
class Ring(Shape):
    """Wall between an outer and an inner outline: myocardium around the cavity, a capsule, a skull."""

    outer: Shape
    inner: Shape

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.outer.contains(u, v) & ~self.inner.contains(u, v)

    def bbox(self) -> BBox:
        return self.outer.bbox()


@dataclass(frozen=True)
class Band(Shape):
    """Tissue layer bounded by a gently undulating upper surface: skin, fat, fascia, pleura, deep air.

    The upper surface is v = top + undulation * sin(2*pi*cycles*u + phase) + bow * (u - 0.5)**2.
    """

    top: float
    thickness: float
    undulation: float = 0.0
    cycles: float = 1.0
    phase: float = 0.0
    bow: float = 0.0  # curvature of the layer (pleura and fascia curve over the ribs / lamina)

    def surface(self, u: np.ndarray) -> np.ndarray:
        return (
            self.top
            + self.undulation * np.sin(2.0 * math.pi * self.cycles * u + self.phase)
            + self.bow * (u - 0.5) ** 2
        )

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        depth = v - self.surface(u)
        return (depth >= 0.0) & (depth < self.thickness)

    def bbox(self) -> BBox:
        low = self.top - abs(self.undulation) + min(0.0, self.bow * 0.25)
        high = self.top + abs(self.undulation) + max(0.0, self.bow * 0.25) + self.thickness
        return -math.inf, math.inf, low, high


@lru_cache(maxsize=256)
def _star_vertices(radii: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Closed vertex list (first vertex repeated) in the shape's unit frame."""
    n = len(radii)
    angle = np.arange(n + 1) * (2.0 * math.pi / n)
    r = np.append(np.asarray(radii), radii[0])
    return (r * np.cos(angle)).astype(np.float32), (r * np.sin(angle)).astype(np.float32)


@dataclass(frozen=True)
class Strip(Shape):
    """Straight band of constant width from v_top down to v_bottom, tilted by `angle` about its top centre.

    Lung B-lines: laser-like vertical reverberation artefacts that run from the pleura to the image bottom
    (along the beam, so tilted in a sector image).
    """

    cu: float
    v_top: float
    v_bottom: float
    half_width: float
    angle: float = 0.0  # radians from vertical, positive towards +u with depth

    def contains(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        du, dv = u - self.cu, v - self.v_top
        along = du * s + dv * c
        across = du * c - dv * s
        return (np.abs(across) <= self.half_width) & (along >= 0.0) & (along <= (self.v_bottom - self.v_top) / c)

    def bbox(self) -> BBox:
        length = (self.v_bottom - self.v_top) / math.cos(self.angle)
        shift = length * math.sin(self.angle)
        return (
            self.cu + min(0.0, shift) - self.half_width,
            self.cu + max(0.0, shift) + self.half_width,
            self.v_top - self.half_width,
            self.v_bottom + self.half_width,
        )


def random_star_radii(
    rng: np.random.Generator, irregularity: float, spiculation: float, n_vertices: int = 36
) -> tuple[float, ...]:
    """Random radial function: low harmonics give lobulation, alternating spikes give spiculation."""
    phi = np.arange(n_vertices) * (2.0 * math.pi / n_vertices)
    r = np.ones(n_vertices)
    for harmonic in range(2, 6):
        amplitude = irregularity * rng.uniform(0.3, 1.0) / harmonic
        r += amplitude * np.cos(harmonic * phi + rng.uniform(0.0, 2.0 * math.pi))
    if spiculation > 0:
        spikes = rng.uniform(0.5, 1.0, size=n_vertices) * spiculation
        r *= np.where(np.arange(n_vertices) % 2 == 0, 1.0 + spikes, 1.0 - 0.35 * spiculation)
    return tuple(float(x) for x in np.clip(r, 0.25, None))


def paint(target: np.ndarray, value: float | int, shape: Shape, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Write `value` into `target` where the shape covers (u, v); return the flat indices covered.

    Only the points in the shape's bounding box are tested, which keeps many small structures cheap.
    """
    u0, u1, v0, v1 = shape.bbox()
    uf, vf = u.reshape(-1), v.reshape(-1)
    candidates = np.flatnonzero((uf >= u0) & (uf <= u1) & (vf >= v0) & (vf <= v1))
    inside = candidates[shape.contains(uf[candidates], vf[candidates])]
    target.reshape(-1)[inside] = value
    return inside
