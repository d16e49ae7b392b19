"""DICOMweb transport rules that a real Orthanc cannot be made to exercise on demand: credentials only from the
environment, TLS verification on by default, and what counts as stored, retried or refused in a STOW-RS answer.

The server here is Python's `http.server` answering fixed STOW-RS responses (a stand-in: Orthanc never answers
409 or a Failed SOP Sequence for a valid object, and has no bearer tokens); the real round trips against Orthanc
are in `test_dicom_orthanc.py`.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pydicom
import pytest
from dicom_fixtures import us_file

from tinyusfm_monai.dicom.dicomweb import (
    ENV_AUTH_FILE,
    ENV_CA,
    ENV_PASSWORD,
    ENV_TOKEN,
    ENV_USER,
    DicomWebDestination,
    DicomWebError,
    auth_header_from_env,
    multipart_parts,
)
from tinyusfm_monai.dicom.node import Destination

SOP = str(pydicom.dcmread(us_file("US1_UNCR.dcm"), stop_before_pixels=True).SOPInstanceUID)


def test_destination_parse_dispatches_on_the_scheme():
    assert Destination.parse("PACS@10.0.0.5:104") == Destination("PACS", "10.0.0.5", 104)
    web = Destination.parse(
        "https://pacs.example.org/dicom-web/",
    )
    assert isinstance(web, DicomWebDestination) and web.url == "https://pacs.example.org/dicom-web"
    assert str(Destination.parse("PACS@h:1")) == "PACS@h:1"
    with pytest.raises(ValueError, match="credentials in the URL"):
        Destination.parse("https://user:pw@pacs.example.org/dicom-web")
    with pytest.raises(ValueError, match="expected"):
        Destination.parse("ftp://pacs")


def test_credentials_come_from_the_environment_only(tmp_path):
    assert auth_header_from_env({}) is None
    assert auth_header_from_env({ENV_TOKEN: "abc"}) == "Bearer abc"
    assert auth_header_from_env({ENV_USER: "u", ENV_PASSWORD: "p"}) == "Basic dTpw"
    secret = tmp_path / "auth"
    secret.write_text("Basic ai:pa ss\n")
    assert auth_header_from_env({ENV_AUTH_FILE: str(secret), ENV_TOKEN: "ignored"}) == "Basic YWk6cGEgc3M="
    secret.write_text("Bearer tok123")
    assert auth_header_from_env({ENV_AUTH_FILE: str(secret)}) == "Bearer tok123"
    secret.write_text("password123")
    with pytest.raises(ValueError, match="expected 'Bearer"):
        auth_header_from_env({ENV_AUTH_FILE: str(secret)})
    dest = DicomWebDestination.parse("https://pacs/dicom-web", env={ENV_TOKEN: "tok"})
    assert "tok" not in repr(dest) and "tok" not in str(dest)


def test_multipart_parts_splits_bodies():
    part = b"--b1\r\nContent-Type: application/dicom\r\n\r\n"
    body = part + b"AAA\r\n" + part + b"B\r\nB\r\n--b1--\r\n"
    assert multipart_parts('multipart/related; type="application/dicom"; boundary="b1"', body) == [b"AAA", b"B\r\nB"]
    with pytest.raises(DicomWebError):
        multipart_parts("application/dicom", body)


class _Stow(BaseHTTPRequestHandler):
    """Answers each POST with the next (status, JSON) of `replies`; records the Authorization header."""

    replies: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        type(self).seen.append((self.headers.get("Authorization"), self.headers["Content-Type"], len(body)))
        status, payload = type(self).replies.pop(0)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - a WADO-RS answer: one instance of 200 kB in multipart framing
        body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * 200_000 + b"\r\n--b--\r\n"
        self.send_response(200)
        self.send_header("Content-Type", 'multipart/related; type="application/dicom"; boundary=b')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def stow_server():
    servers = []

    def start(replies, tls_context=None):
        _Stow.replies, _Stow.seen = list(replies), []
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Stow)
        if tls_context is not None:
            server.socket = tls_context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()


def _referenced(sop, warning=None):
    item = {"00081155": {"vr": "UI", "Value": [sop]}}
    if warning is not None:
        item["00081196"] = {"vr": "US", "Value": [warning]}
    return {"00081199": {"vr": "SQ", "Value": [item]}}


def test_stow_rs_answers_stored_retried_or_refused(stow_server):
    failed = {
        "00081198": {
            "vr": "SQ",
            "Value": [{"00081155": {"vr": "UI", "Value": [SOP]}, "00081197": {"vr": "US", "Value": [0xA700]}}],
        }
    }
    port = stow_server(
        [
            (200, _referenced(SOP)),
            (200, _referenced(SOP, warning=0xB000)),
            (503, {}),
            (401, {}),
            (400, {}),
            (409, failed),
            (202, failed),
            (200, {}),
        ]
    )
    dest = DicomWebDestination.parse(f"http://127.0.0.1:{port}/dicom-web", env={ENV_TOKEN: "t0k"})
    files = [us_file("US1_UNCR.dcm")]
    assert dest.store(files) == []
    assert dest.store(files) == [f"SOP {SOP}: warning 0xB000"]
    for transient in (True, True, False, False, False, True):  # 503, 401 | 400, 409, failed item | unconfirmed
        with pytest.raises(DicomWebError) as info:
            dest.store(files)
        assert info.value.transient is transient, str(info.value)
    auth, content_type, size = _Stow.seen[0]
    assert auth == "Bearer t0k" and content_type.startswith('multipart/related; type="application/dicom"')
    assert size > us_file("US1_UNCR.dcm").stat().st_size


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_tls_is_verified_by_default_and_a_private_ca_can_be_named(tmp_path, stow_server):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    port = stow_server([(200, _referenced(SOP))], tls_context=context)
    url = f"https://127.0.0.1:{port}/dicom-web"
    with pytest.raises(DicomWebError, match="TLS|CERTIFICATE|certificate") as info:
        DicomWebDestination.parse(url, env={}).store([us_file("US1_UNCR.dcm")])
    assert info.value.transient  # kept in the outbox until the certificate problem is fixed
    assert DicomWebDestination.parse(url, env={ENV_CA: str(cert)}).store([us_file("US1_UNCR.dcm")]) == []


def test_wado_rs_retrieve_is_bounded_by_the_size_limit(tmp_path, stow_server):
    port = stow_server([])
    dest = DicomWebDestination.parse(f"http://127.0.0.1:{port}/dicom-web", env={})
    with pytest.raises(DicomWebError, match="byte limit") as info:
        dest.retrieve_instance("1.2", "1.3", "1.4", tmp_path / "x.dcm", max_bytes=10_000)
    assert not info.value.transient and not (tmp_path / "x.dcm").exists()
    assert dest.retrieve_instance("1.2", "1.3", "1.4", tmp_path / "x.dcm", max_bytes=300_000).stat().st_size == 200_000
