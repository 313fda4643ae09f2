"""Who may call the services: bearer JWTs and API keys, each granting scopes.

Both services use this one implementation: `AuthSettings` (the `AUTH_*` variables),
`parse_api_keys` (a service's key list), and `Authenticator`, which turns the headers of a
request into a `Principal` or raises `Unauthenticated` (401), and `Principal.require`,
which raises `Forbidden` (403). The Flask side (a `before_request` guard, the JSON answers)
is in `shared.web`; nothing here imports Flask.

Scopes:

* `events:write`: the producer's intake;
* `events:read`: the read API, `/stats`, the dashboard's data;
* `events:erase`: erasing a user's events.

A JWT carries them in the standard `scope` claim, space-separated. An API key is declared
in a service's key list as `KEY` (every scope of that service, as keys always meant) or
`KEY SCOPE [SCOPE ...]` (only those): words separated by spaces, as in the `scope` claim.
No key alphabet in use (hex, base64, base64url) has a space, so a space cannot be read as
part of a key; a key list item whose later words are not scopes stops the service at start
instead of silently becoming a different key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from shared.config import Environ, read_settings, redacted, setting
from shared.errors import ConfigError, PipelineError

WRITE = "events:write"
READ = "events:read"
ERASE = "events:erase"
SCOPES = (WRITE, READ, ERASE)

# HS256 keys shorter than the hash (RFC 7518 3.2) can be brute-forced offline from one token.
MIN_SECRET_BYTES = 32
# A bearer value longer than this is refused before any work: the token cache keys on the
# whole string, and no sane JWT comes near it.
MAX_TOKEN_CHARS = 8192
# EC curves and the one JWS algorithm each is used with.
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "ES512"})


def _readable_file(name: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{name} {path!r} is not a readable file: {exc.strerror}") from None


@dataclass(frozen=True)
class AuthSettings:
    """How bearer JWTs are verified; both services read the same variables. JWTs are
    accepted when AUTH_JWT_SECRET (HS256) or AUTH_JWT_PUBLIC_KEY_FILE (a PEM public key,
    RSA for RS256 or EC P-256 for ES256, or a JWKS file) is set; not both. The key is
    loaded when the object is built, so a bad one stops the service at start. `repr()`
    hides the secret."""

    jwt_secret: str | None = setting(
        None,
        "AUTH_JWT_SECRET",
        f"HS256 secret bearer JWTs are verified with, at least {MIN_SECRET_BYTES} bytes; "
        "taken as is (not stripped); shown as `***` in logs",
        strip=False,
    )
    jwt_public_key_file: str | None = setting(
        None,
        "AUTH_JWT_PUBLIC_KEY_FILE",
        'a PEM public key (RSA: RS256; EC P-256: ES256) or a JWKS file (`{"keys": [...]}`, '
        "chosen by the token's `kid`) bearer JWTs are verified with; not with "
        "`AUTH_JWT_SECRET`",
        check=_readable_file,
    )
    jwt_audience: str | None = setting(
        None,
        "AUTH_JWT_AUDIENCE",
        "when set, a JWT's `aud` must name it; unset, a JWT carrying an `aud` is refused",
    )
    jwt_issuer: str | None = setting(
        None, "AUTH_JWT_ISSUER", "when set, a JWT's `iss` must be exactly this"
    )
    jwt_leeway_seconds: int = setting(
        30,
        "AUTH_JWT_LEEWAY_SECONDS",
        "clock skew allowed on a JWT's `exp` (required) and `nbf`",
        lo=0,
        hi=300,
    )
    token_cache_size: int = setting(
        4096,
        "AUTH_TOKEN_CACHE_SIZE",
        "verified JWTs each process remembers (least recently used go first), each until "
        "its `exp`; 0: verify every request",
        lo=0,
        hi=1_000_000,
    )

    def __post_init__(self) -> None:
        if self.jwt_secret is not None and self.jwt_public_key_file is not None:
            raise ConfigError("set AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY_FILE, not both")
        if not self.jwt_enabled and (self.jwt_audience or self.jwt_issuer):
            raise ConfigError(
                "AUTH_JWT_AUDIENCE or AUTH_JWT_ISSUER set, but no JWT key: set "
                "AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY_FILE"
            )
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"AUTH_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        self.verification_keys()

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in redacted(self).items())
        return f"{type(self).__name__}({shown})"

    @property
    def jwt_enabled(self) -> bool:
        return self.jwt_secret is not None or self.jwt_public_key_file is not None

    def verification_keys(self) -> VerificationKeys | None:
        """The keys JWTs are checked against (None without JWTs); ConfigError naming the
        variable when the file holds no usable key."""
        if self.jwt_secret is not None:
            return VerificationKeys({None: (self.jwt_secret.encode(), ("HS256",))})
        if self.jwt_public_key_file is None:
            return None
        name = "AUTH_JWT_PUBLIC_KEY_FILE"
        with open(self.jwt_public_key_file, "rb") as file:
            data = file.read()
        if data.lstrip().startswith(b"{"):
            return _jwks(name, data)
        try:
            key = load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{name} is not a PEM public key: {exc}") from None
        return VerificationKeys({None: (key, (_algorithm(name, key),))})

    @classmethod
    def from_env(cls, env: Environ | None = None) -> AuthSettings:
        return read_settings(cls, env)


def _algorithm(name: str, key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ConfigError(f"{name}: an RSA key needs at least 2048 bits, got {key.key_size}")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        return _EC_ALGORITHMS[key.curve.name]
    raise ConfigError(f"{name} must hold an RSA or EC (P-256, P-384, P-521) public key")


def _jwks(name: str, data: bytes) -> VerificationKeys:
    try:
        keys = json.loads(data)["keys"]
        if not isinstance(keys, list) or not keys:
            raise ValueError("`keys` must be a non-empty list")
        found: dict[str | None, tuple[Any, tuple[str, ...]]] = {}
        for item in keys:
            jwk = jwt.PyJWK(item)
            # A symmetric or unsigned key in a public key set would let anyone who reads
            # the file (it is public by nature) sign tokens.
            if jwk.algorithm_name not in _ASYMMETRIC:
                raise ValueError(f"key {jwk.key_id!r}: {jwk.algorithm_name} is not allowed")
            found[jwk.key_id] = (jwk.key, (jwk.algorithm_name,))
    except (ValueError, KeyError, TypeError, jwt.PyJWKError) as exc:
        raise ConfigError(f"{name} is not a usable JWKS file: {exc}") from None
    if len(found) > 1 and None in found:
        raise ConfigError(f"{name}: with several keys, each needs a `kid`")
    return VerificationKeys(found)


@dataclass(frozen=True)
class VerificationKeys:
    """Keys by `kid` (None: the one key, whatever the token's `kid`), each with the
    algorithms it may verify."""

    by_kid: dict[str | None, tuple[Any, tuple[str, ...]]]

    def for_token(self, token: str) -> tuple[Any, tuple[str, ...]]:
        """The key and algorithms for `token`; `jwt.InvalidTokenError` when none fits."""
        if None in self.by_kid:
            return self.by_kid[None]
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str) or kid not in self.by_kid:
            raise jwt.InvalidKeyError("no key of the configured key set has this token's kid")
        return self.by_kid[kid]


@dataclass(frozen=True)
class ApiKey:
    """One entry of a key list: the key's bytes, the scopes it grants and the name the
    quota and logs know it by (a hash: never the key)."""

    secret: bytes
    scopes: frozenset[str]
    subject: str

    def __repr__(self) -> str:
        return f"ApiKey(subject={self.subject!r}, scopes={sorted(self.scopes)!r})"


def key_subject(key: str) -> str:
    """The name of API key `key` in quotas and logs."""
    return "key:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def parse_api_keys(
    variable: str, items: Iterable[str], service_scopes: Iterable[str]
) -> tuple[ApiKey, ...]:
    """The keys of key list `variable` (its comma-separated items), each `KEY` (granting
    `service_scopes`) or `KEY SCOPE...`. ConfigError naming the variable and the item's
    position (never the key) for an unknown scope or a key listed twice."""
    keys: list[ApiKey] = []
    seen: set[str] = set()
    for position, item in enumerate(items, start=1):
        key, *scopes = item.split()
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise ConfigError(
                f"{variable}: item {position} is `KEY SCOPE...`, and {unknown[0]!r} is not a "
                f"scope (one of {', '.join(SCOPES)}); keys have no spaces"
            )
        if key in seen:
            raise ConfigError(f"{variable}: item {position} repeats an earlier key")
        seen.add(key)
        granted = frozenset(scopes) if scopes else frozenset(service_scopes)
        keys.append(ApiKey(key.encode("utf-8", "surrogateescape"), granted, key_subject(key)))
    return tuple(keys)


@dataclass(frozen=True)
class Principal:
    """Who a request was let in as: `subject` (`jwt:<sub>` or `key:<hash>`) and the
    scopes its credential grants."""

    subject: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        """Return when the credential grants `scope`; raise `Forbidden` otherwise."""
        if scope not in self.scopes:
            raise Forbidden(scope)


class Unauthenticated(PipelineError):
    """No credential, or one that is not valid: 401. `invalid_token` says a bearer token
    was presented and refused (RFC 6750's `error="invalid_token"`)."""

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token


class Forbidden(PipelineError):
    """A valid credential without the scope the request needs: 403."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"The credential does not grant the {scope} scope.")
        self.scope = scope


class _TokenCache:
    """Verified tokens, least recently used first out, each dropped once past `until`.
    Thread-safe; every operation is O(1) under one lock held for no I/O."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str, now: float) -> Principal | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if now >= entry[1]:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry[0]

    def put(self, token: str, principal: Principal, until: float) -> None:
        if self._size == 0:
            return
        with self._lock:
            self._entries[token] = (principal, until)
            self._entries.move_to_end(token)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


class Authenticator:
    """Checks a request's credential against the API keys and JWT settings of one app.

    `enabled` is False when neither keys nor a JWT key are configured: then the service
    is open and nothing calls `authenticate`. Safe to share between threads."""

    def __init__(
        self,
        settings: AuthSettings,
        api_keys: Sequence[ApiKey] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._keys = tuple(api_keys)
        self._jwt = settings.verification_keys()
        self._cache = _TokenCache(settings.token_cache_size)
        self._clock = clock
        self.enabled = bool(self._keys) or self._jwt is not None

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        """The principal of a request with these `Authorization` and `X-API-Key` header
        values (None: absent). An `X-API-Key` must be a key; a bearer value may be a key
        or, with JWTs configured, a JWT. Raises `Unauthenticated`; never blocks."""
        if api_key is not None:
            found = self._match_key(api_key)
            if found is None:
                raise Unauthenticated("The X-API-Key is not a valid key.")
            return found
        if authorization is None:
            raise Unauthenticated("Credentials are required: a bearer token or an X-API-Key.")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("The Authorization header must be `Bearer <token>`.")
        found = self._match_key(credential)
        if found is not None:
            return found
        if self._jwt is None:
            raise Unauthenticated("The bearer token is not a valid key.", invalid_token=True)
        return self._verify(credential, self._jwt)

    def _match_key(self, given: str) -> Principal | None:
        # Compared with every key, so the time taken does not reveal which one matched.
        candidate = given.encode("utf-8", "surrogateescape")
        matched: ApiKey | None = None
        for key in self._keys:
            if hmac.compare_digest(candidate, key.secret):
                matched = key
        return None if matched is None else Principal(matched.subject, matched.scopes)

    def _verify(self, token: str, keys: VerificationKeys) -> Principal:
        now = self._clock()
        cached = self._cache.get(token, now)
        if cached is not None:
            return cached
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("The bearer token is too long.", invalid_token=True)
        s = self._settings
        try:
            key, algorithms = keys.for_token(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway_seconds,
                options={"require": ["exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The token has expired.", invalid_token=True) from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"The token is not valid: {exc}.", invalid_token=True) from None
        principal = _principal(claims, token)
        # The same leeway decode allowed: a cached token is refused when decode would.
        until = float(claims["exp"]) + s.jwt_leeway_seconds
        self._cache.put(token, principal, until)
        return principal


def _principal(claims: dict[str, Any], token: str) -> Principal:
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise Unauthenticated(
            "The token's scope claim must be a space-separated string.", invalid_token=True
        )
    sub = claims.get("sub")
    subject = f"jwt:{sub}" if isinstance(sub, str) and sub else key_subject(token)
    return Principal(subject, frozenset(scope.split()))


def is_loopback(host: str) -> bool:
    """True when a server bound to `host` is reachable from this machine only:
    `localhost` or a loopback address (`127.0.0.0/8`, `::1`). A name is not resolved:
    any other name counts as reachable from elsewhere."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_open(log: logging.Logger, service: str, host: str, port: int, guarded: bool) -> bool:
    """Log one WARNING when `service` listens on a non-loopback `host` with no credential
    configured (`guarded` False); True when it did. Call once per service start."""
    if guarded or is_loopback(host):
        return False
    log.warning(
        "NO ACCESS CONTROL: the API listens beyond this machine and no credential is "
        "configured, so anyone who reaches the port may use it",
        extra={
            "service": service,
            "bind": f"{host}:{port}",
            "fix": "set API keys, AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY_FILE "
            "(docs/security.md), or bind to 127.0.0.1",
        },
    )
    return True
