"""Personalised, MIME-complete messages per second: digest's per-segment templates vs the naive path.

10,000 subscribers over 20 segments (7 section choices x 3 languages, minus one) of the 60-item test
issue (tests/render_fixtures.big_issue: 60-90 KB of HTML per edition), on one core, in one run:

- naive: per subscriber, render_edition with their values (Jinja2 + MJML + css-inline), then an
  EmailMessage (set_content + add_alternative + as_bytes). Measured on a sample, rate extrapolated.
- fill + EmailMessage: render once per segment, render.personalise per subscriber, EmailMessage
  per subscriber (isolates the MIME cost the issue measured at 2.7 ms per 60 KB message).
- digest: render once per segment + MessageTemplate once per segment, then build_for per
  subscriber (what `digest send` does). Segment set-up time is included in the rate.
- digest + DKIM (RSA-2048): the same, signed by digest's signer (digest/deliver/dkim.py: the key loaded
  once, RSA in OpenSSL, the canonical body hashed as it is), on a sample over every segment's template.
- with the Ed25519 second signature: the same with both signatures (RFC 8463) on every message.
- dkimpy: the same unsigned messages signed with dkimpy (relaxed/relaxed, the PEM key passed each
  time as dkim.sign takes it), the signer digest had before, side by side in the same run.

Rates are messages per CPU-second of this process (time.process_time), so other work on the
machine does not skew them. Token values (signed links) are made up front for every path alike.
A sample of digest's messages is parsed with the email package and checked against
render.personalise. Last, whole-body encoders per message, for the design choice: what encoding
one subscriber's complete body would cost, against filling pre-encoded chunks.

Run: .venv/bin/python bench/bench_messages.py [--subscribers N] [--naive-sample N] [--dkim-sample N]
     [--dkimpy-sample N]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import itertools
import sys
import tempfile
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import make_settings  # noqa: E402
from render_fixtures import big_issue  # noqa: E402

from digest.deliver.message import MessageTemplate  # noqa: E402
from digest.models import Segment  # noqa: E402
from digest.render import Edition, personalise, render_edition  # noqa: E402

SEGMENTS = 20
template_settings = None  # set in main(); the EmailMessage path reads the sender from it
NAMES = ("Zoë O'Brien", "Jean-Luc Dupont", "Anna Schmidt", "", "Łukasz Wiśniewski", "María José García")


def segments(issue) -> list[Segment]:
    ids = [s.id for s in issue.sections]
    choices = [tuple(ids), tuple(ids[:1]), tuple(ids[1:2]), tuple(ids[:3]), (ids[0], ids[3], ids[4]),
               (ids[2], ids[3]), (ids[1], ids[4], ids[5])]
    combos = itertools.product(choices, ("en", "fr", "de"))
    return [Segment(id=f"s{i}", section_ids=c, language=lang) for i, (c, lang) in enumerate(combos)][:SEGMENTS]


def subscriber(i: int) -> tuple[str, str, dict[str, str]]:
    token = f"{i:08d}.Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0.a1b2c3d4e5f6"
    name = NAMES[i % len(NAMES)]
    email = f"reader{i}@example.com"
    return email, name, {"name": name or "there", "email": email,
                         "unsubscribe_url": f"https://www.example.org/u/{token}",
                         "preferences_url": f"https://www.example.org/p/{token}",
                         "view_url": "https://www.example.org/archive/13"}


def email_message(settings, edition: Edition, email: str, name: str, html: str, text: str) -> bytes:
    """The standard library's way: an EmailMessage with both parts, serialised for SMTP."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = settings.delivery.sender
    msg["To"] = formataddr((name, email))
    msg["Subject"] = edition.subject
    msg["Date"] = format_datetime(time_now())
    msg["Message-ID"] = make_msgid(domain="example.org")
    msg["List-Id"] = "<digest.example.org>"
    msg["List-Unsubscribe"] = "<https://www.example.org/u/x>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def time_now():
    from datetime import UTC, datetime
    return datetime.now(UTC)


def run_naive(settings, issue, segs, editions, sample: int) -> float:
    started = time.process_time()
    for i in range(sample):
        segment = segs[i % len(segs)]
        email, name, values = subscriber(i)
        edition = render_edition(issue, segment, settings, values=values, fit=editions[segment.id].fit)
        email_message(settings, edition, email, name, edition.html, edition.text)
    return sample / (time.process_time() - started)


def run_fill_emailmessage(settings, segs, editions, sample: int) -> float:
    started = time.process_time()
    for i in range(sample):
        edition = editions[segs[i % len(segs)].id]
        email, name, values = subscriber(i)
        html, text = personalise(edition, values)
        email_message(settings, edition, email, name, html, text)
    return sample / (time.process_time() - started)


def run_digest(settings, issue, segs, subscribers, count: int) -> tuple[float, float, list]:
    """(messages/s including segment set-up, set-up seconds, a few messages to check)."""
    started = time.process_time()
    templates = [MessageTemplate.from_settings(settings, render_edition(issue, s, settings)) for s in segs]
    setup = time.process_time() - started
    kept = []
    for i in range(count):
        email, name, values = subscribers[i]
        message = templates[i % len(templates)].build_for(email, name, values)
        if i % 997 == 0:
            kept.append((i, message))
    return count / (time.process_time() - started), setup, kept


def check(messages, segs, editions) -> int:
    """Parse each kept message and compare its parts with render.personalise; returns how many."""
    for i, message in messages:
        parsed = message_from_bytes(message.data, policy=policy.default)
        assert not any(part.defects for part in parsed.walk()), i
        html, text = personalise(editions[segs[i % len(segs)].id], subscriber(i)[2])
        assert parsed.get_body(("plain",)).get_content() == text.replace("\n", "\r\n"), i
        assert parsed.get_body(("html",)).get_content() == html.replace("\n", "\r\n"), i
    return len(messages)


def write_keys(settings_dir: Path) -> tuple[bytes, bytes, bytes]:
    """A fresh RSA-2048 and Ed25519 key in settings_dir (0600); returns (RSA PEM, RSA public DER, Ed25519 raw public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    keys = {"dkim.pem": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "dkim-ed25519.pem": ed25519.Ed25519PrivateKey.generate()}
    for name, key in keys.items():
        (settings_dir / name).write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (settings_dir / name).chmod(0o600)
    rsa_public = keys["dkim.pem"].public_key().public_bytes(serialization.Encoding.DER,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    ed_public = keys["dkim-ed25519.pem"].public_key().public_bytes(serialization.Encoding.Raw,
                                                                   serialization.PublicFormat.Raw)
    return (settings_dir / "dkim.pem").read_bytes(), rsa_public, ed_public


def dkim_settings(settings_dir: Path, ed25519: bool):
    options = {"selector": "bench", "key_file": "dkim.pem"}
    if ed25519:
        options |= {"ed25519_selector": "bench-ed", "ed25519_key_file": "dkim-ed25519.pem"}
    return make_settings(settings_dir, delivery={"dkim": options})


def run_dkim(settings, issue, segs, subscribers, sample: int) -> tuple[float, bytes]:
    """(signed messages/s over every segment's template, set-up excluded; one message to verify)."""
    templates = [MessageTemplate.from_settings(settings, render_edition(issue, s, settings)) for s in segs]
    started = time.process_time()
    for i in range(sample):
        email, name, values = subscribers[i]
        data = templates[i % len(templates)].build_for(email, name, values).data
    return sample / (time.process_time() - started), data


def run_dkimpy(settings, issue, segs, subscribers, sample: int, private_pem: bytes) -> tuple[float, bytes]:
    """The same messages unsigned, then signed by dkimpy as digest's signer did before (relaxed/relaxed,
    its header list, From and Subject over-signed)."""
    import dkim

    signed = (b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Reply-To", b"List-Id", b"List-Unsubscribe",
              b"List-Unsubscribe-Post", b"MIME-Version", b"Content-Type")
    templates = [MessageTemplate.from_settings(settings, render_edition(issue, s, settings)) for s in segs]
    started = time.process_time()
    for i in range(sample):
        email, name, values = subscribers[i]
        message = templates[i % len(templates)].build_for(email, name, values).data
        head = message.split(b"\r\n\r\n", 1)[0].lower()
        present = [h for h in signed if b"\r\n" + h.lower() + b":" in b"\r\n" + head]
        data = dkim.sign(message, b"bench", b"example.org", private_pem, canonicalize=(b"relaxed", b"relaxed"),
                         include_headers=present + [b"From", b"Subject"]) + message
    return sample / (time.process_time() - started), data


def verified(data: bytes, rsa_public: bytes, ed_public: bytes) -> bool:
    """dkimpy's verdict on every DKIM-Signature of `data`, against the bench's public keys."""
    import dkim

    records = {b"bench._domainkey.example.org.": b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_public),
               b"bench-ed._domainkey.example.org.": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_public)}
    count = data.split(b"\r\n\r\n", 1)[0].count(b"DKIM-Signature:")
    return count > 0 and all(dkim.DKIM(data).verify(idx=i, dnsfunc=lambda name, timeout=5: records.get(name))
                             for i in range(count))


def per_call_us(function, repeat: int) -> float:
    started = time.process_time()
    for _ in range(repeat):
        function()
    return (time.process_time() - started) / repeat * 1e6


def encoder_costs(edition: Edition, template: MessageTemplate) -> list[tuple[str, float]]:
    """Microseconds per message for encoding one subscriber's whole body (html + text) each way."""
    html, text = personalise(edition, subscriber(1)[2])
    body = (text + html).encode("utf-8")

    def b64_wrapped() -> bytes:
        b = binascii.b2a_base64(body, newline=False)
        return b"\r\n".join([b[i:i + 76] for i in range(0, len(b), 76)])

    email_address, name, values = subscriber(1)
    return [("EmailMessage (set_content + add_alternative + as_bytes)",
             per_call_us(lambda: email_message(template_settings, edition, email_address, name, html, text), 100)),
            ("base64.encodebytes of the whole body", per_call_us(lambda: base64.encodebytes(body), 300)),
            ("binascii.b2a_base64 + 76-column wrap", per_call_us(b64_wrapped, 300)),
            ("binascii.b2a_qp of the whole body", per_call_us(lambda: binascii.b2a_qp(body, istext=True), 300)),
            ("digest: build_for (pre-encoded chunks, headers)",
             per_call_us(lambda: template.build_for(email_address, name, values), 2000))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--naive-sample", type=int, default=100)
    parser.add_argument("--dkim-sample", type=int, default=3000, help="signed messages per digest DKIM path")
    parser.add_argument("--dkimpy-sample", type=int, default=100, help="messages signed by dkimpy")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-messages-"))
    global template_settings
    settings = template_settings = make_settings(tmp)
    issue = big_issue()
    segs = segments(issue)
    editions = {s.id: render_edition(issue, s, settings) for s in segs}
    sizes = sorted(len(e.html.encode()) + len(e.text.encode()) for e in editions.values())
    subscribers = [subscriber(i) for i in range(args.subscribers)]
    gc.collect()

    digest_rate, setup, kept = run_digest(settings, issue, segs, subscribers, args.subscribers)
    checked = check(kept, segs, editions)
    naive_rate = run_naive(settings, issue, segs, editions, args.naive_sample)
    fill_rate = run_fill_emailmessage(settings, segs, editions, min(2000, args.subscribers))
    private_pem, rsa_public, ed_public = write_keys(tmp)
    sample = min(args.dkim_sample, args.subscribers)
    rsa_rate, rsa_message = run_dkim(dkim_settings(tmp, ed25519=False), issue, segs, subscribers, sample)
    both_rate, both_message = run_dkim(dkim_settings(tmp, ed25519=True), issue, segs, subscribers, sample)
    dkimpy_sample = min(args.dkimpy_sample, args.subscribers)
    dkimpy_rate, dkimpy_message = run_dkimpy(settings, issue, segs, subscribers, dkimpy_sample, private_pem)
    build_only = args.subscribers / (args.subscribers / digest_rate - setup)

    print(f"{args.subscribers} subscribers, {len(segs)} segments, edition html+text "
          f"{sizes[0] // 1024}-{sizes[-1] // 1024} KiB, one core")
    print(f"{'path':44} {'messages/s':>12} {'vs naive':>9}")
    rows = [("naive: Jinja2+MJML+EmailMessage per subscriber", naive_rate, f"sample {args.naive_sample}"),
            ("render once, personalise + EmailMessage", fill_rate, "sample 2000"),
            ("digest: MessageTemplate.build_for", digest_rate, f"all {args.subscribers}, incl. "
             f"{setup:.1f} s segment set-up"),
            ("  of which build_for alone", build_only, ""),
            ("digest + DKIM (RSA-2048)", rsa_rate, f"sample {sample}, set-up excluded"),
            ("  with Ed25519 second signature", both_rate, f"sample {sample}, set-up excluded"),
            ("digest + DKIM by dkimpy (before)", dkimpy_rate, f"sample {dkimpy_sample}")]
    for label, rate, note in rows:
        print(f"{label:44} {rate:12,.0f} {rate / naive_rate:8.0f}x  {note}")
    print(f"checked {checked} messages: no defects, parts equal render.personalise")
    all_verify = all(verified(m, rsa_public, ed_public) for m in (rsa_message, both_message, dkimpy_message))
    print(f"DKIM: the last message of each signed path verifies with dkimpy (both signatures): "
          f"{'yes' if all_verify else 'NO'}")
    biggest = max(editions.values(), key=lambda e: len(e.html))
    print(f"\nencoding one subscriber's whole body ({(len(biggest.html) + len(biggest.text)) // 1024} KiB) "
          "per message, microseconds:")
    for label, micros in encoder_costs(biggest, MessageTemplate.from_settings(settings, biggest)):
        print(f"  {label:56} {micros:8,.0f}")
    target_ok = digest_rate >= 10_000 and digest_rate >= 30 * naive_rate
    print(f"target (>= 10,000/s and >= 30x naive): {'met' if target_ok else 'MISSED'}")
    rsa_ok = rsa_rate >= 1_500 and rsa_rate >= 15 * dkimpy_rate and all_verify
    print(f"target DKIM RSA-2048 (>= 1,500/s on one core and >= 15x dkimpy): {'met' if rsa_ok else 'MISSED'} "
          f"({rsa_rate:,.0f}/s, {rsa_rate / dkimpy_rate:.0f}x dkimpy)")
    both_ok = both_rate >= 1_300 and all_verify
    print(f"target DKIM RSA-2048 + Ed25519 (>= 1,300/s): {'met' if both_ok else 'MISSED'} ({both_rate:,.0f}/s)")


if __name__ == "__main__":
    main()
