"""Token signing: the fast path for subscriber ids makes exactly itsdangerous' own tokens."""

from __future__ import annotations

import pytest
from conftest import make_settings
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from digest.tokens import PREFERENCES, UNSUBSCRIBE, TokenSigner, signing_secrets, verify


@pytest.mark.parametrize("payload", [0, 1, 7, 42, 123_456, 111_111_111, 999_999_999, 1_000_000_000,
                                     1_111_111_111_111, 2**62, -3, True, "7", {"i": 7}])
def test_tokens_are_those_of_plain_itsdangerous(tmp_path, monkeypatch, payload):
    monkeypatch.setenv("DIGEST_SECRET", "newest,older")
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: 1_764_000_000)
    settings = make_settings(tmp_path)
    plain = URLSafeTimedSerializer(list(reversed(signing_secrets(settings))), salt=f"digest.{UNSUBSCRIBE}")
    signer = TokenSigner(settings)
    assert signer.sign(UNSUBSCRIBE, payload) == plain.dumps(payload)
    assert signer.sign(UNSUBSCRIBE, payload) == plain.dumps(payload)  # the cached signer, second time
    assert signer.load(UNSUBSCRIBE, signer.sign(UNSUBSCRIBE, payload)) == payload


def test_fast_path_tokens_verify_and_stay_bound_to_purpose_and_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "first")
    settings = make_settings(tmp_path)
    token = TokenSigner(settings).sign(UNSUBSCRIBE, 4321)
    assert verify(settings, token, UNSUBSCRIBE) == 4321
    assert verify(settings, token, PREFERENCES) is None
    # Change a character inside the signature: the last one of base64 may only hold padding bits.
    i = len(token) - 5
    assert verify(settings, token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:], UNSUBSCRIBE) is None
    monkeypatch.setenv("DIGEST_SECRET", "second,first")  # rotated: old links keep working
    assert verify(settings, token, UNSUBSCRIBE) == 4321
    monkeypatch.setenv("DIGEST_SECRET", "second")
    assert verify(settings, token, UNSUBSCRIBE) is None
