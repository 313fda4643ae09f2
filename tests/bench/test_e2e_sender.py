"""The end-to-end bench's sender: when an answer arrived is the kernel's time, not the time
a busy sender read it, and every request is answered once over keep-alive connections."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.e2e import _Connection, _send


class _Generate(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"eventId": str(uuid.uuid4())}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Generate)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_answer_time_is_when_it_arrived_not_when_it_was_read(server_port: int) -> None:
    conn = _Connection(server_port)
    try:
        conn.send(f"127.0.0.1:{server_port}", 0, time.time(), b'{"userId":"u"}')
        assert conn.request is not None
        sent = conn.request[2]
        # A sender kept from the CPU reads the answer late; its stamp must not move.
        time.sleep(0.5)
        data, stamp = conn.read()
        read_at = time.time()
        assert data.startswith(b"HTTP/1.1 201")
        assert sent <= stamp < sent + 0.25
        assert read_at - stamp >= 0.25
    finally:
        conn.close()


def test_every_request_answered_once_on_schedule(server_port: int) -> None:
    results = _send(server_port, rate=200, total=100)
    assert sorted(r.index for r in results) == list(range(100))
    assert all(r.status == 201 and r.event_id for r in results)
    assert len({r.event_id for r in results}) == 100
    assert all(r.sent <= r.answered for r in results)
