"""The results in a real viewer: OHIF 3.13.2 (npm `@ohif/app` prebuilt dist) in headless Chromium (Debian
package, driven by npm `playwright-core`), reading a study from a real Orthanc by DICOMweb, same origin.

Run with `make ohif-check` (tools from `make ohif-env`); not collected unless TINYUSFM_OHIF=1 (conftest.py).

Checked from the screenshots' pixels:
1. the ultrasound frame is drawn: the viewport's pixels correlate with the source image resampled to the
   viewport's geometry (it fails if OHIF shows another image, or nothing);
2. the SEG overlay, once the SEG series is opened (double click, as a user does), changes the pixels where the
   mask is and not elsewhere. OHIF 3.13.2 cannot open a SEG whose source has no patient geometry (no Image
   Orientation (Patient), no Pixel Measures: ultrasound, as the standard allows): its SEG loader raises in the
   browser. The test then ends as an *expected failure* naming OHIF's error, and passes for real on a viewer
   that draws the overlay.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_fixtures import ThresholdSegmenter, us_file
from ohif_harness import OhifServer
from orthanc_harness import Orthanc, require_orthanc

from tinyusfm_monai.dicom.process import process_file

ROOT = Path(__file__).resolve().parents[1]
OHIF = Path(os.environ.get("OHIF_DIR", ROOT / ".ohif"))
DOCS_SHOT = ROOT / "docs" / "images" / "ohif_orthanc_study.png"  # TINYUSFM_OHIF_DOCS=1 refreshes it
#: OHIF 3.13.2's exceptions for a SEG of an image without patient geometry (seen in the browser console)
OHIF_GEOMETRY_ERRORS = ("ImageOrientationPatient", "SpacingBetweenSlices")

pytestmark = pytest.mark.slow


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def _image_box(canvas: dict, rows: int, columns: int) -> tuple[int, int, int, int]:
    """Where OHIF draws a rows x columns image in the viewport canvas (fit, centred): (x0, y0, width, height)."""
    scale = min(canvas["w"] / columns, canvas["h"] / rows)
    width, height = columns * scale, rows * scale
    return (
        round(canvas["x"] + (canvas["w"] - width) / 2),
        round(canvas["y"] + (canvas["h"] - height) / 2),
        round(width),
        round(height),
    )


def _resample(array: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    mode = "L" if array.ndim == 2 else "RGB"
    return np.asarray(Image.fromarray(array.astype(np.uint8), mode).resize((width, height), Image.NEAREST), float)


def test_ohif_shows_the_us_frame_and_the_seg_overlay_where_the_mask_is(tmp_path):
    require_orthanc()
    for tool in ("node", "chromium"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: make ohif-env")
    if not (OHIF / "dist" / "index.html").is_file():
        pytest.fail(f"OHIF not installed in {OHIF}: make ohif-env")
    orthanc = Orthanc(tmp_path / "orthanc").start()
    server = None
    try:
        source = us_file("US1_UNCR.dcm")
        orthanc.upload(source)
        result = process_file(ThresholdSegmenter(), source, tmp_path / "results")
        for path in result.outputs:
            orthanc.upload(path)
        server = OhifServer(OHIF / "dist", orthanc.url)
        url = f"{server.url}/viewer?StudyInstanceUIDs={result.study_instance_uid}"
        before, after = tmp_path / "before.png", tmp_path / "after.png"
        started = time.monotonic()
        proc = subprocess.run(
            ["node", str(ROOT / "tests" / "ohif" / "screenshot.js"), url, "AI segmentation", str(before), str(after)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PLAYWRIGHT_CORE": str(OHIF / "node_modules" / "playwright-core")},
        )
        print(f"OHIF session: {time.monotonic() - started:.1f} s")
        assert proc.returncode == 0, proc.stderr[-3000:]
        page = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if server is not None:
            server.stop()
        orthanc.stop()

    # 1. the ultrasound frame is drawn
    assert page["canvas"], f"no viewport canvas; page text: {page['text'][:500]}"
    ds = pydicom.dcmread(source)
    x0, y0, width, height = _image_box(page["canvas"][0], ds.Rows, ds.Columns)
    shown = _png(before)[y0 : y0 + height, x0 : x0 + width].mean(axis=2)
    expected = _resample(ds.pixel_array.mean(axis=2), shown.shape[0], shown.shape[1])
    correlation = np.corrcoef(shown.ravel(), expected.ravel())[0, 1]
    print(f"viewport vs source correlation: {correlation:.3f}")
    assert correlation > 0.8
    if os.environ.get("TINYUSFM_OHIF_DOCS") == "1":  # the study as OHIF shows it, the AI series listed
        DOCS_SHOT.parent.mkdir(exist_ok=True)
        shutil.copy(before, DOCS_SHOT)

    # 2. the overlay: pixels that changed when the SEG was opened lie on the mask, and cover most of it
    changed = np.abs(_png(after) - _png(before)).sum(axis=2)[y0 : y0 + height, x0 : x0 + width] > 30
    mask = _resample(pydicom.dcmread(result.outputs[0]).pixel_array.reshape(ds.Rows, ds.Columns) * 255, height, width)
    mask = mask > 127
    geometry_errors = [e for e in page["errors"] if any(k in e for k in OHIF_GEOMETRY_ERRORS)]
    on_mask, off_mask = changed[mask].mean(), changed[~mask].mean()
    print(f"pixels changed by opening the SEG: {on_mask:.1%} of the mask, {off_mask:.1%} outside it")
    drawn = on_mask > 0.5 and off_mask < 0.05
    if not drawn and geometry_errors:
        pytest.xfail(f"OHIF 3.13.2 cannot open a SEG without patient geometry: {geometry_errors[0][:160]}")
    assert drawn, f"overlay not where the mask is (browser errors: {page['errors'][:3]})"
