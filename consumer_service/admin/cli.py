"""`pipeline-admin`: operator tools for the dead-letter topic and the store.

    pipeline-admin dlq summary                       counts by reason and source partition
    pipeline-admin dlq show [--reason R] [--limit N] the records, their dlq.* headers, values
    pipeline-admin dlq replay [--reason R] [--since T] [--dry-run]
    pipeline-admin user erase USER_ID                delete the user's stored events
                                                     (consumer_service/admin/users.py)
    pipeline-admin keys rewrap                       wrap every payload data key with the
                                                     current master key (admin/keys.py)

Settings come from the services' environment (KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC, the
KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_CA_LOCATION of a secured cluster, and
CONSUMER_MAX_MESSAGE_BYTES for the replay's check); `--bootstrap` and `--topic` override
them. The DLQ is `<topic>.dlq`.

Reading never disturbs the pipeline (consumer_service/admin/scan.py says how), and the
replay's contract is in consumer_service/admin/replay.py: a record the consumer's rules
still refuse stays in the DLQ, one that passes goes back to the main topic once per run.

Exit status: 0 done; 1 Kafka or Redis did not answer, a topic is missing, or the broker did not
acknowledge every replayed record (running the replay again is safe); 2 bad arguments or
settings, including credentials the broker refused; 3 replay finished, but some selected
records still fail (or reached --max-attempts) and were left in the DLQ.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TextIO

import redis

from consumer_service.admin.kafka import AdminError
from consumer_service.admin.keys import rewrap
from consumer_service.admin.render import (
    Progress,
    print_record,
    print_replay,
    print_summary,
    summarize,
)
from consumer_service.admin.replay import (
    DEFAULT_MAX_ATTEMPTS,
    Republisher,
    replay,
    require_topic,
)
from consumer_service.admin.scan import DlqScan
from consumer_service.admin.users import check_user_id, erase_user
from consumer_service.config import ConsumerSettings
from shared.config import CommonSettings
from shared.errors import ConfigError, Unavailable
from shared.logs import configure_logging

EXIT_OK = 0
EXIT_KAFKA = 1
EXIT_USAGE = 2
EXIT_STILL_FAILING = 3

_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> int:
    """`--since` to epoch milliseconds: an ISO 8601 date-time (without an offset it is
    UTC), a date, or a duration ago such as `90m`, `6h`, `2d`. Raises ValueError."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        now = now or datetime.now(UTC)
        then = now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    else:
        try:
            then = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"--since must be an ISO 8601 time (2026-11-24T04:00:00Z) or a duration "
                f"ago (90m, 6h, 2d), got {text!r}"
            ) from None
        if then.tzinfo is None:
            then = then.replace(tzinfo=UTC)
    return int(then.timestamp() * 1000)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline-admin",
        description="Operator tools for the user-activity pipeline.",
        epilog="Exit status: 0 done; 1 Kafka or Redis error, or missing topic; 2 bad arguments or "
        "settings; 3 replay left records that still fail in the DLQ.",
    )
    commands = parser.add_subparsers(dest="area", required=True)
    dlq = commands.add_parser("dlq", help="inspect and replay the dead-letter topic")
    actions = dlq.add_subparsers(dest="action", required=True)
    _add_common(actions.add_parser("summary", help="counts by reason and by source partition"))
    _add_show(actions.add_parser("show", help="the records, their dlq.* headers and values"))
    _add_replay(actions.add_parser("replay", help="re-publish records the consumer now accepts"))
    user = commands.add_parser("user", help="a user's stored events")
    user_actions = user.add_subparsers(dest="action", required=True)
    erase = user_actions.add_parser("erase", help="delete every stored event of one user")
    erase.add_argument("user_id", metavar="USER_ID")
    keys = commands.add_parser("keys", help="the payload data keys")
    keys.add_subparsers(dest="action", required=True).add_parser(
        "rewrap", help="wrap every data key with the current master key"
    )
    return parser


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)")
    p.add_argument("--topic", help="the main topic (KAFKA_TOPIC); the DLQ is <topic>.dlq")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for Kafka before giving up (default 30)",
    )


def _add_show(show: argparse.ArgumentParser) -> None:
    _add_common(show)
    show.add_argument("--reason", help="only records dead-lettered for this reason")
    show.add_argument("--since", help="only records dead-lettered since (ISO 8601, or 6h, 2d)")
    show.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    show.add_argument(
        "--value-bytes", type=int, default=300, help="show this much of each value (default 300)"
    )


def _add_replay(rep: argparse.ArgumentParser) -> None:
    _add_common(rep)
    rep.add_argument("--reason", help="only records dead-lettered for this reason")
    rep.add_argument("--since", help="only records dead-lettered since (ISO 8601, or 6h, 2d)")
    rep.add_argument("--dry-run", action="store_true", help="check and count, publish nothing")
    rep.add_argument(
        "--max-attempts",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        help="leave records already replayed this often (default %(default)s)",
    )


@dataclasses.dataclass(frozen=True)
class _Run:
    """One command's arguments and settings, checked, and where it writes."""

    args: argparse.Namespace
    settings: ConsumerSettings
    connection: CommonSettings
    topic: str
    out: TextIO
    err: TextIO

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one command; returns the exit status (see the module docstring)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed why
        return int(exc.code or 0) and EXIT_USAGE
    try:
        settings = ConsumerSettings.from_env(env)
        since = parse_since(args.since) if getattr(args, "since", None) else None
        for name in ("limit", "value_bytes", "max_attempts"):
            if getattr(args, name, 1) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        connection = settings.common
        if getattr(args, "bootstrap", None):  # checked as KAFKA_BOOTSTRAP_SERVERS is
            connection = dataclasses.replace(connection, kafka_bootstrap_servers=args.bootstrap)
        if args.area == "user":
            check_user_id(args.user_id)
    except (ConfigError, ValueError) as exc:
        print(f"pipeline-admin: {exc}", file=err)
        return EXIT_USAGE
    configure_logging("WARNING", service="pipeline-admin")
    if args.area == "keys":
        try:
            rewrap(settings, out)
        except ConfigError as exc:
            print(f"pipeline-admin: {exc}", file=err)
            return EXIT_USAGE
        except (Unavailable, redis.RedisError) as exc:
            print(f"pipeline-admin: Redis did not answer: {exc}", file=err)
            return EXIT_KAFKA
        return EXIT_OK
    if args.area == "user":
        try:
            erase_user(settings, args.user_id, out)
        except Unavailable as exc:
            print(f"pipeline-admin: {exc}", file=err)
            return EXIT_KAFKA
        return EXIT_OK
    topic = args.topic or settings.common.kafka_topic
    run = _Run(args, settings, connection, topic, out, err)
    try:
        with DlqScan(connection, run.dlq_topic, since_ms=since, timeout=args.timeout) as scan:
            return _COMMANDS[args.action](run, scan)
    except (AdminError, Unavailable) as exc:
        print(f"pipeline-admin: {exc}", file=err)
        return EXIT_KAFKA
    except ConfigError as exc:  # the broker refused the credentials
        print(f"pipeline-admin: {exc}", file=err)
        return EXIT_USAGE


def _summary(run: _Run, scan: DlqScan) -> int:
    progress = Progress(scan.total, "reading", run.err)
    summary = summarize(iter(scan), progress)
    progress.close()
    print_summary(summary, run.dlq_topic, run.out)
    return EXIT_OK


def _show(run: _Run, scan: DlqScan) -> int:
    args = run.args
    shown = 0
    for rec in scan:
        if args.reason is not None and rec.reason != args.reason:
            continue
        print_record(rec, args.value_bytes, run.out)
        shown += 1
        if shown >= args.limit:
            break
    print(f"{shown} record(s) shown from {run.dlq_topic}", file=run.out)
    return EXIT_OK


def _replay(run: _Run, scan: DlqScan) -> int:
    args = run.args
    require_topic(run.connection, run.topic, args.timeout)
    publisher = None if args.dry_run else Republisher(run.connection, run.topic, args.timeout)
    progress = Progress(scan.total, "replaying", run.err)
    report = replay(
        scan,
        reason=args.reason,
        max_bytes=run.settings.max_message_bytes,
        event_types=run.settings.event_types,
        max_attempts=args.max_attempts,
        publisher=publisher,
        advance=progress.advance,
    )
    progress.close()
    print_replay(report, run.topic, args.dry_run, run.out)
    if report.unacknowledged:
        return EXIT_KAFKA
    return EXIT_STILL_FAILING if report.left_in_dlq else EXIT_OK


_COMMANDS = {"summary": _summary, "show": _show, "replay": _replay}


if __name__ == "__main__":
    sys.exit(main())
