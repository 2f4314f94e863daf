"""Signed receipts (service/receipts.py) and `recunlearn receipt ...` (receipt_cli.py, run on its own here)."""
from __future__ import annotations

import base64
import copy
import json
import math
import os
import struct
import subprocess
import sys
import threading

import pytest
from cli_helpers import assert_input_error
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from recunlearn.service import receipts
from recunlearn.service.receipt_cli import receipt_app
from recunlearn.service.receipts import ReceiptError, canonical_json, issue, loads, public_key_pem, verify

runner = CliRunner()

PAYLOAD = {
    "erasure_id": "0b7e7c2a-5f43-4c4e-9a57-2f1c3d9e8a10",
    "subject_request_id": "5d1c2b7e-0d7a-4c55-8d2e-6a8f3b9c1e22",
    "subject": {"kind": "pairs", "ids": [["123", "50"], ["123", "51"]]},
    "erased_edges": {"count": 2, "sha256": "ab" * 32},
    "received_at": "2025-01-02T03:04:05.678901+00:00",
    "completed_at": "2025-01-02T03:04:09.100000+00:00",
    "method": "unlearnrec",
    "model_before": {"version": 3, "sha256": "cd" * 32},
    "model_after": {"version": 4, "sha256": "ef" * 32},
    "evidence": {"request_edge_score_before": 0.8125, "request_edge_score_after": 0.0312,
                 "nonedge_score": 0.0297, "forget_rank_after": 0.48, "mia_auc_after": None,
                 "reference": "none yet"},
    "suppression": True,
}


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"


def leaf_paths(value, path=()):
    """Every path into a JSON value (objects and arrays included)."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from leaf_paths(child, path + (key,))


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + [0]
    if isinstance(value, dict):
        return {**value, "extra": 1}
    return 0   # None


def edited(receipt, path, edit):
    copied = copy.deepcopy(receipt)
    parent = copied
    for key in path[:-1]:
        parent = parent[key]
    edit(parent, path[-1])
    return copied


# --- signing and verifying ---------------------------------------------------------------------------

def test_issue_and_verify_round_trip(state):
    receipt = issue(state, PAYLOAD)
    assert {k: v for k, v in receipt.items() if k not in ("key_id", "signature")} == PAYLOAD
    assert "key_id" not in PAYLOAD and "signature" not in PAYLOAD   # the caller's payload is not changed
    assert len(base64.b64decode(receipt["signature"], validate=True)) == 64
    verify(receipt, public_key_pem(state))
    verify(loads(json.dumps(receipt, indent=2)), public_key_pem(state))   # survives a JSON round trip, any layout
    assert len(receipt["key_id"]) == 16 and int(receipt["key_id"], 16) >= 0


def test_any_change_to_any_field_fails_verification(state):
    receipt = issue(state, PAYLOAD)
    pem = public_key_pem(state)
    paths = [p for p in leaf_paths(receipt) if p and p[0] not in ("signature", "key_id")]
    assert len(paths) > 30   # nested objects and arrays included
    for path in paths:
        def change(parent, key):
            parent[key] = changed(parent[key])

        def drop(parent, key):
            del parent[key]

        for edit in (change, drop):
            with pytest.raises(ReceiptError, match="^signature invalid") as err:
                verify(edited(receipt, path, edit), pem)
            assert "\n" not in str(err.value)
    with pytest.raises(ReceiptError, match="^signature invalid"):
        verify({**receipt, "added": "field"}, pem)
    with pytest.raises(ReceiptError, match="^signature invalid"):   # a float's last bit
        verify(edited(receipt, ("evidence", "nonedge_score"), lambda p, k: p.__setitem__(k, math.nextafter(p[k], 1))),
               pem)


def test_a_receipt_checked_against_another_key_names_both_key_ids(tmp_path):
    receipt = issue(tmp_path / "a", PAYLOAD)
    other = public_key_pem(tmp_path / "b")
    other_id = receipts.key_id(serialization.load_pem_public_key(other))
    with pytest.raises(ReceiptError, match="^key id does not match") as err:
        verify(receipt, other)
    assert receipt["key_id"] in str(err.value) and other_id in str(err.value)
    with pytest.raises(ReceiptError, match="^signature invalid"):   # a forged key_id does not help
        verify({**receipt, "key_id": other_id}, other)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("signature"), "^receipt has no signature$"),
    (lambda r: r.update(signature="not base64!"), "^malformed receipt: the signature is not base64"),
    (lambda r: r.update(signature=base64.b64encode(b"x" * 63).decode()), "^malformed receipt: the signature"),
    (lambda r: r.update(signature=None), "^malformed receipt: the signature"),
    (lambda r: r.pop("key_id"), "^malformed receipt: no key_id"),
    (lambda r: r.update(evidence={"auc": float("nan")}), "^malformed receipt: receipt.evidence.auc is nan"),
    (lambda r: r.update(big=2**53), "^malformed receipt: receipt.big is an integer beyond"),
    (lambda r: r.update(when=object()), "^malformed receipt: receipt.when is a object"),
])
def test_malformed_receipts_are_named(state, edit, message):
    receipt = issue(state, PAYLOAD)
    edit(receipt)
    with pytest.raises(ReceiptError, match=message):
        verify(receipt, public_key_pem(state))


def test_malformed_input_and_keys(state):
    with pytest.raises(ReceiptError, match="^malformed receipt: not a JSON object"):
        verify(["a list"], public_key_pem(state))
    with pytest.raises(ReceiptError, match="^malformed public key"):
        verify(issue(state, PAYLOAD), b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ReceiptError, match="^malformed receipt: duplicate key 'a'"):
        loads('{"a": 1, "a": 2}')
    with pytest.raises(ReceiptError, match="^malformed receipt: NaN is not JSON"):
        loads('{"a": NaN}')
    with pytest.raises(ReceiptError, match="^malformed receipt: not JSON"):
        loads(b"{")
    with pytest.raises(ReceiptError, match="^malformed receipt: not a JSON object"):
        loads("[1]")
    with pytest.raises(ReceiptError, match="issue\\(\\) adds them"):
        issue(state, {**PAYLOAD, "signature": "mine"})
    with pytest.raises(ReceiptError, match="receipt.score is inf"):
        issue(state, {"score": float("inf")})


# --- the canonical encoding --------------------------------------------------------------------------

def test_canonical_encoding_sorts_keys_by_utf16_and_leaves_unicode_as_utf8():
    # RFC 8785 section 3.2.3: sorting by UTF-16 code units puts U+1F600 (a surrogate pair) before U+FB33
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001F600", "\u0080", "\u00f6"]
    encoded = canonical_json({k: i for i, k in enumerate(keys)}).decode("utf-8")
    assert encoded == '{"\\r":1,"1":3,"\x80":5,"\u00f6":6,"\u20ac":0,"\U0001F600":4,"\ufb33":2}'
    assert canonical_json({"b": [1, {"d": 1, "c": 2}], "a": "x"}) == canonical_json({"a": "x", "b": [1, {"c": 2, "d": 1}]})
    assert canonical_json("é\"\\\n\x01\x1f\x7f/") == '"é\\"\\\\\\n\\u0001\\u001f\x7f/"'.encode("utf-8")
    assert canonical_json([None, True, False, (1, 2), -0, 0]) == b"[null,true,false,[1,2],0,0]"
    with pytest.raises(ReceiptError, match="lone surrogate"):
        canonical_json("\ud800")
    with pytest.raises(ReceiptError, match="key that is not a string"):
        canonical_json({1: "a"})


# RFC 8785 appendix B: IEEE 754 doubles (as bit patterns) and their ECMAScript forms
RFC8785_NUMBERS = [
    ("0000000000000000", "0"), ("8000000000000000", "0"), ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"), ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"), ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"), ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"), ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"), ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"), ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"), ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"), ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize("bits, expected", RFC8785_NUMBERS)
def test_canonical_numbers_follow_ecmascript(bits, expected):
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert canonical_json(value) == expected.encode()
    assert float(expected) == value or value == 0   # and they read back as the same double


def test_canonical_floats_and_integers():
    assert canonical_json([1.0, 100.0, 0.5, 1e-7, 1e21, 1e20, 123.456, -2.5e-10]) == \
        b"[1,100,0.5,1e-7,1e+21,100000000000000000000,123.456,-2.5e-10]"
    assert canonical_json([2**53 - 1, -(2**53 - 1)]) == b"[9007199254740991,-9007199254740991]"


# RFC 8032 section 7.1, TEST 1: a fixed key, so the signature below is fixed too (Ed25519 is deterministic)
TEST_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
VECTOR_PAYLOAD = {"erasure_id": "0b7e7c2a-5f43-4c4e-9a57-2f1c3d9e8a10", "subject": {"kind": "user", "ids": ["u-42"]},
                  "evidence": {"mia_auc_after": 0.5123, "request_edge_score_after": 1e-7, "nonedge_score": -0.0,
                               "reference": "none yet"},
                  "erased_edges": {"count": 17, "sha256": "ab" * 32}, "reason": "Löschung \u20ac \U0001F600",
                  "suppression": True, "model_before": None}
VECTOR_BYTES = ('{"erased_edges":{"count":17,"sha256":"' + "ab" * 32 + '"},'
                '"erasure_id":"0b7e7c2a-5f43-4c4e-9a57-2f1c3d9e8a10",'
                '"evidence":{"mia_auc_after":0.5123,"nonedge_score":0,"reference":"none yet",'
                '"request_edge_score_after":1e-7},"key_id":"21fe31dfa154a261","model_before":null,'
                '"reason":"Löschung € 😀","subject":{"ids":["u-42"],"kind":"user"},"suppression":true}').encode("utf-8")
VECTOR_SIGNATURE = "AS5ic53Kickm3qgVzRTK+5EBFBZUvaiFTNVi9l8Iy6+XiChVxCm+Ekrd5J+7FUExobdHBmEZAd5Rgki4/R5ACw=="


def install_test_key(state):
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(TEST_SEED))
    (state / "keys").mkdir(parents=True)
    path = state / "keys" / receipts.KEY_FILE
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return key


def test_vector_fixed_key_gives_fixed_bytes_and_signature(state):
    key = install_test_key(state)
    receipt = issue(state, VECTOR_PAYLOAD)
    assert receipt["key_id"] == "21fe31dfa154a261"
    assert canonical_json({k: v for k, v in receipt.items() if k != "signature"}) == VECTOR_BYTES
    assert receipt["signature"] == VECTOR_SIGNATURE
    # what a verifier elsewhere does: Ed25519 over exactly these bytes, with nothing from this module
    key.public_key().verify(base64.b64decode(VECTOR_SIGNATURE), VECTOR_BYTES)
    verify(receipt, public_key_pem(state))


# --- the key file ------------------------------------------------------------------------------------

def test_key_file_is_private_and_reused_across_calls_and_processes(state):
    first = issue(state, PAYLOAD)
    path = state / "keys" / receipts.KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert (state / "keys").stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in (state / "keys").iterdir()) == [".lock", receipts.KEY_FILE]
    assert issue(state, PAYLOAD)["key_id"] == first["key_id"]
    other = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                            "from recunlearn.service.receipts import public_key_pem; "
                            "sys.stdout.buffer.write(public_key_pem(Path(sys.argv[1])))", str(state)],
                           capture_output=True, check=True)
    assert other.stdout == public_key_pem(state)
    verify(first, other.stdout)
    assert b"PRIVATE" not in public_key_pem(state)
    assert "PRIVATE" not in json.dumps(first) and path.read_text() not in json.dumps(first)


def test_a_key_file_others_can_read_is_refused(state):
    issue(state, PAYLOAD)
    path = state / "keys" / receipts.KEY_FILE
    path.chmod(0o644)
    with pytest.raises(ReceiptError, match="can be read by others.*chmod 600") as err:
        issue(state, PAYLOAD)
    assert "PRIVATE" not in str(err.value)


def test_a_damaged_key_file_is_named(state):
    (state / "keys").mkdir(parents=True)
    (state / "keys" / receipts.KEY_FILE).write_bytes(b"garbage")
    (state / "keys" / receipts.KEY_FILE).chmod(0o600)
    with pytest.raises(ReceiptError, match="is not an unencrypted Ed25519 private key"):
        public_key_pem(state)


def test_concurrent_first_use_creates_one_key(state, monkeypatch):
    real, writes = receipts.atomic_file, []

    def slow_atomic_file(path):   # widen the window between "no key yet" and "key written"
        writes.append(path)
        threading.Event().wait(0.2)
        return real(path)

    monkeypatch.setattr(receipts, "atomic_file", slow_atomic_file)
    barrier, results = threading.Barrier(4), []

    def use():
        barrier.wait()
        results.append(issue(state, PAYLOAD)["key_id"])

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert len(writes) == 1
    assert sorted(p.name for p in (state / "keys").iterdir()) == [".lock", receipts.KEY_FILE]


def test_public_key_without_create_does_not_make_a_key(state):
    with pytest.raises(ReceiptError, match="no receipt signing key in"):
        public_key_pem(state, create=False)
    assert not state.exists()


# --- the CLI -----------------------------------------------------------------------------------------

@pytest.fixture
def signed(tmp_path, state):
    receipt = issue(state, PAYLOAD)
    (tmp_path / "receipt.json").write_text(json.dumps(receipt, indent=2))
    (tmp_path / "key.pem").write_bytes(public_key_pem(state))
    return tmp_path, receipt


def test_cli_verify_prints_valid_for_a_good_receipt(signed, state):
    folder, receipt = signed
    for key_option in (["--key", str(folder / "key.pem")], ["--state-dir", str(state)]):
        result = runner.invoke(receipt_app, ["verify", str(folder / "receipt.json"), *key_option])
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"valid: erasure {PAYLOAD['erasure_id']} (pairs)")
        assert receipt["key_id"] in result.stdout and "model version 4" in result.stdout
        assert result.stdout.count("\n") == 1


def test_cli_verify_refuses_a_tampered_receipt(signed):
    folder, receipt = signed
    receipt["erased_edges"]["count"] = 1
    (folder / "receipt.json").write_text(json.dumps(receipt))
    result = runner.invoke(receipt_app, ["verify", str(folder / "receipt.json"), "--key", str(folder / "key.pem")])
    assert_input_error(result, "receipt.json", "signature invalid")
    assert "valid:" not in result.stdout


def test_cli_verify_against_another_key_names_the_key_id(signed, tmp_path):
    folder, receipt = signed
    result = runner.invoke(receipt_app, ["verify", str(folder / "receipt.json"), "--state-dir", str(tmp_path / "no")])
    assert_input_error(result, "no receipt signing key")
    (folder / "other.pem").write_bytes(public_key_pem(tmp_path / "other"))
    result = runner.invoke(receipt_app, ["verify", str(folder / "receipt.json"), "--key", str(folder / "other.pem")])
    assert_input_error(result, "key id does not match", receipt["key_id"])


@pytest.mark.parametrize("content, fragment", [
    (None, "no such receipt file"),
    ("{not json", "malformed receipt: not JSON"),
    ("", "malformed receipt: not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"erasure_id": "x"}', "receipt has no signature"),
])
def test_cli_verify_names_a_missing_or_malformed_file(signed, content, fragment):
    folder, _ = signed
    path = folder / "bad.json"
    if content is not None:
        path.write_text(content)
    result = runner.invoke(receipt_app, ["verify", str(path), "--key", str(folder / "key.pem")])
    assert_input_error(result, fragment)


def test_cli_verify_needs_exactly_one_key_source_and_a_readable_key(signed, state):
    folder, _ = signed
    receipt = str(folder / "receipt.json")
    assert_input_error(runner.invoke(receipt_app, ["verify", receipt]), "exactly one of --key")
    assert_input_error(runner.invoke(receipt_app, ["verify", receipt, "--key", str(folder / "key.pem"),
                                                   "--state-dir", str(state)]), "exactly one of --key")
    assert_input_error(runner.invoke(receipt_app, ["verify", receipt, "--key", str(folder / "none.pem")]),
                       "no such key file")
    assert_input_error(runner.invoke(receipt_app, ["verify", receipt, "--key", receipt]), "malformed public key")


def test_cli_public_key_prints_the_pem_and_never_creates_a_key(state, tmp_path):
    result = runner.invoke(receipt_app, ["public-key", "--state-dir", str(tmp_path / "empty")])
    assert_input_error(result, "no receipt signing key")
    assert not (tmp_path / "empty").exists()
    issue(state, PAYLOAD)
    result = runner.invoke(receipt_app, ["public-key", "--state-dir", str(state)])
    assert result.exit_code == 0 and result.stdout.encode() == public_key_pem(state)
    assert "PRIVATE" not in result.output
    os.chmod(state / "keys" / receipts.KEY_FILE, 0o640)
    assert_input_error(runner.invoke(receipt_app, ["public-key", "--state-dir", str(state)]), "chmod 600")
