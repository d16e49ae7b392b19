"""Bounded time and bounded slots for every client of the DICOM node, whatever it sends or withholds.

pynetdicom's server, left as it is, lets a client hold resources without a bound:

- its accept loop does the TLS handshake inline, without a timeout: one silent TCP connection to a TLS port
  stops every other client from connecting;
- the A-ASSOCIATE-RQ and every PDU are read with a *per read* timeout: a client that sends one byte every few
  seconds keeps its association thread (and its slot under `maximum_associations`) for ever;
- its connection limit counts connections that have not even sent an association request, so a handful of
  silent sockets lock everyone out, and nothing limits how many of them one address opens.

What this module adds, as a pynetdicom server subclass (nothing else of pynetdicom changes):

- `GuardedAssociationServer.get_request` only accepts; the TLS handshake runs in the connection's own thread
  (`GuardedRequestHandler.handle`), so the accept loop never waits on a client;
- `ConnectionGuard` gives every connection a *total* deadline (`handshake_timeout`) from TCP accept to a complete
  A-ASSOCIATE-RQ, TLS handshake included; a watchdog thread shuts the socket down when it passes;
- connections still before their A-ASSOCIATE-RQ are capped (`max_connecting`): when a new one arrives at the
  cap, the oldest unfinished one is dropped, so silent sockets cannot keep a legitimate peer out for longer
  than its own handshake takes; connections per source address are capped (`max_per_address`), whatever AE
  titles they use;
- `PduDeadlineSocket` reads each PDU against one deadline (the node's idle timeout) instead of a per-read
  timeout, so a byte-dribbling client inside an association is dropped too; `max_lifetime` bounds an
  association that keeps sending complete PDUs.

Every refusal or drop is reported to one callback (`on_reject(address, reason, detail)`), which the node counts
in its status and logs.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

#: reasons passed to `on_reject` (and counted under `rejected_associations` in the node's status)
ADDRESS_LIMIT = "address-limit"
CONNECTING_EVICTED = "evicted-unfinished-connection"
HANDSHAKE_TIMEOUT = "handshake-timeout"
TLS_FAILED = "tls-handshake-failed"
LIFETIME = "association-lifetime"
PDU_TIMEOUT = "pdu-timeout"

Reject = Callable[[str, str, str], None]

# set in the DUL thread when a read ends short because of the guard: pynetdicom's "PDU shorter than expected"
# error line that follows is then noise (the node logs the drop itself, rate-limited)
_cut_short = threading.local()


class _QuietCutShort(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_cut_short, "value", False) and "shorter than expected" in record.getMessage():
            _cut_short.value = False
            return False
        return True


_QUIET = _QuietCutShort()


@dataclass
class Connection:
    """One accepted TCP connection, from accept until its association thread ends."""

    address: str
    sock: socket.socket
    accepted: float
    deadline: float
    assoc: Any = None
    closed: bool = False
    dropped: str = ""  # the reason the guard shut it down ('' while it has not)
    raw: Any = None  # the accepted socket (the registry's key: kept referenced so its id is not reused)
    _ended: threading.Event = field(default_factory=threading.Event)

    def requested(self) -> bool:
        """True once the A-ASSOCIATE-RQ is complete (the handshake deadline no longer applies)."""
        return self.assoc is not None and self.assoc.requestor.primitive is not None

    def alive(self) -> bool:
        if self.closed:
            return False
        # between accept and the association thread's start, the connection's handler thread holds it
        return self.assoc is None or self.assoc.is_alive() or not self.assoc._started.is_set()

    def shut(self, reason: str) -> None:
        if not self.dropped:
            self.dropped = reason
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # unblocks a recv or a TLS handshake in any thread
        except OSError:
            pass
        if self.assoc is not None and not self.requested():
            # the association thread waits for the A-ASSOCIATE-RQ on this queue: None ends the wait (pynetdicom's
            # own timeout path), so a dropped connection frees its thread now, not at its ACSE timeout
            self.assoc.dul.to_user_queue.put(None)


class ConnectionGuard:
    """Per-connection deadlines and per-address / pre-association caps, enforced by one watchdog thread.

    Args:
        handshake_timeout: seconds from TCP accept to a complete A-ASSOCIATE-RQ (TLS handshake included).
        max_per_address: connections one source address may hold at once (any AE title, any state).
        max_connecting: connections that have not yet sent a complete A-ASSOCIATE-RQ; at the cap, the oldest
            of them is dropped for the newcomer.
        max_lifetime: seconds an association may last at all (None: no limit).
        on_reject: called once per refused or dropped connection with (address, reason, detail).
    """

    def __init__(
        self,
        handshake_timeout: float,
        max_per_address: int,
        max_connecting: int,
        on_reject: Reject,
        max_lifetime: float | None = None,
        tick: float = 0.1,
    ) -> None:
        self.handshake_timeout = float(handshake_timeout)
        self.max_per_address = max(1, int(max_per_address))
        self.max_connecting = max(1, int(max_connecting))
        self.max_lifetime = max_lifetime
        self.on_reject = on_reject
        self.tick = tick
        self._lock = threading.Lock()
        self._connections: dict[int, Connection] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="tinyusfm-dicom-guard", daemon=True)

    def start(self) -> ConnectionGuard:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _prune(self) -> list[Connection]:
        """Forget ended connections (lock held); returns those that ended at their handshake deadline without
        the guard dropping them (pynetdicom's ACSE timeout, which the handler set to the same deadline, was
        first): the caller reports them."""
        now = time.monotonic()
        ended = [k for k, c in self._connections.items() if not c.alive()]
        timed_out = []
        for key in ended:
            c = self._connections.pop(key)
            if not c.dropped and not c.requested() and now >= c.deadline - 0.5:
                c.dropped = HANDSHAKE_TIMEOUT
                timed_out.append(c)
        return timed_out

    def _report_timeouts(self, connections: list[Connection]) -> None:
        for c in connections:
            detail = f"no complete association request within {self.handshake_timeout:g} s of connecting"
            self.on_reject(c.address, HANDSHAKE_TIMEOUT, detail)

    def counts(self) -> dict[str, int]:
        with self._lock:
            timed_out = self._prune()
            connections = list(self._connections.values())
        self._report_timeouts(timed_out)
        return {"open": len(connections), "connecting": sum(1 for c in connections if not c.requested())}

    def admit(self, sock: socket.socket, address: str) -> bool:
        """Called by the accept loop for each new connection; False = closed at once (the reason is reported)."""
        now = time.monotonic()
        evicted: Connection | None = None
        with self._lock:
            timed_out = self._prune()
            same = sum(1 for c in self._connections.values() if c.address == address)
            if same >= self.max_per_address:
                reason = f"{same} connection(s) from this address already open (limit {self.max_per_address})"
                admitted = False
            else:
                connecting = [c for c in self._connections.values() if not c.requested() and not c.dropped]
                if len(connecting) >= self.max_connecting:
                    evicted = min(connecting, key=lambda c: c.accepted)
                    evicted.shut(CONNECTING_EVICTED)
                self._connections[id(sock)] = Connection(address, sock, now, now + self.handshake_timeout, raw=sock)
                admitted = True
        self._report_timeouts(timed_out)
        if evicted is not None:
            self.on_reject(
                evicted.address,
                CONNECTING_EVICTED,
                f"no association request after {now - evicted.accepted:.1f} s; dropped for a new connection "
                f"({self.max_connecting} unfinished connections at most)",
            )
        if not admitted:
            self.on_reject(address, ADDRESS_LIMIT, reason)
        return admitted

    def connection(self, sock: socket.socket) -> Connection | None:
        with self._lock:
            return self._connections.get(id(sock))

    def _watch(self) -> None:
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            late: list[tuple[Connection, str, str]] = []
            with self._lock:
                timed_out = self._prune()
                for c in self._connections.values():
                    if c.dropped:
                        continue
                    if not c.requested() and now > c.deadline:
                        detail = f"no complete association request within {self.handshake_timeout:g} s of connecting"
                        late.append((c, HANDSHAKE_TIMEOUT, detail))
                    elif self.max_lifetime is not None and now > c.accepted + self.max_lifetime:
                        late.append((c, LIFETIME, f"association open longer than {self.max_lifetime:g} s"))
            self._report_timeouts(timed_out)
            for c, reason, detail in late:
                c.shut(reason)
                self.on_reject(c.address, reason, detail)


class PduDeadlineSocket(AssociationSocket):
    """An `AssociationSocket` whose `recv` (one PDU header, or one PDU body) has one total deadline: the
    association's network timeout (pynetdicom's own timeout applies per read, which a client can reset with one
    byte). Before the A-ASSOCIATE-RQ is complete the connection's handshake deadline applies as well.

    On the deadline it returns what it has: pynetdicom then sees a short PDU and closes the connection (one
    error line, no traceback)."""

    guard_connection: Connection | None = None
    on_timeout: Callable[[str], None] | None = None

    def recv(self, nr_bytes: int) -> bytearray:
        raw = self.socket
        limit = self.assoc.network_timeout
        if raw is None or not limit:
            return super().recv(nr_bytes)
        deadline = time.monotonic() + float(limit)
        conn = self.guard_connection
        if conn is not None and not conn.requested():
            deadline = min(deadline, conn.deadline)
        previous = raw.gettimeout()
        data = bytearray()
        _cut_short.value = False
        try:
            while len(data) < nr_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    # before the A-ASSOCIATE-RQ the guard's watchdog reports the handshake deadline itself
                    if self.on_timeout is not None and (conn is None or conn.requested()):
                        self.on_timeout(f"PDU not complete within {float(limit):g} s ({len(data)} of {nr_bytes} bytes)")
                    _cut_short.value = True
                    return data
                raw.settimeout(left)
                try:
                    chunk = raw.recv(min(4096, nr_bytes - len(data)))
                except TimeoutError:
                    continue  # the loop ends on the deadline
                if not chunk:
                    _cut_short.value = conn is not None and bool(conn.dropped)  # shut down by the guard
                    return data
                data.extend(chunk)
            return data
        finally:
            try:
                raw.settimeout(previous)
            except OSError:
                pass


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's handler, plus: the TLS handshake here (the connection's own thread, under the guard's
    deadline), the PDU deadline socket, and an ACSE timeout that ends with the handshake deadline."""

    server: GuardedAssociationServer

    def handle(self) -> None:
        conn = self.server.guard.connection(self.request)
        try:
            self._handle(conn)
        except BaseException:
            if conn is not None:
                conn.closed = True
            raise

    def _handle(self, conn: Connection | None) -> None:
        guard = self.server.guard
        address = str(self.client_address[0])
        if self.server.tls_context is not None:
            raw = self.request
            raw.settimeout(guard.handshake_timeout)  # per read; the guard's watchdog bounds the total
            try:
                self.request = self.server.tls_context.wrap_socket(raw, server_side=True)
            except (OSError, ValueError) as exc:
                if conn is None or not conn.dropped:  # a drop by the guard was reported when it was made
                    detail = getattr(exc, "reason", None) or type(exc).__name__
                    self.server.on_reject(address, TLS_FAILED, f"TLS handshake failed ({detail})")
                if conn is not None:
                    conn.closed = True
                raw.close()
                return
            self.request.settimeout(None)  # blocking afterwards, as pynetdicom's own sockets
            if conn is not None:
                conn.sock = self.request
        assoc = self._create_association()
        sock = assoc.dul.socket
        sock.__class__ = PduDeadlineSocket  # same object, one overridden method: pynetdicom's reader untouched
        sock.guard_connection = conn
        sock.on_timeout = lambda detail: self.server.on_reject(address, PDU_TIMEOUT, detail)
        if conn is not None:
            # the wait for the A-ASSOCIATE-RQ ends with the handshake deadline (restored by the node once it came)
            assoc.acse_timeout = max(0.1, conn.deadline - time.monotonic())
            conn.assoc = assoc
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()


class GuardedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server whose accept loop only accepts: admission by `ConnectionGuard`, the TLS
    handshake in the connection's thread.

    Args (beyond pynetdicom's): guard: the `ConnectionGuard`; on_reject: reporting callback (address, reason,
    detail); the `ssl_context` given is kept as `tls_context` and pynetdicom's own (inline) wrapping is off.
    """

    def __init__(self, *args: Any, guard: ConnectionGuard, on_reject: Reject, **kwargs: Any) -> None:
        self.guard = guard
        self.on_reject = on_reject
        super().__init__(*args, request_handler=GuardedRequestHandler, **kwargs)
        self.tls_context: ssl.SSLContext | None = self.ssl_context
        self.ssl_context = None  # pynetdicom wraps in `get_request` when set: the handler does it instead

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.settimeout(None)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.guard.admit(request, str(client_address[0]))


def start_guarded_server(
    ae: Any,
    address: tuple[str, int],
    guard: ConnectionGuard,
    on_reject: Reject,
    evt_handlers: list,
    ssl_context: ssl.SSLContext | None = None,
) -> GuardedAssociationServer:
    """`AE.start_server(..., block=False)` with `GuardedAssociationServer` (pynetdicom's start_server has no
    server class argument; `AE.make_server` does)."""
    server = ae.make_server(
        address,
        ssl_context=ssl_context,
        evt_handlers=evt_handlers,
        server_class=GuardedAssociationServer,
        guard=guard,
        on_reject=on_reject,
    )
    dul_log = logging.getLogger("pynetdicom.dul")
    if _QUIET not in dul_log.filters:
        dul_log.addFilter(_QUIET)
    thread = threading.Thread(target=server.serve_forever, name="tinyusfm-dicom-accept", daemon=True)
    thread.start()
    ae._servers.append(server)  # AssociationServer.shutdown removes it from there
    return server
