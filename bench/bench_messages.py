"""Personalised, MIME-complete messages per second: digest's per-segment templates vs the naive path.

10,000 subscribers over 20 segments (7 section choices x 3 languages, minus one) of the 60-item test
issue (tests/render_fixtures.big_issue: 60-90 KB of HTML per edition), on one core, in one run:

- naive: per subscriber, render_edition with their values (Jinja2 + MJML + css-inline), then an
  EmailMessage (set_content + add_alternative + as_bytes). Measured on a sample, rate extrapolated.
- fill + EmailMessage: render once per segment, render.personalise per subscriber, EmailMessage
  per subscriber (isolates the MIME cost the issue measured at 2.7 ms per 60 KB message).
- digest: render once per segment + MessageTemplate once per segment, then build_for per
  subscriber (what `digest send` does). Segment set-up time is included in the rate.
- digest + DKIM: the same with RSA-2048 DKIM signing (dkimpy), on a sample.

Rates are messages per CPU-second of this process (time.process_time), so other work on the
machine does not skew them. Token values (signed links) are made up front for every path alike.
A sample of digest's messages is parsed with the email package and checked against
render.personalise. Last, whole-body encoders per message, for the design choice: what encoding
one subscriber's complete body would cost, against filling pre-encoded chunks.

Run: .venv/bin/python bench/bench_messages.py [--subscribers N] [--naive-sample N]
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


def run_dkim(settings_dir: Path, issue, segs, subscribers, sample: int) -> float:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (settings_dir / "dkim.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    settings = make_settings(settings_dir, delivery={"dkim": {"selector": "bench", "key_file": "dkim.pem"}})
    template = MessageTemplate.from_settings(settings, render_edition(issue, segs[0], settings))
    started = time.process_time()
    for i in range(sample):
        email, name, values = subscribers[i]
        template.build_for(email, name, values)
    return sample / (time.process_time() - started)


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
    dkim_rate = run_dkim(tmp, issue, segs, subscribers, min(500, args.subscribers))
    build_only = args.subscribers / (args.subscribers / digest_rate - setup)

    print(f"{args.subscribers} subscribers, {len(segs)} segments, edition html+text "
          f"{sizes[0] // 1024}-{sizes[-1] // 1024} KiB, one core")
    print(f"{'path':44} {'messages/s':>12} {'vs naive':>9}")
    rows = [("naive: Jinja2+MJML+EmailMessage per subscriber", naive_rate, f"sample {args.naive_sample}"),
            ("render once, personalise + EmailMessage", fill_rate, "sample 2000"),
            ("digest: MessageTemplate.build_for", digest_rate, f"all {args.subscribers}, incl. "
             f"{setup:.1f} s segment set-up"),
            ("  of which build_for alone", build_only, ""),
            ("digest + DKIM (rsa-sha256, 2048 bit)", dkim_rate, "sample 500")]
    for label, rate, note in rows:
        print(f"{label:44} {rate:12,.0f} {rate / naive_rate:8.0f}x  {note}")
    print(f"checked {checked} messages: no defects, parts equal render.personalise")
    biggest = max(editions.values(), key=lambda e: len(e.html))
    print(f"\nencoding one subscriber's whole body ({(len(biggest.html) + len(biggest.text)) // 1024} KiB) "
          "per message, microseconds:")
    for label, micros in encoder_costs(biggest, MessageTemplate.from_settings(settings, biggest)):
        print(f"  {label:56} {micros:8,.0f}")
    target_ok = digest_rate >= 10_000 and digest_rate >= 30 * naive_rate
    print(f"target (>= 10,000/s and >= 30x naive): {'met' if target_ok else 'NOT met'}")


if __name__ == "__main__":
    main()
