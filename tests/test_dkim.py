"""DKIM signing (digest/deliver/dkim.py, dkim_keys.py) checked by an independent verifier, dkimpy:
canonical bodies by construction, relaxed and simple canonicalisation, the Ed25519 second signature,
over-signing, and every bad key or name refused with the setting named."""

from __future__ import annotations

import base64
import itertools
import logging
import os
import re
from email import message_from_bytes, policy

import dkim
import pytest
from click.testing import CliRunner
from conftest import make_settings
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.canonicalization import Relaxed, Simple
from render_fixtures import big_issue, demo_issue
from send_helpers import add_many, approved_issue, smtp_settings
from test_message import ISSUE, assert_wire_format, template, values

from digest.cli import main
from digest.config import ConfigError
from digest.deliver.dkim import (
    RELAXED,
    SIMPLE,
    DkimError,
    DkimKey,
    DkimSigner,
    canonicalize_body,
    load_private_key,
    signer_from_settings,
)
from digest.deliver.message import MessageTemplate, build_note, encode_qp
from digest.deliver.notes import CONFIRMATION_TEXTS, confirmation_message, staff_note_message
from digest.models import Segment, Subscriber
from digest.pipeline.sending import send_issue
from digest.render import render_edition
from digest.store.ledger import ledger_counts

RSA_NAME = b"mail2026._domainkey.example.org."
ED_NAME = b"mail2026-ed._domainkey.example.org."
# A 512-bit RSA key (too small for DKIM); cryptography no longer makes ones this small.
RSA_512 = b"""-----BEGIN PRIVATE KEY-----
MIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEArQZ/TB4YPaCQPaOZ
+RyfziA61i0QF4C7wCd2mQaY/lYNDXgZH3GSE4sGBX/dXKJwvKHJD0ipcsVslOdi
bgmq7wIDAQABAkEAjFaMwYxXVQT6eURNCsSwyVtS3YzHVIjRv9VCWHQFe6OycvJd
i+ZU1GI36MeVOc4m9e1rquH8CMhHc6l/xhR1QQIhANlvxq7hYroP7V/hvQaGgpCy
jro/hinPT/eL0qOLEmb5AiEAy7ZT7Jdiz/LcVTJsaTefdRDQpaDc9A6fjEmXflWz
kycCIQCh1mNQSOtdx3sLkY5K7BUENBKtp5hpSCeh/Y1DMsD4qQIhAJ473/CUnsJc
KN1cr20DMa8jAo7E5xwEB9ZWi4AsXbJdAiBf5aOLLGt0GK5SrPiMMeU0Uv70+l07
QqkuooPYVb/4dA==
-----END PRIVATE KEY-----
"""


def pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def rsa_key() -> tuple[bytes, bytes]:
    """(private key PEM, public key DER base64) of a fresh 2048-bit RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem(key), base64.b64encode(public)


@pytest.fixture(scope="module")
def ed_key() -> tuple[bytes, bytes]:
    """(private key PEM, raw public key base64) of a fresh Ed25519 key, as RFC 8463 publishes it."""
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return pem(key), base64.b64encode(public)


def dns(rsa_public: bytes, ed_public: bytes | None = None):
    """dkimpy's DNS lookup, answered with the TXT records docs/delivery-messages.md tells to publish."""
    records = {RSA_NAME: b"v=DKIM1; k=rsa; p=" + rsa_public}
    if ed_public is not None:
        records[ED_NAME] = b"v=DKIM1; k=ed25519; p=" + ed_public

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)
    return dnsfunc


def verifies(data: bytes, dnsfunc, index: int = 0) -> bool:
    """dkimpy's verdict on the `index`th DKIM-Signature (as dkim.verify gives it for the first)."""
    try:
        return dkim.DKIM(data).verify(idx=index, dnsfunc=dnsfunc)
    except dkim.DKIMException:
        return False


def signer(rsa_private: bytes, ed_private: bytes | None = None, canonicalization: str = RELAXED) -> DkimSigner:
    keys = [DkimKey("mail2026", "example.org", load_private_key(rsa_private))]
    if ed_private is not None:
        keys.append(DkimKey("mail2026-ed", "example.org", load_private_key(ed_private)))
    return DkimSigner(keys, canonicalization)


def dkim_settings(tmp_path, rsa_private: bytes, ed_private: bytes | None = None, **options):
    (tmp_path / "dkim.pem").write_bytes(rsa_private)
    os.chmod(tmp_path / "dkim.pem", 0o600)
    dkim_options = {"selector": "mail2026", "key_file": "dkim.pem"}
    if ed_private is not None:
        (tmp_path / "dkim-ed.pem").write_bytes(ed_private)
        os.chmod(tmp_path / "dkim-ed.pem", 0o600)
        dkim_options |= {"ed25519_selector": "mail2026-ed", "ed25519_key_file": "dkim-ed.pem"}
    return make_settings(tmp_path, delivery={"dkim": {**dkim_options, **options}})


def body_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


def rendered_messages(settings):
    """One message per (issue, segment, language) the render fixtures make, with a name full of the
    whitespace canonicalisation would change, and every note."""
    for issue in (demo_issue(), big_issue()):
        ids = [s.id for s in issue.sections]
        choices = [tuple(ids), *((i,) for i in ids), tuple(ids[:2]), tuple(ids[-2:])]
        for section_ids, language in itertools.product(choices, ("en", "fr", "de")):
            segment = Segment(id="s", section_ids=section_ids, language=language)
            edition = render_edition(issue, segment, settings)
            t = MessageTemplate.from_settings(settings, edition, issue_values=ISSUE)
            yield f"issue {issue.number} {section_ids} {language}", t.build_for("jo@example.com", "Jo  \tTab ", values())
    for language in CONFIRMATION_TEXTS:
        subscriber = Subscriber(email="new@example.com", name="", language=language)
        yield f"confirmation {language}", confirmation_message(settings, subscriber, "https://www.example.org/c/x")
    yield "staff note", staff_note_message(settings, "Ed <ed@example.org>", 12, "https://www.example.org/admin/12")
    yield "note with blank lines and tabs", build_note(settings, to="a@example.com", subject="s",
                                                       text="a\t b  \n\n  \n\n")


# --- canonical bodies, verified by dkimpy ------------------------------------------------------------

def test_every_built_body_is_canonical_so_the_signer_hashes_it_as_sent(tmp_path):
    """Relaxed and simple body canonicalisation (dkimpy's, and ours) leave every built body unchanged."""
    settings = make_settings(tmp_path)
    count = 0
    for what, message in rendered_messages(settings):
        body = body_of(message.data)
        assert Relaxed.canonicalize_body(body) == body, what
        assert Simple.canonicalize_body(body) == body, what
        assert canonicalize_body(body, RELAXED) == body == canonicalize_body(body, SIMPLE), what
        count += 1
    assert count > 40


@pytest.mark.parametrize("text", ["a\tb", "a  b", "a   \n", "  lead", "\t", "x" * 74 + "  y", "é  \t\t  é" * 20])
def test_quoted_printable_encodes_the_whitespace_canonicalisation_would_change(text):
    encoded = encode_qp(text)
    assert Relaxed.canonicalize_body(encoded) == encoded
    assert max(len(line) for line in encoded.split(b"\r\n")) <= 76


@pytest.mark.parametrize("canonicalization", [RELAXED, SIMPLE])
def test_every_message_verifies_with_dkimpy(tmp_path, rsa_key, ed_key, canonicalization):
    both = signer(rsa_key[0], ed_key[0], canonicalization)
    lookup = dns(rsa_key[1], ed_key[1])
    for what, message in rendered_messages(make_settings(tmp_path)):
        data = both.sign(message.data, canonical_body=True)
        assert_wire_format(data)
        assert verifies(data, lookup, 0) and verifies(data, lookup, 1), what
        assert f"c={canonicalization};".encode() in data.replace(b"\r\n ", b" ")


@pytest.mark.parametrize("canonicalization", [RELAXED, SIMPLE])
def test_any_message_verifies_when_the_signer_canonicalises_its_body(rsa_key, canonicalization):
    lookup = dns(rsa_key[1])
    s = signer(rsa_key[0], canonicalization=canonicalization)
    for body in (b"", b"\r\n", b"a \t b  \r\n\r\n\r\n", b"no final line break", b"  \r\n \r\n"):
        data = s.sign(b"From: a@example.org\r\nSubject:  folded\r\n  subject \r\nTo: b@example.org\r\n\r\n" + body)
        assert verifies(data, lookup), body


def test_a_changed_body_or_subject_fails_verification(tmp_path, rsa_key, ed_key):
    settings = dkim_settings(tmp_path, rsa_key[0], ed_key[0])
    data = template(signer=signer_from_settings(settings)).build_for("jo@example.com", "Jo", values()).data
    lookup = dns(rsa_key[1], ed_key[1])
    assert verifies(data, lookup, 0) and verifies(data, lookup, 1)
    for changed in (data.replace(b"Item 7:", b"Item 8:", 1), data.replace(b"Subject: Weekly", b"Subject: Weakly", 1)):
        assert changed != data
        assert not verifies(changed, lookup, 0) and not verifies(changed, lookup, 1)


# --- Ed25519 beside RSA ----------------------------------------------------------------------------------

def test_both_signatures_go_on_every_message_when_ed25519_is_configured(tmp_path, rsa_key, ed_key):
    settings = dkim_settings(tmp_path, rsa_key[0], ed_key[0])
    lookup = dns(rsa_key[1], ed_key[1])
    messages = [template(signer=signer_from_settings(settings)).build_for(f"r{i}@example.com", "", values(i)).data
                for i in range(3)]
    messages.append(build_note(settings, to="ed@example.org", subject="Draft 3", text="Ready.\n").data)
    for data in messages:
        signatures = message_from_bytes(data, policy=policy.default).get_all("DKIM-Signature")
        tags = [dict(t.strip().split("=", 1) for t in re.sub(r"\s+", " ", s).split(";") if "=" in t) for s in signatures]
        assert [(t["a"], t["s"], t["d"]) for t in tags] == [("rsa-sha256", "mail2026", "example.org"),
                                                           ("ed25519-sha256", "mail2026-ed", "example.org")]
        assert verifies(data, lookup, 0) and verifies(data, lookup, 1)
        # Each signature stands on its own key: the Ed25519 one fails against another Ed25519 key.
        other = base64.b64encode(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        assert verifies(data, dns(rsa_key[1], other), 0) and not verifies(data, dns(rsa_key[1], other), 1)


def test_without_ed25519_there_is_one_rsa_signature(tmp_path, rsa_key):
    data = template(signer=signer_from_settings(dkim_settings(tmp_path, rsa_key[0]))).build_for(
        "jo@example.com", "", values()).data
    assert data.count(b"DKIM-Signature:") == 1 and b"a=rsa-sha256;" in data


# --- over-signing ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("added", [
    b"List-Unsubscribe: <https://evil.example/u>\r\n",
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
    b"From: ceo@example.org\r\n",
    b"Subject: Urgent\r\n",
    b"Reply-To: thief@evil.example\r\n",
    b"To: other@example.com\r\n",
])
def test_a_header_added_in_transit_breaks_the_signatures(tmp_path, rsa_key, ed_key, added):
    settings = dkim_settings(tmp_path, rsa_key[0], ed_key[0])
    lookup = dns(rsa_key[1], ed_key[1])
    editions = template(signer=signer_from_settings(settings))
    for data in (editions.build_for("jo@example.com", "", values()).data,
                 build_note(settings, to="jo@example.com", subject="Hi", text="Hello\n").data):
        assert verifies(data, lookup, 0) and verifies(data, lookup, 1)
        for forged in (added + data, data.replace(b"\r\n\r\n", b"\r\n" + added[:-2] + b"\r\n\r\n", 1)):
            assert not verifies(forged, lookup, 0) and not verifies(forged, lookup, 1), (added, forged[:300])


def test_a_header_relays_add_leaves_the_signature_valid(tmp_path, rsa_key):
    settings = dkim_settings(tmp_path, rsa_key[0])
    data = template(signer=signer_from_settings(settings)).build_for("jo@example.com", "", values()).data
    relayed = b"Received: from relay.example.org\r\n\tby mx.example.net; Mon, 23 Nov 2026 09:00:00 +0000\r\n" + data
    assert verifies(relayed, dns(rsa_key[1]))


# --- keys and names: checked, with the setting named ---------------------------------------------------

def test_keys_are_read_once_and_again_when_the_file_changes(tmp_path, rsa_key):
    settings = dkim_settings(tmp_path, rsa_key[0])
    first = signer_from_settings(settings)
    assert signer_from_settings(settings) is first
    assert first.domain == "example.org" and first.selector == "mail2026"
    (tmp_path / "dkim.pem").write_bytes(pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    assert signer_from_settings(settings) is not first


def test_domain_setting_overrides_the_sender_domain(tmp_path, rsa_key):
    assert signer_from_settings(dkim_settings(tmp_path, rsa_key[0], domain="mail.example.org")).domain == \
        "mail.example.org"


def test_dkim_is_off_without_a_selector(tmp_path):
    assert signer_from_settings(make_settings(tmp_path)) is None


@pytest.mark.parametrize("options, match", [
    ({"selector": "a b;c"}, "'delivery.dkim.selector' is 'a b;c'"),
    ({"selector": "under_score"}, "'delivery.dkim.selector'"),
    ({"selector": "-dash"}, "'delivery.dkim.selector'"),
    ({"selector": "x" * 64}, "'delivery.dkim.selector'"),
    ({"domain": "example"}, "'delivery.dkim.domain' is 'example': use a full domain"),
    ({"domain": "exa mple.org"}, "'delivery.dkim.domain'"),
    ({"domain": "bücher.example"}, "xn--"),
    ({"domain": "example.org.\nx"}, "'delivery.dkim.domain'"),
    ({"key_file": ""}, "'delivery.dkim.key_file' is empty"),
    ({"ed25519_key_file": "ed.pem"}, "ed25519_selector' go together"),
    ({"ed25519_selector": "ed"}, "ed25519_selector' go together"),
    ({"ed25519_selector": "bad_one", "ed25519_key_file": "ed.pem"}, "'delivery.dkim.ed25519_selector' is 'bad_one'"),
    ({"ed25519_selector": "MAIL2026", "ed25519_key_file": "ed.pem"}, "the RSA selector"),
])
def test_names_that_are_not_dns_labels_are_refused_when_the_configuration_loads(tmp_path, rsa_key, options, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        dkim_settings(tmp_path, rsa_key[0], **options)


def test_ed25519_without_the_rsa_signature_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="beside the RSA"):
        make_settings(tmp_path, delivery={"dkim": {"ed25519_selector": "ed", "ed25519_key_file": "ed.pem"}})


def _broken(tmp_path, content: bytes | None):
    """Settings whose RSA key file holds `content` (None: no file; b"<dir>": a directory)."""
    settings = dkim_settings(tmp_path, b"placeholder")
    path = tmp_path / "dkim.pem"
    path.unlink()
    if content == b"<dir>":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
        os.chmod(path, 0o600)
    return settings


@pytest.mark.parametrize("problem, content, match", [
    ("missing", None, "'delivery.dkim.key_file' .*dkim.pem: cannot read it"),
    ("a directory", b"<dir>", "'delivery.dkim.key_file' .*dkim.pem: cannot read it"),
    ("not PEM", b"hello", "not a PEM private key"),
    ("broken PEM", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "unusable private key"),
    ("512 bits", RSA_512, "a 512-bit RSA key; receivers need 1024 to 4096 bits"),
    ("an EC key", "ec", "a EC key; DKIM signs with RSA"),
    ("Ed25519 in key_file", "ed", "an Ed25519 key, where the RSA key goes"),
    ("encrypted", "encrypted", "the key is encrypted"),
])
def test_unusable_rsa_keys_are_refused_naming_the_setting(tmp_path, problem, content, match):
    if content == "ec":
        content = pem(ec.generate_private_key(ec.SECP256R1()))
    elif content == "ed":
        content = pem(ed25519.Ed25519PrivateKey.generate())
    elif content == "encrypted":
        content = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"))
    settings = _broken(tmp_path, content)
    with pytest.raises(DkimError, match=match):
        signer_from_settings(settings)
    assert issubclass(DkimError, ConfigError)  # front doors report it as a configuration error (exit 2)


@pytest.mark.parametrize("content, match", [
    (None, "'delivery.dkim.ed25519_key_file' .*dkim-ed.pem: cannot read it"),
    ("rsa", "a RSA key, not Ed25519"),
])
def test_unusable_ed25519_keys_are_refused_naming_the_setting(tmp_path, rsa_key, content, match):
    settings = dkim_settings(tmp_path, rsa_key[0], rsa_key[0])
    if content is None:
        (tmp_path / "dkim-ed.pem").unlink()
    with pytest.raises(DkimError, match=match):
        signer_from_settings(settings)


def test_a_key_file_every_user_can_read_is_warned_about(tmp_path, caplog):
    key = pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # a fresh file: no cached signer
    settings = _broken(tmp_path, key)
    with caplog.at_level(logging.WARNING, logger="digest.deliver.dkim_keys"):
        signer_from_settings(settings)
    assert caplog.records == []
    os.chmod(tmp_path / "dkim.pem", 0o644)
    os.utime(tmp_path / "dkim.pem", ns=(1, 1))  # another version of the file: read again
    with caplog.at_level(logging.WARNING, logger="digest.deliver.dkim_keys"):
        assert signer_from_settings(settings) is not None  # a warning, not an error
    [record] = caplog.records
    assert "'delivery.dkim.key_file'" in record.getMessage() and "chmod 600" in record.getMessage()


def test_a_sender_domain_that_cannot_sign_is_named(tmp_path, rsa_key):
    settings = dkim_settings(tmp_path, rsa_key[0])
    settings = settings.__class__(**{**settings.__dict__, "delivery": settings.delivery.__class__(
        **{**settings.delivery.__dict__, "sender": "Digest <digest@localhost>"})})
    with pytest.raises(DkimError, match="'delivery.dkim.domain' is empty and the domain of 'delivery.sender'"):
        signer_from_settings(settings)


def test_a_send_over_smtp_arrives_with_both_signatures_valid(engine, tmp_path, store_url, smtp_server, rsa_key,
                                                           ed_key):
    settings = smtp_settings(tmp_path, store_url, smtp_server.port, dkim={
        "selector": "mail2026", "key_file": "dkim.pem", "ed25519_selector": "mail2026-ed",
        "ed25519_key_file": "dkim-ed.pem"})
    for name, key in (("dkim.pem", rsa_key[0]), ("dkim-ed.pem", ed_key[0])):
        (tmp_path / name).write_bytes(key)
        os.chmod(tmp_path / name, 0o600)
    number = approved_issue(engine, settings)
    add_many(engine, 6)
    assert send_issue(settings, engine, number).sent == 6
    lookup = dns(rsa_key[1], ed_key[1])
    assert len(smtp_server.received) == 6
    for _, _, data in smtp_server.received:
        assert verifies(data, lookup, 0) and verifies(data, lookup, 1)


# --- the command line: exit 2, the setting named, nothing sent ---------------------------------------------

def _config(tmp_path, settings, dkim_lines: str) -> str:
    path = tmp_path / "digest.toml"
    path.write_text(f"""
[store]
url = "{settings.store.url}"

[web]
base_url = "https://digest.example.org"

[delivery]
transport = "smtp"

[delivery.smtp]
host = "127.0.0.1"
port = {settings.delivery.smtp.port}

[delivery.dkim]
{dkim_lines}
""", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("dkim_lines, message", [
    ('selector = "mail2026"\nkey_file = "absent.pem"', "'delivery.dkim.key_file'"),
    ('selector = "mail_2026"\nkey_file = "dkim.pem"', "configuration error: 'delivery.dkim.selector'"),
    ('selector = "mail2026"\nkey_file = "dkim.pem"\ndomain = "example.org;x"', "'delivery.dkim.domain'"),
])
def test_digest_send_exits_2_naming_the_dkim_setting_and_sends_nothing(engine, tmp_path, store_url, smtp_server,
                                                                        dkim_lines, message):
    settings = smtp_settings(tmp_path, store_url, smtp_server.port)
    number = approved_issue(engine, settings)
    add_many(engine, 3)
    (tmp_path / "dkim.pem").write_bytes(RSA_512)
    result = CliRunner().invoke(main, ["--config", _config(tmp_path, settings, dkim_lines), "send", "--issue",
                                       str(number)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert smtp_server.received == [] and ledger_counts(engine, number).get("sent", 0) == 0


@pytest.mark.parametrize("command", [["run"], ["serve", "--port", "1"]])
def test_the_scheduler_and_the_web_app_refuse_to_start_with_a_key_they_could_not_sign_with(tmp_path, store_url, command):
    """Both send later (issues, staff notes, confirmations): a bad key stops them at start, exit 2, the key named."""
    settings = smtp_settings(tmp_path, store_url, 2525)
    (tmp_path / "dkim.pem").write_bytes(RSA_512)
    config = _config(tmp_path, settings, 'selector = "mail2026"\nkey_file = "dkim.pem"')
    result = CliRunner().invoke(main, ["--config", config, *command])
    assert result.exit_code == 2 and "'delivery.dkim.key_file'" in result.output, result.output
