"""Run the DICOM node in a process of its own, with a stand-in predictor (no weights needed).

Used by the node tests that kill the node (SIGKILL mid-stream, crash loops) and by benchmarks/node_load.py:

    python tests/node_process.py '{"port": 11112, "spool": "...", "output": "...", "dest": "PACS@127.0.0.1:104"}' \
        [threshold | crash-on-columns:777]

`crash-on-columns:N` is the threshold segmenter, except that a frame N pixels wide kills the process with
SIGKILL, as the kernel's out-of-memory killer would: the poison instance of the crash-loop test.
`slow:S` adds S seconds per frame, the time a real model takes on CPU (TinyUSFM: ~0.05-0.1 s at 224 px), so
that a load test fills the node's queue as a real deployment would.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicom_fixtures import ThresholdSegmenter  # noqa: E402

from tinyusfm_monai.dicom.node import serve  # noqa: E402


class Slow(ThresholdSegmenter):
    def __init__(self, seconds: float) -> None:
        super().__init__("busi_segmentation")
        self.seconds = seconds

    def predict(self, image):
        time.sleep(self.seconds)
        return super().predict(image)


class CrashOnColumns(ThresholdSegmenter):
    def __init__(self, columns: int) -> None:
        super().__init__("busi_segmentation")
        self.columns = columns

    def predict(self, image):
        if image.shape[1] == self.columns:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().predict(image)


def main() -> None:
    options = json.loads(sys.argv[1])
    kind = sys.argv[2] if len(sys.argv) > 2 else "threshold"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if kind.startswith("crash-on-columns:"):
        predictor = CrashOnColumns(int(kind.split(":", 1)[1]))
    elif kind.startswith("slow:"):
        predictor = Slow(float(kind.split(":", 1)[1]))
    else:
        predictor = ThresholdSegmenter("busi_segmentation")
    serve("stand-in", predictor=predictor, block=True, **options)


if __name__ == "__main__":
    main()
