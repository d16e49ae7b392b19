"""Keep patient identifiers out of logs.

Why this is needed beyond "don't log names": pydicom and highdicom put attribute *values* into warnings (e.g.
highdicom's person-name check quotes the Patient's Name) and pydicom also logs them; pynetdicom at DEBUG dumps
whole datasets. Our own messages identify inputs by SOP Instance UID, by a position in the batch, or by a
spool file named after the SOP Instance UID, never by a name, ID, date or an input path (folders are often
named after patients). Exception texts that may quote values go through `redact`.
"""

from __future__ import annotations

import logging
import warnings

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "InstitutionName",
    "StudyID",
)


def redact(text: str, ds: Dataset | None) -> str:
    """Replace every identifying value of `ds` found in `text` by '***'."""
    if ds is None:
        return text
    for keyword in PATIENT_KEYWORDS:
        value = ds.get(keyword)
        if value is None:
            continue
        for item in list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]:
            s = str(item).strip()
            if len(s) >= 2:
                text = text.replace(s, "***")
                for part in s.replace("^", " ").split():
                    if len(part) >= 3:
                        text = text.replace(part, "***")
    return text


def quiet_third_party_output() -> None:
    """Silence the library warnings/logs that can carry attribute values (idempotent, process-wide)."""
    warnings.filterwarnings("ignore", module=r"(pydicom|highdicom|pynetdicom)(\..*)?$")
    warnings.filterwarnings("ignore", message=r".*(person name|Invalid value for VR|not a valid).*")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
    logging.getLogger("highdicom").setLevel(logging.ERROR)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
