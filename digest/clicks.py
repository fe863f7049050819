"""Counted links: an edition's link as a signed redirect on the site's own domain (web.count_clicks).

A counted link reads `{web.base_url}/c/{issue}/{language}/{link}/{signature}`:
- `link` is the link's id within the issue: 16 hex digits of SHA-256 over (section, item key,
  target URL). It names what was clicked and where; anyone may compute it, and it needs no secret,
  so rotating the signing secret never splits one link's count in two;
- `signature` is an HMAC-SHA256 of (issue, language, link) under a key derived from the signing
  secrets (digest.signing.derived_keys, purpose "clicks"), newest first: a link cannot be made up
  for another issue or language, and links sent before a new secret was put in front still work.

Nothing in the link names the reader: every reader of an edition gets the same links. The
redirect never takes its target from the link: it looks the id up among the links of the issue's
stored manifest (digest.pipeline.clicks), so it only ever leads where the issue led.

Which editions count (`click_links`): with web.count_clicks, the editions of an issue being sent or
sent, for its readers. Test sends, previews of drafts and the public archive copy link straight to
their targets (the archive because crawlers follow every link on a public page).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .config import LANGUAGES, Settings
from .models import Issue, IssueStatus
from .signing import derived_keys

PATH = "/c/"
LINK_CHARS = 16  # hex digits of the link id: 64 bits, no collision within one issue's few hundred links
SIGNATURE_CHARS = 22  # base64url characters of the HMAC kept: 132 bits
KEY_PURPOSE = "clicks"
COUNTED_STATUSES = (IssueStatus.SENDING, IssueStatus.SENT)
_LINK = re.compile(f"[0-9a-f]{{{LINK_CHARS}}}")
_SIGNATURE = re.compile(f"[A-Za-z0-9_-]{{{SIGNATURE_CHARS}}}")


@dataclass(frozen=True)
class Link:
    """One link of an issue: the section it sits in, the item it leads to ("" for none) and its target."""

    section: str
    item_key: str
    url: str

    @property
    def id(self) -> str:
        return link_id(self.section, self.item_key, self.url)


def link_id(section: str, item_key: str, url: str) -> str:
    """The link's id within its issue (hex, LINK_CHARS long); JSON keeps the three parts apart."""
    data = json.dumps([section, item_key, url], ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:LINK_CHARS]


def _mac(key: bytes, issue: int, language: str, link: str) -> str:
    digest = hmac.new(key, f"digest-click:{issue}:{language}:{link}".encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:SIGNATURE_CHARS]


def sign_click(keys: Sequence[bytes], issue: int, language: str, link: str) -> str:
    """The signature of a counted link, with the newest key."""
    return _mac(keys[0], issue, language, link)


def genuine_click(keys: Sequence[bytes], issue: int, language: str, link: str, signature: str) -> bool:
    """True when `signature` was made by one of `keys` for exactly this issue, language and link.

    Anything malformed (a language digest does not offer, a link id or signature of the wrong
    shape) is refused before any HMAC is computed.
    """
    if language not in LANGUAGES or not _LINK.fullmatch(link or "") or not _SIGNATURE.fullmatch(signature or ""):
        return False
    return any(hmac.compare_digest(signature, _mac(key, issue, language, link)) for key in keys)


@dataclass(frozen=True)
class ClickLinks:
    """Makes the counted links of one edition (an issue in one language)."""

    base_url: str
    issue: int
    language: str
    keys: tuple[bytes, ...]

    def url(self, section: str, item_key: str, target: str) -> str:
        """The counted link to `target` (already safe, with its UTM if any) shown in `section` for `item_key`."""
        link = link_id(section, item_key, target)
        signature = sign_click(self.keys, self.issue, self.language, link)
        return f"{self.base_url.rstrip('/')}{PATH}{self.issue}/{self.language}/{link}/{signature}"


def counts_clicks(settings: Settings, issue: Issue) -> bool:
    """True when this copy of the issue gets counted links: the setting is on, and it is what readers get.

    Not for a test send (Issue.test), the archive copy (Issue.public), or an issue not yet sending
    (a draft's preview, `digest render` of a draft).
    """
    return (settings.web.count_clicks and issue.number is not None and not issue.test and not issue.public
            and issue.status in COUNTED_STATUSES)


def click_links(settings: Settings, issue: Issue, language: str) -> ClickLinks | None:
    """The link maker for one edition of `issue`, or None when its links go straight to their targets."""
    if not counts_clicks(settings, issue) or language not in LANGUAGES:
        return None
    return ClickLinks(settings.web.base_url, issue.number, language, derived_keys(settings, KEY_PURPOSE))


def uncounted(settings: Settings) -> Settings:
    """`settings` with click counting off: what staff previews render with (a staff click is no reader's)."""
    return settings if not settings.web.count_clicks else replace(settings, web=replace(settings.web, count_clicks=False))
