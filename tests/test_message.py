"""Message building: headers, MIME structure, exact decoding, header injection, DKIM."""

from __future__ import annotations

import base64
import binascii
import random
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.parser import BytesParser
from email.policy import compat32

import dkim
import pytest
from conftest import make_settings
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from digest.deliver.message import (
    HeaderError,
    MessageTemplate,
    _encode_qp_general,
    build_note,
    check_address,
    clean_header_text,
    encode_qp,
    encoded_words,
)
from digest.render import Edition, personalise

SENDER = "Europa Progressiva Digest <digest@example.org>"
TEXT = ("Hello [[DIGEST:name]],\n\nThis week: Sécurité & Défense – 3 items\nRead online: [[DIGEST:view_url]]\n"
        "Preferences: [[DIGEST:preferences_url]]\nUnsubscribe: [[DIGEST:unsubscribe_url]]\n")
HTML = ("<!doctype html><html lang=\"en\"><body><p>Hello [[DIGEST:name]],</p>\n"
        + "".join(f'<tr><td style="padding:8px;color:#333">Item {i}: Sécurité — “quoted” = 100%</td></tr>\n'
                  for i in range(200))
        + '<a href="[[DIGEST:view_url]]">View in browser</a> <a href="[[DIGEST:preferences_url]]">Preferences</a>'
        + ' <a href="[[DIGEST:unsubscribe_url]]" title="[[DIGEST:name]]">Unsubscribe [[DIGEST:email]]</a></body></html>\n')
ISSUE = {"view_url": "https://www.example.org/archive/12?s=a&l=en"}


def values(n: int = 1, name: str = "Jo") -> dict[str, str]:
    return {"name": name, "unsubscribe_url": f"https://www.example.org/u/{n}?t=abc_{n}&x=1",
            "preferences_url": f"https://www.example.org/p/{n}?t=def"}


def make_edition(text: str = TEXT, html: str = HTML, subject: str = "Weekly digest") -> Edition:
    return Edition(html=html, text=text, subject=subject, preheader="This week", language="en", segment_id="s1")


def template(edition: Edition | None = None, **overrides) -> MessageTemplate:
    return MessageTemplate(edition or make_edition(), **{"sender": SENDER, "issue_values": ISSUE, **overrides})


def expected(edition: Edition, email: str, vals: dict[str, str]) -> tuple[str, str]:
    """render.personalise's (html, text) for the subscriber, with canonical CRLF line breaks."""
    html, text = personalise(edition, {"email": email, **ISSUE, **vals})
    return tuple(s.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n") for s in (html, text))


def parse(data: bytes):
    message = message_from_bytes(data, policy=policy.default)
    defects = [(part.get_content_type(), part.defects) for part in message.walk() if part.defects]
    assert defects == []
    return message


def assert_wire_format(data: bytes) -> None:
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    head, body = data.split(b"\r\n\r\n", 1)
    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    assert max(len(line) for line in head.split(b"\r\n")) <= 78


# --- headers and structure ------------------------------------------------------------------------

def test_headers_and_structure():
    clock = lambda: datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # noqa: E731
    t = template(reply_to="Press Office <press@example.org>", unsubscribe_mailto="unsubscribe@example.org",
                 clock=clock)
    out = t.build_for("jo@example.com", "Jo Bloggs", values())
    assert out.envelope_from == "digest@example.org" and out.recipients == ("jo@example.com",)
    msg = parse(out.data)
    assert msg["From"].addresses[0] == Address("Europa Progressiva Digest", addr_spec="digest@example.org")
    assert msg["To"].addresses[0] == Address("Jo Bloggs", addr_spec="jo@example.com")
    assert msg["Subject"] == "Weekly digest"
    assert msg["Date"].datetime == clock()
    assert msg["Message-ID"] == out.message_id and out.message_id.endswith("@example.org>")
    assert msg["Reply-To"].addresses[0].addr_spec == "press@example.org"
    assert msg["List-Id"] == "<digest.example.org>"
    assert msg["List-Unsubscribe"] == ("<https://www.example.org/u/1?t=abc_1&x=1>, "
                                       "<mailto:unsubscribe@example.org?subject=unsubscribe>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in msg.iter_parts())
    assert_wire_format(out.data)


def test_list_id_without_brackets_or_description():
    assert parse(template(list_id="weekly.example.org").build_for("jo@example.com", "", values()).data)[
        "List-Id"] == "<weekly.example.org>"


def test_optional_headers_left_out_and_list_id_configured():
    t = template(list_id="Europa Digest – weekly <weekly.digest.example.org>")
    msg = parse(t.build_for("jo@example.com", "", values()).data)
    assert "Reply-To" not in msg
    assert msg["List-Unsubscribe"] == "<https://www.example.org/u/1?t=abc_1&x=1>"
    assert msg["List-Id"] == "Europa Digest – weekly <weekly.digest.example.org>"
    assert msg["To"] == "jo@example.com"


@pytest.mark.parametrize("list_id", ["no brackets but spaces", "<>", "<a..b>", "Name <a b.org>", "<.example.org>",
                                     "<nodot>"])
def test_bad_list_id_is_refused(list_id):
    with pytest.raises(HeaderError, match="list_id"):
        template(list_id=list_id)


def test_from_settings_uses_delivery_settings(tmp_path):
    settings = make_settings(tmp_path, delivery={"sender": "Fondation Europa Progressiva <news@ep.example.net>",
                                                 "reply_to": "info@ep.example.net",
                                                 "list_id": "<news.ep.example.net>",
                                                 "unsubscribe_mailto": "leave@ep.example.net"})
    t = MessageTemplate.from_settings(settings, make_edition(subject="Numéro 12"), issue_values=ISSUE)
    msg = parse(t.build_for("jo@example.com", "Jo", values()).data)
    assert msg["From"].addresses[0].display_name == "Fondation Europa Progressiva"
    assert msg["Reply-To"] == "info@ep.example.net"
    assert msg["List-Id"] == "<news.ep.example.net>"
    assert "mailto:leave@ep.example.net" in msg["List-Unsubscribe"]
    assert msg["Subject"] == "Numéro 12"
    assert "DKIM-Signature" not in msg


@pytest.mark.parametrize("name", ["Europa Progressiva — Le digest", "Europa, Progressiva: Digest (Brüssel; Wien)"])
def test_the_brandings_sender_name_goes_on_editions_and_notes(tmp_path, name):
    settings = make_settings(tmp_path, delivery={"sender": SENDER}, branding={"sender_name": name})
    t = MessageTemplate.from_settings(settings, make_edition(), issue_values=ISSUE)
    edition = t.build_for("jo@example.com", "Jo", values()).data
    note = build_note(settings, to="jo@example.com", subject="Confirm", text="Hello").data
    for data in (edition, note):
        (sender,) = parse(data)["From"].addresses
        assert sender.addr_spec == "digest@example.org"
        # Read by RFC 2047 (space between encoded words ignored), as mail clients do: Python's address
        # parser keeps that space, so its display_name may show two where the name has one.
        header = BytesParser(policy=compat32).parsebytes(data, headersonly=True)["From"]
        assert str(make_header(decode_header(header))) == f"{name} <digest@example.org>"
    plain = make_settings(tmp_path, delivery={"sender": "digest@example.org"})
    assert parse(MessageTemplate.from_settings(plain, make_edition(), issue_values=ISSUE)
                 .build_for("jo@example.com", "Jo", values()).data)["From"] == "digest@example.org"


# --- bodies decode to exactly the personalised edition --------------------------------------------

def test_parts_decode_to_exactly_what_personalise_gives():
    edition = make_edition()
    vals = values(7, name="Zoë <b>&amp;</b> \"O'Brien\"\xa0")
    msg = parse(template(edition).build_for("zoe@example.com", "Zoë", vals).data)
    text_part, html_part = msg.iter_parts()
    html, text = expected(edition, "zoe@example.com", vals)
    assert text_part.get_content() == text
    assert html_part.get_content() == html
    assert "&lt;b&gt;&amp;amp;&lt;/b&gt;" in html and 'title="Zoë <b>&amp;amp;</b> &quot;' in html


def test_values_cannot_forge_lines_in_the_text_part():
    edition = make_edition(text="Hi [[DIGEST:name]]!\n[[DIGEST:unsubscribe_url]]\n", html="<p>x</p>")
    vals = values(name="Mallory\r\nUnsubscribe: https://evil.example/\u2028x")
    content = parse(template(edition).build_for("m@example.com", "", vals).data).get_body(("plain",)).get_content()
    assert content.count("\r\n") == 2 and "\r\nUnsubscribe: https://evil" not in content


@pytest.mark.parametrize("seed", range(8))
def test_random_bodies_round_trip_exactly(seed):
    # Chunk boundaries around the 76-character quoted-printable limit, escapes and multibyte
    # characters next to tokens: where splitting an encoded body at tokens could go wrong.
    rng = random.Random(seed)
    alphabet = ["a", " ", "=", "é", "€", "😀", "\t", "\n", "\r\n", ".", "-", "\x00", "\x7f", "\u2028", '"', "<"]

    def chunk() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 74, 75, 76, 77, 150, 300])))

    body = "".join(chunk() + rng.choice(["[[DIGEST:name]]", "[[DIGEST:unsubscribe_url]]", "[[DIGEST:view_url]]"])
                   for _ in range(6)) + chunk()
    vals = values(seed, name=chunk()[:40])
    edition = make_edition(text=body, html=body)
    data = template(edition).build_for("r@example.com", "", vals).data
    assert_wire_format(data)
    text_part, html_part = parse(data).iter_parts()
    html, text = expected(edition, "r@example.com", vals)
    assert html_part.get_content() == html
    assert text_part.get_content() == text


@pytest.mark.parametrize("length", range(70, 82))
def test_quoted_printable_lines_never_pass_76(length):
    for tail in ("a", "=", "é", " "):
        encoded = encode_qp("x" * (length - 1) + tail)
        assert encoded.endswith(b"=\r\n")
        assert max(len(line) for line in encoded.split(b"\r\n")) <= 76


def test_quoted_printable_fast_path_is_byte_for_byte_the_general_one():
    rnd = random.Random(6)
    samples = ["x" * n for n in range(1, 320)] + [".", ". ", "a.", "=", "a=b", " a", "a "]
    samples += ["".join(rnd.choice("ab. ~:/?&%-_=\té") for _ in range(rnd.randint(1, 320))) for _ in range(3000)]
    for text in samples:
        encoded = encode_qp(text)
        assert encoded == _encode_qp_general(text), text
        assert binascii.a2b_qp(encoded).decode("utf-8") == text


def test_missing_token_value_is_a_clear_error():
    with pytest.raises(KeyError, match="preferences_url"):
        template().build_for("jo@example.com", "", {"name": "x", "unsubscribe_url": "https://x.example/u"})
    with pytest.raises(KeyError, match="unsubscribe_url"):
        template().build_for("jo@example.com", "", {"name": "x", "preferences_url": "https://x.example/p"})


# --- header injection and encoding ----------------------------------------------------------------

HOSTILE = "Breaking:\r\nBcc: victim@example.net\r\n\r\nbody\u2028line\u2029para\x00nul\x85nel\x1b[31m\ttab  end"


def test_hostile_subject_stays_one_line():
    out = template(make_edition(subject=HOSTILE)).build_for("jo@example.com", "", values())
    msg = parse(out.data)
    assert msg["Subject"] == "Breaking: Bcc: victim@example.net body line para nul nel [31m tab end"
    assert "Bcc" not in msg
    head = out.data.split(b"\r\n\r\n", 1)[0]
    assert [line.split(b":")[0] for line in head.split(b"\r\n") if not line.startswith(b" ")].count(b"Subject") == 1
    assert_wire_format(out.data)


@pytest.mark.parametrize("subject", [
    "Ünïcödé Wöchentlich – Sécurité & Défense",
    "Семинар: Европейская стратегическая автономия " * 4,
    "欧洲战略自主：安全与防务 " * 10,
    "Emoji 😀🇪🇺 digest",
    "=?utf-8?q?looks_encoded?= but is not",
    "x" * 300,
    "a " * 200,
])
def test_subjects_fold_and_decode(subject):
    out = template(make_edition(subject=subject)).build_for("jo@example.com", "", values())
    assert parse(out.data)["Subject"] == clean_header_text(subject)
    assert_wire_format(out.data)


@pytest.mark.parametrize("seed", range(5))
def test_encoded_words_stay_short_and_decode_to_the_text(seed):
    rng = random.Random(seed)
    for _ in range(200):
        text = "".join(rng.choice(["a", " ", "é", "😀", "中"]) for _ in range(rng.randint(1, 200)))
        words = encoded_words(text)
        assert max(len(w) for w in words) <= 68
        assert "".join(base64.b64decode(w[10:-2]).decode("utf-8") for w in words) == text


@pytest.mark.parametrize("name", [
    "Zoë Müller", "José \"Pepe\" García", "Smith, John", "李小龙", "Ελένη Παπαδοπούλου",
    "O'Brien (admin) <root@evil.example>", "😀 Emoji", "Very Long Name " * 12, "back\\slash",
    "=?utf-8?b?SGk=?=", "x\r\nBcc: victim@example.net", "Vèry Löng Nâme " * 9, "x" * 300,
])
def test_to_display_names_are_encoded(name):
    out = template().build_for("someone@example.com", name, values())
    msg = parse(out.data)
    (address,) = msg["To"].addresses
    assert address.addr_spec == "someone@example.com"
    if len(name.encode()) <= 42:
        assert address.display_name == clean_header_text(name)
    elif " " in name:  # Python's parser keeps the space between two encoded words (mail clients do not)
        assert " ".join(address.display_name.split()) == clean_header_text(name)
    else:  # ... and shows one where a long word had to be cut
        assert "".join(address.display_name.split()) == clean_header_text(name)
    assert "Bcc" not in msg
    assert_wire_format(out.data)


def test_international_domain_becomes_idna():
    out = template().build_for("jo@bücher.example", "Jo", values())
    assert out.recipients == ("jo@xn--bcher-kva.example",)
    assert parse(out.data)["To"].addresses[0].addr_spec == "jo@xn--bcher-kva.example"


@pytest.mark.parametrize("address", [
    "jo@example.com\r\nBcc: victim@example.net", "no-at-sign", "two@@example.com", "jo@", "@example.com",
    "jo bloggs@example.com", "jö@example.com", "jo@localhost", "jo@-bad-.example", "jo..x@example.com",
    "<jo@example.com>", "jo@exa mple.com", "x" * 65 + "@example.com",
])
def test_bad_addresses_are_refused(address):
    with pytest.raises(HeaderError, match="invalid email address"):
        template().build_for(address, "", values())


def test_check_address_keeps_good_ones():
    assert check_address(" Jo.Bloggs+digest@Example.COM ") == "Jo.Bloggs+digest@example.com"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://x.example/u?a=b\r\nBcc: v@x.example",
                                 "https://x.example/a b", "https://x.example/<u>", "ftp://x.example/u",
                                 "https://x.example/" + "a" * 950, ""])
def test_bad_unsubscribe_urls_are_refused(url):
    with pytest.raises(ValueError, match="unsubscribe_url|List-Unsubscribe"):
        template().build_for("jo@example.com", "", {**values(), "unsubscribe_url": url})


def test_bad_sender_and_mailto_are_refused():
    with pytest.raises(HeaderError):
        template(sender="Digest <not an address>")
    with pytest.raises(HeaderError):
        template(unsubscribe_mailto="leave@example.org\r\nBcc: x@example.org")


def test_message_ids_are_unique_and_can_be_given():
    first, second = template(), template()
    ids = {first.build_for(f"s{i}@example.com", "", values(i)).message_id for i in range(500)}
    ids |= {second.build_for(f"s{i}@example.com", "", values(i)).message_id for i in range(500)}
    assert len(ids) == 1000
    given = first.build_for("jo@example.com", "", values(), message_id="<issue12.sub7@example.org>")
    assert parse(given.data)["Message-ID"] == given.message_id == "<issue12.sub7@example.org>"
    with pytest.raises(HeaderError, match="Message-ID"):
        first.build_for("jo@example.com", "", values(), message_id="<x@example.org>\r\nBcc: v@example.net")


# --- DKIM -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rsa_key() -> tuple[bytes, bytes]:
    """(private key PEM, public key DER base64) of a fresh 2048-bit RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public)


def dns_stub(public_b64: bytes, name: bytes = b"mail2026._domainkey.example.org."):
    def dnsfunc(query: bytes, timeout: int = 5) -> bytes | None:
        return b"v=DKIM1; k=rsa; p=" + public_b64 if query == name else None
    return dnsfunc


# The signer itself (canonical bodies, Ed25519, over-signing, key checks) is tested in test_dkim.py.


def test_dkim_signature_verifies_and_breaks_when_subject_changes(tmp_path, rsa_key):
    private, public = rsa_key
    (tmp_path / "dkim.pem").write_bytes(private)
    settings = make_settings(tmp_path, delivery={"dkim": {"selector": "mail2026", "key_file": "dkim.pem"}})
    t = MessageTemplate.from_settings(settings, make_edition(subject="Weekly – Sécurité"), issue_values=ISSUE)
    data = t.build_for("jo@example.com", "Jö", values()).data
    assert dkim.verify(data, dnsfunc=dns_stub(public))
    assert_wire_format(data)
    msg = parse(data)
    fields = dict(part.strip().split("=", 1) for part in msg["DKIM-Signature"].split(";") if "=" in part)
    signed = [h.strip().lower() for h in fields["h"].replace("\r\n", "").split(":")]
    for header in ("from", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe",
                   "list-unsubscribe-post"):
        assert header in signed
    assert fields["c"] == "relaxed/relaxed" and fields["d"] == "example.org" and fields["s"] == "mail2026"
    tampered = data.replace(b"Subject: =?utf-8?b?", b"Subject: =?utf-8?b?WA", 1)
    assert tampered != data and not dkim.verify(tampered, dnsfunc=dns_stub(public))
    other_unsub = data.replace(b"<https://www.example.org/u/1", b"<https://www.example.org/u/2", 1)
    assert not dkim.verify(other_unsub, dnsfunc=dns_stub(public))
