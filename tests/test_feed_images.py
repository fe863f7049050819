"""Feed images at ingest (issue 14 §1): at most one per item, https only, from media:content,
media:thumbnail, an image enclosure or the content's images; the renderer's host check
(`allowed_image`). On tests/data/feeds/images-*.xml (see its README) and hand-made entries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import make_settings

from digest.feed_images import allowed_image, pick_image
from digest.manifest import issue_from_manifest, issue_to_manifest
from digest.models import Feed, Issue, IssueEntry, IssueStatus, Item, ItemKind, Section, SectionType, Window
from digest.parse import parse_feed

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
SITE = "https://www.example.org/"


def images(name: str) -> dict[str, str]:
    result = parse_feed((FEEDS / name).read_bytes(), Feed(name, f"https://feeds.example.net/{name}", ItemKind.BRIEF), [])
    assert result.error is None and not result.warnings
    return {item.title: item.image for item in result.items}


def test_wordpress_and_other_cms_images_one_per_item():
    found = images("images-media-rss.xml")
    assert found == {
        # media:content before its thumbnail
        "Rearming Europe without the US?": "https://cdn.example.org/uploads/2026/11/rearming-1200x630.jpg",
        # the image enclosure, not the podcast's audio
        "Podcast: the Chips Act, two years on": "https://www.example.org/wp-content/uploads/2026/11/chips-act.png",
        # the content's first image, its relative src resolved against the channel link
        "The housing crisis in Europe's cities": "https://www.example.org/wp-content/uploads/2026/11/housing.jpg",
        # http, video, SVG, data: and a 1×1 tracking pixel: nothing
        "Nothing to show": "",
        # another site's image is kept at ingest; the renderer decides (below)
        "Think tank urges joint EU defence budget": "https://images.aggregator.example.net/thumbs/defence-budget.jpg",
        # an avatar from elsewhere comes first in the content; the site's own picture wins
        "Europe's nuclear deterrent": "https://www.example.org/wp-content/uploads/2026/11/deterrent.jpg",
    }


def test_atom_enclosure_links_relative_ones_resolved():
    assert images("images-atom-enclosure.xml") == {
        "The return of tariffs": "https://www.example.org/images/tariffs-cover.webp",
        "Cohesion policy after 2027": "https://www.example.org/images/cohesion-cover.jpg",
    }


@pytest.mark.parametrize(("entry", "content", "expected"), [
    ({"media_content": [{"url": "http://www.example.org/a.jpg", "medium": "image"}]}, "", ""),
    ({"media_content": [{"url": "data:image/png;base64,AAAA", "medium": "image"}]}, "", ""),
    ({"media_content": [{"url": "javascript:alert(1)", "medium": "image"}]}, "", ""),
    ({"media_content": [{"url": "https://user:pw@www.example.org/a.jpg", "medium": "image"}]}, "", ""),
    ({"media_content": [{"url": "https://www.example.org/a.svg", "medium": "image"}]}, "", ""),
    ({"media_content": [{"url": "https://www.example.org/a.jpg", "medium": "image", "width": "1", "height": "1"}]},
     "", ""),
    ({"media_content": [{"url": "https://www.example.org/a.jpg", "medium": "image", "width": "wide"}]}, "",
     "https://www.example.org/a.jpg"),
    ({"media_content": [{"url": "https://www.example.org/" + "a" * 3000 + ".jpg", "medium": "image"}]}, "", ""),
    ({"enclosures": [{"href": "https://www.example.org/report.pdf", "type": "application/pdf"}]}, "", ""),
    ({"enclosures": [{"href": "https://www.example.org/cover.jpg"}]}, "", "https://www.example.org/cover.jpg"),
    ({"media_content": "not a list", "enclosures": [None, 3]}, "", ""),
    ({}, '<p><img src="https://www.example.org/p.gif" width="1" height="1"><img src="https://www.example.org/b.jpg"></p>',
     "https://www.example.org/b.jpg"),
    ({}, '<p><img src="https://www.example.org/a.jpg?w=1&amp;h=2"></p>', "https://www.example.org/a.jpg?w=1&h=2"),
    ({}, "<p>No image.</p>", ""),
])
def test_what_counts_as_an_image(entry, content, expected):
    assert pick_image(entry, content, "https://www.example.org/post/", SITE) == expected


def test_at_most_one_image_and_the_sites_own_first():
    entry = {"media_content": [{"url": "https://cdn.other.example/x.jpg", "medium": "image"}],
             "media_thumbnail": [{"url": "https://static.example.org/t.jpg"}]}
    assert pick_image(entry, "", "https://www.example.org/post/", SITE) == "https://static.example.org/t.jpg"
    assert pick_image(entry, "", "https://blog.other.example/post/", "https://blog.other.example/") == \
        "https://cdn.other.example/x.jpg"


@pytest.mark.parametrize(("url", "hosts", "shown"), [
    ("https://www.example.org/a.jpg", [], True),
    ("https://cdn.example.org/a.jpg", [], True),  # a subdomain of the site's own domain
    ("https://example.org/a.jpg", [], True),
    ("http://www.example.org/a.jpg", [], False),
    ("https://images.aggregator.example.net/a.jpg", [], False),
    ("https://example.org.evil.example/a.jpg", [], False),
    ("https://notexample.org/a.jpg", [], False),
    ("https://user@www.example.org/a.jpg", [], False),
    ("https://images.aggregator.example.net/a.jpg", ["aggregator.example.net"], True),
    ("https://www.example.org/a.jpg", ["cdn.example.net"], False),  # the setting replaces the default
    ("", [], False),
    ("https://[::1/a.jpg", [], False),
])
def test_the_renderers_host_check(url, hosts, shown):
    assert allowed_image(url, hosts, SITE) == (url if shown else "")


def test_the_manifest_carries_the_image(tmp_path):
    settings = make_settings(tmp_path)
    start = datetime(2026, 11, 16, tzinfo=UTC)
    item = Item(key="k", feed="f", kind=ItemKind.BRIEF, title="T", url="https://www.example.org/t/", published=start,
                image="https://www.example.org/t.jpg")
    plain = Item(key="p", feed="f", kind=ItemKind.BRIEF, title="P", url="https://www.example.org/p/", published=start)
    issue = Issue(number=1, status=IssueStatus.DRAFT, window=Window(start, datetime(2026, 11, 23, tzinfo=UTC)),
                  sections=(Section("more", SectionType.MORE, "More", entries=(IssueEntry(item), IssueEntry(plain))),))
    manifest = json.loads(json.dumps(issue_to_manifest(issue, settings)))
    assert [e.get("image") for e in manifest["sections"][0]["items"]] == ["https://www.example.org/t.jpg", None]
    assert issue_from_manifest(manifest) == issue
