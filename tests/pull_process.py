"""Run `dicom pull` in a process of its own with the stand-in segmenter (no weights needed), so a test can
SIGKILL it half way and start it again:

    python tests/pull_process.py '{"url": "http://127.0.0.1:8042/dicom-web", "output": "...", "frames": "every:10"}'

`slow:S` as the second argument adds S seconds per frame (a real model's CPU time) so the kill lands mid-study.
The exit status and summary line are `pull`'s.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicom_fixtures import ThresholdSegmenter  # noqa: E402

from tinyusfm_monai.dicom.dicomweb import pull  # noqa: E402


class Slow(ThresholdSegmenter):
    def __init__(self, seconds: float) -> None:
        super().__init__("busi_segmentation")
        self.seconds = seconds

    def predict(self, image):
        time.sleep(self.seconds)
        return super().predict(image)


def main() -> None:
    options = json.loads(sys.argv[1])
    kind = sys.argv[2] if len(sys.argv) > 2 else "threshold"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    predictor = Slow(float(kind.split(":", 1)[1])) if kind.startswith("slow:") else ThresholdSegmenter()
    print(pull("stand-in", predictor=predictor, **options), flush=True)


if __name__ == "__main__":
    main()
