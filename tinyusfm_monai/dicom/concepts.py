"""Coded concepts for registry labels: what a PACS, a viewer or a registry query sees instead of free text.

Why a table and not free text: DICOM SEG segment descriptions and SR findings must carry coded concepts
(segmented property category/type, finding values). Every code here comes from pydicom's DICOM code dictionary
(`pydicom.sr.codedict.codes`, i.e. the PS3.16 context groups), so no code is typed by hand. A label without a
suitable standard concept gets a generic standard concept (segmentation) or a private code (classification,
coding scheme `99TUSFM`, PS3.16 8.2 style local codes) whose meaning is the label text.
"""

from __future__ import annotations

import hashlib

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99TUSFM"

_ANATOMY = codes.SCT.AnatomicalStructure
_ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure
_SPATIAL = codes.SCT.SpatialAndRelationalConcept
_ARTEFACT = codes.DCM.ImageArtifacts

# segmentation label name -> (segmented property category, segmented property type)
SEGMENT_CONCEPTS: dict[str, tuple[Code, Code]] = {
    "lesion": (_ABNORMAL, codes.SCT.Lesion),
    "nodule": (_ABNORMAL, codes.SCT.Nodule),
    "tumour": (_ABNORMAL, codes.SCT.Neoplasm),
    "tumor": (_ABNORMAL, codes.SCT.Neoplasm),
    "multifidus": (_ANATOMY, codes.SCT.Muscle),  # no multifidus code in the DICOM CIDs; label text says which
    "kidney capsule": (_ANATOMY, codes.SCT.Kidney),  # the capsule outlines the kidney
    "brachial plexus": (_ANATOMY, codes.SCT.BrachialPlexus),
    "pleural line": (_ANATOMY, codes.SCT.Pleura),
    "pubic symphysis": (_ANATOMY, codes.SCT.SymphysisPubis),
    "fetal head": (_ANATOMY, codes.SCT.Head),
    "left ventricle endocardium": (_ANATOMY, codes.SCT.LeftVentricle),  # the cavity inside the endocardium
    "myocardium": (_ANATOMY, codes.SCT.LeftVentricleMyocardium),  # CAMUS myocardium is the LV wall
    "left atrium": (_ANATOMY, codes.SCT.LeftAtrium),
    "rib": (_ANATOMY, codes.SCT.Rib),
    # lung ultrasound A/B-lines are reverberation artefacts, not structures: DCM "Image artifact(s)"
    "a-line": (_SPATIAL, _ARTEFACT),
    "b-line": (_SPATIAL, _ARTEFACT),
    "b-line confluence": (_SPATIAL, _ARTEFACT),
}
GENERIC_SEGMENT_CONCEPT: tuple[Code, Code] = (_ANATOMY, _ANATOMY)

# classification class name -> finding value
CLASS_CONCEPTS: dict[str, Code] = {
    "normal": codes.SCT.Normal,
    "benign": codes.SCT.Benign,
    "malignant": codes.SCT.Malignant,
    "plaque": codes.SCT.Plaque,
    "fibroid": codes.SCT.UterineLeiomyoma,
    "normal imt": codes.SCT.Normal,
    "simple cyst": codes.SCT.Cyst,
}


def segment_concept(label: str) -> tuple[Code, Code]:
    """(category, type) for a segmentation label; unknown labels get 'Anatomical structure' for both."""
    return SEGMENT_CONCEPTS.get(label.strip().lower(), GENERIC_SEGMENT_CONCEPT)


def private_code(label: str) -> Code:
    """A stable local code for a label without a standard concept (CodeValue is SH: at most 16 characters)."""
    digest = hashlib.sha1(label.strip().lower().encode()).hexdigest()[:12]
    return Code(f"L{digest}", PRIVATE_SCHEME, label)


def class_concept(label: str) -> Code:
    return CLASS_CONCEPTS.get(label.strip().lower()) or private_code(label)
