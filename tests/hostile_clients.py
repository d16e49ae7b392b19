"""Clients that hold a DICOM node's connections without doing anything: silent sockets and byte-dribblers.

Used by tests/test_dicom_node.py (the legitimate peer is served within seconds under attack) and by
benchmarks/node_slow_clients.py (how long it takes). Each attacker binds its own loopback source address
(127.0.0.0/8 is all loopback on Linux), so they look like many different hosts and the per-address cap alone
cannot stop them: the deadlines and the cap on unfinished connections must.
"""

from __future__ import annotations

import socket
import threading
import time

# an A-ASSOCIATE-RQ header announcing 205 bytes that never all come (plain), a TLS ClientHello record header
PLAIN_DRIBBLE = b"\x01\x00\x00\x00\x00\xcd" + b"\x00\x01" + b"\x00" * 64
TLS_DRIBBLE = b"\x16\x03\x01\x02\x00" + b"\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64


class Attacker:
    """One hostile connection from `source` (a loopback address): silent, or sending one byte every `every` s.

    `closed_after` is the time from connect until the node closed the connection (None while it is open)."""

    def __init__(self, port: int, source: str, dribble: bytes | None = None, every: float = 0.5) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        self.start = time.monotonic()
        self.closed_after: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(dribble, every), daemon=True)
        self._thread.start()

    def _run(self, dribble: bytes | None, every: float) -> None:
        self.sock.settimeout(every)
        sent = 0
        while not self._stop.is_set():
            try:
                if self.sock.recv(1 << 16) == b"":  # the node closed it (data, e.g. an A-ASSOCIATE-RJ, is read on)
                    break
            except TimeoutError:
                pass
            except OSError:
                break
            if dribble is not None and sent < len(dribble):
                try:
                    self.sock.send(dribble[sent : sent + 1])
                    sent += 1
                except OSError:
                    break
        if not self._stop.is_set():
            self.closed_after = time.monotonic() - self.start

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def open_attackers(port: int, silent: int, dribbling: int, tls: bool, first_octet: int = 10) -> list[Attacker]:
    """`silent` + `dribbling` connections, each from its own loopback address 127.0.0.<first_octet + k>."""
    out = []
    for k in range(silent + dribbling):
        payload = None if k < silent else (TLS_DRIBBLE if tls else PLAIN_DRIBBLE)
        out.append(Attacker(port, f"127.0.0.{first_octet + k}", payload))
    return out


def echo_seconds(port: int, tls_context=None, attempts_for: float = 30.0, aet: str = "MODALITY") -> float:
    """Seconds until a legitimate peer (127.0.0.1) completes a C-ECHO with the node, retrying a refused
    association as a modality would; inf if it never does within `attempts_for` seconds."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    t0 = time.monotonic()
    while time.monotonic() - t0 < attempts_for:
        kwargs = {"tls_args": (tls_context, "127.0.0.1")} if tls_context is not None else {}
        assoc = ae.associate("127.0.0.1", port, ae_title="TINYUSFM", **kwargs)
        if assoc.is_established:
            ok = getattr(assoc.send_c_echo(), "Status", None) == 0
            assoc.release()
            if ok:
                return time.monotonic() - t0
        time.sleep(0.2)
    return float("inf")
