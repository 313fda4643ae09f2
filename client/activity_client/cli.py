"""`activity-client send FILE.jsonl`: a backfill through the same machinery as
`EventClient`, with a progress bar, resumable through its spool.

Each line of the file is one event, `{"userId": ..., "eventType": ..., "payload": {...}}`.
Lines are spooled in chunks, each chunk in one transaction with the file position after
it; an interrupted run (Ctrl-C, a crash, a reboot) started again with the same command
resends what was not acknowledged under the same keys and goes on from that position,
so every line is stored once. A finished run leaves its (empty) spool behind: running
it again sends nothing; delete the spool to send the file a second time.

Exit status: 0 every event acknowledged; 1 some lines were refused (bad JSON here, or
by the server); 2 bad usage; 3 events still unacknowledged when --timeout ran out (run
again to resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from activity_client.batching import encode_event
from activity_client.client import DEFAULT_MAX_BATCH_EVENTS, EventClient
from activity_client.errors import ActivityClientError

CHUNK = 1000
DONE = "done"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="activity-client", description="Send events to the user-activity pipeline."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser(
        "send",
        help="send a file of events, one JSON object per line (resumable)",
        description=(
            "Send FILE (JSON Lines: userId, eventType, payload) to the producer's "
            "/events/batch. Interrupted, the same command resumes where it stopped."
        ),
    )
    send.add_argument("file", metavar="FILE.jsonl")
    send.add_argument(
        "--url",
        default=os.environ.get("ACTIVITY_URL", "http://127.0.0.1:8000"),
        help="the producer (default: $ACTIVITY_URL or http://127.0.0.1:8000)",
    )
    send.add_argument(
        "--api-key-env",
        default="ACTIVITY_API_KEY",
        metavar="VAR",
        help="environment variable holding the API key (default ACTIVITY_API_KEY; a key "
        "is never taken on the command line, where other users could read it)",
    )
    send.add_argument(
        "--spool", help="the spool that makes the run resumable (default: FILE.jsonl.spool)"
    )
    send.add_argument("--batch-events", type=int, default=DEFAULT_MAX_BATCH_EVENTS)
    send.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the last acknowledgements (default: no limit)",
    )
    send.add_argument("--no-progress", action="store_true", help="no progress bar")
    send.add_argument(
        "-v", "--verbose", action="store_true", help="log every retry (default: errors only)"
    )
    return parser.parse_args(argv)


class Progress:
    """A one-line progress bar on stderr (a line every few seconds when not a terminal)."""

    def __init__(self, client: EventClient, size: int, stream: IO[str], enabled: bool) -> None:
        self.client = client
        self.size = max(size, 1)
        self.stream = stream
        self.enabled = enabled
        self.position = 0
        self.invalid = 0
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Progress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join(2)
            self.draw(final=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2 if self.tty else 5.0):
            self.draw()

    def draw(self, final: bool = False) -> None:
        c = self.client.counters()
        share = min(self.position / self.size, 1.0)
        bar = "#" * int(share * 30)
        rate = c.sent / max(time.monotonic() - self.started, 1e-9)
        line = (
            f"[{bar:<30}] {share:4.0%} read  {c.sent:,} acknowledged  {c.queued:,} pending  "
            f"{c.failed + self.invalid:,} refused  {c.retries:,} retries  {rate:,.0f} events/s"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def send(args: argparse.Namespace) -> int:
    spool = args.spool or args.file + ".spool"
    source = os.path.abspath(args.file)
    try:
        handle = open(args.file, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        print(f"activity-client: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    refused = 0

    def on_error(events: list[dict[str, Any]], reason: str) -> None:
        nonlocal refused
        refused += len(events)
        for event in events[:3]:
            print(f"refused: {reason}: {json.dumps(event)[:200]}", file=sys.stderr)

    try:
        client = EventClient(
            args.url,
            os.environ.get(args.api_key_env) or None,
            spool,
            max_batch_events=args.batch_events,
            block_timeout=1e6,  # a backfill waits for room; it never drops
            on_error=on_error,
        )
    except (ActivityClientError, ValueError) as exc:
        handle.close()
        print(f"activity-client: {exc}", file=sys.stderr)
        return 2
    try:
        start = _resume_position(client.checkpoint(), source)
        if start is None:
            print(f"activity-client: {spool} belongs to another file", file=sys.stderr)
            return 2
        size = os.fstat(handle.fileno()).st_size
        if start[1] and client.counters().queued == 0:
            print(
                f"activity-client: {args.file} was sent completely; nothing to do "
                f"(delete {spool} to send it again)",
                file=sys.stderr,
            )
            return 0
        handle.seek(start[0])
        progress = Progress(client, size, sys.stderr, not args.no_progress)
        progress.position = start[0]
        with progress:
            progress.invalid = _spool_file(client, handle, source, progress)
            ok = client.flush(args.timeout)
        if not ok and client.counters().queued:
            print(
                "activity-client: events still unacknowledged; run the same command again "
                "to resume",
                file=sys.stderr,
            )
            return 3
        return 1 if refused or progress.invalid else 0
    except KeyboardInterrupt:
        print(
            "\nactivity-client: interrupted; run the same command again to resume", file=sys.stderr
        )
        return 3
    except ActivityClientError as exc:
        print(f"activity-client: {exc}", file=sys.stderr)
        return 3
    finally:
        handle.close()
        client.close(1.0)


def _spool_file(client: EventClient, handle: IO[bytes], source: str, progress: Progress) -> int:
    """Spool every line from the handle's position on, a chunk per transaction, each
    with the position after it; the number of lines that are not events."""
    invalid = 0
    events: list[dict[str, Any]] = []
    position = handle.tell()
    while True:
        line = handle.readline()
        if line:
            position += len(line)
            event = _event(line, position)
            if event is None:
                invalid += line.strip() != b""
            else:
                events.append(event)
        if len(events) >= CHUNK or not line:
            checkpoint = json.dumps([source, position, DONE if not line else ""])
            client.track_many(events, checkpoint)
            events = []
            progress.position = position
        if not line:
            return invalid


def _event(line: bytes, position: int) -> dict[str, Any] | None:
    """The event on `line`, or None (reported) when it is not one."""
    if not line.strip():
        return None
    try:
        event = json.loads(line)
        if not isinstance(event, dict):
            raise ValueError("not a JSON object")
        if not isinstance(event.get("userId"), str) or not isinstance(event.get("eventType"), str):
            raise ValueError("userId and eventType must be strings")
        extra = set(event) - {"userId", "eventType", "payload"}
        if extra:
            raise ValueError(f"unknown field(s) {sorted(extra)}")
        # Checked as the client would check it, so one bad line cannot stop the chunk.
        encode_event(event["userId"], event["eventType"], event.get("payload"))
    except (ValueError, TypeError) as exc:
        print(f"skipped the line ending at byte {position}: {exc}", file=sys.stderr)
        return None
    return event


def _resume_position(checkpoint: str | None, source: str) -> tuple[int, bool] | None:
    """(byte offset to read from, whether the file was read to its end) from the
    spool's checkpoint; None when the spool belongs to another file."""
    if checkpoint is None:
        return 0, False
    path, offset, state = json.loads(checkpoint)
    if path != source:
        return None
    return int(offset), state == DONE


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.verbose else logging.ERROR,
        format="activity-client: %(levelname)s %(message)s",
    )
    return send(args)


if __name__ == "__main__":
    sys.exit(main())
