"""A client that sends a body over the limit gets the 413, not a reset connection, even
from a busy producer and even when it asks to close the connection (Python's urllib
does): the server reads and discards the rest of the body, up to a bound, before it
closes, so the client finishes sending and reads the answer."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import requests

from tests.services import running_producer

MIB = 1024 * 1024
# Over each route's limit (36 KiB and 4 MiB by default), within the 16 MiB the server
# reads and discards to deliver its 413.
SIZES = {"/events/generate": 2 * MIB, "/events/batch": 6 * MIB}


def post_big(url: str, size: int) -> int | str:
    """The status of one urllib POST of `size` bytes, or the error that ended it."""
    body = b'{"userId":"u","eventType":"LOGIN","payload":{"pad":"' + b"x" * size + b'"}}'
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read())
        assert answer["error"]["type"] == "request_entity_too_large", answer
        return int(exc.code)
    except OSError as exc:  # BrokenPipeError, ConnectionResetError, URLError
        return f"{type(exc).__name__}: {exc}"


def test_oversized_bodies_get_their_413_under_load(kafka_bootstrap: str, topic: str) -> None:
    stop = threading.Event()
    load_statuses: list[int] = []

    def load(n: int) -> None:
        with requests.Session() as session:
            i = 0
            while not stop.is_set():
                body = {"userId": f"user-{n}", "eventType": "LOGIN", "payload": {"i": i}}
                load_statuses.append(
                    session.post(f"{base}/events/generate", json=body, timeout=15).status_code
                )
                i += 1

    with running_producer(kafka_bootstrap, topic, PRODUCER_WORKERS="2") as producer:
        base = producer.base
        try:
            loaders = [threading.Thread(target=load, args=(n,)) for n in range(16)]
            for t in loaders:
                t.start()
            results: list[int | str] = []
            lock = threading.Lock()

            def big(path: str) -> None:
                for _ in range(4):
                    status = post_big(f"{base}{path}", SIZES[path])
                    with lock:
                        results.append(status)

            senders = [
                threading.Thread(target=big, args=(path,))
                for path in ("/events/generate", "/events/batch") * 4
            ]
            for t in senders:
                t.start()
            for t in senders:
                t.join()
            stop.set()
            for t in loaders:
                t.join()
        finally:
            stop.set()
    assert results == [413] * 32, results
    assert load_statuses and set(load_statuses) == {201}
