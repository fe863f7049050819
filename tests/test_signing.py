"""Token signing: the fast path for subscriber ids makes exactly itsdangerous' own tokens."""

from __future__ import annotations

import pytest
from conftest import make_settings
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from digest.config import ConfigError
from digest.signing import (
    PREFERENCES,
    SUPPRESSION_KEY_FILE,
    UNSUBSCRIBE,
    TokenSigner,
    signing_secrets,
    suppression_keys,
    verify,
)


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


@pytest.mark.parametrize("content", [b"", b"\n\n", b"# digest: suppression keys\n# only comments\n"])
def test_a_suppression_key_file_without_a_key_is_refused_not_replaced(tmp_path, monkeypatch, content):
    monkeypatch.delenv("DIGEST_SUPPRESSION_KEY", raising=False)
    settings = make_settings(tmp_path)
    key_file = tmp_path / SUPPRESSION_KEY_FILE
    key_file.write_bytes(content)
    with pytest.raises(ConfigError, match="holds no suppression key: restore it from your backup"):
        suppression_keys(settings)
    assert key_file.read_bytes() == content  # no new key generated over it: the lost one may come back


@pytest.mark.parametrize("make", [lambda path: path.write_bytes(b"\xff\xfe not ascii\n"), lambda path: path.mkdir()],
                         ids=["not-ascii", "a-directory"])
def test_an_unreadable_suppression_key_file_is_refused(tmp_path, monkeypatch, make):
    monkeypatch.delenv("DIGEST_SUPPRESSION_KEY", raising=False)
    settings = make_settings(tmp_path)
    key_file = tmp_path / SUPPRESSION_KEY_FILE
    make(key_file)
    with pytest.raises(ConfigError, match="cannot read the suppression key file") as raised:
        suppression_keys(settings)
    assert str(key_file) in str(raised.value) and "restore it from your backup" in str(raised.value)
