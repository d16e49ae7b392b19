"""The node under load at reduced size (the full 1,000-instance run is benchmarks/node_load.py): 8 concurrent
dcmtk senders, a queue that fills, SIGKILL mid-stream and a restart, the destination down until everything is
processed. Acknowledged = processed + failed-with-reason, every result delivered exactly once, peak RSS under
1.5 GB with a 2000^2 cine, a 3840 x 2160 colour frame, a 20000^2 RLE, a 13000^2 JPEG and a lying JPEG among
the inputs."""

from __future__ import annotations

import pytest
from dicom_fixtures import require_tool
from node_load_harness import run_load

pytestmark = pytest.mark.slow


def test_node_load_crash_and_outage(tmp_path):
    require_tool("storescu", "echoscu")
    figures = run_load(tmp_path, n=120, associations=8, damaged=4, kill_at=0.4, queue_size=4, cine_frames=30)
    assert figures["acknowledged"] == 120 + 4 + 3  # instances, damaged, cine, limit frame, lying JPEG
    assert figures["processed"] == 122 and figures["failed"] == 5  # damaged + lying: corrupt
    assert figures["duplicate_deliveries"] == 0 and figures["delivered_objects"] == 122
    assert figures["outbox_when_destination_came_back"] == 122
    # the 20000^2 RLE and the 13000^2 JPEG, refused from their headers
    assert figures["hostile_refusals"] == {"rle.dcm": "Error: CannotUnderstand", "jpeg.dcm": "Error: CannotUnderstand"}
    assert 0 < figures["acknowledged_at_kill"] < 126
    assert figures["peak_rss_mb"] < 1536
