"""The rest of an oversized body is read before its 413 (a lingering close), within bounds."""

from __future__ import annotations

import io
import socket
from typing import Any

from producer_service.errors import DRAIN_MAX_BYTES, drain_body


class Counting(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return super().read(size)


class Broken:
    def read(self, size: int) -> bytes:
        raise ConnectionResetError("peer went away")


def environ(stream: Any, length: int | None) -> dict[str, Any]:
    env: dict[str, Any] = {"wsgi.input": stream}
    if length is not None:
        env["CONTENT_LENGTH"] = str(length)
    return env


def test_the_rest_of_the_body_is_read_to_its_end() -> None:
    stream = Counting(b"x" * 300_000)
    stream.read(1000)  # what the app read before it refused
    assert drain_body(environ(stream, 300_000)) is True
    assert stream.read() == b""


def test_a_body_declared_over_the_bound_is_not_read() -> None:
    stream = Counting(b"x" * 10)
    assert drain_body(environ(stream, DRAIN_MAX_BYTES + 1)) is False
    assert stream.reads == 0


def test_an_endless_body_without_a_length_stops_at_the_bound() -> None:
    class Endless:
        read_bytes = 0

        def read(self, size: int) -> bytes:
            self.read_bytes += size
            return b"x" * size

    stream = Endless()
    assert drain_body(environ(stream, None)) is False
    assert DRAIN_MAX_BYTES < stream.read_bytes <= DRAIN_MAX_BYTES + 64 * 1024


def test_a_client_that_goes_away_ends_the_drain_quietly() -> None:
    assert drain_body(environ(Broken(), 100)) is False


def test_the_socket_timeout_is_restored() -> None:
    a, b = socket.socketpair()
    try:
        a.settimeout(7.0)
        env = environ(Counting(b"abc"), 3)
        env["gunicorn.socket"] = a
        assert drain_body(env) is True
        assert a.gettimeout() == 7.0
    finally:
        a.close()
        b.close()
