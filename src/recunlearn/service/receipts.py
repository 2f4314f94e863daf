"""Signed erasure receipts: Ed25519 over a canonical JSON encoding that any language can reproduce.

A receipt is the payload the worker builds (see docs/service.md, "## Receipts") plus two fields:

- `key_id`: the first 16 hex digits (8 bytes) of the SHA-256 of the raw 32-byte Ed25519 public key;
- `signature`: standard base64 (RFC 4648 section 4, with padding) of the 64-byte Ed25519 signature (RFC 8032,
  pure Ed25519) over `canonical_json(receipt without "signature")`; `key_id` is signed with the rest.

The canonical encoding is the JSON Canonicalization Scheme (RFC 8785, JCS), which has implementations in many
languages: UTF-8, no whitespace; object keys sorted by their UTF-16 code units; strings escaped as JSON
requires and no more (`"`, `\\`, and control characters below U+0020: `\\b \\f \\n \\r \\t` by name, the
others as `\\u00xx` in lowercase hex; everything else, non-ASCII included, as itself); numbers as ECMAScript
prints a double (`1.0` is `1`, `1e-7` is `1e-7`, `1e21` is `1e+21`, `-0.0` is `0`). Values are JSON only:
objects with string keys, arrays, strings, booleans, null, integers within +-(2**53 - 1) and finite floats;
NaN, infinities, larger integers and any other type are refused.

The private key is `state_dir/keys/receipt-signing-key.pem` (PKCS#8 PEM, mode 0600, folder mode 0700), created
on first use under a lock, so concurrent first uses (threads or processes) create one key. It is never logged
or returned; a key file that others can read is refused.
"""
from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import json
import math
import os
from decimal import Decimal
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..storage import atomic_file

KEY_FILE = "receipt-signing-key.pem"
MAX_SAFE_INTEGER = 2**53 - 1


class ReceiptError(ValueError):
    """A receipt (or its key) is missing, malformed, signed by another key, or does not match its signature."""


# --- the canonical encoding (RFC 8785) ---------------------------------------------------------------

def _number(x: float) -> str:
    """ECMAScript's Number.prototype.toString of a finite double (shortest round-trip digits)."""
    if x == 0:
        return "0"
    sign, (digits, exponent) = ("-" if x < 0 else ""), _shortest(abs(x))
    k, n = len(digits), exponent + len(digits)   # x = 0.digits * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return sign + text


def _shortest(x: float) -> tuple[str, int]:
    """The shortest digits that round-trip to x (Python's repr) and their exponent: x = int(digits) * 10**exp."""
    t = Decimal(repr(x)).as_tuple()
    digits = "".join(map(str, t.digits)).lstrip("0")
    stripped = digits.rstrip("0")
    return stripped, t.exponent + len(digits) - len(stripped)


def _encode(value, where: str) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ReceiptError(f"malformed receipt: {where} is an integer beyond 2**53 - 1 (write it as a string)")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ReceiptError(f"malformed receipt: {where} is {value} (NaN and infinities are not JSON)")
        return _number(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ReceiptError(f"malformed receipt: {where} has a key that is not a string")
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(f"{_encode(k, where)}:{_encode(value[k], f'{where}.{k}')}" for k in keys) + "}"
    raise ReceiptError(f"malformed receipt: {where} is a {type(value).__name__}, not a JSON value")


def canonical_json(value) -> bytes:
    """The RFC 8785 (JCS) encoding of a JSON value, as UTF-8 bytes: the bytes a receipt's signature covers."""
    try:
        return _encode(value, "receipt").encode("utf-8")
    except UnicodeEncodeError:
        raise ReceiptError("malformed receipt: a string holds a lone surrogate (not valid Unicode)") from None


def loads(text: str | bytes) -> dict:
    """Parse a receipt strictly: one JSON object, no duplicate keys, no NaN or Infinity."""
    def pairs(items):
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ReceiptError(f"malformed receipt: duplicate key {sorted(k for k in keys if keys.count(k) > 1)[0]!r}")
        return dict(items)

    def constant(name):
        raise ReceiptError(f"malformed receipt: {name} is not JSON")

    try:
        receipt = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReceiptError(f"malformed receipt: not JSON ({err})") from None
    if not isinstance(receipt, dict):
        raise ReceiptError("malformed receipt: not a JSON object")
    return receipt


# --- keys ----------------------------------------------------------------------------------------------

def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _load_private(path: Path) -> Ed25519PrivateKey:
    if path.stat().st_mode & 0o077:
        raise ReceiptError(f"{path} can be read by others (mode {path.stat().st_mode & 0o777:o}); "
                           f"run chmod 600 {path} (and consider replacing the key)")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise ReceiptError(f"{path} is not an unencrypted Ed25519 private key in PEM")
    return key


def _signing_key(state_dir: Path, create: bool = True) -> Ed25519PrivateKey:
    keys = Path(state_dir) / "keys"
    path = keys / KEY_FILE
    if path.exists():
        return _load_private(path)
    if not create:
        raise ReceiptError(f"no receipt signing key in {keys} (the service creates it when it signs its first "
                           "receipt)")
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(keys / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)   # one open file each: blocks other threads and other processes alike
        if not path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            with atomic_file(path) as tmp:
                with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
                    fh.write(pem)
        return _load_private(path)
    finally:
        os.close(fd)


def public_key_pem(state_dir: Path, *, create: bool = True) -> bytes:
    """The service's public verification key (SubjectPublicKeyInfo PEM); the key pair is made on first use
    unless `create=False` (then a missing key is a ReceiptError)."""
    return _signing_key(state_dir, create).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- signing and verifying ---------------------------------------------------------------------------

def issue(state_dir: Path, payload: dict) -> dict:
    """The signed receipt: `payload` plus `key_id` and `signature` (the payload itself is not changed)."""
    if "signature" in payload or "key_id" in payload:
        raise ReceiptError("the payload already has a signature or key_id field; issue() adds them")
    key = _signing_key(state_dir)
    receipt = {**payload, "key_id": key_id(key.public_key())}
    receipt["signature"] = base64.b64encode(key.sign(canonical_json(receipt))).decode("ascii")
    return receipt


def verify(receipt: dict, public_key_pem: bytes) -> None:
    """Return if `receipt` was signed by the key in `public_key_pem` and not changed since; else ReceiptError."""
    if not isinstance(receipt, dict):
        raise ReceiptError("malformed receipt: not a JSON object")
    if "signature" not in receipt:
        raise ReceiptError("receipt has no signature")
    try:
        signature = base64.b64decode(receipt["signature"], validate=True)
    except (TypeError, ValueError, binascii.Error):
        signature = b""
    if len(signature) != 64:
        raise ReceiptError("malformed receipt: the signature is not base64 of 64 bytes")
    if not isinstance(receipt.get("key_id"), str):
        raise ReceiptError("malformed receipt: no key_id")
    try:
        public_key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError):
        public_key = None
    if not isinstance(public_key, Ed25519PublicKey):
        raise ReceiptError("malformed public key: not an Ed25519 public key in PEM")
    expected = key_id(public_key)
    if not hmac.compare_digest(receipt["key_id"].encode("utf-8", "replace"), expected.encode()):
        raise ReceiptError(f"key id does not match: the receipt names key {receipt['key_id']!r}, the given key is "
                           f"{expected!r}")
    signed = canonical_json({k: v for k, v in receipt.items() if k != "signature"})
    try:
        public_key.verify(signature, signed)
    except InvalidSignature:
        raise ReceiptError(f"signature invalid: the receipt was changed after key {expected} signed it") from None
