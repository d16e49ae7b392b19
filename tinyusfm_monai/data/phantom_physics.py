"""B-mode image formation for the ultrasound phantom.

The chain follows a real scanner: tissue is a field of random point scatterers whose density and
amplitude depend on the tissue type; the received RF echo is that field convolved with the
transducer's point spread function (a Gaussian-modulated cosine pulse along the beam times a Gaussian
beam profile across it); sound is attenuated on the way down and back, which time-gain compensation
(TGC) undoes only for the attenuation it assumes, so structures that attenuate more (calcifications,
solid tumours) cast shadows and fluid that attenuates less (cysts) enhances what lies behind it.
Envelope detection (analytic signal via an FFT Hilbert transform) and log compression into a dynamic
range turn echoes into grey levels; sector probes are simulated in (range, angle) and scan-converted
to the Cartesian display, with black outside the fan.

Scale. A faithful RF simulation samples a few points per wavelength (0.2 mm at 7.5 MHz), i.e. ~30x
more samples than a 224-pixel image can show; the speckle would be averaged away on display. Here the
simulation grid is tied to the output size and the pulse is expressed in simulation samples, so the
speckle grain matches that of clinical images resized to 224 px. Attenuation uses the physical depth
(cm) and centre frequency (MHz) of the probe, so shadows and enhancement have realistic strength.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np

from .phantom_shapes import Shape, paint

UNIFORM_UNIT_VARIANCE = math.sqrt(12.0)  # scales U(-1/2, 1/2) to unit variance
DB_TO_NEPER = math.log(10.0) / 20.0  # amplitude factor exp(-x * DB_TO_NEPER) == 10 ** (-x / 20)

# ---- tissue acoustics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tissue:
    """Acoustic properties of one tissue type.

    Mean backscattered power is set by `echogenicity_db` (relative to reference parenchyma) whatever
    the scatterer density, so density controls only the texture: many scatterers per resolution cell
    give fully developed (Rayleigh) speckle, few give a coarse, spotty, non-Rayleigh texture.
    """

    echogenicity_db: float  # mean backscatter relative to parenchyma, dB (fluid: <= -60)
    scatterer_density: float  # probability of a scatterer per simulation sample, 0..1
    attenuation_db_cm_mhz: float  # one-way attenuation coefficient, dB / cm / MHz
    striation: float = 0.0  # depth of fibre-like amplitude modulation (muscle fascicles), 0..1
    striation_period: float = 0.06  # spacing of the fibres, image heights

    @property
    def amplitude(self) -> float:
        if self.echogenicity_db <= -60.0 or self.scatterer_density <= 0.0:
            return 0.0
        return 10.0 ** (self.echogenicity_db / 20.0) / math.sqrt(self.scatterer_density)

    def with_(self, **changes: float) -> Tissue:
        return Tissue(**{**self.__dict__, **changes})


# Reference values: soft-tissue attenuation 0.5-1 dB/cm/MHz, water 0.002, bone/calcium >10 (dB/cm/MHz).
PARENCHYMA = Tissue(echogenicity_db=0.0, scatterer_density=0.7, attenuation_db_cm_mhz=0.5)
FLUID = Tissue(echogenicity_db=-80.0, scatterer_density=0.0, attenuation_db_cm_mhz=0.002)
HYPOECHOIC = Tissue(echogenicity_db=-11.0, scatterer_density=0.6, attenuation_db_cm_mhz=0.6)
ATTENUATING_SOLID = Tissue(echogenicity_db=-12.0, scatterer_density=0.5, attenuation_db_cm_mhz=2.5)
ISOECHOIC_COARSE = Tissue(echogenicity_db=0.0, scatterer_density=0.04, attenuation_db_cm_mhz=0.6)
HYPERECHOIC = Tissue(echogenicity_db=9.0, scatterer_density=0.8, attenuation_db_cm_mhz=0.9)
FAT = Tissue(echogenicity_db=-8.0, scatterer_density=0.3, attenuation_db_cm_mhz=0.6)
SPECULAR = Tissue(echogenicity_db=16.0, scatterer_density=1.0, attenuation_db_cm_mhz=1.0)
CALCIFICATION = Tissue(echogenicity_db=20.0, scatterer_density=1.0, attenuation_db_cm_mhz=15.0)
# Bone: the attenuation is an effective value so the strong surface echo stays visible over a few samples
# before the shadow takes over (real bone reflects most energy at its surface and absorbs the rest).
BONE = Tissue(echogenicity_db=22.0, scatterer_density=1.0, attenuation_db_cm_mhz=6.0)
# Below the pleura nothing is transmitted: the grey seen there is reverberation, weak and fading with depth.
AIR = Tissue(echogenicity_db=-24.0, scatterer_density=0.3, attenuation_db_cm_mhz=0.6)
MUSCLE = Tissue(echogenicity_db=-4.0, scatterer_density=0.6, attenuation_db_cm_mhz=1.0, striation=0.8)

ECHOGENICITY: dict[str, Tissue] = {
    "anechoic": FLUID,
    "hypoechoic": HYPOECHOIC,
    "isoechoic": ISOECHOIC_COARSE,
    "hyperechoic": HYPERECHOIC,
}


# ---- probes and imaging settings ---------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """Transducer geometry. Sector probes scan a fan from an apex; linear probes a rectangle."""

    name: str
    geometry: Literal["linear", "sector"]
    center_frequency_mhz: float
    depth_cm: float  # imaged depth along each beam
    opening_angle_deg: float = 0.0  # sector: full fan angle
    apex_radius: float = 0.0  # sector: radius of the curved array as a fraction of depth (0 = phased array)


LINEAR_PROBE = Probe("linear", "linear", center_frequency_mhz=7.5, depth_cm=4.0)
CURVILINEAR_PROBE = Probe("curvilinear", "sector", 3.5, 14.0, opening_angle_deg=55.0, apex_radius=0.25)
PHASED_PROBE = Probe("phased", "sector", 2.5, 15.0, opening_angle_deg=70.0, apex_radius=0.03)
PROBES: dict[str, Probe] = {p.name: p for p in (LINEAR_PROBE, CURVILINEAR_PROBE, PHASED_PROBE)}


@dataclass(frozen=True)
class Imaging:
    """Beamforming and display settings (pulse and beam in simulation samples, see the module note)."""

    samples_per_wavelength: float = 4.0  # RF carrier period on the axial grid, samples
    pulse_sigma_wavelengths: float = 0.7  # Gaussian pulse envelope s.d. (-6 dB fractional bandwidth ~ 0.43)
    beam_sigma_lines: float = 1.7  # lateral Gaussian beam s.d., scan lines (wider than the pulse: speckle is
    # elongated across the beam, as lateral resolution is worse than axial on every scanner)
    axial_samples_per_pixel: float = 1.5  # axial simulation samples per output pixel of depth
    lines_per_pixel: float = 0.9  # scan lines per output pixel of width
    dynamic_range_db: float = 55.0  # displayed log range: 0 grey at -DR, white at 0 dB
    parenchyma_display_db: float = -31.0  # where 0-dB parenchyma's mean echo is displayed (grey ~ 110)
    noise_db: float = -52.0  # receiver (thermal) noise relative to 0-dB parenchyma, before TGC
    psf_margin_sigmas: float = 3.5  # zero padding around the grid so the FFT convolution does not wrap


DEFAULT_IMAGING = Imaging()


# ---- scene ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Structure:
    """A region of one tissue; `label` is its mask value (0 = unlabelled anatomy)."""

    shape: Shape
    tissue: Tissue
    label: int = 0


@dataclass(frozen=True)
class Scene:
    """Everything that fixes one image up to speckle: probe, background tissue, structures in paint order."""

    probe: Probe
    background: Tissue = PARENCHYMA
    structures: tuple[Structure, ...] = ()
    gain_db: float = 0.0  # overall receive gain error
    # The operator sets TGC to flatten the organ: it compensates the background's attenuation, so only
    # structures that attenuate differently leave shadows or enhancement; plus a residual slope error.
    tgc_error_db_cm: float = 0.0
    striation_tilt: float = 0.0  # fibre direction, radians from horizontal
    imaging: Imaging = field(default_factory=Imaging)


# ---- geometry: simulation grid <-> display grid -------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    n_axial: int
    n_lines: int
    sim_u: np.ndarray  # (n_axial, n_lines) image coordinates of each RF sample
    sim_v: np.ndarray
    range_cm: np.ndarray  # (n_axial,) depth along the beam
    pix_u: np.ndarray  # (size, size) pixel centres
    pix_v: np.ndarray
    fov: np.ndarray  # (size, size) bool: pixel inside the imaged region
    gather_index: np.ndarray  # (4, n_fov) flat indices into the (n_axial, n_lines) image
    gather_weight: np.ndarray  # (4, n_fov) bilinear weights
    fov_flat: np.ndarray  # (n_fov,) flat pixel indices inside the field of view


def _fan_frame(probe: Probe) -> tuple[float, float, float]:
    """Half angle, curved-array radius and the scale that fits the fan's bounding box in the unit square.

    Lengths are in units of the imaged depth, measured from the (virtual) apex.
    """
    half = math.radians(probe.opening_angle_deg) / 2.0
    r0 = probe.apex_radius
    width = 2.0 * (r0 + 1.0) * math.sin(half)
    height = (r0 + 1.0) - r0 * math.cos(half)
    return half, r0, 1.0 / max(width, height)


def probe_point(probe: Probe, range_fraction: float, lateral_fraction: float) -> tuple[float, float]:
    """Image coordinates (u, v) of a point at a fraction of the depth and of the aperture (-1..1)."""
    if probe.geometry == "linear":
        return 0.5 + 0.5 * lateral_fraction, range_fraction
    half, r0, scale = _fan_frame(probe)
    r, theta = r0 + range_fraction, lateral_fraction * half
    return 0.5 + r * math.sin(theta) * scale, (r * math.cos(theta) - r0 * math.cos(half)) * scale


def image_units_per_depth(probe: Probe) -> float:
    """How many image heights one imaged depth spans (1 for linear probes, < 1 for wide fans)."""
    return 1.0 if probe.geometry == "linear" else _fan_frame(probe)[2]


@lru_cache(maxsize=32)
def _geometry(probe: Probe, size: int, imaging: Imaging) -> _Geometry:
    n_axial = max(32, int(round(size * imaging.axial_samples_per_pixel)))
    n_lines = max(24, int(round(size * imaging.lines_per_pixel)))
    axial = np.arange(n_axial) / (n_axial - 1)  # fraction of depth
    lateral = np.arange(n_lines) / (n_lines - 1)
    centres = (np.arange(size) + 0.5) / size
    pix_u, pix_v = np.meshgrid(centres, centres)  # rows = depth (v), columns = lateral (u)
    if probe.geometry == "linear":
        sim_v, sim_u = np.meshgrid(axial, lateral, indexing="ij")
        fi, fj = pix_v * (n_axial - 1), pix_u * (n_lines - 1)
    else:
        half, r0, scale = _fan_frame(probe)
        r = r0 + axial[:, None]
        theta = -half + 2.0 * half * lateral[None, :]
        sim_u = 0.5 + r * np.sin(theta) * scale
        sim_v = (r * np.cos(theta) - r0 * math.cos(half)) * scale
        x = (pix_u - 0.5) / scale
        z = pix_v / scale + r0 * math.cos(half)
        fi = (np.hypot(x, z) - r0) * (n_axial - 1)
        fj = (np.arctan2(x, z) + half) / (2.0 * half) * (n_lines - 1)
    fov = (fi >= 0) & (fi <= n_axial - 1) & (fj >= 0) & (fj <= n_lines - 1)
    fov_flat = np.flatnonzero(fov)
    fi, fj = fi.reshape(-1)[fov_flat], fj.reshape(-1)[fov_flat]
    i0 = np.minimum(np.floor(fi).astype(np.int64), n_axial - 2)
    j0 = np.minimum(np.floor(fj).astype(np.int64), n_lines - 2)
    wi, wj = fi - i0, fj - j0
    index = np.stack([i0 * n_lines + j0, i0 * n_lines + j0 + 1, (i0 + 1) * n_lines + j0, (i0 + 1) * n_lines + j0 + 1])
    weight = np.stack([(1 - wi) * (1 - wj), (1 - wi) * wj, wi * (1 - wj), wi * wj]).astype(np.float32)
    return _Geometry(
        n_axial=n_axial,
        n_lines=n_lines,
        sim_u=sim_u.astype(np.float32),
        sim_v=sim_v.astype(np.float32),
        range_cm=(axial * probe.depth_cm).astype(np.float32),
        pix_u=pix_u.astype(np.float32),
        pix_v=pix_v.astype(np.float32),
        fov=fov,
        gather_index=index,
        gather_weight=weight,
        fov_flat=fov_flat,
    )


# ---- point spread function and envelope detection -----------------------------------------------------


def _fast_fft_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: pocketfft is several times slower on lengths with large prime factors."""
    best = 2 * n
    for a in range(int(math.log2(2 * n)) + 1):
        for b in range(int(math.log(2 * n, 3)) + 1):
            for c in range(int(math.log(2 * n, 5)) + 1):
                m = 2**a * 3**b * 5**c
                if n <= m < best:
                    best = m
    return best


@dataclass(frozen=True)
class _Kernel:
    fft_length: int  # axial FFT length, zero-padded so the pulse does not wrap around
    analytic_pulse: np.ndarray  # (fft_length // 2 + 1, 1) one-sided pulse spectrum: gives the analytic signal
    beam_taps: np.ndarray  # lateral Gaussian beam profile, odd length, centred
    reference_power: float  # mean |analytic|^2 for unit-variance white scatterers (0-dB tissue, density 1)


@lru_cache(maxsize=32)
def _kernel(n_axial: int, imaging: Imaging) -> _Kernel:
    """RF point spread function: Gaussian-modulated cosine pulse (axial) x Gaussian beam (lateral).

    The PSF is separable, so the beam is applied as a short lateral filter and the pulse in the axial
    Fourier domain. Keeping only positive axial frequencies (doubled) makes the output the analytic
    signal of the RF line: the RF echo is its real part, its Hilbert transform the imaginary part.
    """
    sigma_axial = imaging.pulse_sigma_wavelengths * imaging.samples_per_wavelength
    n = _fast_fft_length(n_axial + 2 * int(math.ceil(imaging.psf_margin_sigmas * sigma_axial)))
    z = np.fft.fftfreq(n) * n  # signed sample offsets: pulse centred on sample 0 (no delay)
    pulse = np.exp(-0.5 * (z / sigma_axial) ** 2) * np.cos(2.0 * math.pi * z / imaging.samples_per_wavelength)
    one_sided = np.full(n // 2 + 1, 2.0)
    one_sided[0] = 1.0
    if n % 2 == 0:
        one_sided[-1] = 1.0  # the Nyquist bin belongs to both halves
    analytic_pulse = np.fft.rfft(pulse) * one_sided
    half_width = int(math.ceil(imaging.psf_margin_sigmas * imaging.beam_sigma_lines))
    x = np.arange(-half_width, half_width + 1)
    beam = np.exp(-0.5 * (x / imaging.beam_sigma_lines) ** 2)
    # Parseval: white input of unit variance gives mean power sum|h_analytic|^2 = sum|spectrum|^2 / n.
    reference_power = float(np.sum(np.abs(analytic_pulse) ** 2) / n * np.sum(beam**2))
    return _Kernel(n, analytic_pulse[:, None].astype(np.complex64), beam.astype(np.float32), reference_power)


def analytic_signal(scatterers: np.ndarray, imaging: Imaging = DEFAULT_IMAGING) -> np.ndarray:
    """Analytic RF signal (real part = RF echo, modulus = envelope) of an (n_axial, n_lines) scatterer map."""
    n_axial, n_lines = scatterers.shape
    kernel = _kernel(n_axial, imaging)
    # Lateral beam: sum of shifted copies (no echoes from outside the scanned lines).
    half = len(kernel.beam_taps) // 2
    beamformed = np.zeros_like(scatterers, dtype=np.float32)
    for offset, tap in zip(range(-half, half + 1), kernel.beam_taps):
        if offset >= 0:
            beamformed[:, offset:] += tap * scatterers[:, : n_lines - offset]
        else:
            beamformed[:, :offset] += tap * scatterers[:, -offset:]
    spectrum = np.fft.rfft(beamformed, n=kernel.fft_length, axis=0) * kernel.analytic_pulse
    full = np.zeros((kernel.fft_length, n_lines), np.complex64)
    full[: spectrum.shape[0]] = spectrum
    return np.fft.ifft(full, axis=0)[:n_axial]


# ---- rendering -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendering:
    image: np.ndarray  # (size, size) uint8 B-mode, black outside the field of view
    mask: np.ndarray  # (size, size) uint8 label map, 0 outside the field of view
    fov: np.ndarray  # (size, size) bool
    envelope_db: np.ndarray  # (n_axial, n_lines) TGC-corrected echo level before display mapping, dB
    rf: np.ndarray  # (n_axial, n_lines) RF echo (real part of the analytic signal), before TGC


def _tissue_maps(scene: Scene, geo: _Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    shape = (geo.n_axial, geo.n_lines)
    bg = scene.background
    amplitude = np.full(shape, bg.amplitude, np.float32)
    density = np.full(shape, bg.scatterer_density, np.float32)
    attenuation = np.full(shape, bg.attenuation_db_cm_mhz, np.float32)
    striation = np.full(shape, bg.striation, np.float32)
    period = np.full(shape, bg.striation_period, np.float32)
    for s in scene.structures:
        idx = paint(amplitude, s.tissue.amplitude, s.shape, geo.sim_u, geo.sim_v)
        density.reshape(-1)[idx] = s.tissue.scatterer_density
        attenuation.reshape(-1)[idx] = s.tissue.attenuation_db_cm_mhz
        striation.reshape(-1)[idx] = s.tissue.striation
        period.reshape(-1)[idx] = s.tissue.striation_period
    if np.any(striation > 0):
        # Fascicles: parallel bright septa along the fibre direction (sinusoid raised to a sharp ridge).
        c, s_ = math.cos(scene.striation_tilt), math.sin(scene.striation_tilt)
        across = -geo.sim_u * s_ + geo.sim_v * c
        ridge = (0.5 + 0.5 * np.cos(2.0 * math.pi * across / period)) ** 8
        amplitude *= (1.0 - striation) + striation * 4.0 * ridge
    return amplitude, density, attenuation, striation


def render_full(scene: Scene, rng: np.random.Generator, size: int) -> Rendering:
    """Simulate one B-mode image and its exact label map; see the module docstring for the physics."""
    imaging = scene.imaging
    probe = scene.probe
    geo = _geometry(probe, size, imaging)
    amplitude, density, attenuation, _ = _tissue_maps(scene, geo)

    # Scatterers: Bernoulli positions with zero-mean, unit-variance reflectivities. One uniform draw gives
    # both (given u < density, u / density is again uniform); the reflectivity law itself does not matter
    # once several scatterers share a resolution cell (central limit -> Rayleigh speckle).
    draw = rng.random((geo.n_axial, geo.n_lines), dtype=np.float32)
    present = draw < density
    reflectivity = (draw / np.maximum(density, 1e-6) - 0.5) * UNIFORM_UNIT_VARIANCE
    scatterers = np.where(present, reflectivity * amplitude, np.float32(0.0))

    # Round-trip attenuation accumulated along each beam (axis 0 is range in both geometries).
    dr_cm = probe.depth_cm / (geo.n_axial - 1)
    one_way_db = (np.cumsum(attenuation, axis=0) - 0.5 * attenuation) * (dr_cm * probe.center_frequency_mhz)
    scatterers *= np.exp(one_way_db * np.float32(-2.0 * DB_TO_NEPER))

    # Receiver noise enters after the tissue, so TGC amplifies it at depth like on a real scanner.
    kernel = _kernel(geo.n_axial, imaging)
    noise_amplitude = 10.0 ** (imaging.noise_db / 20.0) * UNIFORM_UNIT_VARIANCE
    scatterers += noise_amplitude * (rng.random(scatterers.shape, dtype=np.float32) - 0.5)

    analytic = analytic_signal(scatterers, imaging)
    power = analytic.real**2 + analytic.imag**2
    level_db = 10.0 * np.log10(power / kernel.reference_power + 1e-12)
    tgc_slope_db_cm = 2.0 * scene.background.attenuation_db_cm_mhz * probe.center_frequency_mhz + scene.tgc_error_db_cm
    tgc_db = tgc_slope_db_cm * geo.range_cm
    level_db += tgc_db[:, None] + scene.gain_db

    # Log compression: parenchyma's mean power (0 dB) sits at `parenchyma_display_db` below white.
    display = 255.0 * (1.0 + (level_db + imaging.parenchyma_display_db) / imaging.dynamic_range_db)
    np.clip(display, 0.0, 255.0, out=display)

    # Scan conversion (bilinear), black outside the fan / aperture.
    flat = display.reshape(-1)
    values = np.sum(flat[geo.gather_index] * geo.gather_weight, axis=0)
    image = np.zeros(size * size, np.float32)
    image[geo.fov_flat] = values
    image = np.rint(image).astype(np.uint8).reshape(size, size)

    mask = np.zeros((size, size), np.uint8)
    for s in scene.structures:
        paint(mask, s.label, s.shape, geo.pix_u, geo.pix_v)
    mask[~geo.fov] = 0
    return Rendering(image=image, mask=mask, fov=geo.fov, envelope_db=level_db, rf=analytic.real)


def render(scene: Scene, rng: np.random.Generator, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """One B-mode image (uint8, HxW, rows = depth) and its label map (uint8, registry values)."""
    out = render_full(scene, rng, size)
    return out.image, out.mask
