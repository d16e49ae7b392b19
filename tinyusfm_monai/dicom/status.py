"""`tinyusfm-monai dicom status --spool SPOOL`: is the node alive, how full are its queues, what failed last.

Why a file and a command rather than an HTTP endpoint: the node writes `SPOOL/status.json` atomically every
second, so any monitoring agent can read it without a port to open, and the command adds what only an outside
view can tell: whether the writing process is still alive and the file fresh, and the spool as it is on disk
(which also works when the node is down). Exit status for monitoring: 0 running, 1 running with a warning,
2 not running or status stale. A warning always comes with its reasons (`reasons`, one line each, also printed
to stderr): the destination is unreachable or busy, results were not delivered (refused by the destination, no
presentation context for them, damaged), the outbox has not moved for `OUTBOX_BLOCKED_S`, instances failed,
or the disk is full.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tinyusfm_monai.utils import TEMP_PREFIX

STATUS_OK, STATUS_WARNING, STATUS_DOWN = 0, 1, 2
OUTBOX_BLOCKED_S = 600.0  # ours: an outbox entry this old means delivery is stuck (the backoff is at most 5 min)


class StatusReport(str):
    """The JSON text printed by the command, carrying the exit status (`exit_code`) the CLI exits with."""

    exit_code: int = STATUS_OK

    def __new__(cls, text: str, exit_code: int) -> StatusReport:
        obj = super().__new__(cls, text)
        obj.exit_code = exit_code
        return obj


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def spool_counts(spool: Path) -> dict[str, int]:
    """What is on disk now: instances waiting, result sets waiting for delivery, failures kept."""

    def count(folder: str, pattern: str) -> int:
        path = spool / folder
        return sum(1 for p in path.glob(pattern) if not p.name.startswith(TEMP_PREFIX)) if path.is_dir() else 0

    return {
        "incoming": count("incoming", "*.dcm"),
        "outbox": count("outbox", "*.json"),
        "failed": count("failed", "*.reason.txt"),
    }


def read_status(spool: str | os.PathLike) -> tuple[dict, int]:
    """(status, exit code): status.json plus liveness, staleness and the spool counts on disk."""
    spool = Path(spool)
    path = spool / "status.json"
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        status = {"state": "unknown", "error": f"no readable status.json ({type(exc).__name__})"}
    status["on_disk"] = spool_counts(spool)
    pid = int(status.get("pid", 0) or 0)
    updated = float(status.get("updated_epoch", 0) or 0)
    age = time.time() - updated if updated else float("inf")
    interval = float(status.get("status_interval_s", 1.0) or 1.0)
    status["status_age_s"] = round(age, 1) if updated else None
    if status.get("state") != "running" or not pid or not _alive(pid) or age > max(10.0, 5 * interval):
        status["health"] = "down" if status.get("state") != "running" or not pid or not _alive(pid) else "stale"
        return status, STATUS_DOWN
    status["reasons"] = warnings(status)
    if status["reasons"]:
        status["health"] = "warning"
        return status, STATUS_WARNING
    status["health"] = "ok"
    return status, STATUS_OK


def warnings(status: dict) -> list[str]:
    """Why a running node needs attention, one line per cause (empty: healthy)."""
    reasons = []
    counts = status.get("counts", {})
    destination = status.get("destination", {})
    if destination.get("state") == "retrying":
        reasons.append(
            f"destination {destination.get('ae', '')} unreachable or busy for {destination.get('consecutive_failures')}"
            f" attempt(s): {destination.get('last_error', '')}"
        )
    undelivered = int(counts.get("delivery_failed", 0) or 0)
    if undelivered:
        last = destination.get("last_delivery_failure", {}).get("reason", "")
        reasons.append(
            f"{undelivered} result set(s) not delivered since start (SPOOL/failed/*.delivery.json); last: {last}"
        )
    oldest = float(status.get("queue", {}).get("outbox_oldest_s", 0) or 0)
    if oldest > OUTBOX_BLOCKED_S:
        reasons.append(f"outbox blocked: its oldest entry has waited {oldest:.0f} s")
    failed = counts.get("failed", {})
    if isinstance(failed, dict) and sum(failed.values()):
        reasons.append(f"{sum(failed.values())} instance(s) failed since start: {failed} (SPOOL/failed/*.reason.txt)")
    disk = status.get("disk", {})
    if disk.get("state") == "full":
        reasons.append(f"disk full since {disk.get('since')} ({disk.get('where')})")
    return reasons


def status(spool: str = "dicom-spool") -> str:
    """Print the node's status (SPOOL/status.json, liveness, spool contents) as JSON.

    Exit status: 0 running, 1 running with a warning (the reasons are in `reasons` and on stderr: destination
    retrying, results not delivered, outbox blocked, instances failed, disk full), 2 down/stale.
    """
    import sys

    report, code = read_status(spool)
    for reason in report.get("reasons", []):
        print(f"warning: {reason}", file=sys.stderr)
    if code == STATUS_DOWN:
        print(
            f"{report.get('health')}: {report.get('error') or 'the node is not running or its status is stale'}",
            file=sys.stderr,
        )
    return StatusReport(json.dumps(report, indent=2), code)
