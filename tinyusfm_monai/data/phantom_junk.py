"""A phantom pool like a real archive: clean B-mode frames plus the junk real ultrasound archives hold.

Why: a coreset exists to remove low-quality and redundant images (TinyUSFM abstract: "avoiding training
degradation from low-quality redundant images"). A pool of clean phantom images cannot show whether it does, so
the pool generator can add what archives hold, at configurable rates (`JunkConfig`), and record the ground truth
for *evaluation only*: `generate_pool(..., junk=...)` writes it to `ground_truth.json` beside the datalist, a file
the pool manifest and the coreset selection never read (only `distillation.diagnostics` does, to print how the
selection did).

Junk types (pure NumPy, deterministic given the seed):

* ``blank``     near-uniform frames (black screen, scanner idle): a level plus weak noise.
* ``frozen``    runs of exact repeats of one frame (freeze held while the archive kept recording).
* ``burst``     near-duplicate cine runs: one scene, sub-pixel shifts, small gain drift, a little speckle change.
* ``saturated`` gain far too high: the field of view clips to white.
* ``dim``       gain far too low: anatomy barely above black.
* ``noise``     noise only, no anatomy: receiver noise finer than speckle, often with interference stripes
                ("electronic", default); or tissue-like speckle ("tissue"; such a frame is the same image as a
                lesion-free parenchyma frame, class 0 of every phantom classification task: junk only by label).
* ``overlay``   a clean frame with burned-in UI: banner text, calipers with a dotted line, grey bar, depth ticks;
                grey or in colour (then H x W x 3).
* ``air``       probe lifted: near-black field of view, ring-down and fading horizontal reverberation bands.

Clean frames are byte-identical to `generate_pool`'s first frames (same seed); derived junk uses scenes that are
not among them, so no clean frame has a hidden copy. Every frame keeps the task, organ and probe its scene was
drawn for, so coverage per organ/task can be measured.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

GROUP_TYPES = ("frozen", "burst")  # types whose frames come in runs that share a group id
SINGLE_TYPES = ("blank", "dim", "saturated", "noise", "overlay", "air")
JUNK_TYPES = SINGLE_TYPES + GROUP_TYPES
ALL_TYPES = ("clean",) + JUNK_TYPES
GROUND_TRUTH = "ground_truth.json"


# ---- clean frames with their phantom provenance ------------------------------------------------------


def scene_provenance(rng: np.random.Generator) -> dict[str, Any]:
    """Task, organ, probe and class that `pool_scene(rng)` will draw, read from a copy of the generator.

    `pool_scene` does not return what it picked; its first draws are the task index, the "other probe" coin (and
    that probe's index) and, for classification tasks, the class index. Replaying them on a copy leaves `rng`
    untouched, so the rendered image stays byte-identical to `generate_pool`'s.
    """
    from .phantom_physics import PROBES
    from .phantom_tasks import probe_for
    from .registry import TASKS

    r = copy.deepcopy(rng)
    names = sorted(TASKS)
    task = TASKS[names[int(r.integers(len(names)))]]
    probe = probe_for(task).name
    if r.random() < 0.3:
        probe = sorted(PROBES)[int(r.integers(len(PROBES)))]
    cls = int(r.integers(task.num_classes)) if task.task_type == "classification" else -1
    return {"task": task.name, "organ": task.organ, "probe": probe, "class_index": cls}


def render_clean(n: int, size: int = 64, seed: int = 0) -> tuple[list[np.ndarray], list[dict], list[np.ndarray]]:
    """`n` clean pool frames (uint8 H x W) exactly as `generate_pool(seed=seed)` renders them, their provenance
    (task, organ, probe, class_index, scene) and their fields of view (bool H x W, from the probe geometry)."""
    from .phantom_physics import render_full
    from .phantom_tasks import pool_scene, sample_rng

    frames, meta, fovs = [], [], []
    for index in range(n):
        rng = sample_rng(seed, "pool", "pool", index)
        info = scene_provenance(rng)
        out = render_full(pool_scene(rng), rng, size)
        frames.append(out.image)
        meta.append({**info, "scene": index})
        fovs.append(out.fov)
    return frames, meta, fovs


# ---- small image helpers -----------------------------------------------------------------------------


def field_of_view(frame: np.ndarray) -> np.ndarray:
    """Boolean field of view: per row, everything between the first and last non-black pixel (anechoic fluid is
    black inside the fan, so a plain `> 0` would punch holes in it)."""
    grey = frame if frame.ndim == 2 else frame.max(axis=2)
    nz = grey > 0
    fov = np.zeros_like(nz)
    for r in np.flatnonzero(nz.any(axis=1)):
        cols = np.flatnonzero(nz[r])
        fov[r, cols[0] : cols[-1] + 1] = True
    return fov


def _gauss_kernel(sigma: float) -> np.ndarray:
    if sigma <= 0:
        return np.ones(1, np.float32)
    half = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-half, half + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def smooth(a: np.ndarray, sigma_rows: float, sigma_cols: float) -> np.ndarray:
    """Separable Gaussian blur (same size, reflect padding)."""
    out = a.astype(np.float32)
    for axis, sigma in ((0, sigma_rows), (1, sigma_cols)):
        k = _gauss_kernel(sigma)
        if len(k) == 1:
            continue
        pad = len(k) // 2
        widths = [(0, 0)] * out.ndim
        widths[axis] = (pad, pad)
        padded = np.pad(out, widths, mode="reflect")
        out = np.apply_along_axis(lambda v, k=k: np.convolve(v, k, mode="valid"), axis, padded)
    return out


def shift_bilinear(frame: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Sub-pixel translation with bilinear interpolation, edges repeated (float32 out)."""
    h, w = frame.shape[:2]
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32) - dy, np.arange(w, dtype=np.float32) - dx, indexing="ij")
    y0 = np.clip(np.floor(yy).astype(int), 0, h - 1)
    x0 = np.clip(np.floor(xx).astype(int), 0, w - 1)
    y1, x1 = np.clip(y0 + 1, 0, h - 1), np.clip(x0 + 1, 0, w - 1)
    fy, fx = np.clip(yy - np.floor(yy), 0, 1), np.clip(xx - np.floor(xx), 0, 1)
    f = frame.astype(np.float32)
    if f.ndim == 3:
        fy, fx = fy[..., None], fx[..., None]
    top = f[y0, x0] * (1 - fx) + f[y0, x1] * fx
    bottom = f[y1, x0] * (1 - fx) + f[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def speckle_field(rng: np.random.Generator, h: int, w: int, grain: float = 1.0) -> np.ndarray:
    """Fully developed speckle in dB around 0: envelope of a low-passed complex Gaussian field, wider laterally
    than axially as on a scanner; `grain` scales it with the image size (1.0 = the phantom's grain at 64 px)."""
    re = smooth(rng.standard_normal((h, w)), 0.9 * grain, 1.8 * grain)
    im = smooth(rng.standard_normal((h, w)), 0.9 * grain, 1.8 * grain)
    env = np.sqrt(re**2 + im**2)
    env /= np.sqrt(np.mean(env**2)) + 1e-12
    return 20.0 * np.log10(env + 1e-6)


# ---- junk makers (each returns uint8 H x W, or H x W x 3 for colour overlays) ---------------------------


def make_blank(rng: np.random.Generator, size: int) -> np.ndarray:
    """A near-uniform frame: black screen (most often) or a flat grey level, with weak noise."""
    level = rng.uniform(0, 12) if rng.random() < 0.7 else rng.uniform(12, 60)
    return to_uint8(level + rng.normal(0, rng.uniform(0.3, 2.5), (size, size)))


def make_saturated(rng: np.random.Generator, frame: np.ndarray) -> np.ndarray:
    """Receive gain far too high: the field of view clips to white except the darkest structures."""
    fov = field_of_view(frame)
    out = frame.astype(np.float32) * rng.uniform(2.5, 5.0) + rng.uniform(60, 140)
    out[~fov] = 0
    return to_uint8(out)


def make_dim(rng: np.random.Generator, frame: np.ndarray) -> np.ndarray:
    """Receive gain far too low: anatomy a few grey levels above black."""
    return to_uint8(frame.astype(np.float32) * rng.uniform(0.04, 0.15))


def make_noise(rng: np.random.Generator, fov: np.ndarray, style: str = "electronic") -> np.ndarray:
    """A noise-dominated frame without anatomy inside a scanner field of view (see the module docstring)."""
    h, w = fov.shape
    if style == "tissue":
        level_db = speckle_field(rng, h, w, grain=h / 64.0)
        mean_grey, dyn = rng.uniform(80, 150), rng.uniform(45, 65)
        depth_ramp = np.linspace(0, rng.uniform(-25, 15), h, dtype=np.float32)[:, None]  # TGC error
        out = mean_grey + 255.0 * (level_db + depth_ramp * 0.3) / dyn
    else:
        level_db = speckle_field(rng, h, w, grain=0.35 * h / 64.0)
        out = rng.uniform(90, 170) + 255.0 * level_db / rng.uniform(30, 45)
        if rng.random() < 0.7:  # mains / EMI interference stripes
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            angle = rng.uniform(0, np.pi)
            period = rng.uniform(0.06, 0.2) * h
            phase = (xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period
            out += rng.uniform(30, 80) * np.sin(phase)
    out[~fov] = 0
    return to_uint8(out)


def make_air(rng: np.random.Generator, fov: np.ndarray) -> np.ndarray:
    """Probe lifted off the skin: a bright near-field band, then horizontal reverberation bands at multiples of one
    depth, each weaker, over a near-black field."""
    h, w = fov.shape
    rows = np.arange(h, dtype=np.float32)[:, None]
    out = np.full((h, w), rng.uniform(2, 10), np.float32)
    out += 4.0 * smooth(rng.standard_normal((h, w)), 0.5, 1.0)
    period = rng.uniform(0.07, 0.16) * h
    thickness = max(0.6, rng.uniform(0.008, 0.02) * h)
    level = rng.uniform(90, 170)
    ring_down = max(1.0, rng.uniform(0.02, 0.06) * h)
    out += level * np.exp(-rows / ring_down)  # transducer face
    k = 1
    while k * period < h:
        out += level * rng.uniform(0.55, 0.75) ** k * np.exp(-0.5 * ((rows - k * period) / thickness) ** 2)
        k += 1
    out[~fov] = 0
    return to_uint8(out)


def _glyph_row(
    rng: np.random.Generator, canvas: np.ndarray, y: int, x: int, n_chars: int, scale: int, colour: np.ndarray
) -> None:
    """Burn `n_chars` random 3x5 glyphs (text-like marks) at (y, x), clipped to the canvas."""
    h, w = canvas.shape[:2]
    for c in range(n_chars):
        glyph = np.kron(rng.random((5, 3)) < 0.55, np.ones((scale, scale), bool))
        gy, gx = y, x + c * 4 * scale
        if gx + glyph.shape[1] > w or gy + glyph.shape[0] > h:
            break
        canvas[gy : gy + glyph.shape[0], gx : gx + glyph.shape[1]][glyph] = colour


def make_overlay(rng: np.random.Generator, frame: np.ndarray, colour_prob: float = 0.5) -> np.ndarray:
    """A clean frame with burned-in scanner UI: dark top banner with text, corner readouts, two calipers joined by a
    dotted line, a grey-scale bar and depth ticks; coloured (H x W x 3) with probability `colour_prob`."""
    h, w = frame.shape
    scale = max(1, round(h / 64))
    coloured = rng.random() < colour_prob
    canvas = np.repeat(frame[..., None], 3, axis=2).astype(np.uint8)
    white = np.array([255, 255, 255], np.uint8)
    palette = [[255, 255, 0], [0, 255, 0], [0, 255, 255]]
    ui = np.array(palette[int(rng.integers(3))], np.uint8) if coloured else white
    banner = int(round(rng.uniform(0.08, 0.14) * h))
    canvas[:banner] = np.uint8(rng.uniform(15, 45))
    _glyph_row(rng, canvas, max(0, banner // 2 - 3 * scale), scale, int(rng.integers(5, 12)), scale, white)
    _glyph_row(rng, canvas, banner + scale, w - 4 * scale * 4, 4, scale, ui)  # depth / gain readout
    _glyph_row(rng, canvas, h - 6 * scale, scale, int(rng.integers(3, 7)), scale, ui)  # bottom-left label
    bar_w = max(2, round(0.03 * w))
    bar = np.linspace(255, 0, h - banner - 4 * scale, dtype=np.float32)
    canvas[banner + 2 * scale : h - 2 * scale, w - bar_w :] = bar[:, None, None].astype(np.uint8)
    for y in range(banner + 2 * scale, h, max(3, round(0.1 * h))):  # depth ticks
        canvas[y : y + scale, : 2 * scale] = white
    arm = max(2, round(0.04 * h))
    pts = [
        (int(rng.integers(banner + arm + 2, h - arm - 2)), int(rng.integers(arm + 4, w - arm - bar_w - 4)))
        for _ in range(2)
    ]
    for y, x in pts:  # caliper crosses
        canvas[y - arm : y + arm + 1, x : x + scale] = ui
        canvas[y : y + scale, x - arm : x + arm + 1] = ui
    for t in np.linspace(0, 1, 12)[1:-1:2]:  # dotted measuring line
        y = int(round(pts[0][0] + t * (pts[1][0] - pts[0][0])))
        x = int(round(pts[0][1] + t * (pts[1][1] - pts[0][1])))
        canvas[y : y + scale, x : x + scale] = ui
    return canvas if coloured else canvas[..., 0].copy()


def make_burst(
    rng: np.random.Generator,
    frame: np.ndarray,
    length: int,
    max_shift: float = 0.4,
    gain_jitter: float = 0.03,
    decorrelation: float = 0.03,
) -> list[np.ndarray]:
    """A cine burst: `length` frames of one scene, each translated by up to `max_shift` pixels, scaled by a gain
    within ±`gain_jitter` and multiplied by a weak smooth random field (`decorrelation`: speckle change)."""
    fov = field_of_view(frame)
    out = []
    for _ in range(length):
        dy, dx = rng.uniform(-max_shift, max_shift, 2)
        f = shift_bilinear(frame, dy, dx) * (1 + rng.uniform(-gain_jitter, gain_jitter))
        f *= 1 + decorrelation * smooth(rng.standard_normal(frame.shape), 0.5, 1.0) / 0.5
        f[~fov] = 0
        out.append(to_uint8(f))
    return out


# ---- the whole pool ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JunkConfig:
    """Share of the final pool taken by each junk type (the rest is clean, one distinct scene per frame).

    `frozen` and `burst` are the shares of frames that belong to such runs; run lengths are drawn from
    `run_length` (inclusive). The defaults give ~36 % junk (the "33 % junk" pool of issue 12).
    """

    blank: float = 0.05
    dim: float = 0.03
    saturated: float = 0.04
    noise: float = 0.05
    overlay: float = 0.05
    air: float = 0.05
    frozen: float = 0.04
    burst: float = 0.05
    run_length: tuple[int, int] = (4, 8)
    overlay_colour_prob: float = 0.5
    burst_max_shift: float = 0.4
    burst_gain_jitter: float = 0.03
    burst_decorrelation: float = 0.03
    noise_style: str = "electronic"
    contiguous_runs: bool = True  # runs stay contiguous in the pool, as cine frames in an archive

    def __post_init__(self) -> None:
        if self.noise_style not in ("electronic", "tissue"):
            raise ValueError(f"junk noise_style {self.noise_style!r}: choose electronic or tissue")
        if any(getattr(self, t) < 0 for t in JUNK_TYPES) or sum(getattr(self, t) for t in JUNK_TYPES) >= 1:
            raise ValueError(f"junk shares must be >= 0 and leave clean frames: {self.to_dict()}")

    @classmethod
    def from_value(cls, value: JunkConfig | dict | bool | str | None) -> JunkConfig | None:
        """None/False/""/"none" → no junk; True/"default" → the defaults; a dict → those fields over the defaults."""
        if isinstance(value, cls):
            return value
        if value in (None, False, "", "none"):
            return None
        if value in (True, "default"):
            return cls()
        if not isinstance(value, dict):
            raise ValueError(f"junk: expected true, 'default' or a dict of rates, got {value!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"junk: unknown setting(s) {unknown}; known: {sorted(known)}")
        if "run_length" in value:
            value = {**value, "run_length": tuple(value["run_length"])}
        return cls(**value)

    def counts(self, n_total: int) -> dict[str, int]:
        return {t: int(round(getattr(self, t) * n_total)) for t in JUNK_TYPES}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_length"] = list(self.run_length)
        return out


@dataclass
class JunkPool:
    """The frames (uint8 H x W or H x W x 3) and the ground truth per frame (evaluation only)."""

    images: list[np.ndarray]
    truth: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)

    def types(self) -> np.ndarray:
        return np.array([t["type"] for t in self.truth])


def _run_lengths(rng: np.random.Generator, total: int, lo: int, hi: int) -> list[int]:
    lengths: list[int] = []
    while sum(lengths) < total:
        lengths.append(int(rng.integers(lo, hi + 1)))
    if lengths:
        lengths[-1] -= sum(lengths) - total
        if lengths[-1] < 2:  # a "run" of one is not a run: merge it into the previous one
            extra = lengths.pop()
            if lengths:
                lengths[-1] += extra
    return [n for n in lengths if n > 0]


def _record(kind: str, meta: dict | None, group: int = -1) -> dict[str, Any]:
    base: dict[str, Any] = {"task": None, "organ": None, "probe": None, "scene": -1}
    if meta is not None:
        base = {k: meta[k] for k in ("task", "organ", "probe", "scene")}
    return {"type": kind, "group": group, **base}


def build_junk_pool(n_total: int, size: int = 64, seed: int = 0, config: JunkConfig | None = None) -> JunkPool:
    """A pool of `n_total` frames: clean phantom frames plus junk per `config`, in a deterministic shuffled order.

    Ground truth per frame: `type` (clean | blank | dim | saturated | noise | overlay | air | frozen | burst),
    `group` (run id of frozen/burst frames, -1 otherwise), `task`, `organ`, `probe`, `scene` (the phantom scene the
    frame shows; -1 when it shows no anatomy).
    """
    cfg = config or JunkConfig()
    rng = np.random.default_rng([seed, 0x4A554E4B])  # "JUNK"
    counts = cfg.counts(n_total)
    n_clean = n_total - sum(counts.values())
    if n_clean <= 0:
        raise ValueError(f"junk shares {counts} leave no clean frames in a pool of {n_total}")
    frozen_runs = _run_lengths(rng, counts["frozen"], *cfg.run_length)
    burst_runs = _run_lengths(rng, counts["burst"], *cfg.run_length)
    n_derived = counts["saturated"] + counts["dim"] + counts["overlay"] + len(frozen_runs) + len(burst_runs)
    n_fov = counts["noise"] + counts["air"]
    frames, meta, fovs = render_clean(n_clean + n_derived + n_fov, size, seed)
    src = iter(range(n_clean, n_clean + n_derived))
    fov_src = iter(range(n_clean + n_derived, n_clean + n_derived + n_fov))
    units: list[list[tuple[np.ndarray, dict]]] = []  # a unit = one frame, or one run kept together
    units += [[(frames[i], _record("clean", meta[i]))] for i in range(n_clean)]
    units += [[(make_blank(rng, size), _record("blank", None))] for _ in range(counts["blank"])]
    for kind, maker in (("saturated", make_saturated), ("dim", make_dim)):
        for _ in range(counts[kind]):
            i = next(src)
            units.append([(maker(rng, frames[i]), _record(kind, meta[i]))])
    for _ in range(counts["overlay"]):
        i = next(src)
        units.append([(make_overlay(rng, frames[i], cfg.overlay_colour_prob), _record("overlay", meta[i]))])
    for kind in ("noise", "air"):
        for _ in range(counts[kind]):
            i = next(fov_src)  # only the scanner's field of view (probe geometry) is borrowed, no anatomy
            rec = {**_record(kind, None), "probe": meta[i]["probe"]}
            image = make_noise(rng, fovs[i], cfg.noise_style) if kind == "noise" else make_air(rng, fovs[i])
            units.append([(image, rec)])
    group = 0
    for length in frozen_runs:
        i = next(src)
        units.append([(frames[i].copy(), _record("frozen", meta[i], group)) for _ in range(length)])
        group += 1
    for length in burst_runs:
        i = next(src)
        burst = make_burst(rng, frames[i], length, cfg.burst_max_shift, cfg.burst_gain_jitter, cfg.burst_decorrelation)
        units.append([(f, _record("burst", meta[i], group)) for f in burst])
        group += 1
    if not cfg.contiguous_runs:
        units = [[item] for u in units for item in u]
    images, truth = [], []
    for u in rng.permutation(len(units)):
        for f, t in units[u]:
            images.append(f)
            truth.append(t)
    return JunkPool(images, truth, {"n_total": n_total, "size": size, "seed": seed, **cfg.to_dict()})


def summary(truth: list[dict[str, Any]]) -> dict[str, int]:
    """Frames per type."""
    types = [t["type"] for t in truth]
    return {t: types.count(t) for t in ALL_TYPES}
