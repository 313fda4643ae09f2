"""JWTs and key files for the access-control tests, made per test with PyJWT and
cryptography: no key material is checked in."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# An HS256 secret of the minimum length.
SECRET = "test-secret-of-thirty-two-bytes!"
assert len(SECRET) == 32


def hs256(scope: str, secret: str = SECRET, **claims: Any) -> str:
    """A JWT signed with `secret`, for subject "tester", granting `scope` (space-separated
    scopes), valid 10 minutes unless `exp` says otherwise; a claim given as None is left
    out."""
    return sign(secret, "HS256", scope, **claims)


def sign(key: Any, algorithm: str, scope: str, **claims: Any) -> str:
    body: dict[str, Any] = {"sub": "tester", "scope": scope, "exp": int(time.time()) + 600}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm)


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, path: Path) -> str:
    """Write `private`'s public key to `path` as PEM; the path as text."""
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(path)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
