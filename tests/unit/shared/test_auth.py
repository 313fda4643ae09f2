"""The credential rules of shared/auth.py: key lists, JWT settings, verification and the
token cache. Tokens are made with PyJWT and keys with cryptography, here, per test."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared import auth
from shared.auth import (
    ERASE,
    READ,
    WRITE,
    Authenticator,
    AuthSettings,
    Forbidden,
    Unauthenticated,
    is_loopback,
    parse_api_keys,
    warn_if_open,
)
from shared.config import redacted
from shared.errors import ConfigError

SECRET = "s" * 32


def token(key: Any = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A signed JWT for "ann" with events:read, valid 5 minutes; a claim given as None is
    left out."""
    body: dict[str, Any] = {"sub": "ann", "scope": READ, "exp": int(time.time()) + 300}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm)


def pem(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_file(tmp_path: Path, data: bytes | str, name: str = "key.pem") -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def bearer(value: str) -> str:
    return f"Bearer {value}"


# --- key lists ---------------------------------------------------------------------


def test_a_plain_key_grants_every_scope_of_its_service() -> None:
    (key,) = parse_api_keys("PRODUCER_API_KEYS", ["k1"], (WRITE,))
    assert key.secret == b"k1" and key.scopes == {WRITE}


def test_words_after_the_key_limit_it_to_those_scopes() -> None:
    keys = parse_api_keys("CONSUMER_API_KEYS", ["reader events:read", "both"], (READ, ERASE))
    assert [(k.secret, k.scopes) for k in keys] == [(b"reader", {READ}), (b"both", {READ, ERASE})]
    (key,) = parse_api_keys("X", ["k  events:read   events:erase"], (READ,))
    assert key.scopes == {READ, ERASE}


@pytest.mark.parametrize(
    "value", ["a:b", "abc+/==", "k:events:read", "k+events:read", "key=events:read", "ké"]
)
def test_every_key_without_a_space_still_means_itself(value: str) -> None:
    (key,) = parse_api_keys("PRODUCER_API_KEYS", [value], (WRITE,))
    assert key.secret == value.encode() and key.scopes == {WRITE}


def test_an_unknown_scope_stops_the_start_without_printing_the_key() -> None:
    with pytest.raises(ConfigError, match=r"PRODUCER_API_KEYS: item 2 .*'events:wrte'") as err:
        parse_api_keys("PRODUCER_API_KEYS", ["k1", "secret-key events:wrte"], (WRITE,))
    assert "secret-key" not in str(err.value)


def test_a_key_listed_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="item 2 repeats"):
        parse_api_keys("K", ["k1", "k1 events:read"], (READ,))


def test_a_key_never_shows_in_its_repr() -> None:
    (key,) = parse_api_keys("K", ["hunter2-key"], (READ,))
    assert "hunter2" not in repr(key)


# --- settings ------------------------------------------------------------------------


def test_jwts_are_off_by_default() -> None:
    settings = AuthSettings.from_env({})
    assert not settings.jwt_enabled and settings.verification_keys() is None


def test_the_secret_is_hidden_when_printed() -> None:
    settings = AuthSettings.from_env({"AUTH_JWT_SECRET": SECRET})
    assert SECRET not in repr(settings)
    assert redacted(settings)["jwt_secret"] == "***"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AUTH_JWT_SECRET": "short"}, "at least 32 bytes"),
        ({"AUTH_JWT_AUDIENCE": "a"}, "no JWT key"),
        ({"AUTH_JWT_ISSUER": "i"}, "no JWT key"),
        ({"AUTH_JWT_PUBLIC_KEY_FILE": "/nonexistent/key.pem"}, "not a readable file"),
        ({"AUTH_JWT_LEEWAY_SECONDS": "301"}, "<= 300"),
        ({"AUTH_JWT_LEEWAY_SECONDS": "-1"}, ">= 0"),
        ({"AUTH_TOKEN_CACHE_SIZE": "nan"}, "integer"),
    ],
)
def test_bad_settings_stop_the_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AuthSettings.from_env(env)


def test_a_secret_and_a_key_file_together_are_refused(tmp_path: Path, ec_key: Any) -> None:
    path = key_file(tmp_path, pem(ec_key))
    with pytest.raises(ConfigError, match="not both"):
        AuthSettings.from_env({"AUTH_JWT_SECRET": SECRET, "AUTH_JWT_PUBLIC_KEY_FILE": path})


@pytest.mark.parametrize(
    "content",
    [
        "not a key",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        '{"keys": []}',
        '{"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}]}',
        '{"nokeys": 1}',
        "{",
    ],
)
def test_a_file_without_a_usable_public_key_is_refused(tmp_path: Path, content: str) -> None:
    with pytest.raises(ConfigError, match="AUTH_JWT_PUBLIC_KEY_FILE"):
        AuthSettings(jwt_public_key_file=key_file(tmp_path, content))


def test_a_short_rsa_key_is_refused(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigError, match="2048 bits"):
        AuthSettings(jwt_public_key_file=key_file(tmp_path, pem(weak)))


# --- verification --------------------------------------------------------------------


def hs(**settings: Any) -> Authenticator:
    return Authenticator(AuthSettings(jwt_secret=SECRET, **settings))


def refused(authenticator: Authenticator, value: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as err:
        authenticator.authenticate(bearer(value), None)
    return err.value


def test_a_good_hs256_token_lets_in_its_subject_with_its_scopes() -> None:
    found = hs().authenticate(bearer(token(scope=f"{READ} {ERASE} other")), None)
    assert found.subject == "jwt:ann"
    assert found.scopes == {READ, ERASE, "other"}
    found.require(READ)
    with pytest.raises(Forbidden, match=WRITE):
        found.require(WRITE)


def test_a_token_without_a_scope_claim_grants_nothing() -> None:
    found = hs().authenticate(bearer(token(scope=None)), None)
    with pytest.raises(Forbidden):
        found.require(READ)


def test_a_scope_claim_that_is_not_a_string_is_refused() -> None:
    assert refused(hs(), token(scope=[READ])).invalid_token


def test_an_expired_token_is_refused_past_the_leeway_only() -> None:
    past = int(time.time()) - 10
    assert "expired" in str(refused(hs(jwt_leeway_seconds=0), token(exp=past)))
    hs(jwt_leeway_seconds=30).authenticate(bearer(token(exp=past)), None)


def test_a_token_without_exp_is_refused() -> None:
    assert "exp" in str(refused(hs(), token(exp=None)))


def test_a_token_signed_with_another_secret_is_refused() -> None:
    error = refused(hs(), token(key="t" * 32))
    assert error.invalid_token and "Signature" in str(error)


def test_an_unsigned_token_is_refused() -> None:
    unsigned = jwt.encode({"sub": "x", "scope": READ, "exp": time.time() + 60}, None, "none")
    assert refused(hs(), unsigned).invalid_token


def test_audience_and_issuer_are_checked_when_set() -> None:
    checked = hs(jwt_audience="pipeline", jwt_issuer="https://idp")
    good = token(aud="pipeline", iss="https://idp")
    checked.authenticate(bearer(good), None)
    assert "audience" in str(refused(checked, token(aud="other", iss="https://idp"))).lower()
    assert "issuer" in str(refused(checked, token(aud="pipeline", iss="https://evil"))).lower()
    assert "aud" in str(refused(checked, token(iss="https://idp")))
    assert "iss" in str(refused(checked, token(aud="pipeline")))
    # Unset: a token meant for some audience is not taken for ours.
    assert "audience" in str(refused(hs(), token(aud="pipeline"))).lower()


def test_rs256_and_es256_with_a_pem_key(tmp_path: Path, rsa_key: Any, ec_key: Any) -> None:
    for private, algorithm in ((rsa_key, "RS256"), (ec_key, "ES256")):
        path = key_file(tmp_path, pem(private), f"{algorithm}.pem")
        verifier = Authenticator(AuthSettings(jwt_public_key_file=path))
        found = verifier.authenticate(bearer(token(private, algorithm)), None)
        assert found.scopes == {READ}
        # The public key used as an HMAC secret (algorithm confusion) must not pass.
        forged = token(SECRET, "HS256")
        assert refused(verifier, forged).invalid_token


def test_a_token_of_another_key_pair_is_refused(tmp_path: Path, rsa_key: Any) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = Authenticator(AuthSettings(jwt_public_key_file=key_file(tmp_path, pem(rsa_key))))
    assert refused(verifier, token(other, "RS256")).invalid_token


def test_a_jwks_file_picks_the_key_by_kid(tmp_path: Path, rsa_key: Any, ec_key: Any) -> None:
    def jwk(private: Any, kid: str, algorithm: str) -> dict[str, Any]:
        algo = jwt.get_algorithm_by_name(algorithm)
        found: dict[str, Any] = json.loads(algo.to_jwk(private.public_key()))
        return {**found, "kid": kid, "alg": algorithm}

    keys = {"keys": [jwk(rsa_key, "r1", "RS256"), jwk(ec_key, "e1", "ES256")]}
    path = key_file(tmp_path, json.dumps(keys), "jwks.json")
    verifier = Authenticator(AuthSettings(jwt_public_key_file=path))
    for private, kid, algorithm in ((rsa_key, "r1", "RS256"), (ec_key, "e1", "ES256")):
        signed = jwt.encode(
            {"sub": kid, "scope": READ, "exp": time.time() + 60},
            private,
            algorithm,
            headers={"kid": kid},
        )
        assert verifier.authenticate(bearer(signed), None).subject == f"jwt:{kid}"
    wrong_kid = jwt.encode(
        {"exp": time.time() + 60}, rsa_key, "RS256", headers={"kid": "e1"}
    )  # the EC key's kid on an RSA signature
    assert refused(verifier, wrong_kid).invalid_token
    no_kid = jwt.encode({"exp": time.time() + 60}, rsa_key, "RS256")
    assert "kid" in str(refused(verifier, no_kid))


@pytest.mark.parametrize("value", ["", "a.b.c", "x" * (auth.MAX_TOKEN_CHARS + 1), "é.é.é"])
def test_garbage_bearer_values_are_refused(value: str) -> None:
    with pytest.raises(Unauthenticated):
        hs().authenticate(bearer(value), None)


# --- credentials in headers ----------------------------------------------------------


def keyed(**settings: Any) -> Authenticator:
    keys = parse_api_keys("K", ["all", "reader events:read"], (READ, ERASE))
    return Authenticator(AuthSettings(**settings), keys)


def test_keys_are_taken_from_x_api_key_and_as_bearer_tokens() -> None:
    authenticator = keyed()
    assert authenticator.enabled
    assert authenticator.authenticate(None, "all").scopes == {READ, ERASE}
    assert authenticator.authenticate(bearer("reader"), None).scopes == {READ}
    assert authenticator.authenticate("bEaReR   reader  ", None).scopes == {READ}
    assert authenticator.authenticate(None, "all").subject == auth.key_subject("all")


def test_a_wrong_key_is_refused_even_with_a_good_bearer_beside_it() -> None:
    with pytest.raises(Unauthenticated, match="X-API-Key"):
        keyed().authenticate(bearer("all"), "wrong")


@pytest.mark.parametrize("header", [None, "", "Basic YTpi", "Bearer", "Bearer   ", "all"])
def test_missing_or_malformed_credentials_are_refused(header: str | None) -> None:
    with pytest.raises(Unauthenticated) as err:
        keyed().authenticate(header, None)
    assert not err.value.invalid_token


def test_a_wrong_bearer_key_is_an_invalid_token() -> None:
    assert refused(keyed(), "nope").invalid_token


def test_keys_and_jwts_work_side_by_side() -> None:
    both = keyed(jwt_secret=SECRET)
    assert both.authenticate(bearer("reader"), None).scopes == {READ}
    assert both.authenticate(bearer(token()), None).subject == "jwt:ann"


def test_nothing_configured_means_open() -> None:
    assert not Authenticator(AuthSettings()).enabled


# --- the cache -----------------------------------------------------------------------


class CountingDecode:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._decode = jwt.decode
        monkeypatch.setattr(auth.jwt, "decode", self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._decode(*args, **kwargs)


def test_a_verified_token_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    decode = CountingDecode(monkeypatch)
    authenticator = hs()
    value = token()
    first = authenticator.authenticate(bearer(value), None)
    assert authenticator.authenticate(bearer(value), None) is first
    assert decode.calls == 1


def test_a_cached_token_is_dropped_at_its_exp_plus_leeway(monkeypatch: pytest.MonkeyPatch) -> None:
    decode = CountingDecode(monkeypatch)
    now = [time.time()]
    authenticator = Authenticator(
        AuthSettings(jwt_secret=SECRET, jwt_leeway_seconds=5), clock=lambda: now[0]
    )
    exp = int(now[0]) + 60
    value = token(exp=exp)
    authenticator.authenticate(bearer(value), None)
    now[0] = exp + 4.9
    authenticator.authenticate(bearer(value), None)
    assert decode.calls == 1
    now[0] = exp + 5
    authenticator.authenticate(bearer(value), None)  # PyJWT's own clock still says valid
    assert decode.calls == 2


def test_the_cache_keeps_the_most_recently_used(monkeypatch: pytest.MonkeyPatch) -> None:
    decode = CountingDecode(monkeypatch)
    authenticator = hs(token_cache_size=2)
    a, b, c = (token(sub=name) for name in "abc")
    for value in (a, b, a, c):  # c pushes out b, the least recently used
        authenticator.authenticate(bearer(value), None)
    assert decode.calls == 3
    authenticator.authenticate(bearer(a), None)
    assert decode.calls == 3
    authenticator.authenticate(bearer(b), None)
    assert decode.calls == 4


def test_refused_tokens_are_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    decode = CountingDecode(monkeypatch)
    authenticator = hs()
    bad = token(key="t" * 32)
    for _ in range(2):
        refused(authenticator, bad)
    assert decode.calls == 2


def test_a_cache_of_zero_verifies_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    decode = CountingDecode(monkeypatch)
    authenticator = hs(token_cache_size=0)
    value = token()
    for _ in range(3):
        authenticator.authenticate(bearer(value), None)
    assert decode.calls == 3


# --- the warning ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_one_warning_when_open_beyond_loopback(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.auth")
    with caplog.at_level(logging.WARNING, logger="test.auth"):
        assert warn_if_open(log, "producer", "0.0.0.0", 8000, guarded=False)
        assert not warn_if_open(log, "producer", "0.0.0.0", 8000, guarded=True)
        assert not warn_if_open(log, "producer", "127.0.0.1", 8000, guarded=False)
    (record,) = caplog.records
    assert "NO ACCESS CONTROL" in record.getMessage()
    assert record.__dict__["bind"] == "0.0.0.0:8000"
