"""Tokens: only a salted hash is stored, verification checks the secret, the id and revocation."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from recunlearn.service.auth import TokenVerifier, create_token, list_tokens, revoke_token
from recunlearn.service.ledger import ApiToken


def test_only_a_salted_hash_of_the_token_is_stored(ledger):
    with ledger.writing() as session:
        first = create_token(session, "ci", ["erasure:write", "erasure:read", "erasure:write"])
        second = create_token(session, "ci", ["erasure:write"])
    prefix, token_id, secret = first.split("_", 2)
    assert prefix == "rcu" and len(secret) >= 40
    with ledger.reading() as session:
        stored = session.scalars(select(ApiToken).order_by(ApiToken.created_at)).all()
    assert [r.scopes for r in stored] == [["erasure:read", "erasure:write"], ["erasure:write"]]
    assert stored[0].salt != stored[1].salt and stored[0].kdf.startswith("scrypt:")
    dump = repr([(r.id, r.name, r.salt, r.secret_hash, r.kdf) for r in stored])
    assert secret not in dump and second.split("_", 2)[2] not in dump


def test_verification_checks_secret_id_and_revocation(ledger):
    with ledger.writing() as session:
        token = create_token(session, "svc", ["erasure:read"])
    verifier = TokenVerifier()
    token_id = token.split("_")[1]
    with ledger.reading() as session:
        principal = verifier.verify(session, token)
        assert principal.token_id == token_id and principal.allows("erasure:read")
        assert not principal.allows("erasure:write")
        for forged in (token[:-2] + "zz", f"rcu_{'0' * 16}_{token.split('_', 2)[2]}", "rcu__", "", "nonsense",
                       token.replace("rcu_", "xyz_")):
            assert verifier.verify(session, forged) is None, forged
    with ledger.writing() as session:
        assert revoke_token(session, token_id) and not revoke_token(session, token_id)
    with ledger.reading() as session:
        assert verifier.verify(session, token) is None
        assert TokenVerifier().verify(session, token) is None
        assert list_tokens(session)[0].revoked_at is not None


@pytest.mark.parametrize("scopes, said", [(["erasure:delete"], "unknown scope 'erasure:delete'"),
                                          ([], "give at least one scope")])
def test_scopes_are_checked(ledger, scopes, said):
    with pytest.raises(ValueError, match=said):
        with ledger.writing() as session:
            create_token(session, "x", scopes)
