"""What every loopback fake shares: a quiet handler, and a server on a free port served from a thread."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackHandler(BaseHTTPRequestHandler):
    """A fake's request handler: quiet, and every method it serves goes to `_handle` with the request's body."""

    # HubSpot, Salesforce and Twilio keep a connection open for the next request (HTTP/1.1); http.server's default,
    # HTTP/1.0, closed it after every answer, so each call paid for a new connection that a vendor would not ask of it.
    # Every answer carries its Content-Length; an answer dropped on purpose closes the connection (`close_connection`).
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _handle(self, raw: bytes) -> None:
        raise NotImplementedError

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            # The caller died mid-request (a SIGKILLed worker): a real API never takes half a request as one. Taking
            # it once stored a text with no `To`, and every later lookup of texts failed on it.
            self.close_connection = True
            return
        self._handle(raw)

    do_GET = do_PATCH = do_DELETE = do_POST


class LoopbackServer(ThreadingHTTPServer):
    """A fake on a free loopback port, served from a thread while it is used as a context manager."""

    daemon_threads = True
    # A vendor's API takes many connections at once. socketserver's backlog of 5 does not: a page's texts sent side
    # by side overflowed it, and each connection refused that way waited out TCP's one-second SYN retry.
    request_queue_size = 128

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A caller that died (a SIGKILLed worker) resets the connections it kept open: a vendor takes that in its
        # stride, and so does the fake, instead of printing a traceback for each.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
