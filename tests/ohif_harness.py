"""OHIF (the `@ohif/app` 3.13 prebuilt `dist/` from the npm registry) served on the same origin as Orthanc's
DICOMweb, as a hospital's reverse proxy would: static files from `dist/`, `/app-config.js` from
`tests/ohif/app-config.js`, `/dicom-web/...` forwarded to Orthanc. Same origin: no CORS configuration anywhere.

(Orthanc's ServeFolders plugin can only serve a folder under a URI prefix, and OHIF's build loads its chunks
from `/`; a prefix would mean rewriting the build, so the test uses this small proxy instead.)
"""

from __future__ import annotations

import mimetypes
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OHIF_CONFIG = Path(__file__).resolve().parent / "ohif" / "app-config.js"
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")


def make_handler(dist: Path, upstream: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in ("transfer-encoding", "connection", "content-length", "content-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            if self.path.startswith("/dicom-web/"):
                return self._proxy()
            path = self.path.split("?", 1)[0]
            if path == "/app-config.js":
                return self._send(200, OHIF_CONFIG.read_bytes(), {"Content-Type": "text/javascript"})
            target = (dist / path.lstrip("/")).resolve()
            if not target.is_relative_to(dist.resolve()) or not target.is_file():
                target = dist / "index.html"  # the single-page app's own routes (/viewer?...)
            kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            self._send(200, target.read_bytes(), {"Content-Type": kind})

        def _proxy(self):
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "content-type")}
            request = urllib.request.Request(upstream + self.path, headers=headers, method=self.command)
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    self._send(response.status, response.read(), dict(response.headers.items()))
            except urllib.error.HTTPError as exc:
                self._send(exc.code, exc.read(), dict(exc.headers.items()))

    return Handler


class OhifServer:
    def __init__(self, dist: Path, upstream: str) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(dist, upstream))
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
