"""URL and host:port settings are parsed at start: a malformed one is refused with a
message naming its variable and showing the URL only redacted."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from redis.connection import parse_url

from consumer_service.config import ConsumerSettings
from producer_service.config import ProducerSettings
from shared.config import CommonSettings
from shared.errors import ConfigError
from shared.urls import bind_address

# Letter pairs that appear in no message, so any piece of the password is easy to find.
PASSWORDS = [
    "Qz/Kx",
    "Qz?Kx",
    "Qz#Kx",
    "Qz@Kx",
    "Qz%Kx",
    "Qz/Kx?Vw#Jq@Zk:Yp%Xr",
    "Qz#Kx@Vw",
    "Qz%2Kx",
]


def pieces(password: str) -> list[str]:
    return re.findall(r"[A-Za-z]{2}", password)


def raw_url(password: str) -> str:
    return f"redis://app:{password}@127.0.0.1:6379/0"


def encoded_url(password: str) -> str:
    return f"redis://app:{quote(password, safe='')}@127.0.0.1:6379/0"


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("read", [ConsumerSettings.from_env, ProducerSettings.from_env])
def test_a_raw_password_is_refused_without_quoting_it(password: str, read: object) -> None:
    assert callable(read)
    with pytest.raises(ConfigError) as refused:
        read({"REDIS_URL": raw_url(password)})
    message = str(refused.value)
    assert message.startswith("REDIS_URL ")
    assert "redis://app:***@127.0.0.1:6379/0" in message
    for piece in pieces(password):
        assert piece not in message


@pytest.mark.parametrize("password", [*PASSWORDS, "Qz:Kx", "%25%2F", " lead and trail "])
def test_an_encoded_password_is_read_as_redis_py_reads_it(password: str) -> None:
    url = encoded_url(password)
    assert CommonSettings.from_env({"REDIS_URL": url}).redis_url == url
    assert ProducerSettings.from_env({"REDIS_URL": url}).rate_limit_redis_url == url
    assert parse_url(url)["password"] == password


def test_a_raw_colon_in_a_password_is_valid() -> None:
    # RFC 3986 allows a ':' in the user part; the first one ends the user name.
    url = raw_url("Qz:Kx")
    CommonSettings.from_env({"REDIS_URL": url})
    assert parse_url(url)["password"] == "Qz:Kx"


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://redis",
        "rediss://cache.example:6380/2?ssl_cert_reqs=required",
        "redis://[::1]:6379",
        "redis://:Qz%23Kx@redis:6379/0",
        "unix:///run/redis.sock?db=1",
        "unix://app:Qz%2FKx@/run/redis.sock",
    ],
)
def test_valid_redis_urls(url: str) -> None:
    assert CommonSettings(redis_url=url).redis_url == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://redis:6379", "must start with"),
        ("redis:6379", "must start with"),
        ("redis://", "host or host:port"),
        ("redis://:QzKx", "host or host:port"),
        ("redis://redis:0", "port outside"),
        ("redis://redis:65536/0", "port outside"),
        ("redis://redis:6379/db0", "database number"),
        ("redis://red is:6379", "blanks"),
        ("redis://redis:6379/0\n", "control"),
        ("unix://redis/run/redis.sock", "unix://"),
        ("unix://", "unix://"),
    ],
)
def test_malformed_redis_urls(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=f"^REDIS_URL .*{why}") as refused:
        CommonSettings(redis_url=url)
    assert "QzKx" not in str(refused.value)


@pytest.mark.parametrize(
    "servers",
    ["127.0.0.1:9092", "a:9092, b:9093", "broker", "[::1]:9092", "SASL_SSL://broker:9094"],
)
def test_valid_bootstrap_servers(servers: str) -> None:
    assert CommonSettings(kafka_bootstrap_servers=servers).kafka_bootstrap_servers == servers


@pytest.mark.parametrize(
    "servers", [",", "broker:http", "broker:0", "broker:65536", "a b:9092", "kafka://b:9092"]
)
def test_malformed_bootstrap_servers(servers: str) -> None:
    with pytest.raises(ConfigError, match=r"^KAFKA_BOOTSTRAP_SERVERS "):
        CommonSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": servers})


LISTEN_ADDRESSES = {
    "0.0.0.0": "0.0.0.0:8000",
    "127.0.0.1": "127.0.0.1:8000",
    "::": "[::]:8000",
    "[::1]": "[::1]:8000",
    "fe80::1": "[fe80::1]:8000",
    "localhost": "localhost:8000",
    "api-1.internal": "api-1.internal:8000",
}
NOT_LISTEN_ADDRESSES = [
    "1.2.3.4:80",  # a port belongs in PRODUCER_PORT / CONSUMER_PORT
    "http://0.0.0.0",
    "unix:/tmp/sock",
    "0.0 .0.0",
    "a b",
    "-leading.hyphen",
    "x" * 64,  # a label longer than 63
    ".".join(["a"] * 127) + ".bb",  # 255 characters: longer than a name may be
    "::g",
    "évent.local",
]


@pytest.mark.parametrize(("host", "bind"), LISTEN_ADDRESSES.items())
def test_a_listen_address_is_taken_and_bound_as_gunicorn_reads_it(host: str, bind: str) -> None:
    producer = ProducerSettings.from_env({"PRODUCER_BIND_HOST": host})
    consumer = ConsumerSettings.from_env({"CONSUMER_BIND_HOST": host})
    assert producer.bind_host == consumer.api.bind_host == host
    assert bind_address(host, 8000) == bind


@pytest.mark.parametrize("host", NOT_LISTEN_ADDRESSES)
def test_a_listen_address_with_a_port_or_a_scheme_is_refused_by_name(host: str) -> None:
    for name, read in (
        ("PRODUCER_BIND_HOST", ProducerSettings.from_env),
        ("CONSUMER_BIND_HOST", ConsumerSettings.from_env),
    ):
        with pytest.raises(ConfigError, match=f"^{name} must be an IP address or a host name"):
            read({name: host})
