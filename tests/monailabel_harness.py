"""Helpers for tests/test_monailabel_server.py: the MONAI Label venv, tiny bundle copies, a server process.

Kept apart from the test so the steps read as the docs describe them: make a bundle folder, start
`monailabel start_server` with the app, talk REST to it, stop it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "tinyusfm_monai" / "monailabel"
SHIM_DIR = REPO / "tinyusfm_monai" / "monailabel" / "compat"
SETUP_SCRIPT = APP_DIR / "setup_env.sh"


def monailabel_venv() -> Path:
    return Path(os.environ.get("MONAILABEL_VENV", REPO / ".venv-monailabel"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_bundle_copy(name: str, dest_root: Path, image_size: int, seed: int = 0) -> Path:
    """Copy bundles/<name> to dest_root/<name> with `image_size` set in its inference and train configs,
    and write initial weights (seeded random init: the test checks plumbing, not accuracy)."""
    from monai.bundle import ConfigParser

    dest = dest_root / name
    shutil.copytree(REPO / "bundles" / name, dest, ignore=shutil.ignore_patterns("models", "eval", "runs"))
    for config in ("inference.json", "train.json"):
        path = dest / "configs" / config
        data = json.loads(path.read_text())
        data["image_size"] = image_size
        path.write_text(json.dumps(data, indent=4))
    parser = ConfigParser()
    parser.read_config(str(dest / "configs" / "inference.json"))
    parser["bundle_root"] = str(dest)
    torch.manual_seed(seed)
    network = parser.get_parsed_content("network_def", instantiate=True)
    (dest / "models").mkdir(exist_ok=True)
    torch.save(network.state_dict(), dest / "models" / "model.pt")
    return dest


def reference_prediction(bundle: Path, image: Path) -> np.ndarray:
    """The bundle's own inference pipeline (preprocessing → network with models/model.pt → postprocessing,
    writers removed), run in this process: what the server must answer with the same weights."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose, SaveImaged

    from tinyusfm_monai.transforms.io import SaveProbabilitiesd

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    network = parser.get_parsed_content("network_def", instantiate=True)
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True))
    network.eval()
    pre = parser.get_parsed_content("preprocessing", instantiate=True)
    post = parser.get_parsed_content("postprocessing", instantiate=True)
    post = Compose([t for t in post.transforms if not isinstance(t, (SaveImaged, SaveProbabilitiesd))])
    data = pre({"image": str(image)})
    with torch.no_grad():
        data["pred"] = network(data["image"][None])[0]
    out = post(data)["pred"]
    return np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out)


class Server:
    """A `monailabel start_server` child process in its own session, logging to a file; killed on stop()."""

    def __init__(
        self, studies: Path, bundles: Path, models: list[str], log_path: Path, conf: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        venv = monailabel_venv()
        # `python -m monailabel.main` is what the venv's `monailabel` script execs, minus its PYTHONPATH prefix (the
        # venv's parent folder): with a venv outside this checkout that would import another copy of our package
        cmd = [
            str(venv / "bin" / "python"),
            "-m",
            "monailabel.main",
            "start_server",
            "--app",
            str(APP_DIR),
            "--studies",
            str(studies),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--conf",
            "bundles",
            str(bundles),
            "--conf",
            "models",
            ",".join(models),
        ]
        for key, value in (conf or {}).items():  # further app settings, e.g. {"backend": "openvino"}
            cmd += ["--conf", key, value]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONAI_LABEL_")}
        # the shim, then this checkout (the venv's editable install may point at another copy of the repository)
        env["PYTHONPATH"] = os.pathsep.join((str(SHIM_DIR), str(REPO)))
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.pop("VIRTUAL_ENV", None)
        self._log = open(log_path, "wb")  # noqa: SIM115 - open for the server's lifetime, closed in stop()
        self.process = subprocess.Popen(
            cmd, cwd=studies.parent, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                status, body = http(f"{self.url}/info/", timeout=5)
                if status == 200:
                    return json.loads(body)
            except OSError:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"server not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server's process group (it and any training subprocess), SIGKILL what remains."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group may outlive its leader (training subprocess)
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait(timeout=timeout)
        # SIGKILL is delivered asynchronously: wait until the last member (e.g. a background scoring pass, a
        # grandchild reaped by init) is gone, so callers can check that nothing is left
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        self._log.close()


def http(
    url: str,
    method: str = "GET",
    fields: dict[str, str] | None = None,
    files: dict[str, Path] | None = None,
    json_body: Any = None,
    timeout: float = 60.0,
) -> tuple[int, bytes]:
    """One HTTP request with the standard library (multipart form for fields/files, or a JSON body);
    returns (status, body) also for error statuses."""
    headers: dict[str, str] = {}
    data: bytes | None = None
    if fields is not None or files is not None:
        boundary = uuid.uuid4().hex
        parts: list[bytes] = []
        for name, value in (fields or {}).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for name, path in (files or {}).items():
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            )
            parts.append(head.encode() + path.read_bytes() + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        data = b"".join(parts)
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    elif json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def save_png(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path
