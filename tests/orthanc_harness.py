"""A real Orthanc (Debian `orthanc` + `orthanc-dicomweb`) for the PACS round-trip tests.

Each `Orthanc` has its own JSON configuration, its own free DICOM and HTTP ports on 127.0.0.1 (HTTP remote access
off), its own storage folder and its own log file; it is stopped by PID (SIGTERM, then SIGKILL). `restart()`
keeps the storage, as a PACS reboot would. The REST helpers read what Orthanc stored, which is how the tests
count results: from the PACS's side, not the node's.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest
from dicom_fixtures import free_port

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGINS = Path("/usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = PLUGINS / "libOrthancDicomWeb.so"
SERVE_FOLDERS_PLUGIN = PLUGINS / "libServeFolders.so"


def require_orthanc() -> None:
    """Skip locally with the install line; fail in CI (CI=true), where `.ci/system-deps.sh` installs it."""
    missing = [str(p) for p in (Path(ORTHANC), DICOMWEB_PLUGIN) if not p.exists()]
    if not missing:
        return
    message = f"missing {', '.join(missing)}: apt-get install -y orthanc orthanc-dicomweb"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


class Orthanc:
    def __init__(
        self,
        folder: Path,
        modalities: dict[str, list] | None = None,
        lua: str | None = None,
        users: dict[str, str] | None = None,
        extra: dict | None = None,
    ) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dicom_port, self.http_port = free_port(), free_port()
        self.aet = "ORTHANC"
        self.users = users or {}
        self.proc: subprocess.Popen | None = None
        self.log = folder / "orthanc.log"
        config = {
            "Name": "tinyusfm-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": self.users,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "DicomModalities": modalities or {},
            "LuaScripts": [],
            "SaveJobs": False,
            "ConcurrentJobs": 2,
            "HttpTimeout": 30,
            "DicomScuTimeout": 20,
        }
        if lua:
            script = folder / "routing.lua"
            script.write_text(lua)
            config["LuaScripts"] = [str(script)]
        config.update(extra or {})
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps(config, indent=2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, timeout: float = 60.0) -> Orthanc:
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the process for its lifetime
        self.proc = subprocess.Popen(
            [ORTHANC, "--verbose", str(self.config)], stdout=log, stderr=subprocess.STDOUT, cwd=self.folder
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"Orthanc exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                self.get("/system")
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        pytest.fail(f"Orthanc did not answer within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # ---- REST ----------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.users:
            user, password = next(iter(self.users.items()))
            request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
        return data

    def get(self, path: str):
        return json.loads(self._request("GET", path))

    def post(self, path: str, body: bytes | dict, content_type: str = "application/json"):
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        return json.loads(self._request("POST", path, data, content_type))

    def upload(self, path: Path) -> dict:
        """Store a file through the REST API (`POST /instances`), as a modality's upload would."""
        return self.post("/instances", path.read_bytes(), "application/dicom")

    def instances(self) -> list[pydicom.Dataset]:
        """Every stored instance, read back from Orthanc (headers only)."""
        out = []
        for oid in self.get("/instances"):
            data = self._request("GET", f"/instances/{oid}/file")
            out.append(pydicom.dcmread(_BytesFile(data), stop_before_pixels=True))
        return out

    def warnings(self) -> list[str]:
        """Warning and error lines ('W'/'E' glog prefixes) Orthanc logged while running: between 'Orthanc has
        started' and 'Orthanc is stopping' (it logs its start and stop messages at level W too)."""
        found, running = [], False
        for line in self.log.read_text(errors="replace").splitlines():
            if "] Orthanc has started" in line:
                running = True
            elif "] Orthanc is stopping" in line:
                running = False
            elif running and line[:1] in ("W", "E"):
                found.append(line)
        return found


def _BytesFile(data: bytes):  # noqa: N802 - a small factory
    import io

    return io.BytesIO(data)
