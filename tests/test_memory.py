"""peak_rss_mib is the process's own peak, not one inherited from a large parent (ru_maxrss survives exec)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from tinyusfm_monai.utils import current_rss_mib, peak_rss_mib


def test_peak_is_not_inherited_from_the_parent():
    ballast = np.ones(400 * 2**20, np.uint8)  # 400 MiB touched in this process
    assert peak_rss_mib() >= 400 and current_rss_mib() >= 400
    child = subprocess.run(
        [sys.executable, "-c", "from tinyusfm_monai.utils import peak_rss_mib; print(peak_rss_mib())"],
        capture_output=True,
        text=True,
        check=True,
    )
    del ballast
    assert 0 < float(child.stdout) < 300, child.stdout  # the child's own interpreter, not the parent's 400 MiB
