"""Phantom scenes for every registry task: which anatomy, which probe, and what makes each class visible.

Nothing here repeats a class list: class counts, label values and organs come from
`tinyusfm_monai.data.registry`. A classification class index maps to a deterministic *recipe* (lesion
echogenicity, margin, count, size, shadowing, background texture) so class identity is visible in the
image; segmentation tasks draw their anatomy from the organ (kidney, nerve, pleura, muscle, or a generic
lesion) for one foreground label and from generic nested/adjacent layouts for several labels.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import numpy as np

from .phantom_physics import (
    AIR,
    ATTENUATING_SOLID,
    BONE,
    CALCIFICATION,
    CURVILINEAR_PROBE,
    ECHOGENICITY,
    FAT,
    FLUID,
    HYPERECHOIC,
    HYPOECHOIC,
    ISOECHOIC_COARSE,
    LINEAR_PROBE,
    MUSCLE,
    PARENCHYMA,
    PHASED_PROBE,
    PROBES,
    SPECULAR,
    Probe,
    Scene,
    Structure,
    Tissue,
    image_units_per_depth,
    probe_point,
)
from .phantom_shapes import Band, Ellipse, Ring, Shape, StarPolygon, Strip, random_star_radii
from .registry import TASKS, Task, get_task

# ---- probes by organ ---------------------------------------------------------------------------------

# First matching keyword of the registry organ wins; anything else is scanned with a linear probe
# (superficial organs: breast, thyroid, carotid, muscle, nerve, lung phantom).
ORGAN_PROBES: tuple[tuple[str, Probe], ...] = (
    ("heart", PHASED_PROBE),
    ("fetus", CURVILINEAR_PROBE),
    ("pelvis", CURVILINEAR_PROBE),
    ("liver", CURVILINEAR_PROBE),
    ("kidney", CURVILINEAR_PROBE),
    ("uterus", CURVILINEAR_PROBE),
    ("ovary", CURVILINEAR_PROBE),
    ("stomach", CURVILINEAR_PROBE),
)


def probe_for(task: Task) -> Probe:
    organ = task.organ.lower()
    return next((probe for key, probe in ORGAN_PROBES if key in organ), LINEAR_PROBE)


# Tissue variants used by the anatomy templates (dB relative to parenchyma, dB/cm/MHz).
BLOOD = Tissue(echogenicity_db=-40.0, scatterer_density=0.3, attenuation_db_cm_mhz=0.15)
MYOCARDIUM = Tissue(echogenicity_db=-3.0, scatterer_density=0.5, attenuation_db_cm_mhz=0.8)
CORTEX = Tissue(echogenicity_db=-9.0, scatterer_density=0.7, attenuation_db_cm_mhz=0.6)
SKULL = Tissue(echogenicity_db=15.0, scatterer_density=1.0, attenuation_db_cm_mhz=2.5)
NERVE_FASCICLE = Tissue(echogenicity_db=-15.0, scatterer_density=0.5, attenuation_db_cm_mhz=0.6)
EPINEURIUM = Tissue(echogenicity_db=12.0, scatterer_density=0.9, attenuation_db_cm_mhz=0.8)
SKIN = Tissue(echogenicity_db=8.0, scatterer_density=1.0, attenuation_db_cm_mhz=0.8)


# ---- classification recipes --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassRecipe:
    """What a class looks like. `lesion` names an echogenicity (or "none"); sizes are radii in image widths."""

    lesion: str = "none"  # "none" | "anechoic" | "hypoechoic" | "isoechoic" | "hyperechoic" | "attenuating"
    margin: str = "smooth"  # "smooth" (ellipse) | "lobulated" | "spiculated"
    count: int = 1
    radius: float = 0.14
    aspect: float = 1.5  # width / height: > 1 "wider than tall" (benign-looking), < 1 taller than wide
    calcifications: int = 0  # bright foci with acoustic shadow inside the lesion
    rim: bool = False  # thick hyperechoic wall / capsule
    solid_component: bool = False  # hyperechoic mural nodule inside a cystic lesion
    background: str = "organ"  # "organ" | "coarse" (few scatterers, heterogeneous) | "striated" (fibres)


# Curated, maximally distinct recipes, most distinct first so 2- and 3-class tasks get the clearest contrast.
CURATED_RECIPES: tuple[ClassRecipe, ...] = (
    ClassRecipe(lesion="none"),
    ClassRecipe(lesion="hypoechoic", margin="smooth", radius=0.15, aspect=1.7),
    ClassRecipe(lesion="attenuating", margin="spiculated", radius=0.12, aspect=0.8, calcifications=2),
    ClassRecipe(lesion="anechoic", margin="smooth", count=3, radius=0.065, aspect=1.2),
    ClassRecipe(lesion="hyperechoic", margin="lobulated", radius=0.15, aspect=1.3),
    ClassRecipe(lesion="none", background="coarse"),
    ClassRecipe(lesion="none", background="striated"),
    ClassRecipe(lesion="anechoic", margin="lobulated", radius=0.19, aspect=1.2, rim=True, solid_component=True),
)

_GENERATED_AXES = (
    ("hypoechoic", "hyperechoic", "anechoic", "isoechoic", "attenuating"),
    ("smooth", "spiculated"),
    (1, 2),
    ("organ", "coarse", "striated"),
)


def class_recipes(num_classes: int) -> list[ClassRecipe]:
    """Distinct recipes for classes 0..num_classes-1: the curated ones, then a fixed enumeration of
    (echogenicity, margin, count, background) combinations, so any registry class count works."""
    recipes = list(CURATED_RECIPES[:num_classes])
    for lesion, margin, count, background in product(*_GENERATED_AXES):
        if len(recipes) >= num_classes:
            break
        candidate = ClassRecipe(
            lesion=lesion, margin=margin, count=count, radius=0.13 if count == 1 else 0.08, background=background
        )
        if candidate not in recipes:
            recipes.append(candidate)
    if len(recipes) < num_classes:
        raise ValueError(f"the phantom has only {len(recipes)} distinct class recipes, {num_classes} requested")
    return recipes


# ---- shared scene parts ------------------------------------------------------------------------------


def _background(rng: np.random.Generator, kind: str, organ: str) -> Tissue:
    """Parenchyma with per-image texture and brightness jitter (scanner and patient variability)."""
    if "muscle" in organ or "lung" in organ:  # limb muscle, or the chest wall above the pleura
        base = MUSCLE.with_(striation=0.45, attenuation_db_cm_mhz=0.7 if "lung" in organ else 1.0)
    else:
        base = PARENCHYMA
    if kind == "coarse":
        base = ISOECHOIC_COARSE.with_(scatterer_density=float(rng.uniform(0.02, 0.05)))
    elif kind == "striated":
        base = MUSCLE.with_(striation=float(rng.uniform(0.75, 0.95)))
    if kind == "organ" and base is PARENCHYMA:
        base = base.with_(scatterer_density=float(rng.uniform(0.35, 1.0)))
    return base.with_(
        echogenicity_db=base.echogenicity_db + float(rng.uniform(-1.5, 1.5)),
        striation_period=float(rng.uniform(0.05, 0.08)),
    )


def _body_wall(rng: np.random.Generator, probe: Probe) -> tuple[list[Structure], float]:
    """Skin, subcutaneous fat and fascia under a linear probe; returns them and the depth they end at."""
    if probe.geometry != "linear":
        return [], 0.06
    skin = float(rng.uniform(0.015, 0.03))
    fat = float(rng.uniform(0.04, 0.11))
    fascia = float(rng.uniform(0.008, 0.014))
    undulation = float(rng.uniform(0.0, 0.015))
    phase = float(rng.uniform(0, 2 * math.pi))
    layers = [
        Structure(Band(0.0, skin), SKIN),
        Structure(Band(skin, fat, undulation, 1.3, phase), FAT),
        Structure(Band(skin + fat, fascia, undulation, 1.3, phase), SPECULAR),
    ]
    return layers, skin + fat + fascia + undulation


def _place(
    rng: np.random.Generator, probe: Probe, top: float, radius: float, lateral: float = 0.55
) -> tuple[float, float]:
    """A random centre inside the field of view, below `top` and clear of the image bottom."""
    if probe.geometry == "linear":
        u = float(rng.uniform(max(0.15, radius), min(0.85, 1 - radius)))
        v = float(rng.uniform(top + radius + 0.03, max(top + radius + 0.04, 0.8 - radius)))
        return u, v
    scale = image_units_per_depth(probe)
    r_low = (top + radius) / scale + 0.05
    return probe_point(probe, float(rng.uniform(r_low, max(r_low + 0.01, 0.72))), float(rng.uniform(-lateral, lateral)))


def _outline(rng: np.random.Generator, margin: str, cu: float, cv: float, radius: float, aspect: float) -> Shape:
    ru, rv = radius * math.sqrt(aspect), radius / math.sqrt(aspect)
    angle = float(rng.uniform(-0.35, 0.35))
    if margin == "smooth":
        return Ellipse(cu, cv, ru, rv, angle)
    if margin == "lobulated":
        return StarPolygon(cu, cv, ru, rv, angle, random_star_radii(rng, irregularity=0.45, spiculation=0.0))
    return StarPolygon(cu, cv, ru, rv, angle, random_star_radii(rng, irregularity=0.2, spiculation=0.65, n_vertices=28))


def _lesion(rng: np.random.Generator, recipe: ClassRecipe, cu: float, cv: float, label: int) -> list[Structure]:
    radius = recipe.radius * float(rng.uniform(0.8, 1.2))
    aspect = recipe.aspect * float(rng.uniform(0.85, 1.15))
    outline = _outline(rng, recipe.margin, cu, cv, radius, aspect)
    tissue = ATTENUATING_SOLID if recipe.lesion == "attenuating" else ECHOGENICITY[recipe.lesion]
    parts: list[Structure] = []
    if recipe.rim:
        parts.append(Structure(outline.scaled(1.15), HYPERECHOIC.with_(echogenicity_db=12.0), label))
    elif recipe.lesion == "isoechoic":  # a thin hypoechoic halo is what makes iso-echoic nodules visible
        parts.append(Structure(outline.scaled(1.12), HYPOECHOIC.with_(echogenicity_db=-15.0), label))
    parts.append(Structure(outline, tissue, label))
    if recipe.solid_component:
        du, dv = rng.uniform(-0.3, 0.3, size=2) * radius
        nodule = StarPolygon(
            cu + du, cv + dv + 0.3 * radius, 0.35 * radius, 0.3 * radius, 0.0, random_star_radii(rng, 0.5, 0.0)
        )
        parts.append(Structure(nodule, HYPERECHOIC, label))
    for _ in range(recipe.calcifications):
        du, dv = rng.uniform(-0.4, 0.4, size=2) * radius
        size = float(rng.uniform(0.012, 0.02))
        parts.append(Structure(Ellipse(cu + du, cv + dv - 0.2 * radius, size, size * 0.7), CALCIFICATION, label))
    return parts


def _scene(rng: np.random.Generator, probe: Probe, background: Tissue, structures: list[Structure]) -> Scene:
    return Scene(
        probe=probe,
        background=background,
        structures=tuple(structures),
        gain_db=float(rng.uniform(-2.5, 2.5)),
        tgc_error_db_cm=float(rng.uniform(-0.4, 0.4)) * probe.center_frequency_mhz / probe.depth_cm,
        striation_tilt=float(rng.uniform(-0.25, 0.25)),
    )


# ---- classification ----------------------------------------------------------------------------------


def classification_scene(
    task: Task,
    class_index: int,
    rng: np.random.Generator,
    probe: Probe | None = None,
    recipe: ClassRecipe | None = None,
) -> Scene:
    """A scene of `task`'s anatomy and probe showing class `class_index`'s recipe (or `recipe`, when given: a
    teacher trained on recipes that no evaluated task uses, `distillation/standin.py`)."""
    recipe = recipe or class_recipes(task.num_classes)[class_index]
    probe = probe or probe_for(task)
    structures, top = _body_wall(rng, probe)
    background = _background(rng, recipe.background, task.organ)
    if recipe.lesion != "none":
        lateral_slots = np.linspace(-0.6, 0.6, recipe.count + 2)[1:-1] if recipe.count > 1 else [None]
        for slot in lateral_slots:
            cu, cv = _place(rng, probe, top, recipe.radius * 1.2)
            if slot is not None:  # spread several lesions across the image so they rarely merge
                if probe.geometry == "linear":
                    cu = 0.5 + 0.5 * float(slot) + float(rng.uniform(-0.04, 0.04))
                else:
                    rf = float(rng.uniform(0.35, 0.7))
                    cu, cv = probe_point(probe, rf, float(slot) + float(rng.uniform(-0.08, 0.08)))
            structures += _lesion(rng, recipe, cu, cv, label=1)
    return _scene(rng, probe, background, structures)


# ---- segmentation: single foreground label, by organ -------------------------------------------------


def _generic_lesion(rng: np.random.Generator, probe: Probe, top: float, label: int) -> list[Structure]:
    lesion = ("hypoechoic", "attenuating", "anechoic", "hypoechoic")[int(rng.integers(4))]
    margin = ("smooth", "lobulated", "spiculated")[int(rng.integers(3))]
    recipe = ClassRecipe(
        lesion=lesion,
        margin=margin,
        radius=float(rng.uniform(0.08, 0.18)),
        aspect=float(rng.uniform(0.8, 1.8)),
        calcifications=int(rng.integers(0, 3)) if lesion != "anechoic" else 0,
    )
    cu, cv = _place(rng, probe, top, recipe.radius * 1.2)
    return _lesion(rng, recipe, cu, cv, label)


def _kidney(rng: np.random.Generator, probe: Probe, top: float, label: int) -> list[Structure]:
    """Bean-shaped organ: echogenic capsule, hypoechoic cortex, bright central sinus fat."""
    ru, rv = float(rng.uniform(0.22, 0.3)), float(rng.uniform(0.11, 0.15))
    cu, cv = _place(rng, probe, top, rv, lateral=0.2)
    angle = float(rng.uniform(-0.45, 0.45))
    outline = StarPolygon(cu, cv, ru, rv, angle, random_star_radii(rng, 0.12, 0.0))
    sinus = StarPolygon(cu, cv, ru * 0.5, rv * 0.4, angle, random_star_radii(rng, 0.4, 0.0))
    return [
        Structure(outline, SPECULAR.with_(echogenicity_db=12.0), label),
        Structure(outline.scaled(0.92, 0.86), CORTEX, label),
        Structure(sinus, HYPERECHOIC, label),
    ]


def _nerve(rng: np.random.Generator, probe: Probe, top: float, label: int, present: bool = True) -> list[Structure]:
    """Honeycomb nerve (hypoechoic fascicles in bright epineurium) beside an anechoic artery (unlabelled)."""
    radius = float(rng.uniform(0.08, 0.11))
    cu, cv = _place(rng, probe, top, radius + 0.06)
    side = 1.0 if cu < 0.5 else -1.0
    artery_r = float(rng.uniform(0.04, 0.06))
    artery = Ellipse(cu + side * (radius + artery_r + 0.04), cv + float(rng.uniform(-0.04, 0.04)), artery_r, artery_r)
    parts = [Structure(artery.scaled(1.15), HYPERECHOIC), Structure(artery, FLUID)]
    if present:
        outline = Ellipse(cu, cv, radius * 1.2, radius * 0.85, float(rng.uniform(-0.4, 0.4)))
        parts.append(Structure(outline, EPINEURIUM, label))
        for _ in range(int(rng.integers(4, 8))):
            a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.55) * radius
            r = radius * float(rng.uniform(0.25, 0.35))
            fascicle = Ellipse(cu + d * math.cos(a), cv + 0.7 * d * math.sin(a), r, r * 0.8)
            parts.append(Structure(fascicle, NERVE_FASCICLE, label))
    return parts


def _lung(rng: np.random.Generator, probe: Probe, top: float, labels: dict[str, int]) -> list[Structure]:
    """Lung surface: bright pleural line over air, reverberation A-lines at multiples of its depth, B-lines
    (vertical comet tails from the pleura to the bottom) and their confluence, rib heads casting shadows."""
    depth = float(rng.uniform(max(top + 0.05, 0.22), 0.36))
    thickness = float(rng.uniform(0.018, 0.028))
    bow = float(rng.uniform(-0.12, 0.12))
    parts = [Structure(Band(depth + thickness, 2.0, bow=bow), AIR)]
    for k, level in ((2, 8.0), (3, 4.0)):  # A-lines: fading echoes of the pleura-probe round trip
        if k * depth + thickness < 0.97:
            a_line = Band(k * depth, thickness, bow=k * bow)
            parts.append(Structure(a_line, AIR.with_(echogenicity_db=level, scatterer_density=0.8), labels["a-line"]))
    b_line = HYPERECHOIC.with_(echogenicity_db=6.0, attenuation_db_cm_mhz=0.3)
    for _ in range(int(rng.integers(0, 4))):
        u = float(rng.uniform(0.25, 0.75))
        width = float(rng.uniform(0.01, 0.018))
        parts.append(Structure(Strip(u, depth + bow * (u - 0.5) ** 2, 1.2, width), b_line, labels["b-line"]))
    if rng.random() < 0.45:
        u = float(rng.uniform(0.3, 0.7))
        width = float(rng.uniform(0.05, 0.1))
        parts.append(Structure(Strip(u, depth + bow * (u - 0.5) ** 2, 1.2, width), b_line, labels["confluence"]))
    parts.append(Structure(Band(depth, thickness, bow=bow), SPECULAR.with_(echogenicity_db=15.0), labels["pleura"]))
    n_ribs = int(rng.integers(0, 3)) if labels["rib"] == 0 else int(rng.integers(1, 3))
    for u in rng.choice([0.1, 0.9], size=n_ribs, replace=False):  # rib heads at the edges ("bat sign")
        v = depth - 0.02 + float(bow * (u - 0.5) ** 2)
        parts.append(Structure(Ellipse(float(u), v, float(rng.uniform(0.07, 0.1)), 0.03), BONE, labels["rib"]))
    return parts


def _muscle(rng: np.random.Generator, probe: Probe, top: float, label: int) -> list[Structure]:
    """Striated muscle belly in a bright fascial sheath above a shadowing bony lamina."""
    ru, rv = float(rng.uniform(0.2, 0.3)), float(rng.uniform(0.12, 0.18))
    cu, cv = _place(rng, probe, top, rv, lateral=0.2)
    cu = float(np.clip(cu, ru + 0.05, 0.95 - ru))
    belly = StarPolygon(cu, cv, ru, rv, float(rng.uniform(-0.2, 0.2)), random_star_radii(rng, 0.2, 0.0))
    lamina = Ellipse(cu + float(rng.uniform(-0.1, 0.1)), cv + rv * 1.25, ru * 0.8, 0.025, float(rng.uniform(-0.2, 0.2)))
    return [
        Structure(belly.scaled(1.08), SPECULAR.with_(echogenicity_db=10.0)),
        Structure(belly, MUSCLE.with_(echogenicity_db=-7.0, striation=0.85), label),
        Structure(lamina, BONE),
    ]


@dataclass(frozen=True)
class AnatomyTemplate:
    """Organ-specific anatomy. `kinds` are its labellable structures, each with the keyword that finds it in
    a registry label name; with a single foreground label the first kind takes it whatever its name."""

    organ_keyword: str
    build: Callable[..., list[Structure]]  # (rng, probe, top, labels: dict[kind, mask value]) -> structures
    kinds: tuple[tuple[str, str], ...] = (("target", ""),)


def _single(fn: Callable[..., list[Structure]]) -> Callable[..., list[Structure]]:
    return lambda rng, probe, top, labels: fn(rng, probe, top, labels["target"])


ORGAN_TEMPLATES: tuple[AnatomyTemplate, ...] = (
    AnatomyTemplate("kidney", _single(_kidney)),
    AnatomyTemplate("muscle", _single(_muscle)),
    AnatomyTemplate(
        "lung",
        _lung,
        # most specific keyword first: "B-line confluence" must not be taken for a B-line
        (
            ("pleura", "pleura"),
            ("confluence", "confluence"),
            ("b-line", "b-line"),
            ("a-line", "a-line"),
            ("rib", "rib"),
        ),
    ),
)


def match_template_labels(template: AnatomyTemplate, label_names: list[str]) -> tuple[dict[str, int], list[int]]:
    """Mask value of each template kind (0 = drawn but unlabelled) and the registry labels left unmatched."""
    labels = {kind: 0 for kind, _ in template.kinds}
    unmatched: list[int] = []
    if len(label_names) == 1:
        labels[template.kinds[0][0]] = 1
        return labels, unmatched
    for value, name in enumerate(label_names, start=1):
        kind = next((k for k, key in template.kinds if key and key in name.lower() and labels[k] == 0), None)
        if kind is None:
            unmatched.append(value)
        else:
            labels[kind] = value
    return labels, unmatched


def _template_for(task: Task) -> AnatomyTemplate | None:
    """The organ's template, if it can carry this task's labels (all of them, or the only one)."""
    organ = task.organ.lower()
    names = list(task.labels[1:])
    for template in ORGAN_TEMPLATES:
        if template.organ_keyword in organ:
            _, unmatched = match_template_labels(template, names)
            if len(names) == 1 or len(unmatched) < len(names):
                return template
    return None


# ---- segmentation: several foreground labels, generic layouts ----------------------------------------


def _bone_and_head(rng: np.random.Generator, probe: Probe, top: float, labels: list[int]) -> list[Structure]:
    """Two labels: a small shadowing bony structure (label 1) beside a large skull-bounded ellipse (label 2)."""
    flip = 1.0 if rng.random() < 0.5 else -1.0
    bone_u, bone_v = probe_point(probe, float(rng.uniform(0.22, 0.32)), -0.45 * flip)
    bone = Ellipse(bone_u, bone_v, float(rng.uniform(0.07, 0.1)), float(rng.uniform(0.02, 0.03)), 0.3 * flip)
    head_r = float(rng.uniform(0.17, 0.24))
    head_u, head_v = probe_point(probe, float(rng.uniform(0.5, 0.62)), 0.2 * flip)
    head = Ellipse(head_u, head_v, head_r * 1.15, head_r, float(rng.uniform(-0.4, 0.4)))
    falx = Ellipse(head.cu, head.cv, head.ru * 0.75, 0.006, head.angle)
    parts = [
        Structure(head, SKULL, labels[1]),
        Structure(head.scaled(0.9), HYPOECHOIC.with_(echogenicity_db=-9.0), labels[1]),
        Structure(falx, HYPERECHOIC, labels[1]),
        Structure(bone, BONE, labels[0]),
    ]
    for extra in labels[2:]:  # not used by the current registry; keeps any label count valid
        parts += _generic_lesion(rng, probe, top, extra)
    return parts


def _chambers(rng: np.random.Generator, probe: Probe, top: float, labels: list[int]) -> list[Structure]:
    """Three or more labels: a cavity (1) inside a wall (2), an adjacent deeper chamber (3), further chambers
    side by side (4+); painted deepest-first so the wall is the boundary between cavity and neighbours."""
    cu, cv = probe_point(probe, float(rng.uniform(0.38, 0.45)), float(rng.uniform(-0.15, 0.15)))
    angle = float(rng.uniform(-0.2, 0.2))
    cavity = Ellipse(cu, cv, float(rng.uniform(0.08, 0.11)), float(rng.uniform(0.17, 0.22)), angle)
    wall = float(rng.uniform(0.028, 0.042))
    outer = Ellipse(cu, cv, cavity.ru + wall, cavity.rv + wall, cavity.angle)
    atrium_rv = float(rng.uniform(0.07, 0.09))
    atrium_v = cv + outer.rv + atrium_rv * 0.75
    atrium = Ellipse(cu + float(rng.uniform(-0.02, 0.02)), atrium_v, float(rng.uniform(0.08, 0.1)), atrium_rv)
    parts = [Structure(atrium, BLOOD, labels[2])]
    for k, extra in enumerate(labels[3:]):
        side = -1.0 if k % 2 == 0 else 1.0
        chamber = Ellipse(cu + side * (outer.ru * 2.1 + 0.02 * k), cv, 0.08, 0.15)
        parts.append(Structure(chamber, BLOOD, extra))
    parts += [Structure(Ring(outer, cavity), MYOCARDIUM, labels[1]), Structure(cavity, BLOOD, labels[0])]
    return parts


# ---- task-level entry points -------------------------------------------------------------------------


def default_empty_fraction(task: Task) -> float:
    """Tasks whose registry entry says the object can be absent get that share of empty masks."""
    return 0.3 if task.empty_mask_note else 0.0


def segmentation_scene(task: Task, rng: np.random.Generator, empty: bool = False, probe: Probe | None = None) -> Scene:
    """Anatomy with registry label values 1..K: the organ's template where one fits, else a generic layout."""
    probe = probe or probe_for(task)
    structures, top = _body_wall(rng, probe)
    background = _background(rng, "organ", task.organ)
    labels = list(range(1, task.num_classes))
    organ = task.organ.lower()
    template = _template_for(task)
    if "nerve" in organ and len(labels) == 1:  # the nerve's neighbourhood (artery) stays when the nerve is absent
        structures += _nerve(rng, probe, top, labels[0], present=not empty)
    elif empty:
        pass
    elif template is not None:
        kinds, unmatched = match_template_labels(template, list(task.labels[1:]))
        structures += template.build(rng, probe, top, kinds)
        for value in unmatched:  # keeps every registry label drawable, whatever the template knows
            structures += _generic_lesion(rng, probe, top, value)
    elif len(labels) == 1:
        structures += _generic_lesion(rng, probe, top, labels[0])
    else:
        layout = _bone_and_head if len(labels) == 2 else _chambers
        structures += layout(rng, probe, top, labels)
    return _scene(rng, probe, background, structures)


def task_seed(task_name: str) -> int:
    """Stable (cross-process, cross-platform) integer for a task name; Python's hash() is salted."""
    return zlib.crc32(task_name.encode())


def sample_rng(seed: int, stream: str, split: str, index: int) -> np.random.Generator:
    """Independent generator per sample: any sample can be regenerated alone, in any order or process."""
    return np.random.default_rng([seed, task_seed(stream), task_seed(split), index])


def task_scene(
    task_name: str, rng: np.random.Generator, index: int, empty_fraction: float | None = None
) -> tuple[Scene, int | None]:
    """Scene for sample `index` of a task, and its class index (None for segmentation).

    Classes cycle with the index so every split is balanced.
    """
    task = get_task(task_name)
    if task.task_type == "classification":
        label = index % task.num_classes
        return classification_scene(task, label, rng), label
    fraction = default_empty_fraction(task) if empty_fraction is None else empty_fraction
    return segmentation_scene(task, rng, empty=bool(rng.random() < fraction)), None


def pool_scene(rng: np.random.Generator) -> Scene:
    """Unlabelled mixture for distillation: any task's anatomy, any class, often with another probe."""
    names = sorted(TASKS)
    task = TASKS[names[int(rng.integers(len(names)))]]
    probe = probe_for(task)
    if rng.random() < 0.3:
        probe = PROBES[sorted(PROBES)[int(rng.integers(len(PROBES)))]]
    if task.task_type == "classification":
        return classification_scene(task, int(rng.integers(task.num_classes)), rng, probe=probe)
    return segmentation_scene(task, rng, empty=bool(rng.random() < 0.1), probe=probe)


__all__ = [
    "ClassRecipe",
    "class_recipes",
    "classification_scene",
    "default_empty_fraction",
    "pool_scene",
    "probe_for",
    "sample_rng",
    "segmentation_scene",
    "task_scene",
]
