"""The service recipes in packaging/ (not run here: no systemd as PID 1, no container runtime in CI) are checked
for what would make them fail or weaken them in a hospital: `systemd-analyze verify` on the units, the hardened
settings present, the options they pass are options of `dicom serve`, and the container runs as a non-root user
with `dicom status` as its health check. The Orthanc routing rule is the one the Orthanc tests load."""

from __future__ import annotations

import inspect
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinyusfm_monai.dicom.node import serve

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
UNITS = ["tinyusfm-dicom.service", "tinyusfm-dicom-health.service", "tinyusfm-dicom-health.timer"]
HARDENING = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "CapabilityBoundingSet=",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter=@system-service",
    "UMask=0027",
    "Restart=always",
    "User=tinyusfm",
]


def _serve_options() -> set[str]:
    return set(inspect.signature(serve).parameters)


def _options(command: str) -> set[str]:
    return {w[2:].split("=", 1)[0].replace("-", "_") for w in shlex.split(command) if w.startswith("--")}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path):
    console = Path(sys.executable).with_name("tinyusfm-monai")
    executable = console if console.exists() else Path(sys.executable)
    for name in UNITS:
        text = (PACKAGING / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/tinyusfm/venv/bin/tinyusfm-monai", str(executable)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", *[str(tmp_path / n) for n in UNITS]], capture_output=True, text=True
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_service_is_hardened_and_passes_real_options():
    unit = (PACKAGING / "systemd" / "tinyusfm-dicom.service").read_text()
    for setting in HARDENING:
        assert re.search(rf"^{re.escape(setting)}$", unit, re.M), setting
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", unit, re.M | re.S).group(1).replace("\\\n", " ")
    assert _options(exec_start) <= _serve_options()
    env = (PACKAGING / "systemd" / "dicom.env.example").read_text()
    for line in re.findall(r"^#? ?NODE_OPTIONS=(.*)$", env, re.M):
        assert _options(line) <= _serve_options(), line
    health = (PACKAGING / "systemd" / "tinyusfm-dicom-health.service").read_text()
    assert "dicom status --spool /var/lib/tinyusfm/spool" in health and "SuccessExitStatus=1" in health


def test_container_recipe_runs_as_non_root_with_status_health_check():
    recipe = (PACKAGING / "Containerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", recipe, re.M)
    user = re.search(r"^USER (\S+)", recipe, re.M).group(1)
    assert not user.startswith(("0", "root"))
    assert re.search(r"^HEALTHCHECK .*\\\n\s+CMD .*dicom status --spool /var/lib/tinyusfm/spool", recipe, re.M)
    entry = re.search(r"^ENTRYPOINT (.*)$", recipe, re.M).group(1)
    assert _options(" ".join(json.loads(entry))) <= _serve_options()
    for copied in re.findall(r"^COPY (.+) \S+$", recipe, re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), f"COPY {path}: missing from the repository"


def test_orthanc_routing_rule_routes_only_ultrasound():
    rule = (PACKAGING / "orthanc" / "route-us-to-tinyusfm.lua").read_text()
    assert "function OnStoredInstance" in rule and "tags['Modality'] == 'US'" in rule
    assert "SendToModality(instanceId, 'tinyusfm')" in rule
