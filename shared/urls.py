"""The URL-shaped settings: checking them at start as their clients will read them, and
showing them in a log line without their passwords."""

from __future__ import annotations

import ipaddress
import re
from typing import NoReturn
from urllib.parse import urlsplit

from shared.errors import ConfigError

# What a hidden secret shows as, in a URL or a printed setting.
HIDDEN = "***"
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
REDIS_SCHEMES = ("redis", "rediss", "unix")


# The host of a URL's authority (a bracketed IPv6 address, or up to a `:`, `/` or `?`),
# and a port that ends the authority.
_URL_HOST = re.compile(r"\[[^\]/?]*\]|[^:/?]*")
_URL_PORT = re.compile(r":[0-9]+(?:[/?]|$)")


def redact_url(url: str) -> str:
    """`url` fit for a log line: the password of its user part (`scheme://user:pw@host`;
    all of the user part when it has no `user:`) and any `password=` query value become
    `***`. Parsed by hand rather than by urllib, which would leave an unescaped `/` or `#`
    of a password in the path, in plain sight: everything before the last `@` counts as
    the user part. Without an `@`, a `:` part of the host that is not a port number (a
    password whose `@host` was left out) is hidden too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return HIDDEN if "@" in url else url
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        if any(c in user for c in "/?#"):
            user = ""
        rest = f"{user}:{HIDDEN}@{rest}"
    else:
        host = _URL_HOST.match(rest)
        assert host is not None  # the pattern matches any text, if only its empty start
        after = rest[host.end() :]
        if after.startswith(":") and not _URL_PORT.match(after):
            rest = f"{host.group()}:{HIDDEN}"
    location, qmark, query = rest.partition("?")
    if qmark:
        items = [item.partition("=") for item in query.split("&")]
        query = "&".join(f"{k}{eq}{HIDDEN if 'password' in k.lower() else v}" for k, eq, v in items)
    return f"{scheme}://{location}{qmark}{query}"


# A host name or IPv4 address, or a bracketed IPv6 address; then an optional port.
_HOST_PORT = re.compile(
    r"(?P<host>[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
# A `%` that does not start an escape: a raw percent sign of a password.
# A host name as a listen address: dot-separated labels of letters, digits and hyphens.
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# What redis-py reads as the database: nothing, or a number.
_REDIS_DB_PATH = re.compile(r"/?[0-9]*")
_ENCODE_HINT = "percent-encode / ? # @ % in the user name and password (as %2F %3F %23 %40 %25)"


def _host_port_problem(text: str) -> str | None:
    """Why `text` is not `host[:port]` (port 1-65535), or None when it is."""
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        return "must be host or host:port"
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        return "has a port outside 1-65535"
    return None


def check_redis_url(name: str, url: str) -> None:
    """ConfigError naming the variable `name` unless redis-py reads `url` as written:
    `redis://` or `rediss://` with a host, an optional port (1-65535) and database
    number, or `unix://` with a socket path; any user name and password percent-encoded
    where they hold `/ ? # @ %` (a `:` in the password may stay as it is). The message
    shows `url` only as `redact_url` does: a malformed URL is most often a password with
    a raw `/` or `#`, and redis-py's own error would quote a piece of it."""

    def refuse(why: str) -> NoReturn:
        raise ConfigError(f"{name} {why}: {redact_url(url)}")

    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in REDIS_SCHEMES:
        refuse("must start with redis://, rediss:// (TLS) or unix://")
    if not url.isprintable() or " " in url:
        refuse("must not hold blanks or control characters; " + _ENCODE_HINT)
    if "#" in url:
        refuse("must not hold a raw '#'; " + _ENCODE_HINT)
    parts = urlsplit(url)
    userinfo, _, host_port = parts.netloc.rpartition("@")
    if "@" in userinfo or "@" in parts.path or "@" in parts.query:
        refuse("has a user part urllib would split; " + _ENCODE_HINT)
    if _LONE_PERCENT.search(userinfo):
        refuse("has a '%' that starts no escape; " + _ENCODE_HINT)
    if scheme.lower() == "unix":
        if host_port or not parts.path:
            refuse("must be unix://[user:password@]/path/to/redis.sock")
        return
    problem = _host_port_problem(host_port)
    if problem is not None:
        refuse(f"{problem} after the scheme (and any user:password@); {_ENCODE_HINT}")
    if not _REDIS_DB_PATH.fullmatch(parts.path):
        refuse("may have only a database number after the host, as in /0")


def check_bootstrap_servers(name: str, text: str) -> None:
    """ConfigError naming the variable `name` unless `text` is a comma-separated list of
    `host[:port]` (port 1-65535), each optionally after a security protocol and `://`,
    as librdkafka reads them; librdkafka would otherwise retry a malformed one forever."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ConfigError(f"{name} must name at least one host:port")
    for item in items:
        protocol, sep, host_port = item.rpartition("://")
        problem = _host_port_problem(host_port)
        if sep and protocol.upper() not in KAFKA_SECURITY_PROTOCOLS:
            problem = f"has an unknown protocol (one of {', '.join(KAFKA_SECURITY_PROTOCOLS)})"
        if problem is not None:
            raise ConfigError(f"{name} item {item!r} {problem}")


def check_bind_host(name: str, text: str) -> None:
    """ConfigError naming the variable `name` unless `text` is an address a server can
    listen on: an IPv4 or IPv6 address (brackets optional) or a host name, without a
    port, a scheme or anything else gunicorn would misread."""
    try:
        ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
        return
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(text):
        raise ConfigError(
            f"{name} must be an IP address or a host name (no port), got {text[:100]!r}"
        )


def bind_address(host: str, port: int) -> str:
    """`host:port` as gunicorn's `bind` reads it: an IPv6 address in brackets."""
    bare = host.removeprefix("[").removesuffix("]")
    return f"[{bare}]:{port}" if ":" in bare else f"{host}:{port}"
