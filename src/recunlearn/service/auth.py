"""Bearer tokens with scopes. A token is `rcu_<id>_<secret>`: the id finds its row, and only a salted
scrypt hash of the secret is stored, so the plaintext exists once, when `create_token` returns it.
`authorize` is the FastAPI dependency: 401 without a valid token, 403 without the scope."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from typing import Iterable, Optional

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from sqlalchemy import select
from sqlalchemy.orm import Session

from .ledger import ApiToken, Ledger, utcnow

SCOPES = ("erasure:write", "erasure:read", "recs:read", "admin")   # admin grants every scope
PREFIX = "rcu"
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
KDF = "scrypt:" + ",".join(f"{k}={v}" for k, v in SCRYPT.items())


def _hash(secret: str, salt: bytes, kdf: str = KDF) -> bytes:
    name, _, params = kdf.partition(":")
    if name != "scrypt":
        raise ValueError(f"unknown key derivation {kdf!r}")
    cost = {k: int(v) for k, v in (p.split("=") for p in params.split(","))}
    return hashlib.scrypt(secret.encode(), salt=salt, dklen=32, maxmem=256 * cost["n"] * cost["r"], **cost)


def create_token(session: Session, name: str, scopes: Iterable[str]) -> str:
    """Store a new token and return its plaintext (shown once; only a salted hash is kept)."""
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        problem = f"unknown scope {unknown[0]!r}" if unknown else "give at least one scope"
        raise ValueError(f"{problem}; known scopes: {', '.join(SCOPES)}")
    token_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_bytes(16)
    session.add(ApiToken(id=token_id, name=name, salt=salt.hex(), secret_hash=_hash(secret, salt).hex(), kdf=KDF,
                         scopes=scopes, created_at=utcnow()))
    session.flush()
    return f"{PREFIX}_{token_id}_{secret}"


def revoke_token(session: Session, token_id: str) -> bool:
    """Revoke a token by its id (the part after `rcu_`); False if there is no such live token."""
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's id, name and scopes."""

    token_id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


class TokenVerifier:
    """Checks presented tokens against the ledger. The hash comparison is constant-time, and an unknown id
    costs the same scrypt work as a known one. Tokens verified once are remembered by their SHA-256 (a token
    is 256 random bits, so that digest identifies it without revealing it), so that scrypt runs once per
    token and process, not once per request; revocation is still read from the ledger on every request."""

    _DUMMY_SALT = bytes(16)
    MAX_REMEMBERED = 4096

    def __init__(self) -> None:
        self._verified: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def verify(self, session: Session, token: str) -> Optional[Principal]:
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            remembered = self._verified.get(digest)
        if remembered is not None:
            row = session.get(ApiToken, remembered)
            return _principal(row) if row is not None and row.revoked_at is None else None
        prefix, token_id, secret = (token.split("_", 2) + ["", ""])[:3]
        row = session.get(ApiToken, token_id) if prefix == PREFIX and token_id and secret else None
        salt = bytes.fromhex(row.salt) if row is not None else self._DUMMY_SALT
        expected = bytes.fromhex(row.secret_hash) if row is not None else bytes(32)
        matches = hmac.compare_digest(_hash(secret, salt, row.kdf if row is not None else KDF), expected)
        if row is None or not matches or row.revoked_at is not None:
            return None
        with self._lock:
            if len(self._verified) >= self.MAX_REMEMBERED:
                self._verified.clear()
            self._verified[digest] = row.id
        return _principal(row)


def _principal(row: ApiToken) -> Principal:
    return Principal(row.id, row.name, frozenset(row.scopes))


bearer = HTTPBearer(auto_error=False, description="a token from `recunlearn service token create`")
ANONYMOUS = Principal("", "anonymous (tokens not required)", frozenset(SCOPES))


def authorize(security_scopes: SecurityScopes, request: Request,
              credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> Principal:
    """The caller, if its bearer token is valid (401 otherwise) and has the route's scopes (403 otherwise)."""
    state = request.app.state
    if not state.settings.require_tokens:
        return ANONYMOUS
    if credentials is None:
        raise HTTPException(401, "missing bearer token: send the header 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    ledger: Ledger = state.ledger
    with ledger.reading() as session:
        principal = state.token_verifier.verify(session, credentials.credentials)
    if principal is None:
        raise HTTPException(401, "invalid or revoked bearer token", headers={"WWW-Authenticate": 'Bearer '
                            'error="invalid_token"'})
    missing = [scope for scope in security_scopes.scopes if not principal.allows(scope)]
    if missing:
        raise HTTPException(403, f"this token lacks the scope {missing[0]!r}",
                            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{missing[0]}"'})
    return principal


def require(*scopes: str):
    """A route dependency: a valid token with every one of `scopes` (none: any valid token)."""
    return Security(authorize, scopes=list(scopes))
